"""Committed points → per-asset reading summaries, off the writer's path.

The pipeline calls :meth:`ReadingsTap.observe` in the writer thread right after each commit. It
reduces the write's new points to one row per series (newest point, min, max, count: a few
vectorised numpy passes) and queues that; a thread of its own maps series to (tenant, asset,
sensor) through a cache and hands per-asset summaries to the sink (the hub, or NATS in a
worker). The observer never waits: past ``max_pending_series`` queued rows it drops the write's
summary and counts it (live updates are best-effort; the store has every point).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from foresight.kit.db import Database
from foresight.kit.logging import get_logger
from foresight.live import repository
from foresight.live.events import AssetReadings, SensorStat
from foresight.timeseries.store import Columns, WriteResult

log = get_logger("foresight.live")

SERIES_TTL_S = 30.0


@dataclass(frozen=True)
class SeriesSummary:
    """One row per series of a write: newest point, min, max and count of its new points."""

    series_id: npt.NDArray[np.int64]
    last_ts: npt.NDArray[np.int64]
    last_value: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    count: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.series_id.shape[0])

    @classmethod
    def of(cls, new: Columns) -> SeriesSummary:
        # Columns are sorted by (series, ts): each series is one run, its last point the newest.
        sid = new.series_id
        n = sid.shape[0]
        starts = np.flatnonzero(np.concatenate(([True], sid[1:] != sid[:-1])))
        ends = np.concatenate((starts[1:], [n])) - 1
        return cls(
            series_id=sid[starts],
            last_ts=new.ts_ms[ends],
            last_value=new.value[ends],
            low=np.minimum.reduceat(new.value, starts),
            high=np.maximum.reduceat(new.value, starts),
            count=np.diff(np.concatenate((starts, [n]))).astype(np.int64),
        )


class SeriesResolver:
    """series id → (tenant, asset, sensor key), cached for ``ttl_s`` (misses too)."""

    def __init__(self, db: Database, ttl_s: float = SERIES_TTL_S) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._cache: dict[int, tuple[tuple[uuid.UUID, uuid.UUID, str] | None, float]] = {}

    def resolve(self, series_ids: list[int]) -> dict[int, tuple[uuid.UUID, uuid.UUID, str]]:
        now = time.monotonic()
        found: dict[int, tuple[uuid.UUID, uuid.UUID, str]] = {}
        missing: list[int] = []
        for sid in series_ids:
            hit = self._cache.get(sid)
            if hit is None or hit[1] < now:
                missing.append(sid)
            elif hit[0] is not None:
                found[sid] = hit[0]
        if missing:
            with self.db.transaction(write=False) as session:
                loaded = repository.sensors_by_series(session, series_ids=missing)
            if len(self._cache) > 1_000_000:
                self._cache.clear()
            expires = now + self.ttl_s
            for sid in missing:
                self._cache[sid] = (loaded.get(sid), expires)
            found.update(loaded)
        return found


class ReadingsTap:
    def __init__(
        self,
        db: Database,
        sink: Callable[[list[AssetReadings]], None],
        *,
        wanted: Callable[[], bool] = lambda: True,
        min_gap_s: float = 0.0,
        max_pending_series: int = 200_000,
    ) -> None:
        self.resolver = SeriesResolver(db)
        self.sink = sink
        # Skip the work while nobody listens (an API node without clients).
        self.wanted = wanted
        # Batch summaries for at least this long between two hand-overs (a worker publishing to
        # NATS sends one message per interval, not one per commit).
        self.min_gap_s = min_gap_s
        self.max_pending_series = max_pending_series
        self.dropped_writes = 0
        self._pending: list[SeriesSummary] = []
        self._pending_series = 0
        self._busy = False
        self._stop = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def observe(self, write: WriteResult) -> None:
        """Pipeline observer (writer thread, after the commit): cheap, never waits."""
        new = write.new
        if new is None or not len(new) or not self.wanted():
            return
        summary = SeriesSummary.of(new)
        with self._cond:
            if self._pending_series + len(summary) > self.max_pending_series:
                self.dropped_writes += 1
                return
            self._pending.append(summary)
            self._pending_series += len(summary)
            self._cond.notify_all()

    def start(self) -> None:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="live-readings", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        thread.join(timeout=10)
        self._thread = None

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until everything observed has reached the sink (tests)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait(1.0)
                if self._stop:
                    return
                batch, self._pending, self._pending_series = self._pending, [], 0
                self._busy = True
            try:
                items = self.summarise(batch)
                if items:
                    self.sink(items)
            except Exception:  # noqa: BLE001 - live updates must never stop; logged
                log.exception("live_readings_failed")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
            if self.min_gap_s:
                with self._cond:
                    self._cond.wait_for(lambda: self._stop, timeout=self.min_gap_s)

    def summarise(self, batch: list[SeriesSummary]) -> list[AssetReadings]:
        series = sorted({int(s) for summary in batch for s in summary.series_id.tolist()})
        known = self.resolver.resolve(series)
        by_asset: dict[tuple[uuid.UUID, uuid.UUID], AssetReadings] = {}
        for summary in batch:
            rows = zip(
                summary.series_id.tolist(), summary.last_ts.tolist(),
                summary.last_value.tolist(), summary.low.tolist(), summary.high.tolist(),
                summary.count.tolist(), strict=True,
            )  # fmt: skip
            for sid, ts, value, low, high, count in rows:
                owner = known.get(int(sid))
                if owner is None:
                    continue  # deleted meanwhile
                tenant_id, asset_id, key = owner
                item = by_asset.get((tenant_id, asset_id))
                if item is None:
                    item = by_asset[(tenant_id, asset_id)] = AssetReadings(tenant_id, asset_id)
                stat = SensorStat(int(ts), float(value), float(low), float(high), int(count))
                item.add(key, stat)
        return list(by_asset.values())
