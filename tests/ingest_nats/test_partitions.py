"""Asset partitions on the NATS bus: leases shared out fairly, handed over, one asset per worker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from foresight.ingest.batch import Batch
from foresight.ingest.nats_bus import NatsBus, Worker
from foresight.ingest.partitions import partition_of
from foresight.ingest.pipeline import Pipeline
from foresight.kit.db import Database
from foresight.models import Asset
from foresight.timeseries.store import WriteResult
from tests.factories import Factory
from tests.ingest_nats.test_nats_bus import (  # noqa: F401
    NATS_URL,
    T0_S,
    WorkerThread,
    _nats_reachable,
    _wait_for,
    names,
)

PARTITIONS = 8


def until(condition: Callable[[], bool], timeout_s: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.05)


def worker(db: Database, names: tuple[str, str], **kw: object) -> Worker:  # noqa: F811
    stream, prefix = names
    return Worker(
        db, url=NATS_URL, stream=stream, subject_prefix=prefix, partitions=PARTITIONS,
        lease_ttl_s=1.5, ack_wait_s=2, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_split_keeps_each_asset_in_its_partition_in_row_order(db: Database) -> None:
    tenant = uuid.uuid4()
    bus = NatsBus(db, url=NATS_URL, stream="unused", subject_prefix="p", partitions=PARTITIONS)
    batch = Batch(tenant)
    tags = [f"A-{i}" for i in range(20)]
    for row in range(200):
        batch.add(row, tags[row % 20], "t", row, float(row))
    parts = bus.split(batch)
    assert sum(len(part) for _, part in parts) == 200
    for partition, part in parts:
        assert {partition_of(tenant, tag, PARTITIONS) for tag in part.asset} == {partition}
        assert part.row == sorted(part.row) and part.ts_ms == part.row
    assert len(parts) > 1


def test_leases_are_shared_out_and_handed_over(
    db: Database,
    names: tuple[str, str],  # noqa: F811
) -> None:
    a, b = worker(db, names), worker(db, names)
    with WorkerThread(a):
        until(lambda: len(a.held) == PARTITIONS, what="the only worker to hold every partition")
        with WorkerThread(b):
            # A newcomer gets its fair share: A gives up the surplus, B claims it.
            until(
                lambda: len(a.held) == len(b.held) == PARTITIONS // 2,
                what=f"an even split (A {a.held}, B {b.held})",
            )
            assert not set(a.held) & set(b.held)
        # B stopped: it let go of its leases at once, and A takes them back.
        until(lambda: len(a.held) == PARTITIONS, timeout_s=10, what="A to take B's partitions")


def test_a_round_failing_after_its_claims_neither_strands_nor_blocks_them(
    db: Database,
    names: tuple[str, str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NATS slow under load: A's first claim round fails after taking every lease, before any
    consumer started. A still reads them (each held partition gets its consumer) and, when B
    comes, gives up its share instead of failing every round from then on."""
    from foresight.ingest import partitions

    a, b = worker(db, names), worker(db, names)
    original = partitions.Leases.claim
    failed: list[list[int]] = []

    async def claim_then_fail(self: partitions.Leases, want: int) -> list[int]:
        claimed = await original(self, want)
        if claimed and not failed and self.worker_id == a.worker_id:
            failed.append(claimed)
            raise RuntimeError("timeout: the round fails after its claims")
        return claimed

    monkeypatch.setattr(partitions.Leases, "claim", claim_then_fail)
    with WorkerThread(a):
        until(lambda: bool(failed) and len(a.held) == PARTITIONS, what="A to hold every lease")
        assert len(failed[0]) == PARTITIONS
        with WorkerThread(b):
            until(
                lambda: len(a.held) == len(b.held) == PARTITIONS // 2,
                what=f"an even split after the failed round (A {a.held}, B {b.held})",
            )


def test_each_asset_is_persisted_by_one_worker_only(
    db: Database,
    factory: Factory,
    names: tuple[str, str],  # noqa: F811
) -> None:
    stream, prefix = names
    tenant = factory.tenant()
    tags = [f"M-{i}" for i in range(16)]
    with db.transaction() as session:
        for tag in tags:
            session.add(Asset(tenant_id=tenant.id, tag=tag, name=tag))
    seen: dict[str, set[int]] = {"a": set(), "b": set()}

    def recorder(name: str) -> Callable[[WriteResult], None]:
        def observe(write: WriteResult) -> None:
            if write.new is not None:
                seen[name].update(int(s) for s in set(write.new.series_id.tolist()))

        return observe

    a = worker(db, names, pipeline=Pipeline(observers=[recorder("a")]))
    b = worker(db, names, pipeline=Pipeline(observers=[recorder("b")]))
    bus = NatsBus(db, url=NATS_URL, stream=stream, subject_prefix=prefix, partitions=PARTITIONS)
    with WorkerThread(a), WorkerThread(b):
        until(lambda: len(a.held) == len(b.held) == PARTITIONS // 2, what="an even split")
        import asyncio

        async def publish() -> None:
            await bus.start()
            try:
                for step in range(40):
                    batch = Batch(tenant.id, actor_label="test")
                    for i, tag in enumerate(tags):
                        batch.add(i, tag, "temperature", (T0_S + step) * 1000, float(step))
                    await bus.submit(batch)
            finally:
                await bus.stop()

        asyncio.run(publish())
        assert _wait_for(db, 40 * len(tags)) == 40 * len(tags)
    assert seen["a"] and seen["b"], seen  # both worked
    assert not seen["a"] & seen["b"], "a series was persisted by both workers"
