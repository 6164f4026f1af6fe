"""A sweep's grid: settings x seeds, validated and expanded into members before anything runs.

Every member is an ordinary (Config, RunSettings), built through the same coercion and
validation path as `vae train` (settings.coerce for the types, validate for ranges and
combinations), so a bad key or value is a one-line error before the first member starts.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass
from typing import Any

import yaml

from vae_cli import settings as settings_mod
from vae_cli.errors import VaeError, did_you_mean
from vae_cli.settings import Config, RunSettings

# Settings a grid may not vary, and why: they say where and how a member runs, not what it is.
NOT_SWEPT = {
    "experiment": "every member of a sweep is in the sweep's folder, named after its settings",
    "name": "every member of a sweep is in the sweep's folder, named after its settings",
    "runs_dir": "members are written inside the sweep directory (pick it with --out or --runs-dir)",
    "description": "it is free text, not a setting of the run (set it once with --set)",
    "logger": "one logger setting applies to the whole sweep (set it once with --set logger=...)",
    "seed": "use --seeds for seeds",
}
SEEDS = "seeds"


@dataclass(frozen=True)
class Member:
    """One run of the sweep: its settings (grid values, seed last), its validated config and
    how it runs (hardware settings may be swept too; output ones not)."""

    name: str
    settings: dict[str, Any]
    config: Config
    run: RunSettings

    @property
    def setting(self) -> str:
        """The member's settings without the seed: the row of the aggregated table."""
        return member_name({k: v for k, v in self.settings.items() if k != "seed"}) or "(base)"


def parse_value(text: str) -> Any:
    """A command-line grid value as YAML reads it (0.5 -> float, 1 -> int, bernoulli -> str)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """['likelihood=bernoulli,gaussian', 'beta=0.5,1'] -> {'likelihood': [...], 'beta': [0.5, 1]}."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not values.strip():
            raise VaeError(f'--grid "{item}": write KEY=V1,V2,... (e.g. --grid beta=0.5,1)')
        if key in grid:
            raise VaeError(f"--grid {key} is given twice: list all its values in one --grid")
        parts = [v.strip() for v in values.split(",")]
        if "" in parts:
            raise VaeError(f'--grid "{item}" has an empty value: write KEY=V1,V2,... without empty items')
        grid[key] = [parse_value(v) for v in parts]
    return grid


def parse_seeds(text: str | list[Any] | None) -> list[int] | None:
    if text is None:
        return None
    if not isinstance(text, str | list):
        raise VaeError(f"seeds must be a list of integers (e.g. seeds: [0, 1, 2]), got {text!r}")
    parts = text.split(",") if isinstance(text, str) else list(text)
    if any(not str(p).strip() or isinstance(p, bool) for p in parts):
        raise VaeError(
            f"seeds must be integers separated by commas, no empty items (e.g. --seeds 0,1,2), got {text!r}"
        )
    try:
        seeds = [int(str(p).strip()) for p in parts]
    except ValueError:
        raise VaeError(
            f"seeds must be integers separated by commas (e.g. --seeds 0,1,2), got {text!r}"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise VaeError(f"seeds must be distinct integers (e.g. --seeds 0,1,2), got {text!r}")
    return seeds


def from_block(block: dict[str, Any], source: str) -> tuple[dict[str, list[Any]], list[int] | None]:
    """An experiment's `sweep:` block -> (grid, seeds)."""
    if not isinstance(block, dict):
        raise VaeError(f"{source}: `sweep:` must map settings to lists of values")
    grid = {}
    for key, values in block.items():
        if key == SEEDS:
            continue
        if isinstance(values, dict):
            raise VaeError(f"{source}: {key} must be a value or a list of values, got a mapping")
        grid[key] = values if isinstance(values, list) else [values]
    seeds = block.get(SEEDS)
    if SEEDS in block and not isinstance(seeds, list):
        raise VaeError(f"{source}: seeds must be a list of integers (e.g. seeds: [0, 1, 2]), got {seeds!r}")
    try:
        return grid, parse_seeds(seeds)
    except VaeError as e:
        raise VaeError(f"{source}: {e}") from None


def check_grid(grid: dict[str, list[Any]], source: str) -> None:
    """Sweepable keys, each with distinct values after conversion to the setting's type
    (beta=1,1.0 is one value twice, not two settings)."""
    for key, values in grid.items():
        if key in NOT_SWEPT:
            raise VaeError(f'{source}: cannot sweep "{key}": {NOT_SWEPT[key]}')
        if key not in settings_mod.SETTINGS:
            hint = did_you_mean(key, settings_mod.SETTINGS)
            raise VaeError(f'{source}: cannot sweep "{key}"{hint}; sweep a setting of `vae train`')
        typed = [settings_mod.coerce(key, v, f"{source} ({key}={v})") for v in values]
        if not values or len({repr(v) for v in typed}) != len(values):
            raise VaeError(f"{source}: {key} needs distinct values, got {values}")


def safe(value: Any) -> str:
    """A value as it appears in a folder name: letters, digits and . _ + - only."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", str(value))


def member_name(settings: dict[str, Any]) -> str:
    """{'likelihood': 'bernoulli', 'beta': 0.5, 'seed': 1} -> 'likelihood=bernoulli,beta=0.5,seed=1'."""
    return ",".join(f"{k}={safe(v)}" for k, v in settings.items())


def expand(
    base: Config, base_run: RunSettings, grid: dict[str, list[Any]], seeds: list[int] | None, source: str
) -> list[Member]:
    """Every combination of the grid's values and the seeds, each a validated (Config, RunSettings)."""
    check_grid(grid, source)
    seeds = seeds or [base.seed]
    keys = list(grid)
    members = []
    for combo in itertools.product(*(grid[k] for k in keys), seeds):
        settings = dict(zip([*keys, "seed"], combo, strict=True))
        values = {k: settings_mod.coerce(k, v, f"{source} ({k}={v})") for k, v in settings.items()}
        model = {k: v for k, v in values.items() if k in settings_mod.MODEL_SETTINGS}
        hardware = {k: v for k, v in values.items() if k in settings_mod.RUN_SETTINGS}
        try:
            cfg = dataclasses.replace(base, **model).validate()
            run = dataclasses.replace(base_run, **hardware).validate()
        except VaeError as e:
            raise VaeError(f"{source}: member {member_name(settings)} is not a valid run: {e}") from None
        members.append(Member(member_name(settings), settings, cfg, run))
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise VaeError(f"{source}: two members get the same folder name; use values that differ in letters")
    return members
