"""data/checks.py: data off a likelihood's support is refused, for every family."""

from __future__ import annotations

import pytest
import torch
from conftest import random_data

from vae_cli.data.checks import check_support
from vae_cli.errors import VaeError
from vae_cli.model.likelihoods import LIKELIHOODS

FAMILIES = sorted(LIKELIHOODS)


# --------------------------------------------------------------------------- support
BAD = {"binary": 0.5, "unit": 2.0, "discrete": 0.5}


@pytest.mark.parametrize("name", FAMILIES)
def test_check_support(name):
    cls = LIKELIHOODS[name]
    gen = torch.Generator().manual_seed(4)
    check_support(random_data(cls.support, (3, 1, 4, 4), gen), cls.support, name, "the data")
    bad = torch.zeros(3, 1, 4, 4)
    bad[1, 0, 2, 2] = BAD[cls.support]
    with pytest.raises(VaeError, match=f'outside the support of likelihood "{name}"'):
        check_support(bad, cls.support, name, "the data")


def test_support_check_on_transformed_data():
    from vae_cli.data.checks import check_support
    from vae_cli.errors import VaeError

    check_support(torch.tensor([0.0, 1.0]), "binary", "bernoulli", "x")
    check_support(torch.tensor([0.0, 0.5, 1.0]), "unit", "gaussian", "x")
    with pytest.raises(VaeError, match="outside the support"):
        check_support(torch.tensor([0.0, 0.5]), "binary", "bernoulli", "x")
    with pytest.raises(VaeError, match="outside the support"):
        check_support(torch.tensor([1.5]), "unit", "gaussian", "x")
    with pytest.raises(VaeError, match="outside the support"):
        check_support(torch.tensor([3.5]), "discrete", "categorical", "x")
