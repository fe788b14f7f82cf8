"""WebSocket routes: `/ws/fleet` (every asset of the tenant) and `/ws/assets/{id}` (one asset).

Authentication takes an access token (never a device API key) from, in this order, the
``token`` query parameter, an ``Authorization: Bearer`` header, or the subprotocol pair
``Sec-WebSocket-Protocol: bearer, <token>`` (the server then selects ``bearer``). Browsers can
set neither headers nor cookies reliably on WebSockets, hence the query and subprotocol forms.

A refused client is accepted and closed at once with 1008 (policy violation) and a reason,
because a browser cannot read the status of a refused handshake: no or a bad token, a device
key, a role without ``read``, or an asset that is not the tenant's (another tenant's asset and a
missing one get the same reason). The token is checked again every ``FORESIGHT_WS_AUTH_RECHECK_S``
seconds, so expiry, sign-out of every session or deactivation end the subscription (1008).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, WebSocket
from starlette.websockets import WebSocketState

from foresight.assets import service as assets_service
from foresight.auth import service as auth_service
from foresight.auth.rbac import Permission
from foresight.auth.schemas import Principal
from foresight.config import Settings
from foresight.kit.db import Database
from foresight.kit.errors import DomainError
from foresight.kit.logging import get_logger
from foresight.live.events import EVENT_TYPES, now_iso
from foresight.live.hub import CLOSE_POLICY, Client, LiveHub

log = get_logger("foresight.live")

router = APIRouter(tags=["live"])
SUBPROTOCOL = "bearer"
CLOSE_ERROR = 1011
CLOSE_TIMEOUT_S = 5.0

TokenQuery = Annotated[str | None, Query(max_length=4096, description="Access token")]
TypesQuery = Annotated[
    str | None, Query(max_length=200, description="Comma-separated event types (default: all)")
]


class Refused(Exception):
    def __init__(self, reason: str, code: int = CLOSE_POLICY) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@router.websocket("/ws/fleet")
async def fleet_socket(
    websocket: WebSocket, token: TokenQuery = None, types: TypesQuery = None
) -> None:
    """Every asset of the caller's tenant: readings (downsampled), alerts, anomaly, health."""
    await _serve(websocket, token=token, types=types, asset=None)


@router.websocket("/ws/assets/{asset_id}")
async def asset_socket(
    websocket: WebSocket, asset_id: str, token: TokenQuery = None, types: TypesQuery = None
) -> None:
    """One asset of the caller's tenant: its readings (downsampled), alerts, anomaly, health."""
    await _serve(websocket, token=token, types=types, asset=asset_id)


def _credentials(websocket: WebSocket, token: str | None) -> tuple[str | None, str | None]:
    """(token, subprotocol to select) from the query, the header or the subprotocols."""
    offered: list[str] = list(websocket.scope.get("subprotocols") or [])
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
    if token:
        return token, subprotocol
    scheme, _, credentials = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip(), subprotocol
    if subprotocol is not None:
        at = offered.index(SUBPROTOCOL)
        if at + 1 < len(offered):
            return offered[at + 1], subprotocol
    return None, subprotocol


def _parse_types(types: str | None) -> frozenset[str] | None:
    if types is None or not types.strip():
        return None
    wanted = frozenset(t.strip() for t in types.split(",") if t.strip())
    unknown = sorted(wanted - EVENT_TYPES)
    if unknown:
        raise Refused(f"unknown event types {unknown}; known: {sorted(EVENT_TYPES)}")
    return wanted


def _authenticate(
    db: Database, settings: Settings, token: str | None, asset: str | None
) -> tuple[Principal, uuid.UUID | None]:
    if not token:
        raise Refused("authentication required: pass ?token=<access token>")
    with db.transaction(write=False) as session:
        try:
            principal = auth_service.principal_from_token(session, settings, token)
            auth_service.require(principal, Permission.read)
        except DomainError as exc:
            raise Refused(exc.detail) from exc
        if asset is None:
            return principal, None
        try:
            asset_id = uuid.UUID(asset)
            assets_service.get_asset(session, tenant_id=principal.tenant_id, asset_id=asset_id)
        except (ValueError, DomainError) as exc:
            # Another tenant's asset reads exactly like a missing one.
            raise Refused(f"asset {asset} not found") from exc
        return principal, asset_id


async def _serve(
    websocket: WebSocket, *, token: str | None, types: str | None, asset: str | None
) -> None:
    app_state = websocket.app.state
    hub: LiveHub = app_state.live.hub
    settings: Settings = app_state.settings
    db: Database = app_state.db
    found, subprotocol = _credentials(websocket, token)
    refused: Refused | None = None
    try:
        wanted = _parse_types(types)
        if websocket.headers.get("x-api-key") and not found:
            raise Refused("device API keys cannot subscribe to live updates; sign in as a user")
        principal, asset_id = await asyncio.to_thread(_authenticate, db, settings, found, asset)
    except Refused as exc:
        refused = exc
    except Exception:  # noqa: BLE001 - e.g. the database is down: the client may retry
        log.exception("live_auth_failed")
        refused = Refused("internal error; retry later", CLOSE_ERROR)
    await websocket.accept(subprotocol=subprotocol)
    if refused is not None:
        await _close(websocket, refused.code, refused.reason)
        return
    client = hub.subscribe(principal.tenant_id, asset_id, wanted)
    try:
        await websocket.send_text(
            json.dumps(
                {
                    "type": "hello",
                    "scope": "fleet" if asset_id is None else "asset",
                    "asset_id": str(asset_id) if asset_id else None,
                    "types": sorted(wanted or EVENT_TYPES),
                    "readings_interval_s": hub.readings_interval_s,
                    "at": now_iso(),
                }
            )
        )
        code, reason = await _pump(websocket, hub, client, db, settings, found or "")
    finally:
        hub.unsubscribe(client)
    if code is not None:
        await _close(websocket, code, reason)


async def _pump(
    websocket: WebSocket,
    hub: LiveHub,
    client: Client,
    db: Database,
    settings: Settings,
    token: str,
) -> tuple[int | None, str]:
    """Run until the client leaves (None) or must be closed (code, reason)."""

    async def send() -> tuple[int | None, str]:
        while True:
            text = await client.queue.get()
            try:
                await asyncio.wait_for(websocket.send_text(text), settings.ws_send_timeout_s)
            except TimeoutError:
                hub.drop(client, "send_timeout")
                return client.close_code, client.close_reason

    async def receive() -> tuple[int | None, str]:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return None, ""
            if _is_ping(message.get("text")):
                with contextlib.suppress(asyncio.QueueFull):
                    client.queue.put_nowait(json.dumps({"type": "pong", "at": now_iso()}))

    async def dropped() -> tuple[int | None, str]:
        await client.closed.wait()
        return client.close_code, client.close_reason

    async def recheck() -> tuple[int | None, str]:
        while True:
            await asyncio.sleep(settings.ws_auth_recheck_s)
            try:
                await asyncio.to_thread(_authenticate, db, settings, token, None)
            except Refused as exc:
                return CLOSE_POLICY, f"{exc.reason}; reconnect with a new token"
            except Exception:  # noqa: BLE001 - a database hiccup is not a revocation
                log.warning("live_recheck_failed")

    tasks = [asyncio.create_task(c()) for c in (send, receive, dropped, recheck)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        first = next(iter(done))
        if first.exception() is not None:
            # The socket went away under us (e.g. a send on a closed connection).
            return None, ""
        return first.result()
    finally:
        for task in tasks:
            task.cancel()
        # wait, not gather: gather would re-raise a child's CancelledError as ours, which the
        # server's own cancellation (anyio's cancel scope) would not recognise.
        await asyncio.wait(tasks)


def _is_ping(text: Any) -> bool:
    if not isinstance(text, str) or len(text) > 200:
        return False
    try:
        return bool(json.loads(text).get("type") == "ping")
    except (ValueError, AttributeError):
        return False


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.application_state is WebSocketState.DISCONNECTED:
        return
    # A stuck client cannot take the close frame either: give up after a while.
    with contextlib.suppress(Exception):
        short = reason.encode()[:123].decode(errors="ignore")  # the protocol's limit, in bytes
        await asyncio.wait_for(websocket.close(code, short), CLOSE_TIMEOUT_S)
