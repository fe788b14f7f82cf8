"""Querying an asset's readings: raw points, rollups, merged rollups, CSV export, latest values.

Every query starts from the caller's asset (``assets.service.get_asset``, tenant-scoped: another
tenant's asset is "not found") and reads only the series of that asset's sensors.

Resolution. ``auto`` picks the finest of raw, 5m, 1h, 1d that keeps every sensor at or under
``MAX_POINTS``: raw when each sensor's actual point count in the range (counted through the index,
reading at most ``MAX_POINTS + 1`` entries) fits, unless a sensor's ``sampling_interval_s`` already
says it cannot; otherwise the first rollup whose number of buckets over the range fits. When even
daily buckets are too many, consecutive daily rollups are merged into n-day buckets (n as small as
fits, aligned on the epoch) with Chan et al.'s pairwise formulas, which are exact for count, mean
and m2. Rollup points are whole buckets: every bucket that overlaps [start, end) is returned, so
the first may start before ``start`` and the last may hold points after ``end``.

An explicit resolution is honoured as asked; a JSON answer refuses (422) to carry more than
``MAX_POINTS`` points of one sensor. CSV exports have no cap: they are streamed in keyset pages,
each page read in a short transaction of its own.
"""

from __future__ import annotations

import csv
import io
import math
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from foresight.assets import service as assets_service
from foresight.kit.db import Database
from foresight.kit.errors import FieldError, InvalidInput
from foresight.kit.time import utcnow
from foresight.models import Asset, Sensor
from foresight.models.timeseries import RESOLUTIONS_S
from foresight.timeseries import repository
from foresight.timeseries.latest import LatestCache
from foresight.timeseries.repository import RollupRow
from foresight.timeseries.schemas import (
    MAX_POINTS,
    LatestReadings,
    LatestValue,
    RawPoint,
    ReadingsQuery,
    ReadingsResponse,
    Resolution,
    RollupPoint,
    SensorSeries,
)

DAY_S = 86_400
DAY_MS = DAY_S * 1000
DEFAULT_WINDOW = timedelta(hours=24)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Rows per keyset page (and per streamed chunk) of a CSV export.
CSV_PAGE = 5000
RAW_CSV_HEADER = ("sensor", "ts", "value")
ROLLUP_CSV_HEADER = ("sensor", "ts", "count", "mean", "min", "max", "stddev", "last")

_LABELS = {300: "5m", 3600: "1h", DAY_S: "1d"}
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9_.-]")


# --- time ---------------------------------------------------------------------------------------


def to_ms(value: datetime) -> int:
    """Epoch milliseconds, rounded up: ts_ms >= to_ms(t) exactly when the point is at or after t."""
    micros = (value - EPOCH) // timedelta(microseconds=1)
    return -(-micros // 1000)


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def iso(ms: int) -> str:
    """The same ISO 8601 form the JSON answers use."""
    return from_ms(ms).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Window:
    """The half-open range [start, end) asked for."""

    start: datetime
    end: datetime

    @property
    def start_ms(self) -> int:
        return to_ms(self.start)

    @property
    def end_ms(self) -> int:
        return to_ms(self.end)

    def bucket_count(self, span_ms: int) -> int:
        """How many epoch-aligned buckets of ``span_ms`` overlap the window."""
        start_ms, end_ms = self.start_ms, self.end_ms
        if end_ms <= start_ms:
            return 0
        return (end_ms - 1) // span_ms - start_ms // span_ms + 1


def resolve_window(start: datetime | None, end: datetime | None, *, now: datetime) -> Window:
    """Defaults: end = now, start = end - 24 h. start must come before end."""
    end = now if end is None else end
    if start is None:
        try:
            start = end - DEFAULT_WINDOW
        except OverflowError:
            start = datetime.min.replace(tzinfo=UTC)
    if start >= end:
        raise InvalidInput(
            f"start ({start.isoformat()}) must be before end ({end.isoformat()}); "
            "end defaults to now.",
            errors=[FieldError(["query", "start"], "must be before end", "range")],
        )
    return Window(start, end)


# --- resolution -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What to read: raw points (``resolution_s`` None), one rollup table, or merged days."""

    resolution_s: int | None

    @property
    def label(self) -> str:
        if self.resolution_s is None:
            return "raw"
        return _LABELS.get(self.resolution_s) or f"{self.resolution_s // DAY_S}d"

    @property
    def merged(self) -> bool:
        return self.resolution_s is not None and self.resolution_s not in RESOLUTIONS_S

    @property
    def span_ms(self) -> int:
        assert self.resolution_s is not None
        return self.resolution_s * 1000


def _raw_fits(session: Session, sensors: Sequence[Sensor], window: Window) -> bool:
    seconds = (window.end_ms - window.start_ms) / 1000
    for sensor in sensors:
        interval = sensor.sampling_interval_s
        if interval and seconds / interval > MAX_POINTS:
            return False  # its declared sampling rate alone rules raw out: no need to count
    if not sensors:
        return True
    counts = repository.count_points(
        session,
        series_ids=[s.series_id for s in sensors],
        start_ms=window.start_ms,
        end_ms=window.end_ms,
        limit=MAX_POINTS + 1,
    )
    return max(counts.values()) <= MAX_POINTS


def auto_plan(session: Session, sensors: Sequence[Sensor], window: Window) -> Plan:
    """The finest resolution that keeps every sensor at or under ``MAX_POINTS`` points."""
    if _raw_fits(session, sensors, window):
        return Plan(None)
    for resolution_s in RESOLUTIONS_S:
        if window.bucket_count(resolution_s * 1000) <= MAX_POINTS:
            return Plan(resolution_s)
    days = max(2, -(-(window.end_ms - window.start_ms) // (MAX_POINTS * DAY_MS)))
    while window.bucket_count(days * DAY_MS) > MAX_POINTS:
        days += 1
    return Plan(days * DAY_S)


def _check_point_cap(
    session: Session, sensors: Sequence[Sensor], window: Window, plan: Plan
) -> None:
    """Refuse an explicit resolution whose JSON answer would exceed ``MAX_POINTS`` per sensor."""
    if not sensors:
        return
    series_ids = [s.series_id for s in sensors]
    if plan.resolution_s is None:
        counts = repository.count_points(
            session,
            series_ids=series_ids,
            start_ms=window.start_ms,
            end_ms=window.end_ms,
            limit=MAX_POINTS + 1,
        )
    elif window.bucket_count(plan.span_ms) <= MAX_POINTS:
        return
    else:
        counts = repository.count_rollups(
            session,
            series_ids=series_ids,
            resolution_s=plan.resolution_s,
            start_ms=_bucket_floor(window.start_ms, plan.span_ms),
            end_ms=window.end_ms,
            limit=MAX_POINTS + 1,
        )
    over = [s.key for s in sensors if counts[s.series_id] > MAX_POINTS]
    if over:
        raise InvalidInput(
            f"More than {MAX_POINTS} points of sensor(s) {', '.join(over)} at "
            f"resolution={plan.label} in this range: use resolution=auto, a coarser resolution, "
            "a shorter range, or format=csv.",
            errors=[
                FieldError(["query", "resolution"], "too many points for the range", "too_many")
            ],
        )


# --- rollups --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Aggregate:
    """Mergeable statistics of a bucket (m2: sum of squared deviations from the mean)."""

    count: int
    mean: float
    m2: float
    min: float
    max: float
    last_ts_ms: int
    last: float

    @classmethod
    def from_row(cls, row: RollupRow) -> Aggregate:
        _, _, count, mean, m2, low, high, last_ts_ms, last = row
        return cls(int(count), mean, m2, low, high, int(last_ts_ms), last)

    def merge(self, other: Aggregate) -> Aggregate:
        """Chan, Golub and LeVeque's pairwise update: exact for count, mean and m2."""
        count = self.count + other.count
        delta = other.mean - self.mean
        newer = other if other.last_ts_ms > self.last_ts_ms else self
        return Aggregate(
            count=count,
            mean=self.mean + delta * other.count / count,
            m2=self.m2 + other.m2 + delta * delta * self.count * other.count / count,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
            last_ts_ms=newer.last_ts_ms,
            last=newer.last,
        )

    @property
    def stddev(self) -> float:
        """Population standard deviation."""
        return math.sqrt(max(self.m2, 0.0) / self.count) if self.count else 0.0


def _bucket_floor(ms: int, span_ms: int) -> int:
    return ms // span_ms * span_ms


def _merged_rollups(
    session: Session, series_ids: Sequence[int], window: Window, span_ms: int
) -> Iterator[tuple[int, int, Aggregate]]:
    """(series_id, bucket_ms, aggregate) of whole ``span_ms`` buckets merged from daily rollups.

    Reads the daily rollups of the range once, in order, a chunk at a time: at most one row per
    sensor and day with data; what is kept in memory is one bucket.
    """
    rows = repository.stream_rollups(
        session,
        series_ids=series_ids,
        resolution_s=DAY_S,
        start_ms=_bucket_floor(window.start_ms, span_ms),
        end_ms=-(-window.end_ms // span_ms) * span_ms,
    )
    key: tuple[int, int] | None = None
    acc: Aggregate | None = None
    for row in rows:
        row_key = (row[0], _bucket_floor(row[1], span_ms))
        aggregate = Aggregate.from_row(row)
        if acc is not None and row_key == key:
            acc = acc.merge(aggregate)
            continue
        if key is not None and acc is not None:
            yield key[0], key[1], acc
        key, acc = row_key, aggregate
    if key is not None and acc is not None:
        yield key[0], key[1], acc


def _rollup_point(bucket_ms: int, agg: Aggregate) -> RollupPoint:
    return RollupPoint(
        ts=from_ms(bucket_ms),
        count=agg.count,
        mean=agg.mean,
        min=agg.min,
        max=agg.max,
        stddev=agg.stddev,
        last=agg.last,
    )


# --- readings (JSON) ------------------------------------------------------------------------


def _select_sensors(session: Session, asset: Asset, keys: Sequence[str]) -> list[Sensor]:
    """The asset's sensors with these keys (in the order asked), or all of them by key."""
    sensors = repository.asset_sensors(session, tenant_id=asset.tenant_id, asset_id=asset.id)
    if not keys:
        return sensors
    by_key = {s.key: s for s in sensors}
    wanted = list(dict.fromkeys(keys))
    unknown = [k for k in wanted if k not in by_key]
    if unknown:
        raise InvalidInput(
            f"Asset {asset.tag!r} has no sensor {', '.join(repr(k) for k in unknown)}.",
            errors=[
                FieldError(["query", "sensor"], f"unknown sensor {k!r}", "not_found")
                for k in unknown
            ],
        )
    return [by_key[k] for k in wanted]


PointList = list[RawPoint] | list[RollupPoint]


def _read_points(
    session: Session, sensors: Sequence[Sensor], window: Window, plan: Plan
) -> dict[int, PointList]:
    """series_id → its points (one statement for every sensor)."""
    series_ids = [s.series_id for s in sensors]
    if not series_ids:
        return {}
    if plan.resolution_s is None:
        raw: dict[int, list[RawPoint]] = {}
        for sid, ts_ms, value in repository.points(
            session, series_ids=series_ids, start_ms=window.start_ms, end_ms=window.end_ms
        ):
            raw.setdefault(sid, []).append(RawPoint(ts=from_ms(ts_ms), value=value))
        return dict(raw)
    rolled: dict[int, list[RollupPoint]] = {}
    if plan.merged:
        for sid, bucket_ms, agg in _merged_rollups(session, series_ids, window, plan.span_ms):
            rolled.setdefault(sid, []).append(_rollup_point(bucket_ms, agg))
    else:
        for row in repository.rollups(
            session,
            series_ids=series_ids,
            resolution_s=plan.resolution_s,
            start_ms=_bucket_floor(window.start_ms, plan.span_ms),
            end_ms=window.end_ms,
        ):
            rolled.setdefault(row[0], []).append(_rollup_point(row[1], Aggregate.from_row(row)))
    return dict(rolled)


def _plan_for(
    session: Session,
    sensors: Sequence[Sensor],
    window: Window,
    resolution: Resolution,
    *,
    capped: bool,
) -> Plan:
    if resolution is Resolution.auto:
        return auto_plan(session, sensors, window)
    plan = Plan(resolution.seconds)
    if capped:
        _check_point_cap(session, sensors, window, plan)
    return plan


def get_readings(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    asset_id: uuid.UUID,
    query: ReadingsQuery,
    now: datetime | None = None,
) -> ReadingsResponse:
    asset = assets_service.get_asset(session, tenant_id=tenant_id, asset_id=asset_id)
    window = resolve_window(query.start, query.end, now=now or utcnow())
    sensors = _select_sensors(session, asset, query.sensors)
    plan = _plan_for(session, sensors, window, query.resolution, capped=True)
    by_series = _read_points(session, sensors, window, plan)
    return ReadingsResponse(
        asset_id=asset.id,
        start=window.start,
        end=window.end,
        resolution=plan.label,
        series=[
            SensorSeries(sensor=s.key, unit=s.unit, points=by_series.get(s.series_id, []))
            for s in sensors
        ],
    )


# --- CSV export -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Export:
    """A validated CSV export, ready to stream (it holds no session)."""

    filename: str
    sensors: tuple[tuple[str, int], ...]  # (key, series_id), in output order
    window: Window
    plan: Plan

    @property
    def header(self) -> tuple[str, ...]:
        return RAW_CSV_HEADER if self.plan.resolution_s is None else ROLLUP_CSV_HEADER


def prepare_export(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    asset_id: uuid.UUID,
    query: ReadingsQuery,
    now: datetime | None = None,
) -> Export:
    """Check everything a CSV export needs before the first byte is sent."""
    asset = assets_service.get_asset(session, tenant_id=tenant_id, asset_id=asset_id)
    window = resolve_window(query.start, query.end, now=now or utcnow())
    sensors = _select_sensors(session, asset, query.sensors)
    plan = _plan_for(session, sensors, window, query.resolution, capped=False)
    return Export(
        filename=f"{_UNSAFE_FILENAME.sub('_', asset.tag)}-readings.csv",
        sensors=tuple((s.key, s.series_id) for s in sensors),
        window=window,
        plan=plan,
    )


class _CsvBuffer:
    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer)

    def write(self, row: Sequence[object]) -> None:
        self._writer.writerow(row)

    def take(self) -> str:
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text


def _rollup_csv_row(key: str, bucket_ms: int, agg: Aggregate) -> tuple[object, ...]:
    return (key, iso(bucket_ms), agg.count, agg.mean, agg.min, agg.max, agg.stddev, agg.last)


def _export_series(
    db: Database, export: Export, key: str, series_id: int, out: _CsvBuffer
) -> Iterator[str]:
    plan, window = export.plan, export.window
    if plan.merged:
        with db.transaction(write=False) as session:
            merged = _merged_rollups(session, [series_id], window, plan.span_ms)
            for rows, (_, bucket_ms, agg) in enumerate(merged, start=1):
                out.write(_rollup_csv_row(key, bucket_ms, agg))
                if rows % CSV_PAGE == 0:
                    yield out.take()
        return
    # Keyset pages, each in a transaction of its own: no snapshot or connection is held while
    # the client reads.
    position = (
        window.start_ms
        if plan.resolution_s is None
        else _bucket_floor(window.start_ms, plan.span_ms)
    )
    while True:
        with db.transaction(write=False) as session:
            if plan.resolution_s is None:
                page_raw = repository.points_page(
                    session,
                    series_id=series_id,
                    start_ms=position,
                    end_ms=window.end_ms,
                    limit=CSV_PAGE,
                )
                for ts_ms, value in page_raw:
                    out.write((key, iso(ts_ms), value))
                size = len(page_raw)
                last = page_raw[-1][0] if page_raw else position
            else:
                page = repository.rollups_page(
                    session,
                    series_id=series_id,
                    resolution_s=plan.resolution_s,
                    start_ms=position,
                    end_ms=window.end_ms,
                    limit=CSV_PAGE,
                )
                for row in page:
                    out.write(_rollup_csv_row(key, row[1], Aggregate.from_row(row)))
                size = len(page)
                last = page[-1][1] if page else position
        yield out.take()
        if size < CSV_PAGE:
            return
        position = last + 1


def export_csv(db: Database, export: Export) -> Iterator[str]:
    """The CSV text, a page at a time; memory stays flat whatever the range."""
    out = _CsvBuffer()
    out.write(export.header)
    yield out.take()
    for key, series_id in export.sensors:
        for chunk in _export_series(db, export, key, series_id, out):
            if chunk:
                yield chunk
    rest = out.take()
    if rest:
        yield rest


# --- latest ---------------------------------------------------------------------------------


def latest_readings(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    asset_id: uuid.UUID,
    cache: LatestCache | None = None,
) -> LatestReadings:
    """The newest value of each of the asset's sensors: from memory (``cache``), with one
    primary-key lookup for the series it has not checked recently (or all, without a cache)."""
    asset = assets_service.get_asset(session, tenant_id=tenant_id, asset_id=asset_id)
    sensors = repository.asset_sensors(session, tenant_id=tenant_id, asset_id=asset.id)
    series_ids = [s.series_id for s in sensors]
    if cache is None:
        latest: dict[int, tuple[int, float] | None] = dict(
            repository.latest(session, series_ids=series_ids)
        )
    else:
        latest, stale = cache.get_many(series_ids)
        if stale:
            latest.update(cache.refresh(stale, repository.latest(session, series_ids=stale)))
    values = []
    for sensor in sensors:
        found = latest.get(sensor.series_id)
        values.append(
            LatestValue(
                sensor=sensor.key,
                unit=sensor.unit,
                ts=from_ms(found[0]) if found else None,
                value=found[1] if found else None,
            )
        )
    return LatestReadings(asset_id=asset.id, sensors=values)
