"""Training with severely missing modalities, under SMIL's protocol, on AV-digits.

SMIL (Ma et al., AAAI 2021) trains on a few samples that have every modality and many that lack
one (its avMNIST: 5-20% of the training samples have audio), then tests on complete samples and
on samples that lack that modality. Here: AV-digits (FSDD speech paired with MNIST images, the
customary FSDD split), a share of each class of the training and validation samples complete
(``--shares``), the rest without the audio and, separately, without the image; every strategy of
``--strategies`` at its defaults, 3 seeds, 10 epochs (the dataset's), at lr 0.01 for all (the
dataset's 0.05 makes QMF diverge with 10% complete samples); a run that diverges is counted.
For each share and missing modality the table gives the fused test accuracy on complete test
samples / on test samples with only the other modality.

Run from the repository root (after ``pip install -e ".[test]"``; the media cache is prepared on
first use from ``--root``, finished runs are skipped on a rerun):

    python benchmarks/smil_protocol.py [--shares 0.1,0.2,0.5] [--seeds 0,1,2] [--jobs 2]

``--dataset FILE.npz`` (or ``mfeat``) runs the same protocol on a feature file, each view missing
in turn, at the file's defaults (the incomplete accuracy is then that of the other views).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from altmodal.benchmark import Cell, run_grid, strategy_settings

STRATEGIES = "joint,mla,ume,qmf,moddrop,shaspec,smil"


def left_at_test(modalities: list[str]) -> dict[str, str]:
    """The modality training lacks -> the subset of the others, as metrics.json names it."""
    return {m: "+".join(k for k in modalities if k != m) for m in modalities}


def grid(strategies: list[str], shares: list[float], seeds: list[int], modalities: list[str]) -> list[Cell]:
    cells = []
    for seed in seeds:
        for share in shares:
            for missing in modalities:
                for spec in strategies:
                    settings = {**strategy_settings(spec), "complete_share": share, "incomplete_modality": missing}
                    cells.append(Cell("smil", f"{spec}|{share:g}|{missing}", seed, settings))
    return cells


def table(
    results: dict[Cell, dict[str, Any]], strategies: list[str], shares: list[float], modalities: list[str]
) -> str:
    """Markdown: one row per strategy; per share and missing modality, mean complete / incomplete
    test accuracy (and the standard deviation over seeds; runs that failed, e.g. diverged, are
    counted apart and their errors listed under the table)."""
    head = ["strategy"] + [f"{share:.0%} complete, no {m}" for m in modalities for share in shares]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    errors: dict[str, set[str]] = {}
    for spec in strategies:
        row = [spec]
        for missing, left in left_at_test(modalities).items():
            for share in shares:
                cell = [r for c, r in results.items() if c.label == f"{spec}|{share:g}|{missing}"]
                runs = [r["metrics"] for r in cell if "metrics" in r]
                for r in cell:
                    if "error" in r:
                        errors.setdefault(f"{spec}, {share:.0%} complete, no {missing}", set()).add(r["error"])
                failed = f", {len(cell) - len(runs)} failed" if len(runs) < len(cell) else ""
                if not runs:
                    row.append(f"failed ({len(cell)})")
                    continue
                full = [m["test"]["fused"]["accuracy"] for m in runs]
                alone = [m["test"]["present"][left]["accuracy"] for m in runs]
                row.append(
                    f"{np.mean(full):.3f} / {np.mean(alone):.3f} (±{np.std(full):.3f} / ±{np.std(alone):.3f}{failed})"
                )
        lines.append("| " + " | ".join(row) + " |")
    lines += [""] * bool(errors) + [f"- {where}: {'; '.join(sorted(e))}" for where, e in errors.items()]
    return "\n".join(lines)


def feature_views(dataset: str) -> list[str]:
    """The views of a feature file (``mfeat``: the benchmark's fou, mor)."""
    if dataset == "mfeat":
        return ["fou", "mor"]
    with np.load(dataset) as data:
        return [k for k in data.files if k != "label"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="avdigits", help="avdigits, or a feature file (with --modalities)")
    parser.add_argument("--modalities", default="", help="the modalities to use, comma-separated (default: all)")
    parser.add_argument("--root", default="../shared/data", help="folder with fsdd/ and mnist/")
    parser.add_argument("--cache", default="runs/cache-avdigits", help="the prepared AV-digits cache")
    parser.add_argument("--out", default="runs/smil-protocol")
    parser.add_argument("--strategies", default=STRATEGIES)
    parser.add_argument("--shares", default="0.1,0.2,0.5")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--dataset-option", action="append", default=[], help="KEY=VALUE, repeated")
    parser.add_argument("--epochs", type=int, help="(default: the dataset's)")
    parser.add_argument("--lr", type=float, help="every strategy's (default: 0.01 on AV-digits, whose 0.05 makes QMF "
                        "diverge; elsewhere the dataset's)")  # fmt: skip
    parser.add_argument("--resnet-width", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    strategies = args.strategies.split(",")
    shares = [float(s) for s in args.shares.split(",")]
    if args.dataset == "avdigits":
        if not (Path(args.cache) / "meta.json").is_file():
            prepare = [
                sys.executable,
                "-m",
                "altmodal",
                "prepare",
                "avdigits",
                "--root",
                args.root,
                "--out",
                args.cache,
            ]
            subprocess.run(prepare, check=True)
        base: dict[str, Any] = {
            "dataset": "avdigits",
            "data_dir": str(Path(args.cache).resolve()),
            "dataset_options": ("split=customary", *args.dataset_option),
            "lr": 0.01,
            "resnet_width": args.resnet_width,
        }
        modalities = ["audio", "visual"]
    else:  # a feature file (or a built-in dataset) at its defaults
        modalities = args.modalities.split(",") if args.modalities else feature_views(args.dataset)
        base = {"dataset": args.dataset, "modalities": tuple(modalities), "dataset_options": tuple(args.dataset_option)}
    base.update({k: v for k, v in (("epochs", args.epochs), ("lr", args.lr)) if v is not None})
    cells = grid(strategies, shares, [int(s) for s in args.seeds.split(",")], modalities)
    results = run_grid(cells, base, Path(args.out), jobs=args.jobs, keep_going=True)
    text = table(results, strategies, shares, modalities)
    times: dict[str, list[float]] = {}
    for cell, result in results.items():
        if "metrics" in result:
            times.setdefault(cell.label.split("|")[0], []).append(result["metrics"]["train_seconds"])
    seconds = {spec: float(np.mean(values)) for spec, values in times.items()}
    (Path(args.out) / "table.md").write_text(text + "\n")
    (Path(args.out) / "seconds.json").write_text(json.dumps(seconds, indent=1) + "\n")
    print(text)
    print("mean training seconds per run:", ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))


if __name__ == "__main__":
    main()
