"""The `vae` command: parses flags, calls the library, prints with rich."""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from vae_cli import config as config_mod
from vae_cli import report, runs
from vae_cli.errors import VaeError, translate

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train, evaluate and sample variational autoencoders with exact likelihoods.",
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """VaeError -> one line on stderr and exit code 2; --debug shows the traceback instead."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = kwargs.get("ctx")  # every command takes ctx: typer.Context for this
        debug = bool(ctx is not None and ctx.obj and ctx.obj.get("debug"))
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as e:
            known = translate(e)
            if debug or known is None:
                raise
            err.print(f"[bold red]error:[/] {escape(str(known))}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def quiet_lightning() -> None:
    """Lightning's banner lines ("GPU available: ...") say nothing a user asked for."""
    import pytorch_lightning  # noqa: F401  (it sets its loggers to INFO on import)

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", ".*Experiment logs directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    # About self.log's step cadence, counted in Lightning batches; the training means are
    # logged by the module every log_every_n_steps optimiser steps (fastpath.log_due).
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")


@app.callback()
def root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks on errors."),
) -> None:
    ctx.obj = {"debug": debug}
    quiet_lightning()


# ---------------------------------------------------------------------------- options shared
RUNS_DIR = typer.Option(None, "--runs-dir", help="Where runs live [default: runs].")
RUN_ARG = typer.Argument(None, help="Run directory or .ckpt file [default: the latest run].")
# Trainer flags of eval/sample: not inherited from the run (see docs/scaling.md).
ACCELERATOR = typer.Option(None, help="Lightning accelerator: auto, cpu, gpu, ... [default: auto].")
DEVICES = typer.Option(None, help="Devices per node (-1: all) [default: 1].")
STRATEGY = typer.Option(None, help="Lightning strategy: auto, ddp, ddp_spawn, fsdp [default: auto].")
NUM_NODES = typer.Option(None, help="Nodes (multi-node under torchrun or SLURM) [default: 1].")
PRECISION = typer.Option(None, help="32-true, 16-mixed, bf16-mixed [default: 32-true].")


def trainer_overrides(**flags: Any) -> dict[str, Any]:
    """The trainer flags that were given, as Config overrides."""
    return {k: v for k, v in flags.items() if v is not None}


def fmt(x: float) -> str:
    return f"{x:.3f}"


# ---------------------------------------------------------------------------- train
@app.command()
@friendly
def train(
    ctx: typer.Context,
    experiment: str = typer.Option(None, "--experiment", "-e", help="Named experiment in experiments.yaml."),
    config_file: Path = typer.Option(None, "--config", help="YAML file of key: value overrides."),
    likelihood: str = typer.Option(None, help="Decoder likelihood p(x|z); see docs/likelihoods.md."),
    dataset: str = typer.Option(None, help="digits, mnist, fashion-mnist, binarized-mnist, cifar10."),
    data_dir: str = typer.Option(None, help="Dataset root [default: ./data]."),
    binarize: str = typer.Option(None, help="bernoulli targets: dynamic | static | none."),
    sigma: float = typer.Option(None, help="Fixed sigma of the gaussian likelihood (data in [0,1])."),
    mixture_components: int = typer.Option(None, help="Logistics per value in logistic-mixture."),
    latent_dim: int = typer.Option(None, help="Latent dimensions."),
    hidden_dim: int = typer.Option(None, help="Hidden units per layer."),
    arch: str = typer.Option(None, help="mlp | conv."),
    epochs: int = typer.Option(None, help="Training epochs."),
    max_steps: int = typer.Option(None, help="Stop after this many optimiser steps."),
    batch_size: int = typer.Option(None, help="Examples per batch (per device)."),
    lr: float = typer.Option(None, help="Adam learning rate."),
    seed: int = typer.Option(None, help="Random seed."),
    accelerator: str = typer.Option(None, help="Lightning accelerator: auto, cpu, gpu, ..."),
    devices: int = typer.Option(None, help="Devices per node (-1: all)."),
    strategy: str = typer.Option(None, help="Lightning strategy: auto, ddp, ddp_spawn, fsdp."),
    num_nodes: int = typer.Option(None, help="Nodes (multi-node under torchrun or SLURM)."),
    precision: str = typer.Option(None, help="32-true, 16-mixed, bf16-mixed."),
    runs_dir: str = typer.Option(None, "--runs-dir", help="Where runs are written [default: runs]."),
    name: str = typer.Option(
        None, "--name", help="The run's folder [default: the experiment, or DATASET-LIKELIHOOD]."
    ),
    logger: str = typer.Option(
        None, "--logger", help="csv,tensorboard,mlflow,wandb [default: csv,tensorboard]."
    ),
    compile: bool = typer.Option(None, "--compile/--no-compile", help="torch.compile the training ELBO."),
    steps_per_call: int = typer.Option(None, help="Optimiser steps per Lightning batch [default: 8]."),
    objective: str = typer.Option(None, help="Training loss: elbo | iwae."),
    k: int = typer.Option(None, "--k", help="Samples per example: the iwae bound's K, or the elbo average."),
    beta: float = typer.Option(None, help="KL weight of the elbo objective (beta-VAE)."),
    kl_warmup_steps: int = typer.Option(None, help="elbo objective: ramp beta linearly from 0 over N steps."),
    stochastic_layers: int = typer.Option(None, help="1 | 2 (the IWAE paper's 2-layer model)."),
    schedule: str = typer.Option(None, help="constant | iwae (Adam eps 1e-4, 3^i epochs at lr*10^(-i/7))."),
    smoke: bool = typer.Option(False, "--smoke", help="One batch of each stage; writes no files."),
    nonfinite: str = typer.Option(None, help="On a NaN/inf loss or gradient: stop | skip the update."),
    skip_grad_norm: float = typer.Option(None, help="Skip updates with a larger gradient norm (0: off)."),
    resume: str = typer.Option(
        None, "--resume", help="Continue RUN (a run directory, or `last`) from checkpoints/last.ckpt."
    ),
) -> None:
    """Train a VAE; writes runs/<name>/version_<n>/ (name: --name, the experiment, or DATASET-LIKELIHOOD)."""
    overrides = {
        k: v for k, v in locals().items() if k not in ("ctx", "experiment", "config_file", "smoke", "resume")
    }
    from vae_cli.train.checkpointing import RunInterrupted
    from vae_cli.train.fit import fit

    run_dir = None
    if resume is not None:
        cfg, run_dir = resume_config(resume, experiment, config_file, smoke, overrides)
    else:
        cfg = config_mod.resolve(experiment, config_file, overrides)
    try:
        fit(cfg, smoke=smoke, console=out, resume=run_dir)
    except RunInterrupted as e:
        where = e.checkpoint.parent.parent if e.checkpoint else None
        saved = (
            f"saved {e.checkpoint}; continue with `vae train --resume {where}`" if where else "nothing saved"
        )
        err.print(
            f"interrupted by {signal.Signals(e.signum).name} after step {e.step}: {saved}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(128 + e.signum) from None


# What may change when resuming: how long to train and on what hardware, not what is trained.
RESUME_MAY_CHANGE = ("epochs", "max_steps", "accelerator", "devices", "strategy", "num_nodes", "logger")


def resume_config(
    resume: str, experiment: str | None, config_file: Path | None, smoke: bool, overrides: dict[str, Any]
) -> tuple[config_mod.Config, Path]:
    import dataclasses

    from vae_cli.train.checkpointing import resolve_resume

    given = sorted(
        k for k, v in overrides.items() if v is not None and k not in (*RESUME_MAY_CHANGE, "runs_dir")
    )
    if experiment or config_file or smoke or given:
        what = ", ".join(f"--{k.replace('_', '-')}" for k in given) or "--experiment/--config/--smoke"
        raise VaeError(
            f"--resume continues a run with its own config; {what} cannot change it "
            f"(only {', '.join('--' + k.replace('_', '-') for k in RESUME_MAY_CHANGE)} can): "
            f"start a new run instead"
        )
    run_dir, _ = resolve_resume(resume, Path(overrides.get("runs_dir") or "runs"))
    saved = config_mod.read_yaml(run_dir / runs.CONFIG)
    cfg = config_mod.from_dict(saved, str(run_dir / runs.CONFIG))
    changes = {k: overrides[k] for k in RESUME_MAY_CHANGE if overrides.get(k) is not None}
    # The run lives where it is, whatever the working directory was when it started.
    cfg = dataclasses.replace(cfg, **changes, runs_dir=str(run_dir.parent.parent)).validate()
    return cfg, run_dir


# ---------------------------------------------------------------------------- eval
@app.command("eval")
@friendly
def evaluate(
    ctx: typer.Context,
    run: Path = RUN_ARG,
    split: str = typer.Option("test", help="test | val."),
    iw_samples: int = typer.Option(
        100, "--iw-samples", "-k", help="Importance samples K for the IW bound (0: skip)."
    ),
    chunk: int = typer.Option(100, help="Importance samples per forward pass (bounds memory)."),
    batch_size: int = typer.Option(None, help="Examples per batch [default: the run's]."),
    data_dir: str = typer.Option(None, help="Dataset root [default: the run's]."),
    seed: int = typer.Option(0, help="Seed of the z samples."),
    runs_dir: Path = RUNS_DIR,
    dataset: str = typer.Option(
        None, help="Evaluate on another dataset of the same shape [default: the run's]."
    ),
    likelihood: str = typer.Option(None, help="Assert the checkpoint's likelihood (an error if it differs)."),
    accelerator: str = ACCELERATOR,
    devices: int = DEVICES,
    strategy: str = STRATEGY,
    num_nodes: int = NUM_NODES,
    precision: str = PRECISION,
) -> None:
    """Test-set ELBO, its terms, bits/dim and the importance-weighted bound; writes eval.json.

    The same numbers on any number of devices: every example is scored once, with z noise
    seeded per fixed batch, and sums are all-reduced (docs/scaling.md).
    """
    if split not in ("test", "val"):
        raise VaeError(f'unknown split "{split}": choose test or val')
    if iw_samples < 0 or chunk < 1:
        raise VaeError("--iw-samples must be >= 0 and --chunk >= 1")
    from vae_cli.train.evaluate import evaluate_checkpoint

    ckpt, run_dir = runs.resolve_checkpoint(run, runs_dir or Path("runs"))
    pairs = (
        ("batch_size", batch_size),
        ("data_dir", data_dir),
        ("dataset", dataset),
        ("likelihood", likelihood),
    )
    overrides = {k: v for k, v in pairs if v is not None}
    overrides.update(trainer_overrides(accelerator=accelerator, devices=devices, strategy=strategy,
                                       num_nodes=num_nodes, precision=precision))  # fmt: skip
    config_mod.from_dict(overrides, "command-line flags").validate()  # unknown names: "did you mean"
    runs.ensure_writable(run_dir, "the run directory (eval.json goes there)")
    results = evaluate_checkpoint(ckpt, split, iw_samples, chunk, seed, overrides)
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
            rows.append((f"{label} (nats)", f"{fmt(results[name])} ± {fmt(results[name + '_stderr'])}"))
    rows.append(("bits/dim (ELBO)", f"{results['bpd_elbo']:.4f}"))
    if "bpd_iw" in results:
        rows.append(("bits/dim (IW)", f"{results['bpd_iw']:.4f}"))
    if "active_units" in results:
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
        err.print("[yellow]warning:[/] Bernoulli on non-binary data (--binarize none): these "
                  "numbers are not log-likelihoods of a normalised density")  # fmt: skip
    path = run_dir / ("eval.json" if split == "test" else f"eval-{split}.json")
    runs.write_atomic(path, json.dumps(results, indent=2) + "\n")
    out.print(f"wrote {path}")


# ---------------------------------------------------------------------------- sample
@app.command()
@friendly
def sample(
    ctx: typer.Context,
    run: Path = RUN_ARG,
    n: int = typer.Option(64, "--n", help="Number of samples."),
    stochastic: bool = typer.Option(False, "--stochastic", help="Draw x ~ p(x|z) instead of showing E[x|z]."),
    temperature: float = typer.Option(1.0, help="Scale of the prior draw z ~ N(0, T^2 I)."),
    seed: int = typer.Option(0, help="Seed of the z (and x) draws."),
    out_file: Path = typer.Option(
        None, "--out", help="PNG path [default: RUN/samples-{mean,stochastic}.png]."
    ),
    runs_dir: Path = RUNS_DIR,
    accelerator: str = ACCELERATOR,
    devices: int = DEVICES,
    strategy: str = STRATEGY,
    num_nodes: int = NUM_NODES,
    precision: str = PRECISION,
) -> None:
    """Draw z from the prior and write a PNG grid of E[x|z] (or of x ~ p(x|z)).

    One decoder pass: it runs in one process on one device of --accelerator under
    --precision; launched as several processes (torchrun, srun), only rank 0 writes.
    """
    if n < 1:
        raise VaeError(f"--n must be >= 1, got {n}")
    if temperature <= 0:
        raise VaeError(f"--temperature must be > 0, got {temperature}")
    from vae_cli.train.load import load_module
    from vae_cli.train.sample import sample_on_device

    ckpt, run_dir = runs.resolve_checkpoint(run, runs_dir or Path("runs"))
    module = load_module(ckpt)
    flags = trainer_overrides(accelerator=accelerator, devices=devices, strategy=strategy,
                              num_nodes=num_nodes, precision=precision)  # fmt: skip
    spread = {"devices": 1, "num_nodes": 1, "strategy": "auto"}
    if any(flags.get(k, v) != v for k, v in spread.items()):
        err.print("note: sampling runs on one device; --devices/--strategy/--num-nodes only matter "
                  "for train and eval")  # fmt: skip
    images = sample_on_device(module, n, stochastic, temperature, seed, flags)
    if images is None:  # not global rank 0 of a multi-process launch
        return
    path = out_file or run_dir / f"samples-{'stochastic' if stochastic else 'mean'}.png"
    runs.ensure_writable(path.parent, "--out" if out_file else "--out (the run directory is not writable)")
    report.save_grid(images, path)
    kind = "x ~ p(x|z)" if stochastic else "E[x|z]"
    out.print(f"wrote {path} ({n} samples of {kind}, likelihood {module.cfg.likelihood})", markup=False)


# ---------------------------------------------------------------------------- reconstruct
@app.command()
@friendly
def reconstruct(
    ctx: typer.Context,
    run: Path = RUN_ARG,
    n: int = typer.Option(32, "--n", help="Number of inputs (the first N of the split)."),
    stochastic: bool = typer.Option(
        False, "--stochastic", help="Draw x' ~ p(x|z) instead of showing E[x|z]."
    ),
    split: str = typer.Option("test", help="test | val."),
    seed: int = typer.Option(0, help="Seed of the x' draws (--stochastic)."),
    data_dir: str = typer.Option(None, help="Dataset root [default: the run's]."),
    out_file: Path = typer.Option(
        None, "--out", help="PNG path [default: RUN/reconstructions-{mean,stochastic}.png]."
    ),
    runs_dir: Path = RUNS_DIR,
) -> None:
    """Write a PNG of inputs (odd rows) above their reconstructions from z = E_q[z|x]."""
    if n < 1:
        raise VaeError(f"--n must be >= 1, got {n}")
    from vae_cli.train.load import load_module
    from vae_cli.train.reconstruct import default_path, eval_examples, reconstruct_images

    ckpt, run_dir = runs.resolve_checkpoint(run, runs_dir or Path("runs"))
    module = load_module(ckpt)
    x = eval_examples(module, n, split, {"data_dir": data_dir} if data_dir else None)
    path = out_file or default_path(run_dir, stochastic)
    report.save_grid(reconstruct_images(module, x, stochastic, seed), path, nrow=8)
    kind = "x' ~ p(x|z)" if stochastic else "E[x|z]"
    out.print(
        f"wrote {path} ({len(x)} {split} inputs above {kind}, likelihood {module.cfg.likelihood})",
        markup=False,
    )


# ---------------------------------------------------------------------------- sweep
SLURM_FLAGS = {
    "slurm_partition": "slurm_partition",
    "slurm_time": "timeout_min",
    "slurm_gpus": "gpus_per_node",
}
JOBS = typer.Option(1, "--jobs", "-j", help="Members run at once (local: processes; slurm: array tasks).")
LAUNCHER = typer.Option("local", help="local | slurm (a submitit job array) | submitit-local (tests).")
SLURM_PARTITION = typer.Option(None, "--slurm-partition", help="SLURM partition.")
SLURM_TIME = typer.Option(None, "--slurm-time", help="SLURM time limit per member, in minutes.")
SLURM_GPUS = typer.Option(None, "--slurm-gpus", help="GPUs per member (submitit gpus_per_node).")
SLURM_ANY = typer.Option(
    None, "--slurm", help="KEY=VALUE passed to submitit (repeatable), e.g. slurm_account=x."
)
IW = typer.Option(100, "--iw-samples", "-k", help="Importance samples K of each member's eval (0: skip).")


def launch_options(launcher: str, jobs: int, slurm: list[str] | None, **flags: Any) -> Any:
    from vae_cli.sweep.run import Launch, parse_pairs

    params = {SLURM_FLAGS[k]: v for k, v in flags.items() if v is not None}
    params.update(parse_pairs(slurm or [], "--slurm"))
    return Launch(launcher, jobs, params or None).check()


def run_members(target: Path, members: list[Any], iw_samples: int, how: Any) -> None:
    from vae_cli.sweep.launch import SweepInterrupted
    from vae_cli.sweep.run import run

    try:
        run(target, members, iw_samples, how, out)
    except SweepInterrupted as e:
        err.print(f"interrupted by {signal.Signals(e.signum).name}: running members saved a checkpoint; "
                  "re-run the same command to resume", highlight=False)  # fmt: skip
        raise typer.Exit(128 + e.signum) from None


@app.command()
@friendly
def sweep(
    ctx: typer.Context,
    experiment: str = typer.Option(
        None, "--experiment", "-e", help="Named experiment (and its sweep: block)."
    ),
    config_file: Path = typer.Option(None, "--config", help="YAML file of key: value overrides."),
    grid: list[str] = typer.Option(
        None, "--grid", help="KEY=V1,V2,... a setting and its values (repeatable)."
    ),
    seeds: str = typer.Option(
        None, "--seeds", help="Comma-separated seeds [default: the sweep: block's, or seed]."
    ),
    settings: list[str] = typer.Option(None, "--set", help="KEY=VALUE for every member (repeatable)."),
    jobs: int = JOBS,
    launcher: str = LAUNCHER,
    slurm_partition: str = SLURM_PARTITION,
    slurm_time: int = SLURM_TIME,
    slurm_gpus: int = SLURM_GPUS,
    slurm: list[str] = SLURM_ANY,
    iw_samples: int = IW,
    name: str = typer.Option(
        None, "--name", help="The sweep's folder under --runs-dir [default: sweep-EXPERIMENT-KEYS]."
    ),
    out_dir: Path = typer.Option(None, "--out", help="The sweep directory [default: RUNS/NAME]."),
    runs_dir: str = typer.Option(None, "--runs-dir", help="Where sweeps are written [default: runs]."),
) -> None:
    """Run a grid of settings x seeds; re-running it resumes; ends with the aggregated table."""
    from vae_cli.sweep import run

    how = launch_options(launcher, jobs, slurm, slurm_partition=slurm_partition, slurm_time=slurm_time,
                         slurm_gpus=slurm_gpus)  # fmt: skip
    if iw_samples < 0:
        raise VaeError(f"--iw-samples must be >= 0, got {iw_samples}")
    overrides = {**run.parse_pairs(settings or [], "--set"), "runs_dir": runs_dir}
    base = config_mod.resolve(experiment, config_file, overrides)
    keys, seed_list = run.grid_from(experiment, grid or [], seeds)
    if name is not None:
        config_mod.Config(name=name).validate()
    default = f"sweep-{experiment or base.dataset}-{'-'.join(keys) or 'seeds'}"
    target = out_dir or Path(base.runs_dir) / (name or default)
    members = run.plan(target, base, keys, seed_list, iw_samples, "--grid")
    run_members(target, members, iw_samples, how)


@app.command()
@friendly
def results(
    ctx: typer.Context,
    sweep_dir: Path = typer.Argument(..., help="A folder written by `vae sweep`/`compare`."),
) -> None:
    """Reprint a sweep's aggregated table (and rewrite its csv, json, md and plots)."""
    from vae_cli.sweep.run import show

    show(sweep_dir, out)


# ---------------------------------------------------------------------------- compare
@app.command()
@friendly
def compare(
    ctx: typer.Context,
    experiment: str = typer.Option(None, "--experiment", "-e", help="Named experiment as the base config."),
    config_file: Path = typer.Option(None, "--config", help="YAML file of key: value overrides."),
    likelihoods: str = typer.Option(
        None, help="Comma-separated families [default: all that apply to the dataset]."
    ),
    run: list[Path] = typer.Option(
        None, "--run", help="Compare these existing run directories instead of training (repeatable)."
    ),
    dataset: str = typer.Option(None, help="digits, mnist, fashion-mnist, cifar10, shapes32, ..."),
    data_dir: str = typer.Option(None, help="Dataset root [default: ./data]."),
    arch: str = typer.Option(None, help="mlp | conv."),
    latent_dim: int = typer.Option(None, help="Latent dimensions."),
    hidden_dim: int = typer.Option(None, help="Hidden units per layer."),
    epochs: int = typer.Option(None, help="Training epochs per likelihood."),
    max_steps: int = typer.Option(None, help="Stop each training run after this many steps."),
    batch_size: int = typer.Option(None, help="Examples per batch."),
    lr: float = typer.Option(None, help="Adam learning rate."),
    seed: int = typer.Option(None, help="Random seed (the same for every likelihood)."),
    seeds: str = typer.Option(None, "--seeds", help="Comma-separated seeds: each likelihood once per seed."),
    sigma: float = typer.Option(None, help="gaussian sigma / laplace scale / learned-scale init."),
    mixture_components: int = typer.Option(None, help="logistic-mixture components."),
    accelerator: str = typer.Option(None, help="Lightning accelerator: auto, cpu, gpu, ..."),
    iw_samples: int = IW,
    jobs: int = JOBS,
    launcher: str = LAUNCHER,
    slurm: list[str] = typer.Option(
        None, "--slurm", help="KEY=VALUE for submitit (repeatable): slurm_partition=gpu, timeout_min=60, ..."
    ),
    out_dir: Path = typer.Option(None, "--out", help="Report directory [default: RUNS/compare-DATASET]."),
    runs_dir: str = typer.Option(None, "--runs-dir", help="Where runs are written [default: runs]."),
) -> None:
    """A sweep over --likelihoods (x --seeds): one model and data, a table (md, csv, json), figures."""
    skip = ("ctx", "experiment", "config_file", "likelihoods", "run", "iw_samples", "out_dir", "seeds",
            "jobs", "launcher", "slurm")  # fmt: skip
    overrides = {k: v for k, v in locals().items() if k not in skip and k != "skip"}
    if iw_samples < 0:
        raise VaeError(f"--iw-samples must be >= 0, got {iw_samples}")
    from vae_cli.compare import parse_likelihoods
    from vae_cli.sweep import run as sweep_run

    how = launch_options(launcher, jobs, slurm)
    cfg = config_mod.resolve(experiment, config_file, overrides)
    names = parse_likelihoods(likelihoods, cfg.dataset)
    if run and (likelihoods or seeds):
        raise VaeError(
            "pass either --run (existing runs) or --likelihoods/--seeds (train new ones), not both"
        )
    target = out_dir or Path(cfg.runs_dir) / f"compare-{cfg.dataset}"
    if run:
        sweep_run.evaluate_existing(target, list(run), iw_samples, out)
        return
    seed_list = sweep_run.grid_from(None, [], seeds)[1]
    members = sweep_run.plan(target, cfg, {"likelihood": names}, seed_list, iw_samples, "--likelihoods")
    run_members(target, members, iw_samples, how)


# ---------------------------------------------------------------------------- experiments
@app.command()
@friendly
def experiments(ctx: typer.Context) -> None:
    """List the named experiments in experiments.yaml."""
    from rich.table import Table

    exps = config_mod.Experiments.load()
    table = Table(title=str(config_mod.experiments_file()))
    for col in ("name", "dataset", "likelihood", "description"):
        table.add_column(col)
    for name, body in exps.named.items():
        merged = {**exps.defaults, **body}
        table.add_row(name, str(merged.get("dataset", "")), str(merged.get("likelihood", "")),
                      str(body.get("description", "")))  # fmt: skip
    out.print(table)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
