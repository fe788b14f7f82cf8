"""The newest point of each series, served from memory.

``GET /assets/{id}/readings/latest`` reads this cache, not the database. The writer of this
process feeds it after each commit, so what is ingested here shows at once. Other processes may
write too (a `foresight import` beside the server, NATS workers, `serve --workers N`), so an
entry is trusted for ``ttl_s`` after it was last checked against ``series_latest`` (one
primary-key lookup for all of a request's stale series); writes seen here keep it current in
between. Staleness is therefore zero for this process's own writes and at most ``ttl_s`` for
anyone else's. Memory is bounded by ``max_series`` entries (the oldest are dropped first).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

Point = tuple[int, float]


@dataclass(slots=True)
class _Entry:
    point: Point | None  # None: the series had no point when last checked
    checked_at: float


class LatestCache:
    def __init__(
        self,
        *,
        ttl_s: float = 2.0,
        max_series: int = 1_000_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_series = max_series
        self.clock = clock
        self._entries: dict[int, _Entry] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get_many(self, series_ids: Iterable[int]) -> tuple[dict[int, Point | None], list[int]]:
        """(fresh entries, series to look up): a fresh entry of None means "no data"."""
        now = self.clock()
        fresh: dict[int, Point | None] = {}
        stale: list[int] = []
        with self._lock:
            for sid in series_ids:
                entry = self._entries.get(sid)
                if entry is not None and now - entry.checked_at < self.ttl_s:
                    fresh[sid] = entry.point
                else:
                    stale.append(sid)
            self.hits += len(fresh)
            self.misses += len(stale)
        return fresh, stale

    def refresh(
        self, checked: Iterable[int], found: Mapping[int, Point]
    ) -> dict[int, Point | None]:
        """Record what the database holds for ``checked`` (series absent from ``found`` have no
        point) and return it; a newer point this process wrote meanwhile is kept."""
        now = self.clock()
        result: dict[int, Point | None] = {}
        with self._lock:
            for sid in checked:
                point = found.get(sid)
                entry = self._entries.get(sid)
                kept = None if entry is None else entry.point
                if kept is not None and (point is None or kept[0] > point[0]):
                    point = kept
                self._entries[sid] = _Entry(point, now)
                result[sid] = point
            self._trim()
        return result

    def observe(self, latest: Mapping[int, Point]) -> None:
        """Newest new points of a committed write. Only series already cached are updated (a
        series seen here for the first time is checked against the database on first read)."""
        with self._lock:
            for sid, point in latest.items():
                entry = self._entries.get(sid)
                if entry is not None and (entry.point is None or point[0] > entry.point[0]):
                    entry.point = point

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _trim(self) -> None:
        excess = len(self._entries) - self.max_series
        if excess > 0:
            for sid in list(self._entries)[: max(excess, self.max_series // 10)]:
                del self._entries[sid]
