"""A real Prometheus for tests and benchmarks: the Debian package's binary on 127.0.0.1 at a free port, with
a private data directory backfilled by promtool. Started and stopped by PID; nothing is left running."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
INSTALL_HINT = "run `bash scripts/install-test-deps.sh` as root (Debian packages prometheus, exporters)"


def missing_binaries() -> str | None:
    """A message naming what is missing and how to install it, or None."""
    absent = [str(p) for p in (PROMETHEUS, PROMTOOL) if not p.exists()]
    return f"{', '.join(absent)} not found: {INSTALL_HINT}" if absent else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def backfill(openmetrics: Path, data_dir: Path) -> None:
    """Blocks from an OpenMetrics file, written straight into a (not yet served) data directory."""
    data_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [str(PROMTOOL), "tsdb", "create-blocks-from", "openmetrics", str(openmetrics), str(data_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"promtool failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


@contextmanager
def prometheus(data_dir: Path, timeout_s: float = 60.0) -> Iterator[str]:
    """A Prometheus serving `data_dir` (no scrape targets); yields its URL, stops it on exit."""
    port = free_port()
    config = data_dir.parent / f"prometheus-{port}.yml"
    config.write_text("global: {scrape_interval: 15s, evaluation_interval: 15s}\nscrape_configs: []\n")
    log = (data_dir.parent / f"prometheus-{port}.log").open("w")
    proc = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={config}",
            f"--storage.tsdb.path={data_dir}",
            "--storage.tsdb.retention.time=3650d",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, timeout_s, Path(log.name))
        yield url
    finally:
        stop(proc)
        log.close()


def stop(proc: subprocess.Popen) -> None:
    """Terminate a server started by a test; kill it if it does not go within 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _wait_ready(url: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"prometheus at {url} not ready after {timeout_s} s: {log.read_text()[-2000:]}")
