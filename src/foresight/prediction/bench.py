"""Feature-building benchmark: a fleet's year of hourly data in the store, then ``build_dataset``.

The issue's target: 100 assets × 1 year of hourly data × 10 sensors in under a minute, training
mode, end to end from the database. ``run_features_bench`` seeds that data set into a fresh
database (SQLite file, or a new database on the PostgreSQL server of ``database_url``), then
times ``build_dataset`` in a process of its own (so its peak RSS is its own) and yields
printable lines::

    .venv/bin/python -c "from foresight.prediction.bench import run_features_bench as r
    for line in r(): print(line)"
    .venv/bin/python -c "from foresight.prediction.bench import run_features_bench as r
    for line in r('postgresql+psycopg://postgres@127.0.0.1:5432/test'): print(line)"

Seeding is bulk but goes through the store's own code: rollups of the older points are computed
by ``store.rollup_partials`` (what every write computes) and inserted in bulk (COPY on
PostgreSQL), the newest ``raw_days`` go through ``store.write_arrays`` as ingestion writes them
(raw points, all rollups, latest values). Failures are maintenance records made through the
maintenance service; the sensors drift before each failure so the features have something to
see. Alerts and anomaly minutes are inserted in bulk.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

T0_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def _principal(tenant_id: uuid.UUID) -> Any:
    from foresight.auth.schemas import Principal
    from foresight.models import ActorType, Role

    return Principal(tenant_id, ActorType.system, uuid.UUID(int=0), "bench", Role.admin)


def seed_fleet(
    url: str,
    *,
    assets: int = 100,
    sensors: int = 10,
    days: int = 365,
    raw_days: int = 7,
    start_ms: int = T0_MS,
    seed: int = 0,
) -> tuple[uuid.UUID, int]:
    """A tenant with ``assets`` pumps of ``sensors`` hourly sensors over ``days``; returns
    (tenant id, points)."""
    from foresight.assets import service as assets_service
    from foresight.assets.schemas import AssetCreate, SensorCreate
    from foresight.audit.schemas import Actor
    from foresight.kit.db import Database
    from foresight.maintenance import service as maintenance_service
    from foresight.maintenance.schemas import MaintenanceCreate
    from foresight.models import Criticality, MaintenanceKind, Sensor
    from foresight.tenants import service as tenants_service

    rng = np.random.default_rng(seed)
    db = Database.from_url(url)
    keys = [f"s{i:02d}" for i in range(sensors)]
    hours = days * 24
    ts = start_ms + np.arange(hours, dtype=np.int64) * HOUR_MS
    split = start_ms + (days - raw_days) * DAY_MS  # older: bulk rollups; newer: write path
    failures: dict[uuid.UUID, list[int]] = {}
    with db.transaction() as session:
        tenant = tenants_service.create(
            session, name=f"bench-{uuid.uuid4().hex[:8]}", actor=Actor.system("bench")
        )
        principal = _principal(tenant.id)
        series: list[tuple[uuid.UUID, list[int]]] = []
        levels = list(Criticality)
        for a in range(assets):
            asset = assets_service.create_asset(
                session,
                principal=principal,
                data=AssetCreate(
                    tag=f"P-{a:04d}",
                    name=f"pump {a}",
                    type="pump" if a % 4 else "compressor",
                    criticality=levels[a % len(levels)],
                ),
            )
            ids = []
            for k in keys:
                sensor: Sensor = assets_service.create_sensor(
                    session,
                    principal=principal,
                    asset_id=asset.id,
                    data=SensorCreate(key=k, unit="mm/s" if k == "s00" else "°C"),
                )
                ids.append(sensor.series_id)
            series.append((asset.id, ids))
            n_fail = int(rng.integers(0, 4))
            at = sorted(int(x) for x in rng.integers(40, days - 5, n_fail))
            failures[asset.id] = [start_ms + d * DAY_MS + 7 * HOUR_MS for d in at]
            for f_ms in failures[asset.id]:
                when = datetime.fromtimestamp(f_ms / 1000, UTC)
                maintenance_service.create_record(
                    session,
                    principal=principal,
                    asset_id=asset.id,
                    data=MaintenanceCreate(
                        kind=MaintenanceKind.failure,
                        started_at=when,
                        ended_at=when + timedelta(hours=6),
                        failure_mode="bearing",
                    ),
                )
    tenant_id = tenant.id
    points = 0
    for first in range(0, assets, 10):
        sid_parts, ts_parts, value_parts = [], [], []
        for asset_id, ids in series[first : first + 10]:
            wear = np.zeros(hours)
            for f_ms in failures[asset_id]:
                to_fail = (f_ms - ts) / DAY_MS
                ramp = (to_fail > 0) & (to_fail < 30)
                wear[ramp] += 1 - to_fail[ramp] / 30
            for j, series_id in enumerate(ids):
                base = 20.0 + 5 * j
                value = base * (1 + 0.3 * wear) + rng.normal(0, 1.0, hours)
                sid_parts.append(np.full(hours, series_id, np.int64))
                ts_parts.append(ts)
                value_parts.append(value)
        sid = np.concatenate(sid_parts)
        tss = np.concatenate(ts_parts)
        values = np.concatenate(value_parts)
        points += int(sid.shape[0])
        old = tss < split
        with db.transaction() as session:
            _bulk_rollups(session, sid[old], tss[old], values[old])
            _write_recent(session, sid[~old], tss[~old], values[~old])
    with db.transaction() as session:
        _events(session, tenant_id, [a for a, _ in series], start_ms, days, rng)
    db.dispose()
    return tenant_id, points


def _bulk_rollups(session: Any, sid: Any, ts: Any, value: Any) -> None:
    """The 1 h and 1 d rollups of these points, as the write path computes them."""
    from foresight.timeseries import store

    if not sid.shape[0]:
        return
    partials = store.rollup_partials(store.sorted_unique(sid, ts, value))
    keep = partials.resolution_s != 300
    columns = [getattr(partials, name)[keep] for name in store.PARTIAL_COLUMNS]
    latest_at = np.flatnonzero(np.r_[sid[1:] != sid[:-1], True])
    raw: Any = session.connection().connection.dbapi_connection
    names = ", ".join(store.PARTIAL_COLUMNS)
    if session.get_bind().dialect.name == "postgresql":
        columns[1] = columns[1].astype(np.int32)
        with raw.cursor() as cursor:
            with cursor.copy(f"COPY readings_rollup ({names}) FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(store.copy_buffer(*columns))
            with cursor.copy(
                "COPY series_latest (series_id, ts_ms, value) FROM STDIN (FORMAT BINARY)"
            ) as cp:
                cp.write(store.copy_buffer(sid[latest_at], ts[latest_at], value[latest_at]))
    else:
        rows = list(zip(*(c.tolist() for c in columns), strict=True))
        marks = ", ".join("?" for _ in store.PARTIAL_COLUMNS)
        cursor = raw.cursor()
        try:
            cursor.executemany(f"INSERT INTO readings_rollup ({names}) VALUES ({marks})", rows)
            cursor.executemany(
                "INSERT INTO series_latest (series_id, ts_ms, value) VALUES (?, ?, ?)",
                zip(
                    sid[latest_at].tolist(),
                    ts[latest_at].tolist(),
                    value[latest_at].tolist(),
                    strict=True,
                ),
            )
        finally:
            cursor.close()


def _write_recent(session: Any, sid: Any, ts: Any, value: Any) -> None:
    from foresight.timeseries import store

    if sid.shape[0]:
        store.write_arrays(session, sid, ts, value)


def _events(
    session: Any,
    tenant_id: uuid.UUID,
    asset_ids: list[uuid.UUID],
    start_ms: int,
    days: int,
    rng: np.random.Generator,
) -> None:
    from foresight.detection.anomaly import MinuteScore
    from foresight.detection.anomaly_stage import store_scores
    from foresight.models import Alert, AlertStatus, Severity

    severities = list(Severity)
    scores = []
    for asset_id in asset_ids:
        for i, minute in enumerate(sorted(rng.integers(0, days * 1440, 40).tolist())):
            at = datetime.fromtimestamp((start_ms + minute * 60_000) / 1000, UTC)
            session.add(
                Alert(
                    tenant_id=tenant_id,
                    asset_id=asset_id,
                    source=f"rule:bench-{i}",
                    severity=severities[i % len(severities)],
                    status=AlertStatus.resolved,
                    title="bench",
                    triggered_at=at,
                    last_triggered_at=at,
                    resolved_at=at,
                )
            )
        for minute in rng.integers(0, days * 1440, 200).tolist():
            scores.append(
                MinuteScore(
                    asset_id,
                    tenant_id,
                    "sensor",
                    start_ms + minute * 60_000,
                    1.5,
                    "spike",
                    ("s00",),
                )
            )
    session.flush()
    store_scores(session, scores)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(url: str, tenant_id: str, mode: str, out: Any) -> None:
    from foresight.kit.db import Database
    from foresight.prediction.features import FeatureConfig, build_dataset

    db = Database.from_url(url)
    started = time.perf_counter()
    frame = build_dataset(
        db, uuid.UUID(tenant_id), FeatureConfig(), as_of="latest" if mode == "latest" else None
    )
    seconds = time.perf_counter() - started
    db.dispose()
    finite = float(np.isfinite(frame.X).mean()) if frame.X.size else 0.0
    out.put((seconds, len(frame), len(frame.specs), finite, _peak_rss_mb()))


def _seed_child(url: str, kwargs: dict[str, Any], out: Any) -> None:
    from foresight.kit import migrate

    migrate.upgrade(url)
    started = time.perf_counter()
    tenant_id, points = seed_fleet(url, **kwargs)
    out.put((str(tenant_id), points, time.perf_counter() - started))


def _in_child(target: Any, *args: Any) -> Any:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, out))
    proc.start()
    result = out.get()
    proc.join()
    if proc.exitcode:
        raise RuntimeError(f"{target.__name__} exited with {proc.exitcode}")
    return result


def run_features_bench(
    database_url: str | None = None,
    *,
    assets: int = 100,
    sensors: int = 10,
    days: int = 365,
    raw_days: int = 7,
    repeats: int = 2,
) -> Iterator[str]:
    """Seed a fresh database, time ``build_dataset`` (training, then scoring as of the latest
    reading) ``repeats`` times each; yields printable lines."""
    with tempfile.TemporaryDirectory(prefix="foresight-features-") as tmp:
        url, drop = _fresh_database(database_url, Path(tmp))
        backend = make_url(url).get_backend_name()
        try:
            kwargs = {"assets": assets, "sensors": sensors, "days": days, "raw_days": raw_days}
            tenant_id, points, seed_s = _in_child(_seed_child, url, kwargs)
            yield (
                f"{backend}: seeded {assets} assets × {sensors} sensors × {days} days hourly "
                f"= {points:,} points in {seed_s:.1f} s (raw points for the last {raw_days} days)"
            )
            for mode in ("training", "latest"):
                for _ in range(repeats):
                    seconds, rows, columns, finite, rss = _in_child(_measure, url, tenant_id, mode)
                    yield (
                        f"{backend} build_dataset {mode}: {seconds:.2f} s, {rows:,} rows × "
                        f"{columns} columns, {rows / seconds:,.0f} rows/s, "
                        f"{finite:.0%} finite, peak RSS {rss:,.0f} MB"
                    )
        finally:
            drop()


def _fresh_database(database_url: str | None, tmp: Path) -> tuple[str, Any]:
    if database_url is None or database_url.startswith("sqlite"):
        return f"sqlite:///{tmp / 'features.db'}", lambda: None
    admin_url = make_url(database_url)
    name = f"foresight_features_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return admin_url.set(database=name).render_as_string(hide_password=False), drop
