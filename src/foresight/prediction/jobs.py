"""Training jobs in the background of an API process: one thread, one job at a time.

``POST /api/v1/models/train`` records a queued job in the request's transaction and hands its id
to :meth:`TrainingRunner.submit` only after that transaction committed (a background task runs
after the response): the job's own transactions would otherwise wait for the request's (on
SQLite, for its write lock) and the job would not yet be visible on PostgreSQL. Jobs run one after
another (training uses every core it is given); while one of a tenant's jobs is queued or running
here, another request for the tenant is refused (409) instead of queuing duplicate work.

On shutdown (:meth:`TrainingRunner.stop`), jobs that have not started are marked failed; the
running one stops at its next progress step, before any model version is recorded, its job
failed with ``service.JOB_INTERRUPTED`` (as the schedules' trainings do). Past ``grace_s`` (a long
fit between two steps) the job is marked interrupted at once and the daemon thread abandoned. A
job whose process died stays ``queued`` or ``running`` in the table: nothing else would run it.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque

from sqlalchemy.exc import SQLAlchemyError

from foresight.kit.db import Database
from foresight.kit.logging import get_logger
from foresight.prediction import service
from foresight.prediction.schedule import fail_unfinished_job, interrupt_job

log = get_logger("foresight.prediction.jobs")
NOT_STARTED = "the server stopped before the job started"


class TrainingRunner:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._cond = threading.Condition()
        self._queue: deque[tuple[uuid.UUID, uuid.UUID]] = deque()  # (tenant id, job id)
        self._running: tuple[uuid.UUID, uuid.UUID] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    def active_job(self, tenant_id: uuid.UUID) -> uuid.UUID | None:
        """The tenant's job queued or running in this process, if any."""
        with self._cond:
            for tid, job_id in ([self._running] if self._running else []) + list(self._queue):
                if tid == tenant_id:
                    return job_id
        return None

    def submit(self, tenant_id: uuid.UUID, job_id: uuid.UUID) -> None:
        """Queue a committed job."""
        with self._cond:
            if self._stopping:
                log.warning("training job not started: shutting down", job_id=str(job_id))
                return
            self._queue.append((tenant_id, job_id))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="training-jobs", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job is queued or running (True), or ``timeout`` seconds passed."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._running is None and not self._queue, timeout=timeout
            )

    def stop(self, grace_s: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            left = [job_id for _, job_id in self._queue]
            self._queue.clear()
            self._cond.notify_all()
            thread, running = self._thread, self._running
        try:
            for job_id in left:
                fail_unfinished_job(self._db, job_id, error=NOT_STARTED, stage="failed")
            if thread is not None:
                thread.join(grace_s)
                if thread.is_alive() and running is not None:
                    interrupt_job(self._db, running[1])
                    log.warning("training_job_abandoned", job_id=str(running[1]))
        except SQLAlchemyError:  # shutting down without a database: the jobs stay as they are
            log.exception("training_jobs_not_marked", job_ids=[str(j) for j in left])

    def _should_stop(self) -> bool:
        return self._stopping

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or bool(self._queue))
                if self._stopping:
                    return
                self._running = self._queue.popleft()
                job_id = self._running[1]
            try:
                # Records its own success or failure; stops at a step once we are stopping.
                service.run_job(self._db, job_id, should_stop=self._should_stop)
            except Exception:  # e.g. the database went away while recording
                log.exception("training_job_not_recorded", job_id=str(job_id))
            finally:
                with self._cond:
                    self._running = None
                    self._cond.notify_all()
