"""Hand-off between the doors and persistence.

``IngestBus`` is what a door needs: submit a batch, get its outcome once it is durable. The
embedded implementation is a bounded in-process queue drained by one writer thread that commits
several waiting batches together (group commit: one transaction, one fsync); a NATS JetStream
implementation serves the scale-out shape with the same Pipeline on the consuming side.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.exc import DBAPIError, OperationalError

from foresight.ingest.batch import Batch
from foresight.ingest.pipeline import Outcome, Pipeline
from foresight.kit.db import Database
from foresight.kit.logging import get_logger

log = get_logger("foresight.ingest")


class Saturated(Exception):
    """The pipeline is full: the caller should retry after ``retry_after_s``."""

    def __init__(self, retry_after_s: int, detail: str) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s
        self.detail = detail


class Unavailable(Exception):
    """Persistence failed (e.g. the database is down); nothing of the batch was stored."""


class IngestBus(Protocol):
    """What a door needs: submit a batch, get its outcome once it is durable."""

    async def submit(self, batch: Batch) -> Outcome: ...


def _settle(
    future: Future[Outcome], outcome: Outcome | None = None, exception: Exception | None = None
) -> None:
    """Answer a caller, unless it already gave up (a cancelled request cancels its future)."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            assert outcome is not None
            future.set_result(outcome)
    except InvalidStateError:
        pass  # raising here would kill the writer thread, and every later request would hang


@dataclass
class _Job:
    batch: Batch
    future: Future[Outcome]


class InProcessBus:
    """Bounded queue + one writer thread with group commit (the embedded default)."""

    def __init__(
        self,
        db: Database,
        pipeline: Pipeline | None = None,
        *,
        max_pending_points: int = 1_000_000,
        max_group_points: int = 50_000,
        on_persisted: Callable[[list[Batch]], None] | None = None,
    ) -> None:
        self.db = db
        self.pipeline = pipeline or Pipeline()
        self.max_pending_points = max_pending_points
        self.max_group_points = max_group_points
        self.on_persisted = on_persisted
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._pending_points = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # --- producer side (any thread or event loop) ---------------------------------------------

    def submit_nowait(self, batch: Batch) -> Future[Outcome]:
        with self._lock:
            if self._thread is None:
                raise Unavailable("the ingest writer is not running")
            size = max(len(batch), 1)
            if self._pending_points + size > self.max_pending_points and self._pending_points:
                raise Saturated(
                    1,
                    f"ingestion is saturated ({self._pending_points} points waiting); "
                    "retry shortly",
                )
            self._pending_points += size
        job = _Job(batch, Future())
        self._queue.put(job)
        return job.future

    async def submit(self, batch: Batch) -> Outcome:
        return await asyncio.wrap_future(self.submit_nowait(batch))

    def submit_sync(self, batch: Batch, timeout: float | None = None) -> Outcome:
        return self.submit_nowait(batch).result(timeout)

    @property
    def pending_points(self) -> int:
        return self._pending_points

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ingest-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._queue.put(None)  # finish what is queued, then stop
        thread.join()
        with self._lock:
            self._thread = None

    # --- writer thread --------------------------------------------------------------------------

    def _take_group(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, points, stop = [first], len(first.batch), False
        while points < self.max_group_points:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                stop = True
                break
            jobs.append(job)
            points += len(job.batch)
        return jobs, stop

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = self._take_group(first)
            self._persist(jobs)
            if stop:
                return

    def _release(self, jobs: list[_Job]) -> None:
        # Before the callers hear back: a caller answered 2xx may send again at once and must
        # not find its own, already committed, points still counted as pending.
        with self._lock:
            self._pending_points -= sum(max(len(j.batch), 1) for j in jobs)

    def _persist(self, jobs: list[_Job]) -> None:
        try:
            outcomes = self._commit([j.batch for j in jobs])
        except Exception as exc:  # noqa: BLE001 - every failure is reported to its caller
            if len(jobs) > 1 and not isinstance(exc, OperationalError):
                # One bad batch must not fail the others: retry each on its own.
                for job in jobs:
                    self._persist([job])
                return
            log.error("ingest_persist_failed", batches=len(jobs), error=str(exc).splitlines()[0])
            failure = Unavailable(f"could not store the batch: {type(exc).__name__}")
            self._release(jobs)
            for job in jobs:
                _settle(job.future, exception=failure)
            return
        self._release(jobs)
        for job, outcome in zip(jobs, outcomes, strict=True):
            _settle(job.future, outcome)
        if self.on_persisted is not None:
            try:
                self.on_persisted([j.batch for j in jobs])
            except Exception:  # noqa: BLE001 - observers must not break ingestion
                log.exception("ingest_observer_failed")

    def _commit(self, batches: list[Batch]) -> list[Outcome]:
        for attempt in range(3):
            try:
                with self.db.transaction() as session:
                    persisted = self.pipeline.persist(session, batches)
                self.pipeline.remember(persisted)
                return persisted.outcomes
            except DBAPIError as exc:
                # A deadlock or serialisation failure between writers is worth one more go.
                code = getattr(getattr(exc, "orig", None), "sqlstate", None)
                if code not in ("40P01", "40001") or attempt == 2:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")
