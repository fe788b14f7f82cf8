"""MQTT door: a subscriber that feeds the same pipeline as HTTP.

Devices publish to ``<prefix>/<tenant>/<asset>/readings`` (payload: the FleetVision single
reading, a batch item ``{"ts", "values"}``, a list of those, or ``{"readings": [...]}``). Nodes
subscribe through the shared subscription ``$share/<group>/<prefix>/+/+/readings`` so several
Foresight nodes split the load. Messages are QoS 1 and acknowledged only once their batch is
durable (paho's manual acks), so a crash before that leaves them to the broker to redeliver.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from foresight.ingest.batch import Batch, Limits
from foresight.ingest.bus import IngestBus, Saturated, Unavailable
from foresight.ingest.parse import _Context, _object_row
from foresight.kit.db import Database
from foresight.kit.logging import get_logger
from foresight.tenants import repository as tenants_repository

log = get_logger("foresight.ingest.mqtt")


@dataclass(frozen=True)
class MqttConfig:
    url: str
    topic_prefix: str = "foresight"
    share_group: str = "foresight"
    client_id: str = ""
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    max_future_s: float = 300.0

    @property
    def subscription(self) -> str:
        return f"$share/{self.share_group}/{self.topic_prefix}/+/+/readings"


def parse_payload(payload: bytes, *, tenant_id: uuid.UUID, asset: str, limits: Limits) -> Batch:
    """A message's readings; the asset comes from the topic (a device writes only its own)."""
    batch = Batch(tenant_id)
    ctx = _Context(batch, limits)
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        batch.reject(0, "malformed JSON payload", asset=asset)
        return batch
    if isinstance(doc, dict) and "readings" in doc and isinstance(doc["readings"], list):
        items = doc["readings"]
    elif isinstance(doc, list):
        items = doc
    else:
        items = [doc]
    for row, item in enumerate(items):
        if isinstance(item, dict):
            claimed = item.get("asset", item.get("equipment_id", asset))
            if claimed != asset:
                batch.reject(row, f"asset {claimed!r} does not match the topic's {asset!r}", asset)
                continue
            item = {k: v for k, v in item.items() if k not in ("asset", "equipment_id")}
            item["asset"] = asset
        _object_row(ctx, row, item)
    return batch


def _tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    if not (config.url.startswith("mqtts://") or config.tls_ca_file):
        return None
    context = ssl.create_default_context(cafile=config.tls_ca_file or None)
    if config.tls_cert_file:
        context.load_cert_chain(config.tls_cert_file, config.tls_key_file or None)
    return context


class MqttSubscriber:
    def __init__(self, config: MqttConfig, db: Database, bus: IngestBus) -> None:
        self.config = config
        self.db = db
        self.bus = bus
        self.processed = 0
        self.subscribed = False  # true while connected and subscribed
        self._tenants: dict[str, uuid.UUID | None] = {}
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    def _tenant_id(self, name: str) -> uuid.UUID | None:
        if name not in self._tenants:
            with self.db.transaction(write=False) as session:
                tenant = tenants_repository.get_by_name(session, name)
            self._tenants[name] = tenant.id if tenant else None
        return self._tenants[name]

    async def run(self) -> None:
        """Connect, subscribe and consume; reconnect with exponential backoff until stopped."""
        import aiomqtt

        parts = urlsplit(self.config.url)
        delay = 1.0
        while not self._stopping.is_set():
            try:
                async with aiomqtt.Client(
                    parts.hostname or "127.0.0.1",
                    parts.port or (8883 if parts.scheme == "mqtts" else 1883),
                    username=unquote(parts.username) if parts.username else None,
                    password=unquote(parts.password) if parts.password else None,
                    identifier=self.config.client_id or f"foresight-{socket.gethostname()}",
                    tls_context=_tls_context(self.config),
                    # A persistent session: after a reconnect the broker resends what we had
                    # not acknowledged (i.e. not yet stored).
                    clean_session=False,
                ) as client:
                    # Ack each message only after its batch is durable (paho's manual acks).
                    client._client.manual_ack_set(True)
                    await client.subscribe(self.config.subscription, qos=1)
                    log.info("mqtt_subscribed", subscription=self.config.subscription)
                    self.subscribed, delay = True, 1.0
                    try:
                        await self._consume(client)
                    finally:
                        self.subscribed = False
            except aiomqtt.MqttError as exc:
                if self._stopping.is_set():
                    break
                log.warning("mqtt_disconnected", error=str(exc), retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                delay = min(delay * 2, 30.0)

    async def _consume(self, client: Any) -> None:
        messages = client.messages.__aiter__()
        while not self._stopping.is_set():
            try:
                message = await asyncio.wait_for(messages.__anext__(), timeout=0.5)
            except TimeoutError:
                continue
            await self.handle(message)
            client._client.ack(message.mid, message.qos)

    async def handle(self, message: Any) -> None:
        topic = str(message.topic).split("/")
        prefix = self.config.topic_prefix.split("/")
        if len(topic) != len(prefix) + 3 or topic[-1] != "readings":
            log.warning("mqtt_bad_topic", topic=str(message.topic))
            return
        tenant_name, asset = topic[len(prefix)], topic[len(prefix) + 1]
        tenant_id = await asyncio.to_thread(self._tenant_id, tenant_name)
        if tenant_id is None:
            log.warning("mqtt_unknown_tenant", tenant=tenant_name)
            return
        limits = Limits(max_future_s=self.config.max_future_s)
        batch = parse_payload(message.payload, tenant_id=tenant_id, asset=asset, limits=limits)
        batch.actor_label = f"mqtt:{tenant_name}/{asset}"
        delay = 0.5
        while True:
            try:
                outcome = await self.bus.submit(batch)
                break
            except (Saturated, Unavailable) as exc:
                # Backpressure: hold the message (unacked) and retry; the broker buffers.
                log.warning("mqtt_submit_retry", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self.processed += 1
        if outcome.errors:
            log.warning(
                "mqtt_rows_rejected",
                topic=str(message.topic),
                rejected=outcome.rejected,
                first=outcome.errors[0].reason,
            )
