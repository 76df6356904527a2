"""The benchmark's tables, built from the runs' metrics, and their markdown and CSV forms.

Every number comes from the runs' ``metrics.json`` (and ``missing.json``); nothing is recomputed
from predictions here. A table cell holds one value per seed; it is shown as the mean with the
sample standard deviation, the best mean of a column in bold where asked.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from altmodal.benchmark import Cell, labels
from altmodal.metrics import mean_std
from altmodal.runs import atomic_write, spreadsheet_safe

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
        f"{m} (unimodal)": values(results, "alone", m, ["test", "unimodal", m, "accuracy"]) for m in modalities
    }
    main["rows"].append({"label": "each modality alone", "cells": alone})
    tables["main"] = main
    tables["laziness"] = laziness(results, strategies, modalities)
    tables["missing_test"] = missing_test(results, strategies)
    tables["missing_train_test"] = missing_train_test(results, grid, strategies)
    tables["missing_shares"] = missing_shares(results)
    main_results = [r for c, r in results.items() if c.group == "main"]
    found = [r["metrics"]["test"]["present"] for r in main_results if "present" in r.get("metrics", {}).get("test", {})]
    subsets = list(found[0]) if found else []  # (a reference row has none)
    tables["present_subsets"] = table(
        results, "main", {name: ["test", "present", name, "accuracy"] for name in subsets}, strategies
    )
    if labels(grid, "ablation"):
        columns = {"val fused accuracy": ["val", "fused", "accuracy"], **accuracy_columns(modalities)}
        tables["ablation"] = table(results, "ablation", columns, labels(grid, "ablation"))
    tables["modality_gap"] = analysis_table(results, strategies, "modality_gap", None)
    tables["entropy_auroc"] = analysis_table(results, strategies, "entropy", "auroc_neg_entropy_correct")
    tables["mean_entropy"] = analysis_table(results, strategies, "entropy", "mean_entropy")
    return tables


def laziness(results: Results, strategies: Sequence[str], modalities: Sequence[str]) -> Table:
    """Unimodal accuracy inside each model over the modality's accuracy trained alone (per seed)."""
    rows = []
    for label in (s for s in strategies if not s.startswith("sklearn:")):  # (reference rows: no one model)
        cells = {}
        for m in modalities:
            inside = values(results, "main", label, ["test", "unimodal", m, "accuracy"])
            alone = values(results, "alone", m, ["test", "unimodal", m, "accuracy"])
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


def missing_shares(results: Results) -> Table:
    """What the masks of the missing-modality runs realised on the test split, per nominal rate:
    the share of (sample, modality) entries missing and the share of samples with one modality."""
    rows = []
    for group, title in (("main", "test only"), ("missing", "train and test")):
        for key, what in (
            ("realised_share", "entries missing"),
            ("single_modality_share", "samples with one modality"),
        ):
            cells: dict[str, list[float]] = {}
            for cell, result in results.items():
                if cell.group != group:
                    continue
                if group == "main":
                    blocks = list(result.get("missing", {}).items())
                else:
                    blocks = [(f"{float(cell.settings['test_missing_rate']):g}", result["metrics"])]
                for rate, block in blocks:
                    value = block.get("missing", {}).get(key) if isinstance(block, Mapping) else None
                    if isinstance(value, (int, float)):
                        cells.setdefault(rate, []).append(float(value))
            if cells:
                rows.append({"label": f"{title}: {what}", "cells": cells})
    columns = sorted({rate for row in rows for rate in row["cells"]}, key=float)
    return {"columns": columns, "rows": rows}


def analysis_table(results: Results, strategies: Sequence[str], section: str, key: str | None) -> Table:
    columns: list[str] = []
    rows = []
    for label in strategies:
        cells: dict[str, list[float]] = {}
        for cell, result in results.items():
            if cell.group != "main" or cell.label != label:
                continue
            for name, block in result["metrics"].get("analyses", {}).get(section, {}).items():
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
    header = [escape(first), *(escape(c) for c in t["columns"])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * (len(t["columns"]) + 1)]
    for row in t["rows"]:
        cells = []
        for col in t["columns"]:
            vals = row["cells"].get(col, [])
            is_best = bool(vals) and col in best and math.isclose(mean_std(vals)[0], best[col])
            cells.append(fmt(vals, is_best))
        lines.append("| " + " | ".join([escape(row["label"]), *cells]) + " |")
    return "\n".join(lines)


def escape(text: str) -> str:
    """A table cell's text with ``|`` escaped, so that names like ``m0|m1`` keep the table whole."""
    return str(text).replace("|", "\\|")


def write_table_csv(path: Path, t: Table, first: str) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = [first]
    for col in t["columns"]:
        header += [f"{col} mean", f"{col} std", f"{col} n"]
    writer.writerow([spreadsheet_safe(c) for c in header])
    for row in t["rows"]:
        line = [row["label"]]
        for col in t["columns"]:
            vals = row["cells"].get(col, [])
            mean, std = mean_std(vals)
            line += [f"{mean:.6f}" if vals else "", f"{std:.6f}" if vals else "", str(len(vals))]
        writer.writerow([spreadsheet_safe(c) for c in line])
    atomic_write(path, lambda fh: fh.write(buffer.getvalue().encode()))
