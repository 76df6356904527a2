"""One run, end to end: resolve a config, load data, build a strategy, fit, evaluate, write.

Used by ``altmodal train`` / ``altmodal evaluate`` and by the benchmark grid.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from altmodal.bagging import Bag
from altmodal.config import ConfigError, build, coerce, fields_of, first_line, flatten, to_dict
from altmodal.data.dataset import Splits
from altmodal.data.registry import DATASETS, DataConfig, dataset_defaults, load_splits
from altmodal.data.splits import PROTOCOLS, missing_mask, missing_summary
from altmodal.data.table import is_table
from altmodal.distributed import Dist, resolve_device
from altmodal.encoders import EncoderConfig, encoder_kinds, weights_by_modality
from altmodal.metrics import Outputs, analyses, subset_name, summarize
from altmodal.predictions import prediction_rows
from altmodal.runs import ADVICE, FOLDS, RUN_EXTRAS, RUN_FILES, Run, read_csv, write_csv
from altmodal.strategies import STRATEGIES, Callback, DataSpec, Strategy, TrainConfig, build_strategy, strategy_class
from altmodal.threads import Threads, threads_for, torch_threads

log = logging.getLogger(__name__)

CHECKPOINT_KEYS = {"epoch", "training", "history", "best", "rng"}
SECTIONS: dict[str, type] = {"data": DataConfig, "encoder": EncoderConfig, "train": TrainConfig}
DEFAULT_STRATEGY = "mla"
LATER_DATA_FIELDS = ("label", "columns")
"""Data settings that came after run folders existed: config.json holds them only when they are
set, so an older run's config (its digest and its folder's name) stays the same."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run."""

    strategy: str = DEFAULT_STRATEGY
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    options: dict[str, Any] = field(default_factory=dict)
    """The strategy's own options, resolved (empty for strategies without options)."""

    def to_dict(self) -> dict[str, Any]:
        data = to_dict(self.data)
        for name in LATER_DATA_FIELDS:
            if getattr(self.data, name) == getattr(DataConfig, name):
                del data[name]
        return {
            "strategy": self.strategy,
            "data": data,
            "encoder": to_dict(self.encoder),
            "train": to_dict(self.train),
            "options": json.loads(json.dumps(self.options)),
        }

    def digest(self) -> str:
        """A short hash of the config; equal configs give equal digests."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def default_out(self, root: str | Path = "runs") -> Path:
        file = self.data.dataset.endswith(".npz") or is_table(self.data.dataset)
        name = Path(self.data.dataset).stem if file else self.data.dataset
        return Path(root) / f"{name}-{self.strategy}-seed{self.train.seed}-{self.digest()}"


def option_classes() -> dict[str, type]:
    """Strategy name -> its options dataclass (strategies without options left out)."""
    return {n: c.options_class for n, c in STRATEGIES.items() if c.options_class is not None}


def strategy_option_names() -> set[str]:
    return {name for cls in option_classes().values() for name in fields_of(cls)}


def preset_settings(cls: type[Strategy], preset: object = None) -> Mapping[str, Any]:
    """The settings a strategy's named preset sets (its options, and any run setting such as
    ``folds``); ``None``: its default preset; empty for a strategy without presets."""
    if cls.options_class is None or "preset" not in fields_of(cls.options_class):
        return {}
    presets: Mapping[str, Mapping[str, Any]] = getattr(cls.options_class, "PRESETS", {})
    if preset is None:
        preset = fields_of(cls.options_class)["preset"][0].default
    return presets.get(str(preset), {})


def resolve(values: Mapping[str, Any], source: str = "settings") -> RunConfig:
    """A RunConfig from flat settings (config file entries overlaid with explicit flags).

    Precedence: dataclass defaults < the dataset's recommended settings < the strategy's preset
    (the one ``values`` names, or its default preset; for strategies with presets) < ``values``.

    Raises:
        ConfigError: an unknown setting, or an option of another strategy; the message names it.
    """
    name = str(values.get("strategy", DEFAULT_STRATEGY))
    cls = strategy_class(name)
    dataset = str(values.get("dataset", DataConfig().dataset))
    values = {**dataset_defaults(dataset), **preset_settings(cls, values.get("preset")), **values}
    own = fields_of(cls.options_class) if cls.options_class is not None else {}
    known = {"strategy"} | {n for c in SECTIONS.values() for n in fields_of(c)} | strategy_option_names()
    for key in values:
        if key not in known:
            raise ConfigError(f"{source}: unknown setting {key!r}")
        if key in strategy_option_names() and key not in own:
            owners = [s for s, c in option_classes().items() if key in fields_of(c)]
            raise ConfigError(f"{source}: option {key!r} belongs to strategy {' / '.join(owners)}, not {name!r}")
    sections: dict[str, Any] = {
        section: build(c, {k: coerce(c, k, v, source) for k, v in values.items() if k in fields_of(c)})
        for section, c in SECTIONS.items()
    }
    options: dict[str, Any] = {}
    if cls.options_class is not None:
        checked = {k: coerce(cls.options_class, k, v, source) for k, v in values.items() if k in own}
        options = to_dict(build(cls.options_class, checked))
    return RunConfig(strategy=name, options=options, **sections)


def check_settings(values: Mapping[str, Any], source: str, also: Sequence[str] = ()) -> None:
    """Check settings read from one place (a config file) by themselves, so that an error names
    that place: every key must be a setting (or in ``also``), every value of its type.

    Raises:
        ConfigError: an unknown key or a value of the wrong type; the message names ``source``.
    """
    owners: dict[str, list[type]] = {}
    for cls in (*SECTIONS.values(), *option_classes().values()):
        for name in fields_of(cls):
            owners.setdefault(name, []).append(cls)
    for key, value in values.items():
        if key == "strategy":
            if not isinstance(value, str) or value not in STRATEGIES:
                raise ConfigError(f"{source}: strategy = {value!r} is not one of {', '.join(STRATEGIES)}")
        elif key in owners:
            errors = []
            for cls in owners[key]:  # strategies may share an option's name, not its type
                try:
                    coerce(cls, key, value, source)
                    break
                except ConfigError as err:
                    errors.append(err)
            else:
                raise errors[0]
        elif key not in also:
            raise ConfigError(f"{source}: unknown setting {key!r}")


def layer(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Settings ``overrides`` (explicit flags, a benchmark cell) laid over ``base`` (a config
    file, the benchmark's common settings).

    A preset named in ``overrides`` outranks the strategy options of ``base`` (a run's
    config.json lists every option, which would otherwise hide the preset); options in ``base``
    that belong to another strategy than the one chosen are dropped.
    """
    name = str(overrides.get("strategy", base.get("strategy", DEFAULT_STRATEGY)))
    cls = strategy_class(name)
    own = set(fields_of(cls.options_class)) if cls.options_class is not None else set()
    values = {k: v for k, v in base.items() if k in own or k not in strategy_option_names()}
    if "preset" in overrides and cls.options_class is not None:
        values.update(preset_settings(cls, overrides["preset"]))
    values.update(overrides)
    return values


def load_run_config(run: Run) -> RunConfig:
    return resolve(flatten(run.read_object("config.json")), str(run.file("config.json")))


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
            from altmodal.predictor import load_run

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
        callbacks: more :class:`~altmodal.strategies.base.Callback` objects for the loop.
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
        return _train_locked(config, run, dist, progress, overwrite, encoders, loaded, callbacks, threads)


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
) -> RunResult:
    started_before = any(run.has(name) for name in RUN_FILES)
    if run.has("config.json") and started_before and not overwrite:
        previous = run.read_object("config.json")
        if previous != config.to_dict():
            raise ConfigError(f"{run.path} holds a run with another config; choose another --out or pass --overwrite")
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
    splits = load_splits(config.data, config.train.seed, loaded)
    strategy = build_strategy(config.strategy, splits, config.encoder, config.options, encoders)
    if len(strategy.modalities) == 1 and config.strategy != "unimodal":
        log.warning(
            "%s: %s is a multimodal strategy, trained here on one modality (%s); use --strategy unimodal "
            "or select more modalities",
            run.path,
            config.strategy,
            strategy.modalities[0],
        )
    # Written once the data and the model are known to be valid: a failed start leaves no run.
    run.write_json("config.json", config.to_dict())
    resume = run.load("checkpoint.pt") if run.has("checkpoint.pt") else None
    if resume is not None:
        check_checkpoint(resume, run.file("checkpoint.pt"), strategy.state_dict())
        log.info("%s: resuming after epoch %d", run.path, int(resume["epoch"]) + 1)
    with torch_threads(threads_for(threads, strategy)):
        started = time.perf_counter()
        history = strategy.fit(
            splits, config.train, dist=dist, resume=resume, callbacks=[run, *callbacks], progress=progress
        )
        seconds = time.perf_counter() - started
        test_outputs = strategy.collect(splits.test)
        metrics = final_metrics(strategy, splits, config, history, test_outputs)
    metrics["train_seconds"] = seconds
    card = model_card(strategy, splits, config, encoders or {})
    return _write_model(run, dist, strategy, card, splits, test_outputs, metrics, config)


def _write_model(
    run: Run,
    dist: Dist,
    strategy: Strategy,
    card: Mapping[str, Any],
    splits: Splits,
    test_outputs: Outputs,
    metrics: Mapping[str, Any],
    config: RunConfig,
) -> RunResult:
    """Write a trained model's files (metrics.json last: it marks the run finished)."""
    run.save_tensors("model.safetensors", strategy.state_dict())
    run.save_tensors("preprocessing.safetensors", flat_stats(splits.preprocessing))
    run.write_json("model.json", card)
    if run.main:
        write_csv(run.file("predictions_test.csv"), prediction_rows(test_outputs, card["classes"]))
    run.write_json("metrics.json", metrics)
    run.remove("checkpoint.pt")
    dist.barrier()
    from altmodal.predictor import Predictor

    model = Predictor(
        strategy, card, splits.preprocessing, run.path, splits.test.transforms, config=config.to_dict(), metrics=metrics
    )
    return RunResult(metrics, run.path, model)


def member_seed(config: RunConfig) -> int:
    """The seed of the initialisation: the run's, mixed with the fold for a cross-fitted run's
    member (members start apart; the splits and masks follow the run's seed alone)."""
    if config.data.fold == 0:
        return config.train.seed
    return int(np.random.SeedSequence([config.train.seed, config.data.fold]).generate_state(1)[0])


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
    own = {m: copy.deepcopy(e) for m, e in (encoders or {}).items()}
    build_strategy(config.strategy, splits, config.encoder, config.options, own)  # the model is valid ...
    run.write_json("config.json", config.to_dict())  # ... before the run is written (as a single run's)
    started = time.perf_counter()
    members: list[Strategy] = []
    held_out = []
    history: list[dict[str, Any]] = []
    for k in range(1, config.data.folds + 1):
        member = dataclasses.replace(config, data=dataclasses.replace(config.data, fold=k))
        own = {m: copy.deepcopy(e) for m, e in (encoders or {}).items()}  # each member trains its own
        path = run.file(FOLDS) / str(k)
        result = _train_in(member, path, dist, progress, overwrite, own, loaded, callbacks, threads)
        strategy = result.model.strategy
        holdout = load_splits(member.data, seed, loaded).holdout
        assert holdout is not None
        with torch_threads(threads_for(threads, strategy)):
            held_out.append((strategy, strategy.collect(holdout, all_subsets=False)))
        members.append(strategy)
        history += [{"fold": k, **row} for row in read_csv(result.path / "history.csv")]
    spec = DataSpec(tuple(splits.train.modalities), splits.train.num_classes, len(splits.train.labels))
    bag = Bag(members, spec)
    bag.dist, bag.config = dist, config.train
    bag.best_epoch = members[0].best_epoch
    bag.to(bag.device)
    with torch_threads(threads_for(threads, members[0])):
        bag.choose(held_out, seed)
        seconds = time.perf_counter() - started
        test_outputs = bag.collect(splits.test)
        metrics = final_metrics(bag, splits, config, history, test_outputs, val_outputs=bag.held_out)
    metrics["train_seconds"] = seconds
    metrics["best_epoch"] = [m.best_epoch for m in members]
    card = {**model_card(bag, splits, config, encoders or {}), "folds": config.data.folds}
    if run.main:
        write_csv(run.file("history.csv"), history)
    return _write_model(run, dist, bag, card, splits, test_outputs, metrics, config)


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


def model_card(
    strategy: Strategy, splits: Splits, config: RunConfig, custom: Mapping[str, torch.nn.Module]
) -> dict[str, Any]:
    """What model.json holds: everything prediction needs besides the weights."""
    import altmodal

    train = splits.train
    kinds = encoder_kinds(train.kinds, train.modalities, config.encoder)
    kinds.update({m: f"custom:{type(module).__module__}.{type(module).__qualname__}" for m, module in custom.items()})
    card: dict[str, Any] = {
        "format": 1,
        "strategy": config.strategy,
        "dataset": config.data.dataset,
        "dataset_options": list(config.data.dataset_options),
        "classes": [str(c) for c in train.classes],
        "label_type": "integer" if train.integer_labels else "string",
        "modalities": {m: {"shape": list(train.input_shape(m)), "encoder": kinds[m]} for m in train.modalities},
        "num_samples": len(train.labels),
        "preprocessing": {m: "standardize" for m in splits.preprocessing},
        "best_epoch": strategy.best_epoch,
        "versions": {"altmodal": altmodal.__version__, "torch": torch.__version__},
    }
    if train.columns:
        card["columns"] = {m: list(train.columns[m]) for m in train.modalities}
        card["label_column"] = config.data.label
    return card


def check_model_card(card: Any, path: Path) -> dict[str, Any]:
    """``card`` (a run's model.json) checked for what prediction reads from it.

    Raises:
        ValueError: an entry is missing or of the wrong kind; the message names ``path`` and it.
    """
    problem = ""
    if not isinstance(card, dict):
        problem = f"holds {type(card).__name__}, not the JSON object of a model"
    elif not isinstance(card.get("classes"), list) or not all(isinstance(c, str) for c in card["classes"]):
        problem = f"'classes' is {_shown(card.get('classes'))}, not a list of class names"
    elif not isinstance(card.get("modalities"), dict) or not card["modalities"]:
        problem = f"'modalities' is {_shown(card.get('modalities'))}, not a table of the model's modalities"
    elif not isinstance(card.get("strategy"), str):
        problem = f"'strategy' is {_shown(card.get('strategy'))}, not a strategy name"
    elif not _count(card.get("num_samples")) or not _count(card.get("best_epoch")):
        problem = "'num_samples' or 'best_epoch' is not a count"
    elif not isinstance(card.get("preprocessing", {}), dict):
        problem = f"'preprocessing' is {_shown(card.get('preprocessing'))}, not a table of modalities"
    else:
        for m, entry in card["modalities"].items():
            shape = entry.get("shape") if isinstance(entry, dict) else None
            if not isinstance(shape, list) or not all(_count(n) and n > 0 for n in shape):
                problem = f"modality {m!r} has shape {_shown(shape)}, not a list of sizes"
            elif not isinstance(entry.get("encoder"), str):
                problem = f"modality {m!r} has encoder {_shown(entry.get('encoder'))}, not an encoder kind"
            if problem:
                break
        unknown = [m for m in card.get("preprocessing", {}) if m not in card["modalities"]]
        if unknown and not problem:
            problem = f"'preprocessing' names modality {unknown[0]!r}, which the model does not have"
    if problem:
        raise ValueError(f"{path}: {problem}; {ADVICE['model.json']}")
    return card


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shown(value: Any) -> str:
    return "missing" if value is None else repr(value) if len(repr(value)) < 60 else type(value).__name__


def flat_stats(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """``{"<modality>.<name>": tensor}`` for a safetensors file."""
    return {f"{m}.{k}": torch.from_numpy(np.asarray(v)) for m, d in stats.items() for k, v in d.items()}


def load_model_weights(strategy: Strategy, run: Run) -> None:
    """Load a run's selected model into ``strategy`` (model.safetensors; model.pt in older runs)."""
    if run.has("model.safetensors") or not run.has("model.pt"):
        saved: Any = {"model": run.load_tensors("model.safetensors", strategy.device)}
        restore(strategy, saved, run.file("model.safetensors"))
    else:
        restore(strategy, run.load("model.pt", map_location=strategy.device), run.file("model.pt"))


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
    from altmodal.strategies.base import _rng_state, _set_rng_state

    current = _rng_state()
    try:
        _set_rng_state(rng)
    except Exception:  # any malformed entry: missing keys, wrong types, wrong sizes
        return False
    finally:
        _set_rng_state(current)
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


def restore(strategy: Strategy, saved: Any, path: Path) -> None:
    """Load a saved model into ``strategy``; a file of another shape or kind is a clear error."""
    if not isinstance(saved, Mapping) or "model" not in saved:
        raise ValueError(f"{path}: not an altmodal model file (no 'model' entry)")
    try:
        strategy.load_state_dict(saved["model"])
    except (RuntimeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: does not fit the model its config.json describes ({first_line(err)})") from err


def final_metrics(
    strategy: Strategy,
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
    if "fusion_estimate" in summary:
        fused: dict[str, Any] = val["fused"]  # type: ignore[assignment]
        fused["selection_score"] = summary["fusion_scores"][summary["fusion"]]
        fused["accuracy"] = summary["fusion_estimate"]
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
    strategy = members[0] if len(members) == 1 else Bag(members, members[0].spec)
    strategy.configure(config.train, dist or Dist(device=resolve_device(device)))
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
