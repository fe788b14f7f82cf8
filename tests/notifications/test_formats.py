"""What each receiver sees, checked against a real local server; and which errors are final."""

from __future__ import annotations

import hashlib
import hmac

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
from tests.notifications.servers import (
    SLACK_CHANNEL,
    SLACK_TOKEN,
    SMTP_USER,
    WEBHOOK_PATH,
    WEBHOOK_SECRET,
    MailServer,
    Receiver,
)


def _api(receiver: Receiver) -> str:
    return receiver.base_url + "/api/"


def test_slack_incoming_webhook(
    env: Env, receiver: Receiver, mail: MailServer, clock: Clock
) -> None:
    make_channel(
        env, ChannelKind.slack_webhook, channel_config(ChannelKind.slack_webhook, receiver, mail)
    )
    fire(env, title="Vibration high")
    dispatcher(env.db, clock).run_once()
    [request] = receiver.requests
    assert request.verdict == "ok"
    assert request.headers["content-type"].startswith("application/json")
    body = request.json()
    assert body["text"].startswith("[CRITICAL] Vibration high (opened)")
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "context"]
    assert "PUMP-101" in body["blocks"][1]["text"]["text"]


def test_slack_chat_post_message(
    env: Env, receiver: Receiver, mail: MailServer, clock: Clock
) -> None:
    make_channel(env, ChannelKind.slack_api, channel_config(ChannelKind.slack_api, receiver, mail))
    fire(env)
    dispatcher(env.db, clock, slack_api_base_url=_api(receiver)).run_once()
    [request] = receiver.requests
    assert request.path == "/api/chat.postMessage"
    assert request.headers["authorization"] == f"Bearer {SLACK_TOKEN}"
    assert request.verdict == "ok"
    body = request.json()
    assert body["channel"] == SLACK_CHANNEL
    [row] = rows(env.db)
    # The delivery id rides along as message metadata, for receivers that deduplicate.
    assert body["metadata"]["event_payload"]["delivery_id"] == str(row.id)
    assert row.status is DeliveryStatus.delivered


def test_slack_api_errors_that_a_retry_cannot_fix_dead_letter_at_once(
    env: Env, receiver: Receiver, mail: MailServer, clock: Clock
) -> None:
    config = {"token": "xoxb-revoked", "channel": SLACK_CHANNEL}
    make_channel(env, ChannelKind.slack_api, config)
    fire(env)
    assert dispatcher(env.db, clock, slack_api_base_url=_api(receiver)).run_once().dead == 1
    [row] = rows(env.db)
    assert row.status is DeliveryStatus.dead and row.attempts == 1
    assert row.last_error == "slack: invalid_auth"


def test_slack_api_rate_limited_waits_for_retry_after(
    env: Env, receiver: Receiver, mail: MailServer, clock: Clock
) -> None:
    make_channel(env, ChannelKind.slack_api, channel_config(ChannelKind.slack_api, receiver, mail))
    fire(env)
    receiver.fail_next(1, 429, '{"ok": false, "error": "ratelimited"}', **{"Retry-After": "300"})
    assert dispatcher(env.db, clock, slack_api_base_url=_api(receiver)).run_once().retried == 1
    [row] = rows(env.db)
    assert row.status is DeliveryStatus.pending and row.last_status_code == 429
    assert (row.next_attempt_at - clock()).total_seconds() > 299


def test_slack_webhook_gone_is_final(
    env: Env, receiver: Receiver, mail: MailServer, clock: Clock
) -> None:
    make_channel(
        env, ChannelKind.slack_webhook, channel_config(ChannelKind.slack_webhook, receiver, mail)
    )
    fire(env)
    receiver.fail_next(1, 404, "no_service")
    assert dispatcher(env.db, clock).run_once().dead == 1
    assert rows(env.db)[0].last_error == "HTTP 404: no_service"


def test_webhook_is_signed_and_carries_the_idempotency_key(
    env: Env, receiver: Receiver, mail: MailServer, clock: Clock
) -> None:
    make_channel(env, ChannelKind.webhook, channel_config(ChannelKind.webhook, receiver, mail))
    alert_id = fire(env, title="Pressure low")
    dispatcher(env.db, clock).run_once()
    [request] = receiver.requests
    assert request.path == WEBHOOK_PATH
    # Verify exactly as the README tells receivers to.
    expected = (
        "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    )
    assert hmac.compare_digest(request.headers["x-foresight-signature"], expected)
    [row] = rows(env.db)
    assert request.headers["idempotency-key"] == str(row.id)
    assert request.headers["x-foresight-delivery"] == str(row.id)
    assert request.headers["x-foresight-event"] == "alert.opened"
    assert request.headers["x-foresight-timestamp"].isdigit()
    body = request.json()
    assert body["id"] == str(row.id) and body["event"] == "alert.opened"
    assert body["tenant_id"] == str(env.tenant_id)
    alert = body["alert"]
    assert alert["id"] == str(alert_id) and alert["title"] == "Pressure low"
    assert alert["severity"] == "critical" and alert["status"] == "open"
    assert alert["asset"] == {
        "id": str(env.pump.id),
        "tag": "PUMP-101",
        "name": "PUMP-101 name",
        "type": "pump",
    }
    assert alert["sensor"] == "temperature" and alert["last_value"] == 92.5


def test_webhook_without_secret_is_unsigned(
    env: Env, receiver: Receiver, mail: MailServer, clock: Clock
) -> None:
    make_channel(env, ChannelKind.webhook, {"url": receiver.base_url + "/elsewhere"})
    fire(env)
    dispatcher(env.db, clock).run_once()
    [request] = receiver.requests
    assert "x-foresight-signature" not in request.headers


def test_webhook_4xx_is_retried_and_retry_after_honoured(
    env: Env, receiver: Receiver, mail: MailServer, clock: Clock
) -> None:
    make_channel(env, ChannelKind.webhook, channel_config(ChannelKind.webhook, receiver, mail))
    fire(env)
    receiver.fail_next(1, 503, "deploying", **{"Retry-After": "45"})
    receiver.fail_next(1, 404, "not yet")
    d = dispatcher(env.db, clock)
    assert d.run_once().retried == 1
    [row] = rows(env.db)
    assert (row.next_attempt_at - clock()).total_seconds() > 44  # Retry-After beats 10 s
    clock.advance(46)
    assert d.run_once().retried == 1  # a 404 too: receivers differ, attempts are capped
    clock.advance(21)
    assert d.run_once().delivered == 1
    assert [a.status_code for a in attempts(env.db, row.id)] == [503, 404, 200]


def test_webhook_unreachable_is_retried(
    env: Env, receiver: Receiver, mail: MailServer, clock: Clock
) -> None:
    from tests.notifications.servers import free_port

    make_channel(env, ChannelKind.webhook, {"url": f"http://127.0.0.1:{free_port()}/x"})
    fire(env)
    assert dispatcher(env.db, clock).run_once().retried == 1
    [row] = rows(env.db)
    assert row.last_status_code is None and "Connection refused" in (row.last_error or "")


def test_email(env: Env, receiver: Receiver, mail: MailServer, clock: Clock) -> None:
    make_channel(env, ChannelKind.email, channel_config(ChannelKind.email, receiver, mail))
    fire(env, title="Motor current high")
    dispatcher(env.db, clock).run_once()
    [received] = mail.handler.mails
    [row] = rows(env.db)
    message = received.message
    assert received.login == SMTP_USER
    assert received.mail_from == "foresight@example.com"
    assert received.rcpt_tos == ["oncall@example.com", "lead@example.com"]
    assert message["Subject"] == "[CRITICAL] Motor current high (opened)"
    assert message["To"] == "oncall@example.com, lead@example.com"
    # A resend has the same Message-ID, so mail clients show it once.
    assert message["Message-ID"] == f"<{row.id}@foresight.invalid>"
    assert message["X-Foresight-Delivery"] == str(row.id)
    assert "PUMP-101" in str(message.get_payload())


def test_email_refused_recipient_is_final(
    env: Env, receiver: Receiver, mail: MailServer, clock: Clock
) -> None:
    config = channel_config(ChannelKind.email, receiver, mail) | {"to": ["nobody@example.com"]}
    mail.handler.refuse.add("nobody@example.com")
    make_channel(env, ChannelKind.email, config)
    fire(env)
    assert dispatcher(env.db, clock).run_once().dead == 1
    [row] = rows(env.db)
    assert row.last_status_code == 550


def test_email_wrong_password_is_final(
    env: Env, receiver: Receiver, mail: MailServer, clock: Clock
) -> None:
    config = channel_config(ChannelKind.email, receiver, mail) | {"password": "wrong"}
    make_channel(env, ChannelKind.email, config)
    fire(env)
    assert dispatcher(env.db, clock).run_once().dead == 1
    assert rows(env.db)[0].last_status_code == 535
    assert mail.handler.mails == []
