"""Imported by the fork server (``flows.warm_start.PRELOAD``) and the API: one CA bundle load per process.

Prefect's API clients build a new verified TLS context each time one is created
(``ssl.create_default_context(cafile=certifi.where())`` in ``prefect.client.orchestration``): parsing the
CA bundle costs 50–90 ms, and a flow run creates about five clients in its first second (engine, log and
event workers) — ~0.3 CPU-s of every flow run's start, even against a plain-http
API. Here the verified context is made once, in the fork server, and every forked flow run reuses it; the
API installs it too (each launch makes a client: ~55 ms of every POST /create).

A shared ``SSLContext`` is safe: nothing mutates a verified context after creating it, and contexts are
meant to be shared between connections. Only exactly that call is served from the cache (keyed by the CA
file and its modification time); any other call — e.g. the no-argument one Prefect then turns into an
unverified context when ``PREFECT_API_TLS_INSECURE_SKIP_VERIFY`` is set — gets a fresh context as before.
"""

from __future__ import annotations

import os
import ssl
import threading
from typing import Any

import certifi
import prefect.client.orchestration as orchestration
from prefect.settings import PREFECT_API_SSL_CERT_FILE


class _SharedVerifiedContexts:
    """Stands in for the ``ssl`` module inside ``prefect.client.orchestration`` (pinned Prefect version;
    tests/flows/test_warm_start.py checks the flow-run clients really share one context)."""

    def __init__(self) -> None:
        self._contexts: dict[tuple[str, float], ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def create_default_context(self, *args: Any, **kwargs: Any) -> ssl.SSLContext:
        if args or set(kwargs) != {"cafile"} or not isinstance(kwargs["cafile"], str):
            return ssl.create_default_context(*args, **kwargs)
        cafile = kwargs["cafile"]
        try:
            key = (cafile, os.stat(cafile).st_mtime)
        except OSError:
            return ssl.create_default_context(cafile=cafile)  # let ssl raise its own error
        with self._lock:
            if key not in self._contexts:
                self._contexts[key] = ssl.create_default_context(cafile=cafile)
            return self._contexts[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(ssl, name)


def install() -> _SharedVerifiedContexts:
    shared = orchestration.ssl
    if not isinstance(shared, _SharedVerifiedContexts):
        shared = _SharedVerifiedContexts()
        orchestration.ssl = shared  # type: ignore[assignment]
    # made here, in the fork server, so that every forked flow run inherits it
    shared.create_default_context(cafile=PREFECT_API_SSL_CERT_FILE.value() or certifi.where())
    return shared


install()
