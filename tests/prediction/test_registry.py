"""The registry and scoring service on a simulated fleet, on both backends: the first model is
champion, the next one follows the champion/challenger rule, promote and rollback, predictions
with phrased top factors, the rule-based fallback, and failed jobs."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from foresight.detection import alerts as alerts_service
from foresight.kit.db import Database
from foresight.kit.errors import Conflict, NotFound
from foresight.kit.time import utcnow
from foresight.models import (
    JobStatus,
    ModelStatus,
    ModelVersion,
    Prediction,
    Severity,
    Tenant,
)
from foresight.prediction import modeling, registry, service
from tests.factories import Factory
from tests.prediction.fleet_sim import DAY_MS, FEATURES, T0, TRAINING, add_asset, simulate

KW: dict[str, Any] = {"feature_config": FEATURES, "train_config": TRAINING}


@pytest.fixture
def tenant(factory: Factory) -> Tenant:
    return factory.tenant()


@pytest.fixture
def fleet(db: Database, tenant: Tenant) -> dict[str, uuid.UUID]:
    return simulate(db, tenant.id)


def _versions(db: Database, tenant_id: uuid.UUID) -> dict[int, ModelVersion]:
    with db.transaction(write=False) as session:
        return {v.version: v for v in registry.list_versions(session, tenant_id)}


def test_first_model_is_champion_and_the_next_follows_the_rule(
    db: Database, tenant: Tenant, fleet: dict[str, uuid.UUID]
) -> None:
    progress: list[tuple[float, str]] = []
    first = service.train(db, tenant.id, progress=lambda f, s: progress.append((f, s)), **KW)
    assert first.version == 1 and first.status is ModelStatus.champion and first.promoted
    assert [f for f, _ in progress] == sorted(f for f, _ in progress) and progress[-1][0] == 1.0
    v1 = _versions(db, tenant.id)[1]
    assert v1.artifact and v1.max_rul_days == 180.0 and v1.horizons == [7, 14, 30]
    assert v1.data_start is not None and v1.data_end is not None and v1.holdout_start is not None
    assert v1.data_start < v1.holdout_start <= v1.data_end
    assert v1.feature_specs and v1.feature_config["windows_h"] == [24, 168]
    assert v1.metrics["holdout"]["rul"]["rmse"] is not None
    assert v1.metrics["training"]["validation"]["failure_30d"]["brier"] is not None
    assert v1.promoted_at is not None and v1.promoted_by == "system"

    second = service.train(db, tenant.id, **KW)
    v = _versions(db, tenant.id)
    cmp = v[2].metrics["comparison"]
    assert cmp["champion_version"] == 1 and cmp["champion_holdout"] is not None
    expected, _ = registry.beats(v[2].metrics["holdout"], cmp["champion_holdout"])
    assert second.promoted is expected and cmp["promoted"] is expected
    if expected:
        assert (v[2].status, v[1].status) == (ModelStatus.champion, ModelStatus.retired)
    else:
        assert (v[2].status, v[1].status) == (ModelStatus.challenger, ModelStatus.champion)


def test_the_tenant_setting_and_the_argument_cap_rul(
    db: Database, tenant: Tenant, fleet: dict[str, uuid.UUID]
) -> None:
    with db.transaction() as session:
        session.get(Tenant, tenant.id).settings = {"max_rul_days": 40}  # type: ignore[union-attr]
    service.train(db, tenant.id, **KW)
    service.train(db, tenant.id, max_rul_days=25, **KW)
    v = _versions(db, tenant.id)
    assert (v[1].max_rul_days, v[2].max_rul_days) == (40.0, 25.0)
    rows = service.predict(db, tenant.id)
    assert all(r.rul_days is not None and r.rul_days <= 40.0 for r in rows)


def test_beats_rule() -> None:
    def m(rmse: float | None, auc: float | None) -> dict[str, Any]:
        return {"rul": {"rmse": rmse}, "failure_30d": {"roc_auc": auc}}

    assert registry.beats(m(10, 0.90), m(12, 0.90))[0]
    assert registry.beats(m(10, 0.895), m(12, 0.90))[0]  # within the AUC tolerance
    assert not registry.beats(m(10, 0.85), m(12, 0.90))[0]
    assert not registry.beats(m(12, 0.99), m(12, 0.90))[0]  # RMSE must be lower
    assert registry.beats(m(10, None), m(12, 0.9))[0]
    assert registry.beats(m(None, 0.95), m(None, 0.9))[0]
    assert not registry.beats(m(None, None), m(1, 1))[0]
    assert not registry.beats(None, m(1, 1))[0]


def test_promote_and_rollback(
    db: Database, tenant: Tenant, fleet: dict[str, uuid.UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    service.train(db, tenant.id, **KW)
    # v2 stays challenger whatever its figures (the rule itself is tested above): this test is
    # about promoting and rolling back by hand.
    monkeypatch.setattr(registry, "beats", lambda new, old: (False, "held back by the test"))
    assert not service.train(db, tenant.id, **KW).promoted
    with db.transaction() as session:
        v2 = registry.by_number(session, tenant.id, 2)
        registry.promote(session, v2, by="alice")
    v = _versions(db, tenant.id)
    assert (v[1].status, v[2].status) == (ModelStatus.retired, ModelStatus.champion)
    assert v[2].previous_champion_id == v[1].id and v[2].promoted_by == "alice"
    assert service.predict(db, tenant.id)[0].model_version == 2

    with db.transaction() as session:
        restored, retired = registry.rollback(session, tenant.id, by="bob")
        assert (restored.version, retired.version) == (1, 2)
    v = _versions(db, tenant.id)
    assert (v[1].status, v[2].status) == (ModelStatus.champion, ModelStatus.retired)
    assert service.predict(db, tenant.id)[0].model_version == 1
    with db.transaction() as session, pytest.raises(Conflict):
        registry.rollback(session, tenant.id, by="bob")  # v1 replaced no earlier champion
    with db.transaction(write=False) as session, pytest.raises(NotFound):
        registry.by_number(session, tenant.id, 99)


def test_predictions_as_of_the_latest_reading_with_phrased_factors(
    db: Database, tenant: Tenant, fleet: dict[str, uuid.UUID]
) -> None:
    service.train(db, tenant.id, **KW)
    tags = ["P-02", "P-01"]
    rows = service.predict(db, tenant.id, [fleet[t] for t in tags])
    assert [r.asset_tag for r in rows] == tags
    last = T0 + 100 * DAY_MS - 3_600_000
    for r in rows:
        assert not r.fallback and r.fallback_reason is None and r.model_version == 1
        assert r.as_of is not None and int(r.as_of.timestamp() * 1000) == last
        p = r.failure_probability
        assert set(p) == {7, 14, 30} and 0 <= p[7] <= p[14] <= p[30] <= 1
        assert r.rul_low is not None and r.rul_days is not None and r.rul_high is not None
        assert 0 <= r.rul_low <= r.rul_days <= r.rul_high <= 180
        assert r.confidence is not None and 0 <= r.confidence <= 1
        # No alerts, anomalies or maintenance due: only the model's risk costs points.
        assert r.health_penalties is not None and r.health_score is not None
        assert r.health_penalties["open_alerts"] == r.health_penalties["anomaly"] == 0
        assert r.health_score == round(max(0.0, 100 - sum(r.health_penalties.values())), 1)
        assert r.status in {"healthy", "warning", "critical"} and r.health_trend is None
        assert 1 <= len(r.top_factors) <= service.TOP_K
        mags = [abs(f["contribution"]) for f in r.top_factors]
        assert mags == sorted(mags, reverse=True)
        for f in r.top_factors:
            assert set(f) >= {"feature", "value", "contribution", "direction", "text"}
            assert f["direction"] in ("raises risk", "lowers risk") and f["text"]
            assert "__" not in f["text"]  # the phrasing, not the column name
    with db.transaction(write=False) as session:
        stored = session.scalar(
            select(func.count()).select_from(Prediction).where(Prediction.tenant_id == tenant.id)
        )
        assert stored == 2
        hist = service.history(session, tenant.id, fleet["P-01"])
        assert len(hist) == 1 and hist[0].failure_probability == rows[1].failure_probability
    bare = service.predict(db, tenant.id, [fleet["P-01"]], include_explanation=False)
    assert bare[0].top_factors == []
    with pytest.raises(NotFound):
        service.predict(db, tenant.id, [uuid.uuid4()])


def test_fallback_without_a_model_is_flagged_and_follows_the_formula(
    db: Database, tenant: Tenant
) -> None:
    quiet, _ = add_asset(db, tenant.id, "Q-1")
    noisy, _ = add_asset(db, tenant.id, "N-1")
    with db.transaction() as session:
        alerts_service.fire(
            session,
            alerts_service.Trigger(
                tenant.id, noisy, "rule:x", Severity.critical, "hot", "m", utcnow(), 1.0
            ),
        )
    q, n = service.predict(db, tenant.id, [quiet, noisy])
    for r in (q, n):
        assert r.fallback and r.fallback_reason and "no champion" in r.fallback_reason
        assert r.model_version is None and r.confidence == service.FALLBACK_CONFIDENCE
        assert r.as_of is None  # never reported
    for r, lam in ((q, 0.02), (n, 0.02 + 0.20)):  # base; base + one critical alert
        p30 = 1 - math.exp(-lam)
        assert r.failure_probability[30] == pytest.approx(p30)
        assert r.failure_probability[7] == pytest.approx(1 - (1 - p30) ** (7 / 30))
        assert r.rul_high == pytest.approx(min(180.0, -math.log(0.1) / (lam / 30)))
    assert q.top_factors == []
    assert n.top_factors[0]["feature"] == "open_alerts_critical"
    assert n.top_factors[0]["text"] == "1 open critical alert"
    assert q.rul_days == 180.0 and q.rul_at_cap  # ln 2 / (0.02 / 30) > 180


def test_an_asset_with_too_little_history_falls_back_next_to_the_model(
    db: Database, tenant: Tenant, fleet: dict[str, uuid.UUID]
) -> None:
    service.train(db, tenant.id, **KW)
    fresh, _ = add_asset(db, tenant.id, "NEW-1")
    rows = {r.asset_tag: r for r in service.predict(db, tenant.id)}
    assert rows["NEW-1"].fallback and "too little history" in (rows["NEW-1"].fallback_reason or "")
    assert not rows["P-01"].fallback


def test_insufficient_data_fails_the_job_with_reasons(db: Database, tenant: Tenant) -> None:
    with pytest.raises(modeling.InsufficientData) as exc:
        service.train(db, tenant.id, **KW)
    assert exc.value.reasons
    with db.transaction() as session:
        job = service.create_job(session, tenant.id, requested_by="me", params={})
        job_id = job.id
    service.run_job(db, job_id, **KW)
    with db.transaction(write=False) as session:
        job = service.get_job(session, tenant.id, job_id)
        assert job.status is JobStatus.failed and "insufficient data" in (job.error or "")
        assert job.model_version_id is None and job.finished_at is not None
