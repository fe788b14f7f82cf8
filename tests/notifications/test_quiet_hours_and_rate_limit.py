"""Quiet hours hold non-emergency notifications until the window ends; a rate limit defers the
excess. Neither drops anything. The clock is injected: no test waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from foresight.models import ChannelKind, DeliveryStatus, Severity
from foresight.notifications import service
from foresight.notifications.routing import backoff_s, quiet_until
from foresight.notifications.schemas import ChannelUpdate
from tests.notifications.helpers import Clock, Env, dispatcher, fire, make_channel, rows
from tests.notifications.servers import Receiver

BERLIN = ZoneInfo("Europe/Berlin")
NIGHT = {"start": "22:00", "end": "06:00", "timezone": "Europe/Berlin"}


def _webhook(env: Env, receiver: Receiver, **fields: object) -> object:
    return make_channel(env, ChannelKind.webhook, {"url": receiver.base_url + "/in"}, **fields)


def test_quiet_hours_hold_until_the_window_ends(env: Env, receiver: Receiver, clock: Clock) -> None:
    _webhook(env, receiver, quiet_hours=NIGHT)
    clock.set(datetime(2030, 1, 15, 23, 30, tzinfo=BERLIN))
    fire(env, severity=Severity.critical)
    d = dispatcher(env.db, clock)
    assert d.run_once().deferred == 1
    [row] = rows(env.db)
    assert row.status is DeliveryStatus.pending and row.deferred_reason == "quiet_hours"
    assert row.next_attempt_at == datetime(2030, 1, 16, 6, 0, tzinfo=BERLIN).astimezone(UTC)
    assert receiver.requests == []
    clock.set(datetime(2030, 1, 16, 5, 59, tzinfo=BERLIN))
    assert d.run_once().claimed == 0
    clock.set(datetime(2030, 1, 16, 6, 0, 1, tzinfo=BERLIN))
    assert d.run_once().delivered == 1
    assert len(receiver.requests) == 1


def test_emergencies_ignore_quiet_hours(env: Env, receiver: Receiver, clock: Clock) -> None:
    _webhook(env, receiver, quiet_hours=NIGHT)
    clock.set(datetime(2030, 1, 15, 2, 0, tzinfo=BERLIN))
    fire(env, severity=Severity.emergency)
    assert dispatcher(env.db, clock).run_once().delivered == 1


def test_lifting_quiet_hours_releases_what_they_held(
    env: Env, receiver: Receiver, clock: Clock
) -> None:
    channel = _webhook(env, receiver, quiet_hours=NIGHT)
    clock.set(datetime(2030, 1, 15, 23, 0, tzinfo=BERLIN))
    fire(env)
    d = dispatcher(env.db, clock)
    assert d.run_once().deferred == 1
    with env.db.transaction() as session:
        service.update_channel(
            session,
            principal=env.principal,
            channel_id=channel.id,  # type: ignore[attr-defined]
            data=ChannelUpdate(quiet_hours=None),
        )
    assert d.run_once().delivered == 1


def test_rate_limit_defers_the_excess_and_drops_nothing(
    env: Env, receiver: Receiver, clock: Clock
) -> None:
    _webhook(env, receiver, rate_limit_per_minute=2)
    for _ in range(5):
        fire(env)
    d = dispatcher(env.db, clock)
    first = d.run_once()
    assert (first.delivered, first.deferred) == (2, 3)
    held = [r for r in rows(env.db) if r.status is DeliveryStatus.pending]
    assert {r.deferred_reason for r in held} == {"rate_limit"}
    clock.advance(30)
    assert d.run_once().claimed == 0  # the first two are still inside the 60 s window
    clock.advance(31)
    assert d.run_once().delivered == 2
    clock.advance(61)
    assert d.run_once().delivered == 1
    assert len(receiver.requests) == 5
    assert {r.status for r in rows(env.db)} == {DeliveryStatus.delivered}


def test_rate_limit_is_per_channel(env: Env, receiver: Receiver, clock: Clock) -> None:
    _webhook(env, receiver, rate_limit_per_minute=1)
    _webhook(env, receiver)
    fire(env)
    fire(env)
    counts = dispatcher(env.db, clock).run_once()
    assert (counts.delivered, counts.deferred) == (3, 1)


# --- the pure parts -------------------------------------------------------------------------


def _at(hour: int, minute: int = 0, day: int = 15, month: int = 1) -> datetime:
    return datetime(2030, month, day, hour, minute, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("local", "start", "end", "until"),
    [
        (_at(23, 0), "22:00", "06:00", _at(6, 0, day=16)),  # overnight, before midnight
        (_at(2, 0), "22:00", "06:00", _at(6, 0)),  # overnight, after midnight
        (_at(22, 0), "22:00", "06:00", _at(6, 0, day=16)),  # the start is inside
        (_at(6, 0), "22:00", "06:00", None),  # the end is not
        (_at(12, 0), "22:00", "06:00", None),
        (_at(13, 0), "12:00", "14:00", _at(14, 0)),  # same-day window
        (_at(15, 0), "12:00", "14:00", None),
        # Spring forward (2030-03-31 02:00 → 03:00 in Berlin): the window still ends at 06:00.
        (_at(1, 30, day=31, month=3), "22:00", "06:00", _at(6, 0, day=31, month=3)),
    ],
)
def test_quiet_until(local: datetime, start: str, end: str, until: datetime | None) -> None:
    result = quiet_until(local, start=start, end=end, timezone="Europe/Berlin")
    assert result == (until.astimezone(UTC) if until else None)


def test_quiet_until_uses_the_local_zone() -> None:
    # 23:00 UTC is 08:00 in Tokyo: outside a 22:00-06:00 window there.
    now = datetime(2030, 1, 15, 23, 0, tzinfo=UTC)
    assert quiet_until(now, start="22:00", end="06:00", timezone="Asia/Tokyo") is None
    assert quiet_until(now, start="22:00", end="06:00", timezone="UTC") is not None


def test_backoff_is_exponential_capped_and_jittered() -> None:
    full = [backoff_s(n, base_s=10, max_s=300, rng=lambda: 1.0) for n in range(1, 8)]
    assert full == [10, 20, 40, 80, 160, 300, 300]
    half = [backoff_s(n, base_s=10, max_s=300, rng=lambda: 0.0) for n in range(1, 4)]
    assert half == [5, 10, 20]
    assert timedelta(seconds=backoff_s(100, base_s=10, max_s=3600, rng=lambda: 0.5)) <= timedelta(
        hours=1
    )
