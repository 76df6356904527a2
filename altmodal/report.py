"""The benchmark report: report.md, report.json, one CSV per table, figures (PNG).

The tables come from :mod:`altmodal.tables`, the check of the paper's claims from
:mod:`altmodal.claims`; this module adds the training curves (from each run's ``history.csv``),
the figures and the markdown around them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from altmodal.benchmark import Cell, run_path
from altmodal.claims import claims
from altmodal.data.registry import DataConfig
from altmodal.encoders import EncoderConfig
from altmodal.metrics import mean_std
from altmodal.runs import atomic_write, read_csv, write_json
from altmodal.tables import Results, Table, build_tables, markdown, write_table_csv


def curves(results: Results, root: Path, base: Mapping[str, Any], modalities: Sequence[str]) -> dict[str, Any]:
    """Per strategy (first seed), per epoch: validation unimodal accuracy and training loss per
    modality, read from the runs' history.csv."""
    out: dict[str, Any] = {}
    for cell in results:
        if cell.group != "main" or cell.label in out or cell.reference:  # (a reference row has no epochs)
            continue
        folder = run_path(root, cell, cell.config(base))
        history = read_csv(folder / "history.csv", f"the run's history is damaged: delete {folder} to train it again")
        out[cell.label] = {
            m: {
                "val_accuracy": [row.get(f"val_accuracy_{m}", math.nan) for row in history],
                "train_loss": [row.get(f"train_loss_{m}", math.nan) for row in history],
            }
            for m in modalities
        }
    return out


PROTOCOL_TEXT = {
    "independent": "as the paper's text: each modality of each sample dropped with probability rate, one modality "
    "restored where a sample lost all",
    "share": "as the paper's code, CPM-Net masks: rate is the share of (sample, modality) entries missing, every "
    "sample keeps one",
}
ABSENT_TEXT = {
    "zero-inputs": "an absent modality's encoder is run on a zero input, as in the paper's code",
    "zero-features": "an absent modality enters the fusion as zero features, its encoder skipped",
}


def missing_setting(base: Mapping[str, Any]) -> tuple[str, str]:
    """The missing-modality protocol and the treatment of absent modalities of the grid."""
    protocol = str(base.get("missing_protocol", DataConfig().missing_protocol))
    absent = str(base.get("absent", EncoderConfig().absent))
    return protocol, absent


def rate_label(rate: str, shares: Table) -> str:
    """'0.5\n(38% missing)': a nominal rate with the test-only share of entries it left missing."""
    row = next((r for r in shares["rows"] if r["label"] == "test only: entries missing"), None)
    values = row["cells"].get(rate, []) if row else []
    return f"{rate}\n({100 * mean_std(values)[0]:.0f}% missing)" if values else rate


def figures(
    tables: Mapping[str, Table], curve_data: Mapping[str, Any], out: Path, protocol: str = "independent"
) -> list[str]:
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
            ax.set_xticks(rates, [rate_label(c, tables["missing_shares"]) for c in t["columns"]], fontsize=7)
            ax.set_xlabel(f"missing rate, {protocol} protocol (realised share of entries missing)")
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
    pictures = figures(tables, curve_data, out, missing_setting(base)[0])
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
    protocol, absent = missing_setting(base)
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
        "## 3. Missing modalities\n"
        f"Fused test accuracy against the nominal missing rate of the `{protocol}` protocol "
        f"({PROTOCOL_TEXT.get(protocol, protocol)}); {ABSENT_TEXT.get(absent, absent)}. "
        "Test only: the trained models evaluated with modalities dropped.",
        markdown(tables["missing_test"], "strategy / missing rate"),
        "Train and test: models trained and tested with modalities dropped at the same rate.",
        markdown(tables["missing_train_test"], "strategy / missing rate"),
        "What each nominal rate realised on the test split (shares):",
        markdown(tables["missing_shares"], "realised share / missing rate"),
        "Per present subset: the fused model with only these modalities present.",
        markdown(tables["present_subsets"], "strategy", mark_best=True),
    ]
    if "missing.png" in pictures:
        sections.append("![missing modalities](missing.png)")
    if "ablation" in tables:
        sections += [
            "## 4. Ablation (MLA)\nChoose between variants on the validation column; the test columns report.",
            markdown(tables["ablation"], "variant", mark_best=True),
        ]
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
        lines = [f"- **{c['verdict']}**: {c['claim']}; {c['evidence']}" for c in checked]
        sections += [
            "## 6. The paper's claims, checked on these runs\n"
            "Each claim is a paired comparison over seeds: the per-seed difference the claim says is positive, "
            "its mean and 95% t-interval; held when the interval is above zero, did not hold when below, "
            "inconclusive otherwise (or with fewer than two seeds).",
            "\n".join(lines),
        ]
    if not pictures:
        sections.append('Figures need matplotlib: `pip install "altmodal[plots]"`.')
    return "\n\n".join(sections) + "\n"
