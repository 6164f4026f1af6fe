"""Run every named experiment (vae_cli/experiments.yaml, merged with ./experiments.yaml) as a
smoke run (one batch per stage, no files).

Experiments whose data is not on this machine are reported as such, not silently skipped:
the script fails if an experiment fails for any other reason, or if none could run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from vae_cli import settings
from vae_cli.cli import quiet_lightning
from vae_cli.errors import VaeError
from vae_cli.training.fit import fit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=None, help="dataset root (a copy of shared/data)")
    args = parser.parse_args()
    quiet_lightning()
    console = Console(soft_wrap=True)
    exps = settings.Experiments.load()
    ran, missing, failed = [], [], []
    for name in exps.named:
        overrides = {"accelerator": "cpu"}
        if args.data_dir and Path(args.data_dir).exists():
            overrides["data_dir"] = args.data_dir
        try:
            cfg, run = settings.resolve_all(name, overrides=overrides)
            fit(cfg, smoke=True, console=console, run=run)
            ran.append(name)
        except VaeError as e:
            (missing if "not found" in str(e) else failed).append(name)
            console.print(f"[yellow]{name}[/]: {e}")
    console.print(
        f"smoke: {len(ran)} ran, {len(missing)} without data {missing}, {len(failed)} failed {failed}"
    )
    return 1 if failed or not ran else 0


if __name__ == "__main__":
    sys.exit(main())
