"""What MLA's head projection (HGM) keeps, per epoch, under the paper's optimizer.

For each variant (the paper's projected gradient; the projected update with P never forgetting,
restarted each epoch, or decaying; no projection) and seed, one 100-epoch run with
``projection_stats`` on; per epoch the history holds the share of the head's gradient (paper) or
update (ours) that survives the projection, and how far the other modalities' outputs moved:
``guarantee`` over the change the projected update allows (1 when the guarantee holds), ``leak``
over the change the projected gradient alone allows (the measure of the issue that found the
momentum leak; the momentum buffer's own amplification of the step shows in it too). Geometric
means over each epoch's steps; the table gives epochs 1, 11, 41 and 100 and the test accuracy of
the selected model. Run from the repository root:

    python benchmarks/hgm.py [--datasets mfeat,../shared/data/multiview/100leaves.npz] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from altmodal.experiment import resolve, train_run
from altmodal.runs import read_csv

VARIANTS: dict[str, dict[str, Any]] = {
    "paper: projected gradient": {"preset": "paper"},
    "projected update, P never forgets": {"preset": "paper", "projection_target": "update"},
    "projected update, P restarts each epoch": {"preset": "paper", "projection_target": "update", "forget": "epoch"},
    "projected update, P decays (half-life 1 epoch)": {
        "preset": "paper",
        "projection_target": "update",
        "forget": "decay",
    },
}
EPOCHS = (1, 11, 41, 100)


def run(dataset: str, options: dict[str, Any], seed: int, out: Path) -> dict[str, Any]:
    views = ("fou", "mor") if dataset == "mfeat" else ()
    settings = {"strategy": "mla", "dataset": dataset, "modalities": views, "seed": seed, **options}
    config = resolve({**settings, "projection_stats": True, "patience": 0})
    metrics = train_run(config, out)
    rows = read_csv(out / "history.csv")
    pick = {e: rows[e - 1] for e in EPOCHS if e <= len(rows)}
    return {
        "accuracy": metrics["test"]["fused"]["accuracy"],
        "survival": {e: r["hgm_survival"] for e, r in pick.items()},
        "guarantee": {e: 10 ** r["hgm_log10_guarantee"] for e, r in pick.items()},
        "leak": {e: 10 ** r["hgm_log10_leak"] for e, r in pick.items()},
    }


def series(runs: list[dict[str, Any]], key: str) -> str:
    """The geometric mean over seeds of ``key`` at each epoch of ``EPOCHS`` that every run has."""
    values = [
        float(np.exp(np.mean([math.log(r[key][e]) for r in runs])))  # type: ignore[index]
        for e in EPOCHS
        if all(e in r[key] for r in runs)  # type: ignore[operator]
    ]
    return " / ".join(f"{v:.3g}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="mfeat")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for d, dataset in enumerate(args.datasets.split(",")):
            for v, (label, options) in enumerate(VARIANTS.items()):
                for seed in seeds:
                    got = run(dataset, options, seed, Path(tmp) / f"{d}-{v}-{seed}")
                    results.setdefault(dataset, {}).setdefault(label, []).append(got)
    for dataset, table in results.items():
        print(f"\n{Path(dataset).stem} ({len(seeds)} seeds; per epoch {', '.join(map(str, EPOCHS))})\n")
        print(
            "| variant | test accuracy | surviving share | guarantee: change / allowed "
            "| leak: change / projected gradient's |"
        )
        print("|---|---|---|---|---|")
        for label, runs in table.items():
            accuracy = [float(r["accuracy"]) for r in runs]  # type: ignore[arg-type]
            cells = " | ".join(series(runs, key) for key in ("survival", "guarantee", "leak"))
            print(f"| {label} | {np.mean(accuracy):.3f} ± {np.std(accuracy):.3f} | {cells} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
