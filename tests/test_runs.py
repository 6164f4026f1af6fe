"""runs.py: runs started together get their own folders."""

from __future__ import annotations

from pathlib import Path


def test_runs_started_together_get_their_own_folders(tmp_path: Path):
    from concurrent.futures import ThreadPoolExecutor

    from vae_cli.runs import claim_version

    (tmp_path / "exp" / "version_0").mkdir(parents=True)
    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(lambda _: claim_version(tmp_path / "exp"), range(16)))
    assert sorted(versions) == list(range(1, 17))
