"""The demo source application (``geoexport demo-source``): two resources of generated data.

Application ``demo``; resources ``users`` and ``events``. Filters: ``limit`` (rows,
default 100, at most 100000) and, for events, ``kind`` (login | export | delete).
The rows are made from a fixed seed, so the same request always gives the same data.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from geoexport_sdk.writers import Rows

APPLICATION = "demo"
RESOURCES = ["users", "events"]
KINDS = ["login", "export", "delete"]
_NAMES = ["ada", "grace", "alan", "edsger", "barbara", "ken", "dennis", "margaret", "linus", "guido"]


def _limit(filters: dict[str, Any]) -> int:
    try:
        return max(0, min(int(filters.get("limit", 100)), 100_000))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"filter limit must be a number, not {filters.get('limit')!r}") from exc


def users(filters: dict[str, Any]) -> Iterator[dict[str, Any]]:
    rnd = random.Random(1)
    for i in range(_limit(filters)):
        name = rnd.choice(_NAMES)
        yield {"id": i + 1, "username": f"{name}{i + 1}", "email": f"{name}{i + 1}@example.com",
               "active": rnd.random() > 0.2}


def events(filters: dict[str, Any], org_id: str) -> Iterator[dict[str, Any]]:
    rnd = random.Random(2)
    kind = filters.get("kind")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"filter kind must be one of {', '.join(KINDS)}, not {kind!r}")
    start = datetime(2024, 1, 1, tzinfo=UTC)
    n = 0
    i = 0
    while n < _limit(filters):
        i += 1
        row = {"id": i, "org_id": org_id, "kind": rnd.choice(KINDS),
               "at": (start + timedelta(minutes=7 * i)).isoformat(), "user_id": rnd.randint(1, 100)}
        if kind is None or row["kind"] == kind:
            n += 1
            yield row


def rows(resource: str, filters: dict[str, Any], identity: dict[str, Any], fmt: str) -> Rows:
    """The SDK handler: (resource, filters, identity, format) → rows."""
    if resource == "users":
        return Rows(["id", "username", "email", "active"], users(filters))
    if resource == "events":
        return Rows(["id", "org_id", "kind", "at", "user_id"], events(filters, str(identity.get("org_id", ""))))
    raise ValueError(f"unknown resource {resource!r}; the demo serves {', '.join(RESOURCES)}")
