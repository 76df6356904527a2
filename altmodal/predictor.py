"""A trained model as a product: reload a run folder and predict on new samples.

    model = load_run("runs/x", device="cpu")
    model.classes, model.modalities
    model.predict(inputs)                 # (N,) labels: integers for integer labels, else names
    model.predict_proba(inputs)           # (N, C) fused probabilities, columns in model.classes order
    model.modality_proba(inputs)          # modality -> (N, C): each modality's own prediction
    model.embed(inputs)                   # modality -> (N, d) features
    model.evaluate(inputs, labels)        # the metrics block of metrics.json
    model.save("elsewhere")               # a run folder load_run reads again

``inputs`` is a dict of arrays keyed by modality holding RAW values (the run's stored
preprocessing, e.g. standardisation with the training split's statistics, is applied), laid
out like a feature file: optional ``present_<modality>`` masks and ``label`` may sit in the same
dict. It may also be the path of such an ``.npz`` file, of a CSV or Parquet table when the run
was trained on one (the columns it was trained on are read by name; the label column is
optional), or of a media cache written by ``altmodal prepare`` for the corpus the run was
trained on (its evaluation transforms apply; a dict of media arrays gets none, so use the cache
for media runs). A modality left out of the dict is absent for every sample; one the model does
not know is ignored, with a one-line note in the log. ``present`` (modality -> (N,) bool, or the
names of the modalities to keep) marks more samples absent. A modality a sample lacks gets NaN
rows in the per-modality results; a sample with none gets NaN fused probabilities and no
prediction ('' for class names, None for integer labels).

Loading reads only JSON and safetensors files: no code in a run folder is ever run.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from altmodal.bagging import Bag, saved_learners
from altmodal.config import ConfigError
from altmodal.data.dataset import MultimodalDataset, Transform
from altmodal.data.features import PRESENT_PREFIX, RESERVED, DataError, check_float32, check_modality, read_arrays
from altmodal.data.splits import apply_standardization
from altmodal.data.table import is_frame, is_table, read_table, table_arrays
from altmodal.data.user import as_array
from altmodal.distributed import Dist, resolve_device
from altmodal.encoders import check_encoder
from altmodal.metrics import Outputs, summarize
from altmodal.model import DataSpec, Model
from altmodal.predictions import any_present, labels_of, prediction_rows, probabilities
from altmodal.runs import ADVICE, Run
from altmodal.saved import check_model_card, flat_stats, load_model_weights
from altmodal.settings import load_run_config
from altmodal.strategies import assemble

log = logging.getLogger(__name__)

Inputs = Mapping[str, Any] | str | Path | Any
"""A dict of arrays, a pandas DataFrame, or the path of a file or media cache."""
Present = Mapping[str, Any] | Sequence[str] | None


class Predictor:
    """A trained model with what prediction needs: classes, input shapes, preprocessing."""

    def __init__(
        self,
        strategy: Model,
        card: Mapping[str, Any],
        preprocessing: Mapping[str, Mapping[str, np.ndarray]],
        path: Path,
        transforms: Mapping[str, Transform] | None = None,
        *,
        config: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
    ):
        self.strategy = strategy
        self.card = dict(card)
        self.preprocessing = preprocessing
        self.path = Path(path)
        self.transforms = dict(transforms or {})
        self.config = dict(config or {})
        """The run's resolved config (what config.json holds)."""
        self.metrics = dict(metrics or {})
        """The run's metrics.json (empty when the folder had none)."""

    def __repr__(self) -> str:
        return (
            f"Predictor({str(self.path)!r}: {self.card['strategy']}, {len(self.classes)} classes, "
            f"modalities {', '.join(self.modalities)}, on {self.strategy.device})"
        )

    @property
    def classes(self) -> list[str]:
        return list(self.card["classes"])

    @property
    def class_values(self) -> list[Any]:
        """The classes as the training labels gave them: integers for integer labels, else
        the names of :attr:`classes`; :meth:`predict` answers with these."""
        if self.card.get("label_type") == "integer":
            return [int(c) for c in self.classes]
        return self.classes

    @property
    def modalities(self) -> list[str]:
        return list(self.card["modalities"])

    def shape(self, modality: str) -> tuple[int, ...]:
        """The shape of one sample of ``modality`` the model was trained on."""
        return tuple(self.card["modalities"][modality]["shape"])

    # ----- answers -------------------------------------------------------------------------
    def predict(self, inputs: Inputs, present: Present = None) -> np.ndarray:
        """(N,) predicted labels in the training labels' own kind: integers (int64) for integer
        labels, class names (objects) otherwise. A sample with no modality gets '' (names) or
        None (integers; the array is then of dtype object)."""
        return labels_of(self.predict_proba(inputs, present), self.class_values)

    def predict_proba(self, inputs: Inputs, present: Present = None) -> np.ndarray:
        """(N, C) fused probabilities, columns in :attr:`classes` order (NaN rows for samples
        with no modality)."""
        out, _ = self._collect(inputs, present)
        return probabilities(out.fused, any_present(out))

    def modality_proba(self, inputs: Inputs, present: Present = None) -> dict[str, np.ndarray]:
        """modality -> (N, C) probabilities of that modality's own prediction inside the model
        (NaN rows where the sample lacks it)."""
        out, _ = self._collect(inputs, present)
        return {m: probabilities(v, out.present[m]) for m, v in out.unimodal.items()}

    def embed(self, inputs: Inputs, present: Present = None) -> dict[str, np.ndarray]:
        """modality -> (N, d) features before the head (NaN rows where absent)."""
        out, _ = self._collect(inputs, present)
        features = {m: v.double().numpy() for m, v in out.features.items()}
        for m, values in features.items():
            values[~out.present[m].numpy()] = np.nan
        return features

    def evaluate(self, inputs: Inputs, labels: Any = None, present: Present = None) -> dict[str, Any]:
        """Metrics on labelled samples (``labels``, or the ``label`` array in ``inputs``):
        fused accuracy and macro-F1, each modality's accuracy, every present subset."""
        out, labelled = self._collect(inputs, present, labels, all_subsets=True)
        if not labelled:
            raise DataError("evaluate: the inputs hold no 'label' array; pass labels=...")
        return summarize(out, len(self.classes))

    def table(self, inputs: Inputs, present: Present = None) -> list[dict[str, object]]:
        """One row per sample (see :func:`altmodal.predictions.prediction_rows`); ``label``
        when ``inputs`` holds labels."""
        out, labelled = self._collect(inputs, present)
        return prediction_rows(out, self.classes, labelled=labelled)

    def save(self, path: str | Path) -> Path:
        """Write the model as a run folder that :func:`load_run` (and ``altmodal predict --run``)
        reads: config.json, model.json, model.safetensors, preprocessing.safetensors and, when
        known, metrics.json.

        Raises:
            ConfigError: ``path`` is a file, or a folder that already holds files (nothing is
                overwritten).
        """
        run = Run(path)
        run.check_folder()
        if run.path.is_dir() and any(run.path.iterdir()):
            raise ConfigError(f"{run.path}: the folder holds files already; save into a new or empty folder")
        if not self.config:
            raise ConfigError(f"{self.path}: this model has no run config to save (it predates Predictor.save)")
        with run.lock():
            run.write_json("config.json", self.config)
            run.save_tensors("model.safetensors", self.strategy.state_dict())
            run.save_tensors("preprocessing.safetensors", flat_stats(self.preprocessing))
            run.write_json("model.json", self.card)
            if self.metrics:
                run.write_json("metrics.json", self.metrics)
        return run.path

    # ----- the one path: inputs -> dataset -> Model.collect ---------------------------------
    def _collect(
        self, inputs: Inputs, present: Present = None, labels: Any = None, all_subsets: bool = False
    ) -> tuple[Outputs, bool]:
        """Everything the model predicts on ``inputs``, and whether they are labelled."""
        dataset, labelled = self.dataset(inputs, labels)
        if present is not None:
            dataset = dataset.with_present(self._present(dataset, present))
        return self.strategy.collect(dataset, all_subsets=all_subsets), labelled

    def dataset(self, inputs: Inputs, labels: Any = None) -> tuple[MultimodalDataset, bool]:
        """``inputs`` checked against the model and preprocessed, as a dataset, and whether it
        has labels (otherwise every label reads as class 0)."""
        if isinstance(inputs, (str, Path)) and Path(inputs).is_dir():
            return self._cache(Path(inputs), labels)
        source = str(inputs) if isinstance(inputs, (str, Path)) else "inputs"
        raw: Mapping[str, Any]
        if is_frame(inputs) or (isinstance(inputs, (str, Path)) and is_table(inputs)):
            raw = self._table(read_table(inputs) if isinstance(inputs, (str, Path)) else inputs, source)
        else:
            raw = read_arrays(inputs) if isinstance(inputs, (str, Path)) else self._mapping(inputs)
        raw = {str(k): as_array(v) for k, v in raw.items()}
        offered = [k for k in raw if k not in RESERVED and not k.startswith(PRESENT_PREFIX)]
        given = [k for k in offered if k in self.modalities]
        extra = [k for k in offered if k not in self.modalities]
        if not given:
            raise DataError(
                f"{source}: none of this model's modalities ({', '.join(self.modalities)}) is given "
                f"(it has {', '.join(offered) or 'no modality'})"
            )
        if extra:
            log.warning(
                "%s: ignoring %s %s, not among this model's modalities (%s)",
                source,
                "modality" if len(extra) == 1 else "modalities",
                ", ".join(map(repr, extra)),
                ", ".join(self.modalities),
            )
        n = len(raw[given[0]]) if raw[given[0]].ndim else 0
        if n == 0:
            raise DataError(f"{source}: holds no samples (modality {given[0]!r} has none); give one or more")
        arrays: dict[str, np.ndarray] = {}
        present: dict[str, np.ndarray] = {}
        for m in self.modalities:
            if m not in raw:
                arrays[m], present[m] = np.zeros((n, *self.shape(m)), np.float32), np.zeros(n, bool)
                continue
            if raw[m].ndim == 0 or len(raw[m]) != n:
                raise DataError(
                    f"{source}: modality {m!r} has {len(raw[m]) if raw[m].ndim else 0} samples, {given[0]!r} has {n}"
                )
            if tuple(raw[m].shape[1:]) != self.shape(m):
                raise DataError(
                    f"{source}: modality {m!r} has samples of shape {tuple(raw[m].shape[1:])} "
                    f"({int(np.prod(raw[m].shape[1:]))} features); the model was trained on {self.shape(m)} "
                    f"({int(np.prod(self.shape(m)))} features)"
                )
            arrays[m], present[m] = check_modality(raw, m, source)
            if m in self.preprocessing:
                arrays[m] = apply_standardization(
                    arrays[m], present[m], self.preprocessing[m], f"{source}: array {m!r}"
                )
            else:
                check_float32(arrays[m], present[m], f"{source}: array {m!r}")
        if labels is None and "label" in raw:
            labels = _named(raw["label"], raw.get("classes"))
        return self._with_labels(
            MultimodalDataset(source, arrays, present, np.zeros(n, np.int64), self.classes, np.arange(n)),
            labels,
            source,
        )

    def _mapping(self, inputs: Any) -> Mapping[str, Any]:
        if isinstance(inputs, Mapping):
            return inputs
        wanted = ", ".join(f"{m!r}: (N, {', '.join(map(str, self.shape(m)))})" for m in self.modalities)
        raise DataError(
            f"inputs: got a {type(inputs).__name__}; give a dict of modality arrays ({wanted}), "
            "a pandas DataFrame, or the path of an .npz feature file or a table"
        )

    def _table(self, frame: Any, source: str) -> dict[str, np.ndarray]:
        """A table's arrays: the columns the model was trained on, by name (or, for a model not
        trained on a table, by ``MODALITY__`` prefix); the label column when the table has it."""
        columns: Mapping[str, Sequence[str]] | None = self.card.get("columns")
        label = str(self.card.get("label_column", "label"))
        if columns:  # a modality none of whose columns the table has is absent
            header = {str(c) for c in frame.columns}
            columns = {m: names for m, names in columns.items() if any(c in header for c in names)}
            if not columns:
                raise DataError(
                    f"{source}: has none of the columns of this model's modalities ({', '.join(self.modalities)})"
                )
        arrays, _ = table_arrays(frame, source, label=label, spec=columns, label_required=False)
        return arrays

    def _cache(self, folder: Path, labels: Any) -> tuple[MultimodalDataset, bool]:
        from altmodal.data.registry import DATASETS, DataConfig, load

        name = self.card["dataset"]
        if name not in DATASETS or not DATASETS[name].needs_data_dir:
            raise DataError(f"{folder}: a folder, but this model was trained on {name}; give an .npz feature file")
        options = tuple(self.card.get("dataset_options", ()))
        loaded = load(DataConfig(dataset=name, data_dir=str(folder), dataset_options=options))
        dataset = loaded.dataset
        missing = [m for m in self.modalities if m not in dataset.arrays]
        if missing:
            raise DataError(f"{folder}: has no modality {missing[0]!r} (it has {', '.join(dataset.modalities)})")
        dataset = dataset.with_modalities(self.modalities).with_transforms(loaded.eval_transforms)
        for m in self.modalities:
            if dataset.input_shape(m) != self.shape(m):
                raise DataError(
                    f"{folder}: modality {m!r} has samples of shape {dataset.input_shape(m)}; "
                    f"the model was trained on {self.shape(m)} (prepare it with the same options)"
                )
        names = [dataset.classes[i] for i in dataset.labels] if labels is None else labels
        return self._with_labels(dataset, names, str(folder))

    def _with_labels(self, dataset: MultimodalDataset, labels: Any, source: str) -> tuple[MultimodalDataset, bool]:
        if labels is None:
            return dataset, False
        text = _text(np.asarray(labels))
        if len(text) != len(dataset.labels):
            raise DataError(f"{source}: {len(text)} labels for {len(dataset.labels)} samples")
        lookup = {c: i for i, c in enumerate(self.classes)}
        bad = np.flatnonzero([t not in lookup for t in text])
        if len(bad):
            raise DataError(
                f"{source}: label {str(text[bad[0]])!r} (row {bad[0]}) is not one of this model's classes "
                f"({', '.join(self.classes)})"
            )
        index = np.array([lookup[t] for t in text], dtype=np.int64)
        return dataclasses.replace(dataset, labels=index, classes=self.classes), True

    def _present(self, dataset: MultimodalDataset, present: Mapping[str, Any] | Sequence[str]) -> dict[str, Any]:
        n = len(dataset.labels)
        if isinstance(present, str):  # "m0,m1", as on the command line
            present = [m.strip() for m in present.split(",") if m.strip()]
        if not isinstance(present, Mapping):
            names = [str(m) for m in present]
            if not names:
                raise DataError("present names no modality; give one or more, or None for each sample's own")
            unknown = [m for m in names if m not in self.modalities]
            if unknown:
                raise DataError(
                    f"present: {unknown[0]!r} is not one of this model's modalities ({', '.join(self.modalities)})"
                )
            present = {m: np.full(n, m in names) for m in self.modalities}
        unknown = [str(m) for m in present if m not in self.modalities]
        if unknown:
            raise DataError(
                f"present: {unknown[0]!r} is not one of this model's modalities ({', '.join(self.modalities)})"
            )
        masks = {}
        for m in self.modalities:
            mask = _mask(present.get(m, True), n, f"present[{m!r}]")
            masks[m] = np.asarray(dataset.present[m], dtype=bool) & mask
        return masks


def _mask(value: Any, n: int, what: str) -> np.ndarray:
    """A (n,) bool mask from True/False or one boolean (or 0/1) per sample; errors name ``what``."""
    mask = as_array(value)
    if mask.ndim > 1:
        raise DataError(f"{what}: has shape {mask.shape}; give one boolean per sample ({n})")
    if mask.ndim == 1 and len(mask) != n:
        raise DataError(f"{what}: {len(mask)} entries for {n} samples; give one boolean per sample")
    if mask.dtype != bool:
        flat = mask.reshape(-1)
        numeric = np.issubdtype(mask.dtype, np.number)
        bad = np.flatnonzero(~np.isin(flat, (0, 1))) if numeric else np.arange(flat.size)
        if len(bad):
            raise DataError(f"{what}: holds {flat[bad[0]].item()!r} at row {int(bad[0])}; give booleans (or 0/1)")
        mask = mask.astype(bool)
    return np.broadcast_to(mask, (n,))


def load_run(path: str | Path, device: str = "auto", encoders: Mapping[str, nn.Module] | None = None) -> Predictor:
    """The selected model of a finished run folder, ready to predict.

    Args:
        path: the run folder (``altmodal train --out`` or ``train_run``); it may have moved.
        device: where to run: auto (CUDA if available), cpu, cuda or cuda:N, whatever device the
            run was trained on.
        encoders: for modalities trained with your own encoder, a fresh module of the same
            architecture (its weights are loaded from the run).

    Raises:
        FileNotFoundError: ``path`` is not a finished run folder.
        ConfigError: a modality needs your own encoder and none is given.
    """
    run = Run(path)
    card = check_model_card(run.read_json("model.json"), run.file("model.json"))
    config = load_run_config(run)
    shapes = {m: tuple(v["shape"]) for m, v in card["modalities"].items()}
    kinds = {m: v["encoder"] for m, v in card["modalities"].items()}
    custom = dict(encoders or {})
    for m, kind in kinds.items():
        if kind.startswith("custom:") and m not in custom:
            raise ConfigError(
                f"{run.path}: modality {m!r} was trained with your own encoder ({kind[7:]}); pass a fresh one: "
                f"load_run(path, encoders={{{m!r}: ...}})"
            )
    for m, module in custom.items():
        if m not in kinds:
            raise ConfigError(f"{run.path}: an encoder is given for {m!r}; the modalities are {', '.join(kinds)}")
        check_encoder(m, module, torch.zeros(2, *shapes[m]), config.encoder.dim)
    spec = DataSpec(tuple(kinds), len(card["classes"]), int(card["num_samples"]))
    encoder = dataclasses.replace(config.encoder, weights=())
    folds = int(card.get("folds", 1))
    members = [
        assemble(
            config.strategy,
            spec,
            kinds,
            shapes,
            encoder,
            config.options,
            copy.deepcopy(custom) if folds > 1 else custom,
        )
        for _ in range(folds)
    ]
    strategy: Model = members[0] if folds == 1 else Bag(members, spec, saved_learners(card, spec))
    strategy.place(Dist(device=resolve_device(device)), config.train.eval_batch_size, config.train.precision)
    load_model_weights(strategy, run)
    stats = _preprocessing(run, card, shapes)
    strategy.best_epoch = int(card["best_epoch"])
    metrics = run.read_object("metrics.json") if run.finished else None
    return Predictor(strategy, card, stats, run.path, config=config.to_dict(), metrics=metrics)


def _preprocessing(
    run: Run, card: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, dict[str, np.ndarray]]:
    """The statistics model.json says the inputs are preprocessed with, checked: without them
    the model would predict on raw inputs."""
    wanted = list(card.get("preprocessing", {}))
    if not wanted:
        return {}
    name = "preprocessing.safetensors"
    stats: dict[str, dict[str, np.ndarray]] = {}
    for key, tensor in run.load_tensors(name).items():
        m, _, what = key.rpartition(".")
        stats.setdefault(m, {})[what] = tensor.numpy()
    advice = ADVICE[name]
    for m in wanted:
        found = stats.get(m, {})
        if "mean" not in found or "std" not in found:
            raise ValueError(f"{run.file(name)}: has no statistics of modality {m!r}; {advice}")
        found.setdefault("scale", np.ones_like(found["mean"]))
        for what, array in found.items():
            if tuple(array.shape) != shapes[m]:
                raise ValueError(
                    f"{run.file(name)}: the {what} of modality {m!r} has shape {tuple(array.shape)}, its "
                    f"inputs {shapes[m]}; {advice}"
                )
    return stats


def _named(label: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    """Labels as given, or the file's class names for integer labels with a ``classes`` array."""
    if classes is not None and np.issubdtype(label.dtype, np.integer):
        return np.asarray(classes).astype(str)[label]
    return label


def _text(labels: np.ndarray) -> np.ndarray:
    """Labels as strings, integral floats as integers ('3', not '3.0')."""
    if np.issubdtype(labels.dtype, np.floating) and np.isfinite(labels).all() and (labels == np.round(labels)).all():
        labels = labels.astype(np.int64)
    return labels.astype(str)
