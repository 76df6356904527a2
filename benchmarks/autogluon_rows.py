"""AutoGluon's TabularPredictor on the real suite's joined features, as one more reference row.

For each dataset of ``altmodal benchmark --suite real`` (AV-digits left out: it has no feature
file) and each seed, the split is the one the suite's runs draw (a reference row's run config,
``Cell.config``, and ``load_splits``), and the inputs are the ones the ``sklearn:boosted`` row
sees: every modality's standardised features side by side, an absent modality's block NaN, all
columns (no screening). ``TabularPredictor(eval_metric='accuracy')`` with the default preset fits
on the development rows (train + val) that have every modality, as the reference rows do, within
``--time-limit`` seconds on ``--cpus`` cores, and is scored on every test row. AutoGluon's own
seeds are its defaults; the seed changes the split. Each predictor's folder is a temporary one,
removed after scoring. The time limit includes AutoGluon's feature preprocessing, whose cost grows
faster than the number of columns: on one core about 35 s for 3sources' 10,259 columns and over
60 s for acm's 13,970 and bbc4view's 18,641, where a 60 s fit stops with "Not enough time left"
(recorded as a failed seed): give those a larger ``--time-limit``.

Prints a markdown table (test accuracy mean ± sd over seeds, seconds per fit), writes the per-seed
results to ``--out`` after each fit, and with ``--against SUITE_FOLDER`` a second table against
that suite run's ``<dataset>/report.json``: the default (``mla``) and the best ``sklearn:*`` row.

AutoGluon is not an altmodal dependency; give it an environment of its own:

    python -m venv venv-ag && venv-ag/bin/pip install autogluon.tabular torch==2.13.0 -e .
    OMP_NUM_THREADS=1 venv-ag/bin/python benchmarks/autogluon_rows.py --media-root DATA \\
        --out ag.json --against runs/benchmark-real
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from results_plots import column  # (the report tables' reader of the figures' script beside it)

from altmodal.benchmark import Cell
from altmodal.data.registry import load_splits
from altmodal.learners import joined_inputs, rows_of
from altmodal.metrics import mean_std
from altmodal.suite import REAL, _slug, check_files, choose, data_folder, entry_settings

LABEL = "label"


def datasets(root: str | None, names: list[str] | None) -> dict[str, dict[str, Any]]:
    """Folder name -> base settings of the real suite's feature-file datasets, as ``run_suite``
    builds them."""
    data = data_folder(root)
    entries = [e for e in (choose(REAL, names, "real") if names else REAL) if e.media is None]
    check_files(entries, data)
    return {_slug(e.name): entry_settings(e, data) for e in entries}


def tables(base: dict[str, Any], seed: int) -> tuple[Any, Any]:
    """The development rows (with every modality) and the test rows of one seed, as data frames."""
    import pandas as pd

    config = Cell("main", "sklearn:boosted", seed, {"strategy": "joint"}).config(base)
    splits = load_splits(config.data, seed)
    modalities = splits.modalities

    def frame(views: list[Any], complete: bool) -> Any:
        inputs, present, label = rows_of(views)
        x = joined_inputs(inputs, present, modalities, "boosted")
        widths = {m: np.asarray(inputs[m]).reshape(len(label), -1).shape[1] for m in modalities}
        df = pd.DataFrame(x, columns=[f"{m}:{j}" for m in modalities for j in range(widths[m])])
        df[LABEL] = label
        return df[np.all([present[m] for m in modalities], axis=0)] if complete else df

    return frame([splits.train, splits.val], True), frame([splits.test], False)


def measure(base: dict[str, Any], seed: int, time_limit: float, cpus: int, verbosity: int = 0) -> dict[str, Any]:
    from autogluon.tabular import TabularPredictor

    dev, test = tables(base, seed)
    with tempfile.TemporaryDirectory(prefix="ag-") as folder:
        path = Path(folder) / "predictor"
        kind = "binary" if dev[LABEL].nunique() == 2 else "multiclass"  # (100 classes are no regression)
        predictor = TabularPredictor(
            label=LABEL, problem_type=kind, eval_metric="accuracy", path=path, verbosity=verbosity
        )
        started = time.perf_counter()
        predictor.fit(dev, time_limit=time_limit, num_cpus=cpus, num_gpus=0)
        seconds = time.perf_counter() - started
        accuracy = float((predictor.predict(test.drop(columns=[LABEL])).to_numpy() == test[LABEL].to_numpy()).mean())
        best, models = predictor.model_best, predictor.model_names()
    return {
        "seed": seed,
        "accuracy": accuracy,
        "fit_seconds": seconds,
        "dev_rows": len(dev),
        "test_rows": len(test),
        "columns": dev.shape[1] - 1,
        "best_model": best,
        "models": models,
    }


def mean_sd(values: list[float]) -> str:
    return "{:.3f} ± {:.3f}".format(*mean_std(values)) if values else "–"


def summary(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| dataset | AutoGluon accuracy | seconds per fit | failed seeds |", "|---|---|---|---|"]
    for name, runs in results.items():
        ok = [r for r in runs if "accuracy" in r]
        secs = f"{np.mean([r['fit_seconds'] for r in ok]):.0f}" if ok else "–"
        failed = ", ".join(str(r["seed"]) for r in runs if "error" in r) or "–"
        lines.append(f"| {name} | {mean_sd([r['accuracy'] for r in ok])} | {secs} | {failed} |")
    return "\n".join(lines)


def suite_row(folder: Path) -> dict[str, float]:
    """``strategy -> fused accuracy mean`` of a suite dataset's ``report.json``."""
    main = json.loads((folder / "report.json").read_text())["tables"]["main"]
    return {s: float(np.mean(v)) for s, v in column(main, "fused accuracy").items()}


def comparison(results: dict[str, list[dict[str, Any]]], suite: Path) -> str:
    lines = [
        "| dataset | AutoGluon | default (mla) | best sklearn row | default − AutoGluon |",
        "|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        ok = [r["accuracy"] for r in runs if "accuracy" in r]
        folder = suite / name
        row = suite_row(folder) if (folder / "report.json").is_file() else {}
        refs = {s: v for s, v in row.items() if s.startswith("sklearn:")}
        ref = max(refs, key=refs.get) if refs else None
        ag = float(np.mean(ok)) if ok else float("nan")
        default = row.get("mla", float("nan"))
        lines.append(
            f"| {name} | {mean_sd(ok)} | {default:.3f} | "
            + (f"{refs[ref]:.3f} ({ref})" if ref else "–")
            + (f" | {default - ag:+.3f} |" if ok else " | – |")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media-root", help="the suite's data folder (default: $ALTMODAL_DATA)")
    parser.add_argument("--datasets", nargs="+", help="a subset of the real suite (folder names, e.g. cora)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--time-limit", type=float, default=60.0, help="AutoGluon's time limit per fit (s)")
    parser.add_argument("--cpus", type=int, default=1, help="cores AutoGluon may use")
    parser.add_argument("--out", type=Path, required=True, help="JSON of the per-seed results")
    parser.add_argument("--verbosity", type=int, default=0, help="AutoGluon's logging (0 to 4)")
    parser.add_argument("--against", type=Path, help="a real suite's output folder to compare with")
    args = parser.parse_args(argv)
    try:
        from autogluon.tabular import __version__
    except ImportError:
        sys.exit("autogluon_rows.py needs AutoGluon, not an altmodal dependency: pip install autogluon.tabular")
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.cpus)  # numpy's BLAS on as many cores
    results: dict[str, list[dict[str, Any]]] = {}
    for name, base in datasets(args.media_root, args.datasets).items():
        results[name] = []
        for seed in args.seeds:
            try:
                result = measure(base, seed, args.time_limit, args.cpus, args.verbosity)
                line = f"accuracy {result['accuracy']:.4f}, {result['fit_seconds']:.0f} s"
            except Exception as error:  # a failed fit (e.g. out of memory) is recorded, the rest go on
                result = {"seed": seed, "error": f"{type(error).__name__}: {error}"}
                line = f"failed: {result['error']}"
                traceback.print_exc()
            print(f"{name} seed {seed}: {line}", flush=True)
            results[name].append(result)
            record = {"autogluon": __version__, "time_limit": args.time_limit, "cpus": args.cpus, "results": results}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(record, indent=1))
    print(summary(results))
    if args.against is not None:
        print()
        print(comparison(results, args.against))


if __name__ == "__main__":
    main()
