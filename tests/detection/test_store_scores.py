"""Per-minute anomaly scores are upserted alike on both backends: the larger score of a minute
wins, within one call and across calls, with its flag, kind and driving sensors."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient
from sqlalchemy import select

from foresight.detection.anomaly import MinuteScore
from foresight.detection.anomaly_stage import store_scores
from foresight.kit.db import Database
from foresight.models import AnomalyScore, Role
from tests.assets.helpers import create_asset
from tests.factories import Factory


def test_the_larger_score_of_a_minute_wins(
    client: TestClient, factory: Factory, db: Database
) -> None:
    tenant = factory.tenant()
    user = factory.user(tenant, Role.analyst)
    a = create_asset(client, user.headers, "PUMP-001")["id"]
    b = create_asset(client, user.headers, "PUMP-002")["id"]
    a_id, b_id = uuid.UUID(a), uuid.UUID(b)

    def score(
        asset: uuid.UUID, detector: str, minute: int, value: float, *sensors: str
    ) -> MinuteScore:
        return MinuteScore(asset, tenant.id, detector, minute * 60_000, value, "spike", sensors)

    with db.transaction() as session:
        store_scores(
            session,
            [
                score(a_id, "sensor", 1, 0.4, "temperature"),
                score(a_id, "sensor", 1, 1.7, "vibration", "temperature"),  # same call: wins
                score(a_id, "sensor", 1, 0.9, "pressure"),
                score(a_id, "multivariate", 1, 0.2),
                score(b_id, "sensor", 2, 1.23456, "pressure"),
            ],
        )
    with db.transaction() as session:
        store_scores(
            session,
            [
                score(a_id, "sensor", 1, 1.2, "power"),  # lower than stored: kept as it was
                score(a_id, "multivariate", 1, 1.5, "temperature", "power"),  # higher: replaces
                score(b_id, "sensor", 3, 0.1),
            ],
        )
        store_scores(session, [])
    with db.transaction(write=False) as session:
        rows = {
            (r.asset_id, r.detector, r.minute_ms): (r.score, r.flag, r.kind, list(r.sensors))
            for r in session.scalars(select(AnomalyScore))
        }
    assert rows == {
        (a_id, "sensor", 60_000): (1.7, True, "spike", ["vibration", "temperature"]),
        (a_id, "multivariate", 60_000): (1.5, True, "spike", ["temperature", "power"]),
        (b_id, "sensor", 120_000): (1.2346, True, "spike", ["pressure"]),
        (b_id, "sensor", 180_000): (0.1, False, "spike", []),
    }
