"""Drawing from a trained model: z ~ p(z), then E[x|z] or x ~ p(x|z)."""

from __future__ import annotations

import torch
from torch import Tensor

from vae_cli.data.support import to_image
from vae_cli.errors import VaeError
from vae_cli.settings import RunSettings
from vae_cli.training.module import VAEModule

# Panel titles of the two ways to show a prior draw, keyed by `stochastic`.
SAMPLE_TITLES = {False: "decoder means E[x|z], z ~ p(z)", True: "samples x ~ p(x|z), z ~ p(z)"}


def sample_title(stochastic: bool, temperature: float = 1.0) -> str:
    """SAMPLE_TITLES, naming the prior actually drawn from when T != 1."""
    title = SAMPLE_TITLES[stochastic]
    return title if temperature == 1 else title.replace("z ~ p(z)", f"z ~ N(0, {temperature:g}² I)")


def check_temperature(temperature: float, name: str = "--temperature") -> None:
    """T scales the prior's standard deviation: 0, a negative number, inf or NaN draw nothing
    meaningful (the rule of `vae sample` and of Model.sample)."""
    number = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
    if not number or not 0 < temperature < float("inf"):
        raise VaeError(f"{name} must be a finite number > 0, got {temperature!r}")


@torch.no_grad()
def sample_images(
    module: VAEModule, n: int, stochastic: bool, temperature: float = 1.0, seed: int = 0
) -> Tensor:
    """z ~ N(0, T^2 I); E[x|z] by default or x ~ p(x|z); as [0,1] images for display.

    The z draw comes first from its own generator, so a mean grid and a stochastic grid
    with the same seed show the same z.
    """
    vae = module.vae.eval()
    device = next(vae.parameters()).device
    z = torch.randn(n, vae.latent_dim, generator=torch.Generator().manual_seed(seed)) * temperature
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        dist = vae.decode_prior(z.to(device))  # 2 layers: z2 -> z1 -> x
        x = dist.sample() if stochastic else dist.mean
    return to_image(x, vae.likelihood.support).cpu()


def sample_on_device(
    module: VAEModule,
    n: int,
    stochastic: bool,
    temperature: float = 1.0,
    seed: int = 0,
    run: RunSettings | None = None,
) -> Tensor | None:
    """sample_images on one device of the accelerator, under the precision's autocast.

    Sampling is a single decoder pass, so it never needs more than one device; under a
    multi-process launch (torchrun, srun) only global rank 0 draws, the others get None.
    Of `run` (default: RunSettings()) only the accelerator and the precision apply.
    """
    from lightning_fabric import Fabric
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:
        return None
    cfg = run or RunSettings()
    try:
        fabric = Fabric(accelerator=cfg.accelerator, devices=1, precision=cfg.precision)  # type: ignore[arg-type]
    except (ValueError, RuntimeError) as e:
        raise VaeError(
            f"cannot sample with accelerator={cfg.accelerator} precision={cfg.precision}: "
            f"{str(e).strip().splitlines()[0]}"
        ) from None
    module = fabric.to_device(module)
    with fabric.autocast():
        return sample_images(module, n, stochastic, temperature, seed)
