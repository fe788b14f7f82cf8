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

import gc
import multiprocessing as mp
import queue
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
            at = sorted(int(x) for x in rng.integers(min(40, days // 3), days - 5, n_fail))
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
    while True:  # a child that dies (an error, killed) must not leave us waiting
        try:
            result = out.get(timeout=1)
            break
        except queue.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"{target.__name__} exited with {proc.exitcode}") from None
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


# --- foresight bench predict ------------------------------------------------------------------
# Scoring speed: the targets, p99 of one prediction through HTTP and a batch of 1,000.

SINGLE_P99_TARGET_MS = 20.0
BATCH_TARGET_S = 1.0
BATCH_TARGET_ASSETS = 1000


def _register_champion(url: str, source_tenant: str, target_tenant: str) -> dict[str, Any]:
    """Copy the source tenant's champion into the target tenant's registry as its champion: the
    fleet being scored gets a model trained on a fleet of the same kind (training the big fleet
    itself would only make the bench slower, not the scoring)."""
    from foresight.kit.db import Database
    from foresight.models import ModelVersion
    from foresight.prediction import registry
    from foresight.prediction.service import load_bundle

    db = Database.from_url(url)
    with db.transaction() as session:
        src = registry.champion(session, uuid.UUID(source_tenant))
        assert src is not None, "the training fleet has no champion"
        copy = ModelVersion(
            tenant_id=uuid.UUID(target_tenant),
            version=registry.next_number(session, uuid.UUID(target_tenant)),
            status=src.status,
            data_start=src.data_start,
            data_end=src.data_end,
            holdout_start=src.holdout_start,
            feature_specs=src.feature_specs,
            feature_config=src.feature_config,
            categories=src.categories,
            params=src.params,
            metrics=src.metrics,
            horizons=src.horizons,
            max_rul_days=src.max_rul_days,
            artifact=src.artifact,
            created_by="bench",
            note=f"copied from the training fleet's version {src.version}",
        )
        session.add(copy)
        session.flush()
        registry.promote(session, copy, by="bench")
        # Explanations cost in proportion to the trees of the classifier explained, and one
        # run's model is not another's: the sizes go with the figures.
        bundle = load_bundle(src)
        trees = {
            "rul": bundle.rul_point.num_trees(),
            "explained": bundle.classifiers[bundle.explain_horizon].num_trees(),
            "all": bundle.rul_point.num_trees()
            + sum(c.num_trees() for c in bundle.classifiers.values()),
        }
        info = {"features": len(src.feature_specs), "version": copy.version, "trees": trees}
    db.dispose()
    return info


def _prepare_predict(url: str, kwargs: dict[str, Any], train_assets: int, out: Any) -> None:
    """Migrate, seed the scored fleet and a training fleet, train, register the champion."""
    from foresight.kit import migrate
    from foresight.kit.db import Database
    from foresight.prediction import modeling, service

    migrate.upgrade(url)
    started = time.perf_counter()
    tenant_id, points = seed_fleet(url, **kwargs)
    train_tenant, _ = seed_fleet(url, **{**kwargs, "assets": train_assets, "seed": 1})
    seed_s = time.perf_counter() - started
    started = time.perf_counter()
    db = Database.from_url(url)
    result = service.train(db, train_tenant, train_config=modeling.TrainConfig(num_boost_round=300))
    db.dispose()
    train_s = time.perf_counter() - started
    info = _register_champion(url, str(train_tenant), str(tenant_id))
    out.put((str(tenant_id), points, seed_s, train_s, result.reason, info))


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _spread(values: list[float]) -> str:
    """median (min–max) of repeated figures."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{float(np.median(values)):.3f} ({min(values):.3f}–{max(values):.3f})"


def _service_batches(url: str, tenant_id: str, repeats: int, out: Any) -> None:
    """service.predict over the whole fleet, stored, with and without explanations (warm:
    one unmeasured call first loads the model and fills the connection pool)."""
    from foresight.config import get_settings
    from foresight.kit.db import Database
    from foresight.kit.memory import keep_freed_memory
    from foresight.prediction import service

    # As `foresight serve` does once started (web.app's lifespan): freed memory kept for reuse
    # (FORESIGHT_MALLOC_KEEP_MB), and what exists after the first call is out of the
    # collector's sight, so a full collection does not walk it in the middle of a batch.
    keep_freed_memory(get_settings().malloc_keep_mb)
    db = Database.from_url(url)
    tid = uuid.UUID(tenant_id)
    rows = service.predict(db, tid, store=False)
    gc.collect()
    gc.freeze()
    fallback = sum(r.fallback for r in rows)
    ids = [r.asset_id for r in rows]
    figures: dict[str, list[float]] = {"explain": [], "plain": []}
    for _ in range(repeats):
        for key, explain in (("explain", True), ("plain", False)):
            started = time.perf_counter()
            service.predict(db, tid, ids, include_explanation=explain)
            figures[key].append(time.perf_counter() - started)
    db.dispose()
    out.put((len(rows), fallback, figures))


def _http_measure(
    base: str, token: str, ids: list[str], requests: int, repeats: int
) -> dict[str, Any]:
    import httpx

    rng = np.random.default_rng(7)
    headers = {"Authorization": f"Bearer {token}"}
    result: dict[str, Any] = {"single": {}, "batch": {"explain": [], "plain": []}}
    with httpx.Client(base_url=base, headers=headers, timeout=300) as client:
        probe = client.get(f"/api/v1/assets/{ids[0]}/prediction", params={"refresh": "true"})
        if probe.status_code == 404:  # the asset exists: the route does not (yet)
            return {"missing": f"GET /api/v1/assets/{{id}}/prediction answered {probe.status_code}"}
        probe.raise_for_status()
        result["fallback"] = bool(probe.json().get("fallback"))

        def singles() -> list[float]:
            latencies = []
            for asset in rng.choice(ids, requests).tolist():
                started = time.perf_counter()
                response = client.get(
                    f"/api/v1/assets/{asset}/prediction", params={"refresh": "true"}
                )
                latencies.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
            return latencies

        # First on a fresh server (nothing kept in memory), then again after the batches, as
        # a server that scores its fleet on schedule answers.
        result["single"]["cold"] = singles()
        batch = ids[:BATCH_TARGET_ASSETS]
        for _ in range(repeats):
            for key, explain in (("explain", True), ("plain", False)):
                started = time.perf_counter()
                response = client.post(
                    "/api/v1/predictions",
                    json={"asset_ids": batch, "include_explanation": explain},
                )
                result["batch"][key].append(time.perf_counter() - started)
                response.raise_for_status()
        result["batch_assets"] = len(batch)
        result["single"]["warm"] = singles()
    return result


def _token(url: str, tenant_id: str, secret: str) -> str:
    from foresight.auth import security
    from foresight.config import Settings
    from foresight.kit.db import Database
    from foresight.models import Role, User

    db = Database.from_url(url)
    settings = Settings(database_url=url, secret_key=secret)
    with db.transaction() as session:
        user = User(
            tenant_id=uuid.UUID(tenant_id), email=f"bench-{uuid.uuid4().hex[:6]}@example.com",
            role=Role.admin, password_hash=security.hash_password("bench-password"),
        )  # fmt: skip
        session.add(user)
        session.flush()
        token, _ = security.create_token(
            settings, user_id=user.id, tenant_id=user.tenant_id, version=0, kind="access"
        )
    db.dispose()
    return token


def _asset_ids(url: str, tenant_id: str) -> list[str]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id FROM assets WHERE tenant_id = :t ORDER BY tag"),
            {"t": uuid.UUID(tenant_id).hex if url.startswith("sqlite") else tenant_id},
        ).all()
    engine.dispose()
    return [str(uuid.UUID(str(r[0]))) for r in rows]


def run_predict_bench(
    database_url: str | None = None,
    *,
    assets: int = 1000,
    sensors: int = 10,
    days: int = 60,
    raw_days: int = 7,
    train_assets: int = 100,
    requests: int = 200,
    repeats: int = 3,
    http: bool = True,
) -> Iterator[str]:
    """Seed, train, then time scoring in-process and through a real `foresight serve`; yields
    printable lines (the last ones a Markdown table with the targets)."""
    from foresight import bench as server_bench

    with tempfile.TemporaryDirectory(prefix="foresight-predict-") as tmp:
        url, drop = _fresh_database(database_url, Path(tmp))
        backend = make_url(url).get_backend_name()
        try:
            kwargs = {"assets": assets, "sensors": sensors, "days": days, "raw_days": raw_days}
            tenant_id, points, seed_s, train_s, reason, info = _in_child(
                _prepare_predict, url, kwargs, train_assets
            )
            yield (
                f"{backend}: seeded {assets} assets × {sensors} sensors × {days} days hourly "
                f"= {points:,} points (+ a training fleet of {train_assets}) in {seed_s:.0f} s; "
                f"model trained in {train_s:.0f} s ({reason}), {info['features']} features, "
                f"registered as the scored tenant's champion (version {info['version']}; "
                f"{info['trees']['all']} trees, {info['trees']['explained']} in the explained "
                f"classifier, {info['trees']['rul']} in the RUL model)"
            )
            n_rows, fallback, service_s = _in_child(_service_batches, url, tenant_id, repeats)
            yield (
                f"{backend} service.predict: {n_rows} assets scored, "
                f"{'model-based' if not fallback else f'{fallback} FALLBACK'} predictions"
            )
            rows = [
                (f"service.predict, {n_rows} assets, explanations", service_s["explain"], "s"),
                (f"service.predict, {n_rows} assets, no explanations", service_s["plain"], "s"),
            ]
            http_result: dict[str, Any] = {}
            if http:
                secret = "bench-secret-key-0123456789-0123456789"
                token = _token(url, tenant_id, secret)
                env = server_bench._server_env(
                    url, FORESIGHT_SECRET_KEY=secret, FORESIGHT_SCHEDULE_EMBEDDED="false"
                )
                log = Path(tmp) / "server.log"
                server, base = server_bench._start_server(env, log)
                try:
                    http_result = _http_measure(
                        base, token, _asset_ids(url, tenant_id), requests, repeats
                    )
                finally:
                    server.terminate()
                    server.wait(timeout=60)
            yield from _predict_table(backend, rows, http_result, repeats, requests)
        finally:
            drop()


def _predict_table(
    backend: str,
    service_rows: list[tuple[str, list[float], str]],
    http_result: dict[str, Any],
    repeats: int,
    requests: int,
) -> Iterator[str]:
    def verdict(value: float, target: float) -> str:
        return "pass" if value <= target else "FAIL"

    if http_result.get("missing"):
        yield f"{backend} HTTP: not measured ({http_result['missing']})"
    elif http_result:
        yield (
            f"{backend} HTTP: real `foresight serve` (uvicorn) on a free port, httpx client in "
            f"this process; predictions {'FALLBACK' if http_result['fallback'] else 'model-based'}"
        )
    yield ""
    yield f"| {backend} | figure | target | |"
    yield "|---|---|---|---|"
    singles = (
        ("fresh server, nothing kept", "cold"),
        ("after the fleet's scoring", "warm"),
    )
    for label, key in singles:
        lat = http_result.get("single", {}).get(key)
        if lat:
            p50, p95, p99 = (_percentile(lat, q) for q in (50, 95, 99))
            yield (
                f"| GET /assets/{{id}}/prediction?refresh=true, {label} ({requests} requests): "
                f"p50 / p95 / p99 ms | {p50:.1f} / {p95:.1f} / {p99:.1f} | p99 ≤ "
                f"{SINGLE_P99_TARGET_MS:.0f} ms | {verdict(p99, SINGLE_P99_TARGET_MS)} |"
            )
    for label, key in (("explanations", "explain"), ("no explanations", "plain")):
        times = http_result.get("batch", {}).get(key)
        if times:
            n = http_result["batch_assets"]
            med = float(np.median(times))
            target = f"≤ {BATCH_TARGET_S:.0f} s" if n == BATCH_TARGET_ASSETS else "(1,000 assets)"
            yield (
                f"| POST /predictions, {n} assets, {label}: s, median (range) of {repeats} "
                f"| {_spread(times)} | {target} | {verdict(med, BATCH_TARGET_S)} |"
            )
    for label, times, _unit in service_rows:
        med = float(np.median(times))
        yield (
            f"| {label}: s, median (range) of {repeats} | {_spread(times)} | ≤ "
            f"{BATCH_TARGET_S:.0f} s for 1,000 | {verdict(med, BATCH_TARGET_S)} |"
        )
