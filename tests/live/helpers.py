"""Receiving from live-update sockets with a deadline, and sending readings."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession

from tests.detection.helpers import at

Message = dict[str, Any]


def receive(ws: WebSocketTestSession, timeout_s: float = 20.0) -> Message:
    """The next message, or an AssertionError after ``timeout_s`` (never a hung test).

    A close from the server raises WebSocketDisconnect with its code and reason.
    """

    async def next_message() -> Any:
        with anyio.fail_after(timeout_s):
            return await ws._send_rx.receive()

    try:
        message = ws.portal.call(next_message)
    except TimeoutError:
        raise AssertionError(f"no message within {timeout_s} s") from None
    ws._raise_on_close(message)
    data: Message = json.loads(message["text"])
    return data


def wait_for(
    ws: WebSocketTestSession,
    predicate: Callable[[Message], bool],
    timeout_s: float = 20.0,
    what: str = "the expected message",
) -> tuple[Message, list[Message]]:
    """The first message matching ``predicate``, and those skipped before it."""
    skipped: list[Message] = []
    while True:
        try:
            message = receive(ws, timeout_s)
        except AssertionError:
            raise AssertionError(
                f"{what} did not arrive within {timeout_s} s; got {skipped}"
            ) from None
        if predicate(message):
            return message, skipped
        skipped.append(message)


def connect(client: TestClient, path: str, token: str | None = None, **kw: Any) -> Any:
    url = f"/api/v1/ws/{path}" + (f"?token={token}" if token else "")
    return client.websocket_connect(url, **kw)


def hello(ws: WebSocketTestSession) -> Message:
    message = receive(ws)
    assert message["type"] == "hello", message
    return message


def post_readings(
    client: TestClient,
    headers: dict[str, str],
    tag: str,
    points: list[tuple[float, dict[str, float]]],
) -> None:
    body = {"readings": [{"asset": tag, "ts": at(t), "values": v} for t, v in points]}
    r = client.post("/api/v1/readings", json=body, headers=headers)
    assert r.status_code == 200, r.text


def drain_live(client: TestClient) -> None:
    """Wait until the readings tap handed everything committed so far to the hub."""
    live = client.app.state.live  # type: ignore[attr-defined]
    if not live.tap.drain(timeout=30):
        raise AssertionError("the live readings tap did not catch up within 30 s")


def flush_readings(client: TestClient) -> int:
    """Send the hub's merged readings now (on its event loop), instead of at the interval."""
    drain_live(client)
    hub = client.app.state.live.hub  # type: ignore[attr-defined]
    assert client.portal is not None
    return int(client.portal.call(hub.flush_readings))
