"""Schedules for the predictive engine: score every asset, retrain every tenant.

A :class:`Scheduler` runs two jobs, each in a thread of its own (the API process starts it in
its lifespan; ``foresight schedule run`` in the foreground):

- **scoring**, every ``scoring_interval_s`` (default hourly): every tenant's assets are scored
  and the predictions stored (``service.predict``). An asset is due when its latest prediction
  is older than the interval (never scored: at once); when a tenant has a due asset, each of its
  assets whose prediction is older than half the interval is scored with it, so assets added at
  different times fall into step instead of each costing a run of its own. Predictions made on
  demand count, so nothing is scored twice.
- **retraining**, every ``retrain_interval_s`` (default weekly), for every tenant with failure
  records: a ``training_jobs`` row is recorded and run (``service.create_job`` + ``run_job``,
  exactly as a training requested over HTTP, champion/challenger rule included). A tenant is due
  when its newest model version or training job is older than the interval; a failed job holds
  the next attempt back for a day at most (``RETRAIN_RETRY_S``), an interrupted one not at all.

**When it was last done comes from the database**, not from memory: a restart does not redo a
job, and a process that was down for several intervals catches up once, not once per interval
missed. Each thread checks what is due every ``check_interval_s`` (60 s, or the interval if it
is shorter).

**One runner at a time per job.** Each round holds a lock: a PostgreSQL advisory lock (so with
``serve --workers N``, several nodes, or ``foresight schedule run`` beside them, one process
works and the others skip the round), or on SQLite a process-local lock plus an exclusive
``flock`` on ``<database>.<job>.lock`` beside the database file (SQLite has one host). A
retraining job is also claimed in a write transaction that re-checks that the tenant is still
due, so a tenant is never trained twice for the same interval.

**Failures stay with their tenant.** A tenant whose scoring or training fails is logged
(``schedule_scoring_failed`` / ``schedule_retraining_failed``) and counted, a failed training is
recorded on its job row, and the round goes on with the other tenants. A tenant whose scoring
failed is tried again after ``SCORING_RETRY_S`` (at most the interval) by this process.

**Stopping** (:meth:`Scheduler.stop`) lets the round in hand end and waits up to
``stop_grace_s`` (5 s) for it: scoring finishes the tenant in hand; a training run stops at its
next progress step, before any model version is recorded, and its job fails with
``service.JOB_INTERRUPTED``. If the thread is still busy after the grace (a long fit between two
progress steps), the job is marked interrupted at once and the thread is abandoned (it is a
daemon; it would stop at its next step, and the process exiting rolls back whatever it had not
committed). An interrupted job does not count as done: the tenant is retrained at the next check
after a restart.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import func, or_, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from foresight.kit.db import Database
from foresight.kit.logging import get_logger
from foresight.kit.time import as_utc, utcnow
from foresight.models import (
    Asset,
    JobStatus,
    MaintenanceKind,
    MaintenanceRecord,
    ModelVersion,
    Prediction,
    Tenant,
    TrainingJob,
)
from foresight.prediction import service

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the process-local lock only
    fcntl = None  # type: ignore[assignment]

log = get_logger(__name__)

Job = Literal["scoring", "retraining"]
SCORING: Job = "scoring"
RETRAINING: Job = "retraining"
JOBS: tuple[Job, ...] = (SCORING, RETRAINING)

CHECK_INTERVAL_S = 60.0
STOP_GRACE_S = 5.0
#: A tenant whose scoring failed is tried again after this long (at most the interval).
SCORING_RETRY_S = 900.0
#: A failed training job holds the tenant's next attempt back this long (at most the interval).
RETRAIN_RETRY_S = 86_400.0
REQUESTED_BY = "schedule"
# pg_try_advisory_lock keys, one per job ("FPSC", "FPRT"; retention uses "FRST").
_LOCK_KEYS: dict[Job, int] = {SCORING: 0x46505343, RETRAINING: 0x46505254}
_LOCAL_LOCKS: dict[Job, threading.Lock] = {job: threading.Lock() for job in JOBS}


Clock = Callable[[], datetime]


# --- outcomes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantOutcome:
    """What one tenant's run came to."""

    tenant_id: uuid.UUID
    tenant: str
    ok: bool
    detail: str  # what was done, or the error
    assets_scored: int = 0
    job_id: uuid.UUID | None = None
    interrupted: bool = False

    @property
    def outcome(self) -> str:
        return "interrupted" if self.interrupted else "ok" if self.ok else "failed"


@dataclass
class Round:
    """One check of one job: the tenants that were due and what became of them."""

    job: Job
    outcomes: list[TenantOutcome] = field(default_factory=list)
    skipped: str | None = None  # why nothing was tried (another process holds the lock)
    stopped: bool = False  # stop() came before every due tenant was done
    duration_s: float = 0.0

    @property
    def failed(self) -> list[TenantOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def assets_scored(self) -> int:
        return sum(o.assets_scored for o in self.outcomes)

    def lines(self) -> list[str]:
        """For the command line: one line for the round, one per tenant."""
        if self.skipped:
            return [f"{self.job}: skipped ({self.skipped})"]
        if not self.outcomes:
            return [f"{self.job}: nothing due"]
        done = len(self.outcomes) - len(self.failed)
        head = f"{self.job}: {done} tenant(s) done, {len(self.failed)} failed"
        if self.job == SCORING:
            head += f", {self.assets_scored} asset(s) scored"
        if self.stopped:
            head += " (stopped early)"
        return [head] + [f"  {o.tenant}: {o.outcome}: {o.detail}" for o in self.outcomes]


class ScheduleMetrics:
    """Prometheus metrics of the schedules (``/metrics`` of the process that runs them)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.last_run = Gauge(
            "foresight_schedule_last_run_timestamp_seconds",
            "When the job's last round that had work ended (Unix time)",
            ["job"],
            registry=registry,
        )
        self.duration = Gauge(
            "foresight_schedule_last_run_duration_seconds",
            "How long the job's last round that had work took",
            ["job"],
            registry=registry,
        )
        self.tenant_runs = Counter(
            "foresight_schedule_tenant_runs_total",
            "Tenant runs of a job, by outcome (ok, failed, interrupted)",
            ["job", "outcome"],
            registry=registry,
        )
        self.assets_scored = Counter(
            "foresight_schedule_assets_scored_total",
            "Assets scored (and predictions stored) by the scoring schedule",
            registry=registry,
        )

    def record(self, round_: Round, ended_at: datetime) -> None:
        for o in round_.outcomes:
            self.tenant_runs.labels(round_.job, o.outcome).inc()
        if round_.outcomes:
            self.last_run.labels(round_.job).set(ended_at.timestamp())
            self.duration.labels(round_.job).set(round_.duration_s)
            self.assets_scored.inc(round_.assets_scored)


# --- what is due (queries) ------------------------------------------------------------------


@dataclass(frozen=True)
class ScoringDue:
    tenant_id: uuid.UUID
    tenant: str
    asset_ids: list[uuid.UUID]  # the tenant's assets to score now (tag order)


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def scoring_due(
    session: Session,
    now: datetime,
    interval_s: float,
    *,
    held_back: Mapping[uuid.UUID, datetime] | None = None,
) -> list[ScoringDue]:
    """Tenants with an asset whose latest prediction is older than the interval (or missing),
    each with its assets older than half the interval; ``held_back``: tenant → not before."""
    latest = (
        select(func.max(Prediction.computed_at))
        .where(Prediction.tenant_id == Asset.tenant_id, Prediction.asset_id == Asset.id)
        .correlate(Asset)
        .scalar_subquery()
    )
    rows = session.execute(
        select(Asset.tenant_id, Tenant.name, Asset.id, latest)
        .join(Tenant, Tenant.id == Asset.tenant_id)
        .order_by(Tenant.name, Asset.tag)
    ).all()
    due_before = now - timedelta(seconds=interval_s)
    along_before = now - timedelta(seconds=interval_s / 2)
    by_tenant: dict[uuid.UUID, tuple[str, list[tuple[uuid.UUID, datetime | None]]]] = {}
    for tenant_id, name, asset_id, computed_at in rows:
        by_tenant.setdefault(tenant_id, (name, []))[1].append((asset_id, _utc(computed_at)))
    out = []
    for tenant_id, (name, assets) in by_tenant.items():
        not_before = (held_back or {}).get(tenant_id)
        if not_before is not None and now < not_before:
            continue
        if any(at is None or at <= due_before for _, at in assets):
            wanted = [a for a, at in assets if at is None or at <= along_before]
            out.append(ScoringDue(tenant_id, name, wanted))
    return out


@dataclass(frozen=True)
class RetrainingDue:
    tenant_id: uuid.UUID
    tenant: str
    last_at: datetime | None  # the newest model version or counted job (None: never trained)


def retraining_due(
    session: Session, now: datetime, interval_s: float, *, tenant_id: uuid.UUID | None = None
) -> list[RetrainingDue]:
    """Tenants with failure records whose newest model version or training job (queued,
    running or succeeded) is older than the interval, and whose newest failed job (not an
    interrupted one) is older than ``min(interval, RETRAIN_RETRY_S)``."""
    tenants = tenants_with_failures(session)
    if tenant_id is not None:
        tenants = [t for t in tenants if t[0] == tenant_id]
    if not tenants:
        return []
    ids = [t[0] for t in tenants]
    versions = dict(
        session.execute(
            select(ModelVersion.tenant_id, func.max(ModelVersion.created_at))
            .where(ModelVersion.tenant_id.in_(ids))
            .group_by(ModelVersion.tenant_id)
        ).all()
    )
    active = dict(
        session.execute(
            select(TrainingJob.tenant_id, func.max(TrainingJob.created_at))
            .where(TrainingJob.tenant_id.in_(ids), TrainingJob.status != JobStatus.failed)
            .group_by(TrainingJob.tenant_id)
        ).all()
    )
    failed = dict(
        session.execute(
            select(TrainingJob.tenant_id, func.max(TrainingJob.created_at))
            .where(
                TrainingJob.tenant_id.in_(ids),
                TrainingJob.status == JobStatus.failed,
                or_(TrainingJob.error.is_(None), TrainingJob.error != service.JOB_INTERRUPTED),
            )
            .group_by(TrainingJob.tenant_id)
        ).all()
    )
    full = timedelta(seconds=interval_s)
    retry = timedelta(seconds=min(interval_s, RETRAIN_RETRY_S))
    out = []
    for tid, name in tenants:
        done = [t for t in (_utc(versions.get(tid)), _utc(active.get(tid))) if t is not None]
        last_done = max(done) if done else None
        last_failed = _utc(failed.get(tid))
        if last_done is not None and now < last_done + full:
            continue
        if last_failed is not None and now < last_failed + retry:
            continue
        last = max([t for t in (last_done, last_failed) if t is not None], default=None)
        out.append(RetrainingDue(tid, name, last))
    return out


def tenants_with_assets(session: Session) -> list[tuple[uuid.UUID, str]]:
    """(id, name) of every tenant that has an asset, by name."""
    has_asset = select(Asset.id).where(Asset.tenant_id == Tenant.id).exists()
    query = select(Tenant.id, Tenant.name).where(has_asset).order_by(Tenant.name)
    return [(tenant_id, name) for tenant_id, name in session.execute(query)]


def tenants_with_failures(session: Session) -> list[tuple[uuid.UUID, str]]:
    """(id, name) of every tenant with a ``failure`` maintenance record, by name."""
    has_failure = (
        select(MaintenanceRecord.id)
        .where(
            MaintenanceRecord.tenant_id == Tenant.id,
            MaintenanceRecord.kind == MaintenanceKind.failure,
        )
        .exists()
    )
    query = select(Tenant.id, Tenant.name).where(has_failure).order_by(Tenant.name)
    return [(tenant_id, name) for tenant_id, name in session.execute(query)]


def interrupt_job(db: Database, job_id: uuid.UUID) -> bool:
    """Fail a queued or running job as interrupted; whether it was still unfinished."""
    return fail_unfinished_job(db, job_id, error=service.JOB_INTERRUPTED, stage="interrupted")


def fail_unfinished_job(db: Database, job_id: uuid.UUID, *, error: str, stage: str) -> bool:
    """Fail a queued or running job (one conditional UPDATE, so a job that has just finished
    keeps its result); whether it was still unfinished."""
    with db.transaction() as session:
        result = session.execute(
            update(TrainingJob)
            .where(
                TrainingJob.id == job_id,
                TrainingJob.status.in_([JobStatus.queued, JobStatus.running]),
            )
            .values(
                status=JobStatus.failed,
                stage=stage,
                error=error,
                finished_at=utcnow(),
                updated_at=utcnow(),
            )
        )
        return bool(getattr(result, "rowcount", 0))


# --- one runner at a time ---------------------------------------------------------------------


def lock_path(db: Database, job: Job) -> Path | None:
    """SQLite: the file whose flock serialises the job across processes (None: in memory)."""
    name = db.engine.url.database
    if db.engine.dialect.name != "sqlite" or not name or name == ":memory:":
        return None
    path = Path(name)
    return path.with_name(f"{path.name}.{job}.lock")


@contextmanager
def exclusive(db: Database, job: Job) -> Iterator[bool]:
    """Whether this process may run ``job`` now (held until the block ends): never waits."""
    local = _LOCAL_LOCKS[job]
    if not local.acquire(blocking=False):
        yield False
        return
    try:
        if db.engine.dialect.name == "postgresql":
            with _advisory_lock(db, _LOCK_KEYS[job]) as held:
                yield held
        else:
            with _file_lock(lock_path(db, job)) as held:
                yield held
    finally:
        local.release()


@contextmanager
def _advisory_lock(db: Database, key: int) -> Iterator[bool]:
    with db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        try:
            yield held
        finally:
            if held:
                # A lost connection has released it already.
                with suppress(SQLAlchemyError):
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})


@contextmanager
def _file_lock(path: Path | None) -> Iterator[bool]:
    if path is None or fcntl is None:
        yield True
        return
    with path.open("a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held = False
        else:
            held = True
        try:
            yield held
        finally:
            if held:
                fcntl.flock(handle, fcntl.LOCK_UN)


# --- the scheduler ----------------------------------------------------------------------------


class Scheduler:
    """Scoring and retraining on their intervals (0 turns a job off). ``clock`` says what time
    it is for deciding what is due (tests move it); ``train_kwargs`` go to ``service.train``."""

    def __init__(
        self,
        db: Database,
        *,
        scoring_interval_s: float,
        retrain_interval_s: float,
        clock: Clock = utcnow,
        check_interval_s: float = CHECK_INTERVAL_S,
        stop_grace_s: float = STOP_GRACE_S,
        registry: CollectorRegistry | None = None,
        train_kwargs: Mapping[str, Any] | None = None,
        publish: Callable[[uuid.UUID, uuid.UUID, dict[str, Any]], None] | None = None,
    ) -> None:
        """``publish(tenant_id, asset_id, event)`` receives the live ``health`` event of each
        asset whose score a scoring round changed (after the predictions committed)."""
        if scoring_interval_s < 0 or retrain_interval_s < 0:
            raise ValueError("intervals must be at least 0 (0: off)")
        self.db = db
        self.intervals: dict[Job, float] = {
            SCORING: float(scoring_interval_s),
            RETRAINING: float(retrain_interval_s),
        }
        self.clock = clock
        self.check_interval_s = check_interval_s
        self.stop_grace_s = stop_grace_s
        self.metrics = ScheduleMetrics(registry)
        self.train_kwargs = dict(train_kwargs or {})
        self.publish = publish
        self.last_rounds: dict[Job, Round] = {}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._job_in_hand: uuid.UUID | None = None
        # Tenants whose scoring failed here: not tried again before the time given.
        self._scoring_held_back: dict[uuid.UUID, datetime] = {}

    def enabled(self, job: Job) -> bool:
        return self.intervals[job] > 0

    # --- running in threads -----------------------------------------------------------------

    def start(self, jobs: Sequence[Job] = JOBS) -> None:
        """One daemon thread per enabled job; each checks at once, then every check interval."""
        for job in jobs:
            if self.enabled(job):
                thread = threading.Thread(
                    target=self._loop, args=(job,), name=f"schedule-{job}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        if self._threads:
            log.info(
                "schedule_started",
                jobs=[t.name.removeprefix("schedule-") for t in self._threads],
                scoring_interval_s=self.intervals[SCORING],
                retrain_interval_s=self.intervals[RETRAINING],
            )

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        """End promptly: rounds stop after the tenant in hand (a training at its next progress
        step); past ``stop_grace_s`` a busy thread is abandoned and its job marked interrupted."""
        self._stopping.set()
        deadline = time.monotonic() + self.stop_grace_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        busy = [t.name for t in self._threads if t.is_alive()]
        job_id = self._job_in_hand
        if busy and job_id is not None:
            try:
                interrupt_job(self.db, job_id)
            except SQLAlchemyError:
                log.exception("schedule_interrupt_failed", job_id=str(job_id))
        if self._threads:
            log.info("schedule_stopped", abandoned=busy, interrupted_job=str(job_id or ""))

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for the threads to end (after ``stop``); whether they all did."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self.running

    def _loop(self, job: Job) -> None:
        pause = min(self.check_interval_s, self.intervals[job])
        while not self._stopping.is_set():
            try:
                self.run(job)
            except Exception:  # noqa: BLE001 - logged; the next check tries again
                log.exception("schedule_round_failed", job=job)
            self._stopping.wait(pause)

    # --- one round ----------------------------------------------------------------------------

    def run_due(self, jobs: Sequence[Job] = JOBS) -> list[Round]:
        """One round of each enabled job in ``jobs``, here and now (``schedule run --once``)."""
        return [self.run(job) for job in jobs if self.enabled(job)]

    def run(self, job: Job) -> Round:
        started = time.monotonic()
        round_ = Round(job)
        with exclusive(self.db, job) as held:
            if not held:
                round_.skipped = "another process is running it"
                log.debug("schedule_skipped", job=job, reason=round_.skipped)
            elif job == SCORING:
                self._score(round_)
            else:
                self._retrain(round_)
        round_.duration_s = time.monotonic() - started
        self.last_rounds[job] = round_
        self.metrics.record(round_, self.clock())
        if round_.outcomes:
            log.info(
                "schedule_round_done",
                job=job,
                tenants=len(round_.outcomes),
                failed=len(round_.failed),
                assets_scored=round_.assets_scored,
                stopped=round_.stopped,
                seconds=round(round_.duration_s, 3),
            )
        return round_

    def _score(self, round_: Round) -> None:
        now = self.clock()
        interval = self.intervals[SCORING]
        with self.db.transaction(write=False) as session:
            due = scoring_due(session, now, interval, held_back=self._scoring_held_back)
        for item in due:
            if self._stopping.is_set():
                round_.stopped = True
                return
            started = time.monotonic()
            try:
                rows = service.predict(self.db, item.tenant_id, item.asset_ids)
            except Exception as exc:  # noqa: BLE001 - one tenant's failure stops no other
                log.exception("schedule_scoring_failed", tenant=item.tenant)
                self._scoring_held_back[item.tenant_id] = now + timedelta(
                    seconds=min(interval, SCORING_RETRY_S)
                )
                detail = str(exc) or type(exc).__name__
                round_.outcomes.append(TenantOutcome(item.tenant_id, item.tenant, False, detail))
                continue
            self._scoring_held_back.pop(item.tenant_id, None)
            if self.publish is not None:
                for asset_id, event in service.health_events(rows):
                    self.publish(item.tenant_id, asset_id, event)
            fallback = sum(r.fallback for r in rows)
            log.info(
                "schedule_scoring_done",
                tenant=item.tenant,
                assets=len(rows),
                fallback=fallback,
                seconds=round(time.monotonic() - started, 3),
            )
            detail = f"{len(rows)} asset(s) scored ({fallback} by the rule-based fallback)"
            round_.outcomes.append(
                TenantOutcome(item.tenant_id, item.tenant, True, detail, assets_scored=len(rows))
            )

    def _retrain(self, round_: Round) -> None:
        now = self.clock()
        interval = self.intervals[RETRAINING]
        with self.db.transaction(write=False) as session:
            due = retraining_due(session, now, interval)
        for item in due:
            if self._stopping.is_set():
                round_.stopped = True
                return
            job_id = self._claim(item.tenant_id, now, interval)
            if job_id is None:  # trained meanwhile (by hand, or over HTTP)
                continue
            round_.outcomes.append(self._train(item, job_id))

    def _claim(self, tenant_id: uuid.UUID, now: datetime, interval: float) -> uuid.UUID | None:
        # Re-checked in the write transaction that records the job: on SQLite writers queue,
        # so of two processes only the first finds the tenant still due.
        with self.db.transaction() as session:
            if not retraining_due(session, now, interval, tenant_id=tenant_id):
                return None
            job = service.create_job(
                session, tenant_id, requested_by=REQUESTED_BY, params={"trigger": "schedule"}
            )
            return job.id

    def _train(self, item: RetrainingDue, job_id: uuid.UUID) -> TenantOutcome:
        log.info("schedule_retraining_started", tenant=item.tenant, job_id=str(job_id))
        started = time.monotonic()
        self._job_in_hand = job_id
        try:
            service.run_job(self.db, job_id, should_stop=self._stopping.is_set, **self.train_kwargs)
        except Exception as exc:  # noqa: BLE001 - run_job records training errors; not these
            log.exception("schedule_retraining_failed", tenant=item.tenant, job_id=str(job_id))
            detail = str(exc) or type(exc).__name__
            with suppress(SQLAlchemyError):
                fail_unfinished_job(self.db, job_id, error=detail, stage="failed")
            return TenantOutcome(item.tenant_id, item.tenant, False, detail, job_id=job_id)
        finally:
            self._job_in_hand = None
        with self.db.transaction(write=False) as session:
            job = session.get(TrainingJob, job_id)
            version = (
                session.get(ModelVersion, job.model_version_id)
                if job is not None and job.model_version_id is not None
                else None
            )
            status = None if job is None else job.status
            error = None if job is None else job.error
            stage = "" if job is None else job.stage
        seconds = round(time.monotonic() - started, 3)
        if status is JobStatus.succeeded and version is not None:
            log.info(
                "schedule_retraining_done",
                tenant=item.tenant,
                job_id=str(job_id),
                version=version.version,
                status=version.status.value,
                seconds=seconds,
            )
            detail = f"model version {version.version}: {version.status.value} ({stage})"
            return TenantOutcome(item.tenant_id, item.tenant, True, detail, job_id=job_id)
        interrupted = error == service.JOB_INTERRUPTED
        log.warning(
            "schedule_retraining_failed",
            tenant=item.tenant,
            job_id=str(job_id),
            error=error,
            interrupted=interrupted,
            seconds=seconds,
        )
        return TenantOutcome(
            item.tenant_id,
            item.tenant,
            False,
            error or "the job did not finish",
            job_id=job_id,
            interrupted=interrupted,
        )
