"""The metrics schema every stage reads and writes: one row per (vm, ts), one column per metric.

Columns: `vm` (str), `ts` (UTC timestamp), `cpu_cores` (cores in use), `mem_mib` (MiB in use), and
optionally `dirty_mibps` (memory dirty rate). Checked at every boundary so that a bad value is named
where it entered, not discovered inside a model. An optional column may hold NaN, "not measured" (the
libvirt collector gets no dirty rate for some VMs); its consumers skip those samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from advisor.errors import InputError

REQUIRED = ("vm", "ts", "cpu_cores", "mem_mib")
OPTIONAL = ("dirty_mibps",)
VALUES = ("cpu_cores", "mem_mib", "dirty_mibps")


def validate_metrics(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Return `df` in canonical form (types, column order, sorted by vm and ts) or raise InputError
    naming the source, the column and the first bad row."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise InputError(f"{source}: missing metric column(s) {', '.join(missing)}")
    cols = [c for c in (*REQUIRED, *OPTIONAL) if c in df.columns]
    out = df[cols].copy()
    out["vm"] = out["vm"].astype(str)
    try:
        out["ts"] = pd.to_datetime(out["ts"], utc=True)
    except (ValueError, TypeError) as e:
        raise InputError(f"{source}: column ts: not a timestamp ({e})") from None
    for col in (c for c in VALUES if c in out.columns):
        values = pd.to_numeric(out[col], errors="coerce").astype(float)
        v = values.to_numpy()
        bad = ~np.isfinite(v) | (v < 0)
        if col in OPTIONAL:  # a blank means "not measured" (no dirty rate for this VM): kept as NaN
            bad &= ~out[col].isna().to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{source}: column {col}: row {i + 1} (vm {out['vm'].iloc[i]}, {out['ts'].iloc[i]}) has "
                f"{df[col].iloc[i]!r}; metrics must be finite and non-negative"
            )
        out[col] = values
    vm_codes = pd.factorize(out["vm"])[0]
    ts_codes = pd.DatetimeIndex(out["ts"]).asi8
    dup = pd.DataFrame({"vm": vm_codes, "ts": ts_codes}).duplicated().to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise InputError(
            f"{source}: row {i + 1}: duplicate sample for vm {out['vm'].iloc[i]} at {out['ts'].iloc[i]}"
        )
    vm_sorted = out["vm"].is_monotonic_increasing
    if vm_sorted and (np.diff(ts_codes)[np.diff(vm_codes) == 0] > 0).all():
        return out.reset_index(drop=True)  # already in canonical order: the collectors' usual case
    return out.sort_values(["vm", "ts"], kind="stable").reset_index(drop=True)


def write_metrics(df: pd.DataFrame, path: Path) -> None:
    validate_metrics(df, str(path)).to_parquet(path, index=False)


def read_metrics(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such metrics file (run `advisor collect` first)") from None
    except Exception as e:  # pyarrow raises several unrelated types for a corrupt file
        raise InputError(f"{path}: not a readable Parquet metrics file ({e})") from None
    return validate_metrics(df, str(path))
