"""Tables: a CSV or Parquet file, or a pandas DataFrame, as the arrays of a feature file.

One row per sample. Which columns make which modality:

- by default, the column names: ``audio__0, audio__1, ..., video__mean`` make the modalities
  ``audio`` and ``video`` (the part before the first ``__``), their columns in table order;
- or a map, modality -> its columns: ``--modality audio=a1,a2,a3`` / ``--modality video=v_*``
  on the command line (repeat the flag), ``columns={"audio": ["a1", "a2"], "video": "v_*"}`` in
  Python; an entry ending in ``*`` takes every column that starts with what comes before it.
  Columns that no modality names are not read.

Every column has a name of its own (a CSV header that repeats one is refused, though pandas
would rename the copy), and a table holds one row or more.

The label column (``--label``, default ``label``) holds integers or strings; a ``split`` column
(``train``/``val``/``test``), when the table has one and no modality takes it, is the split.
Every modality column must be numeric (booleans count as 0/1).

Missing values: a row whose columns of one modality are ALL empty (NaN) lacks that modality
(it is absent for that sample, as a False ``present_<modality>`` entry of a feature file marks
it); a row with only SOME of a modality's columns empty is an error naming the row and the
column, as is an infinite value. Rows count from 0, the header not counted.

pandas reads the tables (and pyarrow the Parquet files): the ``tables`` extra. Reading runs no
code from the file: CSV is text, and Parquet is read with pyarrow >= 14.0.1, which never
unpickles the extension types a file may declare.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from altmodal.config import did_you_mean
from altmodal.data.features import PRESENT_PREFIX, DataError, name_problem
from altmodal.files import kind_of

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
SEPARATOR = "__"
"""Between a column's modality and its feature name: ``audio__0``."""
SPLIT_COLUMN = "split"
EXTRA = "pip install 'altmodal[tables]'"

ColumnMap = Mapping[str, Sequence[str]]
"""modality -> column names or ``PREFIX*`` patterns."""


def is_table(path: str | Path) -> bool:
    """Whether ``path`` names a CSV or Parquet file (by its suffix)."""
    return Path(path).suffix.lower() in TABLE_SUFFIXES


def pandas() -> Any:
    """The pandas module, or an error naming the extra that installs it."""
    try:
        import pandas
    except ImportError as err:
        raise DataError(f"tables (CSV, Parquet, DataFrames) need pandas: {EXTRA}") from err
    return pandas


def is_frame(value: object) -> bool:
    """Whether ``value`` is a pandas DataFrame (without importing pandas when it is not loaded)."""
    import sys

    module = sys.modules.get("pandas")
    return module is not None and isinstance(value, module.DataFrame)


def read_table(path: str | Path) -> Any:
    """The DataFrame of a CSV or Parquet file; errors name the file.

    Raises:
        DataError: no such file, a folder, an unreadable file, or pandas / pyarrow missing.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a table (.csv or .parquet)")
    if path.exists() and not path.is_file():
        raise DataError(f"{path}: is a {kind_of(path.stat().st_mode)}, not a regular file; give a table file")
    if not path.is_file():
        raise DataError(f"{path}: no such table")
    pd = pandas()
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path)
            check_header(pd.read_csv(path, header=None, nrows=1, dtype=str).iloc[0].tolist(), str(path))
            return frame
        try:
            import pyarrow  # noqa: F401
        except ImportError as err:
            raise DataError(f"{path}: Parquet files need pyarrow: {EXTRA}") from err
        return pd.read_parquet(path, engine="pyarrow")
    except DataError:
        raise
    except Exception as err:  # pandas and pyarrow raise many types for a bad file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not a readable {path.suffix.lstrip('.').upper()} table ({first})") from err


def parse_modality_map(items: Sequence[str]) -> dict[str, list[str]]:
    """``NAME=COL1,COL2`` / ``NAME=PREFIX*`` entries (``--modality``) as a column map.

    Raises:
        DataError: an entry without ``=``, without a name or columns, a reserved name, or a
            modality named twice.
    """
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        columns = [c.strip() for c in text.split(",") if c.strip()]
        if not sep or not name or not columns:
            raise DataError(f"--modality {item!r}: write NAME=COL1,COL2 or NAME=PREFIX*")
        if name in out:
            raise DataError(f"--modality {item!r}: modality {name!r} is named twice; list all its columns once")
        out[name] = columns
    return out


def as_column_map(columns: Mapping[str, Any]) -> dict[str, list[str]]:
    """A Python column map (modality -> a column, a ``PREFIX*`` or a list of them) in list form."""
    out: dict[str, list[str]] = {}
    for name, value in columns.items():
        if not isinstance(value, (str, Sequence)):
            raise DataError(f"columns: modality {name!r}: {value!r} is not a column name, a PREFIX* or a list of them")
        items = [value] if isinstance(value, str) else list(value)
        if not items:
            raise DataError(f"columns: modality {name!r} names no column")
        out[str(name)] = [str(v) for v in items]
    return out


def modality_columns(
    header: Sequence[str], spec: ColumnMap | None, source: str, label: str | None = None, split: bool = True
) -> dict[str, list[str]]:
    """modality -> its columns of ``header``, from ``spec`` or from the ``MODALITY__`` prefixes
    (which leave out the ``label`` column, and the split column when ``split``).

    Raises:
        DataError: a column named twice in the header, a column the map names that the table
            lacks, a pattern or modality with no column, a column in two modalities, a label
            column in a modality, a reserved modality name, or (without a map) a column with no
            modality prefix.
    """
    check_header(header, source)
    skip = [label, SPLIT_COLUMN if split else None]
    out = _from_map(header, spec, source) if spec else _from_prefixes(header, source, skip)
    if not out:
        raise DataError(f"{source}: no modality columns (columns: {_listing(header)})")
    owner: dict[str, str] = {}
    for m, columns in out.items():
        if name_problem(m):
            raise DataError(
                f"{source}: {m!r} cannot name a modality (column {columns[0]!r}): {name_problem(m)}; rename "
                "the column, or map it with --modality NAME=COLUMNS (columns= in Python)"
            )
        for column in columns:
            if column == label:
                raise DataError(f"{source}: column {column!r} is the label column; no modality may take it")
            if column in owner and owner[column] != m:
                raise DataError(f"{source}: column {column!r} is in two modalities, {owner[column]!r} and {m!r}")
            owner[column] = m
    return out


def check_header(header: Sequence[Any], source: str) -> None:
    """Raise a DataError naming the first column name that ``header`` holds twice (pandas renames
    a CSV's repeated name, ``a`` and ``a.1``: a CSV's header is checked as written)."""
    seen: set[Any] = set()
    for column in header:
        if column in seen and isinstance(column, str):
            raise DataError(f"{source}: column {column!r} appears twice; give every column its own name")
        seen.add(column)


def _from_map(header: Sequence[str], spec: ColumnMap, source: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m, items in spec.items():
        columns: list[str] = []
        for item in items:
            if item.endswith("*"):
                matched = [c for c in header if c.startswith(item[:-1])]
                if not matched:
                    raise DataError(f"{source}: modality {m!r}: no column starts with {item[:-1]!r} ({item!r})")
            elif item in header:
                matched = [item]
            else:
                raise DataError(f"{source}: modality {m!r}: no column {item!r} (columns: {_listing(header)})")
            columns += [c for c in matched if c not in columns]
        out[m] = columns
    return out


def _from_prefixes(header: Sequence[str], source: str, skip: Sequence[str | None]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for column in header:
        if column in skip:
            continue
        m, sep, feature = column.partition(SEPARATOR)
        if not sep or not m or not feature:
            raise DataError(
                f"{source}: column {column!r} has no modality prefix (MODALITY{SEPARATOR}FEATURE); rename it, "
                "or map columns to modalities (--modality NAME=COL1,COL2 or NAME=PREFIX*; columns= in Python)"
            )
        out.setdefault(m, []).append(column)
    return out


def outside(header: Sequence[str]) -> list[str]:
    """The columns no ``MODALITY__`` prefix puts in a modality (where a label column hides)."""
    return [c for c in header if SEPARATOR not in str(c)]


def _listing(header: Sequence[str], most: int = 8) -> str:
    shown = ", ".join(map(str, header[:most]))
    return shown + (f", ... ({len(header)} in all)" if len(header) > most else "") if header else "none"


def table_arrays(
    frame: Any,
    source: str,
    *,
    label: str | None,
    spec: ColumnMap | None = None,
    label_required: bool = True,
    split: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """The feature-file arrays of a DataFrame (see the module docstring) and the columns of each
    modality.

    Args:
        frame: the table, one row per sample.
        source: the name errors give (a file path, or ``X``).
        label: the label column (None: the table has none, e.g. the estimator's X).
        spec: modality -> columns or ``PREFIX*`` (None: by ``MODALITY__`` prefix).
        label_required: a missing label column is an error (else: the arrays have no label).
        split: a ``split`` column is the split (else, as in the estimator's X, it is a column like
            any other, which needs a modality).

    Raises:
        DataError: see :func:`modality_columns`; a missing label column; a non-numeric modality
            column; a row with some, not all, of a modality's columns empty; an infinite value;
            an empty label or split cell.
    """
    frame = frame.rename(columns=str)
    header = list(frame.columns)
    if not len(frame):
        raise DataError(f"{source}: no rows (columns: {_listing(header)}); a table needs one row per sample")
    if label is not None and label_required and label not in header:
        first = outside(header)  # where a label column hides: listed first
        shown = _listing([*first, *(c for c in header if c not in first)])
        near = did_you_mean(label, header)
        ending = f"{near} (name it with --label)" if near else f" (columns: {shown}); name it with --label"
        raise DataError(f"{source}: no label column {label!r}{ending}")
    label = label if label is not None and label in header else None
    columns = modality_columns(header, spec, source, label, split)
    taken = {c for cs in columns.values() for c in cs}
    arrays: dict[str, np.ndarray] = {}
    for m, names in columns.items():
        arrays[m], arrays[PRESENT_PREFIX + m] = modality_block(frame, m, names, source)
    if label is not None:
        arrays["label"] = label_values(frame[label], source, label)
    if split and SPLIT_COLUMN in header and SPLIT_COLUMN not in taken:
        arrays["split"] = text_values(frame[SPLIT_COLUMN], source, SPLIT_COLUMN)
    return arrays, columns


def modality_block(frame: Any, m: str, names: Sequence[str], source: str) -> tuple[np.ndarray, np.ndarray]:
    """Modality ``m``'s (N, k) float64 values and its (N,) presence (False where every one of its
    columns is empty)."""
    pd = pandas()
    for name in names:
        column = frame[name]
        if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
            continue
        numbers = pd.to_numeric(column, errors="coerce")
        bad = np.flatnonzero(numbers.isna().to_numpy() & column.notna().to_numpy())
        row = int(bad[0]) if len(bad) else 0
        raise DataError(
            f"{source}: column {name!r} (modality {m!r}) is not numeric: row {row} holds {column.iloc[row]!r}"
        )
    values = frame[list(names)].to_numpy(dtype=np.float64, na_value=np.nan)
    return values, presence(values, m, names, source)


def presence(values: np.ndarray, m: str, names: Sequence[Any], source: str) -> np.ndarray:
    """(N,) False where every one of modality ``m``'s (N, k) ``values`` is NaN (the modality is
    absent); a row with some NaN, or an infinite value, is an error naming the row and column
    (``names``: the k column names)."""
    empty = np.isnan(values)
    absent = empty.all(axis=1)
    partial = np.flatnonzero(empty.any(axis=1) & ~absent)
    if len(partial):
        row = int(partial[0])
        column = names[int(np.flatnonzero(empty[row])[0])]
        raise DataError(
            f"{source}: row {row}, column {column!r}: empty (NaN) while other columns of modality {m!r} are not "
            f"({len(partial)} rows so); fill it, or empty all of the row's {m!r} columns to mark the modality absent"
        )
    infinite = np.flatnonzero(np.isinf(values).any(axis=1))
    if len(infinite):
        row = int(infinite[0])
        column = names[int(np.flatnonzero(np.isinf(values[row]))[0])]
        raise DataError(f"{source}: row {row}, column {column!r} holds {values[row, list(names).index(column)]}")
    return ~absent


def label_values(column: Any, source: str, name: str) -> np.ndarray:
    """A label column as integers (integral numbers) or strings; an empty cell is an error."""
    pd = pandas()
    empty = np.flatnonzero(column.isna().to_numpy())
    if len(empty):
        raise DataError(f"{source}: label column {name!r} is empty in row {int(empty[0])} ({len(empty)} rows so)")
    if pd.api.types.is_bool_dtype(column):
        return column.to_numpy().astype(str)
    if pd.api.types.is_numeric_dtype(column):
        values = column.to_numpy()
        if np.issubdtype(values.dtype, np.floating) and np.all(values == np.round(values)):
            return values.astype(np.int64)
        return np.asarray(values)
    return text_values(column, source, name)


def text_values(column: Any, source: str, name: str) -> np.ndarray:
    """A column as strings; an empty cell is an error naming its row."""
    empty = np.flatnonzero(column.isna().to_numpy())
    if len(empty):
        raise DataError(f"{source}: column {name!r} is empty in row {int(empty[0])}")
    return column.astype(str).to_numpy().astype(str)
