"""The Prometheus collector's pure parts (grid, chunks, templates, coverage, backfill text) and its HTTP
edge against stand-in servers (silent, or answering 401 / not Prometheus). No Prometheus needed."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from advisor.collect.prom_backfill import write_openmetrics
from advisor.collect.prometheus import Grid, coverage, grid_for, load_prometheus, render, shown_url
from advisor.config import PowerSettings, PrometheusSettings
from advisor.core import VM, Cluster, Host
from advisor.errors import AdvisorError, InputError

POWER = PowerSettings()


def _settings(**kw: object) -> PrometheusSettings:
    return PrometheusSettings.model_validate(kw)


@given(
    start=st.integers(0, 10**9),
    step=st.integers(1, 3600),
    points=st.integers(1, 5000),
    chunk_s=st.floats(0.5, 10**6),
)
def test_chunks_cover_the_grid_once_in_order(start: int, step: int, points: int, chunk_s: float) -> None:
    grid = Grid(start * step, step, points)
    chunks = grid.chunks(chunk_s)
    got = np.concatenate([np.arange(a, b + 1, step) for a, b in chunks])
    np.testing.assert_array_equal(got, grid.start + step * np.arange(points))
    longest = max(b - a for a, b in chunks)
    assert longest <= max(chunk_s, step)


def test_grid_ends_on_a_step_and_holds_range_h() -> None:
    grid = grid_for(_settings(end="2026-01-02T10:07:31Z", range_h=2, step_s=300))
    assert pd.Timestamp(grid.end, unit="s", tz="UTC") == pd.Timestamp("2026-01-02T10:05:00Z")
    assert grid.points == 24 and grid.end - grid.start == 23 * 300
    naive = grid_for(_settings(end="2026-01-02T10:05:00", range_h=2))
    assert naive == grid  # no zone: UTC


def test_grid_errors_name_the_key() -> None:
    with pytest.raises(AdvisorError, match=r"collect.prometheus.end: 'yesterday' is not an ISO 8601 time"):
        grid_for(_settings(end="yesterday"))
    with pytest.raises(AdvisorError, match="collect.prometheus.range_h"):
        grid_for(_settings(range_h=0.05, step_s=300))


def test_templates_fill_labels_windows_and_range() -> None:
    s = _settings(vm_label="name", host_label="node", step_s=60, rate_window_s=120)
    grid = Grid(0, 60, 1440)
    assert render(s, "vm_cpu", grid) == (
        "sum by (name, node) (rate(libvirt_domain_info_cpu_time_seconds_total[120s]))"
    )
    assert render(s, "host_cores", grid) == (
        'count by (node) (last_over_time(node_cpu_seconds_total{mode="idle"}[86400s]))'
    )
    assert "[60s]" in render(_settings(step_s=60), "vm_cpu", grid)  # window defaults to one step
    with pytest.raises(AdvisorError, match=r"collect.prometheus.vm_mem: unknown placeholder 'vmname'"):
        render(_settings(vm_mem="max by ($vmname) (x)"), "vm_mem", grid)


def test_shown_url_drops_credentials() -> None:
    assert shown_url("https://alice:s3cret@prom.example:9090/p") == "https://prom.example/p"
    assert shown_url("http://127.0.0.1:9090") == "http://127.0.0.1:9090"


def _indexed(rows: dict[str, list[int]]) -> pd.Series:
    idx = pd.MultiIndex.from_tuples([(vm, t) for vm, ts in rows.items() for t in ts], names=["vm", "ts"])
    return pd.Series(1.0, index=idx)


def test_coverage_tells_missing_gaps_stale_and_late_apart() -> None:
    grid = Grid(0, 10, 10)  # 0, 10, ..., 90
    full = list(range(0, 100, 10))
    cpu = _indexed({"ok": full, "gap": [0, 10, 40, 50, 60, 70, 80, 90], "stale": full[:6], "late": full[3:]})
    mem = _indexed({"ok": full, "gap": full, "stale": full, "late": full, "nocpu": full})
    cov = coverage(cpu, mem, ["ok", "gap", "stale", "late", "nocpu", "absent"], grid)
    assert cov.missing == {"nocpu": ("vm_cpu",), "absent": ("vm_cpu", "vm_mem")}
    assert cov.gaps == {"gap": "2 missing step(s) from 1970-01-01T00:00:20Z"}
    assert cov.stale == {"stale": "no samples since 1970-01-01T00:00:50Z"}
    assert cov.late == {"late": "1970-01-01T00:00:30Z"}
    assert not cov.complete
    assert coverage(cpu, mem, ["ok", "late"], grid).complete


def test_backfill_text_is_sorted_and_rates_give_back_the_cores(tmp_path: Path) -> None:
    cluster = Cluster("c", (Host("h", 4, 8192),), (VM('a"b', "h", 2, 1024),))
    ts = pd.date_range("2026-01-01", periods=5, freq="300s", tz="UTC")
    cores = [0.5, 1.25, 0.0, 2.0, 1.0]
    metrics = pd.DataFrame({"vm": 'a"b', "ts": ts, "cpu_cores": cores, "mem_mib": 512.0})
    path = tmp_path / "m.om"
    n = write_openmetrics(path, cluster, metrics, 300)
    lines = path.read_text().splitlines()
    assert lines[-1] == "# EOF" and n == sum(1 for ln in lines if not ln.startswith("#"))
    counter = [ln for ln in lines if ln.startswith("libvirt_domain_info_cpu_time_seconds_total")]
    assert counter[0].startswith('libvirt_domain_info_cpu_time_seconds_total{domain="a\\"b",host="h"} 0.0 ')
    t = np.array([int(ln.rsplit(" ", 2)[2]) for ln in counter])
    v = np.array([float(ln.rsplit(" ", 2)[1]) for ln in counter])
    assert (np.diff(t) == 300).all() and t[-1] == ts[-1].timestamp()
    np.testing.assert_allclose(np.diff(v) / 300, cores)
    assert sum(ln.startswith("node_cpu_seconds_total") for ln in lines) == 4 * 2  # 4 cores, first + last
    with pytest.raises(InputError, match="VM x is not in cluster c"):
        write_openmetrics(path, cluster, metrics.assign(vm="x"), 300)


# --- The HTTP edge against stand-in servers -----------------------------------------------------------------


@contextmanager
def _silent_server() -> Iterator[str]:
    """Accepts connections and never answers: a hung Prometheus."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@contextmanager
def _http_server(status: int, body: bytes, seen: list[dict[str, str]]) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            seen.append(dict(self.headers))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_slow_prometheus_times_out_with_one_line() -> None:
    with _silent_server() as url, pytest.raises(AdvisorError) as err:
        load_prometheus(_settings(url=url, timeout_s=0.3, range_h=1), None, POWER)
    assert str(err.value) == (
        f"Prometheus at {url}: no answer within 0.3 s to query vm_cpu (collect.prometheus.timeout_s, chunk_h)"
    )


def test_bearer_token_is_sent_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROM_TOKEN", "s3cret-token")
    seen: list[dict[str, str]] = []
    body = b'{"status":"error","errorType":"unauthorized","error":"bad token"}'
    with _http_server(401, body, seen) as url, pytest.raises(AdvisorError) as err:
        load_prometheus(_settings(url=url, token_env="PROM_TOKEN", range_h=1), None, POWER)
    assert seen[0]["Authorization"] == "Bearer s3cret-token"
    assert str(err.value) == (
        f"Prometheus at {url}: query vm_cpu failed: HTTP 401: bad token "
        "(check collect.prometheus.username_env/password_env/token_env)"
    )
    assert "s3cret" not in str(err.value)


def test_basic_auth_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROM_USER", "alice")
    monkeypatch.setenv("PROM_PASS", "pw")
    seen: list[dict[str, str]] = []
    with _http_server(200, b"<html>not prometheus</html>", seen) as url, pytest.raises(AdvisorError) as err:
        load_prometheus(
            _settings(url=url, username_env="PROM_USER", password_env="PROM_PASS", range_h=1), None, POWER
        )
    assert seen[0]["Authorization"] == "Basic YWxpY2U6cHc="  # alice:pw
    assert str(err.value) == f"Prometheus at {url}: query vm_cpu: the answer is not Prometheus' API"


def test_unset_credential_variable_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_TOKEN_VAR", raising=False)
    match = "collect.prometheus.token_env: environment variable NO_SUCH_TOKEN_VAR"
    with pytest.raises(AdvisorError, match=match):
        load_prometheus(_settings(token_env="NO_SUCH_TOKEN_VAR", range_h=1), None, POWER)


# Prometheus 2.42 sends `warnings` only when a remote-read or store fails part of a query: a fault the tests
# cannot produce on a local server, so a stand-in answers with Prometheus' documented envelope.
PARTIAL = (
    b'{"status":"success","data":{"resultType":"matrix","result":[]},'
    b'"warnings":["remote_read: store eu-1 unavailable, results may be incomplete"]}'
)


def test_partial_data_warning_fails_by_default() -> None:
    with _http_server(200, PARTIAL, []) as url, pytest.raises(AdvisorError) as err:
        load_prometheus(_settings(url=url, range_h=1), None, POWER)
    assert str(err.value) == (
        f"Prometheus at {url} warned of partial data: remote_read: store eu-1 unavailable, results may be "
        'incomplete (collect.prometheus.on_gaps = "report" keeps what there is)'
    )


def test_partial_data_warning_is_reported_with_on_gaps_report() -> None:
    said: list[str] = []
    with _http_server(200, PARTIAL, []) as url, pytest.raises(InputError, match="no VM series"):
        load_prometheus(_settings(url=url, range_h=1, on_gaps="report"), None, POWER, said.append)
    assert any("warned of partial data: remote_read: store eu-1 unavailable" in line for line in said)
