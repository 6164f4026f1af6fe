"""The device check (issue 17): everything about vae-cli's GPU path, measured in one command.

    make gpu-check OUT=gpu-check         # or: python scripts/gpu_check.py --out gpu-check

Without a CUDA GPU it prints one line and exits 0. With one, it runs each stage in a
subprocess of its own, cut at the stage's time budget (recorded as "timed out", not fatal),
prints progress with times, and writes every number to OUT/gpu-check.json and a summary to
OUT/gpu-check.md. Stages, each measured side by side in the same run:

  prepare     a checkpoint for (b) and (c): one epoch at batch 512
  throughput  (a) `vae train` vs the device-resident hand loop (same MLP, Bernoulli ELBO,
              fused Adam) vs plain Lightning, images/s at batch 100/512/4096, for fp32,
              bf16-mixed and --compile; plus the GPU kernel time of a step (profiler), so the
              per-step overhead share says whether a GPU fast path (CUDA graphs) is needed
  iw_eval     (b) `vae eval --iw-samples 5000` on 10,000 images vs the raw batched forward passes
  bf16_eval   (c) bf16-mixed vs 32-true eval: the difference in nats against its standard error
  ddp         (d) a 1-GPU `--strategy ddp` run; its eval on one device and under ddp, compared exactly
  table1      (e) one epoch (two, the first pays warm-up) of each IWAE Table-1 experiment and the
              projected time of the paper's 3280-epoch schedule (epoch time x 3280: a projection)

Data is synthetic uint8 of MNIST's shape (the device machine has no copy of MNIST).
--device cpu runs the same stages on the CPU at whatever sizes are passed: it exists to test
this script, and its numbers say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]  # bench, gpucheck; this checkout's vae_cli

from gpucheck import budget, probe, report  # noqa: E402  (standard library only at import)

# Seconds per stage, 470 in all: with start-up and the install the run stays inside 9 minutes.
BUDGETS = {"prepare": 35, "throughput": 200, "iw_eval": 50, "bf16_eval": 35, "ddp": 40, "table1": 110}
TOTAL_S = 480  # the whole run, all stages: a stage gets at most what is left of this
INTERNAL = ("stage", "records", "tmp", "ckpt", "out", "probe")  # not settings of the measurement
TABLE1 = [f"iwae-{layers}l-{obj}-k{k}" for layers in (1, 2) for k in (1, 5, 50) for obj in ("vae", "iwae")]


def positive(text: str) -> float:
    """An argparse type: a finite number above 0 (a budget of 0 or less would cut every stage)."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("gpu-check"), help="folder for the JSON and markdown")
    p.add_argument("--probe", action="store_true",
                   help="exit 0 if a CUDA GPU is usable, else print one line and exit 1")  # fmt: skip
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu: test this script on the CPU (numbers say nothing about a GPU)")  # fmt: skip
    p.add_argument("--stages", nargs="+", choices=list(BUDGETS), default=list(BUDGETS))
    p.add_argument("--budget-scale", type=positive, default=1.0, help="multiply every stage budget (> 0)")
    p.add_argument("--total-s", type=float, default=TOTAL_S, help="budget of the whole run (seconds)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 512, 4096])
    p.add_argument("--modes", nargs="+", choices=("fp32", "bf16-mixed", "compile"),
                   default=["fp32", "bf16-mixed", "compile"])  # fmt: skip
    p.add_argument("--images", type=int, default=50000, help="timed images per throughput run")
    p.add_argument("--min-steps", type=int, default=60, help="timed steps per throughput run, at least")
    p.add_argument("--warmup", type=int, default=20, help="steps per throughput run before the clock starts")
    p.add_argument("--profile-steps", type=int, default=20, help="hand-loop steps profiled for kernel time")
    p.add_argument("--pool", type=int, default=60000, help="synthetic training pool (incl. 5000 validation)")
    p.add_argument("--eval-examples", type=int, default=10000, help="test images for (b) and (c)")
    p.add_argument("--iw-samples", type=int, default=5000, help="K of (b)")
    p.add_argument("--chunk", type=int, default=100, help="importance samples per forward pass")
    p.add_argument("--bf16-iw-samples", type=int, default=1000, help="K of (c)")
    p.add_argument("--ddp-eval-examples", type=int, default=10000, help="test images for (d)")
    p.add_argument("--ddp-iw-samples", type=int, default=100, help="K of (d)")
    p.add_argument("--table1", nargs="+", default=TABLE1, help="experiments timed in (e)")
    p.add_argument("--table1-epochs", type=int, default=2, help="epochs per experiment in (e)")
    # internal: the stage subprocess
    p.add_argument("--stage", help=argparse.SUPPRESS)
    p.add_argument("--records", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--ckpt", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    reason = probe.no_cuda_reason() if args.device == "cuda" else None
    if reason:
        print(probe.no_gpu_line(reason))
        return 1 if args.probe else 0
    if args.probe:
        return 0
    if args.stage:
        from gpucheck import stages

        stages.run(args.stage, args, budget.Emitter(args.records), args.tmp)
        return 0
    return orchestrate(args, argv if argv is not None else sys.argv[1:])


def orchestrate(args: argparse.Namespace, argv: list[str]) -> int:
    began = time.perf_counter()
    started = datetime.datetime.now(datetime.timezone.utc)
    budget.log(f"gpu-check: device {args.device}, stages {' '.join(args.stages)}, out {args.out}")
    results: dict[str, Any] = {
        "check": "vae-cli gpu-check (scripts/gpu_check.py)",
        "started_utc": f"{started:%Y-%m-%d %H:%M}",
        "command": " ".join(["scripts/gpu_check.py", *argv]),
        "environment": environment(args.device),
        "settings": {k: v for k, v in vars(args).items() if k not in INTERNAL},
        "stages": {},
    }
    budget.log("environment: " + "; ".join(f"{k} {v}" for k, v in results["environment"].items()))
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    ckpt: str | None = None
    for name in args.stages:
        left = args.total_s - (time.perf_counter() - began)
        stage_budget = min(BUDGETS[name] * args.budget_scale, left)
        if name in ("iw_eval", "bf16_eval") and ckpt is None:
            results["stages"][name] = {"status": "skipped: no checkpoint (stage prepare did not finish)",
                                       "measurements": []}  # fmt: skip
            continue
        if stage_budget < 5:
            results["stages"][name] = {"status": "skipped: the run's budget is spent", "measurements": []}
            continue
        records, err = tmp / f"{name}.jsonl", tmp / f"{name}.stderr"
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--stage", name,
               "--records", str(records), "--tmp", str(tmp)]  # fmt: skip
        if ckpt:
            cmd += ["--ckpt", ckpt]
        results["stages"][name] = result = budget.run_stage(name, cmd, stage_budget, records, err)
        if name == "prepare":
            ckpt = next((r["checkpoint"] for r in result["measurements"] if "checkpoint" in r), None)
        results["seconds"] = time.perf_counter() - began
        report.write(args.out, results)  # after every stage: a cut-off run still leaves its numbers
    results["seconds"] = time.perf_counter() - began
    json_path, md_path = report.write(args.out, results)
    print(md_path.read_text())
    budget.log(f"wrote {json_path} and {md_path} ({results['seconds']:.0f} s in all)")
    return 0


def environment(device: str) -> dict[str, str]:
    import pytorch_lightning as pl
    import torch
    from bench import machine

    env = {
        "device": torch.cuda.get_device_name(0)
        if device == "cuda"
        else "CPU (--device cpu: a test of the script; its numbers say nothing about a GPU)",
        "host CPU": machine(),
        "torch": f"{torch.__version__} (CUDA {torch.version.cuda})",
        "pytorch-lightning": pl.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "git commit": _git_commit(),
    }
    if device == "cuda":
        env["driver"] = _nvidia_smi("--query-gpu=driver_version,memory.total", "--format=csv,noheader")
    return env


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _nvidia_smi(*flags: str) -> str:
    try:
        out = subprocess.run(["nvidia-smi", *flags], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
