"""The outbox: written in the caller's transaction, routed per channel, delivered at least once
(a dispatcher that dies after sending resends with the same key), never twice by two
dispatchers."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import pytest
from sqlalchemy import select

from foresight.kit.time import utcnow
from foresight.models import (
    Alert,
    AlertStatus,
    ChannelKind,
    DeliveryStatus,
    NotificationOutbox,
    Severity,
)
from foresight.notifications.dispatcher import Claimed, Dispatcher
from foresight.notifications.outbox import enqueue
from foresight.notifications.senders import SendResult
from tests.factories import Factory
from tests.notifications.helpers import (
    Clock,
    Env,
    attempts,
    dispatcher,
    fire,
    make_asset,
    make_channel,
    rows,
)
from tests.notifications.servers import Receiver


def _webhook(env: Env, receiver: Receiver, **fields: object) -> uuid.UUID:
    return make_channel(env, ChannelKind.webhook, {"url": receiver.base_url + "/in"}, **fields).id


class Crash(Exception):
    """Stands in for the process dying between the send and the recording of its result."""


def test_rolled_back_change_notifies_no_one(env: Env, receiver: Receiver, clock: Clock) -> None:
    _webhook(env, receiver)
    now = utcnow()
    with pytest.raises(RuntimeError), env.db.transaction() as session:
        alert = Alert(
            tenant_id=env.tenant_id,
            asset_id=env.pump.id,
            source="rule:x",
            severity=Severity.critical,
            status=AlertStatus.open,
            title="t",
            triggered_at=now,
            last_triggered_at=now,
        )
        session.add(alert)
        session.flush()
        enqueue(session, "alert.opened", alert)
        assert session.scalars(select(NotificationOutbox)).all()  # written, in this transaction
        raise RuntimeError("the alert change fails after the hook ran")
    assert rows(env.db) == []
    assert dispatcher(env.db, clock).run_once().claimed == 0
    assert receiver.requests == []


def test_committed_change_is_delivered(env: Env, receiver: Receiver, clock: Clock) -> None:
    _webhook(env, receiver)
    fire(env)
    assert [r.status for r in rows(env.db)] == [DeliveryStatus.pending]
    assert dispatcher(env.db, clock).run_once().delivered == 1
    assert len(receiver.requests) == 1


def test_crash_after_send_resends_with_the_same_key(
    env: Env, receiver: Receiver, clock: Clock
) -> None:
    _webhook(env, receiver)
    fire(env)

    class Crashing(Dispatcher):
        def record(self, claimed: Claimed, result: SendResult, started: float) -> None:  # type: ignore[override]
            raise Crash

    crashing = Crashing(env.db, policy=dispatcher(env.db, clock).policy, clock=clock)
    with pytest.raises(Crash):
        crashing.run_once()
    [first] = receiver.requests
    [row] = rows(env.db)
    assert row.status is DeliveryStatus.pending and row.claimed_until is not None
    # A restarted dispatcher leaves it alone while the lease runs (the sender may be alive) …
    restarted = dispatcher(env.db, clock)
    assert restarted.run_once().claimed == 0
    # … then sends it again: the same key and the same bytes, so the receiver can deduplicate.
    clock.advance(restarted.policy.lease_s + 1)
    assert restarted.run_once().delivered == 1
    first_again, second = receiver.requests
    assert second.headers["idempotency-key"] == first.headers["idempotency-key"] == str(row.id)
    assert second.body == first.body
    log = attempts(env.db, row.id)
    assert [a.ok for a in log] == [None, True]
    assert "lease expired" in (log[0].error or "")
    clock.advance(10_000)
    assert restarted.run_once().claimed == 0
    assert len(receiver.requests) == 2


def test_a_delivery_that_keeps_crashing_is_dead_lettered(
    env: Env, receiver: Receiver, clock: Clock
) -> None:
    _webhook(env, receiver)
    fire(env)

    class Crashing(Dispatcher):
        def record(self, claimed: Claimed, result: SendResult, started: float) -> None:  # type: ignore[override]
            raise Crash

    policy = dispatcher(env.db, clock, max_attempts=2).policy
    for _ in range(2):
        with pytest.raises(Crash):
            Crashing(env.db, policy=policy, clock=clock).run_once()
        clock.advance(policy.lease_s + 1)
    assert Crashing(env.db, policy=policy, clock=clock).run_once().claimed == 0
    [row] = rows(env.db)
    assert row.status is DeliveryStatus.dead and "lease expired" in (row.last_error or "")
    assert [a.dead_lettered for a in attempts(env.db, row.id)] == [False, True]


def test_two_dispatchers_never_send_one_delivery_twice(
    env: Env, receiver: Receiver, clock: Clock
) -> None:
    _webhook(env, receiver)
    for _ in range(30):
        fire(env)
    dispatchers = [dispatcher(env.db, clock, batch_size=5, concurrency=2) for _ in range(2)]
    errors: list[BaseException] = []

    def drain(d: Dispatcher) -> None:
        try:
            while d.run_once().claimed:
                pass
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(d,)) for d in dispatchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert not any(thread.is_alive() for thread in threads), "dispatchers did not finish"
    keys = Counter(r.headers["idempotency-key"] for r in receiver.requests)
    assert len(keys) == 30 and set(keys.values()) == {1}
    assert {r.status for r in rows(env.db)} == {DeliveryStatus.delivered}


# --- routing --------------------------------------------------------------------------------


def test_routing_by_severity_asset_and_type(env: Env, receiver: Receiver, clock: Clock) -> None:
    everything = _webhook(env, receiver, min_severity="info")
    critical = _webhook(env, receiver, min_severity="critical")
    pump_only = _webhook(env, receiver, min_severity="info", asset_ids=[str(env.pump.id)])
    motors = _webhook(env, receiver, min_severity="info", asset_types=["MOTOR"])
    disabled = _webhook(env, receiver, min_severity="info", enabled=False)
    fire(env, asset=env.pump, severity=Severity.warning)
    fire(env, asset=env.motor, severity=Severity.emergency)
    by_channel = Counter(r.channel_id for r in rows(env.db))
    assert by_channel == {everything: 2, critical: 1, pump_only: 1, motors: 1}
    assert disabled not in by_channel


def test_events_default_and_repeats_opt_in(env: Env, receiver: Receiver, clock: Clock) -> None:
    default = _webhook(env, receiver)
    repeats = _webhook(env, receiver, events=["alert.opened", "alert.repeated", "alert.resolved"])
    for kind in ("alert.opened", "alert.repeated", "alert.acknowledged", "alert.resolved"):
        fire(env, kind=kind)
    fire(env, kind="alert.unknown")  # ignored, not an error
    events: dict[uuid.UUID, list[str]] = {default: [], repeats: []}
    for row in rows(env.db):
        events[row.channel_id].append(row.event)
    assert sorted(events[default]) == ["alert.acknowledged", "alert.opened", "alert.resolved"]
    assert sorted(events[repeats]) == ["alert.opened", "alert.repeated", "alert.resolved"]


def test_other_tenants_channels_get_nothing(
    env: Env, receiver: Receiver, factory: Factory, clock: Clock
) -> None:
    _webhook(env, receiver)
    other = factory.tenant()
    other_env = Env(env.db, other.id, make_asset(env.db, other.id, "P", "pump"), env.motor)
    fire(other_env)
    assert rows(env.db) == []


def test_payload_is_a_snapshot(env: Env, receiver: Receiver, clock: Clock) -> None:
    _webhook(env, receiver)
    alert_id = fire(env, title="Original title")
    with env.db.transaction() as session:
        alert = session.get(Alert, alert_id)
        assert alert is not None
        alert.title = "Changed later"
    dispatcher(env.db, clock).run_once()
    assert receiver.requests[0].json()["alert"]["title"] == "Original title"
