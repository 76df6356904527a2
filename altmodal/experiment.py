"""One run, end to end: resolve a config, load data, build a strategy, fit, evaluate, write.

Used by ``altmodal train`` / ``altmodal evaluate`` and by the benchmark grid.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from altmodal.bagging import Bag, saved_learners
from altmodal.callbacks import Display
from altmodal.config import ConfigError
from altmodal.data.dataset import Splits
from altmodal.data.registry import DATASETS, load_splits
from altmodal.data.splits import PROTOCOLS, missing_mask, missing_summary
from altmodal.distributed import Dist, resolve_device
from altmodal.encoders import FEATURE_KINDS, encoder_kinds, weights_by_modality
from altmodal.files import file_digest
from altmodal.learners import Learners, affordable, learner_names
from altmodal.members import MemberJobs, held_out, member_seed
from altmodal.metrics import Outputs, analyses, subset_name, summarize
from altmodal.model import DataSpec, Model
from altmodal.predictions import prediction_rows
from altmodal.predictor import Predictor, load_run
from altmodal.runs import FOLDS, RUN_EXTRAS, RUN_FILES, Run, read_csv, write_csv
from altmodal.saved import flat_stats, load_model_weights, model_card
from altmodal.settings import (  # noqa: F401  (the run's settings, importable from here as before)
    DEFAULT_STRATEGY,
    RunConfig,
    check_given,
    check_settings,
    layer,
    load_run_config,
    option_classes,
    preset_settings,
    resolve,
)
from altmodal.strategies import Strategy, build_strategy
from altmodal.threads import Threads, side_process, threads_for, torch_threads
from altmodal.trainer import Callback, Trainer, kept_rng_state, rng_state, set_rng_state

log = logging.getLogger(__name__)

CHECKPOINT_KEYS = {"epoch", "training", "history", "best", "rng"}


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


class RunResult(dict):  # type: ignore[type-arg]
    """A finished run's metrics (what metrics.json holds), with the trained model as ``model``
    (a :class:`~altmodal.predictor.Predictor`; read from the folder on first use when the run
    had finished before), the run folder as ``path`` and ``skipped`` (True when it had)."""

    def __init__(
        self,
        metrics: Mapping[str, Any],
        path: Path,
        model: Any = None,
        encoders: Mapping[str, Any] | None = None,
        skipped: bool = False,
    ):
        super().__init__(metrics)
        self.path = path
        self._model = model
        self._encoders = encoders
        self.skipped = skipped
        """The run had finished before: nothing was trained."""

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = load_run(self.path, encoders=self._encoders)
        return self._model


def train_run(
    config: RunConfig,
    out: str | Path,
    *,
    dist: Dist | None = None,
    progress: bool = False,
    overwrite: bool = False,
    encoders: Mapping[str, torch.nn.Module] | None = None,
    data: Any = None,
    callbacks: Sequence[Callback] = (),
    threads: Threads = None,
) -> RunResult:
    """Train (or resume, or skip if finished) the run in ``out``; return its metrics and model
    (``skipped`` on the result tells whether it had finished before).

    Args:
        config: the run's settings (:func:`resolve`).
        out: the run folder.
        dist: this process's place in a data-parallel job (default: one process).
        progress: show progress bars.
        overwrite: discard a run of another config in ``out``.
        encoders: your own encoder modules for some modalities (see :mod:`altmodal.encoders`
            for the contract); the others get the kind the data or ``--encoder`` names. To
            reload the run, pass the same modules (untrained) to ``load_run``.
        data: your own data instead of ``config.data.dataset``: a dict of arrays laid out like a
            feature file, a ``MultimodalDataset``, or a torch Dataset / DataLoader of modality
            dicts (see :func:`altmodal.data.user.loaded_from`).
        callbacks: more :class:`~altmodal.callbacks.Callback` objects for the loop.
        threads: torch CPU threads while training: a number, ``"auto"`` (the rule of
            :mod:`altmodal.threads`) or None (torch's setting as it is); restored afterwards.

    Raises:
        ConfigError: ``out`` is a file, a folder of other files (without ``overwrite``), a run of
            another config, or in use by another process.
    """
    from altmodal.data.user import fingerprint, loaded_from

    loaded = None if data is None else loaded_from(data)
    if loaded is not None:
        name = f"{PYTHON_DATA} {fingerprint(loaded)}"  # other data, other config: never skipped as finished
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, dataset=name))
    config = with_absolute_paths(config)
    dist = dist or Dist(device=resolve_device(config.train.device))
    with kept_rng_state():  # the run seeds the global generators; the caller's state comes back
        return _train_in(config, Path(out), dist, progress, overwrite, encoders, loaded, callbacks, threads)


def _train_in(
    config: RunConfig,
    out: Path,
    dist: Dist,
    progress: bool,
    overwrite: bool,
    encoders: Mapping[str, torch.nn.Module] | None,
    loaded: Any,
    callbacks: Sequence[Callback],
    threads: Threads,
    splits: Splits | None = None,
) -> RunResult:
    run = Run(out, main=dist.is_main)
    run.check_folder()
    foreign = run.foreign_files()
    if foreign and not overwrite:
        raise ConfigError(
            f"{run.path}: the folder holds files of its own ({', '.join(foreign[:3])}) and no run; "
            "choose a new or empty --out, or pass --overwrite to write the run there"
        )
    with run.lock():
        return _train_locked(config, run, dist, progress, overwrite, encoders, loaded, callbacks, threads, splits)


def _train_locked(
    config: RunConfig,
    run: Run,
    dist: Dist,
    progress: bool,
    overwrite: bool,
    encoders: Mapping[str, torch.nn.Module] | None,
    loaded: Any,
    callbacks: Sequence[Callback],
    threads: Threads,
    splits: Splits | None = None,
) -> RunResult:
    started_before = any(run.has(name) for name in RUN_FILES)
    if run.has("config.json") and started_before and not overwrite:
        previous = run.read_object("config.json")
        if previous != config.to_dict():
            raise ConfigError(f"{run.path} holds a run with another config; choose another --out or pass --overwrite")
        check_data(run, config)
        if run.finished:
            log.info("%s: finished already, skipping", run.path)
            return RunResult(run.read_object("metrics.json"), run.path, encoders=encoders, skipped=True)
    elif overwrite and dist.is_main:
        for name in (*RUN_FILES, *RUN_EXTRAS):
            run.remove(name)
        if run.has("config.json") and run.file(FOLDS).is_dir():  # the members of an overwritten run
            shutil.rmtree(run.file(FOLDS))
    dist.barrier()
    if config.data.folds > 1 and config.data.fold == 0:
        return _train_cross_fitted(config, run, dist, progress, overwrite, encoders, loaded, callbacks, threads)
    seed_everything(member_seed(config))
    splits = load_splits(config.data, config.train.seed, loaded) if splits is None else splits  # (a member's: given)
    strategy = build_strategy(config.strategy, splits, config.encoder, config.options, encoders)
    if len(strategy.modalities) == 1 and config.strategy != "unimodal":
        python = config.data.dataset.startswith(PYTHON_DATA)
        log.warning(
            "%s: %s is a multimodal strategy, trained here on one modality (%s); %s",
            "data from Python" if python else run.path,
            config.strategy,
            strategy.modalities[0],
            ONE_MODALITY_ADVICE[python],
        )
    start(run, config)  # once the data and the model are known to be valid: a failed start leaves no run
    resume = run.load("checkpoint.pt") if run.has("checkpoint.pt") else None
    if resume is not None:
        check_checkpoint(resume, run.file("checkpoint.pt"), strategy.state_dict())
        log.info("%s: resuming after epoch %d", run.path, int(resume["epoch"]) + 1)
    with torch_threads(threads_for(threads, strategy)):
        started = time.perf_counter()
        loop = Trainer(config.train, dist, callbacks=[run, *callbacks], progress=progress)
        history = loop.fit(strategy, splits, resume)
        seconds = time.perf_counter() - started
        # a cross-fitted run's member reports its test split without each subset of modalities:
        # nothing reads them back, and with M modalities there are 2^M - 1
        test_outputs = strategy.collect(splits.test, all_subsets=config.data.fold == 0)
        metrics = final_metrics(strategy, splits, config, history, test_outputs)
    metrics["train_seconds"] = seconds
    card = model_card(strategy, splits, config, encoders or {})
    return _write_model(run, dist, strategy, card, splits, test_outputs, metrics, config, history)


def _write_model(
    run: Run,
    dist: Dist,
    strategy: Model,
    card: Mapping[str, Any],
    splits: Splits,
    test_outputs: Outputs,
    metrics: Mapping[str, Any],
    config: RunConfig,
    history: Sequence[Mapping[str, Any]],
) -> RunResult:
    """Write a trained model's files and its whole history (metrics.json last: it marks the run
    finished)."""
    run.save_tensors("model.safetensors", strategy.state_dict())
    run.save_tensors("preprocessing.safetensors", flat_stats(splits.preprocessing))
    run.write_json("model.json", card)
    if run.main:
        write_csv(run.file("history.csv"), history)
        write_csv(run.file("predictions_test.csv"), prediction_rows(test_outputs, card["classes"]))
    run.write_json("metrics.json", metrics)
    run.remove("checkpoint.pt")
    dist.barrier()
    model = Predictor(
        strategy, card, splits.preprocessing, run.path, splits.test.transforms, config=config.to_dict(), metrics=metrics
    )
    return RunResult(metrics, run.path, model)


def start(run: Run, config: RunConfig) -> None:
    """Write the run's config.json and, for a whole run, its data.json (a cross-fitted run's
    members share the data its folder records)."""
    run.write_json("config.json", config.to_dict())
    if config.data.fold == 0:
        run.write_json(DATA_FILE, data_record(config))


def train_member(member: RunConfig, path: Path, splits: Splits, threads: int, stop: Callback) -> Model:
    """Train a cross-fitted run's member in its folder as the run would (in a second process,
    where ``stop`` ends it once the run has ended); the trained model."""
    dist = Dist()
    return _train_in(member, path, dist, False, False, {}, None, [stop], threads, splits).model.strategy


def _train_cross_fitted(
    config: RunConfig,
    run: Run,
    dist: Dist,
    progress: bool,
    overwrite: bool,
    encoders: Mapping[str, torch.nn.Module] | None,
    loaded: Any,
    callbacks: Sequence[Callback],
    threads: Threads,
) -> RunResult:
    """Train (or resume, or skip) each member of a cross-fitted run in ``folds/<k>``, choose the
    fusion on their out-of-fold predictions and write the run as one model (:mod:`altmodal.bagging`)."""
    from altmodal.data.registry import load

    seed = config.train.seed
    loaded = load(config.data) if loaded is None else loaded
    splits = load_splits(config.data, seed, loaded)
    development = len(splits.train) + len(splits.val)  # what the folds share out
    if config.data.folds > development:
        raise ConfigError(
            f"--folds {config.data.folds}: more folds than the {development} training and validation samples "
            f"(each fold predicts at least one); choose at most {development} (5 is usual)"
        )
    own = {m: copy.deepcopy(e) for m, e in (encoders or {}).items()}
    model = build_strategy(config.strategy, splits, config.encoder, config.options, own)  # the model is valid ...
    start(run, config)  # ... before the run is written (as a single run's)
    started = time.perf_counter()
    members: list[Strategy] = []
    held_out_outputs: list[tuple[Model, Outputs]] = []
    answers = []
    history: list[dict[str, Any]] = []
    orders: list[np.ndarray] = []
    learners = run_learners(config, splits, encoders or {})
    summaries: list[Any] = []  # each member's, as its metrics.json holds it (a reloaded model forgets its scores)
    folds = [
        dataclasses.replace(config, data=dataclasses.replace(config.data, fold=k))
        for k in range(1, config.data.folds + 1)
    ]
    side = side_process() if learners is not None and threads == "auto" and not dist.active else None
    shared, workers = 0, 1  # the networks' threads where a second process works beside the run: one fewer
    if side is not None:
        threads = shared = min(threads_for(threads, model) or torch.get_num_threads(), torch.get_num_threads() - 1)
        workers = torch.get_num_threads() // shared  # the fusion choice's fits at once, the second process idle
    beside = (  # members' networks may train in the second process too, on as many threads
        side is not None
        and not encoders
        and dist.device.type == "cpu"
        and 2 * shared <= torch.get_num_threads()
        and all(isinstance(c, Display) for c in callbacks)
    )
    paths = [run.file(FOLDS) / str(k) for k in range(1, len(folds) + 1)]
    trained: dict[int, tuple[Any, tuple[Outputs, np.ndarray]]] = {}
    with MemberJobs(learners, folds, paths, loaded, side, shared, beside, train_member) as jobs:
        for k, member in enumerate(folds, start=1):
            if not jobs.here(k):
                continue
            for callback in callbacks:
                callback.on_member_start(k, config.data.folds)
            own = {m: copy.deepcopy(e) for m, e in (encoders or {}).items()}  # each member trains its own
            mine = jobs.splits(k)
            result = _train_in(member, paths[k - 1], dist, progress, overwrite, own, loaded, callbacks, threads, mine)
            trained[k] = result, held_out(result.model.strategy, mine, threads)
        taken = [k for k in range(1, len(folds) + 1) if k not in trained]  # by the second process
        if taken:
            which = f"member{'s' if len(taken) > 1 else ''} {', '.join(map(str, taken))}"
            log.info("%s: %s trained in a second process", run.path, which)
        jobs.fit_left()
        for k in range(1, len(folds) + 1):
            if k not in trained:  # trained in the second process: read back once it is done
                got = jobs.trained_beside(k)
                trained[k] = RunResult(Run(paths[k - 1]).read_object("metrics.json"), paths[k - 1]), got
            result, (outputs, order) = trained[k]
            strategy = result.model.strategy
            held_out_outputs.append((strategy, outputs))
            orders.append(order)
            members.append(strategy)
            summaries.append(result.get("strategy_summary", {}))
            history += [{"fold": k, **row} for row in read_csv(result.path / "history.csv")]
        if learners is not None:  # each member's learners, fitted on its rows, asked on its fold
            for k, at in enumerate(orders, start=1):
                answers.append({n: torch.from_numpy(v[at]) for n, v in jobs.answers(k).items()})
    spec = DataSpec(tuple(splits.train.modalities), splits.train.num_classes, len(splits.train.labels))
    bag = Bag(members, spec, learners)
    bag.place(dist, config.train.eval_batch_size, config.train.precision)
    bag.best_epoch = members[0].best_epoch
    with torch_threads(threads_for(threads, members[0])):
        bag.choose(held_out_outputs, seed, answers, workers=workers)
        seconds = time.perf_counter() - started
        test_outputs = bag.collect(splits.test)
        metrics = final_metrics(bag, splits, config, history, test_outputs, val_outputs=bag.held_out)
    metrics["train_seconds"] = seconds
    metrics["learner_seconds"] = jobs.seconds  # of which fitting and asking the learners (wherever) ...
    metrics["side_wait_seconds"] = jobs.waited  # ... and the run's own time on them or waiting for the second process
    metrics["members_beside"] = taken
    metrics["best_epoch"] = [m.best_epoch for m in members]
    if "members" in metrics.get("strategy_summary", {}):
        metrics["strategy_summary"]["members"] = summaries
    card = {**model_card(bag, splits, config, encoders or {}), "folds": config.data.folds}
    if learners is not None:
        card["learners"] = learners.names
    return _write_model(run, dist, bag, card, splits, test_outputs, metrics, config, history)


def run_learners(config: RunConfig, splits: Splits, custom: Mapping[str, torch.nn.Module]) -> Learners | None:
    """The (unfitted) classical learners of a cross-fitted run (``--learners``), or None."""
    train = splits.train
    kinds = {**encoder_kinds(train.kinds, train.input_shapes(), config.encoder), **{m: "custom" for m in custom}}
    wanted = [k for k in config.data.learners if k != "none"]
    features = all(kinds[m] in FEATURE_KINDS and len(train.input_shape(m)) == 1 for m in train.modalities)
    if config.data.folds == 1 or not wanted or not features:  # learners read vectors of features only
        return None
    rows = len(train) + len(splits.val)  # (a member fits on fewer)
    width = sum(train.input_shape(m)[0] for m in train.modalities)
    dear = [k for k in wanted if not affordable(k, rows, width)]
    if dear:
        log.info("learners: %s left out (%d rows x %d columns: its kernel costs too much)", dear[0], rows, width)
    names = learner_names(train.modalities, [k for k in wanted if k not in dear])
    return Learners(names, train.modalities, train.num_classes) if names else None


DATA_FILE = "data.json"
"""What the run's data file held: its path and the SHA-256 of its bytes (empty for other data)."""


def data_record(config: RunConfig) -> dict[str, str]:
    """The path and SHA-256 of the run's data file (a .npz, .csv or .parquet dataset); empty for a
    built-in dataset, data handed over from Python (its digest is in the dataset's name) or a path
    that is not a regular file (loading it says why)."""
    path = Path(config.data.dataset)
    if config.data.dataset in DATASETS or config.data.dataset.startswith(PYTHON_DATA) or not path.is_file():
        return {}
    return {"file": str(path), "sha256": file_digest(path)}


def check_data(run: Run, config: RunConfig) -> None:
    """Raise a ConfigError when the data file changed since the run in ``run`` started (a run that
    recorded no data is taken as it is)."""
    if config.data.fold > 0 or not run.has(DATA_FILE):
        return
    before = run.read_object(DATA_FILE).get("sha256")
    now = data_record(config).get("sha256")
    if before is not None and before != now:
        raise ConfigError(
            f"{config.data.dataset}: changed since the run in {run.path} started on it (its content differs); "
            "train the run again on the new data (the same command with --overwrite), or choose another --out"
        )


ONE_MODALITY_ADVICE = {
    False: "use --strategy unimodal or select more modalities",
    True: "use MultimodalClassifier('unimodal') (strategy 'unimodal'), or give more modalities: a dict of "
    "arrays, or columns= mapping the columns of a DataFrame or 2-D array to modalities",
}
"""What to do about a multimodal strategy on one modality, on the command line and in Python."""

PYTHON_DATA = "<data from Python>"
"""How the dataset name of a run trained on data handed to :func:`train_run` starts (a digest
of the data follows)."""


def with_absolute_paths(config: RunConfig) -> RunConfig:
    """The config with its data and weights paths absolute, so the run folder can move."""
    data = config.data
    if data.dataset not in DATASETS and Path(data.dataset).suffix:
        data = dataclasses.replace(data, dataset=str(Path(data.dataset).resolve()))
    if data.data_dir:
        data = dataclasses.replace(data, data_dir=str(Path(data.data_dir).resolve()))
    weights = tuple(f"{m}={Path(p).resolve()}" for m, p in weights_by_modality(config.encoder.weights).items())
    return dataclasses.replace(config, data=data, encoder=dataclasses.replace(config.encoder, weights=weights))


def check_checkpoint(state: Any, path: Path, model: Mapping[str, torch.Tensor] | None = None) -> None:
    """Raise a ValueError naming ``path`` unless ``state`` has a checkpoint's layout, its random
    state can be restored and (given the ``model``'s state dict) both its models fit ``model``."""
    problem = ""
    if not isinstance(state, Mapping) or not CHECKPOINT_KEYS <= set(state):
        problem = f"not an altmodal checkpoint (it needs the entries {', '.join(sorted(CHECKPOINT_KEYS))})"
    elif not isinstance(state["epoch"], int) or isinstance(state["epoch"], bool) or state["epoch"] < 0:
        problem = f"'epoch' is {state['epoch']!r}, not an epoch number"
    elif not isinstance(state["history"], list) or not all(isinstance(r, Mapping) for r in state["history"]):
        problem = "'history' is not a list of per-epoch rows"
    elif len(state["history"]) != state["epoch"] + 1:
        problem = f"'history' has {len(state['history'])} rows for {state['epoch'] + 1} epochs"
    elif not isinstance(state["best"], Mapping) or not {"epoch", "score", "model"} <= set(state["best"]):
        problem = "'best' lacks the best epoch, its score or its parameters"
    elif not isinstance(state["training"], Mapping) or not isinstance(state["rng"], Mapping):
        problem = "'training' or 'rng' is not a table of states"
    elif not _restorable(state["rng"]):
        problem = "'rng' is not a saved random state"
    elif model is not None:
        for key, saved in (("training", state["training"].get("model")), ("best", state["best"]["model"])):
            mismatch = _mismatch(saved, model)
            if mismatch:
                problem = f"{key!r} holds parameters of another model ({mismatch})"
                break
    if problem:
        raise ValueError(f"{path}: {problem}; delete it to start the run afresh")


def _restorable(rng: Mapping[str, Any]) -> bool:
    """Whether ``rng`` restores (tried, then the current state put back)."""
    current = rng_state()
    try:
        set_rng_state(rng)
    except Exception:  # any malformed entry: missing keys, wrong types, wrong sizes
        return False
    finally:
        set_rng_state(current)
    return True


def _mismatch(saved: Any, model: Mapping[str, torch.Tensor]) -> str:
    """What keeps ``saved`` from loading into a model with state dict ``model`` ('' if nothing)."""
    if not isinstance(saved, Mapping):
        return f"a {type(saved).__name__}, not a table of tensors"
    missing = [k for k in model if k not in saved]
    unexpected = [k for k in saved if k not in model]
    wrong = [k for k in model if k in saved and not isinstance(saved[k], torch.Tensor)]
    shapes = [k for k in model if isinstance(saved.get(k), torch.Tensor) and saved[k].shape != model[k].shape]
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("not tensors", wrong), ("shapes", shapes)):
        if keys:
            return f"{what} {', '.join(keys[:2])}{', ...' if len(keys) > 2 else ''}"
    return ""


def final_metrics(
    strategy: Model,
    splits: Any,
    config: RunConfig,
    history: Sequence[Mapping[str, float]],
    test_outputs: Outputs | None = None,
    val_outputs: Outputs | None = None,
) -> dict[str, Any]:
    """metrics.json: the run's settings, its test metrics and analyses, and the held-out block
    ``val`` (``val_outputs``: a cross-fitted run's out-of-fold predictions; by default the
    validation split). Where the strategy chose its fusion on those samples, the winner's score
    there flatters it: ``val`` then reports the choice's honest estimate as its fused accuracy and
    the winner's score as ``selection_score``."""
    test_outputs = strategy.collect(splits.test) if test_outputs is None else test_outputs
    val_outputs = strategy.collect(splits.val, all_subsets=False) if val_outputs is None else val_outputs
    summary = strategy.summary()
    val = summarize(val_outputs, strategy.num_classes)
    if "fusion_estimate" in summary:  # the nested estimate, over the samples the choice scored
        fused: dict[str, Any] = val["fused"]  # type: ignore[assignment]
        fused["selection_score"] = summary["fusion_scores"][summary["fusion"]]
        fused["accuracy"] = summary["fusion_estimate"]
        fused["macro_f1"] = summary.get("fusion_estimate_macro_f1", float("nan"))
        val["count"] = summary.get("samples", val["count"])
    metrics: dict[str, Any] = {
        "dataset": config.data.dataset,
        "strategy": config.strategy,
        "seed": config.train.seed,
        "modalities": strategy.modalities,
        "options": config.options,
        "epochs": config.train.epochs,
        "epochs_run": len(history),
        "best_epoch": strategy.best_epoch,
        "missing": missing_block(splits.test, config.data.missing_protocol, config.data.test_missing_rate),
        "absent": config.encoder.absent,
        "test": summarize(test_outputs, strategy.num_classes),
        "val": val,
        "analyses": analyses(test_outputs),
        "seconds_per_epoch": float(np.mean([row["seconds"] for row in history])) if history else 0.0,
    }
    if summary:
        metrics["strategy_summary"] = summary
    return metrics


def missing_block(dataset: Any, protocol: str, rate: float) -> dict[str, Any]:
    """The missing-modality protocol, its nominal rate and what it realised in ``dataset``."""
    return {"protocol": protocol, "rate": rate, **missing_summary(dataset.present, dataset.rows)}


@kept_rng_state()  # it seeds the global generators for itself
def evaluate_run(
    path: str | Path,
    *,
    present: Sequence[str] | None = None,
    missing_rate: float = 0.0,
    missing_protocol: str | None = None,
    split: str = "test",
    seed: int | None = None,
    dist: Dist | None = None,
    device: str = "auto",
    threads: Threads = None,
) -> dict[str, Any]:
    """Re-evaluate a finished run's best model on a split, optionally with only ``present``
    modalities or with modalities dropped at ``missing_rate`` under ``missing_protocol`` (default:
    the run's), on ``device`` (whichever device the run was trained on) with ``threads`` torch CPU
    threads (see :func:`train_run`). The result's ``missing`` entry states the protocol and the
    realised shares."""
    if not 0 <= missing_rate < 1:
        raise ConfigError(f"missing rate {missing_rate} must be in [0, 1)")
    if missing_protocol is not None and missing_protocol not in PROTOCOLS:
        raise ConfigError(f"unknown missing protocol {missing_protocol!r}; protocols: {', '.join(PROTOCOLS)}")
    if present is not None and not present:
        raise ConfigError("--present names no modality; give one or more, comma-separated")
    run = Run(path)
    config = load_run_config(run)
    check_data(run, config)
    if config.data.dataset.startswith(PYTHON_DATA):
        raise ConfigError(
            f"{run.path} was trained on data handed over from Python; evaluate it with "
            "altmodal.load_run(path).evaluate(inputs, labels)"
        )
    protocol = missing_protocol or config.data.missing_protocol
    seed_everything(config.train.seed)
    splits = load_splits(config.data, config.train.seed)
    # The saved model holds every parameter: pretrained weight files are not needed (nor read) again.
    encoder = dataclasses.replace(config.encoder, weights=())
    members = [build_strategy(config.strategy, splits, encoder, config.options) for _ in range(config.data.folds)]
    learners = saved_learners(run.read_json("model.json"), members[0].spec) if len(members) > 1 else None
    strategy: Model = members[0] if len(members) == 1 else Bag(members, members[0].spec, learners)
    dist = dist or Dist(device=resolve_device(device))
    strategy.place(dist, config.train.eval_batch_size, config.train.precision)
    load_model_weights(strategy, run)
    # Evaluation never augments, whichever split is evaluated.
    dataset = splits[split].with_transforms(splits.test.transforms)
    if present:
        unknown = [m for m in present if m not in strategy.modalities]
        if unknown:
            raise ConfigError(
                f"unknown modality {unknown[0]!r}; this run's modalities are {', '.join(strategy.modalities)}"
            )
        keep = {m: np.asarray(dataset.present[m]) & (m in present) for m in strategy.modalities}
        dataset = dataset.with_present(keep)
    if missing_rate > 0:
        mask_seed = config.train.seed + 1 if seed is None else seed
        dataset = dataset.with_present(missing_mask(dataset.present, dataset.rows, missing_rate, mask_seed, protocol))
    with torch_threads(threads_for(threads, strategy)):
        outputs = strategy.collect(dataset)
    rate = missing_rate if missing_rate > 0 else config.data.test_missing_rate
    result: dict[str, Any] = {
        "run": str(run.path),
        "split": split,
        "present": list(present) if present else strategy.modalities,
        "missing": missing_block(dataset, protocol, rate),
        split: summarize(outputs, strategy.num_classes),
    }
    if present:
        result[split]["present_subset"] = subset_name([m for m in strategy.modalities if m in present])
    return result
