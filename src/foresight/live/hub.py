"""Fan-out of live events to this process's WebSocket clients.

The hub lives on the API's event loop. Producers (the writer's readings tap, the detection
thread, request handlers, the NATS subscription) call it from any thread and never wait: an
event is serialised once and handed to the loop, which puts it in each matching client's bounded
queue without awaiting. A client whose queue is full is dropped (closed with 1013) instead of
slowing anyone down; its socket's own task does the slow sending.

Readings are downsampled here: summaries merge per asset and go out once per
``readings_interval_s``, whatever the number of writers or workers feeding them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from foresight.kit.logging import get_logger
from foresight.live.events import READINGS, AssetReadings, with_asset

log = get_logger("foresight.live")

CLOSE_POLICY = 1008  # authentication, permission, tenant
CLOSE_TRY_AGAIN = 1013  # too slow: the client may reconnect
CLOSE_GOING_AWAY = 1001  # the server is shutting down


class Relay(Protocol):
    """Carries events to every API node (NATS); the hub then receives them like any other."""

    def publish_event(self, tenant_id: uuid.UUID, message: dict[str, Any]) -> None: ...

    def publish_readings(self, items: list[AssetReadings]) -> None: ...


@dataclass(eq=False)
class Client:
    """One WebSocket subscription: a tenant, optionally one asset, optionally some types."""

    tenant_id: uuid.UUID
    asset_id: uuid.UUID | None
    types: frozenset[str] | None
    queue: asyncio.Queue[str]
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int = 1000
    close_reason: str = ""

    def wants(self, asset_id: uuid.UUID | None, type_: str) -> bool:
        if self.types is not None and type_ not in self.types:
            return False
        return self.asset_id is None or self.asset_id == asset_id


class _Metrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.clients = Gauge(
            "foresight_ws_clients", "Connected live-update WebSocket clients", registry=registry
        )
        self.messages = Counter(
            "foresight_ws_messages_total",
            "Messages queued for live-update clients, by type",
            ["type"],
            registry=registry,
        )
        self.dropped = Counter(
            "foresight_ws_dropped_clients_total",
            "Live-update clients disconnected for being too slow, by reason",
            ["reason"],
            registry=registry,
        )


class LiveHub:
    def __init__(
        self,
        *,
        readings_interval_s: float = 1.0,
        client_queue: int = 256,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.readings_interval_s = readings_interval_s
        self.client_queue = client_queue
        self.metrics = _Metrics(registry)
        # With a relay (NATS), published events go out through it and come back to every node.
        self.relay: Relay | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._clients: dict[uuid.UUID, set[Client]] = {}
        self._pending: dict[tuple[uuid.UUID, uuid.UUID], AssetReadings] = {}
        self._pending_lock = threading.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self.dropped_clients = 0

    # --- lifecycle (on the loop) ------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_forever(), name="live-readings")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        for clients in list(self._clients.values()):
            for client in list(clients):
                self._close(client, CLOSE_GOING_AWAY, "server shutting down")

    # --- subscriptions (on the loop) --------------------------------------------------------

    def subscribe(
        self,
        tenant_id: uuid.UUID,
        asset_id: uuid.UUID | None = None,
        types: Iterable[str] | None = None,
    ) -> Client:
        client = Client(
            tenant_id,
            asset_id,
            frozenset(types) if types is not None else None,
            asyncio.Queue(maxsize=self.client_queue),
        )
        self._clients.setdefault(tenant_id, set()).add(client)
        self.metrics.clients.inc()
        return client

    def unsubscribe(self, client: Client) -> None:
        clients = self._clients.get(client.tenant_id)
        if clients is None or client not in clients:
            return
        clients.discard(client)
        if not clients:
            del self._clients[client.tenant_id]
        self.metrics.clients.dec()

    def has_clients(self, tenant_id: uuid.UUID | None = None) -> bool:
        """Whether anyone listens (read from any thread: a hint, never a guarantee)."""
        if tenant_id is None:
            return bool(self._clients)
        return tenant_id in self._clients

    @property
    def client_count(self) -> int:
        return sum(len(c) for c in list(self._clients.values()))

    # --- producers (any thread, never blocking) ---------------------------------------------

    def publish(
        self, tenant_id: uuid.UUID, asset_id: uuid.UUID | None, event: Mapping[str, Any]
    ) -> None:
        """Push ``event`` (``{"type": …, "data": {…}}``, see ``live.events``) to the tenant."""
        message = with_asset(asset_id, event)
        if self.relay is not None:
            self.relay.publish_event(tenant_id, message)
        else:
            self.receive_event(tenant_id, message)

    def publish_readings(self, items: list[AssetReadings]) -> None:
        """New points' summaries, merged here and sent once per interval per asset."""
        if self.relay is not None:
            self.relay.publish_readings(items)
        else:
            self.receive_readings(items)

    def receive_event(self, tenant_id: uuid.UUID, message: dict[str, Any]) -> None:
        """Deliver a finished message to this process's clients (the relay calls this too)."""
        if not self.has_clients(tenant_id):
            return
        raw = message.get("asset_id")
        asset_id = uuid.UUID(raw) if isinstance(raw, str) else None
        text = json.dumps(message, separators=(",", ":"), default=str)
        self._on_loop(self._fanout, tenant_id, asset_id, str(message["type"]), text)

    def receive_readings(self, items: list[AssetReadings]) -> None:
        with self._pending_lock:
            for item in items:
                if not self.has_clients(item.tenant_id):
                    continue
                key = (item.tenant_id, item.asset_id)
                known = self._pending.get(key)
                if known is None:
                    self._pending[key] = item
                else:
                    known.merge(item)

    def flush_readings(self) -> int:
        """Send the merged readings now (the flusher does this every interval); on the loop."""
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        for (tenant_id, asset_id), item in pending.items():
            text = json.dumps(item.event(), separators=(",", ":"))
            self._fanout(tenant_id, asset_id, READINGS, text)
        return len(pending)

    # --- on the loop ------------------------------------------------------------------------

    def _on_loop(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # not started (or shut down): nobody is connected
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(fn, *args)

    def _fanout(
        self, tenant_id: uuid.UUID, asset_id: uuid.UUID | None, type_: str, text: str
    ) -> None:
        for client in list(self._clients.get(tenant_id, ())):
            if not client.wants(asset_id, type_):
                continue
            try:
                client.queue.put_nowait(text)
            except asyncio.QueueFull:
                self.drop(client, "queue_full")
                continue
            self.metrics.messages.labels(type_).inc()

    def drop(self, client: Client, reason: str) -> None:
        """Disconnect a client that does not keep up (its queue is full, or a send timed out)."""
        if client.closed.is_set():
            return
        self.dropped_clients += 1
        self.metrics.dropped.labels(reason).inc()
        log.warning("live_client_dropped", reason=reason, tenant=str(client.tenant_id))
        self._close(
            client,
            CLOSE_TRY_AGAIN,
            f"too slow: more than {self.client_queue} messages waiting; reconnect"
            if reason == "queue_full"
            else "too slow: a send timed out; reconnect",
        )

    def _close(self, client: Client, code: int, reason: str) -> None:
        client.close_code, client.close_reason = code, reason
        client.closed.set()
        self.unsubscribe(client)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.readings_interval_s)
            try:
                self.flush_readings()
            except Exception:  # noqa: BLE001 - the flusher must live on
                log.exception("live_flush_failed")
