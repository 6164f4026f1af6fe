"""Throughput benchmark: `vae train` against a hand-written PyTorch loop and a plain Lightning module.

One process, one run, every measurement interleaved (variants and batch sizes rotate within
each repeat, so a burst of load from elsewhere hits all of them alike), medians over repeats:

  (0) vae train            vae_cli.training.fit.fit, the code path of the CLI: the RichProgressBar,
                           CSV/TensorBoard loggers, checkpoint callback, logging every N steps
  (0c) vae train --compile the same with Config.compile (torch.compile)
  (a) hand-written loop    the same model (784-200-200-50 tanh, Bernoulli), torch.optim.Adam with
                           its defaults, dynamic binarisation, shuffled index batches of one
                           in-memory uint8 tensor: the limit a runner can approach
  (b) plain Lightning      a LightningModule fed by a standard DataLoader over a TensorDataset,
                           self.log every step, a default Trainer

Only steady-state training steps count: the first --warmup steps of each run are excluded and
the timed window closes at the end of the last step (no validation falls inside it).

It also times `vae eval --iw-samples K` (vae_cli.training.evaluate.evaluate_checkpoint, the code path of
the CLI) on the first --eval-examples test examples and compares it with the raw batched
forward passes the bound needs (encoder once, decoder for every importance sample, same batch
and chunk sizes, no Lightning, no torch.distributions).

Writes a markdown table to docs/benchmarks.md (--out) with the machine and the date.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vae_cli.cli import quiet_lightning  # noqa: E402
from vae_cli.data import registry as data  # noqa: E402
from vae_cli.data.datamodule import VAEDataModule  # noqa: E402
from vae_cli.settings import Config, RunSettings  # noqa: E402
from vae_cli.training import fit as training  # noqa: E402
from vae_cli.training.evaluate import evaluate_checkpoint  # noqa: E402
from vae_cli.training.fastpath import NVML_CHECK  # noqa: E402
from vae_cli.training.load import load_module  # noqa: E402

DATASET = "bench"  # registered below with the tensors this run measures on


# ---------------------------------------------------------------------------- data
def load_data(data_dir: str | None, eval_examples: int) -> tuple[Tensor, Tensor, str]:
    """(train pool, test subset) as uint8 (N, 1, 28, 28), and a sentence on what they are."""
    if data_dir:
        pool, test = data.DATASETS["mnist"].load(Path(data_dir))
        what = f"MNIST from {data_dir}"
    else:
        g = torch.Generator().manual_seed(0)
        pool = torch.randint(0, 256, (60000, 1, 28, 28), dtype=torch.uint8, generator=g)
        test = torch.randint(0, 256, (10000, 1, 28, 28), dtype=torch.uint8, generator=g)
        what = "random uint8 data of MNIST's shape (no --data-dir given)"
    test = test[:eval_examples]
    register_tensors(pool, test)
    return pool[:-5000], test, what


def register_tensors(pool: Tensor, test: Tensor) -> None:
    """Make (pool, test) the DATASET that `vae train` / `vae eval` load in this process."""
    data.register(DATASET, (1, 28, 28), 5000, "benchmark data")(lambda _dir: (pool, test))


# ---------------------------------------------------------------------------- timing
class Clock:
    """Wall-clock and process CPU time together. On a shared machine the CPU time is the
    steadier measure: other processes stretch the wall clock, far less a process's own CPU
    seconds (with one torch thread; with more, spinning OpenMP threads count too)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def start(self) -> None:
        cuda_sync()
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        cuda_sync()
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def cuda_sync() -> None:
    """CUDA runs asynchronously: a host clock read only means something after a sync. A
    no-op where CUDA was never used (CPU runs)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


Rate = tuple[float, float]  # (images per wall-clock second, images per CPU second)


class StepTimer(pl.Callback):
    """Images per second over the training steps after the first `warmup` optimiser steps.

    Counted in Lightning batches from the first one that starts at or after `warmup` steps:
    a `vae train` batch carries several optimiser steps (Config.steps_per_call). The clock
    is read (a device sync on CUDA) only at the start and after the batch that reaches
    max_steps, so the timer adds no sync to the steps it times."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.images, self.started = warmup, 0, False
        self.clock = Clock()
        self.elapsed = (0.0, 0.0)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if not self.started and trainer.global_step >= self.warmup:
            self.started = True
            self.clock.start()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.started:  # a vae train batch is a tuple of mini-batches, a plain one [x]
            self.images += sum(len(b) for b in batch) if isinstance(batch, list | tuple) else len(batch)
            if trainer.global_step >= trainer.max_steps:
                self.elapsed = self.clock.stop()

    def rate(self) -> Rate:
        if not self.images or not self.elapsed[0]:
            raise RuntimeError(f"no step was timed: max_steps must exceed the {self.warmup} warm-up steps "
                               "by more than a Lightning batch (steps_per_call steps)")  # fmt: skip
        return self.images / self.elapsed[0], self.images / self.elapsed[1]


def hand_nets() -> tuple[nn.Module, nn.Module]:
    enc = nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 200), nn.Tanh(),
        nn.Linear(200, 200), nn.Tanh(),
        nn.Linear(200, 100),
    )  # fmt: skip
    dec = nn.Sequential(
        nn.Linear(50, 200), nn.Tanh(),
        nn.Linear(200, 200), nn.Tanh(),
        nn.Linear(200, 784),
    )  # fmt: skip
    return enc, dec


def hand_loss(enc: nn.Module, dec: nn.Module, xb: Tensor, tuned: bool = False) -> Tensor:
    """Negative ELBO per batch mean, written out: BCE-with-logits and the closed-form KL."""
    if tuned:  # the binarisation vae_cli.data.support uses: same Bernoulli(x/255), faster on CPU
        x = (torch.rand(xb.shape, device=xb.device) * 255 < xb).float().flatten(1)
    else:  # dynamic binarisation as one writes it first
        x = torch.bernoulli(xb.float() / 255).flatten(1)
    mu, logvar = enc(x).chunk(2, dim=-1)
    z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
    recon = -F.binary_cross_entropy_with_logits(dec(z), x, reduction="none").sum(-1)
    kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1)
    return (kl - recon).mean()


def run_hand(
    train: Tensor,
    batch: int,
    warmup: int,
    steps: int,
    tuned: bool = False,
    precision: str = "32-true",
    compile: bool = False,
) -> Rate:
    """(a): the minimal loop. Every epoch a fresh permutation; batches are index slices.

    tuned: with the two kernel choices `vae train` makes (fused Adam, binarisation by a
    uniform fill), so the table shows how much of its speed comes from them.
    On the device `train` lives on (device-resident on a GPU: the permutation too);
    precision "bf16-mixed" runs the loss under bf16 autocast; compile torch.compiles it."""
    # A script of its own would not import Lightning, whose import sets this variable and
    # so makes every Adam.step probe NVML (see vae_cli.training.fastpath.NoNvmlProbePerStep).
    saved = os.environ.pop(NVML_CHECK, None)
    try:
        return _hand_loop(train, batch, warmup, steps, tuned, precision, compile)
    finally:
        if saved is not None:
            os.environ[NVML_CHECK] = saved


def _hand_loop(
    train: Tensor, batch: int, warmup: int, steps: int, tuned: bool, precision: str, compile: bool
) -> Rate:
    loop = hand_steps(train, batch, tuned, precision, compile)
    for _ in range(warmup):
        next(loop)
    clock = Clock()
    clock.start()
    images = sum(next(loop)[0] for _ in range(steps))
    wall, cpu = clock.stop()
    return images / wall, images / cpu


def hand_steps(
    train: Tensor, batch: int, tuned: bool = False, precision: str = "32-true", compile: bool = False
) -> Iterator[tuple[int, Tensor]]:
    """The hand-written loop, one optimiser step per next(): (images in the batch, its loss).
    Endless; every epoch a fresh permutation, batches are index slices of `train`."""
    torch.manual_seed(0)
    device = train.device
    enc, dec = (net.to(device) for net in hand_nets())
    params = [*enc.parameters(), *dec.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3, **({"fused": True} if tuned else {}))
    loss_fn = torch.compile(hand_loss) if compile else hand_loss
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    while True:
        perm = torch.randperm(len(train), device=device)
        for i in range(0, len(train), batch):
            xb = train[perm[i : i + batch]]
            with autocast:
                loss = loss_fn(enc, dec, xb, tuned)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            yield len(xb), loss.detach()


class PlainVAE(pl.LightningModule):
    """(b): what a Lightning user writes first: self.log every step, a DataLoader for data."""

    def __init__(self) -> None:
        super().__init__()
        self.enc, self.dec = hand_nets()

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        loss = hand_loss(self.enc, self.dec, batch[0])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def run_plain(
    train: Tensor,
    batch: int,
    warmup: int,
    steps: int,
    tmp: Path,
    accelerator: str = "cpu",
    precision: str = "32-true",
) -> Rate:
    """(b) on host data (a DataLoader copies each batch to the accelerator), as written first."""
    torch.manual_seed(0)
    timer = StepTimer(warmup)
    loader = DataLoader(TensorDataset(train), batch_size=batch, shuffle=True)
    trainer = pl.Trainer(
        max_steps=warmup + steps, accelerator=accelerator, devices=1, precision=precision,
        default_root_dir=str(tmp / "plain"), enable_checkpointing=False, enable_model_summary=False,
        callbacks=[timer],
    )  # fmt: skip
    with _quiet():
        trainer.fit(PlainVAE(), loader)
    return timer.rate()


def run_vae(
    batch: int,
    warmup: int,
    steps: int,
    tmp: Path,
    compile: bool = False,
    accelerator: str = "cpu",
    precision: str = "32-true",
    steps_per_call: int | None = None,
) -> tuple[Rate, Path]:
    """(0): `vae train` in-process, exactly what the CLI's train command calls."""
    cfg = Config(
        experiment=f"bench-b{batch}{'-compile' if compile else ''}", dataset=DATASET,
        batch_size=batch, max_steps=warmup + steps, epochs=1000, compile=compile,
        steps_per_call=steps_per_call or Config.steps_per_call,
    ).validate()  # fmt: skip
    run = RunSettings(runs_dir=str(tmp / "runs"), accelerator=accelerator, precision=precision)
    timer = StepTimer(warmup)
    with _quiet():
        run_dir = training.fit(cfg, callbacks=[timer], run=run)
    assert run_dir is not None
    return timer.rate(), run_dir


@contextlib.contextmanager
def _quiet():
    """The progress bars and summary tables stay on (they are part of what is measured) but
    are not printed: they would bury the benchmark's own output."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


# ---------------------------------------------------------------------------- evaluation
def checkpoint_for_eval(tmp: Path, accelerator: str = "cpu") -> Path:
    """One short training epoch at batch 512, so the checkpoint is written as in a real run."""
    cfg = Config(experiment="bench-eval", dataset=DATASET, batch_size=512, epochs=1).validate()
    with _quiet():
        run_dir = training.fit(cfg, run=RunSettings(runs_dir=str(tmp / "runs"), accelerator=accelerator))
    assert run_dir is not None
    return run_dir / "checkpoints" / "last.ckpt"


@torch.no_grad()
def raw_iw(ckpt: Path, k: int, chunk: int, device: str = "cpu") -> tuple[float, int]:
    """The forward passes `vae eval` needs for the IW bound, written out, at the batch size
    `vae eval` uses (the run's); returns seconds and examples."""
    module = load_module(ckpt).to(device)
    batch = module.cfg.batch_size
    dm = VAEDataModule(module.cfg)
    dm.setup("test")
    test = dm.splits["test"].to(device)
    enc, dec = module.vae.encoder, module.vae.decoder
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    torch.manual_seed(0)
    cuda_sync()
    start = time.perf_counter()
    for i in range(0, len(test), batch):
        x = test[i : i + batch].flatten(1)
        mu, logvar = enc(x).chunk(2, dim=-1)
        std = (0.5 * logvar).exp()
        parts = []
        for s in range(0, k, chunk):
            eps = torch.randn(min(chunk, k - s), *mu.shape, device=mu.device)
            z = mu + std * eps
            logits = dec(z.flatten(0, 1)).flatten(1)
            xk = x.expand(len(eps), *x.shape).flatten(0, 1)
            log_px = -F.binary_cross_entropy_with_logits(logits, xk, reduction="none").sum(-1)
            log_pz = (-0.5 * z.square() - half_log_2pi).sum(-1)
            log_qz = (-0.5 * eps.square() - half_log_2pi - 0.5 * logvar).sum(-1)
            lw = log_px.view(len(eps), -1) + log_pz - log_qz
            parts.append(torch.logsumexp(lw.double(), dim=0))
        torch.logsumexp(torch.stack(parts), dim=0)
    cuda_sync()
    return time.perf_counter() - start, len(test)


def vae_eval(ckpt: Path, k: int, chunk: int) -> tuple[float, int]:
    with _quiet():
        res = evaluate_checkpoint(ckpt, "test", iw_samples=k, chunk=chunk, run=RunSettings(accelerator="cpu"))
    return float(res["wall_time_s"]), int(res["n_examples"])


# ---------------------------------------------------------------------------- report
def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu}, {cores} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"pytorch-lightning {pl.__version__}, Python {platform.python_version()}"
    )


KEPT_HEADING = "\n## GPU check"  # written by hand from `make gpu-check` (scripts/gpu_check.py)


def kept_sections(out: Path) -> str:
    """The GPU-check section of an existing benchmarks page, from its heading to the end:
    `make bench` rewrites its own CPU tables and leaves that section as it was."""
    text = out.read_text() if out.exists() else ""
    start = text.find(KEPT_HEADING)
    return text[start:] if start >= 0 else ""


def spread(xs: list[float]) -> str:
    return f"{min(xs):,.0f}-{max(xs):,.0f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="dataset root holding MNIST/raw (else random data)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 512])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--images", type=int, default=30000, help="timed images per training run")
    p.add_argument("--warmup", type=int, default=20, help="steps per run excluded from the timing")
    p.add_argument("--no-compile", action="store_true", help="skip the --compile variant")
    p.add_argument("--one-step-per-batch", action="store_true",
                   help="add vae train with one optimiser step per Lightning batch")  # fmt: skip
    p.add_argument("--iw-samples", type=int, default=5000)
    p.add_argument("--chunk", type=int, default=100, help="importance samples per forward pass")
    p.add_argument("--eval-examples", type=int, default=200,
                   help="test examples the eval timing scores (the full set takes far longer)")  # fmt: skip
    p.add_argument("--eval-repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for every variant [default: torch's own choice]")  # fmt: skip
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = p.parse_args()
    quiet_lightning()
    if args.threads:
        torch.set_num_threads(args.threads)
    began, load_before = time.perf_counter(), os.getloadavg()
    train, _test, what = load_data(args.data_dir, args.eval_examples)
    tmp = Path(tempfile.mkdtemp(prefix="vae-bench-"))
    print(f"data: {what}; {len(train)} training examples; machine: {machine()}")

    variants: dict[str, Callable[[int, int, int], Rate]] = {
        "hand-written loop (a)": lambda b, w, s: run_hand(train, b, w, s),
        "hand-written loop, tuned (fused Adam, fast binarisation)": lambda b, w, s: run_hand(
            train, b, w, s, tuned=True
        ),
        "vae train": lambda b, w, s: run_vae(b, w, s, tmp)[0],
        "plain Lightning + DataLoader (b)": lambda b, w, s: run_plain(train, b, w, s, tmp),
    }
    if args.one_step_per_batch:
        variants["vae train, 1 step per Lightning batch"] = lambda b, w, s: run_vae(
            b, w, s, tmp, steps_per_call=1
        )[0]
    if not args.no_compile:
        variants["vae train --compile"] = lambda b, w, s: run_vae(b, w, s, tmp, compile=True)[0]
    rates: dict[tuple[int, str], list[Rate]] = {}
    names = list(variants)
    for rep in range(args.repeats):
        for b in args.batch_sizes:
            steps = math.ceil(args.images / b)
            order = names[rep % len(names) :] + names[: rep % len(names)]  # rotate: no fixed position
            for name in order:
                r = variants[name](b, args.warmup, steps)
                rates.setdefault((b, name), []).append(r)
                print(f"repeat {rep + 1}/{args.repeats}  batch {b:4d}  {name:40s} {r[0]:9,.0f} img/s"
                      f"  ({r[1]:,.0f} per CPU s)", flush=True)  # fmt: skip

    ckpt = checkpoint_for_eval(tmp)
    eval_times: dict[str, list[float]] = {"vae eval": [], "raw forward passes": []}
    n_eval = 0
    for rep in range(args.eval_repeats):
        pair = ["vae eval", "raw forward passes"]
        for name in pair if rep % 2 == 0 else pair[::-1]:
            if name == "vae eval":
                secs, n_eval = vae_eval(ckpt, args.iw_samples, args.chunk)
            else:
                secs, n_eval = raw_iw(ckpt, args.iw_samples, args.chunk)
            eval_times[name].append(secs)
            print(f"eval repeat {rep + 1}/{args.eval_repeats}  {name:20s} {secs:7.2f} s", flush=True)

    total = time.perf_counter() - began
    load_after = os.getloadavg()
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (scripts/bench.py) on {now:%Y-%m-%d %H:%M} UTC.",
        "",
        f"- machine: {machine()}",
        f"- data: {what}",
        f"- load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f}"
        " — other processes on the machine slow every variant; the ratios, measured interleaved, "
        "are the robust part",
        f"- {args.repeats} repeats, interleaved; each run times {args.images} images after "
        f"{args.warmup} warm-up steps; medians (min-max)",
        f"- whole benchmark: {total:.0f} s",
        "",
        "## Training throughput (images/s)",
        "",
        "Wall clock: images per second. CPU: images per second of the process's CPU time, the "
        "steadier measure when other processes share the cores.",
        "",
        "| batch | variant | img/s (wall) | min-max | ratio to (a) | img/s (CPU) | ratio to (a) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for b in args.batch_sizes:
        ref = [statistics.median(r[i] for r in rates[(b, names[0])]) for i in (0, 1)]
        for name in names:
            wall = [r[0] for r in rates[(b, name)]]
            cpu = statistics.median(r[1] for r in rates[(b, name)])
            med = statistics.median(wall)
            lines.append(f"| {b} | {name} | {med:,.0f} | {spread(wall)} | {med / ref[0]:.2f} "
                         f"| {cpu:,.0f} | {cpu / ref[1]:.2f} |")  # fmt: skip
    ev, raw = statistics.median(eval_times["vae eval"]), statistics.median(eval_times["raw forward passes"])
    work = n_eval * args.iw_samples
    lines += [
        "",
        f"## Importance-weighted evaluation, K = {args.iw_samples}",
        "",
        f"The first {n_eval} test examples (`--eval-examples`; the full test set takes proportionally "
        f"longer), importance samples in chunks of {args.chunk}; median of {args.eval_repeats}.",
        "",
        "| what | seconds | examples·samples/s | ratio to raw |",
        "|---|---:|---:|---:|",
        f"| `vae eval --iw-samples {args.iw_samples}` | {ev:.2f} | {work / ev:,.0f} | {ev / raw:.2f} |",
        f"| raw batched forward passes | {raw:.2f} | {work / raw:,.0f} | 1.00 |",
        "",
    ]
    table = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + kept_sections(args.out))
    print()
    print(table)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
