"""Detection off the ingest path: a bounded queue and one thread running the rule engine.

The writer hands over each committed write's new points and goes on; when detection falls
behind by more than ``max_pending_points`` the writer waits (backpressure reaches the API as
503 + Retry-After) rather than skipping points or growing memory without bound. The same thread
checks no-data conditions every ``silence_interval_s``.

Rules come first: each pass evaluates the rules on every point waiting (and commits the alerts
they change), then leaves the anomaly stage's share of those points, in parts of whole assets
of about ``anomaly_part_points``, to be scored between later passes. When points are waiting,
rules and anomaly parts take turns, so a threshold crossing waits behind at most one part, not
behind the detectors' work on a whole backlog; parts are scored in the order their points came,
and points count as evaluated (``on_processed``, the backlog) once their scores are committed.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from foresight.config import Settings
from foresight.detection import alerts
from foresight.detection.anomaly import MinuteScore
from foresight.detection.anomaly_stage import AnomalyStage
from foresight.detection.engine import AlertHook, AlertListener, AnomalyWork, RuleEngine
from foresight.kit.db import Database
from foresight.kit.logging import get_logger
from foresight.timeseries.store import Columns, WriteResult, sorted_unique

log = get_logger("foresight.detection")

# Points per anomaly part: a rule alert waits behind at most one part's scoring.
ANOMALY_PART_POINTS = 5_000


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
        anomaly_part_points: int = ANOMALY_PART_POINTS,
    ) -> None:
        self.engine = engine
        # Called (detection thread) with the number of submitted points each pass evaluated.
        self.on_processed = on_processed
        self.max_pending_points = max_pending_points
        self.silence_interval_s = silence_interval_s
        self.anomaly_part_points = anomaly_part_points
        self._pending: list[Columns] = []
        self._pending_points = 0
        # Taken from the queue and not evaluated to the end yet (rules done, anomaly parts left).
        self._taken_points = 0
        self._busy = False
        # Anomaly parts left, oldest first, each with the submitted points it completes (the
        # last part of a pass completes the pass's points; 0 for the others).
        self._parts: deque[tuple[AnomalyWork, int]] = deque()
        # Scored parts not committed yet: their scores, alert changes and points.
        self._scores: list[MinuteScore] = []
        self._actions: list[alerts.Trigger | alerts.Clear] = []
        self._scored_points = 0
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
        """Points handed over and not evaluated yet (queued plus those in hand)."""
        return self._pending_points + self._taken_points

    def observe(self, write: WriteResult) -> None:
        """Pipeline observer: queue a committed write's new points."""
        if write.new is not None and len(write.new):
            self.submit(write.new)

    def submit(self, new: Columns) -> None:
        with self._cond:
            while (
                self._pending_points + self._taken_points >= self.max_pending_points
                and not self._stop
            ):
                self._cond.wait(0.5)
            self._pending.append(new)
            self._pending_points += len(new)
            self._cond.notify_all()

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted has been evaluated (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy or self._parts:
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
        rules_last = False  # the last step was a rules pass (with parts left: a part is next)
        while True:
            with self._cond:
                while not self._pending and not self._parts and not self._stop:
                    if time.monotonic() >= next_silence:
                        break
                    self._cond.wait(max(0.0, min(1.0, next_silence - time.monotonic())))
                if self._stop and not self._pending and not self._parts:
                    return
                # A reset forgets the detectors' state: the parts of earlier points go first.
                take = bool(self._pending) and not (
                    self._parts and (rules_last or self.engine.reset_requested)
                )
                batch: list[Columns] = []
                taken = 0
                if take:
                    batch, self._pending = self._pending, []
                    taken, self._pending_points = self._pending_points, 0
                    self._taken_points += taken
                self._busy = True
                self._cond.notify_all()
            done = 0
            try:
                if take:
                    rules_last = True
                    try:
                        done = self._rules(batch, taken)
                    except Exception:  # noqa: BLE001 - detection must never stop
                        log.exception("detection_failed")
                        done = taken  # the pass failed: none of its parts is queued
                elif self._parts:
                    rules_last = False
                    done = self._next_part()
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
                    self._taken_points -= done
                    self._cond.notify_all()

    def _rules(self, batch: list[Columns], taken: int) -> int:
        """One rules pass over the points taken; queues their anomaly parts. Returns the points
        it completed (all of them when nothing is left for the anomaly stage)."""
        if not batch:
            return 0
        _events, work = self.engine.process_rules(_merge(batch))
        if work is None:
            return taken
        parts = work.split(self.anomaly_part_points)
        with self._cond:
            for k, part in enumerate(parts):
                self._parts.append((part, taken if k == len(parts) - 1 else 0))
        return 0

    def _next_part(self) -> int:
        """Score the oldest anomaly part; commit what is scored once its pass is complete (one
        write per pass, as without parts). Returns the points committed."""
        part, completes = self._parts[0]
        try:
            scores, actions = self.engine.score_anomalies(part)
            self._scores += scores
            self._actions += actions
        except Exception:  # noqa: BLE001 - this part goes unscored; detection goes on
            log.exception("detection_failed")
        with self._cond:
            self._parts.popleft()
            self._scored_points += completes
            flush = bool(completes or not self._parts)
        if not flush:
            return 0
        scores, actions, done = self._scores, self._actions, self._scored_points
        self._scores, self._actions, self._scored_points = [], [], 0
        try:
            self.engine.store_anomalies(scores, actions)
        except Exception:  # noqa: BLE001 - the scores are lost, the points still count as done
            log.exception("detection_failed")
        return done


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
