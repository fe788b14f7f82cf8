"""The scale-out bus: API nodes publish batches to NATS JetStream, `foresight worker` persists.

- An API node answers 2xx once JetStream has stored every chunk of the batch (a publish ack):
  the batch survives the API node. Unknown assets are still refused at once (a read-only,
  cached check), so responses look the same as in the embedded shape.
- Workers share one durable pull consumer; each fetch is persisted in one transaction with the
  same Pipeline as the embedded writer and acknowledged only after commit. A worker killed
  before acking leaves its messages to be redelivered to another; the store ignores points it
  already has, so a redelivery changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError

from foresight.assets import service as assets_service
from foresight.ingest.batch import Batch, RowError
from foresight.ingest.bus import Saturated, Unavailable
from foresight.ingest.pipeline import Outcome, Pipeline
from foresight.kit.db import Database
from foresight.kit.logging import get_logger

log = get_logger("foresight.ingest.nats")

CHUNK_POINTS = 5_000  # keeps messages well under the NATS default 1 MiB payload limit
DURABLE = "foresight-workers"


def _nats() -> Any:
    try:
        import nats
    except ImportError as exc:  # pragma: no cover - nats-py is a declared dependency
        raise RuntimeError("the NATS bus needs nats-py: pip install nats-py") from exc
    return nats


def encode(batch: Batch, start: int = 0, stop: int | None = None) -> bytes:
    end = len(batch) if stop is None else stop
    return json.dumps(
        {
            "tenant": str(batch.tenant_id),
            "label": batch.actor_label,
            "asset": batch.asset[start:end],
            "sensor": batch.sensor[start:end],
            "ts_ms": batch.ts_ms[start:end],
            "value": batch.value[start:end],
            "row": batch.row[start:end],
        },
        separators=(",", ":"),
    ).encode()


def decode(data: bytes) -> Batch:
    doc = json.loads(data)
    return Batch(
        tenant_id=uuid.UUID(doc["tenant"]),
        asset=list(doc["asset"]),
        sensor=list(doc["sensor"]),
        ts_ms=[int(v) for v in doc["ts_ms"]],
        value=[float(v) for v in doc["value"]],
        row=[int(v) for v in doc["row"]],
        actor_label=str(doc.get("label", "ingest")),
    )


class NatsBus:
    def __init__(
        self,
        db: Database,
        *,
        url: str,
        stream: str,
        subject_prefix: str,
        pipeline: Pipeline | None = None,
        publish_timeout_s: float = 10.0,
    ) -> None:
        self.db = db
        self.url = url
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.pipeline = pipeline or Pipeline()
        self.publish_timeout_s = publish_timeout_s
        self._nc: Any = None
        self._js: Any = None
        self._known_tags: dict[tuple[uuid.UUID, str], float] = {}

    async def start(self) -> None:
        nats = _nats()
        self._nc = await nats.connect(self.url, max_reconnect_attempts=-1, name="foresight-api")
        self._js = self._nc.jetstream()
        await ensure_stream(self._js, self.stream, self.subject_prefix)

    async def stop(self) -> None:
        if self._nc is not None:
            await self._nc.drain()
            self._nc = None

    def subject(self, tenant_id: uuid.UUID) -> str:
        return f"{self.subject_prefix}.{tenant_id}"

    def _precheck(self, batch: Batch) -> list[RowError]:
        """Refuse rows of unknown assets now (read-only), as the embedded shape does."""
        now = time.monotonic()
        tenant = batch.tenant_id
        tags = sorted({t for t in batch.asset if self._known_tags.get((tenant, t), 0) < now})
        if not tags:
            return []
        with self.db.transaction(write=False) as session:
            settings = self.pipeline.cache.tenant_settings(session, tenant)
            if str(settings.get("auto_register_assets", False)).lower() in (
                "true",
                "1",
                "yes",
                "on",
            ):
                return []
            known = assets_service.series_by_tag(session, tenant_id=tenant, tags=tags)
        for tag in known:
            self._known_tags[(tenant, tag)] = now + self.pipeline.cache.ttl_s
        unknown = set(tags) - set(known)
        if not unknown:
            return []
        keep = [i for i, tag in enumerate(batch.asset) if tag not in unknown]
        errors = [
            RowError(
                batch.row[i],
                f"unknown asset {batch.asset[i]!r} (register it, or enable auto_register_assets)",
                batch.asset[i],
                batch.sensor[i],
            )
            for i in range(len(batch))
            if batch.asset[i] in unknown
        ]
        for name in ("asset", "sensor", "ts_ms", "value", "row"):
            column = getattr(batch, name)
            setattr(batch, name, [column[i] for i in keep])
        return errors

    async def submit(self, batch: Batch) -> Outcome:
        if self._js is None or not self._nc.is_connected:
            # While nats-py reconnects it would buffer the publish and the request would wait
            # out the publish timeout for an ack that cannot come: refuse at once instead.
            raise Unavailable("the NATS bus is not connected")
        errors = list(batch.errors)
        errors += await asyncio.to_thread(self._precheck, batch)
        try:
            for start in range(0, len(batch), CHUNK_POINTS):
                await self._js.publish(
                    self.subject(batch.tenant_id),
                    encode(batch, start, start + CHUNK_POINTS),
                    timeout=self.publish_timeout_s,
                    headers={"Nats-Msg-Id": uuid.uuid4().hex},
                )
        except Exception as exc:  # noqa: BLE001 - no ack means not durable: the caller retries
            nats_errors = _nats().errors
            if isinstance(exc, nats_errors.TimeoutError | nats_errors.NoRespondersError):
                raise Saturated(2, "the stream did not acknowledge in time; retry") from exc
            raise Unavailable(f"publishing to NATS failed: {type(exc).__name__}") from exc
        errors.sort(key=lambda e: e.row)
        return Outcome(accepted=len(batch), errors=errors)


async def ensure_stream(js: Any, stream: str, subject_prefix: str) -> None:
    from nats.js import api
    from nats.js.errors import NotFoundError

    try:
        await js.stream_info(stream)
    except NotFoundError:
        await js.add_stream(
            api.StreamConfig(
                name=stream,
                subjects=[f"{subject_prefix}.>"],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
                duplicate_window=120,
            )
        )


class Worker:
    """Consumes the stream with a durable pull consumer; acks after the commit."""

    def __init__(
        self,
        db: Database,
        *,
        url: str,
        stream: str,
        subject_prefix: str,
        pipeline: Pipeline | None = None,
        fetch_batch: int = 64,
        ack_wait_s: float = 30.0,
    ) -> None:
        self.db = db
        self.url = url
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.pipeline = pipeline or Pipeline()
        self.fetch_batch = fetch_batch
        self.ack_wait_s = ack_wait_s
        self.persisted_messages = 0
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    def _persist(self, batches: list[Batch]) -> None:
        for attempt in range(3):
            try:
                with self.db.transaction() as session:
                    persisted = self.pipeline.persist(session, batches)
                break
            except IntegrityError:
                # Workers persist in parallel: another one created the same sensor (or asset)
                # first. Nothing was stored; the next attempt finds it, instead of a nak that
                # would hold these messages back for seconds.
                if attempt == 2:
                    raise
        self.pipeline.remember(persisted)

    async def run(self) -> None:
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js import api

        nc = await _nats().connect(self.url, max_reconnect_attempts=-1, name="foresight-worker")
        try:
            js = nc.jetstream()
            await ensure_stream(js, self.stream, self.subject_prefix)
            sub = await js.pull_subscribe(
                f"{self.subject_prefix}.>",
                durable=DURABLE,
                stream=self.stream,
                config=api.ConsumerConfig(ack_wait=self.ack_wait_s, max_ack_pending=10_000),
            )
            pause = 0.0
            while not self._stopping.is_set():
                if pause:
                    # The last persist failed (the database is down?): wait before fetching
                    # more, rather than cycling through the whole backlog failing and nak'ing.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), timeout=pause)
                try:
                    messages = await sub.fetch(self.fetch_batch, timeout=1)
                except (NatsTimeout, TimeoutError):  # nothing waiting: nats-py raises either
                    continue
                pause = 0.0 if await self.handle(messages) else min(max(pause * 2, 0.5), 5.0)
        finally:
            await nc.close()

    async def handle(self, messages: list[Any]) -> bool:
        """Persist and ack ``messages``; False if persisting failed (they are nak'ed)."""
        decoded: list[tuple[Any, Batch]] = []
        for message in messages:
            try:
                decoded.append((message, decode(message.data)))
            except (ValueError, KeyError, TypeError):
                log.error("undecodable_message", subject=message.subject)
                await message.term()  # poison: never redeliver
        if not decoded:
            return True
        try:
            await asyncio.to_thread(self._persist, [batch for _, batch in decoded])
        except Exception as exc:  # noqa: BLE001 - redelivered later, by us or another worker
            log.error("worker_persist_failed", error=str(exc).splitlines()[0])
            for message, _ in decoded:
                await message.nak(delay=2)
            return False
        for message, _ in decoded:
            await message.ack()
        self.persisted_messages += len(decoded)
        return True
