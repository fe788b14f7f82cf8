"""Concurrent appends to one chain keep it gap-free and verifiable on both backends."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from foresight.audit import service as audit_service
from foresight.audit.schemas import Actor
from foresight.kit.db import Database
from foresight.models import AuditChainHead, AuditEntry
from tests.factories import Factory

THREADS = 8
PER_THREAD = 5


@pytest.mark.parametrize("chain_exists", [True, False], ids=["existing-chain", "new-chain"])
def test_concurrent_appends_keep_the_chain_intact(
    factory: Factory, db: Database, chain_exists: bool
) -> None:
    # A new chain also races on creating its head row.
    tenant_id = factory.tenant().id if chain_exists else uuid.uuid4()
    with db.transaction(write=False) as session:
        initial = len(
            session.scalars(select(AuditEntry.id).where(AuditEntry.tenant_id == tenant_id)).all()
        )
    start = threading.Barrier(THREADS, timeout=60)

    def append(worker: int) -> list[int]:
        start.wait()  # release every thread at once
        seqs = []
        for i in range(PER_THREAD):
            with db.transaction() as session:
                entry = audit_service.record(
                    session,
                    actor=Actor.system(f"worker-{worker}", tenant_id),
                    action="test.concurrent",
                    object_type="probe",
                    object_id=f"{worker}-{i}",
                    changes={"worker": worker, "i": i},
                )
                seqs.append(entry.seq)
        return seqs

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = list(pool.map(append, range(THREADS), timeout=120))

    total = initial + THREADS * PER_THREAD
    handed_out = sorted(seq for seqs in results for seq in seqs)
    assert handed_out == list(range(initial + 1, total + 1))
    with db.transaction(write=False) as session:
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.chain == str(tenant_id)).order_by(AuditEntry.seq)
        ).all()
        assert [r.seq for r in rows] == list(range(1, total + 1))
        assert {r.object_id for r in rows if r.action == "test.concurrent"} == {
            f"{w}-{i}" for w in range(THREADS) for i in range(PER_THREAD)
        }
        head = session.get(AuditChainHead, str(tenant_id))
        assert head is not None and (head.last_seq, head.last_hash) == (total, rows[-1].hash)
        report = audit_service.verify(session, tenant_id=tenant_id)
    assert report.ok, report.problems
    assert (report.chains_checked, report.entries_checked) == (1, total)
