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
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, Timer
from pytorch_lightning.loggers import CSVLogger

from vae_cli import runs
from vae_cli.errors import Interrupted, VaeError
from vae_cli.training import lightning_private

LAST = "last.ckpt"


class RunInterrupted(Exception):
    """Training stopped on a signal after saving a checkpoint; the CLI exits 128 + signum.

    complete: the signal came during the run's last step or validation, so the run finished
    (checkpoints, figures and summary written) before stopping."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None, complete: bool = False) -> None:
        self.signum, self.step, self.checkpoint, self.complete = signum, step, checkpoint, complete
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

    A signal on the last batch of an epoch (or on the --max-steps step) waits for the
    validation and the epoch's end, whose ModelCheckpoint save of last.ckpt is then the
    resume point (resuming from a save on that batch would skip the validation and the
    epoch's logged means, and so change the metrics). The caller (fit) checks `received`
    after trainer.fit returns: it raises RunInterrupted, or, if the run reached its end
    anyway, writes the end-of-run files first and then reports the signal (`complete=True`).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, checkpoint_dir: Path) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise Interrupted(signum)  # a second Ctrl-C: stop now (exit 130)
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
        if 0 < trainer.max_steps <= trainer.global_step:
            return  # the run's last step: it validates, saves and ends by itself
        self._stop(trainer, save=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.received is not None:
            # Stop as early stopping does: after this epoch's hooks have logged its means and
            # ModelCheckpoint (which Lightning calls after every other callback) has saved its
            # last.ckpt, the exact resume point. The caller then raises RunInterrupted, or,
            # if this was the run's last epoch, finishes the run first.
            trainer.should_stop = True


def run_ended(trainer: pl.Trainer) -> bool:
    """After trainer.fit: did the run reach --epochs or --max-steps (not a signal's stop)?"""
    all_epochs = trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs
    return all_epochs or 0 < trainer.max_steps <= trainer.global_step


class ProcessTimer(Timer):
    """Lightning's Timer for --time-limit (its stop decision is broadcast to every DDP rank),
    counted per process: a resumed run gets the whole limit again (Timer would restore the
    time already spent from the checkpoint and stop at once), so a cluster job can pass its
    wall time on every resubmission. It must come before Progress in the callbacks, which
    then ends the run as at --max-steps: a validation, best.ckpt, an exact last.ckpt."""

    def __init__(self, minutes: float) -> None:
        super().__init__(duration=timedelta(minutes=minutes), interval="step", verbose=False)
        self.fired = False

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass  # per process: the time spent before the resume does not count

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        stopping = trainer.should_stop
        super().on_train_batch_end(trainer, *args, **kwargs)
        self.fired = self.fired or (trainer.should_stop and not stopping)


# ---------------------------------------------------------------------------- atomic writes
def nonfinite_weights(checkpoint: dict[str, Any]) -> list[str]:
    return [
        name
        for name, t in checkpoint.get("state_dict", {}).items()
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file in the same folder, fsync, then os.replace; loads
    with weights_only=True whatever Lightning or the environment asks for."""

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
        try:
            with runs.atomic_file(path, "wb") as f:
                torch.save(checkpoint, f)
        except OSError as e:
            # The rename never happened: the previous file of this name is intact.
            run = path.parent.parent if path.parent.name == runs.CHECKPOINTS else path.parent
            kept = [p.name for p in sorted(path.parent.glob("*.ckpt"))]
            raise VaeError(
                f"cannot write checkpoint {path} ({e.strerror or type(e).__name__}): "
                f"{'kept ' + ', '.join(kept) if kept else 'no earlier checkpoint exists'}; "
                f"free space or fix permissions, then continue with `vae train --resume {run}`"
            ) from None

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return read_checkpoint(Path(path))


FORCE_ENV = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint as plain tensors and containers: torch.load(weights_only=True), which an
    explicit argument keeps safe also under TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (torch >= 2.6
    lets that variable change only the default); a pickle that would run code is refused."""
    path = Path(path)
    if not path.is_file():
        raise VaeError(f"checkpoint {path} does not exist: pass a run directory or a .ckpt file")
    if all(os.environ.get(v, "0").lower() in ("1", "y", "yes", "true") for v in FORCE_ENV):
        raise VaeError(f"both {' and '.join(FORCE_ENV)} are set, and torch refuses to load: unset one")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise VaeError(
            f"{path} is not a readable vae-cli checkpoint ({type(e).__name__}): "
            f"pass a checkpoint written by `vae train`"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("hyper_parameters"), dict):
        raise VaeError(
            f"{path} is not a readable vae-cli checkpoint (no hyper_parameters): "
            f"pass a checkpoint written by `vae train`"
        )
    return state


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
    """(run directory, the checkpoint to continue from) from `--resume RUN` or `--resume last`.

    A run is its directory: RUN may have been moved or renamed; nothing outside it is used.
    """
    if resume == "last":
        candidates = [p.parent.parent for p in Path(runs_dir).glob(f"*/*/{runs.CHECKPOINTS}/*.ckpt")]
        candidates = [r for r in candidates if (r / runs.CONFIG).is_file()]
        if not candidates:
            raise VaeError(
                f"--resume last: no run with checkpoints/{LAST} under {runs_dir}/: train one first"
            )
        run_dir = max(candidates, key=lambda r: resume_checkpoint(r).stat().st_mtime)
    else:
        run_dir = Path(resume)
        if run_dir.is_file() and run_dir.parent.name == runs.CHECKPOINTS:
            run_dir = run_dir.parent.parent
        if not run_dir.is_dir():
            raise VaeError(f"--resume {resume}: no such run directory; pass a run directory or `last`")
    if not (run_dir / runs.CONFIG).is_file():
        raise VaeError(f"--resume: {run_dir} has no {runs.CONFIG}, so it is not a run directory")
    return run_dir, resume_checkpoint(run_dir)


def resume_checkpoint(run_dir: Path) -> Path:
    """last.ckpt; best.ckpt when last.ckpt was never written (e.g. the disk filled up while
    writing the first one: best.ckpt is a full training checkpoint too)."""
    for name in (LAST, "best.ckpt"):
        if (run_dir / runs.CHECKPOINTS / name).is_file():
            return run_dir / runs.CHECKPOINTS / name
    raise VaeError(f"--resume: {run_dir} has no {runs.CHECKPOINTS}/{LAST}, so there is nothing to resume")


def checkpoint_step(ckpt: Path) -> int:
    return int(read_checkpoint(ckpt).get("global_step", 0))


# ---------------------------------------------------------------------------- the end of a run
class Progress(Callback):
    """Stores in every checkpoint how far the run got (optimiser steps, completed epochs), so
    that `--resume` of a finished run can say so and change nothing; and ends a run that stops
    mid-epoch (--max-steps, --time-limit) with a validation and an exact resume point.

    Such a stop goes through `trainer.should_stop`, so that Lightning runs the validation whose
    ModelCheckpoint saves best.ckpt at the final step (else a run shorter than an epoch would
    have none). But Lightning then counts the stopped epoch as done, so its last.ckpt would
    resume at the *next* epoch, skipping the rest of this one. The resume point is therefore
    saved first, at the end of the step (as GracefulStop saves it), and put in place as
    last.ckpt when training ends: a later `--resume` with a larger budget continues exactly.
    """

    KEY = "vae_cli_progress"
    EXACT = LAST + ".exact"

    def __init__(self, checkpoint_dir: Path) -> None:
        self.trainer: pl.Trainer | None = None
        self.exact = Path(checkpoint_dir) / self.EXACT

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        trainer = self.trainer
        if trainer is None:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        epoch_complete = done >= trainer.num_training_batches
        return {"step": trainer.global_step, "epochs": trainer.current_epoch + int(epoch_complete)}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True  # validate and checkpoint now, also mid-epoch
        mid_epoch = lightning_private.batches_done_this_epoch(trainer) < trainer.num_training_batches
        if trainer.should_stop and mid_epoch:
            trainer.save_checkpoint(self.exact)

    def _put_in_place(self, trainer: pl.Trainer) -> None:
        if trainer.is_global_zero and self.exact.is_file():
            os.replace(self.exact, self.exact.with_name(LAST))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._put_in_place(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exc: BaseException) -> None:
        self._put_in_place(trainer)  # a validation that failed: the step's own save is the resume point


def progress_of(checkpoint: dict[str, Any]) -> tuple[int, int]:
    """(optimiser steps, completed epochs) of a checkpoint (older ones: its epoch counter)."""
    for key, state in checkpoint.get("callbacks", {}).items():
        if str(key).startswith("Progress") and state:
            return int(state["step"]), int(state["epochs"])
    return int(checkpoint.get("global_step", 0)), int(checkpoint.get("epoch", 0))


def finished(checkpoint: dict[str, Any], epochs: int, max_steps: int) -> str | None:
    """Why a run whose last checkpoint is `checkpoint` has nothing left to do, or None."""
    step, done = progress_of(checkpoint)
    if 0 < max_steps <= step:
        return f"it reached --max-steps {max_steps} (step {step})"
    if done >= epochs:
        return f"it completed {done} epoch(s), at least --epochs {epochs} (step {step})"
    return None


# Settings that may differ between a run's config.yaml and its checkpoints: where files are,
# how long to train, on what hardware. Everything else defines the model and its training.
# Model settings that may differ between a run's config.yaml and its checkpoints: what it is
# called, where its data lives, and how long it trains (--resume may extend that).
NOT_COMPARED = frozenset({"description", "data_dir", "epochs", "max_steps"})


def check_same_model(checkpoint: dict[str, Any], run_dir: Path, ckpt: Path) -> None:
    """A checkpoint inside a run must come from that run: refuse one whose model settings
    differ from the run's config.yaml (e.g. a gaussian run's last.ckpt copied into a
    bernoulli run would otherwise train gaussian weights under the bernoulli loss)."""
    from vae_cli.config import read_yaml

    if not (run_dir / runs.CONFIG).is_file():
        return  # a bare .ckpt outside a run: its own config is all there is
    run_cfg = read_yaml(run_dir / runs.CONFIG)
    ckpt_cfg = checkpoint.get("hyper_parameters", {}).get("config", {})
    if not isinstance(ckpt_cfg, dict):
        ckpt_cfg = {}
    from vae_cli.settings import MODEL_SETTINGS

    # Model settings only (config.yaml also holds the run's hardware under `run:`), and only
    # those both files know (a setting added since the checkpoint was written is not a clash).
    keys = (set(MODEL_SETTINGS) - NOT_COMPARED) & set(run_cfg) & set(ckpt_cfg)
    diff = sorted(k for k in keys if run_cfg.get(k) != ckpt_cfg.get(k))
    if diff:
        k = diff[0]
        more = f" (and {len(diff) - 1} more: {', '.join(diff[1:4])})" if len(diff) > 1 else ""
        raise VaeError(
            f"{ckpt} does not belong to {run_dir}: its {k} is {ckpt_cfg.get(k)!r} but the run's "
            f"{runs.CONFIG} says {run_cfg.get(k)!r}{more}; use the run's own checkpoints"
        )
