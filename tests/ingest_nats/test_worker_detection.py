"""`foresight worker` runs detection on what it persists: a rule fires in the scale-out shape."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

from fastapi.testclient import TestClient

from foresight.config import Settings
from foresight.kit.db import Database
from foresight.models import Role
from foresight.web.app import create_app
from tests.factories import Factory
from tests.ingest_nats.test_nats_bus import NATS_URL, T0_S, _nats_reachable, names  # noqa: F401


def test_worker_process_evaluates_rules(
    settings: Settings,
    db: Database,
    factory: Factory,
    database_url: str,
    names: tuple[str, str],  # noqa: F811
) -> None:
    stream, prefix = names
    nats_settings = settings.model_copy(
        update={"nats_url": NATS_URL, "nats_stream": stream, "nats_subject_prefix": prefix}
    )
    user = factory.user(factory.tenant(), Role.analyst)
    h = user.headers
    env = {
        **os.environ,
        "FORESIGHT_DATABASE_URL": database_url,
        "FORESIGHT_NATS_URL": NATS_URL,
        "FORESIGHT_NATS_STREAM": stream,
        "FORESIGHT_NATS_SUBJECT_PREFIX": prefix,
        "FORESIGHT_WS_NATS_SUBJECT_PREFIX": f"ftest{uuid.uuid4().hex[:8]}.live",
        "FORESIGHT_DETECTION_RELOAD_INTERVAL_S": "0.2",
        "FORESIGHT_LOG_LEVEL": "WARNING",
    }
    with TestClient(create_app(nats_settings, db)) as client:
        asset = client.post("/api/v1/assets", json={"tag": "PUMP-7", "name": "p"}, headers=h)
        assert asset.status_code == 201, asset.text
        sensor = {"key": "temperature"}
        r = client.post(f"/api/v1/assets/{asset.json()['id']}/sensors", json=sensor, headers=h)
        assert r.status_code == 201, r.text
        rule = {
            "name": "hot",
            "severity": "critical",
            "scope": {"asset_tag": "PUMP-7"},
            "conditions": [{"sensor": "temperature", "op": ">", "threshold": 80}],
        }
        assert client.post("/api/v1/alert-rules", json=rule, headers=h).status_code == 201
        worker = subprocess.Popen(
            [sys.executable, "-m", "foresight", "worker"], env=env, start_new_session=True
        )
        try:
            readings = [
                {"asset": "PUMP-7", "ts": T0_S + i, "values": {"temperature": 70.0 + i}}
                for i in range(20)
            ]
            r = client.post("/api/v1/readings", json={"readings": readings}, headers=h)
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 60
            found: list[dict[str, object]] = []
            while time.monotonic() < deadline and not found:
                found = client.get("/api/v1/alerts", headers=h).json()["items"]
                time.sleep(0.2)
            if not found:
                raise AssertionError("the worker persisted nothing that fired within 60 s")
            [alert] = found
            assert alert["severity"] == "critical" and alert["status"] == "open"
            assert alert["triggered_at"].startswith("2026-01-01T00:00:11")  # 81 °C, data time
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
