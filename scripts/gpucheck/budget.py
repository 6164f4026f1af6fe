"""Time-stamped progress, measurement records, and stages cut at their time budget.

Each stage runs in a subprocess of its own (a new process session, so compile workers and
the like go with it). The stage appends every measurement to a JSON-lines file the moment it
has it; when the budget runs out the whole process group is killed and the stage is recorded
as "timed out" with the measurements it had finished. A hung or slow stage therefore costs
its own budget and never the next stage's.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

OK, TIMED_OUT = "ok", "timed out"
TAIL_CHARS = 3000  # of a stage's stderr, kept in the JSON when it fails or times out


def log(message: str) -> None:
    """One progress line with the UTC time: the device tool returns the output's tail."""
    print(f"[{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S}] {message}", flush=True)


class Emitter:
    """A stage's measurements, one JSON object per line, flushed as each one is taken."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, **record: Any) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        log("  " + ", ".join(f"{k}={_short(v)}" for k, v in record.items()))


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records a stage finished; a line cut off by a kill mid-write is dropped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def run_stage(name: str, cmd: list[str], budget_s: float, records: Path, stderr: Path) -> dict[str, Any]:
    """Run `cmd` (which appends its measurements to `records`) for at most `budget_s`."""
    log(f"stage {name}: start (budget {budget_s:.0f} s)")
    start = time.perf_counter()
    with stderr.open("w") as err:
        proc = subprocess.Popen(cmd, stderr=err, start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = None
    seconds = time.perf_counter() - start
    status = TIMED_OUT if rc is None else OK if rc == 0 else f"failed (exit {rc})"
    result: dict[str, Any] = {
        "status": status,
        "seconds": round(seconds, 2),
        "budget_s": budget_s,
        "measurements": read_records(records),
    }
    if status != OK:
        result["stderr_tail"] = stderr.read_text(errors="replace")[-TAIL_CHARS:]
    log(f"stage {name}: {status} after {seconds:.1f} s, {len(result['measurements'])} measurement(s)")
    return result


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the stage's whole process group (its own session), then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
