"""Channel adapters: each turns a delivery into one request to its service and says how it went.

Every sender implements ``Sender``; the dispatcher retries what a sender reports as transient
and dead-letters what it reports as permanent. Senders never raise for a failed delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Protocol

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from foresight import __version__
from foresight.models import ChannelKind

USER_AGENT = f"Foresight/{__version__}"
ERROR_MAX = 500  # characters of a receiver's answer kept in the delivery log

# Slack Web API errors that a retry cannot fix (anything else not ok is retried).
_SLACK_TRANSIENT = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


@dataclass(frozen=True)
class Delivery:
    """One outbox entry, as a sender needs it."""

    id: uuid.UUID  # the idempotency key
    event: str
    payload: dict[str, Any]
    attempt: int


@dataclass(frozen=True)
class Target:
    """A channel, detached from the session: public config and secrets merged."""

    id: uuid.UUID
    name: str
    kind: ChannelKind
    config: dict[str, Any]


@dataclass(frozen=True)
class SendResult:
    ok: bool
    status_code: int | None = None
    error: str | None = None
    # A retry cannot help (bad token, unknown channel, refused recipient): dead-letter now.
    permanent: bool = False
    # The receiver asked to wait this long (429/503 Retry-After).
    retry_after_s: float | None = None


class Sender(Protocol):
    def send(self, delivery: Delivery, target: Target) -> SendResult: ...


@dataclass(frozen=True)
class SenderOptions:
    timeout_s: float = 10.0
    slack_api_base_url: str = "https://slack.com/api/"


def _clip(text: str) -> str:
    return text if len(text) <= ERROR_MAX else text[: ERROR_MAX - 1] + "…"


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


# --- rendering ------------------------------------------------------------------------------

_VERBS = {
    "alert.opened": "opened",
    "alert.repeated": "repeated",
    "alert.acknowledged": "acknowledged",
    "alert.resolved": "resolved",
}


def subject(delivery: Delivery) -> str:
    payload = delivery.payload
    if delivery.event == "test":
        return f"Foresight test notification ({payload.get('channel', {}).get('name', '')})"
    alert = payload["alert"]
    verb = _VERBS.get(delivery.event, delivery.event)
    return f"[{str(alert['severity']).upper()}] {alert['title']} ({verb})"


def text_lines(delivery: Delivery) -> list[str]:
    payload = delivery.payload
    if delivery.event == "test":
        return [str(payload.get("message", "Test notification from Foresight."))]
    alert = payload["alert"]
    asset = alert.get("asset") or {}
    lines = [f"Asset: {asset.get('tag', '?')} {asset.get('name', '')}".rstrip()]
    if alert.get("message"):
        lines.append(str(alert["message"]))
    if alert.get("sensor"):
        value = alert.get("last_value")
        lines.append(f"Sensor: {alert['sensor']}" + (f" = {value:g}" if value is not None else ""))
    lines.append(f"Triggered at: {alert['triggered_at']} (count {alert.get('count', 1)})")
    if delivery.event == "alert.acknowledged" and alert.get("acknowledged_by"):
        note = f": {alert['acknowledge_note']}" if alert.get("acknowledge_note") else ""
        lines.append(f"Acknowledged by {alert['acknowledged_by']}{note}")
    if delivery.event == "alert.resolved":
        by = alert.get("resolved_by") or "?"
        note = f": {alert['resolve_note']}" if alert.get("resolve_note") else ""
        lines.append(f"Resolved at {alert.get('resolved_at')} by {by}{note}")
    return lines


def slack_message(delivery: Delivery) -> dict[str, Any]:
    """``text`` (the notification fallback) and Block Kit ``blocks``."""
    head = subject(delivery)
    body = "\n".join(text_lines(delivery))
    return {
        "text": f"{head}\n{body}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": head[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": body[:3000]}},
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"Foresight delivery {delivery.id}"}],
            },
        ],
    }


def webhook_body(delivery: Delivery) -> bytes:
    """The JSON document POSTed: the same bytes on every attempt of a delivery."""
    return json.dumps(delivery.payload, sort_keys=True, separators=(",", ":")).encode()


def signature(secret: str, body: bytes) -> str:
    """``X-Foresight-Signature`` value: HMAC-SHA256 of the raw body, hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- senders --------------------------------------------------------------------------------


@dataclass
class SlackWebhookSender:
    options: SenderOptions = field(default_factory=SenderOptions)

    def send(self, delivery: Delivery, target: Target) -> SendResult:
        client = WebhookClient(
            target.config["url"],
            timeout=max(1, round(self.options.timeout_s)),
            retry_handlers=[],  # the outbox retries, with backoff
            user_agent_prefix=USER_AGENT,
        )
        try:
            response = client.send(**slack_message(delivery))
        except Exception as exc:  # noqa: BLE001 - connection errors, timeouts: retried
            return SendResult(False, error=_clip(f"{type(exc).__name__}: {exc}"))
        if response.status_code == 200:
            return SendResult(True, 200)
        status = response.status_code
        return SendResult(
            False,
            status,
            error=_clip(f"HTTP {status}: {response.body}"),
            # 400 invalid_payload, 403 invalid_token, 404 no_service, 410 channel_is_archived
            permanent=400 <= status < 500 and status not in (408, 429),
            retry_after_s=_retry_after(response.headers.get("Retry-After")),
        )


@dataclass
class SlackApiSender:
    options: SenderOptions = field(default_factory=SenderOptions)

    def send(self, delivery: Delivery, target: Target) -> SendResult:
        base_url = self.options.slack_api_base_url
        client = WebClient(
            token=target.config["token"],
            base_url=base_url if base_url.endswith("/") else base_url + "/",
            timeout=max(1, round(self.options.timeout_s)),
            retry_handlers=[],
            user_agent_prefix=USER_AGENT,
        )
        try:
            response = client.chat_postMessage(
                channel=target.config["channel"],
                # Receivers that read message metadata can deduplicate on the delivery id.
                metadata={
                    "event_type": "foresight_notification",
                    "event_payload": {"delivery_id": str(delivery.id), "event": delivery.event},
                },
                **slack_message(delivery),
            )
        except SlackApiError as exc:
            status = exc.response.status_code
            code = str(exc.response.get("error") or f"HTTP {status}")
            retry_after = _retry_after(exc.response.headers.get("Retry-After"))
            transient = status == 429 or status >= 500 or code in _SLACK_TRANSIENT
            return SendResult(
                False,
                status,
                error=_clip(f"slack: {code}"),
                permanent=not transient,
                retry_after_s=retry_after,
            )
        except Exception as exc:  # noqa: BLE001 - connection errors, timeouts: retried
            return SendResult(False, error=_clip(f"{type(exc).__name__}: {exc}"))
        return SendResult(True, response.status_code)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect would re-send the signed body elsewhere (or drop it, as a GET): refuse it.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class WebhookSender:
    """POST the payload as JSON. Every non-2xx answer is retried: receivers differ in what
    they mean by a 4xx (a deploy in progress often answers 404), and the attempts are capped."""

    options: SenderOptions = field(default_factory=SenderOptions)

    def send(self, delivery: Delivery, target: Target) -> SendResult:
        body = webhook_body(delivery)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Idempotency-Key": str(delivery.id),
            "X-Foresight-Delivery": str(delivery.id),
            "X-Foresight-Event": delivery.event,
            "X-Foresight-Attempt": str(delivery.attempt),
            "X-Foresight-Timestamp": str(int(time.time())),
        }
        secret = target.config.get("secret")
        if secret:
            headers["X-Foresight-Signature"] = signature(secret, body)
        request = urllib.request.Request(
            target.config["url"], data=body, headers=headers, method="POST"
        )
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=self.options.timeout_s) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            detail = exc.read(ERROR_MAX).decode("utf-8", "replace")
            return SendResult(
                False,
                exc.code,
                error=_clip(f"HTTP {exc.code}: {detail}".strip()),
                retry_after_s=_retry_after(exc.headers.get("Retry-After")),
            )
        except Exception as exc:  # noqa: BLE001 - connection errors, timeouts: retried
            return SendResult(False, error=_clip(f"{type(exc).__name__}: {exc}"))
        if 200 <= status < 300:
            return SendResult(True, status)
        return SendResult(False, status, error=f"HTTP {status}")


@dataclass
class EmailSender:
    options: SenderOptions = field(default_factory=SenderOptions)

    def message(self, delivery: Delivery, target: Target) -> EmailMessage:
        config = target.config
        message = EmailMessage()
        message["Subject"] = subject(delivery)
        message["From"] = config["from_address"]
        message["To"] = ", ".join(config["to"])
        message["Date"] = formatdate(localtime=False)
        # Mail clients collapse copies with the same Message-ID: a resend is one message.
        message["Message-ID"] = f"<{delivery.id}@foresight.invalid>"
        message["X-Foresight-Delivery"] = str(delivery.id)
        message["X-Foresight-Event"] = delivery.event
        message.set_content("\n".join(text_lines(delivery)) + "\n")
        return message

    def send(self, delivery: Delivery, target: Target) -> SendResult:
        config = target.config
        try:
            with smtplib.SMTP(
                config["host"], int(config["port"]), timeout=self.options.timeout_s
            ) as smtp:
                if config.get("starttls", True):
                    smtp.starttls(context=ssl.create_default_context())
                if config.get("username"):
                    smtp.login(config["username"], config.get("password") or "")
                refused = smtp.send_message(self.message(delivery, target))
        except smtplib.SMTPNotSupportedError as exc:  # e.g. STARTTLS or AUTH not offered
            return SendResult(False, error=_clip(f"SMTP: {exc}"), permanent=True)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            return SendResult(
                False,
                codes[0] if codes else None,
                error=_clip(f"every recipient refused: {exc.recipients}"),
                permanent=all(code >= 500 for code in codes),
            )
        except smtplib.SMTPResponseException as exc:
            raw = exc.smtp_error
            detail = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
            return SendResult(
                False,
                exc.smtp_code,
                error=_clip(f"SMTP {exc.smtp_code}: {detail}"),
                permanent=exc.smtp_code >= 500,
            )
        except Exception as exc:  # noqa: BLE001 - connection errors, timeouts, TLS: retried
            return SendResult(False, error=_clip(f"{type(exc).__name__}: {exc}"))
        if refused:
            # Delivered to the others; retrying would resend to them too.
            return SendResult(True, 250, error=_clip(f"some recipients refused: {refused}"))
        return SendResult(True, 250)


def default_senders(options: SenderOptions) -> dict[ChannelKind, Sender]:
    return {
        ChannelKind.slack_webhook: SlackWebhookSender(options),
        ChannelKind.slack_api: SlackApiSender(options),
        ChannelKind.webhook: WebhookSender(options),
        ChannelKind.email: EmailSender(options),
    }
