from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from foresight.models import AuditChainHead, AuditEntry


def lock_head(session: Session, chain: str) -> AuditChainHead | None:
    # FOR UPDATE serialises appends per chain on PostgreSQL; SQLite writers already hold the lock.
    stmt = select(AuditChainHead).where(AuditChainHead.chain == chain).with_for_update()
    return session.scalars(stmt).one_or_none()


def add_entry(session: Session, entry: AuditEntry, head: AuditChainHead | None) -> None:
    session.add(entry)
    if head is None:
        session.add(AuditChainHead(chain=entry.chain, last_seq=entry.seq, last_hash=entry.hash))
    else:
        session.execute(
            update(AuditChainHead)
            .where(AuditChainHead.chain == entry.chain)
            .values(last_seq=entry.seq, last_hash=entry.hash)
        )
    session.flush()


def chains(session: Session, chain: str | None = None) -> list[AuditChainHead]:
    stmt = select(AuditChainHead).order_by(AuditChainHead.chain)
    if chain is not None:
        stmt = stmt.where(AuditChainHead.chain == chain)
    return list(session.scalars(stmt))


def orphan_chains(session: Session) -> list[str]:
    """Chains that have entries but no head row (a head row was deleted)."""
    stmt = (
        select(AuditEntry.chain)
        .distinct()
        .where(AuditEntry.chain.not_in(select(AuditChainHead.chain)))
    )
    return list(session.scalars(stmt))


def iter_chain(session: Session, chain: str, batch: int = 1000) -> Iterator[AuditEntry]:
    last = -1
    while True:
        rows = list(
            session.scalars(
                select(AuditEntry)
                .where(AuditEntry.chain == chain, AuditEntry.seq > last)
                .order_by(AuditEntry.seq)
                .limit(batch)
            )
        )
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        session.expunge_all()


def list_entries(
    session: Session,
    *,
    chain: str,
    action: str | None,
    object_type: str | None,
    object_id: str | None,
    since: datetime | None,
    until: datetime | None,
    before_seq: int | None,
    limit: int,
) -> list[AuditEntry]:
    stmt: Select[AuditEntry] = select(AuditEntry).where(AuditEntry.chain == chain)
    if action:
        stmt = stmt.where(AuditEntry.action == action)
    if object_type:
        stmt = stmt.where(AuditEntry.object_type == object_type)
    if object_id:
        stmt = stmt.where(AuditEntry.object_id == object_id)
    if since:
        stmt = stmt.where(AuditEntry.occurred_at >= since)
    if until:
        stmt = stmt.where(AuditEntry.occurred_at < until)
    if before_seq is not None:
        stmt = stmt.where(AuditEntry.seq < before_seq)
    return list(session.scalars(stmt.order_by(AuditEntry.seq.desc()).limit(limit)))


def chain_for(tenant_id: uuid.UUID | None) -> str:
    return str(tenant_id) if tenant_id is not None else "system"
