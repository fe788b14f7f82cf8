"""Scale-out: events produced by any process reach the clients of any API node (real NATS).

Two API apps share one database and the nats-server at 127.0.0.1:4222 (or
FORESIGHT_TEST_NATS_URL); a `foresight worker` equivalent persists what API node A accepted and
publishes its readings; the WebSocket clients are connected to API node B only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from foresight.config import Settings
from foresight.detection import alerts as alerts_service
from foresight.ingest.nats_bus import Worker
from foresight.ingest.pipeline import Pipeline
from foresight.kit.db import Database
from foresight.live.events import anomaly_event, health_event
from foresight.live.nats_relay import check_prefix
from foresight.live.service import LiveProducer
from foresight.models import Role, Severity
from foresight.web.app import create_app
from tests.factories import Factory
from tests.live.helpers import Message, connect, hello, post_readings, receive, wait_for

NATS_URL = os.environ.get("FORESIGHT_TEST_NATS_URL", "nats://127.0.0.1:4222")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="module", autouse=True)
def _nats_reachable() -> None:
    host, port = NATS_URL.rsplit("//", 1)[1].split(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError as exc:
        if IN_CI:
            pytest.fail(f"NATS at {NATS_URL} is unreachable (CI=true: required): {exc}")
        pytest.skip(f"NATS at {NATS_URL} is unreachable: {exc}")


@pytest.fixture
def nats_settings(settings: Settings) -> Iterator[Settings]:
    suffix = uuid.uuid4().hex[:10]
    stream = f"FTEST_{suffix}"
    yield settings.model_copy(
        update={
            "nats_url": NATS_URL,
            "nats_stream": stream,
            "nats_subject_prefix": f"ftest{suffix}.ingest",
            "ws_nats_subject_prefix": f"ftest{suffix}.live",
            "ws_readings_interval_s": 0.1,
        }
    )

    async def drop() -> None:
        import nats

        nc = await nats.connect(NATS_URL)
        with contextlib.suppress(Exception):  # already gone
            await nc.jetstream().delete_stream(stream)
        await nc.close()

    asyncio.run(drop())


class WorkerThread:
    """What `foresight worker` runs: the consumer, with live updates on its pipeline."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.live = LiveProducer.from_settings(settings, db)
        self.worker = Worker(
            db,
            url=settings.nats_url,
            stream=settings.nats_stream,
            subject_prefix=settings.nats_subject_prefix,
            pipeline=Pipeline(observers=[self.live.observe]),
        )
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(
            target=lambda: self.loop.run_until_complete(self._main()), daemon=True
        )

    async def _main(self) -> None:
        await self.live.start()
        self.started.set()
        try:
            await self.worker.run()
        finally:
            await self.live.stop()

    def __enter__(self) -> WorkerThread:
        self.thread.start()
        if not self.started.wait(30):
            raise AssertionError("the worker's live publisher did not connect within 30 s")
        return self

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self.worker.stop)
        self.thread.join(timeout=30)


def nothing_else(ws: object) -> None:
    ws.send_json({"type": "ping"})  # type: ignore[attr-defined]
    message = receive(ws)  # type: ignore[arg-type]
    assert message["type"] == "pong", f"unexpected message {message}"


def test_clients_of_one_node_see_events_of_workers_and_other_nodes(
    nats_settings: Settings, db: Database, factory: Factory
) -> None:
    analyst = factory.user(factory.tenant(), Role.analyst)
    operator = factory.user(analyst.tenant_id, Role.operator)
    stranger = factory.user(factory.tenant(), Role.viewer)
    with (
        TestClient(create_app(nats_settings, db)) as a,
        TestClient(create_app(nats_settings, db)) as b,
        WorkerThread(nats_settings, db) as worker,
    ):
        r = a.post("/api/v1/assets", json={"tag": "P-1", "name": "p"}, headers=analyst.headers)
        assert r.status_code == 201, r.text
        asset_id = r.json()["id"]
        with (
            connect(b, f"assets/{asset_id}", analyst.token) as one,
            connect(b, "fleet", operator.token) as fleet,
            connect(b, "fleet", stranger.token) as other_tenant,
        ):
            for ws in (one, fleet, other_tenant):
                hello(ws)
            # Readings accepted by A, persisted by the worker, pushed by B (downsampled).
            post_readings(
                a, analyst.headers, "P-1", [(i, {"temperature": 20.0 + i}) for i in range(50)]
            )

            def last_reading(m: Message) -> bool:
                sensors = m["data"].get("sensors", {}) if m["type"] == "readings" else {}
                return bool(sensors.get("temperature", {}).get("value") == 69.0)

            for ws in (one, fleet):
                message, _ = wait_for(ws, last_reading, what="the readings the worker stored")
                assert message["asset_id"] == asset_id
            # An alert acknowledged through node A's API.
            with db.transaction() as session:
                alert, _ = alerts_service.fire(
                    session,
                    alerts_service.Trigger(
                        tenant_id=analyst.tenant_id, asset_id=uuid.UUID(asset_id),
                        source="detector:test", severity=Severity.critical, title="hot",
                        message="", at=datetime(2026, 1, 1, tzinfo=UTC), value=99.0,
                    ),
                )  # fmt: skip
            r = a.post(f"/api/v1/alerts/{alert.id}/acknowledge", headers=operator.headers)
            assert r.status_code == 200, r.text
            for ws in (one, fleet):
                message, _ = wait_for(
                    ws,
                    lambda m: m["type"] == "alert" and m.get("event") == "alert.acknowledged",
                    what="alert.acknowledged from node A",
                )
                assert message["data"]["id"] == str(alert.id)
                assert message["data"]["acknowledged_by"] == operator.email
            # Published on node A and by the worker (where anomaly detection runs).
            ts = datetime(2026, 1, 1, tzinfo=UTC)
            a.app.state.live.publish(  # type: ignore[attr-defined]
                analyst.tenant_id,
                uuid.UUID(asset_id),
                anomaly_event(sensor="temperature", ts=ts, score=0.9, flag=True),
            )
            worker.live.publish(
                analyst.tenant_id, uuid.UUID(asset_id), health_event(health_score=42.0)
            )
            for ws in (one, fleet):
                # Two publishers: the order between them is not defined.
                seen: dict[str, Message] = {}
                while len(seen) < 2:
                    message, _ = wait_for(
                        ws, lambda m: m["type"] in ("anomaly", "health"), what="anomaly, health"
                    )
                    seen[message["type"]] = message
                assert seen["anomaly"]["data"]["score"] == 0.9
                assert seen["health"]["data"]["health_score"] == 42.0
            # The other tenant's client on the same node saw nothing.
            nothing_else(other_tenant)


def test_live_subjects_must_stay_outside_the_ingest_stream() -> None:
    check_prefix("foresight.live", "foresight.ingest")
    for bad in ("foresight.ingest", "foresight.ingest.live"):
        with pytest.raises(ValueError, match="JetStream"):
            check_prefix(bad, "foresight.ingest")
