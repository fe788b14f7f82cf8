"""Maintenance records: business rules, audit, tenant isolation. Services never commit.

The rules a record obeys (and how its default status is chosen) are in ``schemas``' docstring.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from foresight.assets import service as assets_service
from foresight.audit import service as audit_service
from foresight.auth.schemas import Principal
from foresight.kit.errors import FieldError, InvalidInput, NotFound
from foresight.kit.pagination import decode_cursor, encode_cursor
from foresight.kit.time import as_utc, utcnow
from foresight.maintenance import repository
from foresight.maintenance.schemas import (
    MaintenanceCreate,
    MaintenancePage,
    MaintenanceRead,
    MaintenanceUpdate,
    UpcomingMaintenance,
    UpcomingPage,
)
from foresight.models import ActorType, MaintenanceKind, MaintenanceRecord, MaintenanceStatus

OBJECT_TYPE = "maintenance_record"
FAILURE_MODE_KINDS = frozenset({MaintenanceKind.failure, MaintenanceKind.corrective})

# The fields a client sets; they make up the audit snapshot (with asset_id).
_FIELDS = (
    "kind",
    "status",
    "title",
    "scheduled_for",
    "started_at",
    "ended_at",
    "failure_mode",
    "cost",
    "downtime_hours",
    "notes",
)


# --- rules ----------------------------------------------------------------------------------


def default_status(*, started_at: datetime | None, ended_at: datetime | None) -> MaintenanceStatus:
    """Scheduled if no work is recorded yet, completed if it ended, else in progress."""
    if started_at is None and ended_at is None:
        return MaintenanceStatus.scheduled
    if ended_at is not None:
        return MaintenanceStatus.completed
    return MaintenanceStatus.in_progress


def _validate(values: dict[str, Any]) -> None:
    """Raise ``InvalidInput`` naming every field that breaks a rule of the (merged) record."""
    problems: dict[str, tuple[str, str]] = {}  # field -> (message, type); the first one wins

    def problem(name: str, msg: str, type_: str) -> None:
        problems.setdefault(name, (msg, type_))

    kind: MaintenanceKind = values["kind"]
    status: MaintenanceStatus = values["status"]
    scheduled_for: datetime | None = values["scheduled_for"]
    started_at: datetime | None = values["started_at"]
    ended_at: datetime | None = values["ended_at"]

    if kind is MaintenanceKind.failure and started_at is None:
        problem("started_at", "a failure record needs started_at (when it occurred)", "missing")
    if status is MaintenanceStatus.scheduled and scheduled_for is None:
        problem("scheduled_for", "a scheduled record needs scheduled_for", "missing")
    if status is MaintenanceStatus.in_progress and started_at is None:
        problem("started_at", "an in-progress record needs started_at", "missing")
    if scheduled_for is None and started_at is None:
        msg = "a record needs scheduled_for or started_at"
        problem("scheduled_for", msg, "missing")
        problem("started_at", msg, "missing")
    if ended_at is not None and started_at is not None and ended_at < started_at:
        problem("ended_at", "must not be before started_at", "ended_before_started")
    if values["failure_mode"] is not None and kind not in FAILURE_MODE_KINDS:
        problem(
            "failure_mode",
            "only failure and corrective records have a failure mode",
            "failure_mode_not_allowed",
        )
    if problems:
        raise InvalidInput(
            f"The maintenance record is not valid ({', '.join(problems)}).",
            errors=[FieldError(["body", name], msg, t) for name, (msg, t) in problems.items()],
        )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _snapshot(record: MaintenanceRecord) -> dict[str, Any]:
    """A JSON-able picture of the record, for the audit trail."""
    return {
        "asset_id": str(record.asset_id),
        "kind": str(record.kind),
        "status": str(record.status),
        "title": record.title,
        "scheduled_for": _iso(record.scheduled_for),
        "started_at": _iso(record.started_at),
        "ended_at": _iso(record.ended_at),
        "failure_mode": record.failure_mode,
        "cost": record.cost,
        "downtime_hours": record.downtime_hours,
        "notes": record.notes,
    }


def _values(record: MaintenanceRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in _FIELDS}


# --- reads ----------------------------------------------------------------------------------


def get_record(
    session: Session, *, tenant_id: uuid.UUID, record_id: uuid.UUID
) -> MaintenanceRecord:
    """The tenant's record, or ``NotFound`` (also for another tenant's record)."""
    record = repository.get_record(session, tenant_id=tenant_id, record_id=record_id)
    if record is None:
        raise NotFound(f"Maintenance record {record_id} not found.")
    return record


def _decode_keyset(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not cursor:
        return None
    at, record_id = decode_cursor(cursor, length=2)
    try:
        return as_utc(datetime.fromisoformat(str(at))), uuid.UUID(str(record_id))
    except (ValueError, OverflowError) as exc:
        raise InvalidInput(
            "The pagination cursor is malformed; pass back the next_cursor of a previous page.",
            errors=[FieldError(["query", "cursor"], "malformed cursor", "cursor_invalid")],
        ) from exc


def _encode_keyset(at: datetime, record_id: uuid.UUID) -> str:
    return encode_cursor([as_utc(at).isoformat(), str(record_id)])


def _effective_at(record: MaintenanceRecord) -> datetime:
    # Mirrors repository.effective_at; a valid record always has one of the two.
    at = record.started_at or record.scheduled_for
    assert at is not None
    return at


def find_by_natural_key(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    asset_id: uuid.UUID,
    kind: MaintenanceKind,
    started_at: datetime,
) -> MaintenanceRecord | None:
    """The tenant's record of ``asset_id`` with this kind and start time, if there is one.

    (asset, kind, started_at) is the natural key file imports use to skip what they imported.
    """
    return repository.find_by_natural_key(
        session, tenant_id=tenant_id, asset_id=asset_id, kind=kind, started_at=started_at
    )


def list_records(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    asset_id: uuid.UUID | None = None,
    kind: MaintenanceKind | None = None,
    status: MaintenanceStatus | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> MaintenancePage:
    """Newest first by when the work happened (``started_at``, else ``scheduled_for``).

    ``since`` (inclusive) and ``until`` (exclusive) bound that same time.
    """
    rows = repository.list_records(
        session,
        tenant_id=tenant_id,
        asset_id=asset_id,
        kind=kind,
        status=status,
        since=since,
        until=until,
        after=_decode_keyset(cursor),
        limit=limit + 1,
    )
    items = [MaintenanceRead.model_validate(r) for r in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    next_cursor = _encode_keyset(_effective_at(last), last.id) if last else None
    return MaintenancePage(items=items, next_cursor=next_cursor)


def list_asset_records(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    asset_id: uuid.UUID,
    kind: MaintenanceKind | None = None,
    status: MaintenanceStatus | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> MaintenancePage:
    """One asset's history; ``NotFound`` if the asset is not the tenant's."""
    assets_service.get_asset(session, tenant_id=tenant_id, asset_id=asset_id)
    return list_records(
        session,
        tenant_id=tenant_id,
        asset_id=asset_id,
        kind=kind,
        status=status,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )


def list_upcoming(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    days: int = 30,
    cursor: str | None = None,
    limit: int = 50,
    now: datetime | None = None,
) -> UpcomingPage:
    """Scheduled records due within ``days`` and overdue ones, soonest first."""
    now = now or utcnow()
    rows = repository.list_scheduled_until(
        session,
        tenant_id=tenant_id,
        horizon=now + timedelta(days=days),
        after=_decode_keyset(cursor),
        limit=limit + 1,
    )
    items = [
        UpcomingMaintenance(
            **MaintenanceRead.model_validate(record).model_dump(),
            asset_tag=tag,
            asset_name=name,
            overdue=record.scheduled_for is not None and record.scheduled_for < now,
        )
        for record, tag, name in rows[:limit]
    ]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1][0]
        assert last.scheduled_for is not None
        next_cursor = _encode_keyset(last.scheduled_for, last.id)
    return UpcomingPage(items=items, next_cursor=next_cursor)


# --- writes ---------------------------------------------------------------------------------


def create_record(
    session: Session, *, principal: Principal, asset_id: uuid.UUID, data: MaintenanceCreate
) -> MaintenanceRecord:
    assets_service.get_asset(session, tenant_id=principal.tenant_id, asset_id=asset_id)
    values = data.model_dump()
    if values["status"] is None:
        values["status"] = default_status(started_at=data.started_at, ended_at=data.ended_at)
    _validate(values)
    record = MaintenanceRecord(
        tenant_id=principal.tenant_id,
        asset_id=asset_id,
        created_by_id=principal.id if principal.kind is ActorType.user else None,
        **values,
    )
    repository.add(session, record)
    audit_service.record(
        session,
        actor=principal.actor,
        action="maintenance.create",
        object_type=OBJECT_TYPE,
        object_id=record.id,
        changes=_snapshot(record),
    )
    return record


def update_record(
    session: Session, *, principal: Principal, record_id: uuid.UUID, data: MaintenanceUpdate
) -> MaintenanceRecord:
    """Apply the fields sent, then check the merged record against every rule.

    Moving to ``in_progress`` stamps ``started_at`` with now if it is unset; moving to
    ``completed`` stamps ``ended_at`` with now if it is unset (and that keeps it valid).
    """
    record = get_record(session, tenant_id=principal.tenant_id, record_id=record_id)
    before = _snapshot(record)
    values = _values(record)
    values.update(data.model_dump(exclude_unset=True))
    if values["status"] is not record.status:
        now = utcnow()
        if values["status"] is MaintenanceStatus.in_progress and values["started_at"] is None:
            values["started_at"] = now
        if (
            values["status"] is MaintenanceStatus.completed
            and values["ended_at"] is None
            and (values["started_at"] is None or values["started_at"] <= now)
        ):
            values["ended_at"] = now
    _validate(values)
    for name, value in values.items():
        setattr(record, name, value)
    session.flush()
    after = _snapshot(record)
    if after != before:
        audit_service.record(
            session,
            actor=principal.actor,
            action="maintenance.update",
            object_type=OBJECT_TYPE,
            object_id=record.id,
            changes=audit_service.diff(before, after),
        )
    return record


def delete_record(session: Session, *, principal: Principal, record_id: uuid.UUID) -> None:
    record = get_record(session, tenant_id=principal.tenant_id, record_id=record_id)
    snapshot = _snapshot(record)
    repository.delete(session, record)
    audit_service.record(
        session,
        actor=principal.actor,
        action="maintenance.delete",
        object_type=OBJECT_TYPE,
        object_id=record_id,
        changes=snapshot,
    )
