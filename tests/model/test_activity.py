"""model/activity.py: active units, against numpy float64."""

from __future__ import annotations

import torch

from vae_cli.model import activity


def test_active_units_counts_dimensions_with_varying_posterior_means():
    gen = torch.Generator().manual_seed(0)
    means = torch.randn(2000, 4, generator=gen) * torch.tensor([1.0, 0.2, 0.05, 0.0])
    # variances ~1, 0.04, 0.0025, 0: two of them above the 0.01 threshold
    sums, sums_sq = means.double().sum(0), (means.double() ** 2).sum(0)
    assert activity.count_active(activity.unit_variances(sums, sums_sq, len(means))) == 2


def test_unit_variances_from_streamed_sums_match_numpy_float64():
    """The one definition (Burda et al. 2016: the variance over the data set of each unit's
    posterior mean) computed from per-batch sums, as eval streams them, against numpy's
    float64 population variance of the whole matrix."""
    import numpy as np

    rng = np.random.default_rng(3)
    means = rng.normal(2.0, 1.0, size=(997, 5)) * np.array([1.0, 0.3, 0.11, 0.09, 1e-3])
    metric, metric_sq = activity.VectorSum(5), activity.VectorSum(5)
    for rows in np.array_split(means, 7):  # uneven batches of float32 means, as eval sees them
        mu = torch.from_numpy(rows).float()
        metric.update(mu)
        metric_sq.update(mu.double() ** 2)
    got = activity.unit_variances(metric.compute(), metric_sq.compute(), len(means)).numpy()
    want = np.var(means.astype(np.float32).astype(np.float64), axis=0)  # ddof=0
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    # 0.09^2 = 0.0081 and 0.11^2 = 0.0121 sit either side of the 0.01 threshold
    assert activity.count_active(torch.from_numpy(got)) == int((want > 0.01).sum()) == 3
