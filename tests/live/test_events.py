"""What the sockets push: downsampled readings, alert changes, published anomaly/health events."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from foresight.config import Settings
from foresight.kit.db import Database
from foresight.live.events import anomaly_event, health_event
from foresight.models import Role
from foresight.web.app import create_app
from tests.assets.helpers import create_asset
from tests.detection.helpers import at, rule, send
from tests.factories import Factory, TestUser
from tests.live.helpers import (
    Message,
    connect,
    flush_readings,
    hello,
    post_readings,
    receive,
    wait_for,
)

HOT = [{"sensor": "temperature", "op": ">", "threshold": 80}]


@pytest.fixture
def manual(settings: Settings, db: Database) -> Iterator[TestClient]:
    """An app whose readings go out only when the test flushes (an interval of an hour)."""
    app = create_app(settings.model_copy(update={"ws_readings_interval_s": 3600.0}), db)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def nothing_else(ws: Any) -> None:
    """Nothing is queued for the socket: a ping is answered first."""
    ws.send_json({"type": "ping"})
    message = receive(ws)
    assert message["type"] == "pong", f"unexpected message {message}"


def pumps(client: TestClient, factory: Factory, *tags: str) -> tuple[TestUser, dict[str, str]]:
    user = factory.user(factory.tenant(), Role.analyst)
    ids = {}
    for tag in tags:
        ids[tag] = create_asset(client, user.headers, tag, type="pump")["id"]
        r = client.post(
            f"/api/v1/assets/{ids[tag]}/sensors", json={"key": "temperature"}, headers=user.headers
        )
        assert r.status_code == 201, r.text
    return user, ids


def points(
    start: int, temperature: Any, *, vibration: float
) -> list[tuple[float, dict[str, float]]]:
    """100 readings from ``start`` seconds on: temperature(i) and a constant vibration."""
    return [
        (start + i, {"temperature": temperature(i), "vibration": vibration}) for i in range(100)
    ]


def is_alert(event: str, asset_id: str) -> Any:
    def match(m: Message) -> bool:
        return m["type"] == "alert" and m["event"] == event and m["asset_id"] == asset_id

    return match


def test_readings_are_downsampled_to_one_message_per_asset_per_interval(
    manual: TestClient, factory: Factory
) -> None:
    client = manual
    user, ids = pumps(client, factory, "P-1", "P-2")
    # Readings only: the jump to 300 is also an anomaly, pushed as its own type.
    with (
        connect(client, f"assets/{ids['P-1']}", user.token + "&types=readings") as one,
        connect(client, "fleet", user.token + "&types=readings") as fleet,
    ):
        assert hello(one)["readings_interval_s"] == 3600.0
        hello(fleet)
        # Three requests, 300 points of P-1 per sensor (the newest first, then older ones late),
        # and a few of P-2: one readings message per asset, whatever the number of points.
        h = user.headers
        post_readings(client, h, "P-1", points(200, lambda i: 50.0 + i, vibration=1.0))
        post_readings(client, h, "P-1", points(0, lambda i: 10.0 + i, vibration=2.0))
        post_readings(client, h, "P-1", points(100, lambda i: 300.0, vibration=3.0))
        post_readings(client, h, "P-2", [(5, {"temperature": 40.0}), (6, {"temperature": 41.0})])
        assert flush_readings(client) == 2  # two assets had new points
        message = receive(one)
        assert message["type"] == "readings" and message["asset_id"] == ids["P-1"]
        assert message["at"].endswith("Z")
        sensors = message["data"]["sensors"]
        assert set(sensors) == {"temperature", "vibration"}
        assert sensors["temperature"] == {
            "ts": at(299), "value": 149.0, "min": 10.0, "max": 300.0, "count": 300
        }  # fmt: skip
        assert sensors["vibration"]["value"] == 1.0 and sensors["vibration"]["count"] == 300
        nothing_else(one)  # exactly one message for 300 points
        by_asset = {m["asset_id"]: m for m in (receive(fleet), receive(fleet))}
        assert set(by_asset) == {ids["P-1"], ids["P-2"]}
        assert by_asset[ids["P-2"]]["data"]["sensors"]["temperature"]["value"] == 41.0
        assert by_asset[ids["P-1"]]["data"] == message["data"]
        nothing_else(fleet)
        # Resent points are not new: they send nothing.
        post_readings(client, user.headers, "P-2", [(5, {"temperature": 40.0})])
        assert flush_readings(client) == 0
        nothing_else(fleet)


def test_readings_go_out_by_themselves_at_the_interval(
    client: TestClient, factory: Factory
) -> None:
    user, ids = pumps(client, factory, "P-1")
    with connect(client, f"assets/{ids['P-1']}", user.token + "&types=readings") as ws:
        hello(ws)
        post_readings(client, user.headers, "P-1", [(0, {"temperature": 20.0})])
        message, _ = wait_for(ws, lambda m: m["type"] == "readings", what="a readings message")
        assert message["data"]["sensors"]["temperature"]["value"] == 20.0


def test_alert_changes_reach_the_asset_and_the_fleet_socket_of_that_tenant_only(
    client: TestClient, factory: Factory
) -> None:
    analyst, ids = pumps(client, factory, "P-1", "P-2")
    operator = factory.user(analyst.tenant_id, Role.operator)
    stranger = factory.user(factory.tenant(), Role.admin)
    rule(client, analyst.headers, name="hot", scope={"asset_type": "pump"}, conditions=HOT)
    p1 = ids["P-1"]
    with (
        connect(client, f"assets/{p1}", operator.token) as one,
        connect(client, f"assets/{ids['P-2']}", operator.token + "&types=alert") as two,
        connect(client, "fleet", analyst.token + "&types=alert") as fleet,
        connect(client, "fleet", stranger.token) as other_tenant,
    ):
        for ws in (one, two, fleet, other_tenant):
            hello(ws)
        # Opened by detection, then auto-resolved when it clears (readings are skipped here).
        send(client, analyst.headers, "P-1", [(0, {"temperature": 90.0})])
        for ws in (one, fleet):
            opened, _ = wait_for(ws, is_alert("alert.opened", p1), what="alert.opened")
            data = opened["data"]
            assert data["status"] == "open" and data["asset_id"] == p1
            assert data["severity"] == "warning" and data["triggered_at"] == at(0)
            assert data["title"] == "hot on P-1" and data["tenant_id"] == str(analyst.tenant_id)
        send(client, analyst.headers, "P-1", [(10, {"temperature": 70.0})])
        for ws in (one, fleet):
            resolved, _ = wait_for(ws, is_alert("alert.resolved", p1), what="alert.resolved")
            assert resolved["data"]["resolved_by"] == "auto"
        # Acknowledged and resolved by people: pushed after the commit.
        send(client, analyst.headers, "P-1", [(20, {"temperature": 95.0})])
        for ws in (one, fleet):
            again, _ = wait_for(ws, is_alert("alert.opened", p1), what="the second alert.opened")
        alert_id = again["data"]["id"]
        r = client.post(
            f"/api/v1/alerts/{alert_id}/acknowledge", json={"note": "on it"},
            headers=operator.headers,
        )  # fmt: skip
        assert r.status_code == 200, r.text
        for ws in (one, fleet):
            acked, _ = wait_for(ws, is_alert("alert.acknowledged", p1), what="alert.acknowledged")
            assert acked["data"]["acknowledged_by"] == operator.email
            assert acked["data"]["acknowledge_note"] == "on it"
        r = client.post(f"/api/v1/alerts/{alert_id}/resolve", headers=operator.headers)
        assert r.status_code == 200, r.text
        for ws in (one, fleet):
            done, _ = wait_for(ws, is_alert("alert.resolved", p1), what="alert.resolved by hand")
            assert done["data"]["resolved_by"] == operator.email
            assert done["data"]["status"] == "resolved"
        # A refused change pushes nothing.
        r = client.post(f"/api/v1/alerts/{alert_id}/resolve", headers=operator.headers)
        assert r.status_code == 409
        nothing_else(fleet)
        # The other asset's socket and the other tenant's fleet saw none of it.
        nothing_else(two)
        nothing_else(other_tenant)


def test_anyone_can_publish_anomaly_and_health_events(client: TestClient, factory: Factory) -> None:
    user, ids = pumps(client, factory, "P-1", "P-2")
    live = client.app.state.live  # type: ignore[attr-defined]
    asset_id = uuid.UUID(ids["P-1"])
    with (
        connect(client, f"assets/{asset_id}", user.token) as one,
        connect(client, "fleet", user.token + "&types=health") as fleet,
    ):
        hello(one)
        hello(fleet)
        ts = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
        live.publish(
            user.tenant_id,
            asset_id,
            anomaly_event(sensor="vibration", ts=ts, score=0.93, flag=True, kind="spike"),
        )
        message = receive(one)
        assert message["type"] == "anomaly" and message["asset_id"] == str(asset_id)
        assert message["data"] == {
            "sensor": "vibration", "ts": "2026-01-01T00:05:00Z", "score": 0.93, "flag": True,
            "drivers": ["vibration"], "kind": "spike",
        }  # fmt: skip
        live.publish(user.tenant_id, asset_id, health_event(health_score=61.5, previous=80.0))
        for ws in (one, fleet):
            message = receive(ws)
            assert message["type"] == "health"
            assert message["data"] == {"health_score": 61.5, "previous": 80.0}
        # Another asset's event does not reach the asset socket; the fleet filters by type.
        live.publish(user.tenant_id, uuid.UUID(ids["P-2"]), health_event(health_score=10.0))
        assert receive(fleet)["asset_id"] == ids["P-2"]
        nothing_else(one)
        with pytest.raises(ValueError, match="type"):
            live.publish(user.tenant_id, asset_id, {"data": {}})


def test_detected_anomalies_are_pushed(client: TestClient, factory: Factory) -> None:
    analyst, ids = pumps(client, factory, "P-9")
    rng = __import__("random").Random(4)
    normal = [(i * 60.0, {"temperature": 50 + rng.gauss(0, 0.5)}) for i in range(120)]
    shifted = [(i * 60.0, {"temperature": 65 + rng.gauss(0, 0.5)}) for i in range(120, 130)]
    with connect(client, f"assets/{ids['P-9']}", analyst.token + "&types=anomaly") as ws:
        hello(ws)
        send(client, analyst.headers, "P-9", normal)
        send(client, analyst.headers, "P-9", shifted)
        message, _ = wait_for(
            ws, lambda m: m["type"] == "anomaly" and m["data"]["flag"], what="a flagged anomaly"
        )
        data = message["data"]
        assert data["detector"] == "sensor" and data["drivers"] == ["temperature"]
        assert data["ts"] >= at(120 * 60) and data["score"] >= 1
