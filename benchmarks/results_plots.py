"""The results page's figures, drawn from a finished suite's folder.

    python benchmarks/results_plots.py SUITE_FOLDER OUT_FOLDER

Reads each dataset folder's ``report.json`` (``SUITE_FOLDER/<dataset>/report.json``, written by
``altmodal benchmark --suite``; a folder without one is left out and named) and writes three
figures into ``OUT_FOLDER``:

- ``results-accuracy.png``: fused test accuracy per dataset (one panel each, its own scale) and
  strategy: each seed as a small dot, the mean as a marker with one sample standard deviation
  over seeds; the default (``mla``) in red, scikit-learn's reference rows in grey, the other
  strategies in other colours, and the best modality trained alone in black;
- ``results-missing.png``: fused test accuracy against the test-time missing rate, one panel per
  dataset, in the same colours;
- ``results-laziness.png``: each modality's accuracy inside the model over its accuracy trained
  alone (mean over seeds), per dataset and strategy (1 = not lazy at all); the least-trained
  modality is named where it falls below 0.9.

The tables are built by the pure functions below (tested); only the ``draw_*`` functions need
matplotlib (``pip install "altmodal[plots]"``).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT = "mla"
REFERENCE = "sklearn:"
ALONE_ROW = "each modality alone"
"""The label of the main table's row holding each modality's accuracy trained alone."""
BEST_ALONE = "best modality alone"
LAZY = 0.9
"""Below this ratio a modality is named in the laziness figure (the report's threshold of laziness)."""
KINDS = ("default", "other", "reference", "alone")
FIGURES = ("results-accuracy.png", "results-missing.png", "results-laziness.png")


@dataclass(frozen=True)
class Point:
    """One strategy's values at one place of one dataset's panel: per seed, in seed order."""

    dataset: str
    strategy: str
    x: str
    """The strategy's own column (accuracy), the missing rate, or the modality (laziness)."""
    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values) if self.values else math.nan

    @property
    def sd(self) -> float:
        """The sample standard deviation over seeds (0 for one seed), as the reports' tables give it."""
        n = len(self.values)
        if n < 2:
            return 0.0 if n else math.nan
        return math.sqrt(sum((v - self.mean) ** 2 for v in self.values) / (n - 1))


def kind(strategy: str) -> str:
    """'default', 'reference' (a scikit-learn row), 'alone' or 'other'."""
    if strategy == DEFAULT:
        return "default"
    if strategy.startswith(REFERENCE):
        return "reference"
    return "alone" if strategy == BEST_ALONE else "other"


def read_suite(folder: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each dataset folder's report (by folder name, in name order) and the folders without one."""
    if not folder.is_dir():
        raise SystemExit(f"results_plots: {folder}: no such folder (give a suite's output folder)")
    reports, skipped = {}, []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in ("cache", "runs")):
        path = sub / "report.json"
        if path.is_file():
            reports[sub.name] = json.loads(path.read_text())
        else:
            skipped.append(sub.name)
    if not reports:
        raise SystemExit(f"results_plots: {folder}: no <dataset>/report.json here (give a suite's output folder)")
    return reports, skipped


def column(table: Mapping[str, Any], name: str) -> dict[str, list[float]]:
    """Row label -> the column's values per seed (rows without the column left out)."""
    return {row["label"]: row["cells"][name] for row in table["rows"] if row["cells"].get(name)}


def accuracy_points(dataset: str, report: Mapping[str, Any]) -> list[Point]:
    """Each strategy's fused test accuracy, then the best modality trained alone (by mean)."""
    main = report["tables"]["main"]
    points = [Point(dataset, s, s, tuple(v)) for s, v in column(main, "fused accuracy").items() if s != ALONE_ROW]
    alone = next((row["cells"] for row in main["rows"] if row["label"] == ALONE_ROW), {})
    solo = [Point(dataset, BEST_ALONE, m, tuple(alone.get(f"{m} (unimodal)", []))) for m in report["modalities"]]
    solo = [p for p in solo if p.values]
    return points + ([max(solo, key=lambda p: p.mean)] if solo else [])


def table_points(dataset: str, report: Mapping[str, Any], name: str) -> list[Point]:
    """Each row's values in each column of the report's table ``name`` (none without the table)."""
    table = report["tables"].get(name, {"columns": [], "rows": []})
    return [
        Point(dataset, row["label"], col, tuple(row["cells"][col]))
        for row in table["rows"]
        for col in table["columns"]
        if row["cells"].get(col)
    ]


def missing_points(dataset: str, report: Mapping[str, Any]) -> list[Point]:
    """Each strategy's fused test accuracy at each test-time missing rate (0 = complete)."""
    return table_points(dataset, report, "missing_test")


def laziness_points(dataset: str, report: Mapping[str, Any]) -> list[Point]:
    """Each strategy's ratio per modality: accuracy inside the model over accuracy alone."""
    return table_points(dataset, report, "laziness")


def strategies(points: Iterable[Point]) -> list[str]:
    """The strategies of ``points``: the default, the others, the reference rows, then alone
    (each group in the order first met)."""
    seen = list(dict.fromkeys(p.strategy for p in points))
    return sorted(seen, key=lambda s: KINDS.index(kind(s)))


def by_dataset(points: Iterable[Point]) -> dict[str, list[Point]]:
    out: dict[str, list[Point]] = {}
    for p in points:
        out.setdefault(p.dataset, []).append(p)
    return out


def lowest(points: Sequence[Point]) -> dict[tuple[str, str], Point]:
    """(dataset, strategy) -> its least-trained modality's point (lowest mean ratio)."""
    out: dict[tuple[str, str], Point] = {}
    for p in points:
        key = (p.dataset, p.strategy)
        if key not in out or p.mean < out[key].mean:
            out[key] = p
    return out


# ----- drawing (matplotlib) --------------------------------------------------------------------
GREYS = ("#555555", "#8c8c8c", "#b5b5b5", "#333333")
OTHERS = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22")
MARKERS = {"default": "o", "reference": "sDdp", "other": "^vP*Xh<>", "alone": "_"}


def styles(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A colour and marker per strategy: the default red, reference rows grey, alone black."""
    out, counts = {}, dict.fromkeys(KINDS, 0)
    for name in names:
        k = kind(name)
        i = counts[k]
        counts[k] += 1
        palette = {"default": ("#d62728",), "alone": ("black",), "reference": GREYS, "other": OTHERS}[k]
        colour = palette[i % len(palette)]
        marker = MARKERS[k][i % len(MARKERS[k])]
        out[name] = {"color": colour, "marker": marker, "markersize": 9 if k in ("default", "alone") else 7}
    return out


def pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit('results_plots: needs matplotlib: pip install "altmodal[plots]"') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def panels(plt: Any, count: int, width: float = 2.5, height: float = 2.3) -> tuple[Any, list[Any]]:
    cols = min(count, 5)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.8), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def save(plt: Any, fig: Any, style: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """The figure with a legend of the strategies above it, as a PNG."""
    handles = [plt.Line2D([], [], linestyle="none", label=name, **s) for name, s in style.items()]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 7), frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    fig.savefig(path, dpi=90, pil_kwargs={"optimize": True})
    plt.close(fig)


def draw_accuracy(points: Sequence[Point], path: Path) -> None:
    plt = pyplot()
    names = strategies(points)
    style = styles(names)
    groups = by_dataset(points)
    fig, axes = panels(plt, len(groups))
    for ax, (dataset, group) in zip(axes, groups.items()):
        for p in group:
            i, s = names.index(p.strategy), style[p.strategy]
            ax.plot([i] * len(p.values), p.values, ".", color=s["color"], alpha=0.35, markersize=4)
            ax.errorbar(i, p.mean, yerr=p.sd, capsize=3, linestyle="none", **s)
        ax.set_title(dataset, fontsize=10)
        ax.set_xticks([])
        ax.tick_params(labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("fused test accuracy")
    save(plt, fig, style, path)


def draw_missing(points: Sequence[Point], path: Path) -> None:
    plt = pyplot()
    style = styles(strategies(points))
    fig, axes = panels(plt, len(by_dataset(points)))
    for ax, (dataset, group) in zip(axes, by_dataset(points).items()):
        for name in strategies(group):
            line = [p for p in group if p.strategy == name]
            rates = [float(p.x) for p in line]
            ax.errorbar(rates, [p.mean for p in line], yerr=[p.sd for p in line], capsize=3, **style[name])
        ax.set_title(dataset, fontsize=10)
        ax.set_xticks(sorted({float(p.x) for p in group}))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fused test accuracy")
    for ax in axes[-5:]:
        ax.set_xlabel("test-time missing rate", fontsize=9)
    save(plt, fig, style, path)


def draw_laziness(points: Sequence[Point], path: Path) -> None:
    plt = pyplot()
    names, datasets = strategies(points), list(by_dataset(points))
    style = styles(names)
    fig, ax = plt.subplots(figsize=(12, 4.2))
    step = 0.7 / max(len(names), 1)

    def place(p: Point) -> float:  # the dataset's slot, the strategies side by side in it
        return datasets.index(p.dataset) - 0.35 + step * (names.index(p.strategy) + 0.5)

    for p in points:
        ax.plot(place(p), p.mean, linestyle="none", alpha=0.8, **{**style[p.strategy], "markersize": 6})
    for p in lowest(points).values():
        if p.mean < LAZY:
            ax.annotate(p.x, (place(p), p.mean), textcoords="offset points", xytext=(4, -3), fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(datasets)), datasets, fontsize=9)
    ax.set_ylabel("accuracy inside the model / alone")
    ax.grid(axis="y", alpha=0.3)
    save(plt, fig, style, path)


def main(argv: Sequence[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python benchmarks/results_plots.py SUITE_FOLDER OUT_FOLDER")
    reports, skipped = read_suite(Path(argv[0]))
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    tables = [
        [p for name, report in reports.items() for p in build(name, report)]
        for build in (accuracy_points, missing_points, laziness_points)
    ]
    for draw, points, name in zip((draw_accuracy, draw_missing, draw_laziness), tables, FIGURES):
        draw(points, out / name)
        print(f"wrote {out / name}")
    if skipped:
        print(f"left out (no report.json): {', '.join(skipped)}")


if __name__ == "__main__":
    main(sys.argv[1:])
