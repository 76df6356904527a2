"""A run's settings: :class:`RunConfig` and how flat settings (flags, config files, presets,
a dataset's recommendations) resolve into one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from altmodal.config import ConfigError, build, coerce, did_you_mean, fields_of, flag, flatten, to_dict
from altmodal.data.registry import DataConfig, dataset_defaults
from altmodal.data.table import is_table
from altmodal.encoders import EncoderConfig
from altmodal.runs import Run
from altmodal.strategies import STRATEGIES, Strategy, TrainConfig, strategy_class

SECTIONS: dict[str, type] = {"data": DataConfig, "encoder": EncoderConfig, "train": TrainConfig}
DEFAULT_STRATEGY = "mla"
LATER_DATA_FIELDS = ("label", "columns", "complete_share", "incomplete_modality")
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
            raise unknown_setting(source, key, known)
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


def unknown_setting(source: str, key: str, known: Iterable[str]) -> ConfigError:
    """The error for a setting ``key`` that is none of ``known``, with the closest name if one is near."""
    return ConfigError(f"{source}: unknown setting {key!r}{did_you_mean(key, known)}")


def check_given(given: Mapping[str, Any], config: RunConfig) -> None:
    """Raise a ConfigError when a setting given explicitly (a flag, an estimator's option) has no
    effect under the others: its field's ``needs`` metadata, (other setting, test of its value,
    when the test fails), says when it acts (an option of MLA's HGM needs the projection on).

    A config file is not checked: a run's config.json lists every setting, given or not.
    """
    cls = strategy_class(config.strategy).options_class
    values = {n: getattr(getattr(config, s), n) for s, c in SECTIONS.items() for n in fields_of(c)}
    values.update(config.options)
    for owner in [*SECTIONS.values(), *([cls] if cls is not None else [])]:
        for name, (f, _) in fields_of(owner).items():
            needs = f.metadata.get("needs")
            if name in given and needs and not needs[1](values[needs[0]]):
                raise ConfigError(f"{flag(name)} {shown(given[name])} has no effect {needs[2]}")


def shown(value: Any) -> str:
    """A setting's value as the command line writes it (tuples comma-separated)."""
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


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
            raise unknown_setting(source, key, [*owners, "strategy", *also])


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
