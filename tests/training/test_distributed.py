"""Two CPU processes (gloo) through Lightning's ddp strategy: one set of run files, and the
same test ELBO / IW bound on 1 and 2 devices. Plus the pieces that make that true."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import run_vae

from vae_cli.data.batches import TensorBatches
from vae_cli.data.datamodule import VAEDataModule
from vae_cli.settings import Config
from vae_cli.training.module import VAEModule
from vae_cli.training.scoring import Scorer

DDP2 = ("--strategy", "ddp", "--devices", "2", "--accelerator", "cpu")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    cwd = tmp_path_factory.mktemp("ddp")
    result = run_vae("train", "--experiment", "quickstart", "--max-steps", "20", *DDP2, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd, result.stdout


@pytest.mark.slow
def test_ddp_training_writes_one_run_directory_once(ddp_run: tuple[Path, str]):
    cwd, stdout = ddp_run
    (run,) = (cwd / "runs" / "quickstart").iterdir()  # both ranks logged into one version
    assert run.name == "version_0"
    # one TensorBoard file (on by default), not one per rank
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    for name in ("config.yaml", "metrics.csv", "samples-mean.png", "elbo.png", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    assert stdout.count("training summary") == 1  # rank 1 prints nothing
    assert "20" in next(line for line in stdout.splitlines() if "epochs / steps" in line)


def evaluate(cwd: Path, *flags: str) -> tuple[dict, str]:
    run = cwd / "runs" / "quickstart" / "version_0"
    result = run_vae("eval", str(run), "--iw-samples", "20", "--batch-size", "100", *flags, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((run / "eval.json").read_text()), result.stdout


@pytest.mark.slow
def test_eval_is_the_same_on_one_and_two_devices(ddp_run: tuple[Path, str]):
    cwd, _ = ddp_run
    one, _ = evaluate(cwd, "--devices", "1", "--accelerator", "cpu")
    two, stdout = evaluate(cwd, *DDP2)
    # 360 test examples, batches of 100: 4 batches (the last of 60), dealt 2 + 2
    assert one["n_examples"] == two["n_examples"] == 360
    assert (one["world_size"], two["world_size"]) == (1, 2)
    for key in ("elbo", "recon", "kl", "iw", "elbo_stderr", "iw_stderr"):
        assert two[key] == pytest.approx(one[key], rel=1e-6, abs=1e-6), key
    assert stdout.count("test set") == 1  # only rank 0 reports


@pytest.mark.slow
def test_bf16_mixed_eval_matches_full_precision(ddp_run: tuple[Path, str]):
    cwd, _ = ddp_run
    full, _ = evaluate(cwd, "--accelerator", "cpu")
    bf16, _ = evaluate(cwd, "--accelerator", "cpu", "--precision", "bf16-mixed")
    assert bf16["precision"] == "bf16-mixed"
    # bf16 matmuls in the networks move the ELBO by far less than its standard error
    assert abs(bf16["elbo"] - full["elbo"]) < 0.25 * full["elbo_stderr"]
    assert abs(bf16["iw"] - full["iw"]) < 0.25 * full["iw_stderr"]


@pytest.mark.slow
def test_two_layer_eval_and_active_units_are_the_same_on_one_and_two_devices(tmp_path: Path):
    """The 2-layer model's E[z2|x] averages draws of z1: they are seeded per batch too."""
    flags = ("--experiment", "quickstart", "--stochastic-layers", "2", "--max-steps", "20")
    result = run_vae("train", *flags, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    one, _ = evaluate(tmp_path, "--devices", "1", "--accelerator", "cpu")
    two, _ = evaluate(tmp_path, *DDP2)
    assert one["latent_dims"] == two["latent_dims"] == [16, 8]
    for key in ("elbo", "iw", "active_units", "active_units_per_layer"):
        assert two[key] == pytest.approx(one[key], rel=1e-6, abs=1e-6), key


def test_two_layer_active_unit_sums_do_not_depend_on_the_world_size():
    """Run the scorer's test_step as each rank of a 1- and a 2-process evaluation would (same
    weights, the global RNG seeded alike in every process, batches dealt round-robin): the
    float64 sums of E[z|x] and its square behind the active units agree to rounding, per layer."""
    torch.manual_seed(0)
    module = VAEModule(Config(stochastic_layers=2, latent_dim=4, hidden_dim=32).validate().to_dict()).eval()
    dm = VAEDataModule(module.cfg)
    dm.setup("test")
    data = dm.splits["test"]  # 360 examples: 4 batches of 100

    def sums(world: int) -> dict[str, torch.Tensor]:
        total: dict[str, torch.Tensor] = {}
        for rank in range(world):
            scorer = Scorer(module, iw_samples=0, chunk=1, seed=0)
            scorer._trainer = SimpleNamespace(world_size=world, global_rank=rank)
            scorer.on_test_epoch_start()  # fresh sums, as in a new process
            torch.manual_seed(0)  # what seed_everything does in every process
            with torch.no_grad():
                for i, x in enumerate(TensorBatches(data, 100, shuffle=False, rank=rank, world_size=world)):
                    scorer.test_step(x, i)
            for name, metric in scorer.mu_sums.items():
                total[name] = total.get(name, 0) + metric.total.clone()
        return total

    one, two = sums(1), sums(2)
    assert set(one) == {"z1", "z1_sq", "z2", "z2_sq"}
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-12, atol=1e-12)
