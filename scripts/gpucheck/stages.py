"""What each stage measures. Runs inside the stage's own subprocess (budget.run_stage): each
stage registers the synthetic MNIST-shaped data it needs, measures, and emits one record per
measurement as soon as it has it. The pieces shared with `make bench` (the hand loop, the
plain Lightning module, `vae train` / `vae eval` in-process, the raw IW forward passes) are
imported from scripts/bench.py, so both scripts time the same code.

A measurement that raises is recorded with its error and the stage goes on to the next one.
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench
import pytorch_lightning as pl
import torch
from torch import Tensor

from gpucheck.report import HAND, PLAIN, RAW, VAE, VAE_EVAL
from vae_cli import config
from vae_cli.cli import quiet_lightning
from vae_cli.settings import RunSettings
from vae_cli.training import fit as training
from vae_cli.training.evaluate import evaluate_checkpoint

Emit = Callable[..., None]
VAL = 5000  # bench.register_tensors' validation split, as MNIST's
# mode -> (precision, torch.compile); `vae train` takes these as --precision / --compile
MODES = {"fp32": ("32-true", False), "bf16-mixed": ("bf16-mixed", False), "compile": ("32-true", True)}
STEPS_PER_CALL = 8  # vae train's default: its last Lightning batch may run this many steps past


def synthetic_mnist(n: int, seed: int) -> Tensor:
    """Uniform uint8 images of MNIST's shape: the device machine has no copy of MNIST. The
    work per step (and so every timing) does not depend on the pixel values."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)


def register_synthetic(pool: int, test: int) -> Tensor:
    """Register (pool, test) as bench.DATASET in this process; the training split returned.
    Deterministic, so every stage process registers the same data."""
    data = synthetic_mnist(pool, seed=0)
    bench.register_tensors(data, synthetic_mnist(test, seed=1))
    return data[:-VAL]


def accelerator(device: str) -> str:
    return "gpu" if device == "cuda" else "cpu"


def attempt(emit: Emit, base: dict[str, Any], measure: Callable[[], dict[str, Any]]) -> None:
    try:
        emit(**base, **measure())
    except Exception as e:  # one failed measurement is a record, not the end of the stage
        first = (str(e).strip().splitlines() or [""])[0][:300]
        emit(**base, error=f"{type(e).__name__}: {first}")


def timed_steps(args: argparse.Namespace, batch: int) -> int:
    return max(args.min_steps, math.ceil(args.images / batch))


def prepare(args: argparse.Namespace, emit: Emit, tmp: Path) -> None:
    """The checkpoint stages (b) and (c) score: one epoch at batch 512, written as a real run."""
    register_synthetic(args.pool, args.eval_examples)
    start = time.perf_counter()
    with bench._quiet():
        ckpt = bench.checkpoint_for_eval(tmp, accelerator(args.device))
    emit(what="checkpoint", checkpoint=str(ckpt), seconds=time.perf_counter() - start)


def throughput(args: argparse.Namespace, emit: Emit, tmp: Path) -> None:
    """(a) `vae train`, the device-resident hand loop and plain Lightning, interleaved per
    batch size, for each mode. The pool is large enough that every timed window lies inside
    one epoch: steady-state steps only (epoch ends are in stage (e))."""
    need = max((args.warmup + timed_steps(args, b) + STEPS_PER_CALL) * b for b in args.batch_sizes)
    train = register_synthetic(max(args.pool, need + VAL), 100)
    on_device = train.to(args.device)
    for mode in args.modes:
        for b in args.batch_sizes:
            side_by_side(args, emit, tmp, train, on_device, mode, b)
            if mode == "fp32":
                measure = functools.partial(kernel_time, on_device, b, args.profile_steps)
                attempt(emit, {"what": "kernel_time", "batch": b}, measure)


def side_by_side(
    args: argparse.Namespace, emit: Emit, tmp: Path, train: Tensor, on_device: Tensor, mode: str, b: int
) -> None:
    """One batch size in one mode: the hand loop, `vae train`, then plain Lightning."""
    precision, compile = MODES[mode]
    steps, acc = timed_steps(args, b), accelerator(args.device)
    runs = {
        HAND: functools.partial(bench.run_hand, on_device, b, args.warmup, steps, True, precision, compile),
        VAE: lambda: bench.run_vae(b, args.warmup, steps, tmp, compile, acc, precision)[0],
    }
    if not compile:  # the baseline as a Lightning user writes it: no compile
        runs[PLAIN] = functools.partial(bench.run_plain, train, b, args.warmup, steps, tmp, acc, precision)
    base = {"what": "throughput", "mode": mode, "batch": b, "timed_steps": steps}
    for variant, run in runs.items():
        attempt(emit, {**base, "variant": variant}, lambda run=run: _rate(run()))


def _rate(r: bench.Rate) -> dict[str, float]:
    return {"images_per_s": r[0], "images_per_cpu_s": r[1]}


def kernel_time(train: Tensor, batch: int, steps: int) -> dict[str, float]:
    """GPU kernel time per step of the hand loop's step (its maths, fp32): the sum of the
    device events' durations the profiler records over `steps` steps (one stream, so they
    do not overlap). The share of a wall-clock step above it is host-side overhead."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    loop = bench.hand_steps(train, batch, tuned=True)
    for _ in range(10):
        next(loop)
    bench.cuda_sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            next(loop)
        bench.cuda_sync()
    us = sum(e.time_range.elapsed_us() for e in prof.events() if e.device_type == DeviceType.CUDA)
    if us == 0:
        raise RuntimeError("the profiler recorded no device events")
    return {"kernel_ms_per_step": us / steps / 1000, "profiled_steps": steps}


def _eval(ckpt: str, k: int, chunk: int, run: dict[str, Any]) -> dict[str, Any]:
    """`vae eval` in-process; `run` holds the hardware settings (RunSettings fields)."""
    with bench._quiet():
        res = evaluate_checkpoint(Path(ckpt), "test", iw_samples=k, chunk=chunk, run=RunSettings(**run))
    assert res is not None  # one process: rank 0
    return res


def iw_eval(args: argparse.Namespace, emit: Emit, tmp: Path) -> None:
    """(b) `vae eval --iw-samples K` beside the raw batched forward passes the bound needs."""
    register_synthetic(args.pool, args.eval_examples)
    bench.raw_iw(Path(args.ckpt), 2, 2, args.device)  # CUDA context and kernels warm for both
    k, acc = args.iw_samples, accelerator(args.device)

    def vae_eval() -> dict[str, Any]:
        res = _eval(args.ckpt, k, args.chunk, {"accelerator": acc})
        return {"seconds": res["wall_time_s"], "examples": res["n_examples"]}

    def raw() -> dict[str, Any]:
        seconds, n = bench.raw_iw(Path(args.ckpt), k, args.chunk, args.device)
        return {"seconds": seconds, "examples": n}

    for variant, fn in ((VAE_EVAL, vae_eval), (RAW, raw)):
        attempt(emit, {"what": "iw_eval", "variant": variant, "iw_samples": k}, fn)


def bf16_eval(args: argparse.Namespace, emit: Emit, tmp: Path) -> None:
    """(c) the same checkpoint scored at 32-true and at bf16-mixed."""
    register_synthetic(args.pool, args.eval_examples)
    acc = accelerator(args.device)
    for precision in ("32-true", "bf16-mixed"):

        def score(precision: str = precision) -> dict[str, Any]:
            start = time.perf_counter()
            overrides = {"accelerator": acc, "precision": precision}
            res = _eval(args.ckpt, args.bf16_iw_samples, args.chunk, overrides)
            keys = ("elbo", "elbo_stderr", "iw", "iw_stderr", "n_examples")
            return {**{k: res[k] for k in keys}, "seconds": time.perf_counter() - start}

        attempt(emit, {"what": "eval_precision", "precision": precision, "iw_samples": args.bf16_iw_samples},
                score)  # fmt: skip


def ddp(args: argparse.Namespace, emit: Emit, tmp: Path) -> None:
    """(d) one epoch of training under `--strategy ddp --devices 1`, then its checkpoint scored
    on one device and under ddp: the two must be equal exactly."""
    register_synthetic(args.pool, args.ddp_eval_examples)
    acc = accelerator(args.device)
    cfg = config.Config(
        experiment="gpu-check-ddp", dataset=bench.DATASET, batch_size=512, epochs=1
    ).validate()
    run = RunSettings(runs_dir=str(tmp / "runs"), accelerator=acc, devices=1, strategy="ddp")
    start = time.perf_counter()
    with bench._quiet():
        run_dir = training.fit(cfg, run=run)
    assert run_dir is not None
    emit(what="ddp_train", seconds=time.perf_counter() - start, run=str(run_dir))
    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    for strategy in ("auto", "ddp"):

        def score(strategy: str = strategy) -> dict[str, Any]:
            res = _eval(ckpt, args.ddp_iw_samples, args.chunk,
                        {"accelerator": acc, "devices": 1, "strategy": strategy})  # fmt: skip
            keys = ("elbo", "recon", "kl", "iw", "elbo_stderr", "iw_stderr", "n_examples", "world_size")
            return {k: res[k] for k in keys}

        attempt(emit, {"what": "ddp_eval", "strategy": strategy, "iw_samples": args.ddp_iw_samples}, score)


class EpochClock(pl.Callback):
    """Seconds of each training epoch, from its start to its end (validation and the
    checkpoint written at the end of the epoch included), device-synchronised."""

    def __init__(self) -> None:
        self.clock = bench.Clock()
        self.epochs: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.clock.start()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs.append(self.clock.stop()[0])


def table1(args: argparse.Namespace, emit: Emit, tmp: Path) -> None:
    """(e) each Table-1 experiment of experiments.yaml, as configured there (model, objective,
    k, batch size, schedule), for a few epochs on MNIST-sized synthetic data."""
    train = register_synthetic(args.pool, 100)
    acc = accelerator(args.device)
    for name in args.table1:

        def one(name: str = name) -> dict[str, Any]:
            overrides = {"dataset": bench.DATASET, "epochs": args.table1_epochs, "accelerator": acc,
                         "runs_dir": str(tmp / "runs")}  # fmt: skip
            cfg, run = config.resolve_all(name, overrides=overrides)
            clock = EpochClock()
            with bench._quiet():
                training.fit(cfg, callbacks=[clock], run=run)
            return {"layers": cfg.stochastic_layers, "objective": cfg.objective, "k": cfg.k,
                    "batch": cfg.batch_size, "train_images": len(train),
                    "steps_per_epoch": math.ceil(len(train) / cfg.batch_size),
                    "epoch_s": clock.epochs}  # fmt: skip

        attempt(emit, {"what": "table1_epoch", "experiment": name}, one)


STAGES: dict[str, Callable[[argparse.Namespace, Emit, Path], None]] = {
    "prepare": prepare,
    "throughput": throughput,
    "iw_eval": iw_eval,
    "bf16_eval": bf16_eval,
    "ddp": ddp,
    "table1": table1,
}


def run(name: str, args: argparse.Namespace, emit: Emit, tmp: Path) -> None:
    quiet_lightning()
    STAGES[name](args, emit, tmp)
