"""Connections to libvirt hosts: one place for the event loop, quiet errors and secret-free URIs.

libvirt-python is an optional dependency (`pip install advisor[libvirt]`); importing this module without
it raises a one-line InputError instead of an ImportError traceback.
"""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from advisor.errors import InputError

try:
    import libvirt
except ImportError:  # pragma: no cover - depends on the install
    libvirt = None

_loop_lock = threading.Lock()
_loop_started = False


def require_libvirt() -> Any:
    if libvirt is None:
        raise InputError("libvirt-python is not installed: pip install 'advisor[libvirt]'")
    return libvirt


def start_event_loop() -> None:
    """Run libvirt's default event loop in a daemon thread; call before opening any connection.

    Without it, control calls (abortJob, migrateSetMaxDowntime) on a connection that is running a long
    migration block until the migration ends; it also brings keepalive and domain events.
    """
    global _loop_started
    lv = require_libvirt()
    with _loop_lock:
        if _loop_started:
            return
        # libvirt prints every error to stderr by default; ours are raised and reported once.
        lv.registerErrorHandler(lambda _ctx, _err: None, None)
        lv.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                lv.virEventRunDefaultImpl()

        threading.Thread(target=run, daemon=True, name="libvirt-events").start()
        _loop_started = True


def redact_uri(uri: str) -> str:
    """The URI without a password (`qemu+ssh://user:secret@host/` -> `qemu+ssh://user@host/`)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def connect(uri: str, timeout_s: float = 10.0, keepalive_s: int = 5) -> Any:
    """An open connection, retried until `timeout_s`; a host that never answers is an InputError.

    Keepalive makes a dead peer fail the connection within about 3 x `keepalive_s` instead of hanging.
    """
    lv = require_libvirt()
    start_event_loop()
    start = time.monotonic()
    while True:
        try:
            conn = lv.open(uri)
            conn.getVersion()
            conn.setKeepAlive(keepalive_s, 3)
            return conn
        except lv.libvirtError as exc:
            if time.monotonic() - start >= timeout_s:
                raise InputError(
                    f"libvirt host {redact_uri(uri)} is unreachable: {exc.get_error_message()}"
                ) from None
            time.sleep(0.5)
