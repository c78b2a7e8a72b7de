"""The executor's connections to the hosts of [collect.libvirt]: reopened when a daemon restarts, with the
URIs peer-to-peer migration needs, and the source-side JOB_COMPLETED events that carry a migration's final
statistics (the only record of a post-copy migration's)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from contextlib import suppress
from typing import Any

from advisor.errors import InputError
from advisor.virt.connection import connect, redact_uri, require_libvirt
from advisor.virt.inventory import HostConnection, close_all, open_hosts

PROBE_TIMEOUT_S = 3.0  # asking where a VM is: a daemon that does not answer by then is down


class HostPool:
    """One open connection per host, shared by the apply's threads (libvirt connections are thread-safe
    and, with the event loop running, do not block each other's calls during a migration)."""

    def __init__(
        self,
        hosts: Sequence[HostConnection],
        peer_uris: Mapping[str, str],
        migration_uris: Mapping[str, str],
        timeout_s: float,
    ) -> None:
        unknown = sorted((set(peer_uris) | set(migration_uris)) - {h.name for h in hosts})
        if unknown:
            raise InputError(
                f"apply.peer_uris / apply.migration_uris name unknown host(s): {', '.join(unknown)}"
            )
        self.hosts = {h.name: h for h in hosts}
        self._peer = dict(peer_uris)
        self._stream = dict(migration_uris)
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._conns: dict[str, Any] = {}
        self._completed: dict[tuple[str, str], dict[str, Any]] = {}
        self._arrived = threading.Condition()

    def open_all(self) -> dict[str, Any]:
        """Every host's connection; an unreachable daemon is an InputError naming it (URI redacted)."""
        opened = open_hosts(list(self.hosts.values()), self._timeout_s)
        with self._lock:
            for name, conn in opened.items():
                self._conns[name] = conn
                self._watch(name, conn)
            return dict(self._conns)

    def conn(self, host: str, timeout_s: float | None = None) -> Any:
        """The host's connection, reopened if its daemon went away since (InputError if it does not answer
        within `timeout_s`, default the configured timeout)."""
        lv = require_libvirt()
        with self._lock:
            conn = self._conns.get(host)
            alive = False
            if conn is not None:
                with suppress(lv.libvirtError):
                    alive = conn.isAlive() == 1
            if alive:
                return conn
            h = self.hosts[host]
            try:
                conn = connect(h.uri, self._timeout_s if timeout_s is None else timeout_s)
            except InputError as e:
                raise InputError(f"host {host}: {e}") from None
            self._conns[host] = conn
            self._watch(host, conn)
            return conn

    def try_conn(self, host: str) -> Any | None:
        """The connection, or None if the host's daemon does not answer within a few seconds."""
        try:
            return self.conn(host, min(PROBE_TIMEOUT_S, self._timeout_s))
        except InputError:
            return None

    def peer_uri(self, host: str) -> str:
        """The URI the other hosts' daemons reach `host` by (peer-to-peer migration)."""
        return self._peer.get(host, self.hosts[host].uri)

    def migration_uri(self, host: str) -> str | None:
        return self._stream.get(host)

    def shown(self, host: str) -> str:
        return f"host {host} ({redact_uri(self.peer_uri(host))})"

    def close(self) -> None:
        with self._lock:
            close_all(self._conns)
            self._conns.clear()

    # -- completed-job statistics -------------------------------------------------------------------

    def forget_completion(self, host: str, vm: str) -> None:
        with self._arrived:
            self._completed.pop((host, vm), None)

    def completion(self, host: str, vm: str, timeout_s: float) -> dict[str, Any] | None:
        """The JOB_COMPLETED record of `vm`'s last outgoing migration from `host`, waited for."""
        with self._arrived:
            self._arrived.wait_for(lambda: (host, vm) in self._completed, timeout_s)
            return self._completed.get((host, vm))

    def _watch(self, host: str, conn: Any) -> None:
        lv = require_libvirt()

        def completed(_conn: Any, dom: Any, params: dict[str, Any], _opaque: Any) -> None:
            if params.get("operation") != lv.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT:
                return
            with self._arrived:
                self._completed[(host, dom.name())] = dict(params)
                self._arrived.notify_all()

        conn.domainEventRegisterAny(None, lv.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, completed, None)
