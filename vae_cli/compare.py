"""`vae compare`: the same model and data under several likelihoods, one report.

A sweep over `likelihood` (vae_cli/sweep/): each family (x each seed) is an ordinary run,
trained with train.fit and scored with train.evaluate.evaluate_checkpoint, so the numbers
are exactly those `vae train` and `vae eval` give. Bits/dim are on the 8-bit scale for every
family that models 8-bit data (densities on [0, 1] get the log2(256) offset), so they compare
across families; Bernoulli scores binarised data, a different data set, and the report says so.
"""

from __future__ import annotations

from vae_cli.errors import VaeError
from vae_cli.model.likelihoods import LIKELIHOODS


def applicable(dataset: str) -> list[str]:
    """Families that model this dataset: binary-only data gets the binary families, 8-bit
    data every family (Bernoulli on binarised draws of it)."""
    if dataset == "binarized-mnist":
        return [name for name, cls in LIKELIHOODS.items() if cls.support == "binary"]
    return list(LIKELIHOODS)


def parse_likelihoods(text: str | None, dataset: str) -> list[str]:
    if text is None:
        return applicable(dataset)
    names = [t.strip() for t in text.split(",")]
    if "" in names:  # `--likelihoods ""` or "a,,b": a slip, not "every family"
        raise VaeError(
            f"--likelihoods {text!r} has an empty item: list families as F1,F2 (leave the flag out for all)"
        )
    for name in names:
        if name not in LIKELIHOODS:
            from vae_cli.errors import unknown

            raise unknown("likelihood", name, LIKELIHOODS)
    if len(set(names)) != len(names):
        raise VaeError(f"--likelihoods lists a family twice: {text}")
    return names
