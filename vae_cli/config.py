"""Experiment configuration: one flat, frozen, validated dataclass.

Resolution order (later wins): dataclass defaults < `defaults:` in experiments.yaml <
the named experiment < a --config YAML file < command-line flags. The resolved config is
saved as config.yaml in the run directory and inside every checkpoint, so a run can always
be rebuilt from what it wrote. Flat (nanoGPT-style) rather than nested: every key is also a
flag, and a YAML file is one level deep.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from vae_cli.errors import VaeError, did_you_mean, unknown

PRECISIONS = ("32-true", "32", "64-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true")
STRATEGIES = (
    "auto",
    "ddp",
    "ddp_spawn",
    "ddp_find_unused_parameters_true",
    "fsdp",
    "single_device",
)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
BINARIZE = ("dynamic", "static", "none")


@dataclass(frozen=True)
class Config:
    # what this run is
    experiment: str = "default"
    description: str = ""
    # data
    dataset: str = "digits"
    data_dir: str = "./data"
    binarize: str = "dynamic"  # bernoulli only: dynamic | static | none
    val_size: int | None = None  # None: the dataset's own default
    batch_size: int = 100
    # model
    arch: str = "mlp"
    latent_dim: int = 50
    hidden_dim: int = 200
    likelihood: str = "bernoulli"
    sigma: float = 0.1  # fixed sigma of `gaussian`; see docs/likelihoods.md for why not 1.0
    mixture_components: int = 5  # logistic-mixture: logistics per channel value
    # optimisation
    epochs: int = 10
    max_steps: int = -1  # -1: no step limit
    lr: float = 1e-3
    seed: int = 0
    # Lightning Trainer
    accelerator: str = "auto"
    devices: int = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    log_every_n_steps: int = 50
    # where runs go
    runs_dir: str = "runs"
    # the run's folder under runs_dir ("": the experiment's name, or DATASET-LIKELIHOOD without one)
    name: str = ""
    # Lightning loggers, comma-separated: csv (always on), tensorboard, mlflow, wandb
    logger: str = "csv,tensorboard"
    # speed (issue 6)
    compile: bool = False  # torch.compile the training ELBO
    # optimiser steps per Lightning training_step (Keras's steps_per_execution): Lightning's
    # per-batch bookkeeping is paid once per this many steps; see docs/performance.md
    steps_per_call: int = 8
    # robustness (issue 7)
    nonfinite: str = "stop"  # NaN/inf loss or gradient: stop (keep the last good checkpoint) | skip
    skip_grad_norm: float = 0.0  # > 0: also skip updates whose gradient norm exceeds this (vdvae); 0: off
    # objective (issue 4)
    objective: str = "elbo"  # elbo | iwae: the training loss
    k: int = 1  # samples per example: the IW bound's K (iwae) or the ELBO average (elbo)
    beta: float = 1.0  # weight of the KL term in the elbo objective (beta-VAE)
    kl_warmup_steps: int = 0  # elbo objective: beta ramps linearly from 0 over these steps
    stochastic_layers: int = 1  # 1 | 2: the IWAE paper's 1- or 2-stochastic-layer model
    schedule: str = "constant"  # constant | iwae: learning-rate schedule and Adam settings

    def validate(self) -> Config:
        # Local imports: the registries import this module.
        from vae_cli.data.registry import DATASETS
        from vae_cli.model.likelihoods import LIKELIHOODS
        from vae_cli.model.networks import ARCHITECTURES

        _choice("likelihood", self.likelihood, LIKELIHOODS)
        _choice("dataset", self.dataset, DATASETS)
        _choice("arch", self.arch, ARCHITECTURES)
        _choice("binarize", self.binarize, BINARIZE)
        _choice("precision", str(self.precision), PRECISIONS)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("accelerator", self.accelerator, ACCELERATORS)
        for name in ("batch_size", "latent_dim", "hidden_dim", "num_nodes", "log_every_n_steps",
                     "mixture_components", "steps_per_call"):  # fmt: skip
            _at_least(name, getattr(self, name), 1)
        _at_least("epochs", self.epochs, 0)
        if self.devices == 0 or self.devices < -1:
            raise VaeError(f"devices must be a positive count or -1 (all), got {self.devices}")
        if self.max_steps != -1:
            _at_least("max_steps", self.max_steps, 1)
        if self.val_size is not None:
            _at_least("val_size", self.val_size, 1)
        if not self.lr > 0:
            raise VaeError(f"lr must be > 0, got {self.lr}")
        if not self.sigma > 0:
            raise VaeError(f"sigma must be > 0, got {self.sigma}")
        _choice("nonfinite", self.nonfinite, ("stop", "skip"))
        if not self.skip_grad_norm >= 0:
            raise VaeError(f"skip_grad_norm must be >= 0 (0: off), got {self.skip_grad_norm}")
        self._validate_objective()
        from vae_cli.train.loggers import check_loggers

        check_loggers(self.logger)
        if self.name and not SAFE_NAME.fullmatch(self.name):
            raise VaeError(f'name "{self.name}" must be letters, digits and . _ = , + - (a folder name)')
        return self

    def _validate_objective(self) -> None:
        from vae_cli.model.vae import STOCHASTIC_LAYERS
        from vae_cli.train.objectives import OBJECTIVES
        from vae_cli.train.schedules import SCHEDULES

        _choice("objective", self.objective, OBJECTIVES)
        _choice("schedule", self.schedule, SCHEDULES)
        _at_least("k", self.k, 1)
        _at_least("kl_warmup_steps", self.kl_warmup_steps, 0)
        if not self.beta >= 0:
            raise VaeError(f"beta must be >= 0, got {self.beta}")
        if self.stochastic_layers not in STOCHASTIC_LAYERS:
            raise unknown("stochastic_layers", str(self.stochastic_layers), map(str, STOCHASTIC_LAYERS))
        if self.stochastic_layers == 2 and self.arch != "mlp":
            raise VaeError("stochastic_layers 2 is the IWAE paper's MLP: use --arch mlp")
        if self.objective == "iwae" and (self.beta != 1.0 or self.kl_warmup_steps):
            raise VaeError(
                "beta and kl_warmup_steps apply to the elbo objective only: the IWAE bound has no "
                "separate KL term; drop them or use --objective elbo"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in fields(Config)}
SAFE_NAME = re.compile(r"[A-Za-z0-9_=,+-][A-Za-z0-9._=,+-]{0,199}")


def run_name(cfg: Config) -> str:
    """The run's folder under runs_dir: --name, else the experiment, else DATASET-LIKELIHOOD."""
    if cfg.name:
        return cfg.name
    return cfg.experiment if cfg.experiment != "default" else f"{cfg.dataset}-{cfg.likelihood}"


def _choice(name: str, value: str, choices: Any) -> None:
    if value not in choices:
        raise unknown(name, value, choices)


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise VaeError(f"{name} must be >= {low}, got {value}")


def _coerce(key: str, value: Any, source: str) -> Any:
    """Check one value against the field's declared type; YAML gives ints for floats etc."""
    if key not in FIELDS:
        raise VaeError(
            f'unknown key "{key}" in {source}{did_you_mean(key, FIELDS)}; valid keys: {", ".join(FIELDS)}'
        )
    default = FIELDS[key].default
    if value is None:
        if key == "val_size":
            return None
        raise VaeError(f'"{key}" in {source} must not be empty')
    kind = type(default) if default is not None else int
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # precision: 32 -> "32"
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise VaeError(f'"{key}" in {source} must be {kind.__name__}, got {type(value).__name__} {value!r}')
    return value


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise VaeError(f"config file {path} does not exist") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise VaeError(f"{path} is not valid YAML{at}: fix the syntax and retry") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise VaeError(f"{path} must hold a mapping of key: value, got {type(data).__name__}")
    return data


def experiments_file() -> Path:
    """experiments.yaml from the working directory if present, else the project's own."""
    env = os.environ.get("VAE_EXPERIMENTS")
    if env:
        return Path(env)
    local = Path("experiments.yaml")
    if local.exists():
        return local
    return Path(__file__).resolve().parent.parent / "experiments.yaml"


@dataclass(frozen=True)
class Experiments:
    defaults: dict[str, Any] = field(default_factory=dict)
    named: dict[str, dict[str, Any]] = field(default_factory=dict)
    # an experiment's `sweep:` block (setting -> list of values, and `seeds:`), for `vae sweep`
    sweeps: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None = None) -> Experiments:
        path = path or experiments_file()
        if not path.exists():
            return cls()
        data = read_yaml(path)
        extra = set(data) - {"defaults", "experiments"}
        if extra:
            raise VaeError(
                f"{path}: unknown top-level key(s) {sorted(extra)}; "
                "expected only 'defaults' and 'experiments'"
            )
        defaults = data.get("defaults") or {}
        named = data.get("experiments") or {}
        for key, value in defaults.items():
            _coerce(key, value, f"{path} defaults")
        named = {k: dict(v or {}) for k, v in named.items()}
        sweeps = {k: body.pop("sweep") or {} for k, body in named.items() if "sweep" in body}
        for name, body in named.items():
            for key, value in body.items():
                _coerce(key, value, f"{path} experiment '{name}'")
        return cls(defaults=defaults, named=named, sweeps=sweeps)


def resolve(
    experiment: str | None = None,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    experiments: Experiments | None = None,
) -> Config:
    """Layer the sources in order and validate the result."""
    experiments = experiments or Experiments.load()
    values: dict[str, Any] = {}
    for key, value in experiments.defaults.items():
        values[key] = _coerce(key, value, "experiments.yaml defaults")
    if experiment is not None:
        if experiment not in experiments.named:
            raise unknown("experiment", experiment, experiments.named)
        for key, value in experiments.named[experiment].items():
            values[key] = _coerce(key, value, f"experiment '{experiment}'")
        values["experiment"] = experiment
    if config_file is not None:
        for key, value in read_yaml(Path(config_file)).items():
            values[key] = _coerce(key, value, str(config_file))
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(key, value, "command-line flags")
    return Config(**values).validate()


def from_dict(data: dict[str, Any], source: str = "checkpoint") -> Config:
    """Rebuild a Config saved by an earlier run; keys this version no longer knows are errors."""
    return Config(**{k: _coerce(k, v, source) for k, v in data.items()})
