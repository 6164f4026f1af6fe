"""Interrupted runs resume exactly; nothing a run wrote is ever half-written or overwritten.

Pieces, each a Lightning extension point rather than a hand-written loop:

- `RngState`: a callback whose state (saved inside every checkpoint) is the torch, CUDA,
  numpy and Python RNG states at save time; restored at the start of the resumed training,
  after Lightning's sanity check (which runs under `isolate_rng`) and before the first
  batch is transferred (where dynamic binarisation draws random numbers).
- `GracefulStop`: SIGTERM/SIGINT only set a flag; the checkpoint is written at the end of
  the current step, where the loop state is consistent, and then the run stops with
  `RunInterrupted`. Lightning's own SIGTERM handler (which would exit mid-validation with
  status 0 and no checkpoint) is replaced for the duration of training.
- `AtomicCheckpointIO`: write to a temporary file, fsync, rename; refuses to write a
  checkpoint with non-finite weights, so a NaN can never replace a good checkpoint.
- `ResumedCSVLogger`: Lightning's CSVLogger deletes an existing metrics.csv; a resumed run
  must append to it instead (rows after the checkpoint's step are dropped, as they are redone).

The data order is restored by `data.TensorBatches.state_dict` (Lightning's stateful
iterable protocol), optimiser and loop state by Lightning itself.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import CSVLogger

from vae_cli import runs
from vae_cli.errors import VaeError
from vae_cli.train import lightning_private

LAST = "last.ckpt"


class RunInterrupted(Exception):
    """Training stopped on a signal after saving a checkpoint; the CLI exits 128 + signum."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"{signal.Signals(signum).name} at step {step}")


# ---------------------------------------------------------------------------- RNG
def collect_rng() -> dict[str, Any]:
    """Plain Python/tensor values only, so the checkpoint loads with torch.load(weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, tuple | list) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


class RngState(Callback):
    """Saves the RNG states in every checkpoint and restores them when training resumes."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"rng": collect_rng()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict.get("rng")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is not None:
            restore_rng(self._pending)
            self._pending = None


class EpochSums(Callback):
    """Mid-epoch checkpoints also carry the module's running training sums (the per-step
    window and the epoch accumulator live on the module, outside Lightning's state), so the
    interrupted epoch's train/* means cover all its batches, not only those after the resume."""

    KEY = "vae_cli_epoch_sums"

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        done = lightning_private.batches_done_this_epoch(trainer)
        if not 0 < done < trainer.num_training_batches:
            return  # at an epoch boundary there is nothing to carry over
        checkpoint[self.KEY] = {
            "epoch": trainer.current_epoch,
            "window": pl_module.train_window.state_dict(),
            "epoch_sums": pl_module.train_epoch.state_dict(),
        }

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        self._pending = checkpoint.get(self.KEY)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Not on_train_epoch_start: Lightning skips that hook when it restarts mid-epoch.
        pending, self._pending = self._pending, None
        if not pending or pending["epoch"] != trainer.current_epoch:
            return
        device = pl_module.device
        pl_module.train_window.load_state_dict(pending["window"], device)
        pl_module.train_epoch.load_state_dict(pending["epoch_sums"], device)


# ---------------------------------------------------------------------------- signals
class GracefulStop(Callback):
    """On SIGTERM/SIGINT: finish the current step, save last.ckpt, stop with RunInterrupted.

    A signal on the last batch of an epoch waits for that epoch's validation, whose
    ModelCheckpoint save of last.ckpt is then the resume point (resuming from a save on the
    epoch's last batch would skip that validation and so change the metrics).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, checkpoint_dir: Path) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.received = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After Trainer._run registered Lightning's own SIGTERM handler: replace it.
        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        except ValueError:  # not the main thread: leave signals to the default handlers
            self._previous.clear()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore()

    def _stop(self, trainer: pl.Trainer, save: bool) -> None:
        assert self.received is not None
        path = self.checkpoint_dir / LAST
        if save:
            trainer.save_checkpoint(path)
        raise RunInterrupted(self.received, trainer.global_step, path if path.exists() else None)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.received is None:
            return
        if lightning_private.batches_done_this_epoch(trainer) >= trainer.num_training_batches:
            return  # the epoch's last batch: on_train_epoch_end stops, after validation
        self._stop(trainer, save=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.received is not None:
            # ModelCheckpoint saved last.ckpt at the end of this epoch's validation; the RNG
            # state has not moved since, so that file is the exact resume point.
            self._stop(trainer, save=False)


# ---------------------------------------------------------------------------- atomic writes
def nonfinite_weights(checkpoint: dict[str, Any]) -> list[str]:
    return [
        name
        for name, t in checkpoint.get("state_dict", {}).items()
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file in the same folder, fsync, then os.replace."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        bad = nonfinite_weights(checkpoint)
        if bad:
            raise VaeError(
                f"refusing to write {path}: non-finite weights in {', '.join(bad[:3])}; "
                f"the previous checkpoint is kept"
            )
        if "://" in str(path):  # remote filesystems: fsspec's own transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


# ---------------------------------------------------------------------------- logs
class ResumedCSVLogger(CSVLogger):
    """A CSVLogger that appends to the run's metrics.csv instead of deleting it."""

    def __init__(self, *args: Any, resume_step: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume_step = resume_step

    @property
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        path = Path(self.log_dir) / "metrics.csv"
        rows, header = _read_csv(path)
        writer = super().experiment  # this deletes metrics.csv
        # Rows logged after the checkpoint are redone by the resumed run.
        kept = [r for r in rows if not r.get("step") or float(r["step"]) < self._resume_step]
        if header:
            with path.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=header)
                w.writeheader()
                w.writerows(kept)
            writer.metrics_keys = list(header)
        return writer


def _read_csv(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    if not path.is_file():
        return [], []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader), list(reader.fieldnames or [])


# ---------------------------------------------------------------------------- --resume
def resolve_resume(resume: str, runs_dir: Path) -> tuple[Path, Path]:
    """(run directory, its checkpoints/last.ckpt) from `--resume RUN` or `--resume last`."""
    if resume == "last":
        candidates = [p.parent.parent for p in Path(runs_dir).glob(f"*/version_*/{runs.CHECKPOINTS}/{LAST}")]
        if not candidates:
            raise VaeError(
                f"--resume last: no run with checkpoints/{LAST} under {runs_dir}/: train one first"
            )
        run_dir = max(candidates, key=lambda r: (r / runs.CHECKPOINTS / LAST).stat().st_mtime)
    else:
        run_dir = Path(resume)
        if run_dir.is_file() and run_dir.parent.name == runs.CHECKPOINTS:
            run_dir = run_dir.parent.parent
        if not run_dir.is_dir():
            raise VaeError(f"--resume {resume}: no such run directory; pass a run directory or `last`")
    ckpt = run_dir / runs.CHECKPOINTS / LAST
    if not ckpt.is_file():
        raise VaeError(f"--resume: {run_dir} has no {runs.CHECKPOINTS}/{LAST}, so there is nothing to resume")
    if not run_dir.name.startswith("version_") or not run_dir.name[len("version_") :].isdigit():
        raise VaeError(f"--resume: {run_dir} is not a run directory (runs/<experiment>/version_<n>)")
    return run_dir, ckpt


def checkpoint_step(ckpt: Path) -> int:
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:
        raise VaeError(
            f"{ckpt} is not a readable checkpoint ({type(e).__name__}); resume from an earlier run "
            f"or start a new one"
        ) from None
    return int(state.get("global_step", 0))
