"""The benchmark report: tables (markdown, CSV, JSON) and figures (PNG) from the runs' metrics.

Every number comes from the runs' ``metrics.json`` (and ``missing.json``, ``history.csv``);
nothing is recomputed from predictions here. A value is the mean over seeds with the sample
standard deviation; the best mean of each column of the main and ablation tables is in bold.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from altmodal.benchmark import Cell, labels, run_path
from altmodal.metrics import mean_std
from altmodal.runs import atomic_write, read_csv, write_json

Results = Mapping[Cell, Mapping[str, Any]]
Table = dict[str, Any]  # {"columns": [...], "rows": [{"label": str, "cells": {column: [values]}}]}


def values(results: Results, group: str, label: str, path: Sequence[str]) -> list[float]:
    """The metric at ``path`` in metrics.json of every seed of (group, label)."""
    out = []
    for cell, result in results.items():
        if cell.group == group and cell.label == label:
            node: Any = result["metrics"]
            for key in path:
                node = node.get(key, {}) if isinstance(node, Mapping) else {}
            if isinstance(node, (int, float)):
                out.append(float(node))
    return out


def table(results: Results, group: str, columns: Mapping[str, Sequence[str]], rows: Sequence[str]) -> Table:
    return {
        "columns": list(columns),
        "rows": [
            {"label": label, "cells": {name: values(results, group, label, path) for name, path in columns.items()}}
            for label in rows
        ],
    }


def accuracy_columns(modalities: Sequence[str]) -> dict[str, list[str]]:
    columns = {"fused accuracy": ["test", "fused", "accuracy"], "macro-F1": ["test", "fused", "macro_f1"]}
    columns.update({f"{m} (unimodal)": ["test", "unimodal", m, "accuracy"] for m in modalities})
    columns["s/epoch"] = ["seconds_per_epoch"]
    return columns


def build_tables(results: Results, grid: Sequence[Cell], modalities: Sequence[str]) -> dict[str, Table]:
    strategies = labels(grid, "main")
    tables: dict[str, Table] = {}
    main = table(results, "main", accuracy_columns(modalities), strategies)
    alone: dict[str, list[float]] = {
        f"{m} (unimodal)": values(results, "alone", m, ["test", "fused", "accuracy"]) for m in modalities
    }
    main["rows"].append({"label": "each modality alone", "cells": alone})
    tables["main"] = main
    tables["laziness"] = laziness(results, strategies, modalities)
    tables["missing_test"] = missing_test(results, strategies)
    tables["missing_train_test"] = missing_train_test(results, grid, strategies)
    main_results = [r for c, r in results.items() if c.group == "main"]
    subsets = list(main_results[0]["metrics"]["test"]["present"]) if main_results else []
    tables["present_subsets"] = table(
        results, "main", {name: ["test", "present", name, "accuracy"] for name in subsets}, strategies
    )
    if labels(grid, "ablation"):
        tables["ablation"] = table(results, "ablation", accuracy_columns(modalities), labels(grid, "ablation"))
    tables["modality_gap"] = analysis_table(results, strategies, "modality_gap", None)
    tables["entropy_auroc"] = analysis_table(results, strategies, "entropy", "auroc_neg_entropy_correct")
    tables["mean_entropy"] = analysis_table(results, strategies, "entropy", "mean_entropy")
    return tables


def laziness(results: Results, strategies: Sequence[str], modalities: Sequence[str]) -> Table:
    """Unimodal accuracy inside each model over the modality's accuracy trained alone (per seed)."""
    rows = []
    for label in strategies:
        cells = {}
        for m in modalities:
            inside = values(results, "main", label, ["test", "unimodal", m, "accuracy"])
            alone = values(results, "alone", m, ["test", "fused", "accuracy"])
            cells[m] = [a / b for a, b in zip(inside, alone) if b > 0]
        rows.append({"label": label, "cells": cells})
    return {"columns": list(modalities), "rows": rows}


def missing_test(results: Results, strategies: Sequence[str]) -> Table:
    rates: list[str] = ["0"]
    for result in results.values():
        rates += [r for r in result.get("missing", {}) if r not in rates]
    rows = []
    for label in strategies:
        cells: dict[str, list[float]] = {r: [] for r in rates}
        for cell, result in results.items():
            if cell.group == "main" and cell.label == label:
                cells["0"].append(result["metrics"]["test"]["fused"]["accuracy"])
                for rate, block in result.get("missing", {}).items():
                    cells[rate].append(block["accuracy"])
        rows.append({"label": label, "cells": cells})
    return {"columns": rates, "rows": rows}


def missing_train_test(results: Results, grid: Sequence[Cell], strategies: Sequence[str]) -> Table:
    rates = sorted({float(c.settings["train_missing_rate"]) for c in grid if c.group == "missing"})
    rows = []
    for label in strategies:
        cells = {"0": values(results, "main", label, ["test", "fused", "accuracy"])}
        for rate in rates:
            cells[f"{rate:g}"] = values(results, "missing", f"{label}@{rate:g}", ["test", "fused", "accuracy"])
        rows.append({"label": label, "cells": cells})
    return {"columns": ["0"] + [f"{r:g}" for r in rates], "rows": rows}


def analysis_table(results: Results, strategies: Sequence[str], section: str, key: str | None) -> Table:
    columns: list[str] = []
    rows = []
    for label in strategies:
        cells: dict[str, list[float]] = {}
        for cell, result in results.items():
            if cell.group != "main" or cell.label != label:
                continue
            for name, block in result["metrics"]["analyses"][section].items():
                value = block if key is None else block[key]
                if isinstance(value, (int, float)) and not math.isnan(value):
                    cells.setdefault(name, []).append(float(value))
                if name not in columns:
                    columns.append(name)
        rows.append({"label": label, "cells": cells})
    return {"columns": columns, "rows": rows}


def cell_values(t: Table, row: str, column: str) -> list[float]:
    """The per-seed values of one cell ([] when absent)."""
    return next((list(r["cells"].get(column, [])) for r in t["rows"] if r["label"] == row), [])


def cell_mean(t: Table, row: str, column: str) -> float:
    """The mean of one cell (NaN when the row, column or values are missing)."""
    for r in t["rows"]:
        if r["label"] == row and r["cells"].get(column):
            return mean_std(r["cells"][column])[0]
    return math.nan


def claims(tables: Mapping[str, Table], modalities: Sequence[str]) -> list[dict[str, Any]]:
    """The paper's claims (method.md section 2.4), each checked against the tables.

    Returns one entry per claim that the grid can answer: the claim, the evidence (numbers) and
    whether it held.
    """
    out: list[dict[str, Any]] = []
    strategies = [r["label"] for r in tables["main"]["rows"] if r["label"] != "each modality alone"]

    def add(claim: str, evidence: str, held: bool) -> None:
        out.append({"claim": claim, "evidence": evidence, "held": bool(held)})

    lazy = tables["laziness"]
    if "joint" in strategies:
        ratios = {m: cell_mean(lazy, "joint", m) for m in modalities}
        add(
            "joint training is lazy (a modality's accuracy inside the joint model is below 0.9 of its accuracy alone)",
            _pairs(ratios),
            min(ratios.values()) < 0.9,
        )
    if "mla" not in strategies:
        return out
    ratios = {m: cell_mean(lazy, "mla", m) for m in modalities}
    add("MLA removes laziness (every ratio at least 0.95)", _pairs(ratios), min(ratios.values()) >= 0.95)
    fused = {s: cell_mean(tables["main"], s, "fused accuracy") for s in strategies}
    others = [s for s in strategies if s != "mla"]
    if others:
        rival = max(others, key=fused.__getitem__)
        add(
            "MLA beats the baselines (fused accuracy)",
            _pairs(fused) + "; " + _versus(tables["main"], "mla", rival, "fused accuracy"),
            fused["mla"] >= fused[rival],
        )
    missing = tables["missing_test"]
    if len(missing["columns"]) > 1:
        top = missing["columns"][-1]
        drops = {s: cell_mean(missing, s, "0") - cell_mean(missing, s, top) for s in strategies}
        add(
            f"MLA degrades least when modalities go missing (accuracy lost from rate 0 to {top}, test only)",
            _pairs(drops),
            drops["mla"] <= min(drops.values()),
        )
    ablation = tables.get("ablation")
    if ablation is not None:
        mla = cell_mean(ablation, "MLA", "fused accuracy")
        for variant, what in (("no projection", "head gradient modification"), ("fixed fusion", "dynamic fusion")):
            other = cell_mean(ablation, variant, "fused accuracy")
            if not math.isnan(other):
                add(
                    f"{what} helps (MLA vs {variant}, fused accuracy)",
                    _versus(ablation, "MLA", variant, "fused accuracy"),
                    mla > other,
                )
    gaps = tables["modality_gap"]
    if "joint" in strategies and gaps["columns"]:
        pair = gaps["columns"][0]
        g = {s: cell_mean(gaps, s, pair) for s in ("mla", "joint")}
        add(f"MLA's modality gap is larger than joint training's ({pair})", _pairs(g), g["mla"] > g["joint"])
    accuracy = {m: cell_mean(tables["main"], "mla", f"{m} (unimodal)") for m in modalities}
    entropy = {m: cell_mean(tables["mean_entropy"], "mla", m) for m in modalities}
    weak, strong = min(accuracy, key=accuracy.__getitem__), max(accuracy, key=accuracy.__getitem__)
    if weak != strong:
        add(
            f"the inferior modality's predictions are more uncertain (MLA: {weak} is weaker than {strong})",
            "mean entropy " + _pairs(entropy),
            entropy[weak] > entropy[strong],
        )
    return out


def _versus(t: Table, a: str, b: str, column: str) -> str:
    """'a m ± s vs b m ± s (difference d: beyond / within one standard deviation)'."""
    va, vb = (cell_values(t, x, column) for x in (a, b))
    (ma, sa), (mb, sb) = mean_std(va), mean_std(vb)
    diff = ma - mb
    noise = "within" if abs(diff) <= max(sa, sb) else "beyond"
    return f"{a} {fmt(va)} vs {b} {fmt(vb)} (difference {diff:+.3f}, {noise} one standard deviation)"


def _pairs(values: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in values.items())


def fmt(vals: Sequence[float], bold: bool = False) -> str:
    if not vals:
        return "–"
    mean, std = mean_std(vals)
    text = f"{mean:.3f} ± {std:.3f}" if len(vals) > 1 else f"{mean:.3f}"
    return f"**{text}**" if bold else text


def markdown(t: Table, first: str, mark_best: bool = False) -> str:
    best: dict[str, float] = {}
    if mark_best:
        for col in [c for c in t["columns"] if c != "s/epoch"]:
            means = [mean_std(r["cells"].get(col, []))[0] for r in t["rows"] if r["cells"].get(col)]
            if means:
                best[col] = max(means)
    lines = ["| " + " | ".join([first, *t["columns"]]) + " |", "|" + "---|" * (len(t["columns"]) + 1)]
    for row in t["rows"]:
        cells = []
        for col in t["columns"]:
            vals = row["cells"].get(col, [])
            is_best = bool(vals) and col in best and math.isclose(mean_std(vals)[0], best[col])
            cells.append(fmt(vals, is_best))
        lines.append("| " + " | ".join([row["label"], *cells]) + " |")
    return "\n".join(lines)


def write_table_csv(path: Path, t: Table, first: str) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = [first]
    for col in t["columns"]:
        header += [f"{col} mean", f"{col} std", f"{col} n"]
    writer.writerow(header)
    for row in t["rows"]:
        line = [row["label"]]
        for col in t["columns"]:
            vals = row["cells"].get(col, [])
            mean, std = mean_std(vals)
            line += [f"{mean:.6f}" if vals else "", f"{std:.6f}" if vals else "", str(len(vals))]
        writer.writerow(line)
    atomic_write(path, lambda fh: fh.write(buffer.getvalue().encode()))


def curves(results: Results, root: Path, base: Mapping[str, Any], modalities: Sequence[str]) -> dict[str, Any]:
    """Per strategy (first seed), per epoch: validation unimodal accuracy and training loss per
    modality, read from the runs' history.csv."""
    out: dict[str, Any] = {}
    for cell in results:
        if cell.group != "main" or cell.label in out:
            continue
        history = read_csv(run_path(root, cell, cell.config(base)) / "history.csv")
        out[cell.label] = {
            m: {
                "val_accuracy": [row.get(f"val_accuracy_{m}", math.nan) for row in history],
                "train_loss": [row.get(f"train_loss_{m}", math.nan) for row in history],
            }
            for m in modalities
        }
    return out


def figures(tables: Mapping[str, Table], curve_data: Mapping[str, Any], out: Path) -> list[str]:
    """missing.png and curves.png; [] (and a note in the report) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    panels = [(k, tables[k]) for k in ("missing_test", "missing_train_test") if len(tables[k]["columns"]) > 1]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
        for ax, (key, t) in zip(axes[0], panels):
            rates = [float(c) for c in t["columns"]]
            for row in t["rows"]:
                means = [mean_std(row["cells"].get(c, []))[0] for c in t["columns"]]
                ax.plot(rates, means, marker="o", label=row["label"])
            ax.set_xlabel("missing rate")
            ax.set_ylabel("fused test accuracy")
            ax.set_title("missing at test only" if key == "missing_test" else "missing at train and test")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "missing.png", dpi=110)
        plt.close(fig)
        written.append("missing.png")
    if curve_data:
        modalities = list(next(iter(curve_data.values())))
        fig, axes = plt.subplots(2, len(modalities), figsize=(4.5 * len(modalities), 6.5), squeeze=False)
        for j, m in enumerate(modalities):
            for label, per in curve_data.items():
                axes[0][j].plot(per[m]["val_accuracy"], label=label)
                axes[1][j].plot(per[m]["train_loss"], label=label)
            axes[0][j].set_title(f"{m}: validation accuracy (unimodal)")
            axes[1][j].set_title(f"{m}: training loss")
            axes[1][j].set_xlabel("epoch")
            for ax in (axes[0][j], axes[1][j]):
                ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "curves.png", dpi=110)
        plt.close(fig)
        written.append("curves.png")
    return written


def write_report(
    results: Results,
    grid: Sequence[Cell],
    base: Mapping[str, Any],
    modalities: Sequence[str],
    out: Path,
    command: str,
) -> dict[str, Any]:
    """Write report.md, report.json, one CSV per table and the figures into ``out``."""
    tables = build_tables(results, grid, modalities)
    curve_data = curves(results, out, base, modalities)
    pictures = figures(tables, curve_data, out)
    for name, t in tables.items():
        write_table_csv(out / f"{name}.csv", t, "strategy")
    text = render(tables, grid, base, modalities, command, pictures)
    atomic_write(out / "report.md", lambda fh: fh.write(text.encode()))
    report = {
        "command": command,
        "settings": dict(base),
        "modalities": list(modalities),
        "tables": tables,
        "claims": claims(tables, modalities),
    }
    write_json(out / "report.json", report)
    return report


def render(
    tables: Mapping[str, Table],
    grid: Sequence[Cell],
    base: Mapping[str, Any],
    modalities: Sequence[str],
    command: str,
    pictures: Sequence[str],
) -> str:
    seeds = sorted({c.seed for c in grid})
    sections = [
        "# Benchmark report",
        f"Command: `{command}`\n\nDataset `{base.get('dataset')}`, modalities {', '.join(modalities)}; "
        f"seeds {', '.join(map(str, seeds))}; values are test-split means ± standard deviation over seeds; "
        "the best mean per column in bold. Models are selected on the validation split.",
        "## 1. Main table",
        markdown(tables["main"], "strategy", mark_best=True),
        "## 2. Laziness\nEach modality's unimodal accuracy inside the model divided by its accuracy when "
        "trained alone (1.0 = not lazy).",
        markdown(tables["laziness"], "strategy"),
        "## 3. Missing modalities\nFused test accuracy against the missing rate (each sample keeps at "
        "least one modality). Test only: the trained models evaluated with modalities dropped.",
        markdown(tables["missing_test"], "strategy"),
        "Train and test: models trained and tested with modalities dropped at the same rate.",
        markdown(tables["missing_train_test"], "strategy"),
        "Per present subset: the fused model with only these modalities present.",
        markdown(tables["present_subsets"], "strategy", mark_best=True),
    ]
    if "missing.png" in pictures:
        sections.append("![missing modalities](missing.png)")
    if "ablation" in tables:
        sections += ["## 4. Ablation (MLA)", markdown(tables["ablation"], "variant", mark_best=True)]
    sections += [
        "## 5. Analyses",
        "Modality gap (distance between the centroids of two modalities' L2-normalised features, test split):",
        markdown(tables["modality_gap"], "strategy"),
        "Entropy check: AUROC of -entropy for the correctness of each modality's own prediction "
        "(above 0.5: confident predictions are more often right):",
        markdown(tables["entropy_auroc"], "strategy"),
        "Mean prediction entropy per modality (is the weaker modality the more uncertain one?):",
        markdown(tables["mean_entropy"], "strategy"),
    ]
    if "curves.png" in pictures:
        sections.append("Training curves per modality (first seed):\n\n![training curves](curves.png)")
    checked = claims(tables, modalities)
    if checked:
        lines = [f"- {'held' if c['held'] else 'did NOT hold'}: {c['claim']}; {c['evidence']}" for c in checked]
        sections += ["## 6. The paper's claims, checked on these runs", "\n".join(lines)]
    if not pictures:
        sections.append('Figures need matplotlib: `pip install "altmodal[plots]"`.')
    return "\n\n".join(sections) + "\n"
