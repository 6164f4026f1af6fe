"""Running members: N local processes at once, or a SLURM job array through submitit.

Local, --jobs 1: the members run one after the other in this process. --jobs N > 1: each
member is `python -m vae_cli.sweep.member DIR K` in its own session, so that the sweep
decides which signal reaches it. Torch threads are divided between the N jobs
(OMP_NUM_THREADS = cores // N) so that N jobs do not oversubscribe the cores. On SIGINT or
SIGTERM the sweep forwards SIGTERM to its running members, which save a checkpoint at the
end of their current step (GracefulStop), and starts no new ones.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import vae_cli
from vae_cli.errors import VaeError
from vae_cli.runs import write_atomic
from vae_cli.sweep.member import ERROR, FAILED, FINISHED, INTERRUPTED, LOG, run_member, state

Report = Callable[[str, str, float], None]  # (member name, state, seconds)


class SweepInterrupted(Exception):
    """The sweep was stopped by a signal; running members saved their checkpoints."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    return max(1, (cores or os.cpu_count() or 1) // jobs)


def member_env(jobs: int) -> dict[str, str]:
    threads = str(threads_per_job(jobs))
    root = str(Path(vae_cli.__file__).resolve().parent.parent)  # this vae_cli, not another install
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONPATH": path}


class LocalLauncher:
    """A pool of N worker threads, each waiting on one member process at a time."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.running: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stopped: int | None = None

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopped = signum
        with self.lock:
            for proc in self.running:
                proc.send_signal(signal.SIGTERM)

    def _run_one(self, member_dir: Path, iw_samples: int, env: dict[str, str], report: Report) -> str:
        if self.stopped is not None:
            return state(member_dir)[0]
        start = time.perf_counter()
        with (member_dir / LOG).open("a") as log:
            cmd = [sys.executable, "-m", "vae_cli.sweep.member", str(member_dir), str(iw_samples)]
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
            with self.lock:
                self.running.add(proc)
            proc.wait()
            with self.lock:
                self.running.discard(proc)
        status = state(member_dir)[0]
        if proc.returncode != 0 and self.stopped is None and status != FAILED:
            # died without recording why (killed, out of memory, a crash in native code)
            write_atomic(member_dir / ERROR, f"the member process exited with code {proc.returncode}; "
                         f"see {member_dir / LOG}\n")  # fmt: skip
            status = FAILED
        report(member_dir.name, status, time.perf_counter() - start)
        return status

    def run(self, member_dirs: list[Path], iw_samples: int, report: Report) -> dict[str, str]:
        if self.jobs == 1:
            return run_in_process(member_dirs, iw_samples, report)
        env = member_env(self.jobs)
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._stop)
        try:
            with ThreadPoolExecutor(max_workers=self.jobs) as pool:
                futures = {
                    d.name: pool.submit(self._run_one, d, iw_samples, env, report) for d in member_dirs
                }
                results = {name: f.result() for name, f in futures.items()}
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self.stopped is not None:
            raise SweepInterrupted(self.stopped)
        return results


def run_in_process(member_dirs: list[Path], iw_samples: int, report: Report) -> dict[str, str]:
    """--jobs 1: one member after the other in this process (no interpreter start per member);
    SIGINT/SIGTERM reach the running member's GracefulStop, which saves and stops it."""
    from vae_cli.training.checkpointing import RunInterrupted

    results = {}
    for member_dir in member_dirs:
        start = time.perf_counter()
        try:
            results[member_dir.name] = run_member(member_dir, iw_samples)
        except RunInterrupted as e:
            report(member_dir.name, INTERRUPTED, time.perf_counter() - start)
            raise SweepInterrupted(e.signum) from None
        report(member_dir.name, results[member_dir.name], time.perf_counter() - start)
    return results


# ---------------------------------------------------------------------------- SLURM
# submitit checks the names and types of its parameters, not their ranges: these counts must be
# positive (a negative time limit made every member fail with an empty error).
POSITIVE = ("timeout_min", "mem_gb", "nodes", "cpus_per_task", "tasks_per_node", "array_parallelism")
NOT_NEGATIVE = ("gpus_per_node", "gpus_per_task", "num_gpus")


def _import_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise VaeError(
            "--launcher slurm needs submitit, which is not installed: pip install 'vae-cli[slurm]'"
        ) from None
    return submitit


def check_submitit(cluster: str | None, jobs: int, params: dict[str, Any]) -> None:
    """Everything submitit would object to, before the sweep writes anything: SLURM present
    (cluster None), parameter names and types (submitit's own check, on a throw-away local
    executor: the SLURM one cannot be built without srun) and ranges."""
    import tempfile

    submitit = _import_submitit()
    if cluster is None and submitit.AutoExecutor.which() != "slurm":
        raise VaeError(
            "--launcher slurm: no SLURM on this machine (sbatch not found); run on a cluster's login "
            "node, or use --launcher local"
        )
    for key, value in params.items():
        base = key.removeprefix("slurm_")
        low = 1 if base in POSITIVE else 0 if base in NOT_NEGATIVE else None
        if low is not None and isinstance(value, int | float) and not isinstance(value, bool) and value < low:
            raise VaeError(f"SLURM parameter {key} must be >= {low}, got {value}")
    with tempfile.TemporaryDirectory() as tmp:
        executor = submitit.AutoExecutor(folder=tmp, cluster="local")
        try:
            executor.update_parameters(slurm_array_parallelism=jobs, **params)
        except (NameError, ValueError, TypeError, AssertionError) as e:
            raise VaeError(
                f"submitit rejected the SLURM parameters {sorted(params)}: {e}".splitlines()[0]
            ) from None


def submitit_executor(folder: Path, cluster: str | None, jobs: int, params: dict[str, Any]) -> Any:
    """submitit's AutoExecutor (parameters checked by check_submitit); cluster None: SLURM,
    "local": this machine."""
    submitit = _import_submitit()
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(slurm_array_parallelism=jobs, **params)
    return executor


def run_submitit(
    member_dirs: list[Path], iw_samples: int, folder: Path, cluster: str | None, jobs: int,
    params: dict[str, Any], report: Report, announce: Callable[[str], None],
) -> dict[str, str]:  # fmt: skip
    """Submit the members as one job array and wait for them; their states come from their files."""
    executor = submitit_executor(folder, cluster, jobs, params)
    start = time.perf_counter()
    array = executor.map_array(run_member, [str(d) for d in member_dirs], [iw_samples] * len(member_dirs))
    job = array[0].job_id.split("_")[0] if array else "-"
    announce(f"submitted {len(array)} member(s) as job array {job} (logs under {folder})")
    results = {}
    for member_dir, job in zip(member_dirs, array, strict=True):
        try:
            job.result()
        except Exception as e:  # the task died before run_member could record it (timeout, OOM kill)
            if state(member_dir)[0] not in (FINISHED, FAILED, INTERRUPTED):
                write_atomic(member_dir / ERROR, f"the job failed: {str(e).strip().splitlines()[-1]}\n")
        status = state(member_dir)[0]
        results[member_dir.name] = status
        report(member_dir.name, status, time.perf_counter() - start)
    return results
