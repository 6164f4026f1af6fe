"""One sweep member: a directory, its state, and the job that brings it to "finished".

A member directory SWEEP/<name>/ holds:
  member.yaml         the member's resolved config and run settings, as config.yaml holds
                      them (written before anything runs)
  version_<n>/        the ordinary run directory (`vae train`'s), with checkpoints/last.ckpt
  train.json          written when training ended: {"run_dir": ..., "wall_s": ...}
  eval.json           `vae eval`'s results for the test split: the member is finished
  error.txt           one line: why the last attempt failed (removed when an attempt starts)
  log.txt             the member's console output (local launcher), appended per attempt
Its state is read from these files alone, so a killed sweep knows where each member stands.

Run as `python -m vae_cli.sweep.member MEMBER_DIR IW_SAMPLES` (one process per member) or
called as `run_member` (submitit pickles it into a SLURM array task).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

from vae_cli import runs
from vae_cli.errors import translate

MEMBER = "member.yaml"
TRAINED = "train.json"
EVAL = "eval.json"
ERROR = "error.txt"
LOG = "log.txt"
FIGURES = "figures"

FINISHED, FAILED, INTERRUPTED, PENDING = "finished", "failed", "interrupted", "pending"


def run_dirs(member_dir: Path) -> list[Path]:
    found = [p for p in member_dir.glob("version_*") if p.name[8:].isdigit() and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name[8:]))


def current_run(member_dir: Path) -> Path | None:
    """The run this member continues: the newest version_<n> with a checkpoint to resume from."""
    with_ckpt = [r for r in run_dirs(member_dir) if (r / runs.CHECKPOINTS / "last.ckpt").is_file()]
    return with_ckpt[-1] if with_ckpt else None


def state(member_dir: Path) -> tuple[str, str]:
    """(finished | failed | interrupted | pending, detail): from the member's files alone."""
    if (member_dir / EVAL).is_file():
        return FINISHED, ""
    if (member_dir / ERROR).is_file():
        return FAILED, (member_dir / ERROR).read_text().strip()
    run = current_run(member_dir)
    if run is not None:
        return INTERRUPTED, f"resumes from {run / runs.CHECKPOINTS / 'last.ckpt'}"
    return PENDING, ""


def write_member_config(member_dir: Path, cfg_dict: dict[str, Any]) -> None:
    """cfg_dict: settings.record(cfg, run)."""
    member_dir.mkdir(parents=True, exist_ok=True)
    runs.write_atomic(member_dir / MEMBER, yaml.safe_dump(cfg_dict, sort_keys=False))


def one_line(exc: BaseException) -> str:
    known = translate(exc)
    text = str(known) if known is not None else f"{type(exc).__name__}: {exc}"
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def run_member(member_dir: Path | str, iw_samples: int) -> str:
    """Train (or resume), evaluate and draw one member; returns its final state.

    A failure is recorded in error.txt (one line) and error.log (the traceback) and returned
    as "failed"; an interrupting signal propagates (RunInterrupted) after the checkpoint is saved.
    """
    from vae_cli.training.checkpointing import RunInterrupted

    member_dir = Path(member_dir)
    if state(member_dir)[0] == FINISHED:
        return FINISHED
    (member_dir / ERROR).unlink(missing_ok=True)
    try:
        _train_and_evaluate(member_dir, iw_samples)
    except RunInterrupted:
        raise
    except (Exception, KeyboardInterrupt) as e:
        runs.write_atomic(member_dir / "error.log", traceback.format_exc())
        runs.write_atomic(member_dir / ERROR, one_line(e) + "\n")
        if isinstance(e, KeyboardInterrupt):
            raise
        return FAILED
    return FINISHED


def _train_and_evaluate(member_dir: Path, iw_samples: int) -> None:
    from vae_cli import settings as settings_mod
    from vae_cli.training.fit import fit

    source = str(member_dir / MEMBER)
    saved = settings_mod.flatten(settings_mod.read_yaml(member_dir / MEMBER))
    cfg, run = settings_mod.split({k: settings_mod.coerce(k, v, source) for k, v in saved.items()})
    # The member lives where its folder is now, whatever the sweep was called when it started.
    run = dataclasses.replace(run, runs_dir=str(member_dir.parent), name=member_dir.name).validate()
    trained = _read_json(member_dir / TRAINED)
    run_dir = Path(trained["run_dir"]) if trained else None
    if run_dir is None or not run_dir.is_dir():
        resume = current_run(member_dir)
        start = time.perf_counter()
        trained_dir = fit(cfg, resume=resume, run=run)
        assert trained_dir is not None  # fit returns None only for smoke runs
        run_dir = trained_dir.resolve()
        wall = time.perf_counter() - start
        runs.write_atomic(member_dir / TRAINED, json.dumps({"run_dir": str(run_dir), "wall_s": wall}) + "\n")
        trained = {"wall_s": wall}
    evaluate_into(member_dir, run_dir, iw_samples, trained.get("wall_s"), run)


def evaluate_into(
    member_dir: Path, run_dir: Path, iw_samples: int, train_wall_s: float | None, run: Any = None
) -> dict:
    """`vae eval`'s numbers for run_dir, stored as member_dir/eval.json, plus the sample figure.
    `run`: the RunSettings (hardware) to evaluate with (default: RunSettings())."""
    from vae_cli.training.evaluate import evaluate_checkpoint
    from vae_cli.training.load import load_module

    ckpt = runs.checkpoint_in(run_dir)
    chunk = min(iw_samples, 100) or 1
    results = evaluate_checkpoint(ckpt, "test", iw_samples, chunk, seed=0, run=run, run_dir=run_dir)
    if results is None:  # a DDP worker: rank 0 writes
        return {}
    results.update(run_dir=str(run_dir), train_wall_s=train_wall_s)
    figure = member_dir.parent / FIGURES / f"samples-{member_dir.name}.png"
    module = load_module(ckpt, run_dir)
    from vae_cli.report import run_caption
    from vae_cli.training.checkpointing import checkpoint_step

    caption = run_caption(run_dir, module.cfg.likelihood, checkpoint_step(ckpt), member_dir.name)
    save_samples_figure(module, figure, caption=caption)
    runs.write_atomic(member_dir / EVAL, json.dumps(results, indent=2) + "\n")
    return results


def save_samples_figure(module: Any, path: Path, n: int = 64, seed: int = 0, caption: str = "") -> Path:
    """Two titled panels decoded from the same n prior draws, E[x|z] beside x ~ p(x|z), under
    the member's caption; written by report.save_panels (the one figure writer)."""
    from vae_cli.report import Panel, save_panels
    from vae_cli.training.sample import SAMPLE_TITLES, sample_images

    panels = [Panel(sample_images(module, n, s, seed=seed), SAMPLE_TITLES[s], 8) for s in (False, True)]
    return save_panels(panels, path, caption)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def set_threads() -> None:
    """Use the cores this process was given (OMP_NUM_THREADS locally, the SLURM allocation)."""
    import torch

    given = os.environ.get("OMP_NUM_THREADS") or os.environ.get("SLURM_CPUS_PER_TASK")
    if given and given.isdigit() and int(given) > 0:
        torch.set_num_threads(int(given))


def main(argv: list[str]) -> int:
    from vae_cli.quiet import quiet_lightning
    from vae_cli.training.checkpointing import RunInterrupted

    if len(argv) != 2:
        print("usage: python -m vae_cli.sweep.member MEMBER_DIR IW_SAMPLES", file=sys.stderr)
        return 2
    quiet_lightning()
    set_threads()
    try:
        status = run_member(Path(argv[0]), int(argv[1]))
    except RunInterrupted as e:
        print(f"interrupted after step {e.step}: saved {e.checkpoint}", file=sys.stderr)
        return 128 + e.signum
    if status == FAILED:
        print(f"error: {(Path(argv[0]) / ERROR).read_text().strip()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
