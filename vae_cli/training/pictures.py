"""Sample and reconstruction grids sent to the experiment loggers at every validation, so a
model can be watched improving in TensorBoard, MLflow (PNG artifacts) and W&B (media)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from torch import Tensor

from vae_cli import report
from vae_cli.data.support import to_image


def _tensorboard(logger: Logger, tag: str, image: Tensor, step: int) -> None:
    logger.experiment.add_image(tag, image, global_step=step)  # (C, H, W) in [0, 1]


def _pixels(image: Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W) or (H, W, 3) uint8, the array MLflow and W&B take."""
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def _mlflow(logger: Logger, tag: str, image: Tensor, step: int) -> None:
    # an artifact per validation (a PNG in the run's artifact store): images/<tag>/step-<n>.png
    logger.experiment.log_image(logger.run_id, _pixels(image), artifact_file=artifact_name(tag, step))


def artifact_name(tag: str, step: int) -> str:
    return f"images/{tag}/step-{step:07d}.png"


def _wandb(logger: Logger, tag: str, image: Tensor, step: int) -> None:
    logger.log_image(key=tag, images=[_pixels(image)], step=step)


# One branch per logger type with an image API; a logger not listed gets no pictures.
IMAGE_WRITERS: dict[type[Logger], Callable[[Logger, str, Tensor, int], None]] = {
    TensorBoardLogger: _tensorboard,
    MLFlowLogger: _mlflow,
    WandbLogger: _wandb,
}


def image_writer(logger: Logger) -> Callable[[Logger, str, Tensor, int], None] | None:
    for kind, write in IMAGE_WRITERS.items():
        if isinstance(logger, kind):
            return write
    return None


@torch.no_grad()
def validation_pictures(
    module: pl.LightningModule, x: Tensor, n: int = 64, seed: int = 0
) -> dict[str, Tensor]:
    """{tag: (C, H, W) grid}: E[x|z] and x ~ p(x|z) for n fixed prior draws (the same z at
    every validation, so frames compare), and the first validation inputs above E[x|E_q z]."""
    vae = module.vae
    support = vae.likelihood.support
    # Fork every RNG the draws touch: training continues with exactly the state it had.
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        z = torch.randn(n, vae.latent_dim, device=x.device)
        prior = vae.decode_prior(z)
        recon = vae.conditional(vae.posterior_means(x)[0]).mean
        images = {"samples/mean": prior.mean, "samples/stochastic": prior.sample()}
    scale = report.scale_for(x.shape[-1], 8)  # ~400 px wide, as the PNG figures
    grids = {tag: report.grid_tensor(to_image(v.float(), support), 8, scale) for tag, v in images.items()}
    panel = report.reconstruction_panel(to_image(x.float(), support), to_image(recon.float(), support))
    grids["reconstructions"] = report.grid_tensor(panel.images, 8, scale)
    return grids


class LoggerImages(pl.Callback):
    """At the end of each validation (not the sanity check), rank 0 draws the grids and hands
    them to every logger that has an image writer."""

    def __init__(self, n_inputs: int = 16) -> None:
        self.n_inputs = n_inputs

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        writers = [(lg, w) for lg in trainer.loggers if (w := image_writer(lg)) is not None]
        if not writers:
            return
        examples = getattr(trainer.datamodule, "examples", None)  # VAEDataModule's fixed val split
        if examples is None:
            return
        x = examples("val", self.n_inputs).to(pl_module.device)
        for tag, grid in validation_pictures(pl_module, x).items():
            for logger, write in writers:
                write(logger, tag, grid, trainer.global_step)
