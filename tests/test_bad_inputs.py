"""The CLI's contract for bad input: no input ends in a traceback. Each bad value gets one
line `error: ...` and exit 2.

The config table is generated from `dataclasses.fields(Config)` and the declared types, so a
new setting is covered without editing this file.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path

import pytest
import torch
import yaml
from conftest import one_line_error, snapshot, vae

from vae_cli import settings as settings_mod
from vae_cli.cli import app
from vae_cli.config import Config
from vae_cli.errors import VaeError


def declared_type(field: dataclasses.Field) -> type:
    """int, float, str or bool: the field's type, without an `| None`."""
    hint = typing.get_type_hints(Config)[field.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


# Values no setting of the type may take: the wrong type, non-finite, far out of any range.
BAD = {
    int: ["many", 1.5, True, [1], {"a": 1}, -(10**6), 10**30],
    float: ["many", True, [1.0], math.nan, math.inf, -math.inf, -1e6],
    str: [[1], {"a": 1}, True, "x\0y", "x" * 5000],
    bool: ["maybe", 1, [True]],
}
SETTINGS_BY_NAME = {f.name: f for f in dataclasses.fields(Config)}
CASES = [
    pytest.param(f.name, v, id=f"{f.name}={str(v)[:12]}")
    for f in dataclasses.fields(Config)
    for v in BAD[declared_type(f)]
]


def test_every_config_field_has_bad_values():
    covered = {c.values[0] for c in CASES}
    assert covered == {f.name for f in dataclasses.fields(Config)}


@pytest.mark.parametrize(("key", "value"), CASES)
def test_bad_config_value_in_yaml_is_refused_by_name(key: str, value, tmp_path: Path):
    """What `vae train --config` does first, for every case: a VaeError naming the key (the
    CLI prints a VaeError as one line; the slow twin below checks that for every case too)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({key: value}))
    with pytest.raises(VaeError, match=re.escape(key)):
        settings_mod.resolve_all(config_file=cfg, experiments=settings_mod.Experiments())


# One case of each declared type through the CLI in the quick subset; all of them when slow
# tests run (~240 CLI invocations, ~4 s).
QUICK = {next(c.id for c in CASES if declared_type(SETTINGS_BY_NAME[c.values[0]]) is t) for t in BAD}


@pytest.mark.parametrize(
    ("key", "value"),
    [c if c.id in QUICK else pytest.param(*c.values, id=c.id, marks=pytest.mark.slow) for c in CASES],
)
def test_bad_config_value_in_yaml(key: str, value, tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({key: value}))
    line = one_line_error(vae("train", "--config", cfg, "--runs-dir", tmp_path / "runs"))
    assert key in line
    assert not (tmp_path / "runs").exists()


def flag_of(name: str) -> str | None:
    import typer.main

    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    opts = {o for p in command.params for o in getattr(p, "opts", [])}
    flag = "--" + name.replace("_", "-")
    return flag if flag in opts else None


FLAG_BAD = {int: ["-1000000", "99999999999999999999999"], float: ["nan", "inf", "-inf", "-1e6"]}
FLAG_CASES = [
    pytest.param(flag_of(f.name), v, id=f"{f.name}={v}")
    for f in dataclasses.fields(Config)
    if flag_of(f.name)
    for v in FLAG_BAD.get(declared_type(f), [])
]


@pytest.mark.parametrize(("flag", "value"), FLAG_CASES)
def test_bad_config_value_as_flag(flag: str, value: str, tmp_path: Path):
    one_line_error(vae("train", f"{flag}={value}", "--runs-dir", tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "args",
    ["sample {run} --temperature nan", "sample {run} --temperature inf", "sample {run} --temperature -1",
     "sample {run} --seed -1", "sample {run} --seed 99999999999999", "sample {run} --n 0",
     "sample {run} --n 3000000000", "sample {run} --n 100000000000000000000",
     "reconstruct {run} --n 100000000000000000000", "eval {run} -k 100000000000000000000",
     "eval {run} --chunk 100000000000000000000",
     "eval {run} --seed -1", "eval {run} -k -1", "reconstruct {run} --n 0", "reconstruct {run} --seed -5",
     "sample {run} --out {run}", "sample {run} --out {run}/noext", "sample {run} --out {run}/x.xyz",
     "reconstruct {run} --out {run}/x.pdfx"],
)  # fmt: skip
def test_bad_command_flags(args: str, trained: Path):
    before = snapshot(trained)
    one_line_error(vae(*args.format(run=trained).split()))
    assert snapshot(trained) == before


# ---------------------------------------------------------------------------- YAML files
YAML_CASES = {
    "duplicate-key": ("lr: 0.1\nlr: 0.2\n", 'gives the key "lr" twice'),
    "number-key": ("1: 2\n", "has a key that is not a name at line 1 (int 1)"),
    "bool-key": ("yes: 2\n", "has a key that is not a name at line 1 (bool True)"),
    "null-key": ("~: 2\n", "has a key that is not a name"),
    "alias": ("a: &x 1\nb: *x\n", "uses a YAML alias"),
    "merge": ("base: &b {lr: 1}\n<<: *b\n", "uses a YAML alias"),
    "list": ("- lr\n- 0.1\n", "must hold a mapping of key: value, got list"),
    "scalar": ("just text\n", "must hold a mapping of key: value, got str"),
    "deep": ("lr: " + "[" * 5000 + "]" * 5000 + "\n", ""),
}


def alias_bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [{','.join('*' + prev for _ in range(9))}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("case", [*YAML_CASES, "alias-bomb", "not-utf8", "folder", "huge", "device"])
def test_bad_yaml_file(case: str, tmp_path: Path):
    path = tmp_path / "c.yaml"
    if case == "alias-bomb":
        path.write_text(alias_bomb())
        expected = "uses a YAML alias"
    elif case == "not-utf8":
        path.write_bytes(b"lr: \xff\xfe\n")
        expected = "is not a UTF-8 text file"
    elif case == "folder":
        path.mkdir()
        expected = "is a folder"
    elif case == "device":
        path = Path("/dev/zero")  # reading it would never end
        expected = "is not a regular file"
    elif case == "huge":
        path.write_text("description: " + "x" * (2 << 20) + "\n")
        expected = "too large for a config file"
    else:
        path.write_text(YAML_CASES[case][0])
        expected = YAML_CASES[case][1]
    line = one_line_error(vae("train", "--config", path, "--runs-dir", tmp_path / "runs"))
    assert expected in line and len(line) < 700


@pytest.mark.parametrize(
    ("text", "expected"),
    [("experiments:\n  - quickstart\n", "'experiments' must be a mapping"),
     ("defaults: [1, 2]\n", "'defaults' must be a mapping"),
     ("experiments:\n  q: [1]\n", "experiment 'q' must be a mapping"),
     ("experiments:\n  1: {epochs: 1}\n", "has a key that is not a name"),
     ("experiments:\n  q: {epochs: 1}\n  q: {epochs: 2}\n", 'gives the key "q" twice'),
     ("experiments:\n  q: {true: 1}\n", "has a key that is not a name")],
)  # fmt: skip
def test_bad_experiments_file(text: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from typer.testing import CliRunner

    (tmp_path / "e.yaml").write_text(text)
    monkeypatch.setenv("VAE_EXPERIMENTS", str(tmp_path / "e.yaml"))
    for args in (["train", "-e", "q", "--runs-dir", str(tmp_path / "r")], ["experiments"]):
        assert expected in one_line_error(CliRunner().invoke(app, args))


# ---------------------------------------------------------------------------- settings refused up front
@pytest.mark.parametrize(
    ("args", "expected"),
    [("--epochs 0", "epochs must be >= 1, got 0"),
     ("--precision 16-true --accelerator cpu", "unknown precision \"16-true\""),
     ("--precision bf16-true --accelerator cpu", "unknown precision \"bf16-true\""),
     ("--num-nodes 2 --accelerator cpu", "--num-nodes 2 needs a launcher"),
     ("--latent-dim 99999999999999999999", "is too large")],
)  # fmt: skip
def test_refused_training_settings(args: str, expected: str, tmp_path: Path, monkeypatch):
    for var in ("WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "NODE_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(var, raising=False)
    line = one_line_error(vae("train", "-e", "quickstart", *args.split(), "--runs-dir", tmp_path / "r"))
    assert expected in line
    assert not list((tmp_path / "r").rglob("*.ckpt")) if (tmp_path / "r").exists() else True


# ---------------------------------------------------------------------------- runtime failures
@pytest.mark.parametrize(
    ("exc", "expected"),
    [(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 4000000000000 bytes"),
      "out of memory"),
     (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), "out of memory"),
     (MemoryError(), "out of memory"),
     (OverflowError("Python int too large to convert to C long"), "too large for torch"),
     (RuntimeError("value cannot be converted to type int64_t without overflow"), "too large for torch"),
     (TypeError("randn(): argument 'size' failed to unpack the object at pos 1 with error \"Overflow when "
                "unpacking long long"), "too large for torch"),
     (OSError(28, "No space left on device", "runs/x/metrics.csv"), "runs/x/metrics.csv (No space left"),
     (OSError(30, "Read-only file system", "/ro/x"), "Read-only file system"),
     (PermissionError(13, "Permission denied", "/root/x"), "Permission denied"),
     (ZeroDivisionError("an unforeseen bug"), "unexpected ZeroDivisionError: an unforeseen bug (rerun with "
      "`vae --debug ...`")],
)  # fmt: skip
def test_runtime_failures_are_one_line(exc: BaseException, expected: str, tmp_path: Path, monkeypatch):
    def fail(*a, **k):
        raise exc

    monkeypatch.setattr(settings_mod, "resolve_all", fail)
    bug = isinstance(exc, ZeroDivisionError)  # untranslated: exit 1 (a bug), else 2 (fixable)
    line = one_line_error(vae("train", "--runs-dir", tmp_path), code=1 if bug else 2)
    assert expected in line
    with pytest.raises(type(exc)):  # --debug: the real exception, with its traceback
        from typer.testing import CliRunner

        result = CliRunner().invoke(app, ["--debug", "train", "--runs-dir", str(tmp_path)])
        raise result.exception  # type: ignore[misc]


@pytest.mark.parametrize("flag", ["--latent-dim", "--hidden-dim"])
def test_real_cpu_out_of_memory_is_translated(flag: str, tmp_path: Path):
    """A first layer far beyond any machine's memory (10^8 x 128 or 64 x 2*10^9 floats:
    100 GB or 512 GB), which the allocator refuses at once."""
    size = 10**8 if flag == "--latent-dim" else 2 * 10**9
    line = one_line_error(
        vae("train", "-e", "quickstart", flag, size, "--runs-dir", tmp_path / "r", "--smoke")
    )
    assert "out of memory" in line


def test_malformed_amat_file(tmp_path: Path):
    folder = tmp_path / "data" / "BinarizedMNIST"
    folder.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (folder / f"binarized_mnist_{split}.amat").write_text("0 1 2\nnot a dataset\n")
    line = one_line_error(
        vae("train", "--dataset", "binarized-mnist", "--data-dir", tmp_path / "data", "--smoke")
    )
    assert "is not a binarized-MNIST .amat file" in line
    (folder / "binarized_mnist_train.amat").unlink()
    (folder / "binarized_mnist_train.amat.gz").write_bytes(b"not gzip")
    assert "download the file again" in one_line_error(
        vae("train", "--dataset", "binarized-mnist", "--data-dir", tmp_path / "data", "--smoke")
    )


@pytest.mark.slow
def test_paths_with_markup_characters(tmp_path: Path):
    """[ and ] in a path are printed as they are, and eval still writes its results."""
    runs = tmp_path / "[bold]runs[/bold] [x]"
    result = vae("train", "-e", "quickstart", "--max-steps", 2, "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    run = runs / "quickstart" / "version_0"
    assert str(run) in " ".join(result.output.split())
    result = vae("eval", run, "-k", 2)
    assert result.exit_code == 0, result.output
    assert (run / "eval.json").is_file() and f"wrote {run / 'eval.json'}" in result.output
    assert str(run) in one_line_error(vae("eval", run / "nope"))
