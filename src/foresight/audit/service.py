"""Append to and verify the hash-chained audit log.

Each tenant has its own chain (actions outside any tenant go to the ``system`` chain). An entry's
hash covers its content and the previous entry's hash; the chain head row, updated in the same
transaction, pins the tail so a deleted last entry shows too.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from foresight.audit import repository
from foresight.audit.schemas import Actor, AuditEntryRead, AuditPage, ChainProblem, VerifyReport
from foresight.kit.context import request_id_var
from foresight.kit.errors import FieldError, InvalidInput
from foresight.kit.pagination import decode_cursor, encode_cursor
from foresight.kit.time import as_utc, utcnow
from foresight.models import AuditChainHead, AuditEntry

GENESIS_HASH = "0" * 64


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _timestamp(value: datetime) -> str:
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def compute_hash(entry: AuditEntry) -> str:
    content = {
        "chain": entry.chain,
        "seq": entry.seq,
        "occurred_at": _timestamp(entry.occurred_at),
        "tenant_id": str(entry.tenant_id) if entry.tenant_id else None,
        "actor_type": str(entry.actor_type),
        "actor_id": entry.actor_id,
        "actor_label": entry.actor_label,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "changes": entry.changes,
        "request_id": entry.request_id,
        "prev_hash": entry.prev_hash,
    }
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()


def _ensure_head(session: Session, chain: str) -> None:
    dialect = session.get_bind().dialect.name
    values = {"chain": chain, "last_seq": 0, "last_hash": GENESIS_HASH}
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(AuditChainHead).values(values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(AuditChainHead).values(values).on_conflict_do_nothing()
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        stmt = insert(AuditChainHead).values(values)
    session.execute(stmt)


def record(
    session: Session,
    *,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: uuid.UUID | str | None = None,
    changes: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry in the caller's transaction: it commits or rolls back with the change."""
    chain = repository.chain_for(actor.tenant_id)
    _ensure_head(session, chain)
    head = repository.lock_head(session, chain)
    assert head is not None
    entry = AuditEntry(
        chain=chain,
        seq=head.last_seq + 1,
        occurred_at=utcnow(),
        tenant_id=actor.tenant_id,
        actor_type=actor.type,
        actor_id=actor.id,
        actor_label=actor.label[:320],
        action=action,
        object_type=object_type,
        object_id=str(object_id) if object_id is not None else None,
        changes=canonical_json(changes or {}),
        request_id=request_id_var.get(),
        prev_hash=head.last_hash,
    )
    entry.hash = compute_hash(entry)
    repository.add_entry(session, entry, head)
    return entry


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """``{field: [old, new]}`` for the fields that changed."""
    return {
        key: [before.get(key), after.get(key)]
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    }


def verify(session: Session, *, tenant_id: uuid.UUID | None = None) -> VerifyReport:
    """Walk every chain (or only ``tenant_id``'s) and report the first bad entry of each."""
    chain_filter = None if tenant_id is None else repository.chain_for(tenant_id)
    heads = [(h.chain, h.last_seq, h.last_hash) for h in repository.chains(session, chain_filter)]
    # A chain whose head row was deleted is still walked: losing the head must not hide edits.
    orphans = [
        (chain, None, None)
        for chain in repository.orphan_chains(session)
        if chain_filter is None or chain == chain_filter
    ]
    problems: list[ChainProblem] = []
    checked = 0
    for chain, head_seq, head_hash in [*heads, *orphans]:
        count, problem = _verify_chain(session, chain, head_seq, head_hash)
        checked += count
        if problem:
            problems.append(problem)
    return VerifyReport(
        ok=not problems,
        chains_checked=len(heads) + len(orphans),
        entries_checked=checked,
        problems=problems,
    )


def _verify_chain(
    session: Session, chain: str, head_seq: int | None, head_hash: str | None
) -> tuple[int, ChainProblem | None]:
    """``head_seq``/``head_hash`` are None when the chain's head row is missing."""
    expected_seq, prev_hash, count = 1, GENESIS_HASH, 0
    last_id: int | None = None
    for entry in repository.iter_chain(session, chain):
        count += 1
        if entry.seq != expected_seq:
            # The first bad entry is the missing one: name it, as for a deleted tail.
            return count, ChainProblem(
                chain=chain,
                seq=expected_seq,
                entry_id=None,
                reason=f"sequence gap: entry seq {expected_seq} is missing, the chain continues "
                f"at seq {entry.seq} (an entry was deleted)",
            )
        if entry.prev_hash != prev_hash:
            return count, ChainProblem(
                chain=chain,
                seq=entry.seq,
                entry_id=entry.id,
                reason="prev_hash does not match the previous entry (an entry was inserted, "
                "deleted or edited)",
            )
        if compute_hash(entry) != entry.hash:
            return count, ChainProblem(
                chain=chain,
                seq=entry.seq,
                entry_id=entry.id,
                reason="content does not match its hash (the entry was edited)",
            )
        prev_hash, expected_seq, last_id = entry.hash, expected_seq + 1, entry.id
    last_seq = expected_seq - 1
    if head_seq is None:
        return count, ChainProblem(
            chain=chain,
            seq=None,
            entry_id=None,
            reason=f"chain head row missing (the {last_seq} entries present are consistent, "
            "but deletions from the end can no longer be detected)",
        )
    if last_seq == head_seq and prev_hash != head_hash:
        return count, ChainProblem(
            chain=chain,
            seq=last_seq,
            entry_id=last_id,
            reason="the last entry does not match the hash its chain head records "
            "(it was replaced or edited and re-hashed)",
        )
    if last_seq != head_seq:
        return count, ChainProblem(
            chain=chain,
            seq=min(last_seq, head_seq) + 1,
            entry_id=None,
            reason=f"chain ends at seq {last_seq} but its head records seq {head_seq} "
            "(entries were deleted from the end, or appended outside Foresight)",
        )
    return count, None


def list_entries(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    action: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> AuditPage:
    before_seq = _cursor_seq(cursor) if cursor else None
    rows = repository.list_entries(
        session,
        chain=repository.chain_for(tenant_id),
        action=action,
        object_type=object_type,
        object_id=object_id,
        since=since,
        until=until,
        before_seq=before_seq,
        limit=limit + 1,
    )
    items = [to_read(row) for row in rows[:limit]]
    next_cursor = encode_cursor([rows[limit - 1].seq]) if len(rows) > limit else None
    return AuditPage(items=items, next_cursor=next_cursor)


def _cursor_seq(cursor: str) -> int:
    value = decode_cursor(cursor, length=1)[0]
    # A well-formed cursor that does not hold a sequence number must not surface as a 500.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(
            "The pagination cursor is malformed; pass back the next_cursor of a previous page.",
            errors=[FieldError(["query", "cursor"], "malformed cursor", "cursor_invalid")],
        )
    return value


def to_read(entry: AuditEntry) -> AuditEntryRead:
    data = {c: getattr(entry, c) for c in AuditEntryRead.model_fields if c != "changes"}
    return AuditEntryRead(**data, changes=json.loads(entry.changes))
