"""Real local servers standing in for Slack, webhook receivers and an SMTP relay.

The HTTP server checks requests the way the real services do (Slack: JSON body with text,
bot token, channel; webhooks: the HMAC signature) and answers like them, so a malformed request
fails the delivery instead of slipping through.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

SLACK_WEBHOOK_PATH = "/services/T000/B000/XXXXXXXX"
SLACK_TOKEN = "xoxb-test-token-0123456789"
SLACK_CHANNEL = "C0ALERTS"
WEBHOOK_PATH = "/hooks/foresight"
WEBHOOK_SECRET = "whsec-a-long-enough-secret-0123456789"
WAIT_S = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    # What the server made of it: "ok", or why it refused the request.
    verdict: str

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)


class Receiver:
    """A threading HTTP server on a free port. ``fail_next(n)`` makes the next n requests get
    ``status`` (after being recorded), as a struggling receiver would."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.scripted: deque[Reply] = deque()
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply, verdict = receiver._answer(self.path, headers, body)
                with receiver._cond:
                    receiver.requests.append(Received("POST", self.path, headers, body, verdict))
                    receiver._cond.notify_all()
                payload = reply.body.encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail_next(self, count: int, status: int = 500, body: str = "boom", **headers: str) -> None:
        for _ in range(count):
            self.scripted.append(Reply(status, body, headers))

    def wait_for(self, count: int, timeout_s: float = WAIT_S) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} request(s) within {timeout_s} s, got "
                        f"{len(self.requests)}: {[r.path for r in self.requests]}"
                    )
                self._cond.wait(left)
            return list(self.requests)

    # --- what the real services would answer ------------------------------------------------

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[Reply, str]:
        verdict = self._check(path, headers, body)
        if self.scripted:
            return self.scripted.popleft(), verdict
        if path.startswith("/api/"):
            if verdict != "ok":
                return Reply(200, json.dumps({"ok": False, "error": verdict})), verdict
            return Reply(200, json.dumps({"ok": True, "channel": SLACK_CHANNEL, "ts": "1.2"})), "ok"
        if verdict != "ok":
            return Reply(400 if path == SLACK_WEBHOOK_PATH else 401, verdict), verdict
        return Reply(200, "ok"), verdict

    def _check(self, path: str, headers: dict[str, str], body: bytes) -> str:
        if not headers.get("content-type", "").startswith("application/json"):
            return "invalid_content_type"
        try:
            data = json.loads(body)
        except ValueError:
            return "invalid_payload"
        if path == SLACK_WEBHOOK_PATH:
            return "ok" if isinstance(data.get("text"), str) and data["text"] else "no_text"
        if path == "/api/chat.postMessage":
            if headers.get("authorization") != f"Bearer {SLACK_TOKEN}":
                return "invalid_auth"
            if data.get("channel") != SLACK_CHANNEL:
                return "channel_not_found"
            return "ok" if data.get("text") else "no_text"
        if path == WEBHOOK_PATH:
            expected = (
                "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
            )
            if not hmac.compare_digest(headers.get("x-foresight-signature", ""), expected):
                return "bad_signature"
            if headers.get("idempotency-key") != data.get("id"):
                return "idempotency_key_mismatch"
            return "ok"
        # Any other path: a receiver that checks no signature, only that the JSON is ours.
        return "ok" if data.get("id") == headers.get("idempotency-key") else "no_delivery_id"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: Message
    login: str | None


class MailHandler:
    """aiosmtpd handler: keeps every message; ``refuse`` recipients get a permanent 550,
    ``busy_next`` makes the next DATA commands answer 451 (try again later)."""

    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self.refuse: set[str] = set()
        self.busy_next = 0
        self._cond = threading.Condition()

    async def handle_RCPT(  # noqa: N802 - the aiosmtpd API
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - the aiosmtpd API
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if self.busy_next > 0:
            self.busy_next -= 1
            return "451 4.3.0 try again later"
        content = envelope.original_content or b""
        login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else None
        with self._cond:
            self.mails.append(
                Mail(
                    str(envelope.mail_from),
                    list(envelope.rcpt_tos),
                    message_from_bytes(content),
                    login,
                )
            )
            self._cond.notify_all()
        return "250 Message accepted"

    def wait_for(self, count: int, timeout_s: float = WAIT_S) -> list[Mail]:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.mails) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} mail(s) within {timeout_s} s, got {len(self.mails)}"
                    )
                self._cond.wait(left)
            return list(self.mails)


SMTP_USER = "foresight"
SMTP_PASSWORD = "smtp-password-123"


def _authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)


class MailServer:
    def __init__(self) -> None:
        self.handler = MailHandler()
        self.port = free_port()
        self.controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=_authenticator,
            auth_require_tls=False,  # local test server: no certificate to offer
        )

    def __enter__(self) -> MailServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
