"""What the default costs: its training time over one joint run's, per dataset, in one process.

For each dataset, one process trains one joint run (``--strategy joint``) and the default
(``altmodal train``'s cross-fitted MLA with its learners), each on the same split and seed with
``--threads auto`` (one thread for small MLPs; the default's learners, and members' networks, then
share the work with a second process where a core is spare), and prints both wall-clock times, the
ratio, and where the default's time went (the networks trained in the run and in the second
process, the learners wherever they fit, the run's own time on learners or waiting for the second
process, the rest: fusion choice, evaluation, writing). The CPU time of a run that keeps a second
process busy is more than its wall time: run it on a machine whose cores are otherwise free.
The two runs of a dataset follow each other, so a change in the machine's load touches both; the
ratio is the figure to compare across machines.

    python benchmarks/cost.py                                    # mfeat and the real suite's files
    python benchmarks/cost.py --datasets mfeat,bbcsport --seeds 0,1
    python benchmarks/cost.py --data DIR                         # DIR/multiview/<name>.npz

The real suite's files are read from the suites' data folder (``--data``, else ``$ALTMODAL_DATA``:
:func:`altmodal.suite.data_folder`; see ``altmodal prepare multiview``); a dataset whose file is
absent is named and left out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from altmodal import resolve, train_run
from altmodal.data.multiview import SUBFOLDER
from altmodal.suite import DATA_ENV, MULTIVIEW, REAL, DataFolder, Entry, data_folder, entry_settings

ENTRIES = {e.name.split()[0]: e for e in REAL if e.media is None}
"""The real suite's feature-file datasets by their first word (``mfeat``: views fou and mor, the
README's main job)."""


def settings_of(name: str, data: DataFolder) -> dict[str, Any] | None:
    """The run settings of dataset ``name`` as the suite has them (another name: ``multiview/<name>.npz``),
    None when its file is not in ``data``."""
    entry = ENTRIES.get(name, Entry(name, {}, file=f"{SUBFOLDER}/{name}.npz"))
    if entry.file is not None and (data.path is None or not (data.path / entry.file).is_file()):
        return None
    return entry_settings(entry, data)


def timed(settings: dict[str, Any], out: Path) -> tuple[float, dict[str, Any]]:
    """Wall-clock seconds of one run trained in ``out`` and its metrics."""
    started = time.perf_counter()
    metrics = train_run(resolve(settings), out, threads="auto")
    return time.perf_counter() - started, dict(metrics)


def parts(out: Path, total: float) -> dict[str, float]:
    """Where a cross-fitted run's time went, from the files it wrote: its members' networks
    (their training seconds) in the run and in the second process, its learners (their own
    seconds, wherever they fit), the run's own seconds on learners or waiting for the second
    process, and the rest of the run's time."""
    metrics = json.loads((out / "metrics.json").read_text())
    learners = metrics.get("learner_seconds", float("nan"))
    waited = metrics.get("side_wait_seconds", learners)
    beside = {str(k) for k in metrics.get("members_beside", [])}
    seconds = {
        member.name: json.loads((member / "metrics.json").read_text()).get("train_seconds", 0.0)
        for member in (out / "folds").iterdir()
    }
    here = sum(v for k, v in seconds.items() if k not in beside)
    there = sum(v for k, v in seconds.items() if k in beside)
    return {"networks": here, "beside": there, "learners": learners, "waited": waited, "rest": total - here - waited}


def measure(name: str, settings: dict[str, Any], seed: int, scratch: Path) -> dict[str, Any]:
    joint_seconds, joint = timed({**settings, "strategy": "joint", "seed": seed}, scratch / f"{name}-joint-{seed}")
    out = scratch / f"{name}-default-{seed}"
    default_seconds, default = timed({**settings, "seed": seed}, out)
    return {
        "dataset": name,
        "seed": seed,
        "joint": joint_seconds,
        "default": default_seconds,
        "ratio": default_seconds / joint_seconds,
        **parts(out, default_seconds),
        "joint_accuracy": joint["test"]["fused"]["accuracy"],
        "default_accuracy": default["test"]["fused"]["accuracy"],
    }


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: per dataset, the medians over seeds."""
    lines = [
        "| dataset | joint (s) | default (s) | default / joint | networks: run / beside (s) | learners (s) "
        "| waited (s) | rest (s) | accuracy joint / default |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == name]

        def median(key: str, mine: list[dict[str, Any]] = mine) -> float:
            return statistics.median(r[key] for r in mine)

        lines.append(
            f"| {name} | {median('joint'):.1f} | {median('default'):.1f} | {median('ratio'):.1f}x "
            f"| {median('networks'):.1f} / {median('beside'):.1f} | {median('learners'):.1f} | {median('waited'):.1f} "
            f"| {median('rest'):.1f} "
            f"| {median('joint_accuracy'):.3f} / {median('default_accuracy'):.3f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(["mfeat", *MULTIVIEW]), help="comma-separated names")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (medians over them)")
    parser.add_argument("--data", help=f"the data folder (default: ${DATA_ENV})")
    args = parser.parse_args(argv)
    data = data_folder(args.data)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.datasets.split(","):
            settings = settings_of(name, data)
            if settings is None:
                print(f"{name}: no {SUBFOLDER}/{name}.npz in the data folder ({data.path}); left out", file=sys.stderr)
                continue
            for seed in (int(s) for s in args.seeds.split(",")):
                rows.append(measure(name, settings, seed, Path(scratch)))
                row = rows[-1]
                print(
                    f"{name} seed {seed}: joint {row['joint']:.1f} s, default {row['default']:.1f} s "
                    f"({row['ratio']:.1f}x)",
                    file=sys.stderr,
                    flush=True,
                )
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
