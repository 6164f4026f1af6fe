"""Data throughput, streamed vs in memory, on one generated folder of PNGs (docs/benchmarks.md).

    python scripts/bench_stream.py [--n 4000] [--size 32] [--workers 0 2]

Writes n RGB PNGs (shapes32's images) to a temporary folder, then times, side by side:
- in memory: decoding the folder once (setup), then one epoch of TensorBatches;
- streamed: one epoch of StreamBatches (workers decoding PNGs) for each worker count.
Each epoch's batches are put on the support (dequantised) as the data module does.
Images/s counts the training split's images per epoch.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from vae_cli.config import Config
from vae_cli.data.batches import TensorBatches
from vae_cli.data.datamodule import VAEDataModule
from vae_cli.data.datasets import load_shapes32
from vae_cli.data.streaming import StreamBatches
from vae_cli.data.support import to_unit_support


def write_folder(root: Path, n: int, size: int) -> None:
    pool, test = load_shapes32(Path("."))
    x = torch.cat([pool, test])
    for i in range(n):
        img = x[i % len(x)].permute(1, 2, 0).numpy()
        Image.fromarray(img).resize((size, size)).save(root / f"{i:06d}.png")


def epoch(batches, support_fn) -> tuple[int, float]:
    start, seen = time.perf_counter(), 0
    for x in batches:
        seen += len(support_fn(x))
    return seen, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--batch-size", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_folder(Path(tmp), args.n, args.size)
        base = dict(dataset=tmp, likelihood="gaussian", batch_size=args.batch_size, steps_per_call=1)
        dq = lambda x: to_unit_support(x, "unit", "dynamic")  # noqa: E731
        rows = []
        for workers in args.workers:
            start = time.perf_counter()
            dm = VAEDataModule(Config(**base, stream="no", num_workers=workers).validate())
            dm.setup()
            setup_s = time.perf_counter() - start
            n, t = epoch(TensorBatches(dm.splits["train"], args.batch_size, shuffle=True), dq)
            rows.append((f"in memory (decoded once by {workers} workers)", n, t, setup_s))
            dm = VAEDataModule(Config(**base, stream="yes", num_workers=workers).validate())
            dm.setup()
            loader = StreamBatches.over(dm.splits["train"], workers, args.batch_size, True)
            n, t = epoch(loader, dq)
            rows.append((f"streamed, {workers} decoding workers", n, t, 0.0))
    load = os.getloadavg()[0]
    print(f"{args.n} PNGs of {args.size}x{args.size} RGB, batch {args.batch_size}, "
          f"{os.cpu_count()} cores, load average {load:.1f}, torch {torch.__version__}")  # fmt: skip
    print("| path | images/epoch | epoch s | images/s | decode-once s |")
    print("|---|---:|---:|---:|---:|")
    for name, n, t, setup_s in rows:
        print(f"| {name} | {n} | {t:.2f} | {n / t:,.0f} | {setup_s:.1f} |")


if __name__ == "__main__":
    main()
