"""Retention: per-tenant age limits on raw points and rollups, and the purge of orphaned series.

Each tenant's settings say how many days to keep (``retention_raw_days`` 90, ``retention_5m_days``
30, ``retention_1h_days`` 90, ``retention_1d_days`` null = forever; see
``foresight.tenants.schemas.Retention``). ``enforce`` applies them:

- PostgreSQL partitions of ``readings`` hold every tenant's points, so a partition is dropped
  only when its whole range is older than the cutoff of every tenant that has sensors (the most
  lenient raw retention wins). Dropping is instant and returns the space at once.
- Everything else is deleted in chunks of at most ``chunk_rows`` rows, one short transaction
  each, by series-id set and time range (on PostgreSQL partition by partition, by ``ctid``), so
  no lock is held for long and ingestion interleaves with the job.
- Points, rollups and the latest value of series whose sensor was deleted (orphaned series) are
  purged whatever their age.

Other processes cache the partitions they know (``store._known_partitions``) and would still
route points into a dropped partition's range. Before the first drop, a DEFAULT partition
(``foresight_retention.readings_default``, in a schema of its own so that Alembic autogenerate
does not take it for a stray table) is created to catch such points; they are expired by
construction and deleted by the next run. A process that does not know the range creates its
partition again as usual; if the default partition still holds points of that range (written by
a stale process) that creation fails until the next run has deleted them, or — if they are no
longer expired because a retention was lengthened — moved them into a recreated partition.
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, text
from sqlalchemy.exc import DBAPIError

from foresight.kit.db import Database
from foresight.kit.logging import get_logger
from foresight.kit.time import as_utc, utcnow
from foresight.models import Sensor, SeriesLatest
from foresight.models.timeseries import RESOLUTIONS_S
from foresight.tenants import service as tenants_service
from foresight.tenants.schemas import Retention
from foresight.timeseries.store import PARTITION_SPAN_MS, forget_partition

log = get_logger(__name__)

CHUNK_ROWS = 50_000
DAY_MS = 86_400_000
ORPHANED = "(orphaned series)"
RESOLUTION_NAMES = {300: "5m", 3600: "1h", 86400: "1d"}

# Series ids per statement (well under SQLite's limit on bound parameters).
_IDS_PER_STATEMENT = 500
# PostgreSQL: a drop or re-attach waits at most this long for its lock, then retries next run,
# so writers never queue for long behind it.
_LOCK_TIMEOUT = "2s"
# One retention run at a time per PostgreSQL database (pg_try_advisory_lock key).
_ADVISORY_LOCK_KEY = 0x46525354  # "FRST"
EXPIRED_SCHEMA = "foresight_retention"
EXPIRED_PARTITION = f"{EXPIRED_SCHEMA}.readings_default"
_PARTITION_NAME = re.compile(r"^readings_p(\d+)$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Removal:
    """Rows deleted (or, in a dry run, that would be) from one table for one scope."""

    table: str
    scope: str  # a tenant name, or ORPHANED
    rows: int = 0
    chunks: int = 0
    resolution_s: int | None = None
    before_ms: int | None = None

    @property
    def what(self) -> str:
        if self.resolution_s is None:
            return self.table
        return f"{self.table} {RESOLUTION_NAMES.get(self.resolution_s, self.resolution_s)}"


@dataclass
class Report:
    now_ms: int
    dry_run: bool = False
    partitions_dropped: list[str] = field(default_factory=list)
    # Partitions recreated from points that reached the default partition and are still kept.
    partitions_restored: list[str] = field(default_factory=list)
    removals: list[Removal] = field(default_factory=list)
    skipped: str | None = None
    stopped: bool = False

    def rows(self, table: str, scope: str | None = None, resolution_s: int | None = None) -> int:
        return sum(r.rows for r in self._select(table, scope, resolution_s))

    def chunks(self, table: str, scope: str | None = None, resolution_s: int | None = None) -> int:
        return sum(r.chunks for r in self._select(table, scope, resolution_s))

    def _select(self, table: str, scope: str | None, resolution_s: int | None) -> list[Removal]:
        return [
            r
            for r in self.removals
            if r.table == table
            and (scope is None or r.scope == scope)
            and (resolution_s is None or r.resolution_s == resolution_s)
        ]

    @property
    def total_rows(self) -> int:
        return sum(r.rows for r in self.removals)

    def lines(self) -> list[str]:
        """What happened, one line per partition and per (table, scope) that lost rows."""
        verb = "would drop" if self.dry_run else "dropped"
        delete = "would delete" if self.dry_run else "deleted"
        out = [f"retention at {_iso(self.now_ms)}" + (" (dry run: nothing changed)" * self.dry_run)]
        if self.skipped:
            out.append(f"skipped: {self.skipped}")
        for name in self.partitions_dropped:
            out.append(f"{verb} partition {name}{_partition_range(name)}")
        for name in self.partitions_restored:
            out.append(f"restored partition {name} (points whose retention was lengthened)")
        for r in self.removals:
            if r.rows:
                scope = r.scope if r.scope == ORPHANED else f"tenant {r.scope!r}"
                before = f" older than {_iso(r.before_ms)}" if r.before_ms is not None else ""
                out.append(
                    f"{r.what}: {delete} {r.rows} row(s) in {r.chunks} chunk(s), {scope}{before}"
                )
        out.append(
            f"total: {self.total_rows} row(s) {delete}, "
            f"{len(self.partitions_dropped)} partition(s) {verb}"
            + (" (stopped early)" if self.stopped else "")
        )
        return out


class _Stopped(Exception):
    pass


@dataclass(frozen=True)
class _Scope:
    name: str
    retention: Retention
    series_ids: list[int]


@dataclass(frozen=True)
class _Partition:
    table: str  # as written in SQL
    index: int | None  # None for the default partition (and any partition not made by the store)

    @property
    def low_ms(self) -> int | None:
        return None if self.index is None else self.index * PARTITION_SPAN_MS

    @property
    def high_ms(self) -> int | None:
        return None if self.index is None else (self.index + 1) * PARTITION_SPAN_MS


def enforce(
    db: Database,
    now: datetime | None = None,
    *,
    tenant: str | None = None,
    dry_run: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    should_stop: Callable[[], bool] = lambda: False,
) -> Report:
    """Apply every tenant's retention (or only ``tenant``'s: then no partition is dropped and
    orphaned series are left for a full run). ``dry_run`` counts instead of deleting."""
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    now_ms = (as_utc(now or utcnow()) - _EPOCH) // timedelta(milliseconds=1)
    report = Report(now_ms=now_ms, dry_run=dry_run)
    with _one_run_at_a_time(db, dry_run) as acquired:
        if not acquired:
            report.skipped = "another retention run is in progress"
            return report
        try:
            _enforce(db, report, tenant=tenant, chunk_rows=chunk_rows, should_stop=should_stop)
        except _Stopped:
            report.stopped = True
    _log(report)
    return report


def _enforce(
    db: Database,
    report: Report,
    *,
    tenant: str | None,
    chunk_rows: int,
    should_stop: Callable[[], bool],
) -> None:
    postgres = db.engine.dialect.name == "postgresql"
    scopes = _scopes(db, tenant)
    purge = _Purger(db, report, chunk_rows, should_stop)
    if postgres and tenant is None:
        _drop_partitions(db, scopes, report)
        if report.dry_run:  # counted as dropped, not again as deleted
            purge.skip_tables.update(report.partitions_dropped)
    for scope in scopes:
        days = scope.retention.retention_raw_days
        if days is not None:
            before = report.now_ms - days * DAY_MS
            purge.readings(scope.name, scope.series_ids, before_ms=before)
        for resolution_s in RESOLUTIONS_S:
            days = scope.retention.rollup_days(resolution_s)
            if days is not None:
                before = report.now_ms - days * DAY_MS
                purge.rollups(scope.name, scope.series_ids, resolution_s, before_ms=before)
    if tenant is None:
        orphans, keep_latest = _orphans(db)
        purge.readings(ORPHANED, orphans)
        purge.rollups(ORPHANED, orphans)
        # Last, so that a run stopped half-way still finds these series next time.
        purge.latest(ORPHANED, [sid for sid in orphans if sid != keep_latest])
        if postgres and not report.dry_run:
            _restore_kept_points(db, report)


# --- who keeps what -------------------------------------------------------------------------


def _scopes(db: Database, tenant: str | None) -> list[_Scope]:
    with db.transaction(write=False) as session:
        if tenant is not None:
            tenants = [tenants_service.get_by_name(session, tenant)]
        else:
            tenants = tenants_service.list_all(session)
        series: dict[Any, list[int]] = {}
        for tenant_id, series_id in session.execute(
            select(Sensor.tenant_id, Sensor.series_id).order_by(Sensor.series_id)
        ):
            series.setdefault(tenant_id, []).append(int(series_id))
        return [_Scope(t.name, tenants_service.retention(t), series.get(t.id, [])) for t in tenants]


def _orphans(db: Database) -> tuple[list[int], int | None]:
    """Series that have points but no sensor, known from ``series_latest`` (every series with
    points has a row there until this purge removes it, last).

    Also the one orphan whose ``series_latest`` row must stay on SQLite: there new series ids
    are one past the highest of sensors and ``series_latest``, and a deleted sensor's id must not
    come back (points for it may still be in flight)."""
    with db.transaction(write=False) as session:
        live = select(Sensor.series_id).where(Sensor.series_id == SeriesLatest.series_id)
        orphans = [
            int(sid)
            for sid in session.scalars(
                select(SeriesLatest.series_id)
                .where(~live.exists())
                .order_by(SeriesLatest.series_id)
            )
        ]
        keep: int | None = None
        if orphans and db.engine.dialect.name == "sqlite":
            highest_sensor = session.scalar(select(func.max(Sensor.series_id)))
            if highest_sensor is None or orphans[-1] > highest_sensor:
                keep = orphans[-1]
    return orphans, keep


# --- chunked deletes ------------------------------------------------------------------------


class _Purger:
    def __init__(
        self, db: Database, report: Report, chunk_rows: int, should_stop: Callable[[], bool]
    ) -> None:
        self.db = db
        self.report = report
        self.chunk_rows = chunk_rows
        self.should_stop = should_stop
        self.postgres = db.engine.dialect.name == "postgresql"
        self.skip_tables: set[str] = set()
        self._partitions: list[_Partition] | None = None  # read once, after the drops

    def readings(self, scope: str, ids: list[int], *, before_ms: int | None = None) -> None:
        removal = self._removal("readings", scope, None, before_ms)
        where = "series_id IN :ids" + (" AND ts_ms < :before" if before_ms is not None else "")
        tables = ["readings"]
        if self.postgres:  # partition by partition: ctid lookups, and pruned by range
            if self._partitions is None:
                self._partitions = _partitions(self.db)
            tables = [
                p.table
                for p in self._partitions
                if p.table not in self.skip_tables
                and (before_ms is None or p.low_ms is None or p.low_ms < before_ms)
            ]
        for table in tables:
            self._delete(removal, table, ("series_id", "ts_ms"), where, ids, before=before_ms)

    def rollups(
        self,
        scope: str,
        ids: list[int],
        resolution_s: int | None = None,
        *,
        before_ms: int | None = None,
    ) -> None:
        removal = self._removal("readings_rollup", scope, resolution_s, before_ms)
        where, params = "series_id IN :ids", {}
        if resolution_s is not None:
            where += " AND resolution_s = :res"
            params["res"] = resolution_s
        if before_ms is not None and resolution_s is not None:
            # Only buckets that end by the cutoff: a bucket still partly kept stays whole.
            where += " AND bucket_ms <= :last_bucket"
            params["last_bucket"] = before_ms - resolution_s * 1000
        key = ("series_id", "resolution_s", "bucket_ms")
        self._delete(removal, "readings_rollup", key, where, ids, **params)

    def latest(self, scope: str, ids: list[int]) -> None:
        removal = self._removal("series_latest", scope, None, None)
        self._delete(removal, "series_latest", ("series_id",), "series_id IN :ids", ids)

    def _removal(
        self, table: str, scope: str, resolution_s: int | None, before_ms: int | None
    ) -> Removal:
        removal = Removal(table, scope, resolution_s=resolution_s, before_ms=before_ms)
        self.report.removals.append(removal)
        return removal

    def _delete(
        self,
        removal: Removal,
        table: str,
        key: Sequence[str],
        where: str,
        ids: list[int],
        **params: int | None,
    ) -> None:
        if self.postgres:  # a TID scan: the chunk's rows are found once, by the inner query
            sql = (
                f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
                f"SELECT ctid FROM {table} WHERE {where} LIMIT :n))"
            )
        else:  # WITHOUT ROWID tables: by primary key
            columns = ", ".join(key)
            sql = (
                f"DELETE FROM {table} WHERE ({columns}) IN ("
                f"SELECT {columns} FROM {table} WHERE {where} LIMIT :n)"
            )
        delete = text(sql).bindparams(bindparam("ids", expanding=True))
        count = text(f"SELECT COUNT(*) FROM {table} WHERE {where}").bindparams(
            bindparam("ids", expanding=True)
        )
        for start in range(0, len(ids), _IDS_PER_STATEMENT):
            values = {**params, "ids": ids[start : start + _IDS_PER_STATEMENT]}
            if self.report.dry_run:
                with self.db.transaction(write=False) as session:
                    rows = int(session.execute(count, values).scalar_one())
                removal.rows += rows
                removal.chunks += math.ceil(rows / self.chunk_rows)
                continue
            while True:
                if self.should_stop():
                    raise _Stopped
                with self.db.transaction() as session:
                    result: Any = session.execute(delete, {**values, "n": self.chunk_rows})
                    deleted = int(result.rowcount)
                    if deleted and table == "readings_rollup":
                        # Sealed buckets went: readers that kept them must read again.
                        session.execute(_NEW_REVISION, {**values, "token": secrets.randbits(63)})
                if deleted:
                    removal.rows += deleted
                    removal.chunks += 1
                if deleted < self.chunk_rows:
                    break


_NEW_REVISION = text(
    "UPDATE series_latest SET revision = :token WHERE series_id IN :ids"
).bindparams(bindparam("ids", expanding=True))


# --- PostgreSQL partitions ------------------------------------------------------------------


def _partitions(db: Database) -> list[_Partition]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT n.nspname, c.relname "
                "FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
                "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
                "WHERE i.inhparent = 'readings'::regclass ORDER BY c.relname"
            )
        ).all()
        home = conn.execute(
            text(
                "SELECT n.nspname FROM pg_class AS c JOIN pg_namespace AS n "
                "ON n.oid = c.relnamespace WHERE c.oid = 'readings'::regclass"
            )
        ).scalar_one()
    out = []
    for schema, name in rows:
        match = _PARTITION_NAME.match(name)
        if schema == home and match:
            out.append(_Partition(name, int(match.group(1))))
        else:
            out.append(_Partition(f'"{schema}"."{name}"', None))
    return out


def _drop_partitions(db: Database, scopes: list[_Scope], report: Report) -> None:
    with_data = [s for s in scopes if s.series_ids]
    if not with_data or any(s.retention.retention_raw_days is None for s in with_data):
        return  # someone keeps raw points forever (or nobody has any): delete by chunks only
    lenient = max(s.retention.retention_raw_days or 0 for s in with_data)
    drop_before = report.now_ms - lenient * DAY_MS
    expired = [
        p
        for p in _partitions(db)
        if p.index is not None and p.high_ms is not None and p.high_ms <= drop_before
    ]
    if report.dry_run:
        report.partitions_dropped.extend(p.table for p in expired)
        return
    for partition in expired:
        assert partition.index is not None
        try:
            with _ddl(db) as conn:
                _ensure_expired_partition(conn)
                conn.execute(text(f"DROP TABLE IF EXISTS {partition.table}"))
        except DBAPIError as exc:  # e.g. lock timeout: its rows go by chunks, or next run
            log.warning(
                "retention_partition_drop_failed",
                partition=partition.table,
                error=str(exc.orig).splitlines()[0],
            )
            continue
        forget_partition(str(db.engine.url), partition.index)
        report.partitions_dropped.append(partition.table)


def _ensure_expired_partition(conn: Connection) -> None:
    conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {EXPIRED_SCHEMA}"))
    conn.execute(
        text(f"CREATE TABLE IF NOT EXISTS {EXPIRED_PARTITION} PARTITION OF readings DEFAULT")
    )


def _restore_kept_points(db: Database, report: Report) -> None:
    """Points left in the default partition after the deletes are kept by someone (a retention
    was lengthened): move each range's into a partition of its own again, because while the
    default partition holds points of a range, creating that range's partition is refused."""
    with db.engine.connect() as conn:
        if conn.execute(text("SELECT to_regclass(:n)"), {"n": EXPIRED_PARTITION}).scalar() is None:
            return
        indices = [
            int(i)
            for i in conn.execute(
                text(f"SELECT DISTINCT ts_ms / :span FROM {EXPIRED_PARTITION}"),
                {"span": PARTITION_SPAN_MS},
            ).scalars()
        ]
    for index in sorted(indices):
        name = f"readings_p{index}"
        low, high = index * PARTITION_SPAN_MS, (index + 1) * PARTITION_SPAN_MS
        try:
            with _ddl(db) as conn:
                conn.execute(
                    text(
                        f"CREATE TABLE {name} "
                        "(LIKE readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                    )
                )
                conn.execute(
                    text(
                        f"WITH moved AS (DELETE FROM {EXPIRED_PARTITION} "
                        "WHERE ts_ms >= :low AND ts_ms < :high "
                        "RETURNING series_id, ts_ms, value) "
                        f"INSERT INTO {name} (series_id, ts_ms, value) "
                        "SELECT series_id, ts_ms, value FROM moved"
                    ),
                    {"low": low, "high": high},
                )
                conn.execute(
                    text(
                        f"ALTER TABLE readings ATTACH PARTITION {name} "
                        f"FOR VALUES FROM ({low}) TO ({high})"
                    )
                )
        except DBAPIError as exc:
            log.warning(
                "retention_partition_restore_failed",
                partition=name,
                error=str(exc.orig).splitlines()[0],
            )
            continue
        report.partitions_restored.append(name)


@contextmanager
def _ddl(db: Database) -> Iterator[Connection]:
    """A short transaction whose locks are waited for at most ``_LOCK_TIMEOUT``."""
    with db.engine.begin() as conn:
        conn.execute(text(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'"))
        yield conn


# --- one run at a time ----------------------------------------------------------------------

_local_run = threading.Lock()


@contextmanager
def _one_run_at_a_time(db: Database, dry_run: bool) -> Iterator[bool]:
    if dry_run:
        yield True
        return
    if not _local_run.acquire(blocking=False):
        yield False
        return
    try:
        if db.engine.dialect.name != "postgresql":
            yield True  # SQLite writers are serialised anyway
            return
        # Several API processes may run the job; one of them works, the others skip.
        with db.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            key = {"k": _ADVISORY_LOCK_KEY}
            if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), key).scalar():
                yield False
                return
            try:
                yield True
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), key)
    finally:
        _local_run.release()


# --- reporting ------------------------------------------------------------------------------


def _iso(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")


def _partition_range(table: str) -> str:
    match = _PARTITION_NAME.match(table)
    if not match:
        return ""
    low = int(match.group(1)) * PARTITION_SPAN_MS
    return f" [{_iso(low)}, {_iso(low + PARTITION_SPAN_MS)})"


def _log(report: Report) -> None:
    event = "retention_dry_run" if report.dry_run else "retention_removed"
    for name in report.partitions_dropped:
        log.info(event, partition=name, action="drop_partition")
    for name in report.partitions_restored:
        log.info(event, partition=name, action="restore_partition")
    for r in report.removals:
        if r.rows:
            log.info(
                event,
                table=r.what,
                scope=r.scope,
                rows=r.rows,
                chunks=r.chunks,
                older_than=_iso(r.before_ms) if r.before_ms is not None else None,
            )
    log.info(
        "retention_done",
        dry_run=report.dry_run,
        rows=report.total_rows,
        partitions_dropped=len(report.partitions_dropped),
        stopped=report.stopped,
    )


# --- the periodic job (embedded deployments) ------------------------------------------------


class RetentionJob:
    """Runs ``enforce`` in a thread every ``interval_s`` seconds (0: never), the first time one
    interval after ``start``. ``stop`` makes a run in progress end after its current chunk, and
    waits for it, so the database can be closed afterwards."""

    def __init__(self, db: Database, interval_s: float, *, chunk_rows: int = CHUNK_ROWS) -> None:
        self.db = db
        self.interval_s = interval_s
        self.chunk_rows = chunk_rows
        self.runs = 0
        self.last_report: Report | None = None
        self._stopping = threading.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval_s > 0:
            self._task = asyncio.create_task(self._run(), name="retention")

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval_s)
            if self._stopping.is_set():
                return
            try:
                await asyncio.to_thread(self.run_once)
            except Exception:  # noqa: BLE001 - logged; the next interval tries again
                log.exception("retention_failed")

    def run_once(self) -> Report:
        report = enforce(self.db, chunk_rows=self.chunk_rows, should_stop=self._stopping.is_set)
        self.runs += 1
        self.last_report = report
        return report
