"""Reading trace tables so that every bad file, column or row is reported by name, never as a traceback.

Rows are counted from 1 without the header, as advisor.metrics counts them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import numpy as np
import pandas as pd

from advisor.errors import InputError

Format = Literal["csv", "parquet"]


@contextmanager
def readable(path: str, fmt: Format) -> Iterator[None]:
    """Opening or parsing `path` fails with a one-line InputError naming it, not a library's traceback."""
    try:
        yield
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty") from None
    except Exception as e:  # pandas and pyarrow raise many unrelated types for a corrupt file
        raise InputError(f"{path}: not a readable {fmt.upper()} file ({e})") from None


def _check_columns(df: pd.DataFrame, path: str, required: Sequence[str]) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(map(str, df.columns))})"
        )


def read_table(
    path: str, required: Sequence[str], optional: Sequence[str] = (), fmt: Format = "csv"
) -> pd.DataFrame:
    """The wanted columns of one CSV (optionally compressed) or Parquet file, with at least one row."""
    wanted = set(required) | set(optional)
    with readable(path, fmt):
        df = pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path, usecols=lambda c: c in wanted)
    _check_columns(df, path, required)
    if df.empty:
        raise InputError(f"{path}: has a header but no data rows")
    return df[[c for c in df.columns if c in wanted]].reset_index(drop=True)


def read_csv_chunks(path: str, required: Sequence[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Chunks of a large CSV, each indexed by its row number in the file, so a reader can stop early."""
    with readable(path, "csv"):
        reader = pd.read_csv(path, usecols=lambda c: c in set(required), chunksize=chunk_rows)
        first = True
        for chunk in reader:
            if first:
                _check_columns(chunk, path, required)
                first = False
            yield chunk[list(required)]
        if first:
            raise InputError(f"{path}: has a header but no data rows")


def shown(value: object) -> str:
    """A cell as a message shows it: 2.5, not np.float64(2.5)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def numeric(
    df: pd.DataFrame, column: str, path: str, *, allow_negative: bool = False, allow_missing: bool = False
) -> np.ndarray:
    """The column as float64; a non-number, a missing value (unless `allow_missing`: kept as NaN) or a
    negative one names its row."""
    raw = df[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(values)
    if allow_missing:
        bad &= ~raw.isna().to_numpy()
    if not allow_negative:
        bad |= values < 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        original = raw.iloc[i]
        if pd.isna(original):
            what = "is missing"
        elif np.isfinite(values[i]):
            what = f"is negative ({shown(original)})"
        else:
            what = f"is not a finite number ({shown(original)})"
        raise InputError(f"{path}: row {row_number(df, i)}: column {column} {what}")
    return values


def unix_seconds(df: pd.DataFrame, column: str, path: str) -> pd.Series:
    """UNIX seconds as UTC timestamps."""
    seconds = numeric(df, column, path, allow_negative=True)
    return pd.Series(pd.to_datetime(seconds, unit="s", utc=True), index=df.index)


def timestamps(df: pd.DataFrame, column: str, path: str) -> pd.Series:
    """ISO 8601 text, datetimes or UNIX seconds as UTC timestamps; text without a zone is taken as UTC."""
    raw = df[column]
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        return unix_seconds(df, column, path)
    if isinstance(raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(raw):
        parsed = pd.to_datetime(raw, utc=True)
    else:
        parsed = pd.to_datetime(raw.astype("str"), utc=True, format="ISO8601", errors="coerce")
        parsed[raw.isna()] = pd.NaT
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        original = raw.iloc[i]
        what = "is missing" if pd.isna(original) else f"is not a timestamp ({shown(original)})"
        raise InputError(f"{path}: row {row_number(df, i)}: column {column} {what}")
    return parsed


def names(df: pd.DataFrame, column: str, path: str) -> pd.Series:
    """A name column as text; an empty name names its row."""
    raw = df[column]
    bad = raw.isna().to_numpy() | (raw.astype("str").str.strip() == "").to_numpy()
    if bad.any():
        raise InputError(
            f"{path}: row {row_number(df, int(np.flatnonzero(bad)[0]))}: column {column} is empty"
        )
    return raw.astype("str")


def row_number(df: pd.DataFrame, i: int) -> int:
    """The 1-based row in the file of the frame's i-th row (frames keep the file's row index)."""
    return int(df.index[i]) + 1


def first_duplicate(df: pd.DataFrame, keys: Sequence[str]) -> int | None:
    """Position of the first row that repeats an earlier row's keys, or None."""
    dup = df.duplicated(list(keys)).to_numpy()
    return int(np.flatnonzero(dup)[0]) if dup.any() else None
