"""`vae sweep` / `vae results`: grid validation, member states, aggregation over seeds, and
end to end (local processes, resume after a kill, submitit's local executor)."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import EXPERIMENTS, ROOT
from vae_cli.errors import VaeError
from vae_cli.settings import RunSettings, resolve, resolve_all
from vae_cli.sweep import launch
from vae_cli.sweep.grid import expand, parse_grid, parse_seeds
from vae_cli.sweep.member import FAILED, FINISHED, INTERRUPTED, PENDING, state
from vae_cli.sweep.run import grid_from

TINY = (
    "--set",
    "latent_dim=2",
    "--set",
    "hidden_dim=8",
    "--set",
    "batch_size=50",
    "--set",
    "accelerator=cpu",
)


# ---------------------------------------------------------------- the grid, before anything runs
def test_grid_members_are_validated_configs_with_readable_names():
    base, hardware = resolve_all(None, None, {"dataset": "digits"})
    grid = parse_grid(["likelihood=bernoulli,gaussian-learned", "beta=0.5,1"])
    assert grid == {"likelihood": ["bernoulli", "gaussian-learned"], "beta": [0.5, 1]}
    members = expand(base, hardware, grid, parse_seeds("0,1,2"), "--grid")
    assert len(members) == 12
    m = members[1]
    assert m.name == "likelihood=bernoulli,beta=0.5,seed=1"
    assert (m.config.likelihood, m.config.beta, m.config.seed) == ("bernoulli", 0.5, 1)
    assert isinstance(members[2].config.beta, float) and members[3].config.beta == 1.0  # coerced like YAML
    assert m.setting == "likelihood=bernoulli,beta=0.5"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--grid", "betta=0.5,1"], 'cannot sweep "betta" (did you mean "beta"?)'),
        (["--grid", "beta=0.5,abc"], '"beta" in --grid (beta=abc) must be float, got str'),
        (
            ["--grid", "likelihood=bernoulli,gausian"],
            'unknown likelihood "gausian" (did you mean "gaussian"?)',
        ),
        (["--grid", "beta=-1"], "beta must be >= 0, got -1.0"),
        (["--grid", "seed=1,2"], 'cannot sweep "seed": use --seeds for seeds'),
        (["--grid", "beta"], "write KEY=V1,V2"),
        (["--seeds", "0,x"], "seeds must be integers"),
        (["--launcher", "pbs"], 'unknown launcher "pbs"'),
        (["--jobs", "0"], "--jobs must be >= 1"),
        (["--set", "epocs=3"], 'unknown key "epocs"'),
        # equal once converted to the setting's type: one value twice, not two settings
        (["--grid", "beta=1,1.0"], "beta needs distinct values"),
        (["--grid", "latent_dim=2,2.0"], "must be int"),
        (["--grid", "beta=0.5,,1"], "has an empty value"),
        (["--grid", "beta=0.5,"], "has an empty value"),
        (["--seeds", "0,,1"], "no empty items"),
        (["--seeds", ""], "no empty items"),
        # what `vae train` refuses up front (trainer.check_hardware), refused for every member
        (["--grid", "precision=32,16-true"], 'unknown precision "16-true"'),
        (["--grid", "num_nodes=1,2"], "needs a launcher that starts the other nodes"),
        (["--grid", "experiment=a,b"], 'cannot sweep "experiment": every member of a sweep'),
        (["--grid", "name=a,b"], 'cannot sweep "name": every member of a sweep'),
        (["--grid", "runs_dir=a,b"], 'cannot sweep "runs_dir": members are written inside'),
        (["--grid", "logger=csv,tensorboard"], 'cannot sweep "logger": one logger setting'),
        (["--grid", "description=a,b"], 'cannot sweep "description": it is free text'),
    ],
)
def test_bad_grid_is_one_line_error_before_anything_runs(cli, tmp_path, args, message):
    result = cli("sweep", *args, "--out", "s")
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()
    key = args[1].split("=")[0]
    assert f'did you mean "{key}"' not in result.output  # never suggests what was typed


@pytest.mark.parametrize(
    "args,message",
    [
        (["--slurm-time", "-5"], "timeout_min must be >= 1, got -5"),
        (["--slurm", "timeout_min=0"], "timeout_min must be >= 1, got 0"),
        (["--slurm-gpus", "-1"], "gpus_per_node must be >= 0, got -1"),
        (["--slurm", "slurm_cpus_per_task=-2"], "slurm_cpus_per_task must be >= 1"),
        (["--slurm", "mem_gb=abc"], "submitit rejected the SLURM parameters ['mem_gb']"),
        (["--slurm", "bogus_key=1"], "submitit rejected the SLURM parameters ['bogus_key']"),
        (["--slurm", "slurm_bogus=1"], "submitit rejected the SLURM parameters ['slurm_bogus']"),
        (["--slurm", "mem_gb=4", "--slurm", "mem_gb=8"], "--slurm mem_gb is given twice"),
        (
            ["--slurm-time", "5", "--slurm", "timeout_min=6"],
            "--slurm timeout_min=... repeats a --slurm-* flag",
        ),
    ],
)
def test_bad_submitit_parameters_are_refused_before_anything_is_written(cli, tmp_path, args, message):
    pytest.importorskip("submitit", reason="the [slurm] extra (submitit) is not installed")
    result = cli("sweep", "--launcher", "submitit-local", *args, "--out", "s")
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # no sweep.yaml, no member folder, no submitit/


def test_no_slurm_is_refused_before_anything_is_written(cli, tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit", reason="the [slurm] extra (submitit) is not installed")
    if submitit.AutoExecutor.which() == "slurm":
        pytest.skip("this machine has SLURM")
    for args in ([], ["--slurm", "bogus_key=1"]):
        result = cli("sweep", "--launcher", "slurm", *args, "--out", "s")
        assert result.exit_code == 2 and "no SLURM on this machine" in result.output, result.output
        assert list(tmp_path.iterdir()) == []


def test_several_nodes_are_left_to_slurm_to_start(tmp_path):
    from vae_cli.sweep.run import Launch

    Launch("slurm").check_hardware(RunSettings(num_nodes=2))  # SLURM starts the nodes: no error
    with pytest.raises(VaeError, match="needs a launcher"):
        Launch("local").check_hardware(RunSettings(num_nodes=2))


@pytest.mark.parametrize(
    "block,message",
    [
        ("      seeds: 3\n", "small' sweep: seeds must be a list of integers (e.g. seeds: [0, 1, 2]), got 3"),
        ("      seeds: [0, '']\n", "small' sweep: seeds must be integers separated by commas, no empty"),
        ("      seeds: [0, true]\n", "small' sweep: seeds must be integers separated by commas, no empty"),
        ("      beta: {a: 1}\n", "small' sweep: beta must be a value or a list of values, got a mapping"),
        ("      beta: [1, 1.0]\n", "beta needs distinct values"),
    ],
)
def test_bad_sweep_block_is_one_line_error(cli, tmp_path, monkeypatch, block, message):
    exps = tmp_path / "experiments.yaml"
    exps.write_text("experiments:\n  small:\n    dataset: digits\n    sweep:\n" + block)
    monkeypatch.setenv("VAE_EXPERIMENTS", str(exps))
    result = cli("sweep", "-e", "small", "--out", "s")
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_failed_members_make_the_sweep_exit_1_after_the_table(cli, tmp_path):
    # --devices beyond this machine's cores passes validation and fails when the member starts
    cores = os.cpu_count() or 1
    devices = f"{cores + 1},{cores + 2}"
    result = cli("sweep", "--grid", f"devices={devices}", *TINY, "--set", "max_steps=1", "--out", "s")
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: 2 of 2 members failed: devices=")
    assert f"failed: devices={cores + 1},seed=0: --devices {cores + 1} but this machine" in result.output
    assert (tmp_path / "s" / "results.md").is_file()  # the report is still written


def test_experiment_sweep_block_and_command_line_grid(tmp_path, monkeypatch):
    exps = tmp_path / "experiments.yaml"
    exps.write_text(
        "experiments:\n  small:\n    dataset: digits\n    latent_dim: 2\n"
        "    sweep:\n      likelihood: [bernoulli, gaussian]\n      beta: [0.5, 1]\n      seeds: [3, 4]\n"
    )
    monkeypatch.setenv("VAE_EXPERIMENTS", str(exps))
    assert grid_from("small", [], None) == (
        {"likelihood": ["bernoulli", "gaussian"], "beta": [0.5, 1]},
        [3, 4],
    )
    # --grid replaces one key of the block, --seeds its seeds
    assert grid_from("small", ["beta=2"], "7") == (
        {"likelihood": ["bernoulli", "gaussian"], "beta": [2]},
        [7],
    )
    assert resolve("small", None, {}).latent_dim == 2  # the block is no setting of the run itself


def test_threads_are_divided_between_jobs():
    assert [launch.threads_per_job(n, cores=16) for n in (1, 2, 3, 16, 32)] == [16, 8, 5, 1, 1]
    assert launch.member_env(2)["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))


# ---------------------------------------------------------------- states and aggregation, from files
def test_member_state_is_read_from_its_directory(tmp_path):
    m = tmp_path / "m"
    assert state(m)[0] == PENDING
    (m / "version_0" / "checkpoints").mkdir(parents=True)
    (m / "version_0" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert state(m)[0] == INTERRUPTED
    (m / "error.txt").write_text("out of device memory: lower --batch-size\n")
    assert state(m) == (FAILED, "out of device memory: lower --batch-size")
    (m / "eval.json").write_text("{}")
    assert state(m)[0] == FINISHED


def fake_sweep(root: Path, values: dict[tuple[str, int], float]) -> None:
    """A sweep directory whose members' eval.json hold the given ELBOs (other numbers derived)."""
    members = []
    for (lik, seed), elbo in values.items():
        name = f"likelihood={lik},seed={seed}"
        members.append({"name": name, "settings": {"likelihood": lik, "seed": seed}})
        d = root / name
        d.mkdir(parents=True)
        ev = {"elbo": elbo, "iw": elbo + 1.5, "bpd_elbo": -elbo / 100, "bpd_iw": -(elbo + 1.5) / 100,
              "recon": elbo - 2.0, "kl": 2.0 + seed, "active_units": seed, "latent_dims": [4],
              "n_examples": 360, "wall_time_s": 0.1, "run_dir": str(d / "version_0")}  # fmt: skip
        (d / "eval.json").write_text(json.dumps(ev))
    failed = root / "likelihood=gaussian,seed=2"
    failed.mkdir()
    (failed / "error.txt").write_text("refusing to write last.ckpt: non-finite weights in decoder.0\n")
    members.append({"name": failed.name, "settings": {"likelihood": "gaussian", "seed": 2}})
    record = {"grid": {"likelihood": ["bernoulli", "gaussian"]}, "seeds": [0, 1, 2], "iw_samples": 7,
              "config": {"dataset": "digits", "latent_dim": 4}, "members": members}  # fmt: skip
    (root / "sweep.yaml").write_text(yaml.safe_dump(record))


def test_results_aggregate_over_seeds_and_list_failures(cli, tmp_path):
    elbos = {("bernoulli", 0): -40.0, ("bernoulli", 1): -42.5, ("bernoulli", 2): -41.0,
             ("gaussian", 0): -700.0, ("gaussian", 1): -650.0}  # fmt: skip
    fake_sweep(tmp_path / "s", elbos)
    result = cli("results", "s")
    assert result.exit_code == 0, result.output
    assert "failed: likelihood=gaussian,seed=2: refusing to write last.ckpt" in result.output
    rows = {r["likelihood"]: r for r in csv.DictReader((tmp_path / "s" / "results.csv").open())}
    for lik, n in (("bernoulli", 3), ("gaussian", 2)):
        xs = np.array([v for (k, _), v in elbos.items() if k == lik])
        assert int(rows[lik]["n"]) == n
        assert float(rows[lik]["elbo_mean"]) == pytest.approx(xs.mean())
        assert float(rows[lik]["elbo_std"]) == pytest.approx(xs.std(ddof=1))
        assert float(rows[lik]["iw_nll_mean"]) == pytest.approx(-(xs + 1.5).mean())
        assert float(rows[lik]["kl_mean"]) == pytest.approx(2.0 + statistics.fmean(range(n)))
    md = (tmp_path / "s" / "results.md").read_text()
    assert "| bernoulli | 3 | -41.17 ± 1.26 |" in md  # mean and sample std of -40, -42.5, -41
    assert "`likelihood=gaussian,seed=2`: failed: refusing to write" in md
    members = list(csv.DictReader((tmp_path / "s" / "members.csv").open()))
    assert [m["state"] for m in members].count("failed") == 1 and len(members) == 6
    payload = json.loads((tmp_path / "s" / "results.json").read_text())
    assert payload["iw_samples"] == 7 and len(payload["rows"]) == 2
    assert (tmp_path / "s" / "figures" / "nll.png").stat().st_size > 0
    bad = cli("results", ".")
    assert bad.exit_code == 2 and "has no sweep.yaml" in bad.output


@pytest.mark.parametrize(
    "damage", ["not json{", "{}", "[1, 2]", '{"elbo": "x", "bpd_elbo": 1, "recon": 1, "kl": 1}']
)
def test_results_list_a_damaged_member_as_failed_and_report_the_rest(cli, tmp_path, damage):
    elbos = {("bernoulli", 0): -40.0, ("bernoulli", 1): -42.0, ("gaussian", 0): -700.0}
    fake_sweep(tmp_path / "s", elbos)
    (tmp_path / "s" / "likelihood=bernoulli,seed=0" / "eval.json").write_text(damage)
    result = cli("results", "s")
    assert result.exit_code == 0, result.output
    assert (
        "failed: likelihood=bernoulli,seed=0: " in result.output and "eval.json is damaged" in result.output
    )
    rows = {r["likelihood"]: r for r in csv.DictReader((tmp_path / "s" / "results.csv").open())}
    assert int(rows["bernoulli"]["n"]) == 1 and float(rows["bernoulli"]["elbo_mean"]) == -42.0
    assert int(rows["gaussian"]["n"]) == 1 and float(rows["gaussian"]["elbo_mean"]) == -700.0


@pytest.mark.parametrize("text", ["", "bernoulli,", "bernoulli,,gaussian"])
def test_compare_refuses_empty_likelihood_items(cli, tmp_path, text):
    result = cli("compare", "--likelihoods", text, "--out", "c")
    assert result.exit_code == 2, result.output
    assert "has an empty item" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_compare_refuses_the_same_run_twice(cli, tmp_path):
    (tmp_path / "r").mkdir()
    result = cli("compare", "--run", "r", "--run", "./r", "--out", "c")
    assert result.exit_code == 2 and "--run r is given twice: pass each run once" in result.output, (
        result.output
    )
    assert not (tmp_path / "c").exists()


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


# ---------------------------------------------------------------- end to end
def run_sweep(cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VAE_EXPERIMENTS": str(EXPERIMENTS)}
    return subprocess.run([sys.executable, "-m", "vae_cli", "sweep", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


@pytest.mark.slow
def test_sweep_runs_two_jobs_and_a_rerun_skips_finished_members(tmp_path):
    args = ("--grid", "likelihood=bernoulli,gaussian", "--set", "max_steps=16", *TINY,
            "--iw-samples", "3", "--jobs", "2", "--out", "s")  # fmt: skip
    first = run_sweep(tmp_path, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    sweep = tmp_path / "s"
    names = ["likelihood=bernoulli,seed=0", "likelihood=gaussian,seed=0"]
    for name in names:
        ev = json.loads((sweep / name / "eval.json").read_text())
        assert ev["likelihood"] == name.split(",")[0].split("=")[1] and ev["iw_samples"] == 3
        assert sorted(p.name for p in (sweep / name).glob("version_*")) == ["version_0"]
        assert (sweep / "figures" / f"samples-{name}.png").stat().st_size > 0
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    assert [(r["likelihood"], r["n"]) for r in rows] == [("bernoulli", "1"), ("gaussian", "1")]
    stamp = (sweep / names[0] / "eval.json").stat().st_mtime_ns
    again = run_sweep(tmp_path, *args)
    assert again.returncode == 0, again.stderr
    assert "2 finished (skipped), 0 to resume, 0 to start" in again.stdout
    assert (sweep / names[0] / "eval.json").stat().st_mtime_ns == stamp
    other = run_sweep(tmp_path, "--grid", "likelihood=bernoulli", "--out", "s")
    assert other.returncode == 2 and "holds another sweep (grid" in other.stderr


@pytest.mark.slow
def test_two_jobs_share_one_fresh_mlflow_sqlite_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the [mlflow] extra is not installed")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'shared.db'}"  # fresh: both members would migrate it at once
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    args = ("--grid", "likelihood=bernoulli,gaussian", "--set", "max_steps=4", "--set", "logger=csv,mlflow",
            *TINY, "--iw-samples", "0", "--jobs", "2", "--out", "s")  # fmt: skip
    result = run_sweep(tmp_path, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(tracking_uri=uri)
    found = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert sorted(r.info.run_name.split("/")[0] for r in found) == [
        "likelihood=bernoulli,seed=0",
        "likelihood=gaussian,seed=0",
    ]
    assert all(r.info.status == "FINISHED" for r in found)


@pytest.mark.slow
def test_killed_sweep_resumes_members_from_their_checkpoints(tmp_path):
    args = ("--set", "epochs=12", *TINY, "--iw-samples", "0", "--out", "s")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VAE_EXPERIMENTS": str(EXPERIMENTS)}
    proc = subprocess.Popen([sys.executable, "-m", "vae_cli", "sweep", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    member = tmp_path / "s" / "seed=0"
    deadline = time.monotonic() + 600
    while not (member / "version_0" / "checkpoints" / "last.ckpt").exists():  # one epoch done
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "re-run the same command to resume" in err
    assert state(member)[0] == INTERRUPTED
    metrics = (member / "version_0" / "metrics.csv").read_text()
    again = run_sweep(tmp_path, *args)
    assert again.returncode == 0, again.stderr
    assert "0 finished (skipped), 1 to resume, 0 to start" in again.stdout
    assert state(member)[0] == FINISHED
    assert sorted(p.name for p in member.glob("version_*")) == ["version_0"]  # resumed in place
    log = list(csv.DictReader((member / "version_0" / "metrics.csv").open()))
    # every epoch validated exactly once across the two processes: nothing redone twice, nothing lost
    assert [int(r["epoch"]) for r in log if r.get("val/elbo")] == list(range(12))
    assert len(log) >= len(list(csv.DictReader(io.StringIO(metrics))))


@pytest.mark.slow
def test_slurm_launcher_through_submitits_local_executor(tmp_path):
    pytest.importorskip("submitit", reason="the [slurm] extra (submitit) is not installed")
    args = ("--grid", "likelihood=bernoulli,gaussian", "--set", "max_steps=8", *TINY, "--iw-samples", "2")
    result = run_sweep(tmp_path, *args, "--launcher", "submitit-local", "--jobs", "2", "--out", "s")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitted 2 member(s) as job array" in result.stdout
    assert list((tmp_path / "s" / "submitit").glob("*_log.out"))  # submitit's own task logs
    rows = list(csv.DictReader((tmp_path / "s" / "members.csv").open()))
    assert [r["state"] for r in rows] == ["finished", "finished"]
    # no SLURM on this machine: a one-line error, not a hang or a traceback
    no = run_sweep(tmp_path, *args, "--launcher", "slurm", "--slurm-partition", "gpu", "--out", "t")
    assert no.returncode == 2 and "no SLURM on this machine" in no.stderr, no.stderr


def test_slurm_flags_need_the_slurm_launcher(cli):
    result = cli("sweep", "--slurm-partition", "gpu", "--out", "s")
    assert result.exit_code == 2 and "--slurm-* options apply to --launcher slurm only" in result.output


def test_member_names_never_escape_the_sweep_directory():
    base = resolve(None, None, {})
    (m,) = expand(base, RunSettings(), {"data_dir": ["../../etc"]}, [0], "--grid")
    assert "/" not in m.name and m.name == "data_dir=.._.._etc,seed=0"
    with pytest.raises(VaeError, match="cannot sweep"):
        expand(base, RunSettings(), {"runs_dir": ["/tmp"]}, None, "--grid")
