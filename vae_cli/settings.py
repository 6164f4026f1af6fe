"""Every setting, declared once: name, type, default, range or choices, help text and group.

Two frozen dataclasses hold them:
- `Config`: what is trained (data, model, likelihood, objective, optimisation). It is saved in
  config.yaml and inside every checkpoint (the module's hyperparameters).
- `RunSettings`: where and how a process runs (hardware, output). Never stored in a checkpoint:
  every command takes them from its own flags or their defaults, never from an earlier run.

A setting is one line: `name: type = setting(default, help, GROUP, min=/max=/choices=...)`.
From these declarations come the Typer options (vae_cli/options.py), the YAML checks
(experiments.yaml, --config files, saved configs), the range checks (one generic `check`)
and docs/settings.md (`markdown_table`). This module imports neither torch nor any registry:
`vae --help` lists the choices from here, and tests/test_settings.py checks that each
registry's names equal the declared choices.

Resolution order (later wins): declared defaults < `defaults:` in experiments.yaml < the named
experiment < a --config YAML file < command-line flags. Flat (nanoGPT-style): every key is
also a flag, and a YAML file is one level deep.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from vae_cli import safeyaml
from vae_cli.errors import VaeError, did_you_mean, one_line, unknown
from vae_cli.runs import check_name

# Help panels of `vae train --help`, in this order; also the sections of docs/settings.md.
DATA, MODEL, LIKELIHOOD, OBJECTIVE, OPTIMISATION, HARDWARE, OUTPUT = (
    "Data", "Model", "Likelihood", "Objective", "Optimisation", "Hardware", "Output",
)  # fmt: skip
GROUPS = (DATA, MODEL, LIKELIHOOD, OBJECTIVE, OPTIMISATION, HARDWARE, OUTPUT)

# Registry names, declared statically so that `--help` lists them without importing torch;
# tests/test_settings.py asserts each equals its registry's keys.
LIKELIHOODS = (
    "bernoulli", "continuous-bernoulli", "gaussian", "gaussian-learned", "gaussian-optimal",
    "gaussian-pixel", "laplace", "laplace-learned", "categorical", "logistic-mixture",
)  # fmt: skip
DATASETS = ("digits", "mnist", "fashion-mnist", "binarized-mnist", "cifar10", "shapes32", "celeba")
ARCHITECTURES = ("mlp", "conv", "resnet")
OBJECTIVES = ("elbo", "iwae")
SCHEDULES = ("constant", "iwae")
STOCHASTIC_LAYERS = (1, 2)
# Lightning's names (not a registry of ours).
# Not the "-true" half/64-bit precisions: the inputs reach the network as float32, so those
# fail at the first layer.
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "fsdp", "single_device")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
BINARIZE = ("dynamic", "static", "none")
# --logger: Lightning's loggers (vae_cli/training/loggers.py builds them; csv is always on).
LOGGERS = ("csv", "tensorboard", "mlflow", "wandb")


@dataclass(frozen=True)
class Spec:
    """What a setting accepts besides its type, and how it is shown."""

    help: str
    group: str
    choices: tuple[Any, ...] = ()
    min: float | None = None
    max: float | None = None
    above: bool = False  # min is exclusive (> min): lr, sigma
    special: tuple[Any, ...] = ()  # values allowed outside the range, e.g. -1 for "no limit"
    hint: str = ""  # what the special values mean, shown with the range: "-1: all"
    resumable: bool = False  # may change when continuing a run (`vae train --resume`)
    metavar: str = ""  # the placeholder in --help, e.g. DIR
    # The choices are the built-in ones; more may be registered at run time (datasets), so the
    # registry checks the name where it is looked up, not this module.
    open: bool = False


def setting(default: Any, help: str, group: str, **spec: Any) -> Any:
    """A dataclass field carrying its Spec: the whole declaration of one setting."""
    return field(default=default, metadata={"spec": Spec(help, group, **spec)})


@dataclass(frozen=True)
class Config:
    """What is trained; saved in config.yaml and in every checkpoint."""

    experiment: str = setting("default", "Name of the run: runs go to RUNS_DIR/EXPERIMENT/version_N.", OUTPUT)
    description: str = setting("", "Free text describing the run (experiments.yaml).", OUTPUT, metavar="TEXT")
    # data
    dataset: str = setting("digits", "Dataset to train on.", DATA, choices=DATASETS, open=True)
    data_dir: str = setting("./data", "Dataset root folder.", DATA, metavar="DIR")
    binarize: str = setting("dynamic", "bernoulli targets: resample each epoch, once, or not.", DATA,
                            choices=BINARIZE)  # fmt: skip
    val_size: int | None = setting(None, "Validation examples (empty: the dataset's own).", DATA, min=1)
    batch_size: int = setting(100, "Examples per batch (per device).", DATA, min=1)
    # your own data (docs/data.md): --dataset may also be an image folder or a .npy/.npz file
    image_size: int = setting(0, "Folders: resize the shorter side to N, centre-crop NxN.", DATA, min=4,
                              special=(0,), hint="0: infer")  # fmt: skip
    channels: int = setting(0, "Folders: 1 (grey) or 3 (colour) channels; 0: infer.", DATA,
                            choices=(0, 1, 3))  # fmt: skip
    val_data: str = setting("", "A separate folder/array for the val split (empty: held out).", DATA,
                            metavar="PATH")  # fmt: skip
    test_data: str = setting("", "A separate folder/array for the test split (empty: held out).", DATA,
                             metavar="PATH")  # fmt: skip
    val_fraction: float = setting(0.1, "Share held out for val, by hashing each path/index.", DATA,
                                  min=0, max=0.99)  # fmt: skip
    test_fraction: float = setting(0.1, "Share held out for test, by the same rule.", DATA, min=0, max=0.99)
    split_seed: int = setting(0, "Seed of the hash split of your own data.", DATA, min=0)
    stream: str = setting("auto", "Folders: stream from disk with decoding workers (auto: by size).", DATA,
                          choices=("auto", "yes", "no"))  # fmt: skip
    num_workers: int = setting(2, "Image-decoding worker processes.", DATA, min=0)
    skip_bad_images: bool = setting(False, "Leave out unreadable image files (and count them).", DATA)
    # model
    arch: str = setting("mlp", "Encoder/decoder network.", MODEL, choices=ARCHITECTURES)
    latent_dim: int = setting(50, "Latent dimensions.", MODEL, min=1)
    hidden_dim: int = setting(200, "Hidden units per layer.", MODEL, min=1)
    stochastic_layers: int = setting(1, "1 or 2: the IWAE paper's 1- or 2-stochastic-layer model.", MODEL,
                                     choices=STOCHASTIC_LAYERS)  # fmt: skip
    # likelihood
    likelihood: str = setting("bernoulli", "Decoder likelihood p(x|z); see docs/likelihoods.md.", LIKELIHOOD,
                              choices=LIKELIHOODS)  # fmt: skip
    # see docs/likelihoods.md for why not 1.0
    sigma: float = setting(0.1, "Fixed sigma of gaussian / scale of laplace / learned-scale init.",
                           LIKELIHOOD, min=0, above=True)  # fmt: skip
    mixture_components: int = setting(5, "Logistics per value in logistic-mixture.", LIKELIHOOD, min=1)
    # objective
    objective: str = setting("elbo", "Training loss.", OBJECTIVE, choices=OBJECTIVES)
    k: int = setting(1, "Samples per example: the iwae bound's K, or the elbo average.", OBJECTIVE, min=1)
    beta: float = setting(1.0, "KL weight of the elbo objective (beta-VAE).", OBJECTIVE, min=0)
    kl_warmup_steps: int = setting(0, "elbo objective: ramp beta linearly from 0 over N steps.", OBJECTIVE,
                                   min=0)  # fmt: skip
    # optimisation
    epochs: int = setting(10, "Training epochs.", OPTIMISATION, min=1, resumable=True)
    max_steps: int = setting(-1, "Stop after this many optimiser steps.", OPTIMISATION, min=1,
                             special=(-1,), hint="-1: no limit", resumable=True)  # fmt: skip
    lr: float = setting(1e-3, "Adam learning rate.", OPTIMISATION, min=0, above=True)
    schedule: str = setting("constant", "constant, or iwae: Adam eps 1e-4, 3^i epochs at lr*10^(-i/7).",
                            OPTIMISATION, choices=SCHEDULES)  # fmt: skip
    seed: int = setting(0, "Random seed.", OPTIMISATION, min=0)
    # Keras's steps_per_execution: Lightning's per-batch bookkeeping is paid once per this many
    # steps; see docs/performance.md
    steps_per_call: int = setting(8, "Optimiser steps per Lightning batch.", OPTIMISATION, min=1)
    compile: bool = setting(False, "torch.compile the training objective.", OPTIMISATION)
    nonfinite: str = setting("stop", "On a NaN/inf loss or gradient: stop, or skip the update.", OPTIMISATION,
                             choices=("stop", "skip"))  # fmt: skip
    skip_grad_norm: float = setting(0.0, "Also skip updates with a larger gradient norm (vdvae).",
                                    OPTIMISATION, min=0, hint="0: off")  # fmt: skip
    # with the run, not the process: a resumed run logs the same rows (tests/training/test_checkpointing.py)
    log_every_n_steps: int = setting(50, "Log training means every N optimiser steps.", OUTPUT, min=1)

    def validate(self) -> Config:
        check_all(self)
        check_name("experiment", self.experiment)  # a folder under --runs-dir, never a path
        if not self.val_fraction + self.test_fraction < 1:
            raise VaeError("val_fraction + test_fraction must be < 1: nothing would be left to train on")
        if self.stochastic_layers == 2 and self.arch != "mlp":
            raise VaeError("stochastic_layers 2 is the IWAE paper's MLP: use --arch mlp")
        if self.objective == "iwae" and (self.beta != 1.0 or self.kl_warmup_steps):
            raise VaeError(
                "beta and kl_warmup_steps apply to the elbo objective only: the IWAE bound has no "
                "separate KL term; drop them or use --objective elbo"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunSettings:
    """Where and how this process runs; never saved in a checkpoint, never taken from a run."""

    accelerator: str = setting("auto", "Lightning accelerator.", HARDWARE, choices=ACCELERATORS)
    devices: int = setting(1, "Devices per node.", HARDWARE, min=1, special=(-1,), hint="-1: all")
    strategy: str = setting("auto", "Lightning strategy.", HARDWARE, choices=STRATEGIES)
    num_nodes: int = setting(1, "Nodes (multi-node under torchrun or SLURM).", HARDWARE, min=1)
    precision: str = setting("32-true", "Lightning precision.", HARDWARE, choices=PRECISIONS)
    time_limit: float = setting(0.0, "Minutes this process may train; then it validates, saves a "
                                "resumable checkpoint and stops (per process: a resumed run gets the "
                                "whole limit again).", OPTIMISATION, min=0, hint="0: no limit")  # fmt: skip
    runs_dir: str = setting("runs", "Where runs are written.", OUTPUT, metavar="DIR")
    # I/O, not the model: a run keeps its folder and may switch loggers when resumed.
    name: str = setting("", "The run's folder under RUNS_DIR (empty: the experiment, or DATASET-LIKELIHOOD).",
                        OUTPUT, metavar="NAME")  # fmt: skip
    logger: str = setting("csv,tensorboard", "Lightning loggers, comma-separated: csv (always on), "
                          "tensorboard, mlflow, wandb.", OUTPUT, metavar="LIST")  # fmt: skip

    def validate(self) -> RunSettings:
        check_all(self)
        if self.name:
            check_name("name", self.name)  # a folder under --runs-dir, never a path
        for logger in (t.strip() for t in self.logger.split(",")):
            if logger and logger not in LOGGERS:
                raise unknown("logger", logger, LOGGERS)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Declared:
    """One setting as declared: where it lives, its type and its Spec."""

    name: str
    owner: type
    type: type  # int, float, str or bool
    optional: bool  # None is a value (val_size: the dataset's own)
    default: Any
    spec: Spec


def _declared(cls: type) -> dict[str, Declared]:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields(cls):
        args = typing.get_args(hints[f.name])
        kind = next(a for a in args if a is not type(None)) if args else hints[f.name]
        out[f.name] = Declared(f.name, cls, kind, type(None) in args, f.default, f.metadata["spec"])
    return out


MODEL_SETTINGS = _declared(Config)
RUN_SETTINGS = _declared(RunSettings)
SETTINGS: dict[str, Declared] = {**MODEL_SETTINGS, **RUN_SETTINGS}
FIELDS = SETTINGS  # the old name (config.FIELDS)


def describe_range(spec: Spec) -> str:
    """'>= 1', '> 0', '1..2' (empty when unbounded)."""
    low = None if spec.min is None else f"{'>' if spec.above else '>='} {spec.min:g}"
    high = None if spec.max is None else f"<= {spec.max:g}"
    return " and ".join(p for p in (low, high) if p)


def check(name: str, value: Any) -> None:
    """The one range check: choices, min/max, special values; floats must be finite."""
    d = SETTINGS[name]
    if value is None:
        if not d.optional:
            raise VaeError(f"{name} must not be empty")
        return
    if value in d.spec.special:
        return
    if d.type is float and not math.isfinite(value):
        raise VaeError(f"{name} must be a finite number, got {value}")
    if d.type is int and abs(value) > MAX_INT:
        raise VaeError(f"{name} is too large: {one_line(str(value), 40)} (at most {MAX_INT})")
    if d.spec.choices and not d.spec.open and value not in d.spec.choices:
        raise unknown(name, str(value), map(str, d.spec.choices))
    low, high = d.spec.min, d.spec.max
    too_low = low is not None and (value <= low if d.spec.above else value < low)
    if too_low or (high is not None and value > high):
        hint = f" ({d.spec.hint})" if d.spec.hint else ""
        raise VaeError(f"{name} must be {describe_range(d.spec)}{hint}, got {value}")


def check_all(obj: Any) -> None:
    for f in fields(obj):
        check(f.name, getattr(obj, f.name))


# Integers beyond this are no count, size or seed anyone means, and overflow torch's int64.
MAX_INT = 2**31 - 1


# A number in exponent notation without a dot (1e-3, 5E+2), which PyYAML leaves a string.
_EXPONENT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def coerce(key: str, value: Any, source: str) -> Any:
    """Check one value against the setting's declared type; YAML gives ints for floats etc."""
    if not isinstance(key, str):
        raise VaeError(f"a key in {source} is not a name: {type(key).__name__} {one_line(repr(key), 40)}")
    if key not in SETTINGS:
        raise VaeError(
            f'unknown key "{key}" in {source}{did_you_mean(key, SETTINGS)}; valid keys: {", ".join(SETTINGS)}'
        )
    d = SETTINGS[key]
    if value is None:
        if d.optional:
            return None
        raise VaeError(f'"{key}" in {source} must not be empty')
    kind = d.type
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is float and is_number:
        return float(value)
    if kind is float and isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; the flag takes it
    if kind is str and is_number:
        return str(value)  # precision: 32 -> "32"
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        shown = one_line(repr(value), 80)
        raise VaeError(f'"{key}" in {source} must be {kind.__name__}, got {type(value).__name__} {shown}')
    if kind is str and ("\0" in value or len(value) > 4096):
        raise VaeError(f'"{key}" in {source} must be a short text without NUL characters')
    return value


RUN_SECTION = "run"  # config.yaml: the run settings under this key, apart from the model's


def flatten(data: dict[str, Any]) -> dict[str, Any]:
    """A saved config.yaml (model keys + a `run:` section) as one flat mapping."""
    if isinstance(data.get(RUN_SECTION), dict):
        data = {**{k: v for k, v in data.items() if k != RUN_SECTION}, **data[RUN_SECTION]}
    return data


def split(values: dict[str, Any]) -> tuple[Config, RunSettings]:
    """Validated (Config, RunSettings) from one flat mapping of already coerced values."""
    model = {k: v for k, v in values.items() if k in MODEL_SETTINGS}
    run = {k: v for k, v in values.items() if k in RUN_SETTINGS}
    return Config(**model).validate(), RunSettings(**run).validate()


def run_name(cfg: Config, run: RunSettings) -> str:
    """The run's folder under runs_dir: --name, else the experiment, else DATASET-LIKELIHOOD
    (a dataset given as a PATH contributes its last component: a name, never a path)."""
    if run.name:
        return run.name
    if cfg.experiment != "default":
        return cfg.experiment
    dataset = Path(cfg.dataset).name.lstrip(".") or "data"
    return f"{dataset}-{cfg.likelihood}"


def record(cfg: Config, run: RunSettings) -> dict[str, Any]:
    """What config.yaml holds: the model's settings, then the run's in their own section."""
    return {**cfg.to_dict(), RUN_SECTION: run.to_dict()}


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from a file, read by safeyaml: no duplicate or non-string keys, no
    aliases (no alias bombs), bounded size and depth; every failure one line."""
    data = safeyaml.load(Path(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise VaeError(f"{path} must hold a mapping of key: value, got {type(data).__name__}")
    return data


PACKAGED_EXPERIMENTS = Path(__file__).resolve().parent / "experiments.yaml"


def experiments_files() -> list[Path]:
    """The experiments files in force, lowest first: $VAE_EXPERIMENTS alone if set; else the
    packaged file, then ./experiments.yaml if present (see `Experiments.merge`)."""
    env = os.environ.get("VAE_EXPERIMENTS")
    if env:
        if not Path(env).is_file():
            problem = (
                "is a folder"
                if Path(env).is_dir()
                else "is not a file"
                if Path(env).exists()
                else "no such file"
            )
            raise VaeError(
                f"VAE_EXPERIMENTS={env}: {problem}; point it at an experiments YAML file or unset it"
            )
        return [Path(env)]
    local = Path("experiments.yaml")
    packaged = [PACKAGED_EXPERIMENTS] if PACKAGED_EXPERIMENTS.exists() else []
    if local.exists() and local.resolve() != PACKAGED_EXPERIMENTS:
        return [*packaged, local]
    return packaged


@dataclass(frozen=True)
class Experiments:
    defaults: dict[str, Any] = field(default_factory=dict)
    named: dict[str, dict[str, Any]] = field(default_factory=dict)
    # an experiment's `sweep:` block (setting -> list of values, and `seeds:`), for `vae sweep`
    sweeps: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None = None) -> Experiments:
        """One file (`path`), or all files in force merged (experiments_files)."""
        if path is None:
            merged = cls()
            for p in experiments_files():
                merged = merged.merge(cls.load(p))
            return merged
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
        if not isinstance(defaults, dict):
            raise VaeError(
                f"{path}: 'defaults' must be a mapping of key: value, got {type(defaults).__name__}"
            )
        if not isinstance(named, dict):
            raise VaeError(
                f"{path}: 'experiments' must be a mapping of name: {{key: value}}, got {type(named).__name__}"
            )
        for key, value in defaults.items():
            coerce(key, value, f"{path} defaults")
        for name, body in named.items():
            check_name(f"experiment name in {path}:", str(name))
            if body is not None and not isinstance(body, dict):
                raise VaeError(
                    f"{path}: experiment '{name}' must be a mapping of key: value, got {type(body).__name__}"
                )
        named = {k: dict(v or {}) for k, v in named.items()}
        sweeps = {k: body.pop("sweep") or {} for k, body in named.items() if "sweep" in body}
        for name, body in named.items():
            for key, value in body.items():
                coerce(key, value, f"{path} experiment '{name}'")
        return cls(defaults=defaults, named=named, sweeps=sweeps)

    def merge(self, over: Experiments) -> Experiments:
        """`over` on top: its defaults key by key, its experiments whole, by name (an
        experiment of the same name replaces this one's; others are kept)."""
        # an experiment replaced by name takes its sweep: block (or none) with it
        sweeps = {k: v for k, v in self.sweeps.items() if k not in over.named}
        return Experiments(
            {**self.defaults, **over.defaults}, {**self.named, **over.named}, {**sweeps, **over.sweeps}
        )


def layered(
    experiment: str | None = None,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    experiments: Experiments | None = None,
    source: str = "command-line flags",
) -> dict[str, Any]:
    """Every source in order (later wins), as one flat mapping of coerced values; `source`
    names the overrides in messages."""
    experiments = experiments if experiments is not None else Experiments.load()
    values: dict[str, Any] = {}
    for key, value in experiments.defaults.items():
        values[key] = coerce(key, value, "experiments.yaml defaults")
    if experiment is not None:
        if experiment not in experiments.named:
            raise unknown("experiment", experiment, experiments.named)
        for key, value in experiments.named[experiment].items():
            values[key] = coerce(key, value, f"experiment '{experiment}'")
        values["experiment"] = experiment
    if config_file is not None:
        for key, value in flatten(read_yaml(Path(config_file))).items():
            values[key] = coerce(key, value, str(config_file))
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = coerce(key, value, source)
    return values


def resolve_all(
    experiment: str | None = None,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    experiments: Experiments | None = None,
    source: str = "command-line flags",
) -> tuple[Config, RunSettings]:
    """Layer the sources in order and validate: (what is trained, how this process runs)."""
    return split(layered(experiment, config_file, overrides, experiments, source))


def resolve(
    experiment: str | None = None,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    experiments: Experiments | None = None,
) -> Config:
    """The model's Config alone (run settings in the sources are checked, then dropped)."""
    return resolve_all(experiment, config_file, overrides, experiments)[0]


def run_settings(overrides: dict[str, Any] | None = None, source: str = "command-line flags") -> RunSettings:
    """RunSettings from the declared defaults and these values: never from an earlier run."""
    values = {k: coerce(k, v, source) for k, v in (overrides or {}).items() if v is not None}
    unknown_keys = set(values) - set(RUN_SETTINGS)
    if unknown_keys:
        raise VaeError(f"not run settings: {', '.join(sorted(unknown_keys))}")
    return RunSettings(**values).validate()


def from_dict(data: dict[str, Any], source: str = "checkpoint") -> Config:
    """Rebuild a Config saved by an earlier run. Run settings saved by older versions (inside
    checkpoints, flat in config.yaml) are ignored: they never come from a run. Keys this
    version does not know at all are errors."""
    data = flatten(data)
    return Config(**{k: coerce(k, v, source) for k, v in data.items() if k not in RUN_SETTINGS})


def markdown_table() -> str:
    """docs/settings.md, generated from the declarations (tests/test_settings.py keeps it fresh)."""
    lines = [
        "# Settings",
        "",
        "Generated from `vae_cli/settings.py` by `python scripts/settings_doc.py`; do not edit by hand.",
        "Every setting is a `vae train --flag` (`_` becomes `-`) and a key of experiments.yaml and",
        "`--config` files. *Model* settings are saved in the run's config.yaml and checkpoints;",
        "*run* settings (hardware, output) are recorded in config.yaml under `run:` for reference but",
        "always come from the command line or their defaults, never from an earlier run.",
    ]
    for group in GROUPS:
        rows = [d for d in SETTINGS.values() if d.spec.group == group]
        if not rows:
            continue
        lines += ["", f"## {group}", "", "| setting | kind | type | default | allowed | meaning |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for d in rows:
            lines.append(
                f"| `{d.name}` | {'run' if d.owner is RunSettings else 'model'} | {d.type.__name__}"
                f"{' or empty' if d.optional else ''} | `{d.default}` | {allowed(d)} | {d.spec.help} |"
            )
    return "\n".join(lines) + "\n"


def allowed(d: Declared) -> str:
    """The values a setting accepts, in words (docs table and --help)."""
    if d.spec.choices:
        names = ", ".join(str(c) for c in d.spec.choices)
        return f"{names} (or one registered at run time)" if d.spec.open else names
    text = describe_range(d.spec)
    if d.spec.hint:
        text = f"{text} ({d.spec.hint})" if text else d.spec.hint
    return text or "any"
