"""Detection off the ingest path: a bounded queue and one thread running the rule engine.

The writer hands over each committed write's new points and goes on; when detection falls
behind by more than ``max_pending_points`` the writer waits (backpressure reaches the API as
503 + Retry-After) rather than skipping points or growing memory without bound. The same thread
checks no-data conditions every ``silence_interval_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from foresight.config import Settings
from foresight.detection.anomaly import MinuteScore
from foresight.detection.anomaly_stage import AnomalyStage
from foresight.detection.engine import AlertHook, AlertListener, RuleEngine
from foresight.kit.db import Database
from foresight.kit.logging import get_logger
from foresight.timeseries.store import Columns, WriteResult, sorted_unique

log = get_logger("foresight.detection")


class DetectionWorker:
    @classmethod
    def from_settings(
        cls,
        db: Database,
        settings: Settings,
        *,
        hooks: list[AlertHook] | None = None,
        listeners: list[AlertListener] | None = None,
        anomaly_listeners: list[Callable[[MinuteScore], None]] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> DetectionWorker:
        """Rules and (unless turned off) anomaly detection, as the settings say."""
        engine = RuleEngine(
            db,
            reload_interval_s=settings.detection_reload_interval_s,
            hooks=hooks,
            listeners=listeners,
            anomaly=AnomalyStage() if settings.anomaly_enabled else None,
        )
        engine.anomaly_listeners.extend(anomaly_listeners or [])
        return cls(
            engine, max_pending_points=settings.detection_max_pending_points, registry=registry
        )

    def __init__(
        self,
        engine: RuleEngine,
        *,
        max_pending_points: int = 2_000_000,
        silence_interval_s: float = 30.0,
        registry: CollectorRegistry | None = None,
        on_processed: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        # Called (detection thread) with the number of submitted points each pass evaluated.
        self.on_processed = on_processed
        self.max_pending_points = max_pending_points
        self.silence_interval_s = silence_interval_s
        self._pending: list[Columns] = []
        self._pending_points = 0
        self._busy = False
        self._busy_points = 0
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        if registry is not None:
            registry.register(DetectionCollector(self))

    @property
    def points_total(self) -> int:
        return self.engine.points_total

    @property
    def stage_seconds(self) -> dict[str, float]:
        return self.engine.stage_seconds

    @property
    def backlog_points(self) -> int:
        """Points handed over and not evaluated yet (queued plus the batch in hand)."""
        return self._pending_points + self._busy_points

    def observe(self, write: WriteResult) -> None:
        """Pipeline observer: queue a committed write's new points."""
        if write.new is not None and len(write.new):
            self.submit(write.new)

    def submit(self, new: Columns) -> None:
        with self._cond:
            while self._pending_points >= self.max_pending_points and not self._stop:
                self._cond.wait(0.5)
            self._pending.append(new)
            self._pending_points += len(new)
            self._cond.notify_all()

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted has been evaluated (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def reset(self) -> None:
        """Forget per-series state before the next evaluation (assets were handed over)."""
        self.engine.request_reset()

    def reload(self) -> None:
        """Re-read the rules before the next evaluation (after a change made here)."""
        self.engine.invalidate()

    def start(self) -> None:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="detection", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self.drain()
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        thread.join()
        self._thread = None

    def _run(self) -> None:
        next_silence = time.monotonic() + self.silence_interval_s
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    if time.monotonic() >= next_silence:
                        break
                    self._cond.wait(max(0.0, min(1.0, next_silence - time.monotonic())))
                if self._stop and not self._pending:
                    return
                self._busy_points = self._pending_points
                batch, self._pending, self._pending_points = self._pending, [], 0
                self._busy = True
                self._cond.notify_all()
            done = self._busy_points
            try:
                if batch:
                    self.engine.process(_merge(batch))
                if time.monotonic() >= next_silence:
                    next_silence = time.monotonic() + self.silence_interval_s
                    self.engine.check_silence()
            except Exception:  # noqa: BLE001 - detection must never stop; the error is logged
                log.exception("detection_failed")
            finally:
                if self.on_processed is not None and done:
                    try:
                        self.on_processed(done)
                    except Exception:  # noqa: BLE001
                        log.exception("detection_ack_failed")
                with self._cond:
                    self._busy = False
                    self._busy_points = 0
                    self._cond.notify_all()


class DetectionCollector(Collector):
    """Detection cost and backlog, read at scrape time (nothing is counted per point); the same
    metrics for the threaded worker and for detection processes (summed over the children)."""

    def __init__(self, source: Any, *, restarts: Callable[[], int] | None = None) -> None:
        # ``source`` has points_total, stage_seconds and backlog_points.
        self.source = source
        self.restarts = restarts

    def collect(self) -> Iterator[Metric]:
        source = self.source
        yield CounterMetricFamily(
            "foresight_detection_points", "New points detection has processed",
            value=source.points_total,
        )  # fmt: skip
        seconds = CounterMetricFamily(
            "foresight_detection_seconds",
            "Wall time detection spent, by stage (rules, anomaly, alerts)",
            labels=["stage"],
        )
        for stage, value in list(source.stage_seconds.items()):
            seconds.add_metric([stage], value)
        yield seconds
        yield GaugeMetricFamily(
            "foresight_detection_backlog_points",
            "New points waiting for detection (queued plus the batch being evaluated)",
            value=source.backlog_points,
        )
        if self.restarts is not None:
            yield CounterMetricFamily(
                "foresight_detection_process_restarts",
                "Detection processes started again after dying",
                value=self.restarts(),
            )


def _merge(batch: list[Columns]) -> Columns:
    if len(batch) == 1:
        return batch[0]
    return sorted_unique(
        np.concatenate([c.series_id for c in batch]),
        np.concatenate([c.ts_ms for c in batch]),
        np.concatenate([c.value for c in batch]),
    )
