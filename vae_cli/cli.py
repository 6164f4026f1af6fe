"""The `vae` command: parses flags, calls the library, prints with rich."""

from __future__ import annotations

import functools
import json
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from vae_cli import config as config_mod
from vae_cli import report, runs
from vae_cli.errors import VaeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train, evaluate and sample variational autoencoders with exact likelihoods.",
)
out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """VaeError -> one line on stderr and exit code 2; --debug shows the traceback instead."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = kwargs.get("ctx")  # every command takes ctx: typer.Context for this
        debug = bool(ctx is not None and ctx.obj and ctx.obj.get("debug"))
        try:
            return fn(*args, **kwargs)
        except VaeError as e:
            if debug:
                raise
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
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


def trainer_kwargs(cfg: config_mod.Config) -> dict[str, Any]:
    return {
        "accelerator": cfg.accelerator,
        "devices": cfg.devices,
        "strategy": cfg.strategy,
        "num_nodes": cfg.num_nodes,
        "precision": cfg.precision,
    }


def fmt(x: float) -> str:
    return f"{x:.3f}"


# ---------------------------------------------------------------------------- train
@app.command()
@friendly
def train(
    ctx: typer.Context,
    experiment: str = typer.Option(None, "--experiment", "-e", help="Named experiment in experiments.yaml."),
    config_file: Path = typer.Option(None, "--config", help="YAML file of key: value overrides."),
    likelihood: str = typer.Option(None, help="Decoder likelihood p(x|z), e.g. bernoulli, gaussian."),
    dataset: str = typer.Option(None, help="digits, mnist, fashion-mnist, binarized-mnist, cifar10."),
    data_dir: str = typer.Option(None, help="Dataset root [default: ./data]."),
    binarize: str = typer.Option(None, help="bernoulli targets: dynamic | static | none."),
    sigma: float = typer.Option(None, help="Fixed sigma of the gaussian likelihood (data in [0,1])."),
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
    objective: str = typer.Option(None, help="Training loss: elbo | iwae."),
    k: int = typer.Option(None, "--k", help="Samples per example: the iwae bound's K, or the elbo average."),
    beta: float = typer.Option(None, help="KL weight of the elbo objective (beta-VAE)."),
    kl_warmup_steps: int = typer.Option(None, help="elbo objective: ramp beta linearly from 0 over N steps."),
    stochastic_layers: int = typer.Option(None, help="1 | 2 (the IWAE paper's 2-layer model)."),
    schedule: str = typer.Option(None, help="constant | iwae (Adam eps 1e-4, 3^i epochs at lr*10^(-i/7))."),
    smoke: bool = typer.Option(False, "--smoke", help="One batch of each stage; writes no files."),
) -> None:
    """Train a VAE; writes runs/<experiment>/version_<n>/."""
    overrides = {k: v for k, v in locals().items() if k not in ("ctx", "experiment", "config_file", "smoke")}
    cfg = config_mod.resolve(experiment, config_file, overrides)
    from vae_cli.training import fit

    fit(cfg, smoke=smoke, console=out)


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
) -> None:
    """Test-set ELBO, its terms, bits/dim and the importance-weighted bound; writes eval.json."""
    if split not in ("test", "val"):
        raise VaeError(f'unknown split "{split}": choose test or val')
    if iw_samples < 0 or chunk < 1:
        raise VaeError("--iw-samples must be >= 0 and --chunk >= 1")
    from vae_cli.training import evaluate_checkpoint

    ckpt, run_dir = runs.resolve_checkpoint(run, runs_dir or Path("runs"))
    overrides = {k: v for k, v in (("batch_size", batch_size), ("data_dir", data_dir)) if v is not None}
    results = evaluate_checkpoint(ckpt, split, iw_samples, chunk, seed, overrides)
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
) -> None:
    """Draw z from the prior and write a PNG grid of E[x|z] (or of x ~ p(x|z))."""
    if n < 1:
        raise VaeError(f"--n must be >= 1, got {n}")
    if temperature <= 0:
        raise VaeError(f"--temperature must be > 0, got {temperature}")
    from vae_cli.training import load_module, sample_images

    ckpt, run_dir = runs.resolve_checkpoint(run, runs_dir or Path("runs"))
    module = load_module(ckpt)
    images = sample_images(module, n, stochastic, temperature, seed)
    path = out_file or run_dir / f"samples-{'stochastic' if stochastic else 'mean'}.png"
    report.save_grid(images, path)
    kind = "x ~ p(x|z)" if stochastic else "E[x|z]"
    out.print(f"wrote {path} ({n} samples of {kind}, likelihood {module.cfg.likelihood})")


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
