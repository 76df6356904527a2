"""Benchmark suites: many datasets in one command, each with its own report, and a summary of
which strategy is best where.

A suite is a list of datasets chosen to cover different imbalances (a dominant modality, a
near-useless one, three balanced ones, naive fusion below the best single view, complementary
modalities, few samples, an unseen speaker). Every dataset gets the benchmark's main grid (each
modality alone, every strategy, test-time missing modalities) in ``OUT/<dataset>/`` with its
``report.md``; ``OUT/suite.md`` then lists, per dataset, each strategy's fused accuracy, its
laziness and whether it wins, ties (within one standard deviation of the best mean) or loses,
and counts wins, ties and losses per strategy.

``dev`` runs 3 seeds at the datasets' own settings; ``quick`` is the same list with one seed and
fewer epochs, for iteration. ``real`` is the suite of real data: eleven multi-view datasets from
different fields (news and web text, citation graphs, movies, proteins, digits, leaves: 169 to
4,000 samples, 2 to 100 classes, 2 to 12 views), mfeat and AV-digits. The multi-view files and
AV-digits' raw FSDD + MNIST are read from a data folder: ``--media-root``, else the environment
variable ``ALTMODAL_DATA`` (:func:`data_folder`). Every multi-view file a run needs must be there
(``DATA/multiview/<name>.npz``, written by ``altmodal prepare multiview`` from the public
collection: :mod:`altmodal.data.multiview`), else the suite stops before training, naming the
file; AV-digits is prepared once into ``OUT/cache/avdigits`` when its raw folders are there, and
is otherwise left out with a note.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from altmodal.benchmark import BenchmarkConfig, cells, labels, modalities_of, run_grid, slug
from altmodal.data.features import DataError
from altmodal.data.multiview import COLLECTION, SUBFOLDER
from altmodal.metrics import mean_std
from altmodal.reference import PREFIX
from altmodal.report import write_report
from altmodal.runs import atomic_write, write_json
from altmodal.tables import Results, fmt, values
from altmodal.threads import Threads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """One dataset of a suite: its name in the summary and the settings of its runs."""

    name: str
    settings: Mapping[str, Any]
    media: str | None = None
    """A media corpus that ``altmodal prepare`` must cache first (from the data folder)."""
    file: str | None = None
    """A feature file inside the data folder, the entry's dataset."""
    raw: tuple[str, ...] = ()
    """The media corpus's raw folders inside the data folder (the entry is left out without them)."""


DATA_ENV = "ALTMODAL_DATA"
"""The environment variable naming the suites' data folder when ``--media-root`` is not given."""


@dataclass(frozen=True)
class DataFolder:
    """Where a suite reads its files, and which setting named the folder (for messages)."""

    path: Path | None = None
    source: str = ""

    def __str__(self) -> str:
        if self.path is None:
            return f"no data folder: set --media-root or {DATA_ENV}"
        return f"the data folder {self.path}, from {self.source}"


def data_folder(flag: str | None, environ: Mapping[str, str] = os.environ) -> DataFolder:
    """The suites' data folder: the ``--media-root`` flag, else ``$ALTMODAL_DATA``, else none."""
    if flag is not None:
        return DataFolder(Path(flag), "--media-root")
    if environ.get(DATA_ENV):
        return DataFolder(Path(environ[DATA_ENV]), DATA_ENV)
    return DataFolder()


def check_files(entries: Sequence[Entry], data: DataFolder) -> None:
    """Raise a one-line DataError naming the first feature file of ``entries`` that ``data``
    lacks, how many more are missing and how to write them."""
    files = [e.file for e in entries if e.file is not None]
    absent = [f for f in files if data.path is None or not (data.path / f).is_file()]
    if not absent:
        return
    more = f" and {len(absent) - 1} more" if len(absent) > 1 else ""
    if data.path is None:
        raise DataError(
            f"the suite reads {absent[0]}{more} from a data folder: set {DATA_ENV}=DIR or pass --media-root DIR, "
            f"after `altmodal prepare {SUBFOLDER} --root MAT_FOLDER --out DIR`"
        )
    raise DataError(
        f"{data.path / absent[0]}{more}: not found ({data}); write them with `altmodal prepare {SUBFOLDER} "
        f"--root MAT_FOLDER --out {data.path}`, or leave them out with --suite-datasets"
    )


def _mfeat(*views: str) -> dict[str, Any]:
    return {"dataset": "mfeat", "modalities": views}


def _synthetic(*options: str) -> dict[str, Any]:
    return {"dataset": "synthetic", "dataset_options": options}


AV_DIGITS = Entry(
    "AV-digits, unseen speakers",
    {
        "dataset": "avdigits",
        "dataset_options": ("split=speaker", "val_speakers=1"),
        "epochs": 10,
        "resnet_width": 16,
    },
    media="avdigits",
    raw=("fsdd/recordings", "mnist/digits"),
)

MULTIVIEW = tuple(COLLECTION)
"""The real multi-view datasets of the data folder (``multiview/<name>.npz``)."""

REAL: tuple[Entry, ...] = (
    *(Entry(name, {}, file=f"{SUBFOLDER}/{name}.npz") for name in MULTIVIEW),
    Entry("mfeat fou,mor", _mfeat("fou", "mor")),
    AV_DIGITS,
)

DEV: tuple[Entry, ...] = (
    Entry("mfeat fou,mor", _mfeat("fou", "mor")),
    Entry("mfeat fou,zer,mor", _mfeat("fou", "zer", "mor")),
    Entry("mfeat fac,mor (fusion below the best view)", _mfeat("fac", "mor")),
    Entry("mfeat fac,kar,pix (three strong views)", _mfeat("fac", "kar", "pix")),
    Entry("synthetic: dominant m0", _synthetic()),
    Entry("synthetic: near-useless m1", _synthetic("strengths=1.5,0.1")),
    Entry("synthetic: 3 modalities, 300 samples", _synthetic("modalities=3", "samples=300")),
    Entry("synthetic: complementary", _synthetic("shared=0.1", "strengths=0.9,0.9")),
    AV_DIGITS,
)


@dataclass(frozen=True)
class Suite:
    entries: tuple[Entry, ...]
    seeds: tuple[int, ...]
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """Settings laid over every feature-file entry (e.g. fewer epochs)."""


SUITES: dict[str, Suite] = {
    "dev": Suite(DEV, (0, 1, 2)),
    "quick": Suite(tuple(e for e in DEV if e.media is None), (0,), {"epochs": 30}),
    "real": Suite(REAL, (0, 1, 2)),
}


def run_suite(
    name: str,
    out: Path,
    *,
    strategies: Sequence[str],
    seeds: Sequence[int] | None = None,
    settings: Mapping[str, Any] | None = None,
    data: DataFolder | None = None,
    jobs: int = 0,
    progress: bool = True,
    only: Sequence[str] | None = None,
    threads: Threads = "auto",
) -> dict[str, Any]:
    """Run every dataset of the suite ``name`` (finished runs are skipped), or those named in
    ``only`` in that order, and write the summary (feature files and raw media from ``data``).

    Raises:
        DataError: a feature file of the entries to run is not in ``data`` (before any training).
    """
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; suites: {', '.join(SUITES)}")
    suite = SUITES[name]
    entries = choose(suite.entries, only, name) if only else suite.entries
    data = data or DataFolder()
    check_files(entries, data)
    bench = BenchmarkConfig(
        strategies=tuple(strategies),
        seeds=tuple(seeds or suite.seeds),
        missing_rates=(0.5,),
        train_missing_rates=(),
        ablation="none",
        jobs=jobs,
    )
    datasets: list[dict[str, Any]] = []
    for entry in entries:
        base = {**entry_settings(entry, data), **(suite.overrides if entry.media is None else {}), **(settings or {})}
        if entry.media is not None:
            cache = _prepared(entry.media, entry.raw, data.path, out / "cache" / entry.media)
            if cache is None:
                datasets.append({"name": entry.name, "skipped": f"no raw {entry.media} folders ({data})"})
                continue
            base["data_dir"] = str(cache)
        folder = out / _slug(entry.name)
        modalities = modalities_of(base)
        grid = cells(bench, modalities)
        results = run_grid(
            grid, base, folder, missing_rates=bench.missing_rates, jobs=bench.jobs, progress=progress, threads=threads
        )
        write_report(results, grid, base, modalities, folder, f"altmodal benchmark --suite {name}")
        datasets.append(
            {"name": entry.name, "folder": folder.name, **summarize(results, labels(grid, "main"), modalities)}
        )
    summary = {
        "suite": name,
        "seeds": list(bench.seeds),
        "strategies": list(strategies),
        "datasets": datasets,
        "record": record(datasets, strategies),
    }
    write_json(out / "suite.json", summary)
    text = render(summary)
    atomic_write(out / "suite.md", lambda fh: fh.write(text.encode()))
    return summary


def entry_settings(entry: Entry, data: DataFolder) -> dict[str, Any]:
    """The run settings of ``entry`` (its dataset: the feature file in ``data``, for an entry of one)."""
    if entry.file is None or data.path is None:
        return dict(entry.settings)
    return {**entry.settings, "dataset": str(data.path / entry.file)}


def choose(entries: Sequence[Entry], names: Sequence[str], suite: str) -> tuple[Entry, ...]:
    """The entries named (by their name or their folder's name), in the order given."""
    by_name = {**{e.name: e for e in entries}, **{_slug(e.name): e for e in entries}}
    for n in names:
        if n not in by_name:
            known = ", ".join(_slug(e.name) for e in entries)
            raise ValueError(f"suite {suite!r} has no dataset {n!r}; its datasets: {known}")
    chosen = {_slug(by_name[n].name): by_name[n] for n in names}  # a name given twice runs once
    return tuple(chosen.values())


def _prepared(corpus: str, raw: Sequence[str], root: Path | None, cache: Path) -> Path | None:
    """The media cache of ``corpus``, prepared from ``root`` if need be (None: no cache and not
    all of its ``raw`` folders in ``root``)."""
    if (cache / "meta.json").is_file():
        return cache
    if root is None or not all((root / folder).is_dir() for folder in raw or (".",)):
        return None
    from altmodal.prepare import prepare

    prepare(corpus, root, cache)
    return cache


def _slug(text: str) -> str:
    return slug(text.split(" (")[0].lower().replace(",", " "))


def summarize(results: Results, strategies: Sequence[str], modalities: Sequence[str]) -> dict[str, Any]:
    """Per strategy: fused accuracy per seed, its least-trained modality's laziness ratio (inside
    the model over alone, mean over seeds) and the verdict against the best mean."""
    rows: dict[str, dict[str, Any]] = {}
    for label in strategies:
        fused = values(results, "main", label, ["test", "fused", "accuracy"])
        ratios = []  # (a reference row's modalities are learners of their own, not inside one model)
        for m in modalities if not label.startswith(PREFIX) else ():
            inside = values(results, "main", label, ["test", "unimodal", m, "accuracy"])
            alone = values(results, "alone", m, ["test", "unimodal", m, "accuracy"])
            if inside and alone:
                ratios.append(mean_std(inside)[0] / max(mean_std(alone)[0], 1e-12))
        missing = [
            r["missing"]["0.5"]["accuracy"]
            for c, r in results.items()
            if c.group == "main" and c.label == label and "0.5" in r.get("missing", {})
        ]
        rows[label] = {
            "fused": fused,
            "laziness": min(ratios) if ratios else math.nan,
            "missing_0.5": missing,
            "seconds_per_epoch": values(results, "main", label, ["seconds_per_epoch"]),
        }
    best = max(rows, key=lambda s: mean_std(rows[s]["fused"])[0])
    best_mean, best_std = mean_std(rows[best]["fused"])
    means = {s: mean_std(row["fused"])[0] for s, row in rows.items()}
    for row in rows.values():
        mean, std = mean_std(row["fused"])
        row["gap"] = mean - best_mean
        row["rank"] = (
            1
            + sum(other > mean for other in means.values())
            + 0.5 * (sum(math.isclose(other, mean) for other in means.values()) - 1)
        )
        if math.isclose(mean, best_mean):
            row["verdict"] = "win"
        else:
            row["verdict"] = "tie" if best_mean - mean <= max(std, best_std) else "loss"
    solo = {m: values(results, "alone", m, ["test", "unimodal", m, "accuracy"]) for m in modalities}
    solo = {m: v for m, v in solo.items() if v}
    out: dict[str, Any] = {"best": best, "strategies": rows}
    if solo:
        top = max(solo, key=lambda m: mean_std(solo[m])[0])
        out["alone"] = {"modality": top, "fused": solo[top]}
    return out


def record(datasets: Sequence[Mapping[str, Any]], strategies: Sequence[str]) -> dict[str, dict[str, int]]:
    """Wins, ties and losses per strategy over the datasets that ran."""
    out: dict[str, dict[str, Any]] = {s: {"win": 0, "tie": 0, "loss": 0} for s in strategies}
    ranks: dict[str, list[float]] = {s: [] for s in strategies}
    for d in datasets:
        for s, row in d.get("strategies", {}).items():
            out[s][row["verdict"]] += 1
            ranks[s].append(row["rank"])
    for s in strategies:
        out[s]["mean_rank"] = float(sum(ranks[s]) / len(ranks[s])) if ranks[s] else math.nan
    return out


def render(summary: Mapping[str, Any]) -> str:
    strategies = summary["strategies"]
    lines = [
        f"# Suite `{summary['suite']}`",
        f"Seeds {', '.join(map(str, summary['seeds']))}. Fused test accuracy (mean ± sd over seeds); "
        "laziness = the least-trained modality's accuracy inside the model over its accuracy alone; "
        "win = the best mean (shared when equal), tie = within one standard deviation of it, loss = further "
        "below. Each dataset's full report is in its folder.",
        "",
        "| strategy | wins | ties | losses | mean rank |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {s} | {r['win']} | {r['tie']} | {r['loss']} | {r.get('mean_rank', math.nan):.2f} |"
        for s, r in summary["record"].items()
    ]
    lines += ["", overview(summary)]
    for d in summary["datasets"]:
        lines += ["", f"## {d['name']}"]
        if "skipped" in d:
            lines.append(f"Skipped: {d['skipped']}.")
            continue
        lines += ["| strategy | fused accuracy | laziness | missing 0.5 | verdict |", "|---|---|---|---|---|"]
        for s in strategies:
            row = d["strategies"][s]
            lazy = "–" if math.isnan(row["laziness"]) else f"{row['laziness']:.2f}"
            fused = fmt(row["fused"], bold=s == d["best"])
            lines.append(f"| {s} | {fused} | {lazy} | {fmt(row['missing_0.5'])} | {row['verdict']} |")
        if "alone" in d:
            alone = d["alone"]
            lines.append(f"| best modality alone ({alone['modality']}) | {fmt(alone['fused'])} | – | – | – |")
        lines.append(f"\nReport: `{d['folder']}/report.md`")
    return "\n".join(lines) + "\n"


def cost_per_epoch(ran: Sequence[Mapping[str, Any]], strategy: str) -> float:
    """The geometric mean over datasets of ``strategy``'s mean seconds per training epoch over
    joint training's (NaN without joint or timings)."""
    ratios = []
    for d in ran:
        mine, joint = (d["strategies"].get(s, {}).get("seconds_per_epoch", []) for s in (strategy, "joint"))
        if mine and joint and mean_std(joint)[0] > 0:
            ratios.append(math.log(mean_std(mine)[0] / mean_std(joint)[0]))
    return math.exp(sum(ratios) / len(ratios)) if ratios else math.nan


def overview(summary: Mapping[str, Any]) -> str:
    """One table over the datasets that ran: per strategy, each dataset's mean fused accuracy with
    its laziness in brackets (bold: the best), its mean rank, its wins / ties / losses and its cost
    per epoch against joint training's; a last row gives each dataset's best modality trained alone."""
    ran = [d for d in summary["datasets"] if "skipped" not in d]
    lines = [
        "| strategy | "
        + " | ".join(d["name"] for d in ran)
        + " | mean rank | wins / ties / losses | s/epoch / joint |",
        "|---" * (len(ran) + 4) + "|",
    ]
    for s in summary["strategies"]:
        cells = []
        for d in ran:
            row = d["strategies"][s]
            text = f"{mean_std(row['fused'])[0]:.3f}" + (
                "" if math.isnan(row["laziness"]) else f" ({row['laziness']:.2f})"
            )
            cells.append(f"**{text}**" if s == d["best"] else text)
        r, cost = summary["record"][s], cost_per_epoch(ran, s)
        shown = "–" if math.isnan(cost) else f"{cost:.2f}"
        lines.append(
            f"| {s} | {' | '.join(cells)} | {r['mean_rank']:.2f} | {r['win']} / {r['tie']} / {r['loss']} | {shown} |"
        )
    alone = [f"{mean_std(d['alone']['fused'])[0]:.3f} ({d['alone']['modality']})" if "alone" in d else "–" for d in ran]
    lines.append(f"| best modality alone | {' | '.join(alone)} | – | – | – |")
    return "\n".join(lines)
