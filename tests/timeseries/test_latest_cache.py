"""readings/latest is served from memory: own writes at once, other writers' within the TTL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event

from foresight.kit.db import Database
from foresight.timeseries.latest import LatestCache
from tests.factories import Factory
from tests.timeseries.helpers import T0, iso, make_asset, write


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cache_keeps_the_newest_and_expires_checks() -> None:
    clock = Clock()
    cache = LatestCache(ttl_s=2.0, clock=clock)
    assert cache.get_many([1, 2]) == ({}, [1, 2])
    assert cache.refresh([1, 2], {1: (100, 1.0)}) == {1: (100, 1.0), 2: None}
    assert cache.get_many([1, 2, 3]) == ({1: (100, 1.0), 2: None}, [3])
    cache.observe({1: (90, 9.0), 2: (50, 5.0), 3: (70, 7.0)})  # 1: older, ignored; 3: unknown
    assert cache.get_many([1, 2, 3]) == ({1: (100, 1.0), 2: (50, 5.0)}, [3])
    clock.now += 2.0
    assert cache.get_many([1, 2]) == ({}, [1, 2])  # due for a check
    # The database is behind a point this process wrote: the newer one is kept.
    assert cache.refresh([1, 2], {1: (100, 1.0), 2: (40, 4.0)}) == {1: (100, 1.0), 2: (50, 5.0)}
    assert cache.refresh([1], {1: (200, 2.0)}) == {1: (200, 2.0)}


def test_cache_is_bounded() -> None:
    cache = LatestCache(max_series=100)
    cache.refresh(range(250), {})
    assert len(cache) <= 100
    assert cache.get_many([249])[0] == {249: None}  # the newest stay


@contextmanager
def latest_queries(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def listen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "series_latest" in statement:
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", listen)


def test_latest_from_memory_own_writes_at_once_others_within_ttl(
    client: TestClient, factory: Factory, db: Database
) -> None:
    s = make_asset(client, factory, {"temperature": {}, "vibration": {}})
    clock = Clock()
    client.app.state.latest_cache.clock = clock  # type: ignore[attr-defined]
    h = s.user.headers
    url = f"{s.url}/latest"
    body = {"readings": [{"asset": "PUMP-001", "ts": iso(T0), "values": {"temperature": 20.0}}]}
    assert client.post("/api/v1/readings", json=body, headers=h).status_code == 200

    def values() -> dict[str, tuple[str | None, float | None]]:
        r = client.get(url, headers=h)
        assert r.status_code == 200, r.text
        return {x["sensor"]: (x["ts"], x["value"]) for x in r.json()["sensors"]}

    with latest_queries(db) as queries:
        assert values() == {"temperature": (iso(T0), 20.0), "vibration": (None, None)}
    assert len(queries) == 1  # the first read checks the database once, for both series

    with latest_queries(db) as queries:
        for i in range(1, 4):
            reading = {"temperature": 20.0 + i, "vibration": float(i)}
            body = {
                "readings": [{"asset": "PUMP-001", "ts": iso(T0 + i * 1000), "values": reading}]
            }
            assert client.post("/api/v1/readings", json=body, headers=h).status_code == 200
            # Visible at once, read from memory.
            assert values() == {
                "temperature": (iso(T0 + i * 1000), 20.0 + i),
                "vibration": (iso(T0 + i * 1000), float(i)),
            }
        # A late point does not replace the latest.
        late = {
            "readings": [{"asset": "PUMP-001", "ts": iso(T0 - 5), "values": {"vibration": 9.0}}]
        }
        assert client.post("/api/v1/readings", json=late, headers=h).status_code == 200
        assert values()["vibration"] == (iso(T0 + 3000), 3.0)
    writes = [q for q in queries if q.lstrip().upper().startswith("INSERT")]
    assert queries == writes, "readings/latest read series_latest instead of memory"

    # Another process writes a newer point: seen once the entry is due for a check.
    write(factory, s.series["temperature"], [(T0 + 60_000, 55.5)])
    assert values()["temperature"] == (iso(T0 + 3000), 23.0)
    clock.now += 2.0
    with latest_queries(db) as queries:
        assert values()["temperature"] == (iso(T0 + 60_000), 55.5)
    assert len(queries) == 1
