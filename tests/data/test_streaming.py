"""data/streaming.py: streamed batches are the in-memory batches, in the same order, per epoch
and rank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from datafiles import save, setup

from vae_cli.data.streaming import StreamBatches


def test_streaming_serves_the_in_memory_batches(tmp_path: Path):
    """Same examples in the same order, per epoch and rank; noise applied on the batch."""
    rng = np.random.default_rng(0)
    for i in range(45):
        save(tmp_path / "s" / f"{i:02d}.png", rng.integers(0, 256, (6, 6, 3)).astype(np.uint8))
    kw = dict(dataset=tmp_path / "s", likelihood="bernoulli", steps_per_call=2, num_workers=2)
    mem, streamed = setup(stream="no", **kw), setup(stream="yes", **kw)
    assert streamed.source.streamed and not mem.source.streamed
    for shuffle, split in ((True, "train"), (False, "val"), (False, "test")):
        for epoch in (0, 1):
            how = dict(seed=5, epoch_fn=lambda e=epoch: e, steps_per_item=2)
            in_memory = list(
                mem._batches(split, shuffle).__class__(mem.source.splits[split], 4, shuffle, **how)
            )
            workers = 2 if (split, epoch) == ("train", 0) else 0  # worker processes once (slow start)
            stream = list(StreamBatches.over(streamed.splits[split], workers, 4, shuffle, **how))
            if not shuffle:  # eval batches carry their global index, which seeds their noise
                assert [int(i) for _, i in stream] == list(range(len(stream)))
                stream = [x for x, _ in stream]
            assert len(stream) == len(in_memory) > 0
            assert all(torch.equal(a, b) for a, b in zip(stream, in_memory, strict=True))
