"""Live events between processes: NATS core subjects ``<prefix>.<tenant id>``.

Live events are ephemeral, so they use plain NATS publish/subscribe, not JetStream: whoever
produces an event (a worker persisting points, an API node acknowledging an alert) publishes
it, and every API node subscribes to ``<prefix>.*`` and hands what arrives to its hub, which
fans it out to its own WebSocket clients. Nothing is stored or replayed; a node that is down
misses what was published meanwhile (clients reload state over HTTP when they reconnect).

Publishing never waits: a message is scheduled on the connection's event loop and forgotten;
beyond ``max_in_flight`` scheduled messages (the loop or the server cannot keep up) new ones are
dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import Callable
from typing import Any

from foresight.kit.logging import get_logger
from foresight.live.events import AssetReadings, SensorStat

log = get_logger("foresight.live.nats")

READINGS_CHUNK = 500  # assets per message: well under NATS's default 1 MiB payload limit

EventCallback = Callable[[uuid.UUID, dict[str, Any]], None]
ReadingsCallback = Callable[[list[AssetReadings]], None]


def _nats() -> Any:
    try:
        import nats
    except ImportError as exc:  # pragma: no cover - nats-py is a declared dependency
        raise RuntimeError("live updates over NATS need nats-py: pip install nats-py") from exc
    return nats


def check_prefix(subject_prefix: str, ingest_prefix: str) -> None:
    """Live subjects must stay out of the ingest stream's ``<ingest prefix>.>`` capture."""
    if subject_prefix == ingest_prefix or subject_prefix.startswith(ingest_prefix + "."):
        raise ValueError(
            f"FORESIGHT_WS_NATS_SUBJECT_PREFIX {subject_prefix!r} lies under the ingest stream's "
            f"subjects ({ingest_prefix}.>): JetStream would store every live event"
        )


def encode_readings(items: list[AssetReadings]) -> bytes:
    return json.dumps(
        {
            "kind": "readings",
            "items": [
                {
                    "asset_id": str(item.asset_id),
                    "sensors": {key: stat.as_list() for key, stat in item.sensors.items()},
                }
                for item in items
            ],
        },
        separators=(",", ":"),
    ).encode()


def encode_event(message: dict[str, Any]) -> bytes:
    return json.dumps({"kind": "event", "message": message}, separators=(",", ":")).encode()


class NatsEvents:
    def __init__(
        self, url: str, subject_prefix: str, *, name: str, max_in_flight: int = 10_000
    ) -> None:
        self.url = url
        self.subject_prefix = subject_prefix
        self.name = name
        self.max_in_flight = max_in_flight
        self.dropped = 0
        self.received = 0
        self._nc: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._in_flight = 0
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_event: EventCallback | None = None
        self._on_readings: ReadingsCallback | None = None

    def subject(self, tenant_id: uuid.UUID) -> str:
        return f"{self.subject_prefix}.{tenant_id}"

    async def start(
        self,
        *,
        on_event: EventCallback | None = None,
        on_readings: ReadingsCallback | None = None,
    ) -> None:
        """Connect; with callbacks, also subscribe to every tenant's events (an API node)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._nc = await _nats().connect(self.url, max_reconnect_attempts=-1, name=self.name)
        if on_event is not None or on_readings is not None:
            self._on_event, self._on_readings = on_event, on_readings
            await self._nc.subscribe(f"{self.subject_prefix}.*", cb=self._receive)
            await self._nc.flush()  # the subscription is registered before anyone connects

    async def stop(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._nc is not None:
            with contextlib.suppress(Exception):  # already closed or never connected
                await self._nc.drain()
            self._nc = None

    # --- publishing (any thread) ------------------------------------------------------------

    def publish_event(self, tenant_id: uuid.UUID, message: dict[str, Any]) -> None:
        self._send(self.subject(tenant_id), encode_event(message))

    def publish_readings(self, items: list[AssetReadings]) -> None:
        by_tenant: dict[uuid.UUID, list[AssetReadings]] = {}
        for item in items:
            by_tenant.setdefault(item.tenant_id, []).append(item)
        for tenant_id, group in by_tenant.items():
            for start in range(0, len(group), READINGS_CHUNK):
                chunk = group[start : start + READINGS_CHUNK]
                self._send(self.subject(tenant_id), encode_readings(chunk))

    def _send(self, subject: str, payload: bytes) -> None:
        loop = self._loop
        if loop is None or loop.is_closed() or self._nc is None:
            self.dropped += 1
            return
        with self._lock:
            if self._in_flight >= self.max_in_flight:
                self.dropped += 1
                return
            self._in_flight += 1
        if threading.get_ident() == self._loop_thread:
            self._spawn(subject, payload)
            return
        try:
            loop.call_soon_threadsafe(self._spawn, subject, payload)
        except RuntimeError:  # the loop closed meanwhile
            self._done()

    def _spawn(self, subject: str, payload: bytes) -> None:
        task = asyncio.get_running_loop().create_task(self._publish(subject, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, subject: str, payload: bytes) -> None:
        try:
            if self._nc is not None:
                await self._nc.publish(subject, payload)
            else:
                self.dropped += 1
        except Exception as exc:  # noqa: BLE001 - best-effort: a lost live event is only late
            self.dropped += 1
            log.warning("live_publish_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._done()

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1

    # --- receiving (on the loop) ------------------------------------------------------------

    async def _receive(self, msg: Any) -> None:
        try:
            tenant_id = uuid.UUID(msg.subject.rsplit(".", 1)[1])
            doc = json.loads(msg.data)
            kind = doc["kind"]
            if kind == "event" and self._on_event is not None:
                self._on_event(tenant_id, dict(doc["message"]))
            elif kind == "readings" and self._on_readings is not None:
                self._on_readings(
                    [
                        AssetReadings(
                            tenant_id,
                            uuid.UUID(item["asset_id"]),
                            {k: SensorStat.from_list(v) for k, v in item["sensors"].items()},
                        )
                        for item in doc["items"]
                    ]
                )
            self.received += 1
        except Exception as exc:  # noqa: BLE001 - a bad message must not kill the subscription
            log.warning("live_message_undecodable", subject=msg.subject, error=str(exc))
