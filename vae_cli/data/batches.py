"""Batches of an in-memory tensor: the DataLoader of the fast path."""

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor


class TensorBatches:
    """Batches of an in-memory tensor by index: a DataLoader without per-sample work.

    Sharded over ranks without padding (eval scores every example exactly once); the
    shuffle order is a pure function of (seed, epoch), so it is the same after a resume.
    Evaluation shards whole fixed batches (batch b is examples [bB, (b+1)B), rank r takes
    b = r, r+W, ...), so every batch, and the noise seeded from its index, is the same
    whatever the world size W: see eval_batch_index.

    Training yields `steps_per_item` consecutive mini-batches of the shuffle as one tensor
    (the module splits it and takes one optimiser step per mini-batch): the mini-batches are
    the same for any steps_per_item, only Lightning sees fewer, larger items.
    """

    def __init__(
        self,
        data: Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch_fn: Callable[[], int] = lambda: 0,
        steps_per_item: int = 1,
    ) -> None:
        self.data, self.batch_size, self.shuffle = data, batch_size, shuffle
        self.steps_per_item = steps_per_item if shuffle else 1
        self.item_size = batch_size * self.steps_per_item
        self.seed, self.rank, self.world_size, self.epoch_fn = seed, rank, world_size, epoch_fn

    def _indices(self) -> Tensor:
        """This rank's share of the (seed, epoch) shuffle, on the data's device."""
        g = torch.Generator().manual_seed(self.seed + 7919 * self.epoch_fn())
        perm = torch.randperm(len(self.data), generator=g)
        per_rank = len(self.data) // self.world_size  # equal step counts on every rank
        return perm[self.rank * per_rank : (self.rank + 1) * per_rank].to(self.data.device)

    def _eval_starts(self) -> range:
        # whole global batches dealt round-robin: rank r gets batches r, r + W, r + 2W, ...
        step = self.batch_size * self.world_size
        return range(self.rank * self.batch_size, len(self.data), step)

    def __len__(self) -> int:
        if self.shuffle:
            return math.ceil(self.steps / self.steps_per_item)
        return len(self._eval_starts())

    @property
    def steps(self) -> int:
        """Mini-batches per pass on this rank (more than len() when items hold several)."""
        if self.shuffle:
            return math.ceil(len(self.data) // self.world_size / self.batch_size)
        return len(self._eval_starts())

    def __iter__(self) -> Iterator[Tensor]:
        if not self.shuffle:
            for start in self._eval_starts():
                yield self.data[start : start + self.batch_size]
            return
        idx = self._indices()
        epoch = self.epoch_fn()
        skip, self._resume = (
            (self._resume[1], None) if self._resume and self._resume[0] == epoch else (0, None)
        )
        self._position = (epoch, skip)
        for i, start in enumerate(range(skip * self.item_size, len(idx), self.item_size), start=skip + 1):
            self._position = (epoch, i)  # counted before the yield: the batch is then in use
            yield self.data[idx[start : start + self.item_size]]

    # Lightning's stateful-iterable protocol: the fit loop saves state_dict() in every
    # checkpoint and calls load_state_dict() before iter() on resume, so a run resumed
    # mid-epoch continues with the batch after the last one it trained on. (Lightning does
    # not prefetch from an iterable with a __len__, so "yielded" is "consumed".)
    _position: tuple[int, int] = (0, 0)
    _resume: tuple[int, int] | None = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._position[0], "batches": self._position[1]}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (int(state["epoch"]), int(state["batches"]))


def eval_batch_index(local_index: int, rank: int, world_size: int) -> int:
    """The global index of a rank's local eval batch under TensorBatches' round-robin deal."""
    return local_index * world_size + rank
