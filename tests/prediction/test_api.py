"""The prediction engine's HTTP API on a simulated fleet, on both backends: training jobs in the
background with progress, the registry's promote and rollback, current predictions (stored, or
fresh when stale), history, batch scoring, the FleetVision seed shapes and fleet health."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from foresight.detection import alerts
from foresight.kit.db import Database
from foresight.kit.time import from_ms, utcnow
from foresight.models import (
    Asset,
    JobStatus,
    Prediction,
    Role,
    Severity,
    Tenant,
    TrainingJob,
)
from foresight.prediction import service, serving
from foresight.prediction.jobs import NOT_STARTED, TrainingRunner
from tests.factories import Factory, TestUser
from tests.prediction.fleet_sim import DAY_MS, FEATURES, T0, TRAINING, simulate

API = "/api/v1"
WAIT_S = 600.0  # a bound for a hung job, not a speed requirement


@pytest.fixture(autouse=True)
def small_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "DEFAULT_FEATURE_CONFIG", FEATURES)
    monkeypatch.setattr(service, "DEFAULT_TRAIN_CONFIG", TRAINING)


@pytest.fixture
def tenant(factory: Factory) -> Tenant:
    return factory.tenant()


@pytest.fixture
def admin(factory: Factory, tenant: Tenant) -> TestUser:
    return factory.user(tenant, Role.admin)


def runner(client: TestClient) -> TrainingRunner:
    found: TrainingRunner = client.app.state.training  # type: ignore[attr-defined]
    return found


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def train(client: TestClient, user: TestUser, body: dict[str, Any] | None = None) -> Any:
    response = client.post(f"{API}/models/train", json=body, headers=user.headers)
    job = ok(response, 202)
    assert response.headers["location"] == f"{API}/models/jobs/{job['id']}"
    assert runner(client).wait_idle(WAIT_S)
    return ok(client.get(f"{API}/models/jobs/{job['id']}", headers=user.headers))


def reading(client: TestClient, user: TestUser, tag: str, ts: str) -> None:
    body = {"equipment_id": tag, "timestamp": ts, "vibration": 2.5, "temperature": 61.0}
    response = client.post(f"{API}/readings", json=body, headers=user.headers)
    assert response.status_code in (200, 201, 202), response.text


def audit_actions(client: TestClient, user: TestUser) -> list[str]:
    items = ok(client.get(f"{API}/audit?limit=500", headers=user.headers))["items"]
    return [item["action"] for item in items]


# --- training, registry -------------------------------------------------------------------------


def test_training_job_promote_and_rollback(
    client: TestClient, db: Database, tenant: Tenant, admin: TestUser, factory: Factory
) -> None:
    fleet = simulate(db, tenant.id)
    h = admin.headers
    assert ok(client.get(f"{API}/models", headers=h)) == {"items": []}
    for bad in ({"max_rul_days": 0}, {"max_rul_days": -3}, {"max_rul_days": "x"}, {"x": 1}):
        problem(client.post(f"{API}/models/train", json=bad, headers=h), 422)

    job = train(client, admin, {"max_rul_days": 60})
    assert job["status"] == "succeeded" and job["progress"] == 1.0 and job["error"] is None
    assert job["model_version"] == 1 and job["model_status"] == "champion"
    assert job["params"] == {"max_rul_days": 60} and job["requested_by"] == admin.email
    assert job["started_at"] <= job["finished_at"]
    models = ok(client.get(f"{API}/models", headers=h))["items"]
    assert [(m["version"], m["status"]) for m in models] == [(1, "champion")]
    v1 = models[0]
    assert v1["id"] == job["model_version_id"] and v1["max_rul_days"] == 60
    assert v1["features_count"] > 0 and v1["horizons"] == [7, 14, 30]
    assert v1["metrics"]["holdout"]["rul"]["rmse"] is not None and v1["params"]
    assert v1["created_by"] == admin.email and v1["promoted_at"] is not None
    assert "artifact" not in v1 and "artifact" not in str(models)
    # One champion and nothing before it: nothing to roll back to.
    assert (
        "nothing to roll back"
        in problem(client.post(f"{API}/models/rollback", headers=h), 409)["detail"]
    )

    # The model scores the fleet now.
    p = ok(client.get(f"{API}/assets/{fleet['P-01']}/prediction", headers=h))
    assert p["model_version"] == 1 and p["fallback"] is False and p["max_rul_days"] == 60
    assert set(p["failure_probability"]) == {"7d", "14d", "30d"}
    assert p["failure_probability"]["30d"] == p["failure_probability_30d"]
    assert 0 <= p["failure_probability_7d"] <= p["failure_probability_30d"] <= 1
    assert p["rul_low"] <= p["rul_days"] <= p["rul_high"] <= 60
    assert p["rul_at_cap"] is (p["rul_days"] >= 60)
    assert p["top_factors"] and all(f["text"] for f in p["top_factors"])
    assert p["as_of"].startswith("2026-04-10T23:00:00")

    second = train(client, admin)
    assert second["status"] == "succeeded" and second["model_version"] == 2
    models = {m["version"]: m for m in ok(client.get(f"{API}/models", headers=h))["items"]}
    challenger = next(m for m in models.values() if m["status"] != "champion")
    champion = next(m for m in models.values() if m["status"] == "champion")

    promoted = ok(client.post(f"{API}/models/{challenger['id']}/promote", headers=h))
    assert promoted["champion"]["version"] == challenger["version"]
    assert promoted["champion"]["status"] == "champion"
    assert promoted["replaced"]["version"] == champion["version"]
    assert promoted["replaced"]["status"] == "retired"
    # The stored prediction was made by the replaced champion: the next one is fresh.
    p2 = ok(client.get(f"{API}/assets/{fleet['P-01']}/prediction", headers=h))
    assert p2["model_version"] == challenger["version"] and p2["id"] != p["id"]

    rolled = ok(client.post(f"{API}/models/rollback", headers=h))
    assert rolled["champion"]["version"] == champion["version"]
    assert rolled["retired"]["version"] == challenger["version"]
    statuses = {
        m["version"]: m["status"] for m in ok(client.get(f"{API}/models", headers=h))["items"]
    }
    assert statuses[champion["version"]] == "champion"
    assert statuses[challenger["version"]] == "retired"
    p3 = ok(client.get(f"{API}/assets/{fleet['P-01']}/prediction", headers=h))
    assert p3["model_version"] == champion["version"]

    actions = audit_actions(client, admin)
    assert actions.count("model.train") == 2
    assert "model.promote" in actions and "model.rollback" in actions

    problem(client.post(f"{API}/models/{uuid.uuid4()}/promote", headers=h), 404)
    problem(client.get(f"{API}/models/jobs/{uuid.uuid4()}", headers=h), 404)
    # Another tenant sees none of it.
    other = factory.user(factory.tenant(), Role.admin)
    assert ok(client.get(f"{API}/models", headers=other.headers)) == {"items": []}
    problem(client.get(f"{API}/models/jobs/{job['id']}", headers=other.headers), 404)
    problem(client.post(f"{API}/models/{challenger['id']}/promote", headers=other.headers), 404)
    problem(client.post(f"{API}/models/rollback", headers=other.headers), 409)


def test_a_second_request_while_training_is_refused_and_a_failed_run_says_why(
    client: TestClient,
    db: Database,
    tenant: Tenant,
    admin: TestUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    simulate(db, tenant.id, assets=2, days=10)  # too few failures to train
    release = threading.Event()
    real_run_job = service.run_job

    def held_run_job(database: Database, job_id: uuid.UUID, **kwargs: Any) -> None:
        release.wait(WAIT_S)
        real_run_job(database, job_id, **kwargs)

    monkeypatch.setattr(service, "run_job", held_run_job)
    first = ok(client.post(f"{API}/models/train", headers=admin.headers), 202)
    assert (first["status"], first["progress"], first["stage"]) == ("queued", 0.0, "queued")
    busy = problem(client.post(f"{API}/models/train", headers=admin.headers), 409)
    assert first["id"] in busy["detail"]
    queued = ok(client.get(f"{API}/models/jobs/{first['id']}", headers=admin.headers))
    assert queued["status"] in ("queued", "running")
    release.set()
    assert runner(client).wait_idle(WAIT_S)
    failed = ok(client.get(f"{API}/models/jobs/{first['id']}", headers=admin.headers))
    assert failed["status"] == "failed" and "recorded failures" in failed["error"]
    assert failed["model_version_id"] is None and failed["finished_at"] is not None
    assert ok(client.get(f"{API}/models", headers=admin.headers)) == {"items": []}
    # Once the runner is free the tenant may ask again.
    again = ok(client.post(f"{API}/models/train", headers=admin.headers), 202)
    assert runner(client).wait_idle(WAIT_S)
    assert again["id"] != first["id"]


def test_a_job_of_another_process_is_waited_for_until_it_goes_quiet(
    client: TestClient, db: Database, tenant: Tenant, admin: TestUser
) -> None:
    # A job queued by another API worker or the scheduler: not in this process's runner.
    with db.transaction() as session:
        elsewhere = service.create_job(session, tenant.id, requested_by="schedule", params={})
        elsewhere_id = elsewhere.id
    busy = problem(client.post(f"{API}/models/train", headers=admin.headers), 409)
    assert str(elsewhere_id) in busy["detail"]
    # Its process died: no progress for longer than STALE_JOB_S, so it no longer blocks.
    with db.transaction() as session:
        job = session.get_one(TrainingJob, elsewhere_id)
        job.status = JobStatus.running
        session.flush()
        session.execute(
            update(TrainingJob)
            .where(TrainingJob.id == elsewhere_id)
            .values(updated_at=utcnow() - timedelta(seconds=serving.STALE_JOB_S + 60))
        )
    ok(client.post(f"{API}/models/train", headers=admin.headers), 202)
    assert runner(client).wait_idle(WAIT_S)


def test_stopping_fails_queued_jobs_and_interrupts_the_running_one(
    db: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()
    real_run_job = service.run_job

    def held_run_job(database: Database, job_id: uuid.UUID, **kwargs: Any) -> None:
        started.set()
        release.wait(WAIT_S)
        real_run_job(database, job_id, **kwargs)  # the job is no longer queued: does nothing

    monkeypatch.setattr(service, "run_job", held_run_job)
    with db.transaction() as session:
        jobs = [
            service.create_job(session, tenant.id, requested_by="test", params={}).id
            for _ in range(2)
        ]
    trainer = TrainingRunner(db)
    for job_id in jobs:
        trainer.submit(tenant.id, job_id)
    assert started.wait(WAIT_S)
    assert trainer.active_job(tenant.id) == jobs[0]
    trainer.stop(grace_s=0)  # the first is busy between two steps: marked interrupted at once
    release.set()
    with db.transaction(write=False) as session:
        found = {j: service.get_job(session, tenant.id, j) for j in jobs}
    assert [found[j].status.value for j in jobs] == ["failed", "failed"]
    assert found[jobs[0]].error == service.JOB_INTERRUPTED
    assert found[jobs[1]].error == NOT_STARTED
    trainer.submit(tenant.id, jobs[0])  # refused once stopped
    assert trainer.wait_idle(WAIT_S) and trainer.active_job(tenant.id) is None


def test_training_needs_models_write(client: TestClient, factory: Factory, tenant: Tenant) -> None:
    for role in (Role.viewer, Role.operator):
        user = factory.user(tenant, role)
        problem(client.post(f"{API}/models/train", headers=user.headers), 403)
        problem(client.post(f"{API}/models/rollback", headers=user.headers), 403)
        ok(client.get(f"{API}/models", headers=user.headers))


# --- predictions ---------------------------------------------------------------------------------


@pytest.fixture
def small_fleet(db: Database, tenant: Tenant) -> dict[str, uuid.UUID]:
    return simulate(db, tenant.id, assets=3, days=10)  # no model: the fallback scores


def _history(client: TestClient, user: TestUser, asset_id: uuid.UUID, query: str = "") -> Any:
    return ok(client.get(f"{API}/assets/{asset_id}/predictions{query}", headers=user.headers))[
        "items"
    ]


def test_current_prediction_is_stored_until_a_newer_reading(
    client: TestClient,
    admin: TestUser,
    small_fleet: dict[str, uuid.UUID],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    published: list[tuple[uuid.UUID, uuid.UUID | None, dict[str, Any]]] = []
    live = client.app.state.live  # type: ignore[attr-defined]
    monkeypatch.setattr(live, "publish", lambda t, a, e: published.append((t, a, dict(e))))
    asset = small_fleet["P-01"]
    path = f"{API}/assets/{asset}/prediction"
    first = ok(client.get(path, headers=admin.headers))
    # Scored now: the asset's new health score goes out live (after it was stored).
    assert [(a, e["type"], e["data"]["health_score"]) for _, a, e in published] == [
        (asset, "health", first["health_score"])
    ]
    assert first["health_score"] is not None and first["status"] in ("healthy", "warning")
    assert first["fallback"] is True and "no champion" in first["fallback_reason"]
    assert first["model_version"] is None and first["asset_tag"] == "P-01"
    assert first["as_of"].startswith(from_ms(T0 + 10 * DAY_MS - 3_600_000).isoformat()[:19])
    assert first["max_rul_days"] == 180 and first["confidence"] == service.FALLBACK_CONFIDENCE
    assert set(first["failure_probability"]) == {"7d", "14d", "30d"}
    # Nothing newer: the stored prediction is served as is (and nothing is published).
    assert ok(client.get(path, headers=admin.headers)) == first
    assert len(published) == 1
    assert [p["id"] for p in _history(client, admin, asset)] == [first["id"]]

    reading(client, admin, "P-01", "2026-01-11T06:00:00Z")
    fresh = ok(client.get(path, headers=admin.headers))
    assert fresh["id"] != first["id"] and fresh["as_of"].startswith("2026-01-11T06:00:00")
    assert ok(client.get(path, headers=admin.headers))["id"] == fresh["id"]
    forced = ok(client.get(f"{path}?refresh=true", headers=admin.headers))
    assert forced["id"] not in (first["id"], fresh["id"])
    history = _history(client, admin, asset)
    assert [p["id"] for p in history] == [forced["id"], fresh["id"], first["id"]]
    assert history[0] == forced

    # limit, since (inclusive), until (exclusive).
    assert [p["id"] for p in _history(client, admin, asset, "?limit=1")] == [forced["id"]]
    since = fresh["computed_at"].replace("+00:00", "Z")
    newer = _history(client, admin, asset, f"?since={since}")
    assert [p["id"] for p in newer] == [forced["id"], fresh["id"]]
    older = _history(client, admin, asset, f"?until={since}")
    assert [p["id"] for p in older] == [first["id"]]
    assert _history(client, admin, asset, "?since=2030-01-01T00:00:00Z") == []
    for query in ("?limit=0", "?limit=1001", "?since=yesterday", f"?since={since}&until={since}"):
        problem(client.get(f"{API}/assets/{asset}/predictions{query}", headers=admin.headers), 422)
    # Another asset has its own history.
    assert _history(client, admin, small_fleet["P-02"]) == []


def open_alert(db: Database, asset_id: uuid.UUID) -> None:
    with db.transaction(write=False) as session:
        asset = session.get(Asset, asset_id)
        assert asset is not None
        tenant_id = asset.tenant_id
    trigger = alerts.Trigger(
        tenant_id, asset_id, f"rule:{uuid.uuid4()}", Severity.warning, "t", "m", utcnow(), 1.0
    )
    with db.transaction() as session:
        alerts.fire(session, trigger)


def test_batch_predictions_in_order_and_bad_input(
    client: TestClient,
    db: Database,
    admin: TestUser,
    small_fleet: dict[str, uuid.UUID],
    factory: Factory,
) -> None:
    a, b = str(small_fleet["P-01"]), str(small_fleet["P-03"])
    open_alert(db, small_fleet["P-01"])
    body = {"asset_ids": [b, a, b]}
    items = ok(client.post(f"{API}/predictions", json=body, headers=admin.headers))["items"]
    assert [p["asset_id"] for p in items] == [b, a, b] and items[0] == items[2]
    # The fallback explains what raised the hazard: here the open alert, on P-01 only.
    assert [f["feature"] for f in items[1]["top_factors"]] == ["open_alerts_warning"]
    assert "1 open warning alert" in items[1]["top_factors"][0]["text"]
    assert items[0]["top_factors"] == []
    assert len(_history(client, admin, small_fleet["P-01"])) == 1
    assert len(_history(client, admin, small_fleet["P-03"])) == 1
    quiet = {"asset_ids": [a], "include_explanation": False}
    (p,) = ok(client.post(f"{API}/predictions", json=quiet, headers=admin.headers))["items"]
    assert p["top_factors"] == []
    assert [h["id"] for h in _history(client, admin, small_fleet["P-01"])][0] == p["id"]

    unknown = str(uuid.uuid4())
    missing = problem(
        client.post(f"{API}/predictions", json={"asset_ids": [a, unknown]}, headers=admin.headers),
        404,
    )
    assert unknown in missing["detail"] and a not in missing["detail"]
    assert len(_history(client, admin, small_fleet["P-01"])) == 2  # the refused request stored none
    too_many = {"asset_ids": [a] * 1001}
    for bad in ({"asset_ids": []}, too_many, {"asset_ids": ["nope"]}, {"ids": [a]}, [a]):
        problem(client.post(f"{API}/predictions", json=bad, headers=admin.headers), 422)
    problem(
        client.post(
            f"{API}/predictions",
            content=b"{not json",
            headers={**admin.headers, "Content-Type": "application/json"},
        ),
        400,
    )

    # Another tenant's assets are unknown here, and theirs are not in our counts.
    other = factory.user(factory.tenant(), Role.viewer)
    problem(client.post(f"{API}/predictions", json={"asset_ids": [a]}, headers=other.headers), 404)
    problem(client.get(f"{API}/assets/{a}/prediction", headers=other.headers), 404)
    problem(client.get(f"{API}/assets/{a}/predictions", headers=other.headers), 404)
    problem(
        client.post(f"{API}/predict", json={"equipment_id": "P-01"}, headers=other.headers), 404
    )
    health = ok(client.get(f"{API}/fleet/health", headers=other.headers))
    assert health["assets"] == 0 and health["riskiest"] == []


def test_seed_shapes(
    client: TestClient, admin: TestUser, small_fleet: dict[str, uuid.UUID]
) -> None:
    h = admin.headers
    one = ok(client.post(f"{API}/predict", json={"equipment_id": "P-02"}, headers=h))
    assert one["equipment_id"] == "P-02" and one["asset_id"] == str(small_fleet["P-02"])
    assert 0 <= one["failure_probability"] <= 1 and one["rul_days"] > 0
    assert one["confidence_score"] == service.FALLBACK_CONFIDENCE and one["fallback"] is True
    assert one["top_factors"] == []  # a quiet asset: nothing raised the fallback's base hazard
    stored = _history(client, admin, small_fleet["P-02"])
    assert len(stored) == 1
    assert stored[0]["failure_probability_30d"] == one["failure_probability"]
    assert (
        "PUMP-404"
        in problem(
            client.post(f"{API}/predict", json={"equipment_id": "PUMP-404"}, headers=h), 404
        )["detail"]
    )
    problem(client.post(f"{API}/predict", json={}, headers=h), 422)

    batch = ok(
        client.post(f"{API}/predict/batch", json={"equipment_ids": ["P-03", "P-01"]}, headers=h)
    )
    assert [p["equipment_id"] for p in batch["predictions"]] == ["P-03", "P-01"]
    listed = [{"equipment_id": "P-01"}, {"equipment_id": "P-02"}]
    batch = ok(client.post(f"{API}/predict/batch", json=listed, headers=h))
    assert [p["equipment_id"] for p in batch["predictions"]] == ["P-01", "P-02"]
    problem(
        client.post(f"{API}/predict/batch", json={"equipment_ids": ["P-01", "X"]}, headers=h), 404
    )
    for bad in ({"equipment_ids": []}, [], {"equipment_id": "P-01"}):
        problem(client.post(f"{API}/predict/batch", json=bad, headers=h), 422)


# --- fleet health -------------------------------------------------------------------------------


def test_fleet_health_from_the_latest_stored_predictions(
    client: TestClient, db: Database, tenant: Tenant, factory: Factory
) -> None:
    viewer = factory.user(tenant, Role.viewer)
    now = utcnow()
    # (tag, [(hours ago, health score, status, p30)], oldest first)
    plan: list[tuple[str, list[tuple[int, float | None, str | None, float]]]] = [
        ("A-OK", [(5, 92.0, "healthy", 0.02)]),
        ("B-WARN", [(9, 25.0, "critical", 0.7), (1, 61.0, "warning", 0.3)]),  # recovered
        ("C-CRIT", [(2, 22.5, "critical", 0.8)]),
        ("D-CRIT", [(3, 22.5, "critical", 0.9)]),  # same score, riskier
        ("E-DOWN", [(4, 10.0, "failed", 0.95)]),
        ("F-NOSCORE", [(1, None, None, 0.4)]),  # stored before health scores existed
        ("G-NEW", []),
    ]
    with db.transaction() as session:
        for tag, predictions in plan:
            asset = Asset(tenant_id=tenant.id, tag=tag, name=f"{tag} name")
            session.add(asset)
            session.flush()
            for hours, score, status, p30 in predictions:
                session.add(
                    Prediction(
                        tenant_id=tenant.id,
                        asset_id=asset.id,
                        computed_at=now - timedelta(hours=hours),
                        failure_probability_30d=p30,
                        rul_days=12.0,
                        health_score=score,
                        status=status,
                    )
                )
    health = ok(client.get(f"{API}/fleet/health", headers=viewer.headers))
    assert health["assets"] == 7
    assert health["counts"] == {
        "healthy": 1,
        "warning": 1,
        "critical": 2,
        "failed": 1,
        "unscored": 2,
    }
    assert health["mean_health_score"] == round((92 + 61 + 22.5 + 22.5 + 10) / 5, 2)
    order = ["E-DOWN", "D-CRIT", "C-CRIT", "B-WARN", "A-OK", "F-NOSCORE"]
    assert [r["tag"] for r in health["riskiest"]] == order
    top = health["riskiest"][0]
    assert top["name"] == "E-DOWN name" and top["status"] == "failed"
    assert top["p30"] == 0.95 and top["rul_days"] == 12.0 and top["health_score"] == 10.0
    limited = ok(client.get(f"{API}/fleet/health?limit=2", headers=viewer.headers))
    assert [r["tag"] for r in limited["riskiest"]] == order[:2]
    assert limited["counts"] == health["counts"]
    for bad in ("0", "101", "x"):
        problem(client.get(f"{API}/fleet/health?limit={bad}", headers=viewer.headers), 422)


def test_scoring_requests_leave_the_write_lock_free_while_they_score(
    client: TestClient,
    db: Database,
    admin: TestUser,
    small_fleet: dict[str, uuid.UUID],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On SQLite one writer at a time: a batch scoring request must not keep ingestion waiting
    while it computes. Mid-scoring, another connection takes the write lock at once."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("the write lock is SQLite's")
    path = db.engine.url.database
    assert path is not None
    took: list[str] = []
    real = service.fallback_prediction

    def scoring(*args: Any, **kwargs: Any) -> Any:
        other = sqlite3.connect(path, timeout=0.2)
        try:
            other.execute("BEGIN IMMEDIATE")  # raises "database is locked" if it is held
            other.execute("ROLLBACK")
            took.append("ok")
        finally:
            other.close()
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "fallback_prediction", scoring)
    ids = [str(small_fleet["P-01"]), str(small_fleet["P-02"])]
    ok(client.post(f"{API}/predictions", json={"asset_ids": ids}, headers=admin.headers))
    ok(client.post(f"{API}/predict", json={"equipment_id": "P-01"}, headers=admin.headers))
    body = {"equipment_ids": ["P-01", "P-02"]}
    ok(client.post(f"{API}/predict/batch", json=body, headers=admin.headers))
    assert took == ["ok"] * 5
    assert len(_history(client, admin, small_fleet["P-01"])) == 3  # and they were stored
