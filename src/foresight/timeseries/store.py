"""Writing points: idempotent, out-of-order safe, rollups changed only by points that are new.

One unit of work per call, inside the caller's transaction:

1. the points are deduplicated on (series, ts) (the first wins) and sorted by (series, ts) as
   numpy columns, so the B-tree inserts that follow walk the index in order;
2. they go straight into ``readings`` (PostgreSQL: one binary ``COPY`` whose buffer numpy
   encodes; SQLite: one ``executemany``) under a savepoint. That is the common case, and then
   every point is new. If any point is already stored (a resend, a redelivery, a rerun import, a
   concurrent writer), the savepoint is rolled back and the slow path stages the points and
   inserts only the absent ones (PostgreSQL: ``INSERT … ON CONFLICT DO NOTHING RETURNING`` in one
   statement, safe with concurrent writers; SQLite: an anti-join, safe because SQLite writers are
   serialised), learning exactly which points were new;
3. rollup partials (5 min, 1 h, 1 day: count, mean, m2, min, max, last) and the newest point of
   each series are computed from the new points only, in numpy, and merged into
   ``readings_rollup`` and ``series_latest`` with one upsert each. A resent or redelivered point
   changes nothing.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from foresight.models.timeseries import RESOLUTIONS_S

# PostgreSQL partitions of ``readings`` span this many milliseconds (7 days) from the epoch.
PARTITION_SPAN_MS = 7 * 86_400_000
# A series' rollup buckets that end by the start of the 6-hour block (from the epoch) holding its
# newest point are sealed: a write into them, or a retention delete, changes the series'
# ``series_latest.revision``, so a reader may keep them for as long as the revision holds.
SEALED_BLOCK_MS = 6 * 3_600_000

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass
class Points:
    """Columnar points for the store: three equally long sequences (lists or numpy arrays)."""

    series_id: list[int] = field(default_factory=list)
    ts_ms: list[int] = field(default_factory=list)
    value: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ts_ms)

    def append(self, series_id: int, ts_ms: int, value: float) -> None:
        self.series_id.append(series_id)
        self.ts_ms.append(ts_ms)
        self.value.append(value)

    def extend(self, other: Points) -> None:
        self.series_id.extend(other.series_id)
        self.ts_ms.extend(other.ts_ms)
        self.value.extend(other.value)


@dataclass(frozen=True)
class Columns:
    """Points as numpy columns, unique on (series, ts) and sorted by it."""

    series_id: I64
    ts_ms: I64
    value: F64

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    @classmethod
    def empty(cls) -> Columns:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[int, int, float]]) -> Columns:
        if not rows:
            return cls.empty()
        sid, ts, value = zip(*rows, strict=True)
        return sorted_unique(
            np.array(sid, np.int64), np.array(ts, np.int64), np.array(value, np.float64)
        )

    def rows(self) -> list[tuple[int, int, float]]:
        return list(
            zip(self.series_id.tolist(), self.ts_ms.tolist(), self.value.tolist(), strict=True)
        )


@dataclass(frozen=True)
class WriteResult:
    received: int
    inserted: int
    # The newest new point of each series this write touched: series id → (ts_ms, value).
    latest: dict[int, tuple[int, float]] = field(default_factory=dict)
    # The points that were new (sorted by series and time), for the stages after the store.
    new: Columns | None = None

    @property
    def duplicates(self) -> int:
        return self.received - self.inserted


def sorted_unique(sid: I64, ts: I64, value: F64) -> Columns:
    # Two stable sorts: by ts, then by series: ordered by (series, ts), ties in input order.
    order = np.argsort(ts, kind="stable")
    order = order[np.argsort(sid[order], kind="stable")]
    sid, ts, value = sid[order], ts[order], value[order]
    if sid.shape[0] > 1:
        keep = np.empty(sid.shape[0], dtype=bool)
        keep[0] = True
        np.not_equal(sid[1:], sid[:-1], out=keep[1:])
        keep[1:] |= ts[1:] != ts[:-1]
        if not keep.all():  # the first of equal keys wins
            sid, ts, value = sid[keep], ts[keep], value[keep]
    return Columns(sid, ts, value)


def as_columns(points: Points) -> Columns:
    return sorted_unique(
        np.asarray(points.series_id, dtype=np.int64),
        np.asarray(points.ts_ms, dtype=np.int64),
        np.asarray(points.value, dtype=np.float64),
    )


def write_points(session: Session, points: Points) -> WriteResult:
    if not len(points):
        return WriteResult(0, 0)
    return _write(session, as_columns(points), len(points))


def write_arrays(
    session: Session, series_id: npt.ArrayLike, ts_ms: npt.ArrayLike, value: npt.ArrayLike
) -> WriteResult:
    """``write_points`` for points already in arrays (e.g. from a polars frame)."""
    columns = sorted_unique(
        np.asarray(series_id, dtype=np.int64),
        np.asarray(ts_ms, dtype=np.int64),
        np.asarray(value, dtype=np.float64),
    )
    if not len(columns):
        return WriteResult(0, 0)
    return _write(session, columns, int(np.asarray(ts_ms).shape[0]))


def _write(session: Session, columns: Columns, received: int) -> WriteResult:
    if session.get_bind().dialect.name == "postgresql":
        new = _insert_postgres(session, columns)
    else:
        new = _insert_sqlite(session, columns)
    if not len(new):
        return WriteResult(received=received, inserted=0)
    partials = rollup_partials(new)
    latest = _latest_of(new)
    _merge(session, partials, latest)
    return WriteResult(
        received=received,
        inserted=len(new),
        new=new,
        latest=dict(
            zip(
                latest.series_id.tolist(),
                zip(latest.ts_ms.tolist(), latest.value.tolist(), strict=True),
                strict=True,
            )
        ),
    )


# --- rollup partials (numpy) ------------------------------------------------------------------


@dataclass(frozen=True)
class Partials:
    """Per (series, resolution, bucket) aggregates of some new points, ready to merge."""

    series_id: I64
    resolution_s: I64
    bucket_ms: I64
    count: I64
    mean: F64
    m2: F64
    min: F64
    max: F64
    last_ts_ms: I64
    last: F64

    def rows(self) -> list[tuple[Any, ...]]:
        return list(
            zip(
                *(getattr(self, name).tolist() for name in PARTIAL_COLUMNS),
                strict=True,
            )
        )


PARTIAL_COLUMNS = (
    "series_id", "resolution_s", "bucket_ms", "count", "mean", "m2", "min", "max", "last_ts_ms",
    "last",
)  # fmt: skip


def rollup_partials(new: Columns) -> Partials:
    """Aggregates of sorted, unique points for every resolution (exact: two-pass mean and m2)."""
    sid, ts, value = new.series_id, new.ts_ms, new.value
    n = len(new)
    parts: list[list[npt.NDArray[Any]]] = []
    for resolution_s in RESOLUTIONS_S:
        span = resolution_s * 1000
        bucket = ts - ts % span  # ts >= 0, so this is floor(ts / span) * span
        start_mask = np.empty(n, dtype=bool)
        start_mask[0] = True
        np.not_equal(sid[1:], sid[:-1], out=start_mask[1:])
        start_mask[1:] |= bucket[1:] != bucket[:-1]
        starts = np.flatnonzero(start_mask)
        ends = np.append(starts[1:], n)
        count = ends - starts
        # Two passes: a shifted second pass corrects the first mean's rounding.
        mean = np.add.reduceat(value, starts) / count
        dev = value - np.repeat(mean, count)
        mean = mean + np.add.reduceat(dev, starts) / count
        dev = value - np.repeat(mean, count)
        m2 = np.add.reduceat(dev * dev, starts)
        last = ends - 1  # sorted by ts within a series: the bucket's last point
        parts.append(
            [
                sid[starts],
                np.full(starts.shape[0], resolution_s, np.int64),
                bucket[starts],
                count.astype(np.int64),
                mean,
                m2,
                np.minimum.reduceat(value, starts),
                np.maximum.reduceat(value, starts),
                ts[last],
                value[last],
            ]  # fmt: skip
        )
    merged = [np.concatenate(column) for column in zip(*parts, strict=True)]
    return Partials(*merged)


@dataclass(frozen=True)
class _Latest:
    """Per series of a write: its newest new point and its earliest new point's time."""

    series_id: I64
    ts_ms: I64
    value: F64
    write_min_ms: I64

    def revision(self) -> tuple[I64, I64]:
        """(revision, write_min_ms) columns: one fresh random revision for the whole write (the
        upsert keeps it only for series the write changes sealed buckets of)."""
        token = secrets.randbits(63)
        return np.full(self.series_id.shape[0], token, np.int64), self.write_min_ms

    def rows(self) -> list[tuple[int, int, float, int, int]]:
        revision, write_min = self.revision()
        return list(
            zip(
                self.series_id.tolist(), self.ts_ms.tolist(), self.value.tolist(),
                revision.tolist(), write_min.tolist(), strict=True,
            )
        )  # fmt: skip


def _latest_of(new: Columns) -> _Latest:
    sid = new.series_id
    change = np.append(sid[1:] != sid[:-1], True)
    last = np.flatnonzero(change)
    first = np.concatenate(([0], last[:-1] + 1))
    return _Latest(sid[last], new.ts_ms[last], new.value[last], new.ts_ms[first])


# --- PostgreSQL binary COPY, encoded by numpy -------------------------------------------------

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"


_COPY_KINDS = {("i", 8): ">i8", ("i", 4): ">i4", ("f", 8): ">f8"}


def copy_buffer(*columns: npt.NDArray[Any]) -> bytes:
    """A ``COPY … (FORMAT BINARY)`` stream of int4/int8/float8 columns (no NULLs)."""
    fields: list[tuple[str, str]] = [("n", ">i2")]
    for i, column in enumerate(columns):
        fields += [(f"l{i}", ">i4"), (f"c{i}", _COPY_KINDS[column.dtype.kind, column.itemsize])]
    out = np.empty(columns[0].shape[0], dtype=np.dtype(fields))
    out["n"] = len(columns)
    for i, column in enumerate(columns):
        out[f"l{i}"] = column.itemsize
        out[f"c{i}"] = column
    return _COPY_HEADER + out.tobytes() + _COPY_TRAILER


# --- PostgreSQL -----------------------------------------------------------------------------

# Partitions known to exist, per database (keyed by URL), so the check runs once per process.
_known_partitions: dict[str, set[int]] = {}
_partition_lock = threading.Lock()


def partition_index(ts_ms: int) -> int:
    return ts_ms // PARTITION_SPAN_MS


def ensure_partitions(session: Session, indices: set[int]) -> None:
    """Create the weekly ``readings`` partitions these points need (once per process)."""
    engine = session.get_bind()
    assert isinstance(engine, Engine)
    known = _known_partitions.setdefault(str(engine.url), set())
    missing = indices - known
    if not missing:
        return
    with _partition_lock, engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        for index in sorted(missing):
            low, high = index * PARTITION_SPAN_MS, (index + 1) * PARTITION_SPAN_MS
            name = f"readings_p{index}"
            exists = conn.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar()
            if exists is None:
                try:
                    conn.execute(
                        text(
                            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF readings "
                            f"FOR VALUES FROM ({low}) TO ({high})"
                        )
                    )
                except Exception:  # noqa: BLE001 - another process created it first
                    if conn.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar() is None:
                        raise
            known.add(index)


def forget_partitions() -> None:
    """Tests that recreate the schema call this so partitions are created again."""
    _known_partitions.clear()


def forget_partition(engine_url: str, index: int) -> None:
    """Retention dropped this partition: a later write into its range creates it again."""
    with _partition_lock:
        _known_partitions.get(engine_url, set()).discard(index)


# --- inserting the points -------------------------------------------------------------------

_TEMP_COLUMNS = "series_id BIGINT NOT NULL, ts_ms BIGINT NOT NULL, value DOUBLE PRECISION NOT NULL"


def _insert_sqlite(session: Session, columns: Columns) -> Columns:
    """Insert the points; returns the ones that were new (all of them, but after a conflict)."""
    raw = session.connection().connection.dbapi_connection
    assert raw is not None
    rows = columns.rows()
    cursor = raw.cursor()
    try:
        cursor.execute("SAVEPOINT foresight_write")
        try:
            cursor.executemany(
                "INSERT INTO main.readings (series_id, ts_ms, value) VALUES (?, ?, ?)", rows
            )
        except sqlite3.IntegrityError:  # some are stored already: take the slow path
            cursor.execute("ROLLBACK TO foresight_write")
            cursor.execute("RELEASE foresight_write")
            return _insert_absent_sqlite(cursor, rows)
        cursor.execute("RELEASE foresight_write")
        return columns
    finally:
        cursor.close()


def _insert_absent_sqlite(cursor: Any, rows: list[tuple[int, int, float]]) -> Columns:
    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS ingest_new ({_TEMP_COLUMNS}, "
        "PRIMARY KEY (series_id, ts_ms)) WITHOUT ROWID"
    )
    cursor.execute("DELETE FROM temp.ingest_new")
    cursor.executemany(
        "INSERT INTO temp.ingest_new (series_id, ts_ms, value) VALUES (?, ?, ?)", rows
    )
    # Drop what is already stored; the rest is new (this writer holds the database lock).
    cursor.execute(
        "DELETE FROM temp.ingest_new WHERE EXISTS (SELECT 1 FROM main.readings AS r "
        "WHERE r.series_id = ingest_new.series_id AND r.ts_ms = ingest_new.ts_ms)"
    )
    cursor.execute(
        "INSERT INTO main.readings (series_id, ts_ms, value) "
        "SELECT series_id, ts_ms, value FROM temp.ingest_new ORDER BY series_id, ts_ms"
    )
    cursor.execute("SELECT series_id, ts_ms, value FROM temp.ingest_new")
    new = Columns.from_rows(cursor.fetchall())
    cursor.execute("DELETE FROM temp.ingest_new")
    return new


_COPY_READINGS = "COPY readings (series_id, ts_ms, value) FROM STDIN (FORMAT BINARY)"


def _insert_postgres(session: Session, columns: Columns) -> Columns:
    """Insert the points; returns the ones that were new (all of them, but after a conflict)."""
    ensure_partitions(session, set(np.unique(columns.ts_ms // PARTITION_SPAN_MS).tolist()))
    raw: Any = session.connection().connection.dbapi_connection
    buffer = copy_buffer(columns.series_id, columns.ts_ms, columns.value)
    with raw.cursor() as cursor:
        cursor.execute("SAVEPOINT foresight_write")
        try:
            with cursor.copy(_COPY_READINGS) as copy:
                copy.write(buffer)
        except psycopg.errors.UniqueViolation:  # some are stored already: take the slow path
            cursor.execute("ROLLBACK TO SAVEPOINT foresight_write")
            cursor.execute("RELEASE SAVEPOINT foresight_write")
            return _insert_absent_postgres(cursor, buffer)
        cursor.execute("RELEASE SAVEPOINT foresight_write")
    return columns


def _insert_absent_postgres(cursor: Any, buffer: bytes) -> Columns:
    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS ingest_staging ({_TEMP_COLUMNS}) ON COMMIT DELETE ROWS"
    )
    cursor.execute("DELETE FROM ingest_staging")
    with cursor.copy(
        "COPY ingest_staging (series_id, ts_ms, value) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.write(buffer)
    # One statement: concurrent writers cannot both count the same point as new.
    cursor.execute(
        "INSERT INTO readings (series_id, ts_ms, value)"
        " SELECT series_id, ts_ms, value FROM ingest_staging ORDER BY series_id, ts_ms"
        " ON CONFLICT DO NOTHING RETURNING series_id, ts_ms, value"
    )
    new = Columns.from_rows(cursor.fetchall())
    cursor.execute("DELETE FROM ingest_staging")
    return new


# --- rollups and latest (both backends) -----------------------------------------------------

# Chan et al.'s pairwise update merges (count, mean, m2) exactly, in any order of arrival.
_ROLLUP_ON_CONFLICT = """
ON CONFLICT (series_id, resolution_s, bucket_ms) DO UPDATE SET
    count = readings_rollup.count + excluded.count,
    mean = readings_rollup.mean + (excluded.mean - readings_rollup.mean)
        * excluded.count / (readings_rollup.count + excluded.count),
    m2 = readings_rollup.m2 + excluded.m2
        + (excluded.mean - readings_rollup.mean) * (excluded.mean - readings_rollup.mean)
        * readings_rollup.count * excluded.count / (readings_rollup.count + excluded.count),
    min = CASE WHEN excluded.min < readings_rollup.min THEN excluded.min
               ELSE readings_rollup.min END,
    max = CASE WHEN excluded.max > readings_rollup.max THEN excluded.max
               ELSE readings_rollup.max END,
    last = CASE WHEN excluded.last_ts_ms > readings_rollup.last_ts_ms THEN excluded.last
                ELSE readings_rollup.last END,
    last_ts_ms = CASE WHEN excluded.last_ts_ms > readings_rollup.last_ts_ms
                      THEN excluded.last_ts_ms ELSE readings_rollup.last_ts_ms END
"""
_ROLLUP_COLUMNS = ", ".join(PARTIAL_COLUMNS)
# A write before the start of the sealed block holding the series' newest point (truncated
# towards zero: never later than the floor readers use) gives the series a new revision.
_SEALED = f"series_latest.ts_ms - series_latest.ts_ms % {SEALED_BLOCK_MS}"
_LATEST_ON_CONFLICT = f"""
ON CONFLICT (series_id) DO UPDATE SET
    ts_ms = CASE WHEN excluded.ts_ms > series_latest.ts_ms THEN excluded.ts_ms
                 ELSE series_latest.ts_ms END,
    value = CASE WHEN excluded.ts_ms > series_latest.ts_ms THEN excluded.value
                 ELSE series_latest.value END,
    revision = CASE WHEN excluded.write_min_ms < {_SEALED} THEN excluded.revision
                    ELSE series_latest.revision END,
    write_min_ms = excluded.write_min_ms
WHERE excluded.ts_ms > series_latest.ts_ms OR excluded.write_min_ms < {_SEALED}
"""
_LATEST_COLUMNS = "series_id, ts_ms, value, revision, write_min_ms"

# PostgreSQL: one statement per table over arrays; rows locked in key order (no deadlocks
# between concurrent writers). SQLite: executemany of the same upsert.
# PostgreSQL: partials and latest points are COPYed (numpy-encoded) into temporary tables, then
# merged by one statement per table, rows locked in key order (no deadlocks between concurrent
# writers). Passing them as array parameters instead costs more in adapting than in merging.
_ROLLUP_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS ingest_rollup (series_id BIGINT, resolution_s INTEGER, "
    "bucket_ms BIGINT, count BIGINT, mean DOUBLE PRECISION, m2 DOUBLE PRECISION, "
    "min DOUBLE PRECISION, max DOUBLE PRECISION, last_ts_ms BIGINT, last DOUBLE PRECISION) "
    "ON COMMIT DELETE ROWS"
)
_LATEST_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS ingest_latest (series_id BIGINT, ts_ms BIGINT, "
    "value DOUBLE PRECISION, revision BIGINT, write_min_ms BIGINT) ON COMMIT DELETE ROWS"
)
_ROLLUP_UPSERT_PG = (
    f"INSERT INTO readings_rollup ({_ROLLUP_COLUMNS}) SELECT {_ROLLUP_COLUMNS} FROM "
    "ingest_rollup ORDER BY series_id, resolution_s, bucket_ms" + _ROLLUP_ON_CONFLICT
)
_LATEST_UPSERT_PG = (
    f"INSERT INTO series_latest ({_LATEST_COLUMNS}) SELECT {_LATEST_COLUMNS} "
    "FROM ingest_latest ORDER BY series_id" + _LATEST_ON_CONFLICT
)
_ROLLUP_UPSERT_SQLITE = (
    f"INSERT INTO readings_rollup ({_ROLLUP_COLUMNS}) VALUES ("
    + ", ".join("?" for _ in PARTIAL_COLUMNS)
    + ")"
    + _ROLLUP_ON_CONFLICT
)
_LATEST_UPSERT_SQLITE = (
    f"INSERT INTO series_latest ({_LATEST_COLUMNS}) VALUES (?, ?, ?, ?, ?)" + _LATEST_ON_CONFLICT
)


def _merge(session: Session, partials: Partials, latest: _Latest) -> None:
    raw: Any = session.connection().connection.dbapi_connection
    cursor = raw.cursor()
    try:
        if session.get_bind().dialect.name == "postgresql":
            partial_columns = [getattr(partials, n) for n in PARTIAL_COLUMNS]
            partial_columns[1] = partial_columns[1].astype(np.int32)
            latest_columns = [latest.series_id, latest.ts_ms, latest.value, *latest.revision()]
            for table, staging, columns, upsert in (
                ("ingest_rollup", _ROLLUP_STAGING, partial_columns, _ROLLUP_UPSERT_PG),
                ("ingest_latest", _LATEST_STAGING, latest_columns, _LATEST_UPSERT_PG),
            ):
                cursor.execute(staging)
                with cursor.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
                    copy.write(copy_buffer(*columns))
                cursor.execute(upsert)
                cursor.execute(f"DELETE FROM {table}")
        else:
            cursor.executemany(_ROLLUP_UPSERT_SQLITE, partials.rows())
            cursor.executemany(_LATEST_UPSERT_SQLITE, latest.rows())
    finally:
        cursor.close()


def series_points(rows: Sequence[tuple[int, int, float]]) -> Points:
    points = Points()
    for sid, ts, value in rows:
        points.append(sid, ts, value)
    return points
