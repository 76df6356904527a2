"""Frozen config dataclasses <-> command-line flags and config files.

Each configurable piece of the library declares a frozen dataclass next to its code; every field
carries its help text in ``metadata["help"]``. This module turns such dataclasses into argparse
flags (``--field-name``), reads config files (TOML or JSON; nested tables are flattened, so a run
folder's ``config.json`` can be fed back in) and resolves a value per field with the precedence

    dataclass default < preset < config file < explicit flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from altmodal.files import read_text

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or flag value that cannot be used; the message names it."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name when the message is empty)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with help text (tuples and other immutables as defaults)."""
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


def require(ok: bool, name: str, value: Any, what: str) -> None:
    """Raise a ConfigError naming the setting's flag unless ``ok``."""
    if not ok:
        raise ConfigError(f"{flag(name)} must be {what} (got {value!r})")


def fields_of(cls: type) -> dict[str, tuple[dataclasses.Field[Any], Any]]:
    """Field name -> (field, resolved type) of a config dataclass."""
    return _fields(cls)


@functools.cache  # resolving type hints is slow, and resolving a run's settings asks often
def _fields(cls: type) -> dict[str, tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(
    parser: argparse.ArgumentParser | Any, cls: type, title: str | None = None, exclude: tuple[str, ...] = ()
) -> None:
    """Add one flag per field of ``cls`` (but ``exclude``); flags default to SUPPRESS so only
    explicit ones appear."""
    group = parser.add_argument_group(title) if title else parser
    for name, (f, kind) in fields_of(cls).items():
        if f.metadata.get("cli") is False or name in exclude:
            continue
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": _help(f)}
        base = _unwrap_optional(kind)
        if f.metadata.get("repeat"):
            kwargs["action"] = "append"
            kwargs["metavar"] = f.metadata.get("metavar", "VALUE")
        elif base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(base) is Literal:
            kwargs["choices"] = list(get_args(base))
            kwargs["type"] = type(get_args(base)[0])
        elif get_origin(base) is tuple:
            kwargs["type"] = _tuple_parser(name, get_args(base)[0])
            kwargs["metavar"] = "A,B,..."
        else:
            kwargs["type"] = base
        group.add_argument(f.metadata.get("flag", flag(name)), dest=name, **kwargs)


def _help(f: dataclasses.Field[Any]) -> str:
    default = f.default
    if isinstance(default, tuple):
        shown = ",".join(str(v) for v in default) or "(none)"
    else:
        shown = "none" if default is None else str(default)
    text = f.metadata.get("help", "")
    if "(default" not in text:
        text += f" (default: {shown})"
    return text.replace("%", "%%")


def _unwrap_optional(kind: Any) -> Any:
    if get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in get_args(kind) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return kind


def _tuple_parser(name: str, item: Any) -> Any:
    def parse(text: str) -> tuple[Any, ...]:
        parts = [p.strip() for p in str(text).split(",") if p.strip()]
        try:
            return tuple(item(p) for p in parts)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{flag(name)}: {text!r} is not a list of {item.__name__}") from err

    return parse


def coerce(cls: type, name: str, value: Any, source: str) -> Any:
    """A value from a config file, checked and converted to the field's type."""
    _, kind = fields_of(cls)[name]
    base = _unwrap_optional(kind)
    if value is None and base is not kind:
        return None
    try:
        if base is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if get_origin(base) is Literal:
            if value not in get_args(base):
                raise ConfigError(f"{source}: {name} = {value!r} is not one of {', '.join(map(str, get_args(base)))}")
            return value
        if get_origin(base) is tuple:
            item = get_args(base)[0]
            items = value.split(",") if isinstance(value, str) else list(value)
            if any(isinstance(v, bool) for v in items) and item is not bool:
                raise TypeError  # int(True) would be 1
            return finite(tuple(item(v) for v in items if not (isinstance(v, str) and not v.strip())), name, source)
        if isinstance(value, bool):  # a bool is an int to Python, never a count or a rate here
            raise TypeError
        if base is float and isinstance(value, int):
            return float(value)
        if base in (int, str, float) and not isinstance(value, base):
            raise TypeError
        return finite(value, name, source)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        kind = f"list of {get_args(base)[0].__name__}" if get_origin(base) is tuple else getattr(base, "__name__", base)
        raise ConfigError(f"{source}: {name} = {value!r} is not a valid {kind}") from err


def finite(value: Any, name: str, source: str) -> Any:
    """``value``, unless it is (or holds) a float that is NaN or infinite: no setting means one
    (and a run's JSON files could not hold it)."""
    items = value if isinstance(value, tuple) else (value,)
    if any(isinstance(v, float) and not math.isfinite(v) for v in items):
        raise ConfigError(f"{source}: {name} = {value!r} is not a finite number")
    return value


def build(cls: type[T], values: Mapping[str, Any]) -> T:
    """An instance of ``cls`` from the entries of ``values`` that name its fields."""
    names = fields_of(cls)
    return cls(**{k: v for k, v in values.items() if k in names})


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A flat dict of the settings in a TOML or JSON file (nested tables flattened)."""
    path = Path(path)
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, ValueError) as err:  # a FIFO, a directory, a binary file
        raise ConfigError(f"{first_line(err)}; give a TOML or JSON file of settings") from None
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError as err:  # Python 3.10
                raise ConfigError(f"{path}: TOML config files need Python 3.11; use JSON") from err
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot parse ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table of settings")
    return flatten(data)


def flatten(data: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value))
        else:
            flat[key.replace("-", "_")] = value
    return flat


def to_dict(obj: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'X'?"`` with the name of ``known`` closest to ``name`` (letter case aside),
    or ``""`` when none is near."""
    by_lower = {str(k).lower(): str(k) for k in sorted(known, key=str, reverse=True)}
    near = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1)
    return f"; did you mean {by_lower[near[0]]!r}?" if near else ""
