"""Two CPU processes (gloo) through Lightning's ddp strategy: one set of run files, and the
same test ELBO / IW bound on 1 and 2 devices. Plus the pieces that make that true."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import run_vae
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from vae_cli.config import Config
from vae_cli.data.batches import TensorBatches, eval_batch_index
from vae_cli.data.datamodule import VAEDataModule
from vae_cli.errors import VaeError
from vae_cli.model import estimators
from vae_cli.model.vae import VAE

DDP2 = ("--strategy", "ddp", "--devices", "2", "--accelerator", "cpu")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    cwd = tmp_path_factory.mktemp("ddp")
    result = run_vae("train", "--experiment", "quickstart", "--max-steps", "20", *DDP2, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd, result.stdout


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


def test_bf16_mixed_eval_matches_full_precision(ddp_run: tuple[Path, str]):
    cwd, _ = ddp_run
    full, _ = evaluate(cwd, "--accelerator", "cpu")
    bf16, _ = evaluate(cwd, "--accelerator", "cpu", "--precision", "bf16-mixed")
    assert bf16["precision"] == "bf16-mixed"
    # bf16 matmuls in the networks move the ELBO by far less than its standard error
    assert abs(bf16["elbo"] - full["elbo"]) < 0.25 * full["elbo_stderr"]
    assert abs(bf16["iw"] - full["iw"]) < 0.25 * full["iw_stderr"]


def test_density_maths_is_float32_under_autocast():
    torch.manual_seed(0)
    vae = VAE.from_config(Config(latent_dim=4, hidden_dim=32), (1, 8, 8))
    x = torch.bernoulli(torch.full((16, 1, 8, 8), 0.3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(1)
        out = estimators.elbo(vae, x)
        # independent reference: the same (bf16) network outputs, densities in float64
        torch.manual_seed(1)
        mu, logvar = vae.encoder(x).double().chunk(2, dim=-1)
        q = Independent(Normal(mu, (0.5 * logvar).exp()), 1)
        # the same float32 reparameterised draw as the model's posterior
        z = Normal(mu.float(), (0.5 * logvar.float()).exp()).rsample()
        logits = vae.decoder(z).double()
    assert out["elbo"].dtype == torch.float32
    recon = Independent(Bernoulli(logits=logits.view_as(x)), 3).log_prob(x.double())
    kl = kl_divergence(q, Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1))
    assert torch.allclose(out["recon"].double(), recon, atol=1e-3)
    assert torch.allclose(out["kl"].double(), kl, atol=1e-4)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_batches_do_not_depend_on_the_world_size(world: int):
    data = torch.arange(361)
    batches = {}
    for rank in range(world):
        for i, b in enumerate(TensorBatches(data, 50, shuffle=False, rank=rank, world_size=world)):
            batches[eval_batch_index(i, rank, world)] = b
    assert sorted(batches) == list(range(math.ceil(361 / 50)))
    for index, b in batches.items():
        assert torch.equal(b, data[index * 50 : (index + 1) * 50])


def test_splits_move_to_the_accelerator_once():
    dm = VAEDataModule(Config())
    dm.setup()
    dm.to_device(torch.device("cpu"))
    assert dm.splits["train"].device.type == "cpu"
    dm.to_device(torch.device("meta"))  # stands in for a GPU: any non-CPU device
    assert {t.device.type for t in dm.splits.values()} == {"meta"}
    batch = next(iter(TensorBatches(dm.splits["train"], 10, shuffle=True)))
    assert batch.device.type == "meta" and batch.shape == (10, 1, 8, 8)


def test_too_few_eval_batches_for_the_processes_is_a_clean_error():
    dm = VAEDataModule(Config(batch_size=100))
    dm.setup()
    cpu = SimpleNamespace(root_device=torch.device("cpu"))
    dm.trainer = SimpleNamespace(world_size=5, global_rank=0, current_epoch=0, strategy=cpu)
    with pytest.raises(VaeError, match=r"4 batches of 100 for 5 processes.*smaller --batch-size"):
        dm.test_dataloader()  # 360 examples: a fifth rank would wait forever in the all-reduce
    dm.trainer = SimpleNamespace(world_size=4, global_rank=3, current_epoch=0, strategy=cpu)
    assert len(dm.test_dataloader()) == 1
