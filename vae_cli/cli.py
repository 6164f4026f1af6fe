"""The `vae` command: parses flags, calls the library, prints with rich."""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from vae_cli import runs
from vae_cli import settings as settings_mod
from vae_cli.errors import Interrupted, VaeError, one_line, translate, unexpected
from vae_cli.options import Command, Group, with_settings
from vae_cli.quiet import quiet_lightning
from vae_cli.settings import MODEL_SETTINGS, RUN_SETTINGS, RunSettings
from vae_cli.sweep import LAUNCHERS

# Rich markup mode for the help panels (one per settings group); every help text is escaped
# (options.py, `command` below), so `[...]` in it is printed, not read as a tag.
app = typer.Typer(
    cls=Group,
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    help="Train, evaluate and sample variational autoencoders with exact likelihoods.",
)
# markup=False: paths and names a user gave (with `[` `]` in them) are printed as they are,
# never read as rich markup.
out = Console(soft_wrap=True, markup=False)
err = Console(stderr=True, soft_wrap=True, markup=False)

F = TypeVar("F", bound=Callable[..., Any])


def styled(label: str, style: str, text: str) -> Text:
    return Text.assemble((label, style), " ", text)


def stopped(signum: int) -> None:
    err.print(f"interrupted by {signal.Signals(signum).name}: stopped before writing its "
              "results; files already there were left as they were")  # fmt: skip
    raise typer.Exit(128 + signum) from None


def stopped_training(e: Any) -> None:
    """training/checkpointing.RunInterrupted: what was saved and how to continue."""
    where = e.checkpoint.parent.parent if e.checkpoint else None
    saved = f"saved {e.checkpoint}; continue with `vae train --resume {where}`" if where else "nothing saved"
    if e.complete:
        saved = f"the run had finished and wrote its results{f' in {where}' if where else ''}"
    err.print(f"interrupted by {signal.Signals(e.signum).name} after step {e.step}: {saved}")
    raise typer.Exit(128 + e.signum) from None


def stopped_sweep(signum: int) -> None:
    err.print(f"interrupted by {signal.Signals(signum).name}: running members saved a checkpoint; "
              "re-run the same command to resume")  # fmt: skip
    raise typer.Exit(128 + signum) from None


def friendly(fn: F) -> F:
    """Every error -> one line on stderr, exit code 2 (1 for an unforeseen error, a bug;
    --debug shows the traceback instead);
    SIGTERM/SIGINT -> what was kept, and exit 128 + the signal number."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = kwargs.get("ctx")  # every command takes ctx: typer.Context for this
        debug = bool(ctx is not None and ctx.obj and ctx.obj.get("debug"))
        try:
            with stop_on_signals():
                return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except Interrupted as e:
            stopped(e.signum)
        except Exception as e:
            # By name: importing Lightning here would cost every command (`--help` too) its start-up.
            if type(e).__name__ == "RunInterrupted":  # training saved a checkpoint first
                stopped_training(e)
            if type(e).__name__ == "SweepInterrupted":  # sweep/launch.py: the members saved theirs
                stopped_sweep(e.signum)
            if type(e).__name__ == "SIGTERMException":  # Lightning's own SIGTERM handler
                stopped(signal.SIGTERM)
            if debug:
                raise
            known = translate(e)
            # 2: an input or an environment the user can fix; 1: a bug nobody foresaw.
            shown, code = (known, 2) if known is not None else (unexpected(e), 1)
            err.print(styled("error:", "bold red", one_line(str(shown))), highlight=False)
            raise typer.Exit(code) from None

    return wrapper  # type: ignore[return-value]


def command(name: str | None = None) -> Callable[[F], F]:
    """app.command, with friendly errors and the docstring escaped as help (E[x|z] stays)."""

    def register(fn: F) -> F:
        app.command(name, cls=Command, help=escape(inspect.cleandoc(fn.__doc__ or "")))(friendly(fn))
        return fn

    return register


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise Interrupted wherever the command is (training replaces these
    handlers with its own, which save a checkpoint first): exit 143/130, never 0 or 1."""

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread (e.g. a test runner's worker): leave them
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def show_version(value: bool) -> None:
    if value:
        from vae_cli import __version__

        out.print(f"vae-cli {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks on errors.", metavar=""),
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        callback=show_version,
        is_eager=True,
        metavar="",
    ),
) -> None:
    ctx.obj = {"debug": debug}


# ---------------------------------------------------------------------------- options shared
RUN_ARG = typer.Argument(None, help="Run directory or .ckpt file.", show_default="the latest run")
HARDWARE = ("accelerator", "devices", "strategy", "num_nodes", "precision")
RUNS_DIR_HELP = {"runs_dir": "Where runs live (without RUN: the latest run there)."}
# `vae train`: every setting but the run's name, which --experiment sets.
TRAIN_SETTINGS = [n for n in settings_mod.SETTINGS if n != "experiment"]  # -e is the experiment


def experiment_names(incomplete: str) -> list[str]:
    """Shell completion of -e: the named experiments in force (no torch is imported)."""
    try:
        return [n for n in settings_mod.Experiments.load().named if n.startswith(incomplete)]
    except VaeError:
        return []  # a broken experiments file: no completion, the command itself will say why


def experiment_option(help: str) -> Any:
    """-e/--experiment, with the named experiments as its shell completion."""
    return typer.Option(
        None, "--experiment", "-e", help=help, metavar="NAME", autocompletion=experiment_names
    )


CONFIG_FILE = typer.Option(None, "--config", help="YAML file of key: value overrides.")


def run_flags(settings: dict[str, Any]) -> RunSettings:
    """The run settings from the given flags and the declared defaults, never from a run."""
    return settings_mod.run_settings({k: v for k, v in settings.items() if k in RUN_SETTINGS})


# Bounds far above any use, below what would exhaust memory or run for days.
MAX_IW = 10**6
MAX_IMAGES = 10_000


def check_n(n: int) -> None:
    if not 1 <= n <= MAX_IMAGES:
        raise VaeError(f"--n must be in 1..{MAX_IMAGES} (images in one grid), got {n}")


def check_seed(seed: int) -> None:
    if not 0 <= seed < 2**32:
        raise VaeError(f"--seed must be in 0..{2**32 - 1} (what numpy and Lightning accept), got {seed}")


def fmt(x: float) -> str:
    return f"{x:.3f}"


# ---------------------------------------------------------------------------- train
@command()
@with_settings(TRAIN_SETTINGS)
def train(
    ctx: typer.Context,
    experiment: str = experiment_option("Named experiment (`vae experiments`)."),
    config_file: Path = CONFIG_FILE,
    smoke: bool = typer.Option(
        False, "--smoke", help="One batch of each stage; writes no files.", metavar=""
    ),
    resume: str = typer.Option(
        None,
        "--resume",
        help="Continue RUN (a run directory, or `last`) from checkpoints/last.ckpt.",
        metavar="RUN|last",
    ),
    settings: dict[str, Any] | None = None,
) -> None:
    """Train a VAE; writes runs/<experiment>/version_<n>/.

    Settings layer as: defaults < experiments.yaml < --experiment < --config < flags
    (docs/settings.md lists them all).
    """
    settings = settings or {}
    quiet_lightning()
    from vae_cli.training.fit import fit

    run_dir = None
    if resume is not None:
        cfg, run, run_dir = resume_config(resume, experiment, config_file, smoke, settings)
    else:
        cfg, run = settings_mod.resolve_all(experiment, config_file, settings)
    fit(cfg, smoke=smoke, console=out, resume=run_dir, run=run)


def resume_config(
    resume: str, experiment: str | None, config_file: Path | None, smoke: bool, settings: dict[str, Any]
) -> tuple[settings_mod.Config, RunSettings, Path]:
    """The run's own config (only its `resumable` settings may change) and this process's
    run settings (flags and defaults, as always; the run stays in its own directory)."""
    import dataclasses

    from vae_cli.training.checkpointing import resolve_resume

    fixed = sorted(k for k in settings if k in MODEL_SETTINGS and not MODEL_SETTINGS[k].spec.resumable)
    if experiment or config_file or smoke or fixed:
        what = ", ".join(f"--{k.replace('_', '-')}" for k in fixed) or "--experiment/--config/--smoke"
        may = [f"--{k.replace('_', '-')}" for k, d in MODEL_SETTINGS.items() if d.spec.resumable]
        raise VaeError(
            f"--resume continues a run with its own config; {what} cannot change it "
            f"(only {', '.join(may)} and the hardware and output flags, e.g. --logger, can): "
            f"start a new run instead"
        )
    run = run_flags(settings)
    run_dir, _ = resolve_resume(resume, Path(run.runs_dir))
    saved = settings_mod.read_yaml(run_dir / runs.CONFIG)
    cfg = settings_mod.from_dict(saved, str(run_dir / runs.CONFIG))
    changes = {k: v for k, v in settings.items() if k in MODEL_SETTINGS}
    cfg = dataclasses.replace(cfg, **changes).validate()
    # The run lives where it is, whatever the working directory was when it started.
    # A run is its directory: runs_dir only places new runs, and a resumed one stays in run_dir.
    run = dataclasses.replace(run, runs_dir=str(run_dir.parent.parent))
    return cfg, run, run_dir


# ---------------------------------------------------------------------------- eval
@command("eval")
@with_settings(
    ("batch_size", "data_dir", "dataset", "likelihood", *HARDWARE, "runs_dir"),
    from_run=("batch_size", "data_dir", "dataset", "likelihood"),
    help={
        "dataset": "Evaluate on another dataset of the same shape.",
        "likelihood": "Assert the checkpoint's likelihood (an error if it differs).",
        **RUNS_DIR_HELP,
    },
)
def evaluate(
    ctx: typer.Context,
    run: Path = RUN_ARG,
    split: str = typer.Option(
        "test", help="Which split to score.", metavar="test|val", autocompletion=lambda: ["test", "val"]
    ),
    iw_samples: int = typer.Option(
        100, "--iw-samples", "-k", help="Importance samples K for the IW bound (0: skip)."
    ),
    chunk: int = typer.Option(100, help="Importance samples per forward pass (bounds memory)."),
    seed: int = typer.Option(0, help="Seed of the z samples."),
    settings: dict[str, Any] | None = None,
) -> None:
    """Test-set ELBO, its terms, bits/dim and the importance-weighted bound; writes eval.json.

    The same numbers on any number of devices: every example is scored once, with z noise
    seeded per fixed batch, and sums are all-reduced (docs/scaling.md). The hardware flags
    never come from the run: one device at full precision unless given.
    """
    settings = settings or {}
    if split not in ("test", "val"):
        raise VaeError(f'unknown split "{split}": choose test or val')
    if iw_samples < 0 or chunk < 1:
        raise VaeError("--iw-samples must be >= 0 and --chunk >= 1")
    if iw_samples > MAX_IW or chunk > MAX_IW:
        raise VaeError(f"--iw-samples and --chunk must be <= {MAX_IW} (the IWAE paper uses 5000)")
    check_seed(seed)
    hardware = run_flags(settings)
    overrides = {k: v for k, v in settings.items() if k in MODEL_SETTINGS}
    for key, value in overrides.items():
        settings_mod.check(key, value)  # unknown names: "did you mean"
    quiet_lightning()
    from vae_cli import report
    from vae_cli.training.evaluate import evaluate_checkpoint

    ckpt, run_dir = runs.resolve_checkpoint(run, Path(hardware.runs_dir))
    runs.ensure_writable(run_dir, "the run directory (eval.json goes there)")
    results = evaluate_checkpoint(ckpt, split, iw_samples, chunk, seed, overrides, hardware, run_dir)
    if results is None:  # a DDP worker (rank > 0): rank 0 reports and writes
        return
    rows = [("examples", str(results["n_examples"]))]
    for name, label in (
        ("elbo", "ELBO"),
        ("recon", "E_q log p(x|z)"),
        ("kl", "KL(q||p)"),
        ("iw", f"IW bound (K={iw_samples})"),
    ):
        if name in results:
            stderr = results[name + "_stderr"]
            spread = "(1 example: no std. error)" if stderr is None else f"± {fmt(stderr)}"
            rows.append((f"{label} (nats)", f"{fmt(results[name])} {spread}"))
    rows.append(("bits/dim (ELBO)", f"{results['bpd_elbo']:.4f}"))
    if "bpd_iw" in results:
        rows.append(("bits/dim (IW)", f"{results['bpd_iw']:.4f}"))
    if results.get("active_units_per_layer") is None:
        rows.append(("active units (Cov_x(E_q z) > 0.01)", "n/a (1 example: no covariance)"))
    else:
        per_layer = " + ".join(
            f"{a}/{d}" for a, d in zip(results["active_units_per_layer"], results["latent_dims"], strict=True)
        )
        rows.append(("active units (Cov_x(E_q z) > 0.01)", per_layer))
    rss = results.get("peak_rss_mib")
    rows.append(("wall time / peak RSS", f"{results['wall_time_s']:.1f} s / {rss if rss else 'n/a'} MiB"))
    out.print(report.metrics_table(f"{split} set", rows))
    out.print(f"checkpoint: {ckpt}", highlight=False)
    out.print(f"data: {results['data_protocol']}; z samples: torch seed {seed}", highlight=False)
    if not results.get("normalised", True):
        err.print(styled("warning:", "yellow", "Bernoulli on non-binary data (--binarize none): these "
                         "numbers are not log-likelihoods of a normalised density"))  # fmt: skip
    text = json.dumps(results, indent=2) + "\n"
    # One file per setting (never replaced by another K, seed, split, dataset or checkpoint),
    # plus eval.json / eval-val.json: the latest, as before. Both written only now, atomically.
    dataset = overrides.get("dataset")  # a name, or (your own data) a path: its last part
    which = f"{split}-{ckpt.stem}-k{iw_samples}-seed{seed}" + (f"-{Path(dataset).name}" if dataset else "")
    for path in (
        run_dir / f"eval-{which}.json",
        run_dir / ("eval.json" if split == "test" else f"eval-{split}.json"),
    ):
        runs.write_atomic(path, text)
        out.print(f"wrote {path}")


# ---------------------------------------------------------------------------- sample
@command()
@with_settings(("accelerator", "precision", "runs_dir"), help=RUNS_DIR_HELP)
def sample(
    ctx: typer.Context,
    run: Path = RUN_ARG,
    n: int = typer.Option(64, "--n", help="Number of samples."),
    stochastic: bool = typer.Option(
        False, "--stochastic", help=escape("Draw x ~ p(x|z) instead of showing E[x|z]."), metavar=""
    ),
    temperature: float = typer.Option(1.0, help="Scale of the prior draw z ~ N(0, T^2 I)."),
    seed: int = typer.Option(0, help="Seed of the z (and x) draws."),
    out_file: Path = typer.Option(
        None, "--out", help="Image path.", show_default="a new RUN/samples-{mean,stochastic}-seedS-TT-nN.png"
    ),
    settings: dict[str, Any] | None = None,
) -> None:
    """Draw z from the prior and write a PNG grid of E[x|z] (or of x ~ p(x|z)).

    One decoder pass: it runs in one process on one device of --accelerator under
    --precision; launched as several processes (torchrun, srun), only rank 0 writes.
    """
    from vae_cli.training.sample import check_temperature, sample_on_device, sample_title

    check_n(n)
    check_temperature(temperature)
    check_seed(seed)
    hardware = run_flags(settings or {})
    quiet_lightning()
    from vae_cli import report
    from vae_cli.training.checkpointing import checkpoint_step
    from vae_cli.training.load import load_module

    if out_file is not None:
        report.check_new_image_path(out_file)
    ckpt, run_dir = runs.resolve_checkpoint(run, Path(hardware.runs_dir))
    module = load_module(ckpt, run_dir)
    images = sample_on_device(module, n, stochastic, temperature, seed, hardware)
    if images is None:  # not global rank 0 of a multi-process launch
        return
    # The run's own samples-*.png (from training) are never replaced: a new name per setting.
    kind_name = "stochastic" if stochastic else "mean"
    path = out_file or runs.free_name(run_dir / f"samples-{kind_name}-seed{seed}-T{temperature:g}-n{n}.png")
    runs.ensure_writable(path.parent, "--out" if out_file else "--out (the run directory is not writable)")
    caption = report.run_caption(
        run_dir, module.cfg.likelihood, checkpoint_step(ckpt), sample_title(stochastic, temperature)
    )
    report.save_grid(images, path, caption=caption, replace=False)
    kind = "x ~ p(x|z)" if stochastic else "E[x|z]"
    out.print(
        f"wrote {path} ({n} sample{'s' if n != 1 else ''} of {kind}, likelihood {module.cfg.likelihood})",
        markup=False,
    )


# ---------------------------------------------------------------------------- reconstruct
@command()
@with_settings(("data_dir", "runs_dir"), from_run=("data_dir",), help=RUNS_DIR_HELP)
def reconstruct(
    ctx: typer.Context,
    run: Path = RUN_ARG,
    n: int = typer.Option(32, "--n", help="Number of inputs (the first N of the split)."),
    stochastic: bool = typer.Option(
        False, "--stochastic", help=escape("Draw x' ~ p(x|z) instead of showing E[x|z]."), metavar=""
    ),
    split: str = typer.Option(
        "test", help="Which split's inputs.", metavar="test|val", autocompletion=lambda: ["test", "val"]
    ),
    seed: int = typer.Option(0, help="Seed of the x' draws (--stochastic)."),
    out_file: Path = typer.Option(
        None, "--out", help="PNG path.", show_default="RUN/reconstructions-{mean,stochastic}.png"
    ),
    settings: dict[str, Any] | None = None,
) -> None:
    """Write a PNG of inputs (rows labelled input) above their reconstructions from z = E_q[z|x]."""
    settings = settings or {}
    check_n(n)
    check_seed(seed)
    hardware = run_flags(settings)
    quiet_lightning()
    from vae_cli import report
    from vae_cli.training.checkpointing import checkpoint_step
    from vae_cli.training.load import load_module
    from vae_cli.training.reconstruct import default_path, eval_examples, reconstruction_pair

    if out_file is not None:
        report.check_new_image_path(out_file)
    ckpt, run_dir = runs.resolve_checkpoint(run, Path(hardware.runs_dir))
    module = load_module(ckpt, run_dir)
    data_dir = settings.get("data_dir")
    x = eval_examples(module, n, split, {"data_dir": data_dir} if data_dir else None)
    path = out_file or runs.free_name(default_path(run_dir, stochastic))
    runs.ensure_writable(path.parent, "--out" if out_file else "--out (the run directory is not writable)")
    kind = "x' ~ p(x|z)" if stochastic else "E[x|z]"
    what = f"{split} inputs above their reconstructions {kind}, z = E_q[z|x]"
    caption = report.run_caption(run_dir, module.cfg.likelihood, checkpoint_step(ckpt), what)
    panel = report.reconstruction_panel(*reconstruction_pair(module, x, stochastic, seed))
    report.save_panels([panel], path, caption, replace=False)
    out.print(
        f"wrote {path} ({len(x)} {split} inputs above {kind}, likelihood {module.cfg.likelihood})",
        markup=False,
    )


# ---------------------------------------------------------------------------- latent
@command()
@with_settings(("data_dir", "runs_dir"), from_run=("data_dir",), help=RUNS_DIR_HELP)
def latent(
    ctx: typer.Context,
    run: Path = RUN_ARG,
    pairs: int = typer.Option(6, help="Test pairs to interpolate between."),
    steps: int = typer.Option(10, help="Decoded points per interpolation."),
    dims: int = typer.Option(8, help="Most active latent units to traverse."),
    grid: int = typer.Option(20, help="latent_dim 2: the manifold figure is GRID x GRID."),
    n_embed: int = typer.Option(2000, "--n-embed", help="latent_dim > 2: test points in PCA/t-SNE."),
    seed: int = typer.Option(0, help="Seed of the pair choice and of the x ~ p(x|z) draws."),
    out_dir: Path = typer.Option(
        None, "--out", help="Parent of the new latent[-N] folder.", show_default="RUN"
    ),
    settings: dict[str, Any] | None = None,
) -> None:
    """Latent-space figures: interpolations, traversals, manifold / embedding (docs/latent.md)."""
    settings = settings or {}
    hardware = run_flags(settings)
    quiet_lightning()
    from vae_cli.api import load
    from vae_cli.latent import write_latent_figures

    ckpt, run_dir = runs.resolve_checkpoint(run, Path(hardware.runs_dir))
    parent = out_dir or run_dir
    runs.ensure_writable(parent, "--out")
    model = load(ckpt, settings.get("data_dir"))
    for path in write_latent_figures(model, parent, pairs, steps, dims, n_embed, grid, seed):
        out.print(f"wrote {path}", markup=False)


# ---------------------------------------------------------------------------- sweep
SLURM_FLAGS = {
    "slurm_partition": "slurm_partition",
    "slurm_time": "timeout_min",
    "slurm_gpus": "gpus_per_node",
}
JOBS = typer.Option(1, "--jobs", "-j", help="Members run at once (local: processes; slurm: array tasks).")
LAUNCHER = typer.Option(
    "local", help="local processes, slurm (a submitit job array), or submitit-local (tests).",
    metavar="|".join(LAUNCHERS), autocompletion=lambda: list(LAUNCHERS),
)  # fmt: skip
SLURM_PARTITION = typer.Option(None, "--slurm-partition", help="SLURM partition.", metavar="NAME")
SLURM_TIME = typer.Option(None, "--slurm-time", help="SLURM time limit per member, in minutes.")
SLURM_GPUS = typer.Option(None, "--slurm-gpus", help="GPUs per member (submitit gpus_per_node).")
SLURM_ANY = typer.Option(
    None,
    "--slurm",
    help="KEY=VALUE passed to submitit (repeatable), e.g. slurm_account=x.",
    metavar="KEY=VALUE",
)
IW = typer.Option(100, "--iw-samples", "-k", help="Importance samples K of each member's eval (0: skip).")


def launch_options(launcher: str, jobs: int, slurm: list[str] | None, **flags: Any) -> Any:
    from vae_cli.sweep.run import Launch, parse_pairs

    params = {SLURM_FLAGS[k]: v for k, v in flags.items() if v is not None}
    pairs = parse_pairs(slurm or [], "--slurm")
    both = sorted(set(params) & set(pairs))
    if both:
        raise VaeError(f"--slurm {both[0]}=... repeats a --slurm-* flag: give each SLURM parameter once")
    return Launch(launcher, jobs, {**params, **pairs} or None).check()


def run_members(target: Path, members: list[Any], iw_samples: int, how: Any) -> None:
    """Run the members (a signal: SweepInterrupted, which `friendly` reports); exit 1 when any
    member did not finish."""
    from vae_cli.sweep.run import failure_summary, run

    quiet_lightning()
    summary = failure_summary(run(target, members, iw_samples, how, out))
    if summary:  # the table and the failures are printed; a script must still see it went wrong
        err.print(styled("error:", "bold red", summary), highlight=False)
        raise typer.Exit(1)


@command()
@with_settings(("runs_dir",), help={"runs_dir": "Where sweeps are written."})
def sweep(
    ctx: typer.Context,
    experiment: str = experiment_option("Named experiment (and its sweep: block)."),
    config_file: Path = CONFIG_FILE,
    grid: list[str] = typer.Option(
        None, "--grid", help="A setting and its values (repeatable).", metavar="KEY=V1,V2,..."
    ),
    seeds: str = typer.Option(
        None,
        "--seeds",
        help="Comma-separated seeds.",
        show_default="the sweep: block's, or seed",
        metavar="S1,S2,...",
    ),
    set_items: list[str] = typer.Option(
        None, "--set", help="A setting for every member (repeatable).", metavar="KEY=VALUE"
    ),
    jobs: int = JOBS,
    launcher: str = LAUNCHER,
    slurm_partition: str = SLURM_PARTITION,
    slurm_time: int = SLURM_TIME,
    slurm_gpus: int = SLURM_GPUS,
    slurm: list[str] = SLURM_ANY,
    iw_samples: int = IW,
    name: str = typer.Option(
        None,
        "--name",
        help="The sweep's folder under --runs-dir.",
        show_default="sweep-EXPERIMENT-KEYS",
        metavar="NAME",
    ),
    out_dir: Path = typer.Option(None, "--out", help="The sweep directory.", show_default="RUNS/NAME"),
    settings: dict[str, Any] | None = None,
) -> None:
    """Run a grid of settings x seeds; re-running it resumes; ends with the aggregated table."""
    from vae_cli.sweep import run

    how = launch_options(launcher, jobs, slurm, slurm_partition=slurm_partition, slurm_time=slurm_time,
                         slurm_gpus=slurm_gpus)  # fmt: skip
    if iw_samples < 0:
        raise VaeError(f"--iw-samples must be >= 0, got {iw_samples}")
    overrides = {**run.parse_pairs(set_items or [], "--set"), **(settings or {})}
    base, hardware = settings_mod.resolve_all(experiment, config_file, overrides)
    keys, seed_list = run.grid_from(experiment, grid or [], seeds)
    if name is not None:
        runs.check_name("--name", name)
    default = f"sweep-{experiment or base.dataset}-{'-'.join(keys) or 'seeds'}"
    target = out_dir or Path(hardware.runs_dir) / (name or default)
    members = run.plan(target, base, hardware, keys, seed_list, iw_samples, "--grid", how)
    run_members(target, members, iw_samples, how)


@command()
def results(
    ctx: typer.Context,
    sweep_dir: Path = typer.Argument(..., help="A folder written by `vae sweep`/`compare`."),
) -> None:
    """Reprint a sweep's aggregated table (and rewrite its csv, json, md and plots)."""
    from vae_cli.sweep.run import show

    show(sweep_dir, out)


# ---------------------------------------------------------------------------- compare
COMPARE_SETTINGS = (
    *("dataset", "data_dir", "arch", "latent_dim", "hidden_dim", "epochs", "max_steps", "batch_size"),
    *("lr", "seed", "sigma", "mixture_components", "accelerator", "runs_dir"),
)


@command()
@with_settings(COMPARE_SETTINGS, help={"seed": "Random seed (the same for every likelihood)."})
def compare(
    ctx: typer.Context,
    experiment: str = experiment_option("Named experiment as the base config."),
    config_file: Path = CONFIG_FILE,
    likelihoods: str = typer.Option(
        None,
        help="Comma-separated families.",
        show_default="all that apply to the dataset",
        metavar="F1,F2,...",
    ),
    run: list[Path] = typer.Option(
        None,
        "--run",
        help="Compare these existing run directories instead of training (repeatable).",
        metavar="RUN",
    ),
    seeds: str = typer.Option(
        None, "--seeds", help="Comma-separated seeds: each likelihood once per seed.", metavar="S1,S2,..."
    ),
    iw_samples: int = IW,
    jobs: int = JOBS,
    launcher: str = LAUNCHER,
    slurm: list[str] = typer.Option(
        None,
        "--slurm",
        help="For submitit (repeatable): slurm_partition=gpu, timeout_min=60, ...",
        metavar="KEY=VALUE",
    ),
    out_dir: Path = typer.Option(
        None, "--out", help="Report directory.", show_default="RUNS/compare-DATASET"
    ),
    settings: dict[str, Any] | None = None,
) -> None:
    """A sweep over --likelihoods (x --seeds): one model and data, a table (md, csv, json), figures."""
    settings = settings or {}
    if iw_samples < 0:
        raise VaeError(f"--iw-samples must be >= 0, got {iw_samples}")
    from vae_cli.compare import parse_likelihoods
    from vae_cli.sweep import run as sweep_run

    how = launch_options(launcher, jobs, slurm)
    cfg, hardware = settings_mod.resolve_all(experiment, config_file, settings)
    names = parse_likelihoods(likelihoods, cfg.dataset)
    if run and (likelihoods or seeds):
        raise VaeError(
            "pass either --run (existing runs) or --likelihoods/--seeds (train new ones), not both"
        )
    target = out_dir or Path(hardware.runs_dir) / f"compare-{cfg.dataset}"
    if run:
        quiet_lightning()
        sweep_run.evaluate_existing(target, list(run), iw_samples, out, hardware)
        return
    seed_list = sweep_run.grid_from(None, [], seeds)[1]
    members = sweep_run.plan(
        target, cfg, hardware, {"likelihood": names}, seed_list, iw_samples, "--likelihoods", how
    )
    run_members(target, members, iw_samples, how)


# ---------------------------------------------------------------------------- experiments
@command()
def experiments(ctx: typer.Context) -> None:
    """List the named experiments (the packaged experiments.yaml, merged with ./experiments.yaml)."""
    from rich.padding import Padding
    from rich.text import Text

    exps = settings_mod.Experiments.load()
    files = settings_mod.experiments_files()
    out.print(Text(" + ".join(map(str, files)) or "no experiments file", style="bold"))
    declared = {k: d.default for k, d in settings_mod.SETTINGS.items()}
    rows = [("name", "dataset", "likelihood", "")]
    for name, body in exps.named.items():
        merged = {**declared, **exps.defaults, **body}  # what the experiment trains with
        rows.append(
            (name, str(merged["dataset"]), str(merged["likelihood"]), str(body.get("description", "")))
        )
    # Name, dataset and likelihood on one line, never cut (they are typed); the description
    # below, wrapped to the terminal, so that an 80-column terminal shows every word.
    w0, w1 = (max(len(r[i]) for r in rows) for i in (0, 1))
    for k, (name, dataset, likelihood, description) in enumerate(rows):
        out.print(Text(f"{name:<{w0}}  {dataset:<{w1}}  {likelihood}", style="bold" if k == 0 else ""))
        if description:
            out.print(Padding(Text(description, style="dim"), (0, 0, 0, 4)))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
