"""`vae compare`: the same model and data under several likelihoods, one report.

Each likelihood is trained with training.fit (or an existing run is taken as is) and scored
with training.evaluate_checkpoint, so the numbers are exactly those `vae train` and `vae eval`
give. Bits/dim are on the 8-bit scale for every family that models 8-bit data (densities on
[0, 1] get the log2(256) offset), so they compare across families; Bernoulli scores
binarised data, a different data set, and the report says so.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from vae_cli import report, runs
from vae_cli.errors import VaeError
from vae_cli.model.likelihoods import LIKELIHOODS
from vae_cli.settings import Config, RunSettings
from vae_cli.train.module import VAEModule

DATA_TEXT = {"binary": "binarised", "unit": "dequantised", "discrete": "8-bit"}


def applicable(dataset: str) -> list[str]:
    """Families that model this dataset: binary-only data gets the binary families, 8-bit
    data every family (Bernoulli on binarised draws of it)."""
    if dataset == "binarized-mnist":
        return [name for name, cls in LIKELIHOODS.items() if cls.support == "binary"]
    return list(LIKELIHOODS)


def parse_likelihoods(text: str | None, dataset: str) -> list[str]:
    if not text:
        return applicable(dataset)
    names = [t.strip() for t in text.split(",") if t.strip()]
    for name in names:
        if name not in LIKELIHOODS:
            from vae_cli.errors import unknown

            raise unknown("likelihood", name, LIKELIHOODS)
    if len(set(names)) != len(names):
        raise VaeError(f"--likelihoods lists a family twice: {text}")
    return names


@dataclass
class Row:
    likelihood: str
    data: str
    n_examples: int
    elbo: float
    iw_nll: float | None
    bpd_elbo: float
    bpd_iw: float | None
    recon: float
    kl: float
    active_units: int
    latent_dim: int
    train_wall_s: float | None
    eval_wall_s: float
    run_dir: str


def evaluate_run(
    run_dir: Path,
    iw_samples: int,
    train_wall_s: float | None,
    overrides: dict[str, Any] | None = None,
    run: RunSettings | None = None,
) -> tuple[Row, VAEModule]:
    """Score a run exactly as `vae eval` does (the same loaded module, data and numbers)."""
    from vae_cli.train.evaluate import evaluate
    from vae_cli.train.load import load_run

    ckpt = runs.checkpoint_in(run_dir)
    loaded = load_run(ckpt, overrides, run_dir=run_dir)
    res = evaluate(loaded, iw_samples, chunk=min(iw_samples, 100) or 1, run=run)
    assert res is not None  # one process: this is global rank 0
    row = Row(
        likelihood=loaded.cfg.likelihood,
        data=DATA_TEXT[loaded.datamodule.support],
        n_examples=res["n_examples"],
        elbo=res["elbo"],
        iw_nll=-res["iw"] if "iw" in res else None,
        bpd_elbo=res["bpd_elbo"],
        bpd_iw=res.get("bpd_iw"),
        recon=res["recon"],
        kl=res["kl"],
        active_units=res["active_units"],
        latent_dim=sum(res["latent_dims"]),
        train_wall_s=train_wall_s,
        eval_wall_s=res["wall_time_s"],
        run_dir=str(run_dir),
    )
    return row, loaded.module


def run_compare(
    base: Config,
    likelihoods: list[str],
    out_dir: Path,
    iw_samples: int = 100,
    existing: list[Path] | None = None,
    data_dir: str | None = None,
    console: Console | None = None,
    run: RunSettings | None = None,
) -> list[Row]:
    """Train base under each likelihood (or take `existing` run dirs) and write the report.
    `run`: hardware and output settings of the training and evaluation runs."""
    from vae_cli.train.fit import fit

    console = console or Console()
    rows: list[Row] = []
    overrides = {"data_dir": data_dir} if data_dir else None
    if existing:
        datasets = set()
        for run_dir in existing:
            row, module = evaluate_run(Path(run_dir), iw_samples, None, overrides, run)
            datasets.add(module.cfg.dataset)
            rows.append(row)
            save_figure(module, out_dir / "figures" / f"{row.likelihood}.png", run=run_dir)
        if len(datasets) > 1:
            raise VaeError(
                f"the runs were trained on different datasets {sorted(datasets)}: compare like with like"
            )
    else:
        for name in likelihoods:
            cfg = dataclasses.replace(
                base, likelihood=name, experiment=f"compare-{base.dataset}-{name}"
            ).validate()
            console.rule(f"{name}")
            start = time.perf_counter()
            run_dir = fit(cfg, console=console, run=run)
            wall = time.perf_counter() - start
            assert run_dir is not None  # fit returns None only for smoke runs
            row, module = evaluate_run(run_dir, iw_samples, wall, run=run)
            rows.append(row)
            save_figure(module, out_dir / "figures" / f"{name}.png", run=run_dir)
    write_report(rows, out_dir, iw_samples, base if not existing else None)
    console.print(rich_table(rows, iw_samples))
    for name in ("results.md", "results.csv", "results.json"):
        console.print(f"wrote {out_dir / name}", markup=False)
    console.print(f"wrote {len(rows)} figures under {out_dir / 'figures'}", markup=False)
    return rows


def save_figure(module: VAEModule, path: Path, n: int = 64, seed: int = 0, run: str | Path = "") -> Path:
    """The mean grid beside the stochastic grid, both decoded from the same n prior draws,
    titled, under a caption naming the run (when given) and the likelihood."""
    from vae_cli.train.sample import SAMPLE_TITLES, sample_images

    panels = [
        report.Panel(sample_images(module, n, s, seed=seed), SAMPLE_TITLES[s], 8) for s in (False, True)
    ]
    caption = report.run_caption(run or module.cfg.experiment, module.cfg.likelihood, None)
    return report.save_panels(panels, path, caption)


COLUMNS = (
    ("likelihood", "likelihood"),
    ("data", "data"),
    ("elbo", "ELBO"),
    ("iw_nll", "IW-NLL"),
    ("bpd_elbo", "bpd ELBO"),
    ("bpd_iw", "bpd IW"),
    ("recon", "recon"),
    ("kl", "KL"),
    ("active_units", "active"),
    ("train_wall_s", "train s"),
    ("eval_wall_s", "eval s"),
)


def _cell(key: str, value: Any, latent_dim: int) -> str:
    if value is None:
        return "-"
    if key == "active_units":
        return f"{value}/{latent_dim}"
    if key.startswith("bpd"):
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:.1f}" if key.endswith("wall_s") else f"{value:.2f}"
    return str(value)


def table_cells(rows: list[Row]) -> list[list[str]]:
    return [[_cell(k, getattr(r, k), r.latent_dim) for k, _ in COLUMNS] for r in rows]


def markdown(rows: list[Row], iw_samples: int, base: Config | None) -> str:
    heads = [f"{h} (K={iw_samples})" if "IW" in h else h for _, h in COLUMNS]
    out = io.StringIO()
    out.write("| " + " | ".join(heads) + " |\n")
    out.write("|" + "|".join("---" if i < 2 else "---:" for i in range(len(heads))) + "|\n")
    for cells in table_cells(rows):
        out.write("| " + " | ".join(cells) + " |\n")
    n = {r.n_examples for r in rows}
    out.write(
        f"\nTest set: {', '.join(map(str, sorted(n)))} examples. ELBO, IW-NLL (= minus the "
        "importance-weighted bound), recon (E_q log p(x|z)) and KL are in nats per example; "
        "bpd = bits/dim of the NLL bound, with log2(256) = 8 added for densities on [0, 1] "
        "of dequantised (k+u)/256 data, so every family that models the 8-bit data is on one "
        "scale. Bernoulli scores binarised data, a different data set: its numbers are not "
        "comparable with the others. active: latent units with Cov_x(E_q[z|x]) > 0.01. "
        "Wall times are measured on whatever machine ran the command.\n"
    )
    if base is not None:
        keys = ("dataset", "arch", "latent_dim", "hidden_dim", "batch_size", "epochs", "max_steps", "lr",
                "seed", "sigma", "mixture_components")  # fmt: skip
        out.write("\nShared config: " + ", ".join(f"{k}={getattr(base, k)}" for k in keys) + ".\n")
    return out.getvalue()


def write_report(rows: list[Row], out_dir: Path, iw_samples: int, base: Config | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    runs.write_atomic(out_dir / "results.md", markdown(rows, iw_samples, base))
    buf = io.StringIO()
    fields = [f.name for f in dataclasses.fields(Row)]
    writer = csv.DictWriter(buf, fieldnames=[*fields, "iw_samples"])
    writer.writeheader()
    for r in rows:
        writer.writerow({**dataclasses.asdict(r), "iw_samples": iw_samples})
    runs.write_atomic(out_dir / "results.csv", buf.getvalue())
    payload = {"iw_samples": iw_samples, "rows": [dataclasses.asdict(r) for r in rows]}
    if base is not None:
        payload["config"] = base.to_dict()
    runs.write_atomic(out_dir / "results.json", json.dumps(payload, indent=2) + "\n")


def rich_table(rows: list[Row], iw_samples: int) -> Table:
    table = Table(title=f"likelihood comparison (IW K={iw_samples})", header_style="bold")
    for i, (_, head) in enumerate(COLUMNS):
        table.add_column(head, justify="left" if i < 2 else "right")
    for cells in table_cells(rows):
        table.add_row(*cells)
    return table
