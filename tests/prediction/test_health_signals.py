"""Health in every prediction: the signals gathered per asset at its own time, and the trend."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select

from foresight.kit.db import Database
from foresight.maintenance import service as maintenance_service
from foresight.maintenance.schemas import MaintenanceCreate
from foresight.models import (
    Alert,
    AlertStatus,
    AnomalyScore,
    Asset,
    Criticality,
    HealthScoreDay,
    MaintenanceKind,
    MaintenanceRecord,
    MaintenanceStatus,
    Prediction,
    Severity,
    Tenant,
)
from foresight.prediction import features, service, signals
from foresight.prediction.health import HealthInputs, health, trend_per_week
from foresight.timeseries.store import write_arrays
from tests.factories import Factory
from tests.prediction.fleet_sim import DAY_MS, HOUR_MS, T0, add_asset, at, principal

LAST = T0 + 40 * DAY_MS  # every asset's latest reading


@pytest.fixture
def tenant(factory: Factory) -> Tenant:
    return factory.tenant()


def _asset(db: Database, tenant: Tenant, tag: str, *, criticality: str = "medium") -> uuid.UUID:
    asset_id, series = add_asset(db, tenant.id, tag)
    ts = np.arange(T0, LAST + 1, HOUR_MS, dtype=np.int64)
    with db.transaction() as session:
        session.get_one(Asset, asset_id).criticality = Criticality(criticality)
        for sid in series.values():
            write_arrays(session, np.full(ts.shape, sid), ts, np.full(ts.shape, 1.0))
    return asset_id


def _alert(db: Database, tenant: Tenant, asset_id: uuid.UUID, severity: Severity,
           status: AlertStatus = AlertStatus.open) -> None:  # fmt: skip
    with db.transaction() as session:
        session.add(
            Alert(
                tenant_id=tenant.id,
                asset_id=asset_id,
                source=f"rule:{uuid.uuid4()}",
                severity=severity,
                status=status,
                title="t",
                triggered_at=at(LAST),
                last_triggered_at=at(LAST),
            )
        )


def _anomaly(db: Database, tenant: Tenant, asset_id: uuid.UUID, minute_ms: int, score: float,
             detector: str = "series") -> None:  # fmt: skip
    with db.transaction() as session:
        session.add(
            AnomalyScore(
                asset_id=asset_id,
                detector=detector,
                minute_ms=minute_ms,
                tenant_id=tenant.id,
                score=score,
                flag=score >= 1,
                kind="spike",
            )
        )


def _maintenance(db: Database, tenant: Tenant, asset_id: uuid.UUID, **fields: object) -> None:
    with db.transaction() as session:
        maintenance_service.create_record(
            session,
            principal=principal(tenant.id),
            asset_id=asset_id,
            data=MaintenanceCreate.model_validate(fields),
        )


def test_each_signal_reaches_the_score_at_the_assets_own_time(db: Database, tenant: Tenant) -> None:
    quiet = _asset(db, tenant, "QUIET", criticality="high")
    alerted = _asset(db, tenant, "ALERTED")
    _alert(db, tenant, alerted, Severity.critical)
    _alert(db, tenant, alerted, Severity.warning, AlertStatus.acknowledged)
    _alert(db, tenant, alerted, Severity.emergency, AlertStatus.resolved)  # resolved: no cost
    _alert(db, tenant, quiet, Severity.info, AlertStatus.resolved)
    anomalous = _asset(db, tenant, "ANOMALOUS")
    _anomaly(db, tenant, anomalous, LAST - 10 * 60_000, 1.25)
    _anomaly(db, tenant, anomalous, LAST - 20 * 60_000, 0.9, detector="asset")
    _anomaly(db, tenant, anomalous, LAST - 2 * HOUR_MS, 9.0)  # before the last hour: not counted
    _anomaly(db, tenant, quiet, LAST - 10 * 60_000, 0.4)  # below the floor
    overdue = _asset(db, tenant, "OVERDUE")
    _maintenance(db, tenant, overdue, kind="preventive", status="scheduled",
                 scheduled_for=at(LAST - 15 * DAY_MS).isoformat())  # fmt: skip
    _maintenance(db, tenant, overdue, kind="inspection", status="scheduled",
                 scheduled_for=at(LAST + 5 * DAY_MS).isoformat())  # fmt: skip
    _maintenance(db, tenant, quiet, kind="preventive", status="scheduled",
                 scheduled_for=at(LAST + 3 * DAY_MS).isoformat())  # not due yet  # fmt: skip
    down = _asset(db, tenant, "DOWN")
    _maintenance(db, tenant, down, kind="failure", status="in_progress",
                 started_at=at(LAST - DAY_MS).isoformat())  # fmt: skip

    rows = {r.asset_tag: r for r in service.predict(db, tenant.id)}  # no model: fallback rows

    def expected(row: service.PredictionRow, **signals: object) -> HealthInputs:
        p = row.failure_probability
        return HealthInputs(p7=p[7], p30=p[30], rul_days=row.rul_days, **signals)  # type: ignore[arg-type]

    cases = {
        "QUIET": {"criticality": "high"},
        "ALERTED": {"open_alerts": {"critical": 1, "warning": 1}},
        "ANOMALOUS": {"anomaly_score": 1.25},
        "OVERDUE": {"days_overdue": 15.0},
        "DOWN": {"failed": True},
    }
    for tag, found in cases.items():
        row = rows[tag]
        h = health(expected(row, **found))
        assert (row.health_score, row.status, row.health_penalties) == (
            h.score,
            h.status,
            h.penalties,
        ), tag
    assert rows["ALERTED"].health_penalties["open_alerts"] == 20.0  # type: ignore[index]
    assert rows["ANOMALOUS"].health_penalties["anomaly"] == 5.0  # type: ignore[index]
    assert rows["OVERDUE"].health_penalties["overdue_maintenance"] == 5.0  # type: ignore[index]
    assert rows["DOWN"].status == "failed"
    assert rows["ALERTED"].status == "warning"  # a critical alert is open
    assert rows["QUIET"].health_penalties["open_alerts"] == 0  # type: ignore[index]
    # Stored with the prediction and read back the same.
    with db.transaction(write=False) as session:
        history = service.history(session, tenant.id, overdue)
    assert history[0].health_penalties == rows["OVERDUE"].health_penalties
    assert history[0].health_score == rows["OVERDUE"].health_score


def _stored(db: Database, tenant: Tenant, asset_id: uuid.UUID, as_of: datetime,
            score: float | None) -> None:  # fmt: skip
    with db.transaction() as session:
        session.add(
            Prediction(
                tenant_id=tenant.id,
                asset_id=asset_id,
                as_of=as_of,
                computed_at=as_of,
                fallback=True,
                health_score=score,
                top_factors=[],
            )
        )
        if score is not None:  # as service.predict stores them
            signals.record_scores(session, tenant.id, [(asset_id, as_of, score)])


def test_trend_is_the_slope_of_the_stored_scores_and_the_new_one(
    db: Database, tenant: Tenant
) -> None:
    falling = _asset(db, tenant, "FALLING")
    fresh = _asset(db, tenant, "FRESH")
    end = at(LAST)
    days = [27.5, 20, 13, 6, 2]  # days before the latest reading
    scores = [100.0, 96.0, 95.0, 90.0, 88.0]
    for d, s in zip(days, scores, strict=True):
        _stored(db, tenant, falling, end - timedelta(days=d), s)
    _stored(db, tenant, falling, end - timedelta(days=40), 10.0)  # outside the four weeks
    _stored(db, tenant, falling, end - timedelta(days=3), None)  # no score: not counted
    _stored(db, tenant, fresh, end - timedelta(hours=2), 50.0)  # less than a day of history

    rows = {r.asset_tag: r for r in service.predict(db, tenant.id)}

    new = rows["FALLING"].health_score
    assert new is not None
    times = [end - timedelta(days=d) for d in days] + [end]
    want = trend_per_week(times, [*scores, new], now=end)
    assert want is not None and want < 0
    assert rows["FALLING"].health_trend == pytest.approx(want, abs=0.011)
    assert rows["FRESH"].health_trend is None
    # The next scoring counts this one too.
    again = {r.asset_tag: r for r in service.predict(db, tenant.id)}
    assert again["FALLING"].health_trend is not None
    assert again["FRESH"].health_trend is None  # both points at the same time


def test_the_asset_carries_its_latest_score_and_changes_become_live_events(
    db: Database, tenant: Tenant
) -> None:
    asset_id = _asset(db, tenant, "PUMP")
    (first,) = service.predict(db, tenant.id)
    with db.transaction(write=False) as session:
        assert session.get_one(Asset, asset_id).health_score == first.health_score
    events = service.health_events([first])
    assert [(a, e["type"]) for a, e in events] == [(asset_id, "health")]
    assert events[0][1]["data"]["health_score"] == first.health_score
    assert events[0][1]["data"]["previous"] is None

    (same,) = service.predict(db, tenant.id)  # nothing changed: no event
    assert same.previous_health_score == first.health_score
    assert service.health_events([same]) == []

    _alert(db, tenant, asset_id, Severity.emergency)
    (worse,) = service.predict(db, tenant.id)
    assert worse.health_score is not None and first.health_score is not None
    assert worse.health_score < first.health_score and worse.status == "critical"
    ((_, event),) = service.health_events([worse])
    assert event["data"]["previous"] == first.health_score
    assert event["data"]["status"] == "critical"
    with db.transaction(write=False) as session:
        assert session.get_one(Asset, asset_id).health_score == worse.health_score
    # Not stored: neither the asset nor the history change.
    (dry,) = service.predict(db, tenant.id, store=False)
    with db.transaction(write=False) as session:
        assert len(service.history(session, tenant.id, asset_id)) == 3
        assert dry.previous_health_score is None


def test_each_asset_is_measured_at_its_own_time_in_one_batch(db: Database, tenant: Tenant) -> None:
    """Assets whose latest readings differ: every window (anomalies, trend, maintenance done)
    ends at each one's own time, not at the batch's latest."""
    current = _asset(db, tenant, "CURRENT")
    old_id, series = add_asset(db, tenant.id, "STOPPED")  # reported until 10 days before LAST
    stopped_at = LAST - 10 * DAY_MS
    ts = np.arange(T0, stopped_at + 1, HOUR_MS, dtype=np.int64)
    with db.transaction() as session:
        for sid in series.values():
            write_arrays(session, np.full(ts.shape, sid), ts, np.full(ts.shape, 1.0))
    # An anomaly at the end of each asset's history, and one of STOPPED's at CURRENT's time
    # (after STOPPED's last reading: not in its window).
    _anomaly(db, tenant, current, LAST - 5 * 60_000, 1.5)
    _anomaly(db, tenant, old_id, stopped_at - 5 * 60_000, 2.0)
    _anomaly(db, tenant, old_id, LAST - 5 * 60_000, 9.0)
    # Stored scores up to each one's time.
    for d, score in ((20, 100.0), (10, 90.0), (3, 80.0)):
        _stored(db, tenant, old_id, at(stopped_at) - timedelta(days=d), score)
        _stored(db, tenant, current, at(LAST) - timedelta(days=d), 100.0 - score / 10)
    _stored(db, tenant, old_id, at(LAST) - timedelta(days=1), 0.0)  # after its time: ignored

    rows = {r.asset_tag: r for r in service.predict(db, tenant.id)}

    stopped, live = rows["STOPPED"], rows["CURRENT"]
    assert stopped.as_of == at(stopped_at) and live.as_of == at(LAST)
    assert stopped.health_penalties is not None and live.health_penalties is not None
    assert stopped.health_penalties["anomaly"] == 10.0  # 2.0 at its own end, not the 9.0
    assert live.health_penalties["anomaly"] == round(10 * (1.5 - 0.5) / 1.5, 2)
    assert stopped.health_score is not None and live.health_score is not None
    want_stopped = trend_per_week(
        [at(stopped_at) - timedelta(days=d) for d in (20, 10, 3)] + [at(stopped_at)],
        [100.0, 90.0, 80.0, stopped.health_score],
    )
    assert stopped.health_trend == pytest.approx(want_stopped, abs=0.011)
    want_live = trend_per_week(
        [at(LAST) - timedelta(days=d) for d in (20, 10, 3)] + [at(LAST)],
        [90.0, 91.0, 92.0, live.health_score],
    )
    assert live.health_trend == pytest.approx(want_live, abs=0.011)


def _day_sums(db: Database, tenant: Tenant) -> dict[tuple[uuid.UUID, int], tuple[float, ...]]:
    with db.transaction(write=False) as session:
        rows = session.scalars(
            select(HealthScoreDay).where(HealthScoreDay.tenant_id == tenant.id)
        ).all()
        return {
            (r.asset_id, r.day): (r.n, r.sum_x, r.sum_y, r.sum_xx, r.sum_xy, r.min_x, r.max_x)
            for r in rows
        }


def _sums_of_predictions(
    db: Database, tenant: Tenant
) -> dict[tuple[uuid.UUID, int], tuple[float, ...]]:
    """What ``health_score_days`` should hold: the stored predictions summed per asset and day."""
    points: dict[tuple[uuid.UUID, int], list[tuple[float, float]]] = {}
    with db.transaction(write=False) as session:
        for p in session.scalars(select(Prediction).where(Prediction.tenant_id == tenant.id)):
            if p.as_of is None or p.health_score is None:
                continue
            day, into = divmod(int(p.as_of.timestamp() * 1000), DAY_MS)
            points.setdefault((p.asset_id, day), []).append((into / DAY_MS, p.health_score))
    return {
        key: (
            len(xy),
            sum(x for x, _ in xy),
            sum(y for _, y in xy),
            sum(x * x for x, _ in xy),
            sum(x * y for x, y in xy),
            min(x for x, _ in xy),
            max(x for x, _ in xy),
        )
        for key, xy in points.items()
    }


def test_storing_many_keeps_the_assets_scores_and_the_daily_sums(
    db: Database, tenant: Tenant
) -> None:
    """More assets than the few bound one by one: the scores set in one statement, and the
    trend's daily sums always the stored predictions' own."""
    ids = [_asset(db, tenant, f"P{i:02d}") for i in range(24)]
    _alert(db, tenant, ids[3], Severity.critical)
    first = service.predict(db, tenant.id)
    with db.transaction(write=False) as session:
        scores = dict(session.execute(select(Asset.id, Asset.health_score)).all())
    assert scores == {r.asset_id: r.health_score for r in first}
    assert scores[ids[3]] is not None and scores[ids[3]] < scores[ids[0]]  # type: ignore[operator]
    _alert(db, tenant, ids[5], Severity.emergency)
    service.predict(db, tenant.id)  # the same day again: the rows add up
    want = _sums_of_predictions(db, tenant)
    got = _day_sums(db, tenant)
    assert set(got) == set(want) and len(got) == 24
    for key, sums in want.items():
        assert got[key][0] == sums[0] == 2
        assert got[key][1:] == pytest.approx(sums[1:], rel=1e-12, abs=1e-12)
    with db.transaction(write=False) as session:
        assert session.get_one(Asset, ids[5]).health_score < scores[ids[5]]  # type: ignore[operator]


def test_few_rows_are_stored_in_one_statement_as_a_transaction_stores_them(
    db: Database, tenant: Tenant
) -> None:
    """PostgreSQL stores a few predictions in one autocommitted statement
    (``service._store_at_once``): the same rows, day sums, asset scores and previous scores as
    the transaction of ``service._store``, and an asset without a new score keeps its own."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the one-statement store is PostgreSQL's")
    ids = [_asset(db, tenant, tag) for tag in ("A", "B", "C")]
    rows = service.predict(db, tenant.id, store=False)
    assert all(r.health_score is not None for r in rows)
    with db.transaction() as session:
        session.get_one(Asset, ids[2]).health_score = 12.5
    rows[2].health_score = None  # C: no new score (C's own stays as it is)

    def tables() -> tuple[list[dict[str, object]], dict[tuple[uuid.UUID, int], tuple], dict]:
        with db.transaction(write=False) as session:
            predictions = [
                {c: getattr(p, c) for c in rows[0].to_values(tenant.id) if c != "id"}
                for p in session.scalars(select(Prediction).order_by(Prediction.asset_id))
            ]
            days = {
                (d.asset_id, d.day): (d.n, d.sum_x, d.sum_y, d.sum_xx, d.sum_xy, d.min_x, d.max_x)
                for d in session.scalars(select(HealthScoreDay))
            }
            scores = dict(session.execute(select(Asset.id, Asset.health_score)).all())
        return predictions, days, scores

    service._store_at_once(db, tenant.id, rows)
    once = tables()
    assert [r.previous_health_score for r in rows] == [None, None, 12.5]
    for r in rows:
        r.id = uuid.uuid4()
    with db.transaction() as session:
        service._store(session, tenant.id, rows)
    twice = tables()
    assert [r.previous_health_score for r in rows] == [
        rows[0].health_score,
        rows[1].health_score,
        12.5,
    ]
    assert twice[0] == [p for p in once[0] for _ in range(2)]  # the same rows, twice over
    assert set(twice[1]) == set(once[1]) and len(once[1]) == 2  # A's and B's day
    for key, (n, sx, sy, sxx, sxy, lo, hi) in once[1].items():
        assert twice[1][key] == pytest.approx((2 * n, 2 * sx, 2 * sy, 2 * sxx, 2 * sxy, lo, hi))
    assert (
        once[2]
        == twice[2]
        == {ids[0]: rows[0].health_score, ids[1]: rows[1].health_score, ids[2]: 12.5}
    )


def test_maintenance_read_once_is_what_each_query_would_read(db: Database, tenant: Tenant) -> None:
    """Scoring reads an asset's maintenance records once (``features.maintenance_rows``) for the
    features and the health signals: every kind and status, dated or not, before and after the
    assets' times, gives the same features (to the bit) and signals as their own queries."""
    a = _asset(db, tenant, "A")
    b = _asset(db, tenant, "B")
    end = at(LAST)
    when = [None, end - timedelta(days=30), end - timedelta(days=2), end + timedelta(days=3)]
    rng = np.random.default_rng(5)
    with db.transaction() as session:
        for kind in MaintenanceKind:
            for status in MaintenanceStatus:
                for asset_id in (a, b):
                    started, ended, due = (when[i] for i in rng.integers(0, len(when), 3))
                    if started is not None and ended is not None and ended < started:
                        started, ended = ended, started
                    session.add(
                        MaintenanceRecord(
                            tenant_id=tenant.id, asset_id=asset_id, kind=kind, status=status,
                            started_at=started, ended_at=ended, scheduled_for=due,
                        )
                    )  # fmt: skip
    config = features.FeatureConfig()
    with db.transaction(write=False) as session:
        assets = [session.get_one(Asset, a), session.get_one(Asset, b)]
        rows = features.maintenance_rows(session, tenant.id, [a, b])
        assert len(rows) == 2 * len(MaintenanceKind) * len(MaintenanceStatus)
        kwargs = {"as_of": "latest", "session": session, "assets": assets}
        own = features.build_dataset(None, tenant.id, config, **kwargs)
        shared = features.build_dataset(None, tenant.id, config, **kwargs, maintenance=rows)
        assert np.array_equal(own.X.view(np.uint64), shared.X.view(np.uint64))
        for times in ({a: end, b: end}, {a: end - timedelta(days=5), b: end + timedelta(days=9)}):
            assert signals.gather(session, assets, times) == signals.gather(
                session, assets, times, maintenance=rows
            )
