"""A sweep's report: one row per setting (seeds aggregated), as a table, csv, json, md and plots.

Read from the members' directories only (eval.json, error.txt, metrics.csv), so `vae results`
can reprint it at any time, also while members still run. A member that failed or has not
finished is listed with its state and error, never dropped silently.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from vae_cli import report, runs
from vae_cli.sweep.member import EVAL, FAILED, FIGURES, FINISHED, state

# (key, heading) of the aggregated quantities; all in nats per example except bpd and counts
METRICS = (
    ("elbo", "ELBO"),
    ("iw_nll", "IW-NLL"),
    ("bpd_elbo", "bpd ELBO"),
    ("bpd_iw", "bpd IW"),
    ("kl", "KL"),
    ("active_units", "active"),
)
MEMBER_COLUMNS = ("elbo", "iw_nll", "bpd_elbo", "bpd_iw", "recon", "kl", "active_units", "latent_dim",
                  "train_wall_s", "eval_wall_s", "run_dir")  # fmt: skip


@dataclass
class MemberResult:
    name: str
    settings: dict[str, Any]
    state: str
    error: str
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def setting(self) -> tuple[tuple[str, Any], ...]:
        """The row this member belongs to: its settings but the seed (`compare --run` members
        carry their run, so that unrelated runs are never pooled as seeds of one setting)."""
        return tuple((k, v) for k, v in self.settings.items() if k != "seed")


@dataclass
class SettingRow:
    setting: tuple[tuple[str, Any], ...]
    n: int
    stats: dict[str, tuple[float | None, float | None]]  # key -> (mean, std over seeds)


def member_values(ev: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one member's eval.json that the report shows."""
    return {
        "elbo": ev["elbo"],
        "iw_nll": -ev["iw"] if "iw" in ev else None,
        "bpd_elbo": ev["bpd_elbo"],
        "bpd_iw": ev.get("bpd_iw"),
        "recon": ev["recon"],
        "kl": ev["kl"],
        "active_units": ev.get("active_units"),
        "latent_dim": sum(ev.get("latent_dims") or [0]) or None,
        "train_wall_s": ev.get("train_wall_s"),
        "eval_wall_s": ev.get("wall_time_s"),
        "run_dir": ev.get("run_dir", ""),
        "n_examples": ev.get("n_examples"),
    }


def read_values(path: Path) -> dict[str, Any]:
    """member_values of an eval.json; ValueError (one line) when it is not one."""
    try:
        ev = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    if not isinstance(ev, dict):
        raise ValueError(f"a {type(ev).__name__}, not a mapping")
    try:
        values = member_values(ev)
        numbers = [values[k] for k in ("elbo", "bpd_elbo", "recon", "kl")]
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in numbers):
            raise TypeError("non-numeric results")
        values["run_dir"] = str(values["run_dir"])
    except KeyError as e:
        raise ValueError(f"no {e.args[0]!r}") from None
    except TypeError as e:
        raise ValueError(str(e)) from None
    return values


def collect(sweep_dir: Path, members: list[dict[str, Any]]) -> list[MemberResult]:
    out = []
    for m in members:
        member_dir = sweep_dir / m["name"]
        status, detail = state(member_dir)
        values = {}
        if status == FINISHED:
            try:
                values = read_values(member_dir / EVAL)
            except ValueError as e:  # damaged: listed as failed, the others still reported
                status, detail = (
                    FAILED,
                    f"{member_dir / EVAL} is damaged ({e}): delete it and re-run the sweep",
                )
            else:
                inside = member_dir / Path(values["run_dir"]).name
                if inside.is_dir():  # the member's own run: found where the sweep is now
                    values["run_dir"] = str(inside)
        out.append(MemberResult(m["name"], dict(m["settings"]), status, detail, values))
    return out


def mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None


def aggregate(results: list[MemberResult]) -> list[SettingRow]:
    """One row per setting in the order the grid lists them; means and sample std over seeds."""
    groups: dict[tuple, list[MemberResult]] = {}
    for r in results:
        groups.setdefault(r.setting, []).append(r)
    rows = []
    for setting, members in groups.items():
        done = [m for m in members if m.state == FINISHED]
        stats = {}
        for key, _ in METRICS:
            xs = [float(m.values[key]) for m in done if m.values.get(key) is not None]
            stats[key] = mean_std(xs)
        rows.append(SettingRow(setting, len(done), stats))
    return rows


def _num(key: str, x: float | None) -> str:
    if x is None:
        return "-"
    if key.startswith("bpd"):
        return f"{x:.4f}"
    return f"{x:.1f}" if key == "active_units" else f"{x:.2f}"


def cell(key: str, mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return _num(key, mean) if std is None else f"{_num(key, mean)} ± {_num(key, std)}"


def setting_keys(rows: list[SettingRow]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k, _ in r.setting)) or ["setting"]


def table_cells(rows: list[SettingRow]) -> tuple[list[str], list[list[str]]]:
    keys = setting_keys(rows)
    heads = [*keys, "n", *(h for _, h in METRICS)]
    cells = []
    for r in rows:
        s = dict(r.setting)
        cells.append([*(str(s.get(k, "(base)")) for k in keys), str(r.n),
                      *(cell(k, *r.stats[k]) for k, _ in METRICS)])  # fmt: skip
    return heads, cells


def rich_table(rows: list[SettingRow], title: str, width: int = 10**6) -> RenderableType:
    """The console table. No cell is ever cut to "…" or dropped at the terminal's edge: a
    setting's value names the row (and is typed to find the member), and a number cut short is
    a wrong number, and a name split mid-word is hard to read. Boxed when every cell fits whole
    on one line within `width` columns; else without the box's borders; else one block per
    setting (a name too long even for that folds)."""
    heads, cells = table_cells(rows)
    n_keys = len(setting_keys(rows))
    widths = [max(len(text) for text in [head, *(row[i] for row in cells)]) for i, head in enumerate(heads)]
    needed = sum(widths)  # every cell whole on one line; else one block per setting
    if needed + 3 * len(heads) + 1 <= width:
        style: dict[str, Any] = {}
    elif needed + 2 * len(heads) <= width:
        style = {"box": box.SIMPLE_HEAD, "show_edge": False, "collapse_padding": True}
    else:
        return _blocks(heads, cells, n_keys, title)
    table = Table(title=title, header_style="bold", **style)
    for i, head in enumerate(heads):
        table.add_column(head, justify="left" if i < n_keys else "right", no_wrap=True, min_width=widths[i])
    for row in cells:
        table.add_row(*row)
    return table


def _blocks(heads: list[str], cells: list[list[str]], n_keys: int, title: str) -> RenderableType:
    """The table turned on its side for a narrow terminal: per setting, one line per number."""
    parts: list[RenderableType] = [Text(title, style="italic", justify="center")]
    for row in cells:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True)
        grid.add_column(justify="right", overflow="fold")
        for head, value in zip(heads[n_keys:], row[n_keys:], strict=True):
            grid.add_row(head, value)
        name = ", ".join(f"{h}={v}" for h, v in zip(heads[:n_keys], row[:n_keys], strict=True))
        parts += [Text(name, style="bold", overflow="fold"), Padding(grid, (0, 0, 0, 2))]
    return Group(*parts)


def unfinished(results: list[MemberResult]) -> list[MemberResult]:
    return [r for r in results if r.state != FINISHED]


def markdown(rows: list[SettingRow], results: list[MemberResult], info: dict[str, Any]) -> str:
    heads, cells = table_cells(rows)
    k = info.get("iw_samples")
    heads = [f"{h} (K={k})" if "IW" in h else h for h in heads]
    n_keys = len(setting_keys(rows))
    out = io.StringIO()
    out.write("| " + " | ".join(heads) + " |\n")
    out.write("|" + "|".join("---" if i < n_keys else "---:" for i in range(len(heads))) + "|\n")
    for row in cells:
        out.write("| " + " | ".join(row) + " |\n")
    n_test = sorted({r.values["n_examples"] for r in results if r.values.get("n_examples")})
    out.write(
        f"\nMean ± sample standard deviation over the n finished seeds of each setting (no ± when "
        f"n = 1). Test set: {', '.join(map(str, n_test)) or '-'} examples. ELBO, IW-NLL (= minus the "
        "importance-weighted bound) and KL are in nats per example; bpd = bits/dim of the NLL bound, "
        "with log2(256) = 8 added for densities on [0, 1] of dequantised (k+u)/256 data, so every "
        "family that models the 8-bit data is on one scale. active: latent units with "
        "Cov_x(E_q[z|x]) > 0.01.\n"
    )
    if any(k == "likelihood" and v == "bernoulli" for r in rows for k, v in r.setting):
        out.write(
            "\nBernoulli scores binarised data, a different data set: its numbers are not comparable "
            "with the other families'.\n"
        )
    missing = unfinished(results)
    if missing:
        out.write("\nMembers not in the table:\n\n")
        for r in missing:
            out.write(f"- `{r.name}`: {r.state}{': ' + r.error if r.error else ''}\n")
    if info.get("shared"):
        out.write("\nShared config: " + ", ".join(f"{k}={v}" for k, v in info["shared"].items()) + ".\n")
    return out.getvalue()


def to_csv(header: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_report(sweep_dir: Path, results: list[MemberResult], info: dict[str, Any]) -> list[Path]:
    """results.{md,csv,json}, members.csv and the two plots; returns the paths written."""
    rows = aggregate(results)
    keys = setting_keys(rows)
    flat = []
    for r in rows:
        d: dict[str, Any] = {k: dict(r.setting).get(k, "") for k in keys}
        d["n"] = r.n
        for key, _ in METRICS:
            d[f"{key}_mean"], d[f"{key}_std"] = r.stats[key]
        flat.append(d)
    header = [*keys, "n", *(f"{k}_{s}" for k, _ in METRICS for s in ("mean", "std"))]
    setting_names = list(dict.fromkeys(k for r in results for k in r.settings))
    member_rows = [
        {"member": r.name, **r.settings, "state": r.state, "error": r.error,
         **{c: r.values.get(c) for c in MEMBER_COLUMNS}}
        for r in results
    ]  # fmt: skip
    member_header = ["member", *setting_names, "state", "error", *MEMBER_COLUMNS]
    paths = [sweep_dir / n for n in ("results.md", "results.csv", "results.json", "members.csv")]
    runs.write_atomic(paths[0], markdown(rows, results, info))
    runs.write_atomic(paths[1], to_csv(header, flat))
    payload = {**info, "rows": flat, "members": member_rows}
    runs.write_atomic(paths[2], json.dumps(payload, indent=2) + "\n")
    runs.write_atomic(paths[3], to_csv(member_header, member_rows))
    where = f"{sweep_dir.name} ({len(results)} member{'s' if len(results) != 1 else ''})"
    figures = sweep_dir / FIGURES
    plots = (plot_val_curves(results, figures / "val-elbo.png", where),
             plot_nll(rows, results, figures / "nll.png", where, info.get("iw_samples")))  # fmt: skip
    paths += [p for p in plots if p]
    return paths


def label(setting: tuple[tuple[str, Any], ...]) -> str:
    return ",".join(f"{k}={v}" for k, v in setting) or "(base)"


def plot_val_curves(results: list[MemberResult], out: Path, where: str = "") -> Path | None:
    """Validation ELBO per epoch of every finished member, one colour per setting."""
    curves: dict[str, list[list[tuple[int, float]]]] = {}
    for r in results:
        metrics = Path(r.values.get("run_dir") or "") / "metrics.csv"
        if r.state != FINISHED or not metrics.is_file():
            continue
        points = [(int(m["epoch"]), float(m["val/elbo"])) for m in report.read_metrics(metrics)
                  if m.get("val/elbo")]  # fmt: skip
        curves.setdefault(label(r.setting), []).append(points)
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for i, (name, seeds) in enumerate(curves.items()):
        for j, points in enumerate(seeds):
            ax.plot([e + 1 for e, _ in points], [v for _, v in points], color=f"C{i % 10}", alpha=0.8,
                    marker="o", markersize=2 if len(points) > 1 else 6,  # one point: visible
                    label=name if j == 0 else None)  # fmt: skip
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # whole epochs
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation ELBO (nats per example)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    caption(
        fig,
        f"{where}: validation ELBO after each epoch (higher is better); "
        "one colour per setting, one line per seed",
    )
    return _save(fig, out)


def plot_nll(
    rows: list[SettingRow], results: list[MemberResult], out: Path, where: str = "", k: int | None = None
) -> Path | None:
    """IW-NLL (or -ELBO without an IW bound) per setting: seeds as dots, mean ± std as a bar."""
    key = "iw_nll" if any(r.stats["iw_nll"][0] is not None for r in rows) else "elbo"
    rows = [r for r in rows if r.stats[key][0] is not None]
    if not rows:
        return None
    sign = 1.0 if key == "iw_nll" else -1.0
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.0 + 0.8 * len(rows)), 4), dpi=120)
    for i, r in enumerate(rows):
        mean, std = r.stats[key]
        ax.errorbar([i], [sign * mean], yerr=[std or 0.0], fmt="o", color="C0", capsize=4)  # type: ignore[operator]
        seeds = [sign * float(m.values[key]) for m in results if m.setting == r.setting
                 and m.state == FINISHED and m.values.get(key) is not None]  # fmt: skip
        ax.scatter([i] * len(seeds), seeds, color="C1", s=10, zorder=3)
    ax.set_xticks(range(len(rows)), [label(r.setting) for r in rows], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(("IW-NLL" if key == "iw_nll" else "-ELBO") + " (nats per example)")
    ax.grid(alpha=0.3, axis="y")
    what = (
        f"test IW-NLL (minus the IW bound, K={k})"
        if key == "iw_nll"
        else "test -ELBO (no IW bound was computed)"
    )
    caption(
        fig, f"{where}: {what} per setting, lower is better; orange dots: seeds, blue: mean ± std over seeds"
    )
    return _save(fig, out)


def caption(fig: Any, text: str) -> None:
    """A caption above the axes, wrapped to the figure's width (never cut at its edge)."""
    chars = int(fig.get_figwidth() * 120 / 7.5)  # ~7.5 px per character at fontsize 8, 120 dpi
    fig.suptitle(textwrap.fill(text, max(chars, 30)), fontsize=8)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp)
    _pyplot().close(fig)
    tmp.replace(out)
    return out
