"""Inputs next to their reconstructions: x -> E_q[z|x] -> E[x|z] (or x' ~ p(x|z))."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vae_cli.data.support import to_image
from vae_cli.errors import VaeError
from vae_cli.training.load import datamodule_for
from vae_cli.training.module import VAEModule


def eval_examples(module: VAEModule, n: int, split: str = "test", overrides: dict[str, Any] | None = None):
    """The first n examples of a fixed evaluation split, already on the likelihood's support."""
    if split not in ("test", "val"):
        raise VaeError(f'unknown split "{split}": choose test or val')
    _, dm = datamodule_for(module, overrides)
    return dm.examples(split, n)


@torch.no_grad()
def reconstruct_images(module: VAEModule, x: Tensor, stochastic: bool, seed: int = 0) -> Tensor:
    """Pairs of rows, inputs above reconstructions, 8 per row, as [0, 1] images."""
    return interleave(*reconstruction_pair(module, x, stochastic, seed))


@torch.no_grad()
def reconstruction_pair(
    module: VAEModule, x: Tensor, stochastic: bool, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """(inputs, reconstructions) as [0, 1] images.

    z is the posterior mean (of the layer next to x), so the picture shows what the code
    keeps, not posterior noise; stochastic then draws x' ~ p(x|z) from that z instead of
    showing E[x|z].
    """
    vae = module.vae.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        z = vae.posterior_means(x)[0]  # 2 layers: E_q[z2|x] is a Monte Carlo mean (seeded here)
        dist = vae.conditional(z)
        recon = dist.sample() if stochastic else dist.mean
    support = vae.likelihood.support
    return to_image(x.float(), support), to_image(recon.float(), support)


def interleave(inputs: Tensor, recons: Tensor, per_row: int = 8) -> Tensor:
    """[in_0..in_7, rec_0..rec_7, in_8..]: a grid with nrow=per_row shows pairs of rows."""
    parts = []
    for start in range(0, len(inputs), per_row):
        chunk_in, chunk_rec = inputs[start : start + per_row], recons[start : start + per_row]
        pad = per_row - len(chunk_in)
        if pad:  # keep the rows aligned: blank (white) cells after the last example
            blank = torch.ones(pad, *inputs.shape[1:])
            chunk_in, chunk_rec = torch.cat([chunk_in, blank]), torch.cat([chunk_rec, blank])
        parts += [chunk_in, chunk_rec]
    return torch.cat(parts)


def default_path(run_dir: Path, stochastic: bool) -> Path:
    return run_dir / f"reconstructions-{'stochastic' if stochastic else 'mean'}.png"
