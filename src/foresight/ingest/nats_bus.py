"""The scale-out bus: API nodes publish batches to NATS JetStream, `foresight worker` persists.

- An API node answers 2xx once JetStream has stored every chunk of the batch (a publish ack):
  the batch survives the API node. Unknown assets are still refused at once (a read-only,
  cached check), so responses look the same as in the embedded shape.
- Points are published per asset partition (``<prefix>.<tenant>.<partition>``, see
  ``ingest.partitions``); each worker consumes the partitions it holds a lease on, so one
  asset's points are persisted and evaluated by one worker at a time, in order, and rule windows
  and anomaly baselines see the whole series. Each fetch is persisted in one transaction with the
  same Pipeline as the embedded writer and acknowledged only after commit. A worker killed before
  acking leaves its messages to be redelivered to the partition's next holder; the store ignores
  points it already has, so a redelivery changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError

from foresight.assets import service as assets_service
from foresight.ingest.batch import Batch, RowError
from foresight.ingest.bus import Saturated, Unavailable
from foresight.ingest.partitions import (
    Leases,
    agreed_partitions,
    leases,
    partition_of,
    partition_subject,
)
from foresight.ingest.pipeline import Outcome, Pipeline
from foresight.kit.db import Database
from foresight.kit.logging import get_logger

log = get_logger("foresight.ingest.nats")

CHUNK_POINTS = 5_000  # keeps messages well under the NATS default 1 MiB payload limit
# Consumers: one per partition (``foresight-workers-p<n>``), and one any worker drains for
# batches published before partitions existed (subject ``<prefix>.<tenant>``).
DURABLE = "foresight-workers"
LEGACY_DURABLE = "foresight-workers-legacy"


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
        partitions: int = 16,
    ) -> None:
        self.db = db
        self.url = url
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.pipeline = pipeline or Pipeline()
        self.publish_timeout_s = publish_timeout_s
        self.partitions = partitions
        self._partition_of: dict[tuple[uuid.UUID, str], int] = {}
        self._nc: Any = None
        self._js: Any = None
        self._known_tags: dict[tuple[uuid.UUID, str], float] = {}

    async def start(self) -> None:
        nats = _nats()
        self._nc = await nats.connect(self.url, max_reconnect_attempts=-1, name="foresight-api")
        self._js = self._nc.jetstream()
        await ensure_stream(self._js, self.stream, self.subject_prefix)
        self.partitions = await agreed_partitions(self._js, self.stream, self.partitions)

    async def stop(self) -> None:
        if self._nc is not None:
            await self._nc.drain()
            self._nc = None

    def split(self, batch: Batch) -> list[tuple[int, Batch]]:
        """The batch's points by asset partition, each part in the batch's row order."""
        tenant = batch.tenant_id
        rows: dict[int, list[int]] = {}
        for i, tag in enumerate(batch.asset):
            partition = self._partition_of.get((tenant, tag))
            if partition is None:
                partition = partition_of(tenant, tag, self.partitions)
                self._partition_of[(tenant, tag)] = partition
            rows.setdefault(partition, []).append(i)
        if len(rows) == 1:
            return [(next(iter(rows)), batch)]
        parts = []
        for partition, index in sorted(rows.items()):
            part = Batch(tenant, actor_label=batch.actor_label)
            for name in ("asset", "sensor", "ts_ms", "value", "row"):
                column = getattr(batch, name)
                setattr(part, name, [column[i] for i in index])
            parts.append((partition, part))
        return parts

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
            for partition, part in self.split(batch):
                subject = partition_subject(self.subject_prefix, batch.tenant_id, partition)
                for start in range(0, len(part), CHUNK_POINTS):
                    await self._js.publish(
                        subject,
                        encode(part, start, start + CHUNK_POINTS),
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
    """Consumes the partitions it holds a lease on (durable pull consumers); acks after commit."""

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
        partitions: int = 16,
        lease_ttl_s: float = 10.0,
        on_rebalance: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.url = url
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.pipeline = pipeline or Pipeline()
        self.fetch_batch = fetch_batch
        self.ack_wait_s = ack_wait_s
        self.partitions = partitions
        self.lease_ttl_s = lease_ttl_s
        # Called when this worker lost or gave up partitions: per-series state (detection) of
        # assets that may come back later must be rebuilt from the store, not trusted.
        self.on_rebalance = on_rebalance
        self.worker_id = uuid.uuid4().hex[:12]
        self.persisted_messages = 0
        self.leases: Leases | None = None
        self._leaving: set[int] = set()  # partitions being handed over
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    @property
    def held(self) -> list[int]:
        return sorted(self.leases.held) if self.leases is not None else []

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
        nc = await _nats().connect(self.url, max_reconnect_attempts=-1, name="foresight-worker")
        consumers: dict[int, tuple[asyncio.Event, asyncio.Task[None]]] = {}
        legacy_stop = asyncio.Event()
        legacy: asyncio.Task[None] | None = None
        try:
            js = nc.jetstream()
            await ensure_stream(js, self.stream, self.subject_prefix)
            await _retire_shared_consumer(js, self.stream, self.subject_prefix)
            self.partitions = await agreed_partitions(js, self.stream, self.partitions)
            self.leases = held = Leases(
                await leases(js, self.stream, self.lease_ttl_s), self.partitions, self.worker_id
            )
            legacy = asyncio.create_task(
                self._consume(js, f"{self.subject_prefix}.*", LEGACY_DURABLE, legacy_stop)
            )
            while not self._stopping.is_set():
                try:
                    await self._balance(js, held, consumers)
                except Exception as exc:  # noqa: BLE001 - NATS away: keep what we hold, retry
                    log.warning("nats_lease_round_failed", error=str(exc).splitlines()[0])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=self.lease_ttl_s / 3)
        finally:
            # Finish the fetches in hand, then hand the partitions over at once.
            legacy_stop.set()
            for stop, _task in consumers.values():
                stop.set()
            tasks = [task for _stop, task in consumers.values()] + ([legacy] if legacy else [])
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.leases is not None:
                with contextlib.suppress(Exception):
                    await self.leases.leave()
            with contextlib.suppress(Exception):
                await nc.close()

    async def _balance(
        self,
        js: Any,
        held: Leases,
        consumers: dict[int, tuple[asyncio.Event, asyncio.Task[None]]],
    ) -> None:
        """One lease round: announce, renew, give up the surplus, claim up to a fair share.

        A round can fail anywhere (NATS slow or away): every partition held without a consumer
        (one claimed by a round that failed before starting it) gets one at the end of each
        round, so no lease is ever held without being read, nor given up without a consumer
        to stop."""
        try:
            await self._rebalance(js, held, consumers)
        finally:
            for partition in list(held.held):
                if partition not in consumers and partition not in self._leaving:
                    self._start_consumer(js, partition, consumers)

    def _start_consumer(
        self,
        js: Any,
        partition: int,
        consumers: dict[int, tuple[asyncio.Event, asyncio.Task[None]]],
    ) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            self._consume(
                js,
                f"{self.subject_prefix}.*.{partition}",
                f"{DURABLE}-p{partition}",
                stop,
                take_over=True,
            )
        )
        consumers[partition] = (stop, task)

    async def _rebalance(
        self,
        js: Any,
        held: Leases,
        consumers: dict[int, tuple[asyncio.Event, asyncio.Task[None]]],
    ) -> None:
        await held.announce()
        changed = False
        for partition in await held.renew():
            log.warning("nats_partition_lost", partition=partition, worker=self.worker_id)
            lost = consumers.pop(partition, None)
            if lost is not None:
                lost[1].cancel()  # its unacknowledged messages go to the next holder
            changed = True
        want = held.fair_share(await held.members())
        for partition in held.surplus(want, self._leaving):
            entry = consumers.pop(partition, None)
            if entry is None:  # held, never read: nothing to hand over
                await held.release(partition)
                changed = True
                continue
            # Handed over once its fetch in hand is persisted and acknowledged; its lease is
            # renewed until then, so nobody else reads past it.
            stop, task = entry
            stop.set()
            self._leaving.add(partition)
            asyncio.create_task(self._hand_over(held, partition, task))
            changed = True
        if changed and self.on_rebalance is not None:
            self.on_rebalance()
        if self._leaving:
            return  # settle the handovers before claiming more
        for partition in await held.claim(want):
            self._start_consumer(js, partition, consumers)
        for partition, (_stop, task) in list(consumers.items()):
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("nats_partition_consumer_failed", partition=partition,
                          error=str(task.exception()))  # fmt: skip
                consumers.pop(partition)
                await held.release(partition)  # someone (maybe us, next round) starts again

    async def _hand_over(self, held: Leases, partition: int, task: asyncio.Task[None]) -> None:
        try:
            await asyncio.gather(task, return_exceptions=True)
            await held.release(partition)
        finally:
            self._leaving.discard(partition)

    async def _consume(
        self, js: Any, subject: str, durable: str, stop: asyncio.Event, *, take_over: bool = False
    ) -> None:
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js import api

        sub = await js.pull_subscribe(
            subject,
            durable=durable,
            stream=self.stream,
            config=api.ConsumerConfig(ack_wait=self.ack_wait_s, max_ack_pending=10_000),
        )
        try:
            if take_over:
                await self._await_redeliveries(sub, stop, durable)
            pause = 0.0
            while not (stop.is_set() or self._stopping.is_set()):
                if pause:
                    # The last persist failed (the database is down?): wait before fetching
                    # more, rather than cycling through the whole backlog failing and nak'ing.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=pause)
                try:
                    messages = await sub.fetch(self.fetch_batch, timeout=1)
                except (NatsTimeout, TimeoutError):  # nothing waiting: nats-py raises either
                    continue
                pause = 0.0 if await self.handle(messages) else min(max(pause * 2, 0.5), 5.0)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _await_redeliveries(self, sub: Any, stop: asyncio.Event, durable: str) -> None:
        """A partition taken over from a worker that died holding messages: they come back
        after the ack wait, and before anything newer; fetching earlier would read past them."""
        info = await sub.consumer_info()
        if not info.num_ack_pending:
            return
        log.info(
            "nats_partition_waits_for_redeliveries",
            consumer=durable,
            messages=info.num_ack_pending,
            wait_s=self.ack_wait_s,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=self.ack_wait_s)

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


async def _retire_shared_consumer(js: Any, stream: str, subject_prefix: str) -> None:
    """Before partitions, all workers shared one consumer of ``<prefix>.>``; on a work-queue
    stream it would overlap the partition consumers. Its unacknowledged messages stay in the
    stream and go to the consumers that match their subjects."""
    from nats.js.errors import NotFoundError

    try:
        info = await js.consumer_info(stream, DURABLE)
    except NotFoundError:
        return
    if info.config.filter_subject == f"{subject_prefix}.>":
        log.info("nats_shared_consumer_retired", consumer=DURABLE)
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(stream, DURABLE)
