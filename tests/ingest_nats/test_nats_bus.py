"""The scale-out shape against the real nats-server (127.0.0.1:4222, JetStream)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from foresight.config import Settings
from foresight.ingest.batch import Batch
from foresight.ingest.nats_bus import DURABLE, Worker, encode, ensure_stream
from foresight.ingest.partitions import leases_bucket, meta_bucket
from foresight.kit.db import Database
from foresight.models import Reading, Role, Rollup
from foresight.web.app import create_app
from tests.factories import Factory

NATS_URL = os.environ.get("FORESIGHT_TEST_NATS_URL", "nats://127.0.0.1:4222")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
T0_S = 1_767_225_600  # 2026-01-01T00:00:00Z


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
def names() -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:10]
    stream, prefix = f"FTEST_{suffix}", f"ftest{suffix}.ingest"
    yield stream, prefix

    async def drop() -> None:
        import nats

        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        with contextlib.suppress(Exception):  # already gone
            await js.delete_stream(stream)
        for bucket in (leases_bucket(stream), meta_bucket(stream)):
            with contextlib.suppress(Exception):
                await js.delete_key_value(bucket)
        await nc.close()

    asyncio.run(drop())


class WorkerThread:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=lambda: self.loop.run_until_complete(worker.run()), daemon=True
        )

    def __enter__(self) -> WorkerThread:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self.worker.stop)
        self.thread.join(timeout=30)


def _count(db: Database) -> int:
    with db.transaction(write=False) as session:
        return int(session.scalar(select(func.count()).select_from(Reading)) or 0)


def _wait_for(db: Database, expected: int, timeout_s: float = 30) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (n := _count(db)) >= expected:
            return n
        time.sleep(0.1)
    return _count(db)


def test_api_publishes_and_worker_persists(
    settings: Settings, db: Database, factory: Factory, names: tuple[str, str]
) -> None:
    stream, prefix = names
    nats_settings = settings.model_copy(
        update={
            "nats_url": NATS_URL,
            "nats_stream": stream,
            "nats_subject_prefix": prefix,
            "max_body_bytes": 4 * 1024 * 1024,
        }
    )
    operator = factory.user(factory.tenant(), Role.analyst)
    worker = Worker(db, url=NATS_URL, stream=stream, subject_prefix=prefix)
    with TestClient(create_app(nats_settings, db)) as client, WorkerThread(worker):
        created = client.post(
            "/api/v1/assets", json={"tag": "PUMP-001", "name": "p"}, headers=operator.headers
        )
        assert created.status_code == 201
        readings = [
            {"asset": "PUMP-001", "ts": T0_S + i, "values": {"temperature": i, "vibration": 1}}
            for i in range(3000)
        ]
        for start in range(0, 3000, 1000):
            r = client.post(
                "/api/v1/readings",
                json={"readings": readings[start : start + 1000]},
                headers=operator.headers,
            )
            assert r.status_code == 200 and r.json()["accepted"] == 2000, r.text
        # Unknown assets are still refused at once in the scale-out shape.
        r = client.post(
            "/api/v1/readings",
            json={"readings": [{"asset": "NOPE", "ts": T0_S, "values": {"t": 1}}]},
            headers=operator.headers,
        )
        assert r.status_code == 422 and "unknown asset" in r.text
        assert _wait_for(db, 6000) == 6000
    assert _count(db) == 6000


def test_redelivery_changes_nothing(db: Database, factory: Factory, names: tuple[str, str]) -> None:
    stream, prefix = names
    tenant = factory.tenant()
    # The asset must exist; the worker creates the sensor.
    with db.transaction() as session:
        from foresight.models import Asset

        session.add(Asset(tenant_id=tenant.id, tag="MOTOR-1", name="m"))
    batch = Batch(tenant.id, actor_label="test")
    for i in range(500):
        batch.add(i, "MOTOR-1", "current", (T0_S + i * 10) * 1000, float(i % 17))
    worker = Worker(db, url=NATS_URL, stream=stream, subject_prefix=prefix, ack_wait_s=1)

    async def scenario() -> list[Any]:
        import nats
        from nats.js import api

        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        await ensure_stream(js, stream, prefix)
        await js.publish(f"{prefix}.{tenant.id}", encode(batch))
        sub = await js.pull_subscribe(
            f"{prefix}.>", durable=DURABLE, stream=stream, config=api.ConsumerConfig(ack_wait=1)
        )
        first = await sub.fetch(1, timeout=5)
        # Persisted but never acked: as if the worker died right after its commit.
        await asyncio.to_thread(worker._persist, [Batch_from(first[0].data)])
        snapshot = _rollup_snapshot(db)
        redelivered = await sub.fetch(1, timeout=10)  # after ack_wait the message comes back
        assert redelivered[0].data == first[0].data
        await worker.handle(redelivered)  # persists again, then acks
        await nc.close()
        return [snapshot, _rollup_snapshot(db)]

    before, after = asyncio.run(scenario())
    assert _count(db) == 500
    assert before == after


def Batch_from(data: bytes) -> Batch:  # noqa: N802 - reads like the constructor it wraps
    from foresight.ingest.nats_bus import decode

    return decode(data)


def _rollup_snapshot(db: Database) -> list[tuple[Any, ...]]:
    with db.transaction(write=False) as session:
        rows = session.execute(
            select(
                Rollup.series_id, Rollup.resolution_s, Rollup.bucket_ms, Rollup.count,
                Rollup.mean, Rollup.m2, Rollup.min, Rollup.max, Rollup.last,
            ).order_by(Rollup.series_id, Rollup.resolution_s, Rollup.bucket_ms)
        )  # fmt: skip
        return [tuple(r) for r in rows]
