"""MQTT ingestion against the real Mosquitto on 127.0.0.1:1883."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from foresight.config import Settings
from foresight.ingest.batch import Limits
from foresight.ingest.mqtt import parse_payload
from foresight.kit.db import Database
from foresight.models import Reading, Role
from foresight.web.app import create_app
from tests.factories import Factory

MQTT_HOST = os.environ.get("FORESIGHT_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("FORESIGHT_TEST_MQTT_PORT", "1883"))
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
T0_S = 1_767_225_600


@pytest.fixture(scope="module", autouse=True)
def _broker_reachable() -> None:
    try:
        socket.create_connection((MQTT_HOST, MQTT_PORT), timeout=2).close()
    except OSError as exc:
        if IN_CI:
            pytest.fail(f"Mosquitto at {MQTT_HOST}:{MQTT_PORT} unreachable (CI=true): {exc}")
        pytest.skip(f"Mosquitto at {MQTT_HOST}:{MQTT_PORT} is unreachable: {exc}")


def _count(db: Database) -> int:
    with db.transaction(write=False) as session:
        return int(session.scalar(select(func.count()).select_from(Reading)) or 0)


async def _publish(topic: str, payloads: list[bytes]) -> None:
    import aiomqtt

    async with aiomqtt.Client(MQTT_HOST, MQTT_PORT, identifier=f"dev-{uuid.uuid4().hex}") as c:
        for payload in payloads:
            await c.publish(topic, payload, qos=1)


def test_subscriber_ingests_device_messages(
    settings: Settings, db: Database, factory: Factory
) -> None:
    prefix = f"ftest{uuid.uuid4().hex[:8]}"
    tenant = factory.tenant()
    analyst = factory.user(tenant, Role.analyst)
    mqtt_settings = settings.model_copy(
        update={
            "mqtt_url": f"mqtt://{MQTT_HOST}:{MQTT_PORT}",
            "mqtt_topic_prefix": prefix,
            "mqtt_client_id": f"foresight-test-{uuid.uuid4().hex[:8]}",
        }
    )
    with TestClient(create_app(mqtt_settings, db)) as client:
        assert (
            client.post(
                "/api/v1/assets", json={"tag": "PUMP-001", "name": "p"}, headers=analyst.headers
            ).status_code
            == 201
        )
        subscriber = client.app.state.mqtt_subscriber  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not subscriber.subscribed:
            time.sleep(0.05)
        assert subscriber.subscribed
        payloads = [
            json.dumps(
                {"equipment_id": "PUMP-001", "timestamp": T0_S + i, "temperature": 60 + i,
                 "vibration": 2.1}
            ).encode()
            for i in range(20)
        ]  # fmt: skip
        payloads.append(
            json.dumps(
                {
                    "readings": [
                        {"ts": T0_S + 100 + i, "values": {"pressure": 8.5}} for i in range(30)
                    ]
                }
            ).encode()
        )
        # A device claiming another asset than its topic's is refused; so is garbage.
        payloads.append(json.dumps({"equipment_id": "OTHER", "temperature": 1}).encode())
        payloads.append(b"not json")
        asyncio.run(_publish(f"{prefix}/{tenant.name}/PUMP-001/readings", payloads))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and subscriber.processed < len(payloads):
            time.sleep(0.1)
        assert subscriber.processed == len(payloads)
    assert _count(db) == 20 * 2 + 30


def test_payload_shapes_and_asset_from_topic() -> None:
    tenant = uuid.uuid4()
    limits = Limits(max_future_s=300)
    batch = parse_payload(
        json.dumps(
            [{"ts": T0_S, "values": {"a": 1}}, {"asset": "X", "ts": T0_S, "values": {"a": 2}}]
        ).encode(),
        tenant_id=tenant, asset="PUMP-9", limits=limits,
    )  # fmt: skip
    assert batch.asset == ["PUMP-9"] and batch.value == [1.0]
    assert batch.errors[0].row == 1 and "does not match" in batch.errors[0].reason
