"""Run directories: where a run's files live, and how to find and load them again."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from vae_cli.errors import VaeError

CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"


def latest_run(runs_dir: Path) -> Path:
    """The most recently created run directory under runs_dir (any experiment)."""
    runs = [p.parent for p in runs_dir.glob(f"*/version_*/{CONFIG}")]
    runs = [r for r in runs if checkpoint_in(r, must_exist=False) is not None]
    if not runs:
        raise VaeError(
            f"no trained run found under {runs_dir}/: train one with `vae train`, "
            f"or pass a run directory or .ckpt file"
        )
    return max(runs, key=lambda r: (r / CONFIG).stat().st_mtime)


def checkpoint_in(run_dir: Path, must_exist: bool = True) -> Path | None:
    """best.ckpt (by validation ELBO) if the run has one, else last.ckpt."""
    for name in ("best.ckpt", "last.ckpt"):
        path = run_dir / CHECKPOINTS / name
        if path.exists():
            return path
    if must_exist:
        raise VaeError(f"{run_dir} holds no checkpoints/best.ckpt or last.ckpt: is it a run directory?")
    return None


def resolve_checkpoint(run_or_ckpt: Path | None, runs_dir: Path) -> tuple[Path, Path]:
    """(checkpoint file, run directory) from a run dir, a .ckpt path, or the latest run."""
    if run_or_ckpt is None:
        run_dir = latest_run(runs_dir)
        return checkpoint_in(run_dir), run_dir  # type: ignore[return-value]
    path = Path(run_or_ckpt)
    if not path.exists():
        raise VaeError(f"{path} does not exist: pass a run directory or a .ckpt file")
    if path.is_dir():
        return checkpoint_in(path), path  # type: ignore[return-value]
    return path, run_dir_of(path)


def run_dir_of(ckpt: Path) -> Path:
    """The run directory a checkpoint file sits in: runs/<exp>/version_n/checkpoints/x.ckpt ->
    runs/<exp>/version_n (a .ckpt elsewhere: its folder)."""
    ckpt = Path(ckpt)
    return ckpt.parent.parent if ckpt.parent.name == CHECKPOINTS else ckpt.parent


def umask_mode(folder: bool = False) -> int:
    """The mode open() (or mkdir(), for a folder) gives under the user's umask: mkstemp's
    0600 and mkdtemp's 0700 would hide results from colleagues on a shared cluster."""
    mask = os.umask(0o022)
    os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w", suffix: str = "") -> Iterator[Any]:
    """Write to a temporary file beside `path`, fsync, then rename it over `path`: a crash,
    a full disk or a signal leaves the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or ".tmp")
    try:
        os.fchmod(fd, umask_mode())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    """Write then rename: a crash leaves the old file or the new one, never half of one."""
    with atomic_file(path) as f:
        f.write(text)


def free_name(path: Path) -> Path:
    """`path` if nothing is there yet, else `stem-1.ext`, `stem-2.ext`, ...: commands that read
    a run add files to it and never replace one (a file of the same name may hold results
    of other weights or settings)."""
    path = Path(path)
    n = 0
    candidate = path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


NAME_PUNCTUATION = "._=,+-"  # sweep members are named like `likelihood=bernoulli,seed=0`


def check_name(what: str, name: str) -> str:
    """An experiment or run name is one folder name under --runs-dir: it can never point
    elsewhere (no separators, no `..`, not absolute, nothing hidden or empty), and it is
    typed in shells and scripts, so it holds no spaces or control characters either."""
    bad = (
        not name
        or name.startswith(".")
        or not all(c.isalnum() or c in NAME_PUNCTUATION for c in name)
        or len(name) > 200
    )
    if bad:
        raise VaeError(
            f"{what} {name[:80]!r} is not a plain folder name: use letters, digits and "
            f"{' '.join(NAME_PUNCTUATION)} only, not starting with '.' (no spaces, '/', '\\' or '..')"
        )
    return name


def save_config(run_dir: Path, config: dict[str, Any]) -> None:
    write_atomic(run_dir / CONFIG, yaml.safe_dump(config, sort_keys=False))


def is_launcher_process() -> bool:
    """Not a worker started by torchrun/SLURM/Lightning for rank > 0 (those reuse rank 0's folder)."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))


def claim_version(experiment_dir: Path) -> int:
    """Create runs/<experiment>/version_<n> with the next free n; mkdir is atomic, so two runs
    started at once get different folders and a new run never writes into an existing one."""
    experiment_dir.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[8:]) for p in experiment_dir.glob("version_*") if p.name[8:].isdigit()]
    version = max(taken, default=-1) + 1
    while True:
        try:
            (experiment_dir / f"version_{version}").mkdir()
            return version
        except FileExistsError:
            version += 1


def release_if_empty(run_dir: Path) -> None:
    with contextlib.suppress(OSError):
        run_dir.rmdir()


def ensure_writable(folder: Path, what: str) -> None:
    """Create `folder` if needed and prove a file can be written there."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".vae-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise VaeError(f"cannot write to {folder} ({reason}): pass {what} a writable folder") from None
