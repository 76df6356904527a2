"""The default against what a user tries first, goal by goal, from a finished suite folder.

Reads ``suite.json`` and the runs of ``altmodal benchmark --suite ...`` whose strategies include
``mla`` (the default), ``joint``, ``mla:preset=paper`` and the reference rows ``sklearn:*``, and
prints one markdown row per dataset: the default's fused test accuracy, the best reference row,
the best other strategy of the suite, the best modality alone, the margin over the best of them,
accuracy at test-time missing rate 0.5 (the default against the best of the paper's MLA and the
reference rows), the least-trained modality's accuracy inside the default over alone, the seed
furthest below the default's mean, and the default's training time over one joint run's (means
over seeds, in the same suite run).

    python benchmarks/against_references.py runs/benchmark-real
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

DEFAULT = "mla"
JOINT = "joint"
PAPER = "mla:preset=paper"


def mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def seconds(folder: Path, label: str) -> list[float]:
    """Training seconds of the runs of benchmark row ``label`` (``mla``, ``joint``,
    ``mla:preset=paper``) in a dataset's folder, one per seed."""
    name, *pairs = label.split(":")
    preset = dict(p.split("=", 1) for p in pairs).get("preset", "altmodal" if name == "mla" else None)
    found = []
    for path in sorted((folder / "runs").glob(f"{name}-seed*/metrics.json")):
        metrics = json.loads(path.read_text())
        if (metrics.get("options") or {}).get("preset") == preset:
            found.append(float(metrics["train_seconds"]))
    return found


def row(root: Path, dataset: dict) -> str:
    rows = dataset["strategies"]
    default = rows[DEFAULT]
    fused = default["fused"]
    references = {s: r for s, r in rows.items() if s.startswith("sklearn:")}
    others = {s: r for s, r in rows.items() if s != DEFAULT and not s.startswith("sklearn:")}
    best_ref = max(references, key=lambda s: mean(references[s]["fused"]))
    best_other = max(others, key=lambda s: mean(others[s]["fused"])) if others else None
    alone = dataset.get("alone", {})
    rivals = [mean(references[best_ref]["fused"])]
    rivals += [mean(others[best_other]["fused"])] if best_other else []
    rivals += [mean(alone["fused"])] if alone else []
    missing_rivals = {s: mean(r["missing_0.5"]) for s, r in rows.items() if s.startswith("sklearn:") or s == PAPER}
    best_missing = max(missing_rivals, key=lambda s: missing_rivals[s])
    worst_seed = mean(fused) - min(fused) if fused else float("nan")
    cost = mean(seconds(root / dataset["folder"], DEFAULT)) / mean(seconds(root / dataset["folder"], JOINT))
    cells = [
        dataset["name"],
        f"{mean(fused):.3f} ± {np.std(fused):.3f}",
        f"{mean(references[best_ref]['fused']):.3f} ({best_ref[len('sklearn:') :]})",
        f"{mean(others[best_other]['fused']):.3f} ({best_other})" if best_other else "–",
        f"{mean(alone['fused']):.3f} ({alone['modality']})" if alone else "–",
        f"{mean(fused) - max(rivals):+.3f}",
        f"{mean(default['missing_0.5']):.3f} vs {missing_rivals[best_missing]:.3f} ({best_missing})",
        f"{default['laziness']:.2f}",
        f"{worst_seed:.3f}",
        f"{cost:.1f}x",
    ]
    return "| " + " | ".join(cells) + " |"


def main(root: Path) -> None:
    summary = json.loads((root / "suite.json").read_text())
    print(
        "| dataset | default | best reference row | best other strategy | best modality alone | default - best "
        "| missing 0.5: default vs best of paper and references | laziness (min) | worst seed below mean "
        "| cost / joint |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for dataset in summary["datasets"]:
        if "skipped" not in dataset:
            print(row(root, dataset))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/benchmark-real"))
