"""`vae sweep`, `vae results` and `vae compare`: plan a sweep directory, run what is left, report.

A sweep directory holds sweep.yaml (the grid, the seeds, the base config and the member
list), one folder per member (see member.py), the report (results.{md,csv,json},
members.csv) and figures/. Re-running the same sweep skips finished members, resumes
interrupted ones and starts the rest; a different grid or config in the same directory is an
error, never a silent mix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from vae_cli import runs
from vae_cli import settings as settings_mod
from vae_cli.errors import VaeError
from vae_cli.settings import Config, RunSettings, record
from vae_cli.sweep import LAUNCHERS, aggregate, launch
from vae_cli.sweep.grid import Member, expand
from vae_cli.sweep.member import FINISHED, INTERRUPTED, PENDING, evaluate_into, state, write_member_config
from vae_cli.training.loggers import mlflow_experiment, parse_loggers, prepare_mlflow, require_packages

SWEEP = "sweep.yaml"
# Where and how members run, not what they compute: these may differ when a sweep is re-run
# (every RunSettings field, and the model settings that do not change the numbers).
NOT_COMPARED = (*settings_mod.RUN_SETTINGS, "data_dir", "log_every_n_steps", "compile", "steps_per_call",
                "description")  # fmt: skip


@dataclass(frozen=True)
class Launch:
    """How to run the members: `local` processes, or a submitit job array."""

    launcher: str = "local"
    jobs: int = 1
    slurm: dict[str, Any] | None = None  # submitit's update_parameters

    def check(self) -> Launch:
        if self.launcher not in LAUNCHERS:
            from vae_cli.errors import unknown

            raise unknown("launcher", self.launcher, LAUNCHERS)
        if self.jobs < 1:
            raise VaeError(f"--jobs must be >= 1, got {self.jobs}")
        if self.slurm and self.launcher == "local":
            raise VaeError("--slurm-* options apply to --launcher slurm only")
        if self.launcher != "local":
            cluster = "local" if self.launcher == "submitit-local" else None
            launch.check_submitit(cluster, self.jobs, self.slurm or {})
        return self

    def check_hardware(self, run: RunSettings) -> None:
        """What `vae train` refuses up front (trainer.check_hardware); several nodes only need a
        launcher here when the sweep starts the members itself (SLURM starts the nodes)."""
        from vae_cli.training.trainer import check_hardware

        check_hardware(dataclasses.replace(run, num_nodes=1) if self.launcher == "slurm" else run)


def what(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings_mod.flatten(cfg_dict).items() if k not in NOT_COMPARED}


def plan(
    sweep_dir: Path, base: Config, base_run: RunSettings, grid: dict[str, list[Any]], seeds: list[int] | None,
    iw_samples: int, source: str, how: Launch | None = None,
) -> list[Member]:  # fmt: skip
    """Validate every member, then create (or check) the sweep directory; nothing runs yet."""
    members = expand(base, base_run, grid, seeds, source)
    how = how or Launch()
    for m in members:
        try:
            how.check_hardware(m.run)
        except VaeError as e:
            raise VaeError(f"{source}: member {m.name} is not a valid run: {e}") from None
    for logger in {m.run.logger for m in members}:
        require_packages(logger)
    mlflow = [m for m in members if "mlflow" in parse_loggers(m.run.logger)]
    if mlflow:  # the experiment names fit.make_loggers gives them
        prepare_mlflow({mlflow_experiment(record(m.config, m.run), m.name) for m in mlflow})
    planned = {
        "grid": grid,
        "seeds": seeds or [base.seed],
        "iw_samples": iw_samples,
        "config": record(base, base_run),
        "members": [{"name": m.name, "settings": m.settings} for m in members],
    }
    check_same(sweep_dir, planned)
    runs.ensure_writable(sweep_dir, "--out (the sweep directory)")
    runs.write_atomic(sweep_dir / SWEEP, yaml.safe_dump(planned, sort_keys=False))
    for m in members:
        member_dir = sweep_dir / m.name
        if state(member_dir)[0] == PENDING:  # not started: today's hardware settings apply
            write_member_config(member_dir, record(m.config, m.run))
    return members


def check_same(sweep_dir: Path, record: dict[str, Any]) -> None:
    path = sweep_dir / SWEEP
    if not path.is_file():
        if sweep_dir.is_dir() and any(sweep_dir.iterdir()):
            raise VaeError(
                f"{sweep_dir} exists and is not a sweep directory: pass --out a new or sweep folder"
            )
        return
    old = settings_mod.read_yaml(path)
    diff = [k for k in ("grid", "seeds", "iw_samples") if old.get(k) != record[k]]
    a, b = what(old.get("config") or {}), what(record["config"])
    diff += sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if diff:
        raise VaeError(
            f"{sweep_dir} holds another sweep ({', '.join(diff)} differ): re-run it with the settings in "
            f"{path}, or pass --out (or --name) for a new sweep"
        )


def run(
    sweep_dir: Path, members: list[Member], iw_samples: int, how: Launch, console: Console
) -> list[aggregate.MemberResult]:
    """Bring every member to finished (or failed), then write and print the report."""
    dirs = [sweep_dir / m.name for m in members]
    states = [state(d)[0] for d in dirs]
    todo = [d for d, s in zip(dirs, states, strict=True) if s != FINISHED]
    resumed = sum(s == INTERRUPTED for s in states)
    console.print(
        f"sweep {sweep_dir}: {len(dirs)} member(s); {len(dirs) - len(todo)} finished (skipped), "
        f"{resumed} to resume, {len(todo) - resumed} to start; launcher {how.launcher}, jobs {how.jobs}",
        markup=False,
    )
    done = [0]

    def report(name: str, status: str, seconds: float) -> None:
        done[0] += 1
        console.print(f"[{done[0]}/{len(todo)}] {name}: {status} ({seconds:.1f} s)", markup=False)

    if todo and how.launcher == "local":
        launch.LocalLauncher(how.jobs).run(todo, iw_samples, report)
    elif todo:
        cluster = "local" if how.launcher == "submitit-local" else None
        launch.run_submitit(todo, iw_samples, sweep_dir / "submitit", cluster, how.jobs, how.slurm or {},
                            report, lambda line: console.print(line, markup=False))  # fmt: skip
    return show(sweep_dir, console)


def failure_summary(results: list[aggregate.MemberResult]) -> str | None:
    """'N of M members failed: a, b' when any member did not finish, else None."""
    bad = aggregate.unfinished(results)
    if not bad:
        return None
    return f"{len(bad)} of {len(results)} members failed: {', '.join(r.name for r in bad)}"


def evaluate_existing(
    out_dir: Path,
    run_dirs: list[Path],
    iw_samples: int,
    console: Console,
    hardware: RunSettings | None = None,
) -> list[aggregate.MemberResult]:
    """`vae compare --run A --run B`: existing runs as members; evaluated into OUT, not into the runs."""
    from vae_cli.training.load import load_module

    resolved = [Path(r).resolve() for r in run_dirs]
    for i, r in enumerate(resolved):
        if r in resolved[:i]:
            raise VaeError(f"--run {run_dirs[i]} is given twice: pass each run once")
    members, datasets = [], set()
    for i, run_dir in enumerate(run_dirs):
        cfg = load_module(runs.checkpoint_in(Path(run_dir)), Path(run_dir)).cfg
        datasets.add(cfg.dataset)
        # each run is its own row: two runs are two settings, not two seeds of one
        settings = {"run": str(run_dir), "likelihood": cfg.likelihood, "seed": cfg.seed}
        members.append({"name": f"run{i}-{cfg.likelihood}-seed{cfg.seed}", "settings": settings,
                        "run_dir": str(Path(run_dir).resolve())})  # fmt: skip
    if len(datasets) > 1:
        raise VaeError(
            f"the runs were trained on different datasets {sorted(datasets)}: compare like with like"
        )
    record = {"runs": [m["run_dir"] for m in members], "iw_samples": iw_samples, "members": members}
    path = out_dir / SWEEP
    if (path.is_file() and settings_mod.read_yaml(path) != record) or (
        not path.is_file() and out_dir.is_dir() and any(out_dir.iterdir())
    ):
        raise VaeError(f"{out_dir} holds something else: pass --out a new folder for this comparison")
    runs.ensure_writable(out_dir, "--out")
    runs.write_atomic(path, yaml.safe_dump(record, sort_keys=False))
    for m in members:
        member_dir = out_dir / m["name"]
        if state(member_dir)[0] != FINISHED:
            console.print(f"evaluating {m['run_dir']}", markup=False)
            evaluate_into(member_dir, Path(m["run_dir"]), iw_samples, None, hardware)
    return show(out_dir, console)


def show(sweep_dir: Path, console: Console) -> list[aggregate.MemberResult]:
    """Aggregate what the members' folders hold; write and print the report (`vae results`)."""
    path = Path(sweep_dir) / SWEEP
    if not path.is_file():
        raise VaeError(f"{sweep_dir} has no {SWEEP}: pass a folder written by `vae sweep` or `vae compare`")
    record = settings_mod.read_yaml(path)
    results = aggregate.collect(Path(sweep_dir), record.get("members") or [])
    grid_keys = set(record.get("grid") or {}) | {"seed"}
    shared = {k: v for k, v in what(record.get("config") or {}).items() if k not in grid_keys}
    info = {"iw_samples": record.get("iw_samples"), "shared": shared}
    written = aggregate.write_report(Path(sweep_dir), results, info)
    rows = aggregate.aggregate(results)
    console.print(
        aggregate.rich_table(
            rows, f"{sweep_dir} (mean ± std over seeds; IW K={info['iw_samples']})", console.width
        )
    )
    for r in aggregate.unfinished(results):
        console.print(f"{r.state}: {r.name}{': ' + r.error if r.error else ''}", markup=False)
    for p in written:
        console.print(f"wrote {p}", markup=False)
    figures = sorted((Path(sweep_dir) / "figures").glob("samples-*.png"))
    if figures:
        console.print(f"{len(figures)} sample figure(s) under {Path(sweep_dir) / 'figures'}", markup=False)
    return results


def grid_from(
    experiment: str | None, grid_items: list[str], seeds_text: str | None, experiments: Any = None
) -> tuple[dict[str, list[Any]], list[int] | None]:
    """The experiment's `sweep:` block, overridden key by key by --grid, and --seeds over its seeds."""
    from vae_cli.sweep.grid import from_block, parse_grid, parse_seeds

    grid: dict[str, list[Any]] = {}
    seeds = None
    if experiment is not None:
        exps = experiments or settings_mod.Experiments.load()
        if experiment in exps.sweeps:
            grid, seeds = from_block(exps.sweeps[experiment], f"experiment '{experiment}' sweep")
    grid.update(parse_grid(grid_items))
    return grid, parse_seeds(seeds_text) if seeds_text is not None else seeds


def parse_pairs(items: list[str], flag: str) -> dict[str, Any]:
    """['epochs=5', 'lr=0.001'] -> {'epochs': 5, 'lr': 0.001} (values read as YAML scalars)."""
    from vae_cli.sweep.grid import parse_value

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise VaeError(f'{flag} "{item}": write KEY=VALUE')
        key = key.strip().replace("-", "_") if flag == "--set" else key.strip()
        if key in out and flag == "--slurm":  # --set: the later value wins, as for any flag
            raise VaeError(f"{flag} {key} is given twice: give each SLURM parameter once")
        out[key] = parse_value(value.strip())
    return out
