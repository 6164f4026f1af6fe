"""`--logger`: TensorBoard by default, MLflow to a local sqlite store, W&B offline; each read back
with the tool's own reader where one exists; missing extras are one-line errors; an MLflow
server that does not answer is refused up front, and sweep members share a fresh store."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
from conftest import SWEEP_TINY, run_sweep
from PIL import Image

from vae_cli.training import loggers, pictures

TINY = ("--epochs", "2", "--latent-dim", "2", "--hidden-dim", "8", "--accelerator", "cpu")


def test_unknown_logger_is_one_line_error(cli):
    result = cli("train", "--logger", "csv,mlfow", *TINY)
    assert result.exit_code == 2 and 'unknown logger "mlfow" (did you mean "mlflow"?)' in result.output


@pytest.mark.parametrize("name,extra", [("mlflow", "vae-cli[mlflow]"), ("wandb", "vae-cli[wandb]")])
def test_missing_extra_names_the_install_command(cli, monkeypatch, tmp_path, name, extra):
    # as if the package were missing (patching find_spec itself would poison Lightning's import caches)
    monkeypatch.setitem(loggers.PACKAGES, name, ("vae_cli_no_such_package", loggers.PACKAGES[name][1]))
    result = cli("train", "--logger", f"csv,{name}", *TINY)
    assert result.exit_code == 2, result.output
    assert f"pip install '{extra}'" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_csv_is_always_first_and_names_are_deduplicated():
    assert loggers.parse_loggers("tensorboard,mlflow,tensorboard") == ["csv", "tensorboard", "mlflow"]
    assert loggers.parse_loggers("csv") == ["csv"]


def csv_rows(run: Path) -> list[dict[str, str]]:
    import csv

    return list(csv.DictReader((run / "metrics.csv").open()))


def csv_column(run: Path, key: str) -> list[float]:
    import csv

    return [float(r[key]) for r in csv.DictReader((run / "metrics.csv").open()) if r.get(key)]


def run_dir_of(tmp_path: Path, name: str) -> Path:
    return tmp_path / "runs" / name / "version_0"


@pytest.mark.slow
def test_tensorboard_by_default_and_named_runs(cli, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = cli("train", *TINY, "--name", "my-run")
    assert result.exit_code == 0, result.output
    run = run_dir_of(tmp_path, "my-run")
    events = EventAccumulator(str(run)).Reload()
    val = [e.value for e in events.Scalars("val/elbo")]
    assert val == pytest.approx(csv_column(run, "val/elbo"), rel=1e-6) and len(val) == 2
    again = cli("train", *TINY)  # no -e, no --name: DATASET-LIKELIHOOD, not a shared "default"
    assert again.exit_code == 0 and run_dir_of(tmp_path, "digits-bernoulli").is_dir()
    bad = cli("train", *TINY, "--name", "../escape")
    assert bad.exit_code == 2 and "name '../escape' is not a plain folder name" in bad.output


@pytest.mark.slow
def test_mlflow_logs_config_and_metrics_to_a_local_store(cli, tmp_path, monkeypatch):
    if importlib.util.find_spec("mlflow") is None:
        pytest.skip("the [mlflow] extra is not installed")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = cli("train", *TINY, "--logger", "csv,mlflow", "--likelihood", "gaussian")
    assert result.exit_code == 0, result.output
    run = run_dir_of(tmp_path, "digits-gaussian")
    client = MlflowClient(tracking_uri=f"sqlite:///{run / loggers.MLFLOW_DB}")
    (found,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert found.info.run_name == "digits-gaussian/version_0" and found.info.status == "FINISHED"
    assert found.data.params["config/likelihood"] == "gaussian" and found.data.params["config/epochs"] == "2"
    history = client.get_metric_history(found.info.run_id, "val/elbo")
    assert [h.value for h in history] == pytest.approx(csv_column(run, "val/elbo"), rel=1e-6)
    assert "train/elbo_epoch" in found.data.metrics
    # the sample and reconstruction grids, one PNG per validation, read back through MLflow
    # named by the steps done (trainer.global_step); metrics.csv's step counts from 0
    val_steps = [int(r["step"]) + 1 for r in csv_rows(run) if r.get("val/elbo")]
    assert len(val_steps) == 2
    for tag in ("samples/mean", "samples/stochastic", "reconstructions"):
        files = client.list_artifacts(found.info.run_id, f"images/{tag}")
        assert [f.path for f in files] == [pictures.artifact_name(tag, s) for s in val_steps]
        local = client.download_artifacts(found.info.run_id, files[-1].path, str(tmp_path))
        with Image.open(local) as image:
            assert image.format == "PNG" and min(image.size) >= 8 * 8
            r, g, b = image.convert("RGB").split()  # grey digits: every channel the same
            assert r.tobytes() == g.tobytes() == b.tobytes() and r.getextrema()[1] > 0


@pytest.mark.slow
def test_wandb_runs_offline_without_a_login(cli, tmp_path, monkeypatch):
    if importlib.util.find_spec("wandb") is None:
        pytest.skip("the [wandb] extra is not installed")
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    assert not loggers.wandb_logged_in()
    result = cli("train", *TINY, "--logger", "wandb", "--likelihood", "laplace")
    assert result.exit_code == 0, result.output
    (record,) = run_dir_of(tmp_path, "digits-laplace").glob("wandb/offline-run-*/run-*.wandb")
    # wandb >= 0.19 reads its run files in Go only; the protobuf records keep keys and values
    # as plain strings, so the config and the metric names are visible in the bytes.
    data = record.read_bytes()
    assert data.startswith(b":W&B")
    for needle in (b"laplace", b"val/elbo", b"train/elbo_epoch", b"kl_warmup_steps"):
        assert needle in data, needle
    # the grids as W&B media: one PNG per tag and validation (2 epochs)
    (media,) = record.parent.glob("files/media/images")
    for tag in ("samples/mean", "samples/stochastic", "reconstructions"):
        pngs = list((media / Path(tag).parent).glob(f"{Path(tag).name}_*.png"))
        assert len(pngs) == 2, (tag, sorted(p.name for p in media.rglob("*")))


def test_mlflow_server_that_does_not_answer_is_refused_before_anything_is_written(cli, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the [mlflow] extra is not installed")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: nothing listens
    start = time.monotonic()
    for args in (("sweep", "--set", "logger=csv,mlflow", "--out", "s"), ("train", "--logger", "csv,mlflow")):
        result = cli(*args)
        assert result.exit_code == 2, result.output
        assert "MLFLOW_TRACKING_URI=http://127.0.0.1:9: no MLflow server answers there" in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == [] and time.monotonic() - start < 30


@pytest.mark.slow
def test_two_jobs_share_one_fresh_mlflow_sqlite_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the [mlflow] extra is not installed")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'shared.db'}"  # fresh: both members would migrate it at once
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    args = ("--grid", "likelihood=bernoulli,gaussian", "--set", "max_steps=4", "--set", "logger=csv,mlflow",
            *SWEEP_TINY, "--iw-samples", "0", "--jobs", "2", "--out", "s")  # fmt: skip
    result = run_sweep(tmp_path, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(tracking_uri=uri)
    found = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert sorted(r.info.run_name.split("/")[0] for r in found) == [
        "likelihood=bernoulli,seed=0",
        "likelihood=gaussian,seed=0",
    ]
    assert all(r.info.status == "FINISHED" for r in found)
