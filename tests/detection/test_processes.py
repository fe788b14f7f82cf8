"""Detection in child processes (the default shape): partitioned by asset, restarted on a crash."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from foresight.config import Settings
from foresight.detection.process import DetectionProcesses, decode, encode
from foresight.kit.db import Database
from foresight.timeseries.store import Columns
from foresight.web.app import create_app
from tests.detection.helpers import alerts, at, rule, send, settle
from tests.detection.test_rules_engine import setup
from tests.factories import Factory
from tests.live.helpers import connect, hello, wait_for
from tests.live.test_events import is_alert

HOT = [{"sensor": "temperature", "op": ">", "threshold": 80}]


def processes_client(settings: Settings, db: Database, n: int) -> Iterator[TestClient]:
    settings = settings.model_copy(update={"detection_processes": n})
    app = create_app(settings, db)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def client(settings: Settings, db: Database) -> Iterator[TestClient]:
    yield from processes_client(settings, db, 2)


def detection(client: TestClient) -> DetectionProcesses:
    found = client.app.state.detection  # type: ignore[attr-defined]
    assert isinstance(found, DetectionProcesses)
    return found


def test_columns_cross_the_pipe_unchanged() -> None:
    new = Columns(
        np.array([1, 1, 7], np.int64),
        np.array([5, 9, -3], np.int64),
        np.array([0.5, np.nan, 2e300]),
    )
    back = decode(encode(new))
    assert back.series_id.tolist() == [1, 1, 7] and back.ts_ms.tolist() == [5, 9, -3]
    assert back.value[0] == 0.5 and np.isnan(back.value[1]) and back.value[2] == 2e300
    assert len(decode(encode(Columns.empty()))) == 0


def test_alerts_open_resolve_and_reach_websockets_from_child_processes(
    client: TestClient, factory: Factory
) -> None:
    user = setup(client, factory, "P-1", "P-2", "P-3")
    h = user.headers
    procs = detection(client)
    assert procs.processes == 2 and all(pid and pid != os.getpid() for pid in procs.pids())
    rule(client, h, name="hot", conditions=HOT, clear_hysteresis=5)
    r = client.get("/api/v1/assets", headers=h)
    [p2] = [a["id"] for a in r.json()["items"] if a["tag"] == "P-2"]
    with connect(client, f"assets/{p2}", user.token + "&types=alert") as ws:
        hello(ws)
        send(client, h, "P-2", [(0, {"temperature": 70.0}), (10, {"temperature": 85.0})])
        opened, _ = wait_for(ws, is_alert("alert.opened", p2), what="alert.opened")
        assert opened["data"]["triggered_at"] == at(10)
    [alert] = alerts(client, h)
    assert alert["status"] == "open" and alert["title"] == "hot on P-2"
    send(client, h, "P-2", [(20, {"temperature": 70.0})])
    [alert] = alerts(client, h)
    assert alert["status"] == "resolved" and alert["resolved_at"] == at(20)
    # Prometheus sees the children's work.
    text = client.get("/metrics").text
    assert "foresight_detection_points_total 3.0" in text


def test_an_asset_stays_in_one_process_so_windows_span_batches(
    client: TestClient, factory: Factory
) -> None:
    # Assets go to a child by a hash of their (random) ids: with 24 of them, all landing in one
    # of the two children has a chance of 2^-23 (with 8 it was 1 in 128: a flaky test).
    tags = [f"P-{i}" for i in range(24)]
    user = setup(client, factory, *tags)
    h = user.headers
    rule(
        client, h, name="warm on average",
        conditions=[{"sensor": "temperature", "op": ">", "threshold": 80, "aggregate": "mean",
                     "window": "5m"}],
    )  # fmt: skip
    # Every asset's window mean crosses 80 only with points from several batches.
    for step in range(4):
        body = {
            "readings": [
                {"asset": tag, "ts": at(step * 30), "values": {"temperature": 70.0 + 10 * step}}
                for tag in tags
            ]
        }
        r = client.post("/api/v1/readings", json=body, headers=h)
        assert r.status_code == 200, r.text
        settle(client)
    # Means after each step: 70, 75, 80, 85 → every asset fires at the fourth point.
    found = alerts(client, h)
    assert sorted(a["title"] for a in found) == sorted(f"warm on average on {t}" for t in tags)
    assert {a["triggered_at"] for a in found} == {at(90)}
    procs = detection(client)
    used = {procs._asset_of[s] for s in procs._asset_of}
    assert used == {0, 1}  # 24 assets over two processes: both used


def test_a_killed_child_is_replaced_and_gets_what_it_had_not_confirmed(
    client: TestClient, factory: Factory
) -> None:
    user = setup(client, factory, "P-1")
    h = user.headers
    procs = detection(client)
    rule(client, h, name="hot", conditions=HOT)
    send(client, h, "P-1", [(0, {"temperature": 70.0})])
    child = procs._children[procs._asset_of[next(iter(procs._asset_of))]]
    old_pid = child.process.pid
    os.kill(old_pid, signal.SIGSTOP)  # it stops reading; what is sent now stays unconfirmed
    try:
        body = {"readings": [{"asset": "P-1", "ts": at(10), "values": {"temperature": 90.0}}]}
        r = client.post("/api/v1/readings", json=body, headers=h)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 10
        while procs.backlog_points == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert procs.backlog_points >= 1
    finally:
        os.kill(old_pid, signal.SIGKILL)
    settle(client)
    assert procs.restarts == 1 and child.process.pid != old_pid
    [alert] = alerts(client, h)
    assert alert["status"] == "open" and alert["triggered_at"] == at(10)
