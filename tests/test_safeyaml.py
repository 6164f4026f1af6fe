"""safeyaml.py: a YAML file a user wrote is read as the plain data yaml.safe_load gives, and
what safe_load would accept silently (a merge key, a key given twice inside a nested mapping)
is a one-line error naming its line. The command-line cases (aliases, bombs, non-UTF-8,
folders, huge files) are in tests/test_bad_inputs.py::test_bad_yaml_file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vae_cli import safeyaml
from vae_cli.errors import VaeError


def test_plain_documents_read_as_yaml_safe_load_reads_them(tmp_path: Path):
    text = "a: 1\nb: [0.5, x, true, null, 1e-3]\nc:\n  d: {e: 2, f: 'yes'}\n  g: |\n    two\n    lines\n"
    (tmp_path / "c.yaml").write_text(text)
    assert safeyaml.load(tmp_path / "c.yaml") == yaml.safe_load(text)


def test_a_merge_key_without_an_alias_is_refused_with_its_line(tmp_path: Path):
    """`<<: {...}` merges an inline mapping with no alias, so the alias check never sees it."""
    (tmp_path / "c.yaml").write_text("lr: 0.1\n<<: {epochs: 1}\n")
    assert yaml.safe_load((tmp_path / "c.yaml").read_text()) == {"lr": 0.1, "epochs": 1}  # what it would do
    with pytest.raises(VaeError, match=r"uses a YAML merge key \(<<\) at line 2"):
        safeyaml.load(tmp_path / "c.yaml")


def test_a_key_given_twice_in_a_nested_mapping_is_refused_with_its_line(tmp_path: Path):
    (tmp_path / "e.yaml").write_text("experiments:\n  q:\n    epochs: 1\n    lr: 0.1\n    epochs: 2\n")
    with pytest.raises(VaeError, match=r'gives the key "epochs" twice \(again at line 5\)') as e:
        safeyaml.load(tmp_path / "e.yaml")
    assert "\n" not in str(e.value)
