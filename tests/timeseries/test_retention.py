"""Retention on both backends: per-tenant limits, partition drops, chunks, orphans, the job."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from typer.testing import CliRunner

from foresight.assets import service as assets_service
from foresight.assets.schemas import AssetCreate, SensorCreate
from foresight.audit.schemas import Actor
from foresight.auth.schemas import Principal
from foresight.cli import app as cli_app
from foresight.config import Settings, get_settings
from foresight.kit.db import Database
from foresight.models import ActorType, Reading, Role, Rollup, SeriesLatest, Tenant
from foresight.tenants import service as tenants_service
from foresight.tenants.schemas import TenantUpdate
from foresight.timeseries import store
from foresight.timeseries.retention import (
    EXPIRED_PARTITION,
    ORPHANED,
    RetentionJob,
    enforce,
)
from foresight.timeseries.store import Points, partition_index, write_points
from foresight.web.app import create_app
from tests.factories import Factory

DAY_MS = 86_400_000
NOW = datetime(2026, 6, 3, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def ago(days: float, now_ms: int = NOW_MS) -> int:
    return now_ms - int(days * DAY_MS)


def _principal(tenant: Tenant) -> Principal:
    return Principal(tenant.id, ActorType.system, uuid.UUID(int=0), "test", Role.admin)


def make_tenant(
    factory: Factory, sensors: int = 1, settings: dict[str, Any] | None = None
) -> tuple[Tenant, list[int]]:
    """A tenant with one asset and ``sensors`` sensors; returns it and their series ids."""
    tenant = factory.tenant()
    with factory.db.transaction() as session:
        asset = assets_service.create_asset(
            session, principal=_principal(tenant), data=AssetCreate(tag="PUMP-1", name="Pump")
        )
        ids = [
            assets_service.create_sensor(
                session,
                principal=_principal(tenant),
                asset_id=asset.id,
                data=SensorCreate(key=f"s{i}"),
            ).series_id
            for i in range(sensors)
        ]
    if settings is not None:
        set_settings(factory.db, tenant, settings)
    return tenant, ids


def set_settings(db: Database, tenant: Tenant, settings: dict[str, Any]) -> None:
    with db.transaction() as session:
        tenants_service.update(
            session,
            tenant_id=tenant.id,
            data=TenantUpdate(settings=settings),
            actor=Actor.system("test", tenant.id),
        )


def write(db: Database, series_id: int, *ts_ms: int) -> None:
    points = Points()
    for ts in ts_ms:
        points.append(series_id, ts, float(ts % 1000))
    with db.transaction() as session:
        write_points(session, points)


def raw(db: Database, series_id: int) -> set[int]:
    with db.transaction(write=False) as session:
        return set(session.scalars(select(Reading.ts_ms).where(Reading.series_id == series_id)))


def buckets(db: Database, series_id: int, resolution_s: int) -> set[int]:
    with db.transaction(write=False) as session:
        return set(
            session.scalars(
                select(Rollup.bucket_ms).where(
                    Rollup.series_id == series_id, Rollup.resolution_s == resolution_s
                )
            )
        )


def bucket_of(ts_ms: int, resolution_s: int) -> int:
    span = resolution_s * 1000
    return ts_ms // span * span


def latest(db: Database) -> dict[int, int]:
    with db.transaction(write=False) as session:
        return {
            int(s): int(t)
            for s, t in session.execute(select(SeriesLatest.series_id, SeriesLatest.ts_ms))
        }


def snapshot(db: Database) -> dict[str, Any]:
    with db.transaction(write=False) as session:
        readings = session.execute(select(Reading.series_id, Reading.ts_ms))
        rollups = session.execute(select(Rollup.series_id, Rollup.resolution_s, Rollup.bucket_ms))
        return {
            "readings": sorted(tuple(r) for r in readings),
            "rollups": sorted(tuple(r) for r in rollups),
            "latest": latest(db),
            "partitions": partitions(db),
        }


def partitions(db: Database) -> set[str]:
    if db.engine.dialect.name != "postgresql":
        return set()
    with db.engine.connect() as conn:
        return set(
            conn.execute(
                text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'readings'::regclass"
                )
            ).scalars()
        )


def partition_exists(db: Database, ts_ms: int) -> bool:
    with db.engine.connect() as conn:
        name = f"readings_p{partition_index(ts_ms)}"
        return conn.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar() is not None


def in_default_partition(db: Database) -> int:
    with db.engine.connect() as conn:
        if conn.execute(text("SELECT to_regclass(:n)"), {"n": EXPIRED_PARTITION}).scalar() is None:
            return 0
        return int(conn.execute(text(f"SELECT COUNT(*) FROM {EXPIRED_PARTITION}")).scalar_one())


def postgres_only(db: Database) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("partitions exist on PostgreSQL only")
    # The database is emptied between tests but partitions stay: drop the ones other tests left
    # (``enforce`` would not: with no tenant holding data it drops nothing), so the partitions a
    # test expects to be dropped are the only candidates.
    url = str(db.engine.url)
    with db.engine.begin() as conn:
        for name in conn.execute(
            text(
                "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'readings'::regclass AND c.relname LIKE 'readings\\_p%'"
            )
        ).scalars():
            conn.execute(text(f"DROP TABLE {name}"))
            store.forget_partition(url, int(name.removeprefix("readings_p")))


# --- defaults and per-tenant settings ---------------------------------------------------------


def test_defaults_keep_raw_90_days_5m_30_1h_90_and_1d_forever(
    db: Database, factory: Factory
) -> None:
    _, (sid,) = make_tenant(factory)
    cutoff = ago(90)
    old, kept = [ago(400), ago(200), ago(100), cutoff - 1], [cutoff, ago(60), ago(20), ago(1)]
    write(db, sid, *old, *kept)

    report = enforce(db, NOW)

    assert raw(db, sid) == set(kept)  # 1 ms older than 90 days goes, exactly 90 days stays
    assert buckets(db, sid, 300) == {bucket_of(ts, 300) for ts in (ago(20), ago(1))}
    assert buckets(db, sid, 3600) == {bucket_of(ts, 3600) for ts in kept}
    assert buckets(db, sid, 86400) == {bucket_of(ts, 86400) for ts in old + kept}
    assert latest(db) == {sid: ago(1)}
    assert report.rows("readings_rollup", resolution_s=86400) == 0
    assert report.rows("readings_rollup", resolution_s=300) == 6
    if db.engine.dialect.name == "sqlite":
        assert report.rows("readings") == 4 and report.partitions_dropped == []
    else:  # the partitions of 400, 200 and 100 days ago went whole
        dropped = {f"readings_p{partition_index(ts)}" for ts in old[:3]}
        assert dropped <= set(report.partitions_dropped)
        assert report.rows("readings") == 1
        assert not any(partition_exists(db, ts) for ts in old[:3])


def test_each_tenant_keeps_its_own_retention(db: Database, factory: Factory) -> None:
    short, (a,) = make_tenant(factory, settings={"retention_raw_days": 30, "retention_1h_days": 10})
    default, (b,) = make_tenant(factory)
    for sid in (a, b):
        write(db, sid, ago(120), ago(60), ago(5))

    report = enforce(db, NOW)

    assert raw(db, a) == {ago(5)}
    assert raw(db, b) == {ago(60), ago(5)}
    assert buckets(db, a, 3600) == {bucket_of(ago(5), 3600)}
    assert buckets(db, b, 3600) == {bucket_of(ago(60), 3600), bucket_of(ago(5), 3600)}
    sqlite = db.engine.dialect.name == "sqlite"
    # On PostgreSQL the 120-day-old points go with their partition; the short tenant's
    # 60-day-old point shares a kept partition and is deleted as a row.
    assert report.rows("readings", short.name) == (2 if sqlite else 1)
    assert report.rows("readings", default.name) == (1 if sqlite else 0)
    if not sqlite:
        assert not partition_exists(db, ago(120))  # older than both tenants' cutoffs
        assert partition_exists(db, ago(60)) and partition_exists(db, ago(5))


def test_rollups_follow_each_resolution_setting(db: Database, factory: Factory) -> None:
    _, (sid,) = make_tenant(
        factory,
        settings={"retention_5m_days": 1, "retention_1h_days": 7, "retention_1d_days": 365},
    )
    _, (forever,) = make_tenant(factory)
    points = [ago(400), ago(30), ago(3), ago(0.5)]
    for series in (sid, forever):
        write(db, series, *points)

    enforce(db, NOW)

    assert buckets(db, sid, 300) == {bucket_of(ago(0.5), 300)}
    assert buckets(db, sid, 3600) == {bucket_of(ts, 3600) for ts in points[2:]}
    assert buckets(db, sid, 86400) == {bucket_of(ts, 86400) for ts in points[1:]}
    # The default tenant keeps daily rollups forever, the 400-day-old one too.
    assert buckets(db, forever, 86400) == {bucket_of(ts, 86400) for ts in points}


# --- PostgreSQL partitions --------------------------------------------------------------------


def test_partition_dropped_only_when_every_tenant_is_past_it(
    db: Database, factory: Factory
) -> None:
    postgres_only(db)
    _, (a,) = make_tenant(factory, settings={"retention_raw_days": 30})
    keeper, (b,) = make_tenant(factory, settings={"retention_raw_days": None})
    factory.tenant()  # a tenant without sensors constrains nothing
    old = ago(120)
    write(db, a, old, old + 1)
    write(db, b, old)

    first = enforce(db, NOW)
    assert partition_exists(db, old)  # `keeper` keeps raw points forever
    assert f"readings_p{partition_index(old)}" not in first.partitions_dropped
    assert raw(db, a) == set() and raw(db, b) == {old}
    assert first.rows("readings", keeper.name) == 0

    set_settings(db, keeper, {"retention_raw_days": 100})
    second = enforce(db, NOW)
    assert second.partitions_dropped == [f"readings_p{partition_index(old)}"]
    assert not partition_exists(db, old) and raw(db, b) == set()
    assert second.rows("readings") == 0  # gone with the partition, not row by row

    # This process forgot the partition: writing into its range creates it again.
    write(db, b, old)
    assert partition_exists(db, old) and raw(db, b) == {old}


def test_a_stale_partition_cache_in_another_process_does_not_break_writes(
    db: Database, factory: Factory
) -> None:
    postgres_only(db)
    _, (sid,) = make_tenant(factory)
    old = ago(120)
    write(db, sid, old)
    url = str(db.engine.url)
    assert enforce(db, NOW).partitions_dropped == [f"readings_p{partition_index(old)}"]

    # Another process still believes the partition exists: its write must not fail.
    store._known_partitions[url].add(partition_index(old))
    write(db, sid, old + 1)
    assert raw(db, sid) == {old + 1} and in_default_partition(db) == 1
    # The next run deletes that expired point, so a process that does not know the range can
    # create the partition again.
    assert enforce(db, NOW).rows("readings") == 1
    assert in_default_partition(db) == 0
    store.forget_partition(url, partition_index(old))
    write(db, sid, old + 2)
    assert partition_exists(db, old) and raw(db, sid) == {old + 2}


def test_points_kept_after_a_lengthened_retention_get_their_partition_back(
    db: Database, factory: Factory
) -> None:
    postgres_only(db)
    tenant, (sid,) = make_tenant(factory)
    old = ago(120)
    write(db, sid, old)
    enforce(db, NOW)
    store._known_partitions[str(db.engine.url)].add(partition_index(old))  # a stale process
    write(db, sid, old + 1)
    set_settings(db, tenant, {"retention_raw_days": None})

    report = enforce(db, NOW)

    name = f"readings_p{partition_index(old)}"
    assert report.partitions_restored == [name]
    assert in_default_partition(db) == 0 and raw(db, sid) == {old + 1}
    with db.engine.connect() as conn:
        assert conn.execute(text(f"SELECT ts_ms FROM {name}")).scalars().all() == [old + 1]
    store.forget_partition(str(db.engine.url), partition_index(old))
    write(db, sid, old + 2)  # a process that does not know it finds it
    assert raw(db, sid) == {old + 1, old + 2}


# --- orphans, chunks, dry runs ----------------------------------------------------------------


def _delete_sensor(db: Database, tenant: Tenant, series_id: int) -> None:
    from foresight.models import Sensor

    with db.transaction() as session:
        sensor = session.scalars(select(Sensor).where(Sensor.series_id == series_id)).one()
        assets_service.delete_sensor(
            session, principal=_principal(tenant), asset_id=sensor.asset_id, sensor_id=sensor.id
        )


def test_orphaned_series_are_purged_whatever_their_age(db: Database, factory: Factory) -> None:
    tenant, (gone, stays, last) = make_tenant(factory, sensors=3)
    for sid in (gone, stays, last):
        write(db, sid, ago(2), ago(1))
    _delete_sensor(db, tenant, gone)

    report = enforce(db, NOW, chunk_rows=1)

    assert raw(db, gone) == set() and all(buckets(db, gone, r) == set() for r in (300, 86400))
    assert raw(db, stays) == {ago(2), ago(1)} and buckets(db, stays, 86400)
    assert latest(db) == {stays: ago(1), last: ago(1)}
    assert report.rows("readings", ORPHANED) == 2
    assert report.rows("series_latest", ORPHANED) == 1


def test_the_highest_orphan_keeps_its_latest_row_on_sqlite_so_ids_are_not_reused(
    db: Database, factory: Factory
) -> None:
    tenant, (first, highest) = make_tenant(factory, sensors=2)
    write(db, highest, ago(1))
    _delete_sensor(db, tenant, highest)

    enforce(db, NOW)

    assert raw(db, highest) == set() and buckets(db, highest, 86400) == set()
    sqlite = db.engine.dialect.name == "sqlite"
    assert latest(db) == ({highest: ago(1)} if sqlite else {})
    _, (new,) = make_tenant(factory)
    assert new > highest


def test_deletes_run_in_bounded_chunks(db: Database, factory: Factory) -> None:
    short, (sid,) = make_tenant(factory, settings={"retention_raw_days": 30})
    make_tenant(factory, settings={"retention_raw_days": None})  # so no partition is dropped
    expired = [ago(40) + i * 300_000 for i in range(35)]  # 35 points 5 min apart
    write(db, sid, *expired, ago(1))

    report = enforce(db, NOW, chunk_rows=10)

    assert raw(db, sid) == {ago(1)}
    assert report.partitions_dropped == []
    assert (report.rows("readings", short.name), report.chunks("readings", short.name)) == (35, 4)
    assert report.rows("readings_rollup", short.name, 300) == 35
    assert report.chunks("readings_rollup", short.name, 300) == 4


def test_dry_run_changes_nothing_and_predicts_the_run(db: Database, factory: Factory) -> None:
    _, (a,) = make_tenant(factory, settings={"retention_raw_days": 30})
    _, (b,) = make_tenant(factory)
    for sid in (a, b):
        write(db, sid, ago(300), ago(120), ago(60), ago(40), ago(5))
    before = snapshot(db)

    dry = enforce(db, NOW, dry_run=True, chunk_rows=2)

    assert snapshot(db) == before
    assert dry.dry_run and dry.total_rows > 0
    real = enforce(db, NOW, chunk_rows=2)
    assert snapshot(db) != before
    assert dry.partitions_dropped == real.partitions_dropped
    assert [(r.what, r.scope, r.rows, r.chunks) for r in dry.removals] == [
        (r.what, r.scope, r.rows, r.chunks) for r in real.removals
    ]
    assert any("would delete" in line for line in dry.lines())


def test_one_tenant_only(db: Database, factory: Factory) -> None:
    one, (a,) = make_tenant(factory)
    _, (b,) = make_tenant(factory)
    for sid in (a, b):
        write(db, sid, ago(200), ago(1))
    keep = partitions(db)

    report = enforce(db, NOW, tenant=one.name)

    assert raw(db, a) == {ago(1)} and raw(db, b) == {ago(200), ago(1)}
    assert report.partitions_dropped == [] and partitions(db) == keep


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -5, 1.5, "30", True, 36_501, [30]])
def test_invalid_retention_settings_are_refused_naming_the_field(
    client: TestClient, factory: Factory, bad: object
) -> None:
    tenant = factory.tenant()
    admin = factory.user(tenant, Role.admin)
    body = {"settings": {"auto_create_sensors": False, "retention_5m_days": bad}}
    r = client.patch("/api/v1/tenant", json=body, headers=admin.headers)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert "retention_5m_days" in problem["detail"]
    assert [e["loc"] for e in problem["errors"]] == [["body", "settings", "retention_5m_days"]]
    assert client.get("/api/v1/tenant", headers=admin.headers).json()["settings"] == {}


def test_valid_retention_settings_are_stored_beside_the_others(
    client: TestClient, factory: Factory
) -> None:
    tenant = factory.tenant()
    admin = factory.user(tenant, Role.admin)
    settings = {"auto_create_sensors": False, "retention_raw_days": 7, "retention_1d_days": None}
    r = client.patch("/api/v1/tenant", json={"settings": settings}, headers=admin.headers)
    assert r.status_code == 200, r.text
    assert r.json()["settings"] == settings
    with factory.db.transaction(write=False) as session:
        policy = tenants_service.retention(tenants_service.get(session, tenant.id))
    assert (policy.retention_raw_days, policy.retention_5m_days) == (7, 30)
    assert policy.retention_1d_days is None


def test_an_invalid_stored_value_falls_back_to_the_default(db: Database, factory: Factory) -> None:
    tenant = factory.tenant()
    with db.transaction() as session:
        stored = tenants_service.get(session, tenant.id)
        stored.settings = {"retention_raw_days": "soon", "retention_1h_days": 5}
    with db.transaction(write=False) as session:
        policy = tenants_service.retention(tenants_service.get(session, tenant.id))
    assert (policy.retention_raw_days, policy.retention_1h_days) == (90, 5)


# --- the command and the job ------------------------------------------------------------------


@pytest.fixture
def cli(database_url: str, db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("FORESIGHT_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_cli_retention_run(cli: CliRunner, db: Database, factory: Factory) -> None:
    now_ms = int(time.time() * 1000)
    one, (a,) = make_tenant(factory)
    _, (b,) = make_tenant(factory)
    for sid in (a, b):
        write(db, sid, ago(200, now_ms), ago(1, now_ms))
    before = snapshot(db)

    result = cli.invoke(cli_app, ["retention", "run", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "dry run" in result.stdout and snapshot(db) == before
    assert "would" in result.stdout

    result = cli.invoke(cli_app, ["retention", "run", "--tenant", one.name])
    assert result.exit_code == 0, result.output
    assert f"readings: deleted 1 row(s) in 1 chunk(s), tenant {one.name!r}" in result.stdout
    assert raw(db, a) == {ago(1, now_ms)} and len(raw(db, b)) == 2

    result = cli.invoke(cli_app, ["retention", "run"])
    assert result.exit_code == 0, result.output
    assert raw(db, b) == {ago(1, now_ms)} and "total:" in result.stdout

    result = cli.invoke(cli_app, ["retention", "run", "--tenant", "no-such-tenant"])
    assert result.exit_code == 1 and "no-such-tenant" in result.stderr


def test_the_job_runs_every_interval_and_stops(db: Database, factory: Factory) -> None:
    now_ms = int(time.time() * 1000)
    _, (sid,) = make_tenant(factory)
    write(db, sid, ago(200, now_ms), ago(1, now_ms))

    async def scenario() -> RetentionJob:
        job = RetentionJob(db, 0.01)
        job.start()
        for _ in range(3000):  # polled; a job that never runs fails the test below
            if job.runs >= 2:
                break
            await asyncio.sleep(0.01)
        await job.stop()
        return job

    job = asyncio.run(scenario())
    assert job.runs >= 2, "the job did not run twice"
    assert raw(db, sid) == {ago(1, now_ms)}


def test_an_interval_of_zero_disables_the_job(db: Database) -> None:
    async def scenario() -> RetentionJob:
        job = RetentionJob(db, 0)
        job.start()
        await asyncio.sleep(0.05)
        await job.stop()
        return job

    assert asyncio.run(scenario()).runs == 0


def test_the_app_runs_the_job_in_its_lifespan(
    settings: Settings, db: Database, factory: Factory
) -> None:
    now_ms = int(time.time() * 1000)
    _, (sid,) = make_tenant(factory)
    write(db, sid, ago(200, now_ms), ago(1, now_ms))
    app = create_app(settings.model_copy(update={"retention_interval_s": 0.01}), db)
    with TestClient(app):
        job: RetentionJob = app.state.retention_job
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while job.runs < 1 and datetime.now(UTC) < deadline:
            time.sleep(0.01)
    assert job.runs >= 1, "the app's retention job never ran"
    assert raw(db, sid) == {ago(1, now_ms)}
