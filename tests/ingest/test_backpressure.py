"""Saturation and storage failures: 503 + Retry-After, nothing half-stored, nothing lost."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from foresight.ingest.batch import Batch
from foresight.ingest.bus import InProcessBus, Unavailable
from foresight.ingest.pipeline import Outcome, Persisted
from foresight.kit.db import Database
from tests.ingest.conftest import (
    T0_MS,
    T0_S,
    Tenant,
    all_readings,
    assert_ok,
    assert_problem,
    bus_of,
)

MAX_PENDING = 10


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # Below what the Settings model allows: model_copy does not validate.
    return {"ingest_max_pending_points": MAX_PENDING}


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() >= deadline:  # a bound on waiting, not a speed check
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


class Gate:
    """Holds the writer inside Pipeline.persist until opened."""

    def __init__(self, bus: InProcessBus, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened = threading.Event()
        self.entered = threading.Event()
        original = bus.pipeline.persist

        def gated(session: Session, batches: list[Batch]) -> Persisted:
            self.entered.set()
            assert self.opened.wait(30), "the test never opened the gate"
            return original(session, batches)

        monkeypatch.setattr(bus.pipeline, "persist", gated)

    def open(self) -> None:
        self.opened.set()


@pytest.fixture
def gate(tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    g = Gate(bus_of(tenant.client), monkeypatch)
    try:
        yield g
    finally:
        g.open()  # never leave the writer stuck (the app's shutdown waits for it)


def _readings(n: int, offset: int = 0, tag: str = "A") -> dict[str, Any]:
    return {
        "readings": [{"asset": tag, "ts": T0_S + offset + i, "values": {"t": i}} for i in range(n)]
    }


def _post_in_thread(tenant: Tenant, body: dict[str, Any]) -> Future[httpx.Response]:
    future: Future[httpx.Response] = Future()

    def run() -> None:
        try:
            future.set_result(tenant.post(body))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


def test_saturated_ingest_answers_503_with_retry_after(tenant: Tenant, gate: Gate) -> None:
    tenant.asset("A")
    bus = bus_of(tenant.client)
    # The writer takes the first request and stays stuck in it.
    first = _post_in_thread(tenant, _readings(4))
    _wait_for(gate.entered.is_set, "the writer to take the first batch")
    # Queued behind it while it is stuck: 4 + 5 = 9 points pending, under the limit of 10.
    second = _post_in_thread(tenant, _readings(5, offset=100))
    _wait_for(lambda: bus.pending_points == 9, "the second batch to be queued")
    # Two more points do not fit: refused at once, with a hint when to retry.
    r = tenant.post(_readings(2, offset=200))
    problem = assert_problem(r, 503)
    assert problem["type"] == "urn:foresight:problem:ingest-unavailable"
    assert int(r.headers["Retry-After"]) >= 1
    assert "saturated" in problem["detail"]
    assert bus.pending_points == 9
    assert not first.done() and not second.done()

    gate.open()
    assert_ok(first.result(30), accepted=4)
    assert_ok(second.result(30), accepted=5)
    # Everything answered 2xx is stored, and only that.
    expected = {("t", T0_MS + i * 1000): float(i) for i in range(4)}
    expected |= {("t", T0_MS + (100 + i) * 1000): float(i) for i in range(5)}
    assert tenant.points("A") == expected
    _wait_for(lambda: bus.pending_points == 0, "the pending count to drop")
    # The refused request succeeds once retried.
    assert_ok(tenant.post(_readings(2, offset=200)), accepted=2)
    assert len(tenant.points("A")) == 11


def test_back_to_back_requests_at_the_limit_are_not_refused(tenant: Tenant) -> None:
    # A caller answered 2xx has nothing pending any more: sending again at once must not find
    # its own committed points still counted against the limit.
    tenant.asset("A")
    bus = bus_of(tenant.client)
    observed = threading.Event()
    # Hold the writer just after it has answered (in its after-commit hook) to look at the count.
    bus.on_persisted = lambda batches: None if observed.wait(30) else None
    try:
        assert_ok(tenant.post(_readings(MAX_PENDING - 2)), accepted=MAX_PENDING - 2)
        assert bus.pending_points == 0
    finally:
        observed.set()
        bus.on_persisted = None
    for n in range(1, 25):
        assert_ok(tenant.post(_readings(MAX_PENDING - 2, offset=n * 100)), accepted=MAX_PENDING - 2)
    # The limit bounds what waits: a batch larger than it alone is still admitted.
    assert_ok(tenant.post(_readings(3 * MAX_PENDING, offset=5000)), accepted=3 * MAX_PENDING)
    assert len(tenant.points("A")) == 24 * (MAX_PENDING - 2) + 3 * MAX_PENDING + MAX_PENDING - 2


def test_stopped_writer_answers_503(tenant: Tenant) -> None:
    tenant.asset("A")
    bus_of(tenant.client).stop()
    r = tenant.post(_readings(2))
    problem = assert_problem(r, 503)
    assert r.headers["Retry-After"] == "5"
    assert "nothing was stored" in problem["detail"]
    assert tenant.points("A") == {}


def test_storage_failure_answers_503_and_stores_nothing(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant.asset("A", "t")
    pipeline = bus_of(tenant.client).pipeline
    original = pipeline.persist
    calls = 0

    def failing(session: Session, batches: list[Batch]) -> Persisted:
        nonlocal calls
        calls += 1
        # Everything is written (points, rollups, new sensors), then the database goes away.
        original(session, batches)
        raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(pipeline, "persist", failing)
    body = {"readings": [{"asset": "A", "ts": T0_S, "values": {"t": 1, "new_sensor": 2}}]}
    r = tenant.post(body)
    problem = assert_problem(r, 503)
    assert r.headers["Retry-After"] == "5"
    assert "nothing was stored" in problem["detail"]
    assert calls == 1  # an outage is not retried in a loop
    assert all_readings(tenant.factory.db) == []
    assert set(tenant.series("A")) == {"t"}  # the sensor made on the fly was rolled back
    assert tenant.audit("sensor.create")[0]["changes"]["key"] == "t"
    assert len(tenant.audit("sensor.create")) == 1

    # The database is back: the retry stores everything (and the rolled-back sensor is not
    # remembered as existing).
    monkeypatch.setattr(pipeline, "persist", original)
    assert_ok(tenant.post(body), accepted=2)
    assert tenant.points("A") == {("t", T0_MS): 1.0, ("new_sensor", T0_MS): 2.0}
    assert bus_of(tenant.client).pending_points == 0


def _batch(tenant: Tenant, tag: str, ts_s: int, **values: float) -> Batch:
    batch = Batch(tenant.id)
    for key, value in values.items():
        batch.add(0, tag, key, ts_s * 1000, value)
    return batch


def test_one_failing_batch_does_not_fail_the_others_committed_with_it(
    tenant: Tenant, gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant.asset("A")
    bus = bus_of(tenant.client)
    gated = bus.pipeline.persist

    def persist(session: Session, batches: list[Batch]) -> Persisted:
        if any(b.asset[:1] == ["BOOM"] for b in batches):
            raise ValueError("a bug triggered by one batch")
        return gated(session, batches)

    monkeypatch.setattr(bus.pipeline, "persist", persist)
    head = bus.submit_nowait(_batch(tenant, "A", T0_S, t=0))
    _wait_for(gate.entered.is_set, "the writer to take the first batch")
    # Queued together while the writer is stuck: the writer commits them as one group.
    good_1 = bus.submit_nowait(_batch(tenant, "A", T0_S + 1, t=1))
    bad = bus.submit_nowait(_batch(tenant, "BOOM", T0_S + 2, t=2))
    good_2 = bus.submit_nowait(_batch(tenant, "A", T0_S + 3, t=3))
    gate.open()
    for future in (head, good_1, good_2):
        outcome = future.result(30)
        assert (outcome.accepted, outcome.rejected) == (1, 0)
    with pytest.raises(Unavailable):
        bad.result(30)
    assert tenant.points("A") == {("t", T0_MS + i * 1000): float(i) for i in (0, 1, 3)}
    _wait_for(lambda: bus.pending_points == 0, "the pending count to drop")


def test_a_caller_that_gives_up_does_not_stop_the_writer(tenant: Tenant, gate: Gate) -> None:
    # A request cancelled while waiting (client gone, server shutting down) cancels its future.
    tenant.asset("A")
    bus = bus_of(tenant.client)
    head = bus.submit_nowait(_batch(tenant, "A", T0_S, t=0))
    _wait_for(gate.entered.is_set, "the writer to take the first batch")
    abandoned = bus.submit_nowait(_batch(tenant, "A", T0_S + 1, t=1))
    assert abandoned.cancel() and head.cancel()
    gate.open()
    # The writer is still alive and answers the next caller.
    outcome: Outcome = bus.submit_sync(_batch(tenant, "A", T0_S + 2, t=2), timeout=30)
    assert outcome.accepted == 1
    assert ("t", T0_MS + 2000) in tenant.points("A")
    _wait_for(lambda: bus.pending_points == 0, "the pending count to drop")


def test_the_bus_refuses_when_not_started() -> None:
    database = Database.from_url("sqlite://")
    try:
        with pytest.raises(Unavailable):
            InProcessBus(database).submit_nowait(Batch(uuid.uuid4()))
    finally:
        database.dispose()
