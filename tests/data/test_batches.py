"""data/batches.py: rank sharding, the shuffle order, several mini-batches per item, and
eval batches that do not depend on the world size."""

from __future__ import annotations

import math

import pytest
import torch

from vae_cli.data.batches import TensorBatches, eval_batch_index


@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_shards_cover_every_example_exactly_once(world: int):
    data = torch.arange(361)
    seen = torch.cat(
        [
            torch.cat(list(TensorBatches(data, 50, shuffle=False, rank=r, world_size=world)))
            for r in range(world)
        ]
    )
    assert torch.equal(seen.sort().values, data)


def test_shuffle_order_is_a_function_of_seed_and_epoch():
    data = torch.arange(100)
    epoch = {"e": 0}
    batches = TensorBatches(data, 10, shuffle=True, seed=3, epoch_fn=lambda: epoch["e"])
    first, again = torch.cat(list(batches)), torch.cat(list(batches))
    epoch["e"] = 1
    second = torch.cat(list(batches))
    assert torch.equal(first, again) and not torch.equal(first, second)
    assert torch.equal(first.sort().values, data)


@pytest.mark.parametrize("steps", [1, 3, 4])
def test_items_of_several_steps_hold_the_same_mini_batches(steps: int):
    """An item of `steps_per_item` steps is the concatenation of that many consecutive
    mini-batches of the same shuffle, so the module's split gives the one-step batches."""
    data = torch.arange(95)
    one = list(TensorBatches(data, 10, shuffle=True, seed=3, world_size=1))
    many = TensorBatches(data, 10, shuffle=True, seed=3, steps_per_item=steps)
    split = [b for item in many for b in item.split(10)]
    assert len(split) == len(one) == many.steps == 10
    assert len(many) == math.ceil(10 / steps)
    assert all(torch.equal(a, b) for a, b in zip(one, split, strict=True))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_batches_do_not_depend_on_the_world_size(world: int):
    data = torch.arange(361)
    batches = {}
    for rank in range(world):
        for i, b in enumerate(TensorBatches(data, 50, shuffle=False, rank=rank, world_size=world)):
            batches[eval_batch_index(i, rank, world)] = b
    assert sorted(batches) == list(range(math.ceil(361 / 50)))
    for index, b in batches.items():
        assert torch.equal(b, data[index * 50 : (index + 1) * 50])
