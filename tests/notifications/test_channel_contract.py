"""One contract, every channel kind: delivered once in the receiver's format, retried with
backoff after a transient failure, dead-lettered after the last attempt, logged throughout."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from foresight.models import ChannelKind, DeliveryStatus
from tests.notifications.helpers import (
    Clock,
    Env,
    attempts,
    channel_config,
    dispatcher,
    fire,
    make_channel,
    rows,
)
from tests.notifications.servers import MailServer, Receiver

KINDS = list(ChannelKind)


@dataclass
class Sink:
    """What a channel kind's receiver got, and a way to make it fail."""

    kind: ChannelKind
    receiver: Receiver
    mail: MailServer

    def messages(self) -> list[str]:
        if self.kind is ChannelKind.email:
            return [
                f"{m.message['Subject']}\n{m.message.get_payload()}"
                for m in self.mail.handler.mails
            ]
        return [r.body.decode() for r in self.receiver.requests]

    def verdicts(self) -> list[str]:
        if self.kind is ChannelKind.email:
            return ["ok" for _ in self.mail.handler.mails]
        return [r.verdict for r in self.receiver.requests]

    def fail_next(self, count: int) -> None:
        if self.kind is ChannelKind.email:
            self.mail.handler.busy_next = count  # 451: try again later
        else:
            self.receiver.fail_next(count, 500)


@pytest.fixture(params=KINDS, ids=[k.value for k in KINDS])
def sink(request: pytest.FixtureRequest, receiver: Receiver, mail: MailServer) -> Sink:
    return Sink(ChannelKind(request.param), receiver, mail)


def _setup(env: Env, sink: Sink) -> None:
    make_channel(env, sink.kind, channel_config(sink.kind, sink.receiver, sink.mail))


def test_delivers_once_in_the_receivers_format(env: Env, sink: Sink, clock: Clock) -> None:
    _setup(env, sink)
    fire(env, title="Bearing temperature high")
    counts = dispatcher(
        env.db, clock, slack_api_base_url=sink.receiver.base_url + "/api/"
    ).run_once()
    assert counts.delivered == 1
    assert sink.verdicts() == ["ok"]
    assert "Bearing temperature high" in sink.messages()[0]
    assert "PUMP-101" in sink.messages()[0]
    [row] = rows(env.db)
    assert row.status is DeliveryStatus.delivered
    [attempt] = attempts(env.db, row.id)
    assert attempt.ok is True and attempt.status_code in (200, 250)
    assert attempt.finished_at is not None and attempt.duration_ms is not None
    # Nothing more to send: a second round is a no-op.
    again = dispatcher(env.db, clock, slack_api_base_url=sink.receiver.base_url + "/api/")
    assert again.run_once().claimed == 0
    assert len(sink.messages()) == 1


def test_transient_failure_is_retried_after_backoff(env: Env, sink: Sink, clock: Clock) -> None:
    _setup(env, sink)
    fire(env)
    sink.fail_next(1)
    d = dispatcher(env.db, clock, slack_api_base_url=sink.receiver.base_url + "/api/")
    assert d.run_once().retried == 1
    [row] = rows(env.db)
    assert row.status is DeliveryStatus.pending and row.attempts == 1
    assert row.last_status_code in (500, 451) and row.last_error
    # Backoff: base 10 s for the first retry; not due before.
    wait_s = (row.next_attempt_at - clock()).total_seconds()
    assert 9 <= wait_s <= 10
    assert d.run_once().claimed == 0
    clock.advance(10.5)
    assert d.run_once().delivered == 1
    [row] = rows(env.db)
    assert row.status is DeliveryStatus.delivered and row.attempts == 2
    log = attempts(env.db, row.id)
    assert [a.ok for a in log] == [False, True]


def test_dead_letter_after_the_last_attempt(env: Env, sink: Sink, clock: Clock) -> None:
    _setup(env, sink)
    fire(env)
    sink.fail_next(3)
    d = dispatcher(
        env.db, clock, max_attempts=3, slack_api_base_url=sink.receiver.base_url + "/api/"
    )
    for delay in (10.5, 20.5):  # 10 s, then 20 s (exponential)
        assert d.run_once().retried == 1
        clock.advance(delay)
    assert d.run_once().dead == 1
    [row] = rows(env.db)
    assert row.status is DeliveryStatus.dead and row.dead_at is not None and row.attempts == 3
    log = attempts(env.db, row.id)
    assert [a.ok for a in log] == [False, False, False]
    assert [a.dead_lettered for a in log] == [False, False, True]
    clock.advance(10_000)
    assert d.run_once().claimed == 0  # dead letters are never sent again
    assert len(sink.verdicts()) == (0 if sink.kind is ChannelKind.email else 3)
