"""The default against what a user tries first, goal by goal, from a suite's folder.

Reads each dataset folder's ``report.json`` (written as soon as that dataset's grid is done, so a
suite still running is read as far as it got) and its runs' ``metrics.json``, for a suite whose
strategies include ``mla`` (the default), ``joint`` and the reference rows ``sklearn:*``, and
prints one markdown row per dataset: the default's fused test accuracy (mean ± sd over seeds),
the best reference row, the best other strategy of the suite, the best modality alone, the margin
over the best of them, accuracy at test-time missing rate 0.5 (the default against the best
reference row and ``mla:preset=paper`` where the suite ran it), the least-trained modality's
accuracy inside the default over alone, the seed furthest below the default's mean, and the
default's training time over one joint run's (means over seeds, in the same suite run).

    python benchmarks/against_references.py runs/benchmark-real
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from results_plots import ALONE_ROW, column  # (the report tables' reader of the figures' script beside it)

DEFAULT = "mla"
JOINT = "joint"
PAPER = "mla:preset=paper"


def seconds(folder: Path, label: str) -> list[float]:
    """Training seconds of the runs of benchmark row ``label`` (``mla``, ``joint``,
    ``mla:preset=paper``) in a dataset's folder, one per seed."""
    name, *pairs = label.split(":")
    given = dict(p.split("=", 1) for p in pairs)
    preset = given.get("preset", "altmodal" if name == "mla" else None)
    folds = int(given.get("folds", 5 if preset == "altmodal" else 1))
    found = []
    for path in sorted((folder / "runs").glob(f"{name}-seed*/metrics.json")):
        metrics = json.loads(path.read_text())
        config = json.loads((path.parent / "config.json").read_text())
        if (metrics.get("options") or {}).get("preset") == preset and config["data"].get("folds", 1) == folds:
            found.append(float(metrics["train_seconds"]))
    return found


def mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def row(folder: Path) -> str:
    report = json.loads((folder / "report.json").read_text())
    tables, modalities = report["tables"], report["modalities"]
    fused = column(tables["main"], "fused accuracy")
    default = fused[DEFAULT]
    references = {s: v for s, v in fused.items() if s.startswith("sklearn:")}
    others = {  # (the default with other settings, e.g. mla:folds=3, is not another strategy)
        s: v for s, v in fused.items() if s != DEFAULT and not s.startswith("sklearn:") and "folds=" not in s
    }
    alone = {m: mean(column(tables["main"], f"{m} (unimodal)").get(ALONE_ROW, [])) for m in modalities}
    best_ref = max(references, key=lambda s: mean(references[s]))
    best_other = max(others, key=lambda s: mean(others[s])) if others else None
    best_alone = max(alone, key=lambda m: alone[m])
    rivals = [mean(references[best_ref]), alone[best_alone]] + ([mean(others[best_other])] if best_other else [])
    missing = column(tables["missing_test"], "0.5")
    rivals_missing = {s: mean(v) for s, v in missing.items() if s.startswith("sklearn:") or s == PAPER}
    best_missing = max(rivals_missing, key=lambda s: rivals_missing[s])
    lazy = next(row["cells"] for row in tables["laziness"]["rows"] if row["label"] == DEFAULT)
    cost = mean(seconds(folder, DEFAULT)) / mean(seconds(folder, JOINT))
    out = [
        folder.name,
        f"{mean(default):.3f} ± {np.std(default):.3f}",
        f"{mean(references[best_ref]):.3f} ({best_ref[len('sklearn:') :]})",
        f"{mean(others[best_other]):.3f} ({best_other})" if best_other else "–",
        f"{alone[best_alone]:.3f} ({best_alone})",
        f"{mean(default) - max(rivals):+.3f}",
        f"{mean(missing[DEFAULT]):.3f} vs {rivals_missing[best_missing]:.3f} ({best_missing})",
        f"{min(mean(v) for v in lazy.values()):.2f}",
        f"{mean(default) - min(default):.3f}",
        f"{cost:.1f}x",
    ]
    return "| " + " | ".join(out) + " |"


def main(root: Path) -> None:
    print(
        "| dataset | default | best reference row | best other strategy | best modality alone | default - best "
        "| missing 0.5: default vs best reference | laziness (min) | worst seed below mean | cost / joint |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for folder in sorted(p.parent for p in root.glob("*/report.json")):
        print(row(folder))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/benchmark-real"))
