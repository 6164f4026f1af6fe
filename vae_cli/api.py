"""The Python API: load a trained run in a notebook, or train one.

    import vae_cli
    model = vae_cli.load("runs/quickstart/version_0")   # a run directory or a .ckpt
    q = model.encode(x)          # q(z|x), a torch.distributions object
    p = model.decode(q.mean)     # p(x|z)
    model.elbo(x), model.iw_bound(x, k=100)              # per example, nats

Loading goes through the CLI's own loader (training/load.py: weights only, map_location cpu),
so a run trained on a GPU loads on a CPU; `.to("cuda")` moves it back. `vae_cli.train(config)`
runs exactly the training of `vae train`. (The function is `fit`, not `train`: `vae_cli.training`
is the training sub-package, and a package attribute cannot be both.)
See docs/python.md.
"""

from __future__ import annotations

import functools
import operator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from vae_cli import runs
from vae_cli.data.checks import check_support
from vae_cli.data.support import to_image
from vae_cli.errors import VaeError
from vae_cli.model import estimators
from vae_cli.model.likelihoods import Support
from vae_cli.model.vae import diagonal_gaussian
from vae_cli.settings import Config, RunSettings
from vae_cli.training.module import VAEModule
from vae_cli.training.sample import check_temperature

if TYPE_CHECKING:
    from vae_cli.data.datamodule import VAEDataModule


class Model:
    """A trained VAE: its distributions, sampling, reconstruction and bounds.

    Tensors x are on the likelihood's support (what `data` holds: {0, 1} for bernoulli,
    dequantised [0, 1] for densities, integers 0..255 for the discrete families), shaped
    (B, C, H, W). For a two-stochastic-layer run, encode/decode are the layer next to x
    (q(z1|x) and p(x|z1)), while `sample` draws through both layers from the top prior.
    """

    def __init__(self, module: VAEModule, checkpoint: Path, run_dir: Path, data_dir: str | None = None):
        self.module = module.eval()
        self.checkpoint = checkpoint
        self.run_dir = run_dir
        self._data_dir = data_dir
        self._data: Tensor | None = None

    def __repr__(self) -> str:
        c = self.config
        return (f"Model({self.run_dir}, dataset={c.dataset}, likelihood={c.likelihood}, "
                f"latent_dim={c.latent_dim}, device={self.device})")  # fmt: skip

    @property
    def config(self) -> Config:
        """The run's resolved config (what `vae train` saved in config.yaml)."""
        return self.module.cfg

    @property
    def data_dir(self) -> str:
        """Where `data` is read from: load()'s data_dir, else the run's own."""
        return self._data_dir or self.config.data_dir

    @functools.cached_property
    def step(self) -> int:
        """The optimiser step at which the checkpoint was saved."""
        from vae_cli.training.checkpointing import checkpoint_step

        return checkpoint_step(self.checkpoint)

    @property
    def support(self) -> Support:
        return self.module.vae.likelihood.support

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def latent_dim(self) -> int:
        """Dimensions of z as `encode` returns it (z1 = 2 * latent_dim for two layers)."""
        return self.module.vae.layer_dims[0]

    @functools.cached_property
    def datamodule(self) -> VAEDataModule:
        """The run's data, read as `vae eval` reads it (training/load.py), from `data_dir`."""
        from vae_cli.training.load import datamodule_for

        return datamodule_for(self.module, {"data_dir": self.data_dir})[1]

    @property
    def data(self) -> Tensor:
        """The run's test split on the likelihood's support (fixed-seed binarisation or
        dequantisation, as `vae eval` scores it), on the model's device. Loaded once."""
        if self._data is None:
            dm = self.datamodule
            self._data = dm.examples("test", len(dm.splits["test"]))
        return self._data.to(self.device)

    @functools.cached_property
    def labels(self) -> Tensor | None:
        """Class index per example of `data` (figures only), or None when the data has none:
        see data/labels.py."""
        from vae_cli.data.labels import split_labels

        return split_labels(self.datamodule, "test")

    def to(self, device: str | torch.device) -> Model:
        """Move the networks (and the cached test split) to device; returns self."""
        self.module.to(device)
        return self

    def check_input(self, x: Any) -> Tensor:
        """x as the model reads it: a tensor or numpy array of shape (N, C, H, W), or one
        (C, H, W) example, with values on the likelihood's support (data/checks.py, the rule
        the data module applies), as float32 on the model's device. Anything else is a
        VaeError saying what was expected, not a torch error deep inside a network."""
        shape = tuple(self.module.shape)
        want = f"(N, {', '.join(map(str, shape))})"
        x = real_tensor(x, "x", want)
        if tuple(x.shape) == shape:  # one example without the batch dimension
            x = x.unsqueeze(0)
        if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != shape or len(x) == 0:
            raise VaeError(
                f"x has shape {tuple(x.shape)}, expected {want} with N >= 1 "
                f"(or one example of shape {shape}): pass images as the run's data holds them"
            )
        x = x.to(self.device, torch.float32)
        c = self.config
        check_support(x, self.support, c.likelihood, "x", c.binarize)
        return x

    def encode(self, x: Tensor) -> Distribution:
        """q(z|x): a diagonal Gaussian, batch shape (B,), event shape (latent_dim,)."""
        vae = self.module.vae
        return diagonal_gaussian(vae.encoder(vae.likelihood.encoder_input(self.check_input(x))))

    def decode(self, z: Tensor) -> Distribution:
        """p(x|z) for z of shape (B, latent_dim): its .mean is E[x|z], .sample() draws x."""
        return self.module.vae.conditional(self.check_latent(z))

    def check_latent(self, z: Any) -> Tensor:
        """z as the decoder reads it: finite, real, shape (N, latent_dim) or one (latent_dim,)
        point, as float32 on the model's device; anything else a VaeError saying so."""
        d = self.module.vae.latent_dim
        z = real_tensor(z, "z", f"(N, {d})")
        if z.dim() == 1 and len(z) == d:
            z = z.unsqueeze(0)
        if z.dim() != 2 or z.shape[1] != d or len(z) == 0:
            raise VaeError(f"z has shape {tuple(z.shape)}, expected (N, {d}) with N >= 1 (latent_dim {d})")
        z = z.to(self.device, torch.float32)
        if not bool(torch.isfinite(z).all()):
            raise VaeError("z holds NaN or infinite values: pass finite latent points")
        return z

    @torch.no_grad()
    def sample(self, n: int, stochastic: bool = False, temperature: float = 1.0) -> Tensor:
        """n images from z ~ N(0, T^2 I): E[x|z], or x ~ p(x|z) when stochastic."""
        n = check_count("n", n, "images to draw")
        check_temperature(temperature, "temperature")
        z = torch.randn(n, self.module.vae.latent_dim, device=self.device) * temperature
        dist = self.module.vae.decode_prior(z)
        return dist.sample() if stochastic else dist.mean

    @torch.no_grad()
    def reconstruct(self, x: Tensor, stochastic: bool = False) -> Tensor:
        """E[x|z] (or x' ~ p(x|z)) at z = E_q[z|x], the posterior mean."""
        dist = self.decode(self.encode(x).mean)  # encode checks x
        return dist.sample() if stochastic else dist.mean

    @torch.no_grad()
    def elbo(self, x: Tensor) -> Tensor:
        """ELBO per example in nats (analytic KL where the model has one; one z sample)."""
        return estimators.elbo(self.module.vae, self.check_input(x))["elbo"]

    @torch.no_grad()
    def iw_bound(self, x: Tensor, k: int, chunk: int | None = 100) -> Tensor:
        """The importance-weighted bound log (1/k) sum_k p(x, z_k) / q(z_k|x) per example,
        in nats (Burda et al. 2016); >= elbo(x) in expectation, tighter as k grows."""
        k = check_count("k", k, "importance samples")
        if chunk is not None:
            chunk = check_count("chunk", chunk, "importance samples per pass")
        return estimators.iw_bound(self.module.vae, self.check_input(x), k, chunk)

    def to_image(self, x: Tensor) -> Tensor:
        """Values on the likelihood's support -> [0, 1] images (for torchvision grids)."""
        return to_image(x.float(), self.support).cpu()


def real_tensor(value: Any, name: str, want: str) -> Tensor:
    """A real-valued torch tensor (numpy arrays of numbers converted, shared memory), or a
    VaeError naming what `name` is and that an array of shape `want` was expected."""
    import numpy as np

    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        value = torch.from_numpy(value)
    if not isinstance(value, Tensor) or value.dtype == torch.bool or value.is_complex():
        kind = f"a {type(value).__name__}" if not isinstance(value, Tensor) else f"a {value.dtype} tensor"
        raise VaeError(f"{name} is {kind}: pass a real-valued torch tensor or numpy array of shape {want}")
    return value


def check_count(name: str, value: Any, what: str) -> int:
    """A whole number >= 1 (not a bool, a float or a negative number), as an int; numpy's and
    torch's integer scalars count (operator.index accepts exactly the integer types)."""
    try:
        count = operator.index(value) if not isinstance(value, bool) else None
    except TypeError:
        count = None
    if count is None or count < 1:
        raise VaeError(f"{name} must be a whole number >= 1 ({what}), got {value!r}")
    return count


def load(path: str | Path, data_dir: str | None = None) -> Model:
    """A run directory (its best, else last, checkpoint) or a .ckpt file -> Model, on CPU.

    data_dir: where `Model.data` finds the dataset, if not where the run was trained.
    """
    from vae_cli.training.load import load_module

    ckpt, run_dir = runs.resolve_checkpoint(Path(path), Path("runs"))
    return Model(load_module(ckpt, run_dir), ckpt, run_dir, data_dir)


def train(
    config: Config | dict[str, Any], experiment: str | None = None, run: RunSettings | None = None
) -> Path:
    """Train as `vae train` does and return the run directory.

    config: a Config, or a dict of settings (any `vae train` flag, underscores for dashes,
    run settings such as accelerator or runs_dir included) layered over experiments.yaml's
    defaults and, if given, the named experiment.
    run: where and how to train (accelerator, devices, precision, runs_dir, ...); it wins
    over run settings in a dict; default: the declared defaults.
    """
    from vae_cli.settings import resolve_all
    from vae_cli.training.fit import fit as fit_config

    if not isinstance(config, (Config, dict)):  # None would silently train the default model
        raise TypeError(
            f"vae_cli.train(config): config must be a Config or a dict of settings, "
            f"not {type(config).__name__}; pass {{}} for experiments.yaml's defaults"
        )

    if isinstance(config, Config):
        cfg, hardware = config.validate(), run or RunSettings()
    elif isinstance(config, dict):
        cfg, given = resolve_all(experiment, None, config, source="the settings given to vae_cli.train")
        hardware = run or given
    run_dir = fit_config(cfg, run=hardware.validate())
    assert run_dir is not None  # None only for smoke runs, which train(config) never asks for
    return run_dir
