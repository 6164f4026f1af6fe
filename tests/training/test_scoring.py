"""training/scoring.py: `vae eval`'s numbers in eval.json: the IW bound above the ELBO on the
same examples, ELBO = recon - KL, bits/dim computed in float64."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_dir, run_vae


@pytest.mark.slow
def test_eval_writes_eval_json_with_iw_bound_above_elbo(trained_workdir: Path):
    result = run_vae("eval", "--iw-samples", "50", cwd=trained_workdir)
    assert result.returncode == 0, result.stderr
    ev = json.loads((run_dir(trained_workdir) / "eval.json").read_text())
    assert ev["n_examples"] == 360 and ev["iw_samples"] == 50
    assert ev["iw"] > ev["elbo"]  # the IW bound is the tighter one, on the same examples
    assert abs(ev["elbo"] - (ev["recon"] - ev["kl"])) < 1e-3
    # binary data: no offset; float64 throughout (float32 would be off by ~1e-8 relative)
    assert ev["bpd_elbo"] == pytest.approx(-ev["elbo"] / (64 * np.log(2)), rel=1e-13)
    assert ev["bpd_iw"] == pytest.approx(-ev["iw"] / (64 * np.log(2)), rel=1e-13)
    assert "binarised once" in ev["data_protocol"]


def test_one_example_has_no_standard_error_and_two_have_one():
    """A standard error needs two examples: with one, eval.json holds null, not a made-up 0."""
    from vae_cli.training.scoring import unpack

    logged = {
        "n_examples": 1.0,
        "elbo": -3.0,
        "elbo_stderr": 0.0,
        "iw": -2.9,
        "iw_stderr": 0.0,
        "active_units/z1": 2.0,
    }
    one = unpack(logged, (4,))
    assert one["elbo_stderr"] is None and one["iw_stderr"] is None and one["elbo"] == -3.0
    two = unpack({**logged, "n_examples": 2.0, "elbo_stderr": 0.5}, (4,))
    assert one["active_units"] is None and one["active_units_per_layer"] is None  # no covariance either
    assert two["elbo_stderr"] == 0.5 and two["active_units"] == 2
