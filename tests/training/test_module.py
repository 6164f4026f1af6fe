"""training/module.py: `--compile` trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import cpu, read_rows

from vae_cli.config import Config
from vae_cli.training import fit as training
from vae_cli.training.load import load_module


def compile_unavailable() -> str | None:
    try:
        import torch._dynamo
        import torch._inductor
    except Exception as e:  # pragma: no cover - depends on the torch build
        return f"torch.compile is not importable here ({type(e).__name__})"
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported on this Python/platform"
    return None


@pytest.mark.slow
@pytest.mark.skipif(compile_unavailable() is not None, reason=str(compile_unavailable()))
def test_compile_trains_a_few_steps(tmp_path: Path, monkeypatch):
    """--compile goes through torch.compile: dynamo captures the ELBO and AOTAutograd its
    backward, and training runs on the result. The test uses the aot_eager backend: inductor's
    C++ code generation takes ~20-40 s on 2 cores, and `make bench` runs the real thing."""
    from torch._dynamo.utils import counters

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend="aot_eager"))
    counters.clear()
    cfg = Config(experiment="compiled", dataset="digits", batch_size=50, max_steps=3, latent_dim=4,
                 hidden_dim=32, compile=True)  # fmt: skip
    run_dir = training.fit(cfg.validate(), run=cpu(tmp_path))
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo captured the ELBO, not a no-op
    rows = read_rows(run_dir / "metrics.csv")
    assert int(rows[-1]["step"]) >= 2 or any(r.get("train/elbo_epoch") for r in rows)
    module = load_module(run_dir / "checkpoints" / "last.ckpt")
    assert all(torch.isfinite(p).all() for p in module.parameters())
