"""The closed loop, on both backends: verdicts over the API (stored, audited, listed, refused
where they should be), their effect on training (weights, censoring) and on anomaly thresholds
(end to end through running detection), new failure records in the next training's labels, and
realised performance per model version."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from foresight.cli import app as cli_app
from foresight.config import get_settings
from foresight.detection import alerts as alerts_service
from foresight.detection import tuning
from foresight.kit.db import Database
from foresight.maintenance import service as maintenance_service
from foresight.maintenance.schemas import MaintenanceCreate
from foresight.models import (
    AuditEntry,
    FeedbackVerdict,
    MaintenanceKind,
    ModelStatus,
    ModelVersion,
    Prediction,
    Role,
    Severity,
    Tenant,
)
from foresight.prediction import feedback, realised, registry, service
from tests.assets.helpers import assert_problem, create_asset
from tests.detection.helpers import alerts as list_alerts
from tests.detection.helpers import send
from tests.factories import Factory
from tests.prediction.fleet_sim import (
    DAY_MS,
    FEATURES,
    T0,
    TRAINING,
    add_asset,
    at,
    principal,
    simulate,
)

KW: dict[str, Any] = {"feature_config": FEATURES, "train_config": TRAINING}


def _prediction(
    db: Database,
    tenant_id: uuid.UUID,
    asset_id: uuid.UUID,
    as_of_ms: int,
    *,
    p: tuple[float, float, float] = (0.1, 0.2, 0.3),
    version: ModelVersion | None = None,
    computed_at: datetime | None = None,
) -> uuid.UUID:
    with db.transaction() as session:
        row = Prediction(
            tenant_id=tenant_id,
            asset_id=asset_id,
            as_of=at(as_of_ms),
            computed_at=computed_at or at(as_of_ms + 60_000),
            model_version_id=None if version is None else version.id,
            model_version=None if version is None else version.version,
            failure_probability_7d=p[0],
            failure_probability_14d=p[1],
            failure_probability_30d=p[2],
        )
        session.add(row)
        session.flush()
        return row.id


def _alert(
    db: Database, tenant_id: uuid.UUID, asset_id: uuid.UUID, source: str, at_ms: int
) -> uuid.UUID:
    with db.transaction() as session:
        alert, _ = alerts_service.fire(
            session,
            alerts_service.Trigger(
                tenant_id=tenant_id,
                asset_id=asset_id,
                source=source,
                severity=Severity.warning,
                title="t",
                message="m",
                at=at(at_ms),
                value=2.0,
                sensor="vibration",
            ),
        )
        return alert.id


def _verdict(
    db: Database,
    tenant_id: uuid.UUID,
    verdict: FeedbackVerdict,
    *,
    prediction_id: uuid.UUID | None = None,
    alert_id: uuid.UUID | None = None,
) -> None:
    with db.transaction() as session:
        if prediction_id is not None:
            feedback.record_for_prediction(
                session, principal=principal(tenant_id), prediction_id=prediction_id,
                verdict=verdict,
            )  # fmt: skip
        else:
            assert alert_id is not None
            feedback.record_for_alert(
                session, principal=principal(tenant_id), alert_id=alert_id, verdict=verdict
            )


def _failure(db: Database, tenant_id: uuid.UUID, asset_id: uuid.UUID, at_ms: int) -> None:
    with db.transaction() as session:
        maintenance_service.create_record(
            session,
            principal=principal(tenant_id),
            asset_id=asset_id,
            data=MaintenanceCreate(kind=MaintenanceKind.failure, started_at=at(at_ms)),
        )


# --- the routes ---------------------------------------------------------------------------------


def test_feedback_routes(client: TestClient, db: Database, factory: Factory) -> None:
    tenant, users = factory.tenant_with_users()
    operator, viewer = users[Role.operator].headers, users[Role.viewer].headers
    asset_id, _ = add_asset(db, tenant.id, "P-1")
    pid = _prediction(db, tenant.id, asset_id, T0)
    rule_alert = _alert(db, tenant.id, asset_id, f"rule:{uuid.uuid4()}", T0)
    anomaly_alert = _alert(db, tenant.id, asset_id, "detector:sensor", T0)

    r = client.post(
        f"/api/v1/predictions/{pid}/feedback",
        json={"verdict": "false_alarm", "note": "inspected: fine"},
        headers=operator,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["kind"] == "prediction" and body["prediction_id"] == str(pid)
    assert body["asset_id"] == str(asset_id) and body["alert_id"] is None
    assert body["verdict"] == "false_alarm" and body["note"] == "inspected: fine"
    assert body["created_by"] == users[Role.operator].email and body["threshold_scale"] is None

    r = client.post(
        f"/api/v1/alerts/{rule_alert}/feedback", json={"verdict": "confirmed"}, headers=operator
    )
    assert r.status_code == 201 and r.json()["threshold_scale"] is None  # rules: not tuned
    r = client.post(
        f"/api/v1/alerts/{anomaly_alert}/feedback",
        json={"verdict": "false_alarm"},
        headers=operator,
    )
    assert r.status_code == 201 and r.json()["threshold_scale"] == tuning.STEP

    with db.transaction(write=False) as session:
        actions = session.scalars(
            select(AuditEntry.action).where(AuditEntry.tenant_id == tenant.id)
        ).all()
    assert actions.count("prediction.feedback") == 1 and actions.count("alert.feedback") == 2

    # Refusals: a viewer, a bad verdict, an unknown id, another tenant's prediction.
    r = client.post(f"/api/v1/predictions/{pid}/feedback", json={"verdict": "confirmed"},
                    headers=viewer)  # fmt: skip
    assert_problem(r, 403)
    r = client.post(f"/api/v1/predictions/{pid}/feedback", json={"verdict": "maybe"},
                    headers=operator)  # fmt: skip
    assert_problem(r, 422, ["body", "verdict"])
    r = client.post(f"/api/v1/predictions/{uuid.uuid4()}/feedback", json={"verdict": "confirmed"},
                    headers=operator)  # fmt: skip
    assert_problem(r, 404)
    other = factory.tenant()
    other_asset, _ = add_asset(db, other.id, "P-1")
    other_pid = _prediction(db, other.id, other_asset, T0)
    other_alert = _alert(db, other.id, other_asset, "detector:sensor", T0)
    for path in (f"/predictions/{other_pid}", f"/alerts/{other_alert}"):
        r = client.post(f"/api/v1{path}/feedback", json={"verdict": "confirmed"},
                        headers=operator)  # fmt: skip
        assert_problem(r, 404)

    # Listing: newest first, filters, pages; any role may read.
    r = client.get("/api/v1/feedback", headers=viewer)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["kind"] for i in items] == ["alert", "alert", "prediction"]
    assert all(i["asset_id"] == str(asset_id) for i in items)
    got = client.get("/api/v1/feedback", params={"kind": "prediction"}, headers=viewer).json()
    assert [i["prediction_id"] for i in got["items"]] == [str(pid)]
    got = client.get("/api/v1/feedback", params={"verdict": "confirmed"}, headers=viewer).json()
    assert [i["alert_id"] for i in got["items"]] == [str(rule_alert)]
    got = client.get("/api/v1/feedback", params={"asset_id": str(other_asset)}, headers=viewer)
    assert got.json()["items"] == []
    first = client.get("/api/v1/feedback", params={"limit": 2}, headers=viewer).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = client.get(
        "/api/v1/feedback", params={"limit": 2, "cursor": first["next_cursor"]}, headers=viewer
    ).json()
    assert [i["id"] for i in first["items"] + rest["items"]] == [i["id"] for i in items]
    assert rest["next_cursor"] is None
    r = client.get("/api/v1/feedback", params={"verdict": "maybe"}, headers=viewer)
    assert_problem(r, 422)


# --- anomaly thresholds ---------------------------------------------------------------------------


def test_threshold_levels_are_bounded_and_confirmed_undoes_a_step() -> None:
    key = (uuid.uuid4(), "sensor", "vibration")
    fa, ok = FeedbackVerdict.false_alarm, FeedbackVerdict.confirmed
    assert tuning.levels([(key, fa)] * 10) == {key: tuning.MAX_STEPS}
    assert tuning.levels([(key, fa), (key, fa), (key, ok)]) == {key: 1}
    assert tuning.levels([(key, ok), (key, ok), (key, fa)]) == {key: 1}  # never below 0
    assert tuning.scale_of(tuning.MAX_STEPS) == pytest.approx(1.25**4)
    assert tuning.key_of(key[0], "detector:multivariate", "vibration") == (
        key[0], "multivariate", None,
    )  # fmt: skip
    assert tuning.key_of(key[0], f"rule:{uuid.uuid4()}", "vibration") is None


def test_each_alert_counts_once_with_its_latest_verdict(db: Database, factory: Factory) -> None:
    tenant = factory.tenant()
    asset_id, _ = add_asset(db, tenant.id, "P-1")
    first = _alert(db, tenant.id, asset_id, "detector:sensor", T0)
    with db.transaction() as session:
        alerts_service.auto_resolve(
            session,
            alerts_service.Clear(tenant.id, asset_id, "detector:sensor", at(T0 + 600_000), 0.1),
        )
    second = _alert(db, tenant.id, asset_id, "detector:sensor", T0 + DAY_MS)
    key = (asset_id, "sensor", "vibration")
    _verdict(db, tenant.id, FeedbackVerdict.false_alarm, alert_id=first)
    _verdict(db, tenant.id, FeedbackVerdict.false_alarm, alert_id=first)  # the same alert
    with db.transaction(write=False) as session:
        assert tuning.scales(session) == {key: tuning.STEP}
    _verdict(db, tenant.id, FeedbackVerdict.false_alarm, alert_id=second)
    with db.transaction(write=False) as session:
        assert tuning.scales(session)[key] == pytest.approx(tuning.STEP**2)
    _verdict(db, tenant.id, FeedbackVerdict.confirmed, alert_id=first)  # a change of mind
    with db.transaction(write=False) as session:
        assert tuning.scales(session)[key] == pytest.approx(tuning.STEP)


def _pattern(seed: int = 9) -> np.ndarray:
    """A quiet signal with the same level shift twice (minutes 300-340 and 700-740)."""
    rng = np.random.default_rng(seed)
    t = np.arange(800)
    values = 50 + 2 * np.sin(2 * np.pi * t / 1440) + rng.normal(0, 0.5, t.size)
    values[300:340] += 8.0
    values[700:740] += 8.0
    return values


def test_a_false_alarm_stops_the_same_anomaly_from_alerting(
    client: TestClient, factory: Factory
) -> None:
    """Two assets with identical data; an operator marks the first anomaly alert of one of them
    a false alarm. When the same shift comes again the other asset alerts and it does not."""
    tenant, users = factory.tenant_with_users()
    h = users[Role.analyst].headers
    # Sensitivity 0.5 puts this shift's scores just above the flag threshold (about 1.1).
    tags = ("PUMP-A", "PUMP-B")
    for tag in tags:
        create_asset(client, h, tag, metadata={"anomaly_sensitivity": 0.5})
    points = [(i * 60.0, {"vibration": float(v)}) for i, v in enumerate(_pattern())]

    def replay(lo: int, hi: int) -> None:
        for start in range(lo, hi, 50):
            for tag in tags:
                send(client, h, tag, points[start : min(hi, start + 50)])

    def sensor_alerts(tag: str) -> list[dict[str, Any]]:
        return [a for a in list_alerts(client, h) if a["source"] == "detector:sensor"
                and a["title"].endswith(tag)]  # fmt: skip

    replay(0, 500)
    [first_a], [first_b] = sensor_alerts("PUMP-A"), sensor_alerts("PUMP-B")
    assert first_a["status"] == first_b["status"] == "resolved"
    r = client.post(
        f"/api/v1/alerts/{first_a['id']}/feedback",
        json={"verdict": "false_alarm", "note": "pump was being cleaned"},
        headers=h,
    )
    assert r.status_code == 201 and r.json()["threshold_scale"] == tuning.STEP
    replay(500, 800)
    assert len(sensor_alerts("PUMP-B")) == 2  # the same shift alerts where nobody objected
    assert len(sensor_alerts("PUMP-A")) == 1  # and no longer where it was a false alarm
    asset_a = [a for a in client.get("/api/v1/assets", headers=h).json()["items"]
               if a["tag"] == "PUMP-A"][0]  # fmt: skip
    scores = client.get(
        f"/api/v1/assets/{asset_a['id']}/anomalies",
        params={"start": "2026-01-01T11:40:00Z", "end": "2026-01-01T12:30:00Z"},
        headers=h,
    ).json()["items"]
    tuned = [p["score"] for p in scores if p["detector"] == "sensor"]
    assert tuned and max(tuned) < 1.0  # the stored scores are the tuned ones


# --- training ----------------------------------------------------------------------------------


@pytest.fixture
def tenant(factory: Factory) -> Tenant:
    return factory.tenant()


@pytest.fixture
def fleet(db: Database, tenant: Tenant) -> dict[str, uuid.UUID]:
    return simulate(db, tenant.id)


def _rows(data: Any, asset_id: uuid.UUID, lo_ms: int, hi_ms: int) -> np.ndarray:
    t = data.as_of_ms
    return np.flatnonzero((data.asset_id == str(asset_id)) & (t > lo_ms) & (t <= hi_ms))


def test_verdicts_change_what_training_sees(
    db: Database, tenant: Tenant, fleet: dict[str, uuid.UUID]
) -> None:
    before = feedback.training_data(db, tenant.id, FEATURES, horizon_days=30)
    assert before.data.weight is not None and (before.data.weight == 1).all()
    assert before.feedback["rows_weighted"] == before.feedback["rows_censored"] == 0
    ds = before.data
    p1 = fleet["P-01"]
    mine = ds.asset_id == str(p1)
    fails = np.isfinite(ds.ttf_days) & (ds.ttf_days <= 30)
    # A time of P-01 followed by a failure within 30 days, and one that is not.
    warned = int(ds.as_of_ms[np.flatnonzero(mine & fails)[-1]])
    quiet_rows = np.flatnonzero(mine & ~fails)
    quiet = int(ds.as_of_ms[quiet_rows[len(quiet_rows) // 2]])
    p2 = fleet["P-02"]
    healthy_rows = np.flatnonzero((ds.asset_id == str(p2)) & ~fails)
    healthy = int(ds.as_of_ms[healthy_rows[len(healthy_rows) // 2]])

    _verdict(db, tenant.id, FeedbackVerdict.confirmed,
             prediction_id=_prediction(db, tenant.id, p1, warned))  # fmt: skip
    # Confirmed with no failure after it: acted on, so "did not fail" is not known any more.
    _verdict(db, tenant.id, FeedbackVerdict.confirmed,
             prediction_id=_prediction(db, tenant.id, p1, quiet))  # fmt: skip
    # A false alarm on an anomaly alert: P-02 was found healthy.
    alert = _alert(db, tenant.id, p2, "detector:sensor", healthy)
    _verdict(db, tenant.id, FeedbackVerdict.false_alarm, alert_id=alert)
    # A confirmed anomaly alert says nothing about failing: no effect on training.
    _alert_ok = _alert(db, tenant.id, fleet["P-03"], "detector:multivariate", healthy)
    _verdict(db, tenant.id, FeedbackVerdict.confirmed, alert_id=_alert_ok)

    after = feedback.training_data(db, tenant.id, FEATURES, horizon_days=30)
    w, week = after.data.weight, 7 * DAY_MS
    assert w is not None
    # The week up to each verdict weighs 3 where the records agree (a failure within 30 days
    # for the confirmed warning, none for the false alarm), 1 where they do not.
    week_p1 = _rows(ds, p1, warned - week, warned)
    verified = week_p1[fails[week_p1]]
    assert verified.size and (w[verified] == feedback.FEEDBACK_WEIGHT).all()
    week_p2 = _rows(ds, p2, healthy - week, healthy)
    verified_healthy = week_p2[~fails[week_p2]]
    assert verified_healthy.size and (w[verified_healthy] == feedback.FEEDBACK_WEIGHT).all()
    assert (w[week_p2[fails[week_p2]]] == 1).all()
    assert (w[_rows(ds, fleet["P-03"], 0, 1 << 62)] == 1).all()
    assert (
        int(np.sum(w != 1))
        == after.feedback["rows_weighted"]
        == (verified.size + verified_healthy.size)
    )
    acted = _rows(ds, p1, quiet - 30 * DAY_MS, quiet)
    acted = acted[~fails[acted]]
    assert acted.size and after.feedback["rows_censored"] == acted.size
    # Observed only up to the confirmed warning: "survived 30 d" became "unknown".
    expected = np.minimum(ds.observed_days[acted], (quiet - ds.as_of_ms[acted]) / DAY_MS)
    np.testing.assert_allclose(after.data.observed_days[acted], expected)
    assert (after.data.observed_days[acted] < 30).all()
    assert np.isnan(after.data.ttf_days[acted]).all()
    assert after.feedback["verdicts"] == {"prediction": 2, "alert": 1}
    # The frame (what the champion is scored on) carries the same labels.
    assert np.array_equal(after.frame.observed_days, after.data.observed_days, equal_nan=True)

    result = service.train(db, tenant.id, **KW)
    assert result.metrics["feedback"]["rows_weighted"] == after.feedback["rows_weighted"]
    assert result.metrics["counts"]["weighted_rows"] == after.feedback["rows_weighted"]


def test_a_new_failure_record_changes_the_next_training_labels(
    db: Database, tenant: Tenant, fleet: dict[str, uuid.UUID]
) -> None:
    service.train(db, tenant.id, **KW)
    before = feedback.training_data(db, tenant.id, FEATURES, horizon_days=30).data
    p1 = fleet["P-01"]
    mine = before.asset_id == str(p1)
    last_ms = int(before.as_of_ms[mine].max())
    censored = mine & np.isnan(before.ttf_days)
    assert censored.any()  # P-01's last stretch has no failure after it yet
    _failure(db, tenant.id, p1, last_ms + DAY_MS)  # recorded after the model was trained
    after = feedback.training_data(db, tenant.id, FEATURES, horizon_days=30).data
    assert np.array_equal(after.as_of_ms, before.as_of_ms)
    expected = (last_ms + DAY_MS - before.as_of_ms[censored]) / DAY_MS
    np.testing.assert_allclose(after.ttf_days[censored], expected)
    others = ~censored
    np.testing.assert_array_equal(after.ttf_days[others], before.ttf_days[others])


# --- realised performance ------------------------------------------------------------------------


def _stand_in_version(db: Database, tenant_id: uuid.UUID, threshold: float) -> ModelVersion:
    with db.transaction() as session:
        version = ModelVersion(
            tenant_id=tenant_id,
            version=registry.next_number(session, tenant_id),
            status=ModelStatus.challenger,
            max_rul_days=180.0,
            artifact=b"not a model",
            metrics={"training": {"validation": {"failure_30d": {"threshold": threshold}}}},
        )
        session.add(version)
        session.flush()
        registry.promote(session, version, by="test")
        return version


def test_realised_performance_per_version(
    client: TestClient, db: Database, factory: Factory
) -> None:
    tenant, users = factory.tenant_with_users()
    a1, _ = add_asset(db, tenant.id, "P-1")
    a2, _ = add_asset(db, tenant.id, "P-2")
    v1 = _stand_in_version(db, tenant.id, threshold=0.4)
    _failure(db, tenant.id, a1, T0 + 20 * DAY_MS)
    now = datetime.fromtimestamp((T0 + 60 * DAY_MS) / 1000, UTC)
    # 30-day outcomes: a1 at day 0 and day 10 → failure at day 20 (positive), a2 at day 0 and
    # a1 at day 25 → none within 30 d, horizon passed (negative), a2 at day 45 → not yet known.
    made = [
        (a1, 0, 0.9),  # true positive
        (a1, 10, 0.3),  # false negative
        (a2, 0, 0.6),  # false positive
        (a1, 25, 0.1),  # true negative
        (a2, 45, 0.8),  # unknown
    ]
    ids = [_prediction(db, tenant.id, a, T0 + d * DAY_MS, p=(p, p, p), version=v1)
           for a, d, p in made]  # fmt: skip
    # An earlier prediction of the same asset and day does not count twice.
    _prediction(db, tenant.id, a1, T0 + 3_600_000, p=(0.0, 0.0, 0.0), version=v1,
                computed_at=at(T0))  # fmt: skip
    v2 = _stand_in_version(db, tenant.id, threshold=0.5)  # no predictions yet
    _verdict(db, tenant.id, FeedbackVerdict.confirmed, prediction_id=ids[0])
    _verdict(db, tenant.id, FeedbackVerdict.false_alarm, prediction_id=ids[2])

    with db.transaction(write=False) as session:
        version = session.get(ModelVersion, v1.id)
        assert version is not None
        got = realised.realised_performance(session, tenant.id, version, now=now)
    assert got["predictions"] == 6 and got["judged_per_asset_day"] == 5
    h30 = got["horizons"]["30d"]
    assert (h30["evaluated"], h30["positives"], h30["threshold"]) == (4, 2, 0.4)
    assert h30["precision"] == 0.5 and h30["recall"] == 0.5
    assert h30["brier"] == pytest.approx(((0.9 - 1) ** 2 + 0.7**2 + 0.6**2 + 0.1**2) / 4)
    bins = {b["low"]: (b["count"], b["observed_rate"]) for b in h30["calibration"]}
    assert bins == {0.9: (1, 1.0), 0.3: (1, 1.0), 0.6: (1, 0.0), 0.1: (1, 0.0)}
    h7 = got["horizons"]["7d"]  # no failure within 7 days of any of them: all negative
    assert (h7["evaluated"], h7["positives"], h7["threshold"]) == (5, 0, 0.5)
    assert h7["recall"] is None and h7["precision"] == 0.0
    assert got["feedback"] == {"confirmed": 1, "false_alarm": 1}
    with db.transaction(write=False) as session:
        both = realised.realised_for(
            session, tenant.id, registry.list_versions(session, tenant.id), now=now
        )
    assert both[v2.id]["predictions"] == 0 and both[v2.id]["horizons"]["30d"]["evaluated"] == 0
    # A day later than "now" everything is older; the live clock judges a2's day 45 too.
    with db.transaction(write=False) as session:
        version = session.get(ModelVersion, v1.id)
        assert version is not None
        live = realised.realised_performance(
            session, tenant.id, version, now=now + timedelta(days=3650)
        )
    assert live["horizons"]["30d"]["evaluated"] == 5
    # GET /models: each version with its realised figures (judged by today's clock).
    r = client.get("/api/v1/models", headers=users[Role.viewer].headers)
    assert r.status_code == 200, r.text
    listed = {m["version"]: m["realised"] for m in r.json()["items"]}
    assert listed[1]["horizons"]["30d"]["evaluated"] == 5
    assert listed[1]["horizons"]["30d"]["precision"] == pytest.approx(1 / 3)
    assert listed[1]["feedback"] == {"confirmed": 1, "false_alarm": 1}
    assert listed[2]["predictions"] == 0 and listed[2]["since"] is not None


def test_models_list_shows_realised_figures(
    database_url: str, db: Database, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = factory.tenant()
    a1, _ = add_asset(db, tenant.id, "P-1")
    v1 = _stand_in_version(db, tenant.id, threshold=0.4)
    _failure(db, tenant.id, a1, T0 + 20 * DAY_MS)
    _prediction(db, tenant.id, a1, T0, p=(0.9, 0.9, 0.9), version=v1)
    _prediction(db, tenant.id, a1, T0 + 10 * DAY_MS, p=(0.2, 0.2, 0.2), version=v1)
    monkeypatch.setenv("FORESIGHT_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli_app, ["models", "list", "--tenant", tenant.name])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.stderr
    assert "realised on its own predictions (30 d)" in result.stdout
    [row] = [line for line in result.stdout.splitlines() if "1.000" in line]
    # Version 1: 2 predictions, both judged, the one warning right (precision 1), one of the
    # two failures missed (recall 0.5), Brier (0.1² + 0.8²) / 2, no verdicts.
    assert [c.strip() for c in row.split("│")[1:-1]] == [
        "1", "2", "2", "1.000", "0.500", "0.325", "0", "0",
    ]  # fmt: skip
