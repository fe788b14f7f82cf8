"""Read queries over the point store. All of them walk primary keys: (series_id, ts_ms) for
``readings``, (series_id, resolution_s, bucket_ms) for ``readings_rollup`` and series_id for
``series_latest``.

Series ids come from the caller's own sensors (``asset_sensors``, scoped to a tenant), which
is what scopes every point query to the tenant.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import ScalarSelect, Select, func, select
from sqlalchemy.orm import Session

from foresight.models import Reading, Rollup, Sensor, SeriesLatest

# The bounded counts of several series go in one statement, this many per statement.
_COUNT_BATCH = 100

RollupRow = tuple[int, int, int, float, float, float, float, int, float]
"""series_id, bucket_ms, count, mean, m2, min, max, last_ts_ms, last"""

_ROLLUP_COLUMNS = (
    Rollup.series_id,
    Rollup.bucket_ms,
    Rollup.count,
    Rollup.mean,
    Rollup.m2,
    Rollup.min,
    Rollup.max,
    Rollup.last_ts_ms,
    Rollup.last,
)


def asset_sensors(session: Session, *, tenant_id: uuid.UUID, asset_id: uuid.UUID) -> list[Sensor]:
    stmt = (
        select(Sensor)
        .where(Sensor.tenant_id == tenant_id, Sensor.asset_id == asset_id)
        .order_by(Sensor.key)
    )
    return list(session.scalars(stmt))


# --- bounded counts (how many points a range holds, reading at most `limit` index entries) ---


def _bounded_counts(
    session: Session, subqueries: dict[int, Select[Any]], limit: int
) -> dict[int, int]:
    counts: dict[int, int] = {}
    ids = list(subqueries)
    for start in range(0, len(ids), _COUNT_BATCH):
        batch = ids[start : start + _COUNT_BATCH]
        columns: list[ScalarSelect[int]] = [
            select(func.count())
            .select_from(subqueries[sid].limit(limit).subquery())
            .scalar_subquery()
            for sid in batch
        ]
        row = session.execute(select(*columns)).one()
        counts.update({sid: int(n) for sid, n in zip(batch, row, strict=True)})
    return counts


def count_points(
    session: Session, *, series_ids: Sequence[int], start_ms: int, end_ms: int, limit: int
) -> dict[int, int]:
    """Points of each series in [start_ms, end_ms), counted up to ``limit`` (one statement)."""
    subqueries = {
        sid: select(Reading.ts_ms).where(
            Reading.series_id == sid, Reading.ts_ms >= start_ms, Reading.ts_ms < end_ms
        )
        for sid in series_ids
    }
    return _bounded_counts(session, subqueries, limit)


def count_rollups(
    session: Session,
    *,
    series_ids: Sequence[int],
    resolution_s: int,
    start_ms: int,
    end_ms: int,
    limit: int,
) -> dict[int, int]:
    """Buckets of each series starting in [start_ms, end_ms), counted up to ``limit``."""
    subqueries = {
        sid: select(Rollup.bucket_ms).where(
            Rollup.series_id == sid,
            Rollup.resolution_s == resolution_s,
            Rollup.bucket_ms >= start_ms,
            Rollup.bucket_ms < end_ms,
        )
        for sid in series_ids
    }
    return _bounded_counts(session, subqueries, limit)


# --- whole ranges (callers bound their size first) --------------------------------------------


def points(
    session: Session, *, series_ids: Sequence[int], start_ms: int, end_ms: int
) -> Sequence[tuple[int, int, float]]:
    """(series_id, ts_ms, value) in [start_ms, end_ms), by series then time."""
    stmt = (
        select(Reading.series_id, Reading.ts_ms, Reading.value)
        .where(Reading.series_id.in_(series_ids), Reading.ts_ms >= start_ms, Reading.ts_ms < end_ms)
        .order_by(Reading.series_id, Reading.ts_ms)
    )
    return session.execute(stmt).all()


def _rollups_stmt(
    series_ids: Sequence[int], resolution_s: int, start_ms: int, end_ms: int
) -> Select[*RollupRow]:
    return (
        select(*_ROLLUP_COLUMNS)
        .where(
            Rollup.series_id.in_(series_ids),
            Rollup.resolution_s == resolution_s,
            Rollup.bucket_ms >= start_ms,
            Rollup.bucket_ms < end_ms,
        )
        .order_by(Rollup.series_id, Rollup.bucket_ms)
    )


def rollups(
    session: Session, *, series_ids: Sequence[int], resolution_s: int, start_ms: int, end_ms: int
) -> Sequence[RollupRow]:
    """The buckets starting in [start_ms, end_ms), by series then bucket."""
    stmt = _rollups_stmt(series_ids, resolution_s, start_ms, end_ms)
    return session.execute(stmt).all()


def stream_rollups(
    session: Session,
    *,
    series_ids: Sequence[int],
    resolution_s: int,
    start_ms: int,
    end_ms: int,
    chunk: int = 2000,
) -> Iterator[RollupRow]:
    """Like ``rollups``, fetched ``chunk`` rows at a time (a server-side cursor on PostgreSQL)."""
    stmt = _rollups_stmt(series_ids, resolution_s, start_ms, end_ms)
    result = session.execute(stmt, execution_options={"yield_per": chunk})
    yield from result


# --- keyset pages (CSV export) -----------------------------------------------------------------


def points_page(
    session: Session, *, series_id: int, start_ms: int, end_ms: int, limit: int
) -> Sequence[tuple[int, float]]:
    """The first ``limit`` (ts_ms, value) of one series in [start_ms, end_ms)."""
    stmt = (
        select(Reading.ts_ms, Reading.value)
        .where(Reading.series_id == series_id, Reading.ts_ms >= start_ms, Reading.ts_ms < end_ms)
        .order_by(Reading.ts_ms)
        .limit(limit)
    )
    return session.execute(stmt).all()


def rollups_page(
    session: Session,
    *,
    series_id: int,
    resolution_s: int,
    start_ms: int,
    end_ms: int,
    limit: int,
) -> Sequence[RollupRow]:
    """The first ``limit`` buckets of one series starting in [start_ms, end_ms)."""
    stmt = _rollups_stmt([series_id], resolution_s, start_ms, end_ms).limit(limit)
    return session.execute(stmt).all()


# --- latest ------------------------------------------------------------------------------------


def latest(session: Session, *, series_ids: Sequence[int]) -> dict[int, tuple[int, float]]:
    """series_id → (ts_ms, value) of its newest point, for the series that have one."""
    if not series_ids:
        return {}
    stmt = select(SeriesLatest.series_id, SeriesLatest.ts_ms, SeriesLatest.value).where(
        SeriesLatest.series_id.in_(series_ids)
    )
    return {sid: (ts, value) for sid, ts, value in session.execute(stmt)}
