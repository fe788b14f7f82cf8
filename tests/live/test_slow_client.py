"""A client that never reads is dropped; ingestion and the other clients carry on.

This needs real sockets: Starlette's TestClient buffers everything a server sends, so no client
of it is ever slow. The app runs under uvicorn in a thread; the stuck client is a raw TCP socket
with a tiny receive buffer that completes the handshake and then never reads again.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.sync.client import connect as ws_connect

from foresight.config import Settings
from foresight.kit.db import Database
from foresight.models import Role
from foresight.web.app import create_app
from tests.detection.helpers import at
from tests.factories import Factory

QUEUE = 8
BLOB = "x" * 16_384  # 16 KiB per event: buffers fill after a few hundred


class Served:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        config = uvicorn.Config(app, ws="auto", log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise AssertionError("uvicorn did not start within 30 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture
def served(settings: Settings, db: Database) -> Iterator[Served]:
    app = create_app(
        settings.model_copy(
            update={"ws_client_queue": QUEUE, "ws_readings_interval_s": 0.05, "log_json": False}
        ),
        db,
    )
    with Served(app) as running:
        yield running


def stuck_client(port: int, token: str) -> socket.socket:
    """Open a WebSocket by hand and never read from it again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /api/v1/ws/fleet?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: read nothing past the handshake
        if not chunk:
            raise AssertionError(f"the handshake failed: {head!r}")
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_a_client_that_never_reads_is_dropped_without_slowing_ingest(
    served: Served, factory: Factory
) -> None:
    user = factory.user(factory.tenant(), Role.analyst)
    base = f"http://127.0.0.1:{served.port}"
    with httpx.Client(base_url=base, headers=user.headers, timeout=30) as http:
        run(served, http, user.token, user.tenant_id)


def run(served: Served, http: httpx.Client, token: str, tenant_id: uuid.UUID) -> None:
    hub = served.app.state.live.hub
    r = http.post("/api/v1/assets", json={"tag": "P-1", "name": "pump"})
    assert r.status_code == 201, r.text
    asset_id = r.json()["id"]
    stuck = stuck_client(served.port, token)
    url = f"ws://127.0.0.1:{served.port}/api/v1/ws/fleet?token={token}"
    with ws_connect(url) as good, stuck:
        assert '"hello"' in str(good.recv(timeout=20))
        deadline = time.monotonic() + 30
        while hub.client_count < 2:
            if time.monotonic() > deadline:
                raise AssertionError(f"{hub.client_count} clients subscribed after 30 s")
            time.sleep(0.05)
        # Events flood in, in step with the healthy client; readings are ingested meanwhile.
        # The stuck client's buffers fill, then its queue, and it is dropped; nobody waits.
        sent = 0
        while hub.dropped_clients == 0:
            if sent >= 5_000:
                raise AssertionError(f"the stuck client was not dropped after {sent} events")
            served.app.state.live.publish(
                tenant_id, None, {"type": "anomaly", "data": {"n": sent, "blob": BLOB}}
            )
            expect = f'"n":{sent},'
            while expect not in str(good.recv(timeout=20)):
                pass
            if sent % 50 == 0:
                body = {"readings": [{"asset": "P-1", "ts": at(sent), "values": {"t": sent}}]}
                r = http.post("/api/v1/readings", json=body)
                assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
            sent += 1
        assert hub.dropped_clients == 1 and hub.client_count == 1
        # Ingestion goes on, and the healthy client still gets the downsampled readings.
        body = {"readings": [{"asset": "P-1", "ts": at(9_999), "values": {"t": -1.0}}]}
        assert http.post("/api/v1/readings", json=body).status_code == 200
        while True:
            message = str(good.recv(timeout=20))
            if '"readings"' in message and '"value":-1.0' in message:
                assert asset_id in message
                break
        metrics = http.get("/metrics").text
        assert 'foresight_ws_dropped_clients_total{reason="queue_full"} 1.0' in metrics
        assert "foresight_ws_clients 1.0" in metrics
