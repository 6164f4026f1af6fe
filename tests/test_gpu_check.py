"""The CPU-runnable parts of the device check (scripts/gpu_check.py, `make gpu-check`): the
hand-written loop it compares `vae train` with, the projection arithmetic, the JSON/markdown
writer, the per-stage time budget, and the one-line exit on a machine without CUDA."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench  # noqa: E402
from gpucheck import budget, report  # noqa: E402

from vae_cli.training import schedules  # noqa: E402

NO_CUDA_ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}


def binary_images(n: int, seed: int) -> torch.Tensor:
    """uint8 images of 0s and 255s: two patterns (top or bottom half on) with 5% of pixels
    flipped. Binarisation of 0/255 data is deterministic, so the data the loss sees is known."""
    g = torch.Generator().manual_seed(seed)
    on = torch.zeros(n, 1, 28, 28, dtype=torch.bool)
    top = torch.rand(n, generator=g) < 0.5
    on[top, :, :14] = True
    on[~top, :, 14:] = True
    on ^= torch.rand(n, 1, 28, 28, generator=g) < 0.05
    return on.to(torch.uint8) * 255


# ---------------------------------------------------------------------------- the hand loop
def test_hand_loss_is_the_negative_elbo_computed_independently():
    """bench.hand_loss (BCE-with-logits and the KL written out, float32) against the ELBO from
    torch.distributions in float64 with the same binarisation and the same z noise."""
    torch.manual_seed(0)
    enc, dec = bench.hand_nets()
    xb = binary_images(16, seed=1)
    torch.manual_seed(7)
    loss = bench.hand_loss(enc, dec, xb, tuned=True)

    torch.manual_seed(7)
    torch.rand(xb.shape)  # the loss's binarisation draw; on 0/255 data its outcome is fixed
    x = (xb == 255).double().flatten(1)
    enc64, dec64 = copy.deepcopy(enc).double(), copy.deepcopy(dec).double()
    mu, logvar = enc64(x).chunk(2, dim=-1)
    eps = torch.randn(mu.shape).double()  # the same draw as the loss's randn_like (float32)
    std = (0.5 * logvar).exp()
    z = mu + std * eps
    log_px = Independent(Bernoulli(logits=dec64(z)), 1).log_prob(x)
    kl = kl_divergence(Independent(Normal(mu, std), 1), Independent(Normal(torch.zeros_like(mu), 1.0), 1))
    assert loss.item() == pytest.approx((kl - log_px).mean().item(), rel=1e-5)


@pytest.fixture
def one_thread():
    """Small CPU steps run ~10x faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_hand_loop_runs_on_the_cpu_and_learns(one_thread):
    train = binary_images(512, seed=2)
    losses = [float(loss) for _, loss in islice(bench.hand_steps(train, 32, tuned=True), 60)]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.6 * first, (first, last)  # about 500 -> 170 nats: it learns the two patterns
    images_per_s, images_per_cpu_s = bench.run_hand(train, 32, warmup=2, steps=5)
    assert images_per_s > 0 and images_per_cpu_s > 0


# ---------------------------------------------------------------------------- arithmetic
def test_paper_schedule_is_3280_epochs_and_the_projection_multiplies():
    # Burda et al. 2016: 3^i epochs for i = 0..7
    assert report.PAPER_EPOCHS == 3280
    assert report.PAPER_STAGES == schedules.IWAE_STAGES
    assert report.projection_s(2.5) == 8200.0
    assert report.hours(8200.0) == "2.3 h"
    results = {"stages": {"table1": {"status": "ok", "measurements": [
        {"what": "table1_epoch", "experiment": "iwae-1l-vae-k1", "epoch_s": [3.0, 2.0]}]}}}  # fmt: skip
    (row,) = report.table1_rows(results)
    assert (row["steady_epoch_s"], row["projected_s"]) == (2.0, 6560.0)  # the warm-up epoch is not used


# ---------------------------------------------------------------------------- the writer
def sample_results() -> dict:
    def tp(variant: str, rate: float) -> dict:
        return {"what": "throughput", "mode": "fp32", "batch": 100, "variant": variant, "images_per_s": rate}

    return {
        "started_utc": "2026-12-02 12:00",
        "seconds": 123.0,
        "environment": {"device": "test device"},
        "settings": {"table1": ["iwae-1l-vae-k1", "iwae-2l-iwae-k50"]},
        "stages": {
            "throughput": {"status": "ok", "seconds": 10.0, "budget_s": 200, "measurements": [
                tp("hand loop", 2000.0), tp("vae train", 1000.0), tp("plain Lightning", 250.0),
                {"what": "kernel_time", "batch": 100, "kernel_ms_per_step": 25.0},
                {"what": "throughput", "mode": "compile", "batch": 100, "variant": "vae train",
                 "error": "RuntimeError: boom"},
            ]},
            "bf16_eval": {"status": "timed out", "seconds": 35.0, "budget_s": 35, "measurements": [
                {"what": "eval_precision", "precision": "32-true", "elbo": -100.0, "elbo_stderr": 0.5,
                 "iw": -95.0, "iw_stderr": 0.4, "n_examples": 10000, "iw_samples": 1000},
            ]},
            "ddp": {"status": "ok", "seconds": 5.0, "budget_s": 40, "measurements": [
                {"what": "ddp_eval", "strategy": s, "elbo": -100.0, "recon": -90.0, "kl": 10.0, "iw": -95.0,
                 "elbo_stderr": 0.5, "iw_stderr": 0.4 + d, "n_examples": 10000, "world_size": 1}
                for s, d in (("auto", 0.0), ("ddp", 0.001))
            ]},
            "table1": {"status": "timed out", "seconds": 110.0, "budget_s": 110, "measurements": [
                {"what": "table1_epoch", "experiment": "iwae-1l-vae-k1", "epoch_s": [1.5, 1.0]},
            ]},
        },
    }  # fmt: skip


def test_json_and_markdown_round_trip(tmp_path: Path):
    results = sample_results()
    json_path, md_path = report.write(tmp_path / "out", results)
    back = json.loads(json_path.read_text())
    derived = back.pop("derived")
    assert back == results  # every measured number comes back unchanged
    (row,) = [r for r in derived["throughput"] if r["mode"] == "fp32"]
    # 100 images per step: vae 100 ms, hand 50 ms a step, of which 25 ms are GPU kernels
    assert row["vae_vs_hand"] == pytest.approx(0.5)
    assert row["vae_vs_plain"] == pytest.approx(4.0)
    assert row["hand_overhead_share"] == pytest.approx(0.5)
    assert row["vae_overhead_share"] == pytest.approx(0.75)
    assert derived["bf16_vs_fp32"] is None  # the bf16 eval was cut: no comparison is made up
    assert derived["ddp"]["exact"] is False and derived["ddp"]["abs_diff"]["iw_stderr"] == pytest.approx(
        0.001
    )
    md = md_path.read_text()
    assert "| fp32 | 100 | 2,000 | 1,000 | 250 | 0.50 | 4.00 | 25.000 | 0.50, 0.75 |" in md
    assert "| bf16_eval | timed out | 35.0 | 35 | 1 |" in md
    assert "RuntimeError: boom" in md
    assert "NOT equal" in md
    assert "| iwae-1l-vae-k1 | 1.50, 1.00 | 1.00 | 0.9 h |" in md  # 1.0 s x 3280 = 0.91 h
    assert "| iwae-2l-iwae-k50 | not measured | | |" in md


# ---------------------------------------------------------------------------- the budget
@pytest.mark.slow  # a subprocess that imports torch or runs for its 2-s budget
def test_a_stage_over_its_budget_is_cut_and_recorded(tmp_path: Path):
    records, pidfile = tmp_path / "r.jsonl", tmp_path / "pid"
    script = (
        "import json, subprocess, sys, time\n"
        f"open({str(records)!r}, 'a').write(json.dumps({{'what': 'first', 'value': 1.5}}) + '\\n')\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
        "print('slow stage running', file=sys.stderr, flush=True)\n"
        "time.sleep(120)\n"
    )
    start = time.perf_counter()
    result = budget.run_stage("slow", [sys.executable, "-c", script], 2.0, records, tmp_path / "err")
    assert time.perf_counter() - start < 15
    assert result["status"] == budget.TIMED_OUT
    assert result["measurements"] == [{"what": "first", "value": 1.5}]  # kept from before the cut
    assert "slow stage running" in result["stderr_tail"]
    grandchild = int(pidfile.read_text())
    for _ in range(50):  # the whole process group goes, not only the stage's own process
        status = Path(f"/proc/{grandchild}/status")
        if not status.exists() or "zombie" in status.read_text():
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"process {grandchild} started by the stage outlived the cut")


def test_stages_that_finish_or_fail_are_recorded_as_such(tmp_path: Path):
    ok = budget.run_stage("ok", [sys.executable, "-c", "pass"], 30, tmp_path / "a", tmp_path / "ae")
    failed = budget.run_stage("bad", [sys.executable, "-c", "raise SystemExit(3)"], 30, tmp_path / "b",
                              tmp_path / "be")  # fmt: skip
    assert (ok["status"], ok["measurements"]) == ("ok", [])
    assert failed["status"] == "failed (exit 3)"


# ---------------------------------------------------------------------------- no GPU
@pytest.mark.slow  # a subprocess that imports torch or runs for its 2-s budget
def test_without_cuda_the_script_prints_one_line_and_exits_0(tmp_path: Path):
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, str(SCRIPTS / "gpu_check.py"), "--out", str(out)],
                         capture_output=True, text=True, env=NO_CUDA_ENV, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    (line,) = res.stdout.splitlines()
    assert line.startswith("gpu-check: no CUDA GPU on this machine")
    assert not out.exists()  # nothing written


@pytest.mark.slow  # make + a subprocess that imports torch
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_gpu_check_without_cuda_prints_one_line_installs_nothing(tmp_path: Path):
    venv = tmp_path / "venv"
    res = subprocess.run(
        ["make", "--no-print-directory", "gpu-check", f"PYTHON3={sys.executable}", f"VENV={venv}",
         f"OUT={tmp_path / 'out'}"],
        cwd=ROOT, capture_output=True, text=True, env=NO_CUDA_ENV, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    (line,) = res.stdout.splitlines()
    assert line.startswith("gpu-check: no CUDA GPU on this machine")
    assert not venv.exists() and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_every_stage_runs_end_to_end_on_the_cpu(tmp_path: Path):
    """The whole check at toy sizes with --device cpu: every stage finishes and lands in the
    JSON, so the one run on a lent GPU does not fail on the script itself."""
    out = tmp_path / "out"
    toy = {
        "--batch-sizes": "64", "--modes": "fp32", "--images": "64", "--min-steps": "16",
        "--warmup": "8",  # vae train's first timed Lightning batch starts at a multiple of steps_per_call
        "--pool": "5600", "--eval-examples": "100", "--iw-samples": "5", "--bf16-iw-samples": "5",
        "--ddp-eval-examples": "100", "--ddp-iw-samples": "3", "--table1": "iwae-2l-iwae-k5",
        "--table1-epochs": "1", "--budget-scale": "3", "--total-s": "900",
    }  # fmt: skip
    cmd = [sys.executable, str(SCRIPTS / "gpu_check.py"), "--device", "cpu", "--out", str(out)]
    cmd += [word for pair in toy.items() for word in pair]
    env = {**NO_CUDA_ENV, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((out / report.JSON_NAME).read_text())
    assert {name: s["status"] for name, s in results["stages"].items()} == dict.fromkeys(
        ("prepare", "throughput", "iw_eval", "bf16_eval", "ddp", "table1"), "ok"
    )
    d = results["derived"]
    (row,) = d["throughput"]
    assert all(row[v] > 0 for v in (report.HAND, report.VAE, report.PLAIN))
    assert d["iw_eval"]["examples"] == 100 and d["bf16_vs_fp32"]["examples"] == 100
    assert d["ddp"]["exact"] is True  # one process either way: the same numbers, bit for bit
    (t1,) = d["table1"]
    assert t1["experiment"] == "iwae-2l-iwae-k5" and t1["steady_epoch_s"] > 0
    assert (out / report.MD_NAME).read_text().startswith("# GPU check")


def test_make_bench_keeps_the_gpu_check_section(tmp_path: Path):
    page = tmp_path / "benchmarks.md"
    assert bench.kept_sections(page) == ""  # no page yet
    page.write_text("# Benchmarks\n\n| cpu | table |\n\n## GPU check: H200, 2027-01-01\n\n| gpu | 1 |\n")
    assert bench.kept_sections(page) == "\n## GPU check: H200, 2027-01-01\n\n| gpu | 1 |\n"


@pytest.mark.parametrize("scale", ["-1", "0", "nan", "inf"])
def test_a_budget_scale_that_is_not_above_zero_is_an_argument_error(scale: str, tmp_path: Path):
    """A scale of 0 or less would cut every stage at once: refused before anything runs."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "gpu_check.py"), "--budget-scale", scale, "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "--budget-scale: must be a number above 0" in proc.stderr
    assert "Traceback" not in proc.stderr and not any(tmp_path.iterdir())
