"""Collector for Prometheus: VM CPU and memory history from the libvirt exporter, host capacity from
node_exporter, VM sizes from the exporter's info metrics (or all of the inventory from a cluster file).

Range queries are split into chunks of whole steps on an epoch-aligned grid, so every sample lands on the
same timestamps whichever chunk fetched it. Nothing is interpolated: a VM without series is an error
naming it; gaps and stale series are an error too, or (`on_gaps = "report"`) listed and left unfilled.
A VM whose history starts inside the span is new, not broken: it is reported and kept.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from string import Template
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd
import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from advisor.config import PowerSettings, PrometheusSettings
from advisor.core import VM, Cluster, Host, HostState
from advisor.errors import AdvisorError, InputError
from advisor.metrics import validate_metrics

MIB = 1024.0 * 1024.0
SHOWN = 5
RANGE_QUERIES = ("vm_cpu", "vm_mem")
INSTANT_QUERIES = ("vm_vcpus", "vm_mem_size", "host_cores", "host_mem")

Progress = Callable[[str], None]
Series = list[dict]  # Prometheus' result: [{"metric": {label: value}, "values"/"value": ...}, ...]


@dataclass(frozen=True)
class Grid:
    """The pulled span: `points` timestamps `start + k * step` (UNIX seconds), step-aligned."""

    start: int
    step: int
    points: int

    @property
    def end(self) -> int:
        return self.start + (self.points - 1) * self.step

    def chunks(self, chunk_s: float) -> list[tuple[int, int]]:
        """Inclusive (first, last) timestamps of consecutive range queries of at most `chunk_s`."""
        per = max(1, int(chunk_s // self.step))
        return [
            (self.start + k * self.step, self.start + (min(k + per, self.points) - 1) * self.step)
            for k in range(0, self.points, per)
        ]


@dataclass(frozen=True)
class Coverage:
    """What the pull lacks, per VM: whole series (`missing`: VM -> query names), samples inside the
    history (`gaps`, with `stale` VMs that stopped reporting before the end), and VMs that started late."""

    missing: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    gaps: Mapping[str, str] = field(default_factory=dict)
    stale: Mapping[str, str] = field(default_factory=dict)
    late: Mapping[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not (self.missing or self.gaps or self.stale)


def grid_for(settings: PrometheusSettings, now: pd.Timestamp | None = None) -> Grid:
    """The step-aligned span ending at `settings.end` (or `now`), rounded down to a step."""
    if settings.end:
        try:
            end_ts = pd.Timestamp(settings.end)
        except ValueError:
            raise AdvisorError(f"collect.prometheus.end: {settings.end!r} is not an ISO 8601 time") from None
    else:
        end_ts = now if now is not None else pd.Timestamp.now(tz="UTC")
    if end_ts.tzinfo is None:
        end_ts = end_ts.tz_localize("UTC")
    step = settings.step_s
    end = int(end_ts.timestamp()) // step * step
    points = int(settings.range_h * 3600 // step)
    if points < 2:
        raise AdvisorError(f"collect.prometheus.range_h: {settings.range_h} h holds fewer than two steps")
    return Grid(end - (points - 1) * step, step, points)


def render(settings: PrometheusSettings, name: str, grid: Grid) -> str:
    """The PromQL of query `name` with its placeholders filled in."""
    window = settings.rate_window_s or settings.step_s
    try:
        return Template(getattr(settings, name)).substitute(
            vm=settings.vm_label,
            host=settings.host_label,
            window=f"{window}s",
            range=f"{grid.points * grid.step}s",
            step=f"{grid.step}s",
        )
    except (KeyError, ValueError) as e:
        raise AdvisorError(
            f"collect.prometheus.{name}: unknown placeholder {e} (use $vm, $host, $window, $range, $step)"
        ) from None


def shown_url(url: str) -> str:
    """The URL without any user:password part, fit for messages."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.hostname or "")) if parts.username else url


# --- Pure transformations ------------------------------------------------------------------------------


def range_frame(results: Iterable[Series], vm_label: str, host_label: str) -> pd.DataFrame:
    """Range-query results (one list per chunk) as columns vm, host, ts (UNIX s), value."""
    vms: list[str] = []
    hosts: list[str] = []
    counts: list[int] = []
    ts: list[float] = []
    values: list[str] = []
    for result in results:
        for series in result:
            labels, pairs = series["metric"], series["values"]
            vms.append(labels.get(vm_label, ""))
            hosts.append(labels.get(host_label, ""))
            counts.append(len(pairs))
            ts.extend(p[0] for p in pairs)
            values.extend(p[1] for p in pairs)
    reps = np.asarray(counts, dtype=np.int64)
    return pd.DataFrame(
        {
            "vm": np.repeat(np.asarray(vms, dtype=object), reps),
            "host": np.repeat(np.asarray(hosts, dtype=object), reps),
            "ts": np.rint(np.asarray(ts, dtype=float)).astype(np.int64),
            "value": np.asarray(values, dtype=float),
        }
    )


def instant_values(result: Series, label: str) -> dict[str, float]:
    """An instant-query result as {label value: number}."""
    return {s["metric"].get(label, ""): float(s["value"][1]) for s in result}


def per_vm(frame: pd.DataFrame, how: str) -> pd.Series:
    """One value per (vm, ts): a VM seen on two hosts at once (mid-migration) sums its CPU and keeps the
    larger memory."""
    return frame.groupby(["vm", "ts"], sort=True)["value"].agg(how)


def latest_hosts(frame: pd.DataFrame) -> dict[str, str]:
    """Each VM's host at its latest sample (ties: the host name last in order)."""
    last = frame.sort_values(["vm", "ts", "host"], kind="stable").groupby("vm", sort=False)["host"].last()
    return {str(vm): str(h) for vm, h in last.items()}


def coverage(cpu: pd.Series, mem: pd.Series, vms: Sequence[str], grid: Grid) -> Coverage:
    """What `cpu` and `mem` (indexed by vm, ts) lack for `vms` on `grid`."""
    cpu_vms = set(cpu.index.unique(level="vm"))
    mem_vms = set(mem.index.unique(level="vm"))
    both = cpu.index.intersection(mem.index).to_frame(index=False)
    span = both.groupby("vm")["ts"].agg(["min", "max", "size"])
    missing: dict[str, tuple[str, ...]] = {}
    gaps: dict[str, str] = {}
    stale: dict[str, str] = {}
    late: dict[str, str] = {}
    for vm in vms:
        lacks = tuple(q for q, got in (("vm_cpu", cpu_vms), ("vm_mem", mem_vms)) if vm not in got)
        if lacks or vm not in span.index:
            missing[vm] = lacks or ("vm_cpu and vm_mem at the same times",)
            continue
        first, last, count = (int(x) for x in span.loc[vm])
        if first > grid.start:
            late[vm] = _when(first)
        if last < grid.end:
            stale[vm] = f"no samples since {_when(last)}"
        inside = (last - first) // grid.step + 1 - count
        if inside > 0:
            ts = np.sort(both.loc[both["vm"] == vm, "ts"].to_numpy())
            hole = int(ts[np.flatnonzero(np.diff(ts) > grid.step)[0]]) + grid.step
            gaps[vm] = f"{inside} missing step(s) from {_when(hole)}"
    return Coverage(missing, gaps, stale, late)


def _when(ts: int) -> str:
    return pd.Timestamp(ts, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _listed(items: Mapping[str, Any], fmt: Callable[[str, Any], str]) -> str:
    names = sorted(items)
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return "; ".join(fmt(n, items[n]) for n in names[:SHOWN]) + more


def describe_missing(cov: Coverage) -> str:
    return f"no series for {len(cov.missing)} VM(s): " + _listed(
        cov.missing,
        lambda vm, qs: f"{vm} ({', '.join(qs)})",
    )


def describe_gaps(cov: Coverage) -> str:
    both = {**cov.gaps, **{vm: s for vm, s in cov.stale.items() if vm not in cov.gaps}}
    for vm in set(cov.gaps) & set(cov.stale):
        both[vm] = f"{cov.gaps[vm]}, {cov.stale[vm]}"
    return f"gaps or stale series for {len(both)} VM(s): " + _listed(both, lambda vm, s: f"{vm}: {s}")


def assemble(
    cpu: pd.Series, mem: pd.Series, vms: Sequence[str], grid: Grid, on_gaps: str
) -> tuple[pd.DataFrame, Coverage]:
    """The metrics frame of `vms` (rows where both CPU and memory have a sample) and its coverage; raises
    InputError for missing series, and for gaps unless `on_gaps == "report"`."""
    cov = coverage(cpu, mem, vms, grid)
    if cov.missing:
        raise InputError(describe_missing(cov))
    if (cov.gaps or cov.stale) and on_gaps != "report":
        raise InputError(describe_gaps(cov) + ' (collect.prometheus.on_gaps = "report" keeps them)')
    joined = pd.concat({"cpu_cores": cpu, "mem_mib": mem / MIB}, axis=1, join="inner").reset_index()
    joined = joined[joined["vm"].isin(list(vms))]
    bad = ~np.isfinite(joined[["cpu_cores", "mem_mib"]].to_numpy()).all(axis=1)
    if bad.any():
        row = joined.iloc[int(np.flatnonzero(bad)[0])]
        raise InputError(f"VM {row['vm']}: Prometheus returned a non-finite value at {_when(int(row['ts']))}")
    joined["ts"] = pd.to_datetime(joined["ts"], unit="s", utc=True)
    return validate_metrics(joined[["vm", "ts", "cpu_cores", "mem_mib"]], "prometheus"), cov


def cluster_from_metrics(
    hosts_of: Mapping[str, str],
    vcpus: Mapping[str, float],
    mem_bytes: Mapping[str, float],
    host_cores: Mapping[str, float],
    host_mem_bytes: Mapping[str, float],
    power: PowerSettings,
) -> Cluster:
    """The inventory as the exporters describe it: every host node_exporter knows, every VM with series."""
    no_size = {
        vm: tuple(q for q, d in (("vm_vcpus", vcpus), ("vm_mem_size", mem_bytes)) if vm not in d)
        for vm in hosts_of
    }
    no_size = {vm: qs for vm, qs in no_size.items() if qs}
    if no_size:
        raise InputError(
            f"no size for {len(no_size)} VM(s): " + _listed(no_size, lambda vm, qs: f"{vm} ({', '.join(qs)})")
        )
    unlabelled = sorted(vm for vm, h in hosts_of.items() if not h)
    if unlabelled:
        raise InputError(
            f"{len(unlabelled)} VM(s) ({', '.join(unlabelled[:SHOWN])}) lack a host label: add "
            "it by relabelling (docs/prometheus.md; collect.prometheus.host_label) or give collect.inventory"
        )
    used = sorted(set(hosts_of.values()))
    unknown = [h for h in used if h not in host_cores or h not in host_mem_bytes]
    if unknown:
        raise InputError(
            f"host {unknown[0]} runs VMs but node_exporter gives no capacity for it (host_cores, host_mem)"
            + (f"; {len(unknown) - 1} more hosts alike" if len(unknown) > 1 else "")
        )
    model = power.model()
    names = sorted(set(host_cores) & set(host_mem_bytes))
    hosts = tuple(
        Host(
            h,
            float(host_cores[h]),
            host_mem_bytes[h] / MIB,
            cluster="prometheus",
            state=HostState.UP,
            power=model,
        )
        for h in names
    )
    vms = tuple(
        VM(vm, hosts_of[vm], max(1, round(vcpus[vm])), mem_bytes[vm] / MIB) for vm in sorted(hosts_of)
    )
    return Cluster("prometheus", hosts, vms)


# --- I/O: the HTTP edge ---------------------------------------------------------------------------------


class Source:
    """One Prometheus server: queries with the configured auth, TLS and timeout, failures as one line.
    Credentials come from the environment and go only into request headers."""

    def __init__(self, settings: PrometheusSettings) -> None:
        self.settings = settings
        self.where = f"Prometheus at {shown_url(settings.url)}"
        self.warnings: list[str] = []
        session = requests.Session()
        session.hooks["response"].append(self._keep_warnings)
        session.verify = settings.ca_file or True
        # Prometheus gzips a large answer slower than a LAN carries it (issue 8's benchmark: 1.5 s of 2.3 s)
        headers = {} if settings.gzip else {"Accept-Encoding": "identity"}
        if settings.token_env:
            headers["Authorization"] = f"Bearer {_secret(settings.token_env, 'token_env')}"
        auth = None
        if settings.username_env or settings.password_env:
            auth = (
                _secret(settings.username_env, "username_env"),
                _secret(settings.password_env, "password_env"),
            )
        self.client = PrometheusConnect(
            url=settings.url.rstrip("/"),
            headers=headers,
            auth=auth,
            session=session,
            timeout=settings.timeout_s,
            retry=Retry(total=2, connect=2, read=False, status=0, other=0, backoff_factor=0.2),
        )

    def _keep_warnings(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Prometheus' `warnings` (partial data, e.g. a failed remote-read or store) that
        prometheus-api-client drops. A cheap byte search first: large answers are not parsed twice."""
        if response.status_code != 200 or b'"warnings"' not in response.content:
            return
        try:
            found = response.json().get("warnings") or []
        except ValueError:
            return
        self.warnings.extend(str(w) for w in found if str(w) not in self.warnings)

    def range(self, name: str, query: str, first: int, last: int, step: int) -> Series:
        start, end = pd.Timestamp(first, unit="s", tz="UTC"), pd.Timestamp(last, unit="s", tz="UTC")
        return self._call(name, lambda: self.client.custom_query_range(query, start, end, str(step)))

    def instant(self, name: str, query: str, at: int) -> Series:
        return self._call(name, lambda: self.client.custom_query(query, params={"time": at}))

    def _call(self, name: str, fn: Callable[[], Series]) -> Series:
        try:
            return fn()
        except requests.exceptions.Timeout:
            raise AdvisorError(
                f"{self.where}: no answer within {self.settings.timeout_s:g} s to query {name} "
                "(collect.prometheus.timeout_s, chunk_h)"
            ) from None
        except requests.exceptions.SSLError as e:
            raise AdvisorError(
                f"{self.where}: TLS failed ({_reason(e)}; collect.prometheus.ca_file)"
            ) from None
        except requests.exceptions.ConnectionError as e:
            raise AdvisorError(f"{self.where}: not reachable ({_reason(e)})") from None
        except PrometheusApiClientException as e:
            raise AdvisorError(f"{self.where}: query {name} failed: {_api_error(str(e))}") from None
        except (ValueError, KeyError, TypeError):
            raise AdvisorError(f"{self.where}: query {name}: the answer is not Prometheus' API") from None


def _secret(env: str, key: str) -> str:
    value = os.environ.get(env)
    if value is None:
        raise AdvisorError(f"collect.prometheus.{key}: environment variable {env} is not set")
    return value


def _reason(e: Exception) -> str:
    text = str(e)
    for pattern in (r"\[Errno -?\d+\] ([^'\")]+)", r"(Connection refused)", r"(Name or service not known)"):
        m = re.search(pattern, text)
        if m:
            return m.group(1).strip()
    return type(e).__name__


def _api_error(message: str) -> str:
    """Prometheus' own error text out of the client's "HTTP Status Code N (b'{json}')"."""
    m = re.match(r"HTTP Status Code (\d+) \((b?)(['\"])(.*)\3\)$", message, re.S)
    if not m:
        return message
    status, body = m.group(1), m.group(4)
    try:
        detail = json.loads(body.encode().decode("unicode_escape")).get("error", body)
    except (ValueError, AttributeError):
        detail = body.strip()[:200]
    hint = (
        " (check collect.prometheus.username_env/password_env/token_env)" if status in ("401", "403") else ""
    )
    return f"HTTP {status}: {detail}{hint}"


# --- The collector --------------------------------------------------------------------------------------


def pull(
    source: Source, grid: Grid, progress: Progress | None = None
) -> tuple[pd.Series, pd.Series, dict[str, str]]:
    """Per-VM CPU (cores) and memory (bytes) on `grid`, and each VM's latest host label."""
    say = progress or (lambda _: None)
    settings = source.settings
    chunks = grid.chunks(settings.chunk_h * 3600)
    jobs = [(name, render(settings, name, grid), a, b) for name in RANGE_QUERIES for a, b in chunks]
    say(f"{len(jobs)} range queries ({', '.join(RANGE_QUERIES)} in {len(chunks)} chunk(s)) to {source.where}")
    # Two in flight: Prometheus evaluates one while this process decodes the other.
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda j: source.range(j[0], j[1], j[2], j[3], grid.step), jobs))
    frames = {
        name: range_frame(
            (answer for job, answer in zip(jobs, answers, strict=True) if job[0] == name),
            settings.vm_label,
            settings.host_label,
        )
        for name in RANGE_QUERIES
    }
    cpu_frame, mem_frame = frames["vm_cpu"], frames["vm_mem"]
    for name, frame in frames.items():
        if (frame["vm"] == "").any():
            raise InputError(
                f"{source.where}: query {name} returns series without the VM label {settings.vm_label!r} "
                "(collect.prometheus.vm_label)"
            )
    stamps = np.concatenate([cpu_frame["ts"].to_numpy(), mem_frame["ts"].to_numpy()])
    if (
        (stamps - grid.start) % grid.step
    ).any():  # cannot happen with Prometheus' range API: a guard against a proxy in between
        raise AdvisorError(f"{source.where}: returned samples off the {grid.step} s grid")
    hosts = latest_hosts(pd.concat([cpu_frame, mem_frame], ignore_index=True))
    return per_vm(cpu_frame, "sum"), per_vm(mem_frame, "max"), hosts


def load_prometheus(
    settings: PrometheusSettings,
    inventory: Cluster | None,
    power: PowerSettings,
    progress: Progress | None = None,
    now: pd.Timestamp | None = None,
) -> tuple[Cluster, pd.DataFrame]:
    """The cluster and metrics history Prometheus holds for the span of `settings` ending now (or at
    `settings.end`). With `inventory` its VMs are the ones pulled (others in Prometheus are reported and
    left out); without, hosts and VM sizes come from node_exporter and the exporter's info metrics."""
    say = progress or (lambda _: None)
    grid = grid_for(settings, now)
    say(f"pulling {grid.points} steps of {grid.step} s ending {_when(grid.end)}")
    source = Source(settings)
    cpu, mem, hosts_of = pull(source, grid, say)
    if source.warnings:
        said = f"{source.where} warned of partial data: " + "; ".join(source.warnings[:SHOWN])
        if settings.on_gaps == "error":
            raise AdvisorError(f'{said} (collect.prometheus.on_gaps = "report" keeps what there is)')
        say(said)
    if inventory is not None:
        cluster = inventory
        extra = sorted(set(hosts_of) - set(inventory.vm_by_name))
        if extra:
            say(
                f"{len(extra)} VM(s) in Prometheus but not in the inventory, left out: "
                + ", ".join(extra[:SHOWN])
            )
    else:
        if not hosts_of:
            raise InputError(
                f"{source.where}: no VM series from {_when(grid.start)} to {_when(grid.end)} (query vm_cpu)"
            )
        info = {
            name: instant_values(
                source.instant(name, render(settings, name, grid), grid.end),
                settings.vm_label if name.startswith("vm_") else settings.host_label,
            )
            for name in INSTANT_QUERIES
        }
        cluster = cluster_from_metrics(
            hosts_of, info["vm_vcpus"], info["vm_mem_size"], info["host_cores"], info["host_mem"], power
        )
    metrics, cov = assemble(cpu, mem, [v.name for v in cluster.vms], grid, settings.on_gaps)
    if cov.late:
        say(
            f"{len(cov.late)} VM(s) with a shorter history: "
            + _listed(cov.late, lambda vm, t: f"{vm} from {t}")
        )
    if not cov.complete:
        say("kept without filling: " + describe_gaps(cov))
    return cluster, metrics
