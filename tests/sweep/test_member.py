"""sweep/member.py: a member's state is read from its directory alone, so a killed sweep
resumes each member in place from its checkpoint."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import EXPERIMENTS, ROOT, SWEEP_TINY, run_sweep

from vae_cli.sweep.member import FAILED, FINISHED, INTERRUPTED, PENDING, state


def test_member_state_is_read_from_its_directory(tmp_path):
    m = tmp_path / "m"
    assert state(m)[0] == PENDING
    (m / "version_0" / "checkpoints").mkdir(parents=True)
    (m / "version_0" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert state(m)[0] == INTERRUPTED
    (m / "error.txt").write_text("out of device memory: lower --batch-size\n")
    assert state(m) == (FAILED, "out of device memory: lower --batch-size")
    (m / "eval.json").write_text("{}")
    assert state(m)[0] == FINISHED


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_killed_sweep_resumes_members_from_their_checkpoints(tmp_path):
    args = ("--set", "epochs=12", *SWEEP_TINY, "--iw-samples", "0", "--out", "s")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VAE_EXPERIMENTS": str(EXPERIMENTS)}
    proc = subprocess.Popen([sys.executable, "-m", "vae_cli", "sweep", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    member = tmp_path / "s" / "seed=0"
    deadline = time.monotonic() + 600
    while not (member / "version_0" / "checkpoints" / "last.ckpt").exists():  # one epoch done
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "re-run the same command to resume" in err
    assert state(member)[0] == INTERRUPTED
    metrics = (member / "version_0" / "metrics.csv").read_text()
    again = run_sweep(tmp_path, *args)
    assert again.returncode == 0, again.stderr
    assert "0 finished (skipped), 1 to resume, 0 to start" in again.stdout
    assert state(member)[0] == FINISHED
    assert sorted(p.name for p in member.glob("version_*")) == ["version_0"]  # resumed in place
    log = list(csv.DictReader((member / "version_0" / "metrics.csv").open()))
    # every epoch validated exactly once across the two processes: nothing redone twice, nothing lost
    assert [int(r["epoch"]) for r in log if r.get("val/elbo")] == list(range(12))
    assert len(log) >= len(list(csv.DictReader(io.StringIO(metrics))))
