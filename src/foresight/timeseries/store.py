"""Writing points: idempotent, out-of-order safe, rollups changed only by points that are new.

One unit of work per call, inside the caller's transaction:

1. the points (deduplicated on (series, ts), first wins) go into a temporary staging table
   (PostgreSQL: binary COPY; SQLite: executemany);
2. the ones not already stored are inserted into ``readings`` and collected in ``ingest_new``
   (PostgreSQL: ``INSERT … ON CONFLICT DO NOTHING RETURNING`` in one statement, safe with
   concurrent writers; SQLite: an anti-join, safe because SQLite writers are serialised);
3. ``readings_rollup`` (5 min, 1 h, 1 day) and ``series_latest`` are merged from ``ingest_new``
   only, so a resent or redelivered point changes nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from foresight.models.timeseries import RESOLUTIONS_S

# PostgreSQL partitions of ``readings`` span this many milliseconds (7 days) from the epoch.
PARTITION_SPAN_MS = 7 * 86_400_000


@dataclass
class Points:
    """Columnar points for the store: three equally long sequences."""

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
class WriteResult:
    received: int
    inserted: int

    @property
    def duplicates(self) -> int:
        return self.received - self.inserted


def _unique_rows(points: Points) -> list[tuple[int, int, float]]:
    seen: dict[tuple[int, int], float] = {}
    for sid, ts, value in zip(points.series_id, points.ts_ms, points.value, strict=True):
        seen.setdefault((sid, ts), value)
    return [(sid, ts, value) for (sid, ts), value in seen.items()]


_TEMP_COLUMNS = "series_id BIGINT NOT NULL, ts_ms BIGINT NOT NULL, value DOUBLE PRECISION NOT NULL"


def write_points(session: Session, points: Points) -> WriteResult:
    if not len(points):
        return WriteResult(0, 0)
    rows = _unique_rows(points)
    if session.get_bind().dialect.name == "postgresql":
        inserted = _stage_and_insert_postgres(session, rows)
    else:
        inserted = _stage_and_insert_sqlite(session, rows)
    if inserted:
        _merge_rollups(session)
        _merge_latest(session)
    return WriteResult(received=len(points), inserted=inserted)


# --- SQLite ---------------------------------------------------------------------------------


def _stage_and_insert_sqlite(session: Session, rows: list[tuple[int, int, float]]) -> int:
    session.execute(
        text(
            f"CREATE TEMP TABLE IF NOT EXISTS ingest_new ({_TEMP_COLUMNS}, "
            "PRIMARY KEY (series_id, ts_ms)) WITHOUT ROWID"
        )
    )
    session.execute(text("DELETE FROM ingest_new"))
    raw = session.connection().connection.dbapi_connection
    assert raw is not None
    cursor = raw.cursor()
    try:
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
        return int(cursor.rowcount)
    finally:
        cursor.close()


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


def _stage_and_insert_postgres(session: Session, rows: list[tuple[int, int, float]]) -> int:
    ensure_partitions(session, {partition_index(ts) for _, ts, _ in rows})
    for table in ("ingest_staging", "ingest_new"):
        session.execute(
            text(
                f"CREATE TEMP TABLE IF NOT EXISTS {table} ({_TEMP_COLUMNS}, "
                "PRIMARY KEY (series_id, ts_ms)) ON COMMIT DELETE ROWS"
            )
        )
    raw: Any = session.connection().connection.dbapi_connection
    with raw.cursor() as cursor:
        with cursor.copy(
            "COPY ingest_staging (series_id, ts_ms, value) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int8", "int8", "float8"])
            for row in rows:
                copy.write_row(row)
        # One statement: concurrent writers cannot both count the same point as new.
        cursor.execute(
            "WITH inserted AS ("
            " INSERT INTO readings (series_id, ts_ms, value)"
            " SELECT series_id, ts_ms, value FROM ingest_staging ORDER BY series_id, ts_ms"
            " ON CONFLICT DO NOTHING RETURNING series_id, ts_ms, value)"
            " INSERT INTO ingest_new SELECT series_id, ts_ms, value FROM inserted"
        )
        return int(cursor.rowcount)


# --- rollups and latest (both backends) -----------------------------------------------------

# Chan et al.'s pairwise update merges (count, mean, m2) exactly, in any order of arrival.
_ROLLUP_MERGE = """
INSERT INTO readings_rollup
    (series_id, resolution_s, bucket_ms, count, mean, m2, min, max, last_ts_ms, last)
SELECT g.series_id, :res, g.bucket_ms, g.n, g.mean,
       (SELECT SUM((x.value - g.mean) * (x.value - g.mean)) FROM ingest_new AS x
         WHERE x.series_id = g.series_id AND x.ts_ms >= g.bucket_ms
           AND x.ts_ms < g.bucket_ms + :span),
       g.lo, g.hi, g.last_ts,
       (SELECT l.value FROM ingest_new AS l WHERE l.series_id = g.series_id AND l.ts_ms = g.last_ts)
FROM (SELECT series_id, (ts_ms / :span) * :span AS bucket_ms, COUNT(*) AS n, AVG(value) AS mean,
             MIN(value) AS lo, MAX(value) AS hi, MAX(ts_ms) AS last_ts
      FROM ingest_new GROUP BY series_id, (ts_ms / :span)) AS g
WHERE true
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

_LATEST_MERGE = """
INSERT INTO series_latest (series_id, ts_ms, value)
SELECT n.series_id, n.ts_ms, n.value
FROM ingest_new AS n
JOIN (SELECT series_id, MAX(ts_ms) AS ts_ms FROM ingest_new GROUP BY series_id) AS m
  ON n.series_id = m.series_id AND n.ts_ms = m.ts_ms
WHERE true
ON CONFLICT (series_id) DO UPDATE SET ts_ms = excluded.ts_ms, value = excluded.value
WHERE excluded.ts_ms > series_latest.ts_ms
"""


def _merge_rollups(session: Session) -> None:
    for resolution_s in RESOLUTIONS_S:
        session.execute(text(_ROLLUP_MERGE), {"res": resolution_s, "span": resolution_s * 1000})


def _merge_latest(session: Session) -> None:
    session.execute(text(_LATEST_MERGE))


def series_points(rows: Sequence[tuple[int, int, float]]) -> Points:
    points = Points()
    for sid, ts, value in rows:
        points.append(sid, ts, value)
    return points
