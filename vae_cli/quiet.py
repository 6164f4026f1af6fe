"""Lightning's start-up chatter, silenced by the commands that run Lightning (the CLI's and a
sweep member's process alike)."""

from __future__ import annotations

import logging
import warnings


def quiet_lightning() -> None:
    """Lightning's banner lines ("GPU available: ...") say nothing a user asked for.

    Called by the commands that run Lightning, not at start-up: `vae --help` imports no torch."""
    import pytorch_lightning  # noqa: F401  (it sets its loggers to INFO on import)

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    # Ours to handle (ResumedCSVLogger keeps metrics.csv); (?s): a path may hold a newline.
    warnings.filterwarnings("ignore", "(?s).*Checkpoint directory .* exists and is not empty")
    warnings.filterwarnings("ignore", "(?s).*Experiment logs directory .* exists and is not empty")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    # About self.log's step cadence, counted in Lightning batches; the training means are
    # logged by the module every log_every_n_steps optimiser steps (fastpath.log_due).
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
