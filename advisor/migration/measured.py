"""Measured migrations (bench/migrations.py's CSV): the column contract, its reader, and the abort rule
that defines what "converged" means in it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from advisor.errors import InputError

INPUT_COLUMNS = (
    "mem_mib",
    "working_set_mib",
    "dirty_mibps",
    "bandwidth_mibps",
    "max_downtime_ms",
    "auto_converge",
    "xbzrle",
)
OUTCOME_COLUMNS = ("total_time_s", "downtime_ms", "transferred_mib", "iterations", "converged")
MEASURED_COLUMNS = INPUT_COLUMNS + OUTCOME_COLUMNS
FLAG_COLUMNS = ("auto_converge", "xbzrle", "converged")

ABORT_FLOOR_S = 20.0
ABORT_FULL_COPIES = 1.5


def abort_deadline_s(mem_mib: float, bandwidth_mibps: float) -> float:
    """When the sweep gives a migration up: 20 s plus 1.5 copies of the whole memory. A migration that has
    re-sent half its memory again without finishing is, for planning, one that does not converge."""
    return ABORT_FLOOR_S + ABORT_FULL_COPIES * mem_mib / bandwidth_mibps


def read_measured(path: Path) -> pd.DataFrame:
    """bench/migrations.py's CSV, typed and checked; a bad file or row is an InputError naming it."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such migrations file (run bench/migrations.py)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable CSV ({e})") from None
    return validate_measured(raw, str(path))


def validate_measured(raw: pd.DataFrame, source: str) -> pd.DataFrame:
    """Measured rows in canonical types: numbers as floats (downtime NaN where the run was aborted),
    flags as bools. Rows are numbered as in the file (header = line 1)."""
    missing = [c for c in MEASURED_COLUMNS if c not in raw.columns]
    if missing:
        raise InputError(f"{source}: missing column(s) {', '.join(missing)}")
    out = pd.DataFrame(index=raw.index)
    for col in MEASURED_COLUMNS:
        values = raw[col].astype(str).str.strip()
        if col in FLAG_COLUMNS:
            parsed = values.str.lower().map({"true": True, "false": False, "1": True, "0": False})
            bad = parsed.isna()
            out[col] = parsed.where(~bad, False).astype(bool)
        else:
            numbers = pd.to_numeric(values.replace("", np.nan), errors="coerce")
            bad = numbers.isna() & (values != "") if col == "downtime_ms" else numbers.isna()
            out[col] = numbers.astype(float)
        if bad.any():
            line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
            raise InputError(f"{source}: line {line}: column {col}: {values[bad].iloc[0]!r} is not valid")
    positive = ["mem_mib", "working_set_mib", "bandwidth_mibps", "max_downtime_ms", "total_time_s"]
    for col in positive:
        bad = out[col] <= 0
        if bad.any():
            line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
            raise InputError(f"{source}: line {line}: column {col}: must be positive")
    lost = out["converged"] & out["downtime_ms"].isna()
    if lost.any():
        line = int(np.flatnonzero(lost.to_numpy())[0]) + 2
        raise InputError(f"{source}: line {line}: a converged migration needs its downtime_ms")
    return out.reset_index(drop=True)
