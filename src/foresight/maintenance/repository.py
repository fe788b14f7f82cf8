"""Queries for maintenance records; every one is scoped to a tenant."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from foresight.models import Asset, MaintenanceKind, MaintenanceRecord, MaintenanceStatus

# When the work happened (or is planned to): a record always has one of the two.
effective_at: ColumnElement[datetime] = func.coalesce(
    MaintenanceRecord.started_at, MaintenanceRecord.scheduled_for
)


def get_record(
    session: Session, *, tenant_id: uuid.UUID, record_id: uuid.UUID
) -> MaintenanceRecord | None:
    stmt = select(MaintenanceRecord).where(
        MaintenanceRecord.id == record_id, MaintenanceRecord.tenant_id == tenant_id
    )
    return session.scalars(stmt).one_or_none()


def list_records(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    asset_id: uuid.UUID | None,
    kind: MaintenanceKind | None,
    status: MaintenanceStatus | None,
    since: datetime | None,
    until: datetime | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[MaintenanceRecord]:
    """Newest first by ``coalesce(started_at, scheduled_for)``, then id (the keyset)."""
    stmt = select(MaintenanceRecord).where(MaintenanceRecord.tenant_id == tenant_id)
    if asset_id is not None:
        stmt = stmt.where(MaintenanceRecord.asset_id == asset_id)
    if kind is not None:
        stmt = stmt.where(MaintenanceRecord.kind == kind)
    if status is not None:
        stmt = stmt.where(MaintenanceRecord.status == status)
    if since is not None:
        stmt = stmt.where(effective_at >= since)
    if until is not None:
        stmt = stmt.where(effective_at < until)
    if after is not None:
        at, record_id = after
        stmt = stmt.where(
            (effective_at < at) | ((effective_at == at) & (MaintenanceRecord.id < record_id))
        )
    stmt = stmt.order_by(effective_at.desc(), MaintenanceRecord.id.desc()).limit(limit)
    return list(session.scalars(stmt))


def list_scheduled_until(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    horizon: datetime,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[tuple[MaintenanceRecord, str, str]]:
    """Still-scheduled records due before ``horizon`` (overdue ones too), soonest first,
    each with its asset's tag and name."""
    stmt = (
        select(MaintenanceRecord, Asset.tag, Asset.name)
        .join(Asset, Asset.id == MaintenanceRecord.asset_id)
        .where(
            MaintenanceRecord.tenant_id == tenant_id,
            Asset.tenant_id == tenant_id,
            MaintenanceRecord.status == MaintenanceStatus.scheduled,
            MaintenanceRecord.scheduled_for.is_not(None),
            MaintenanceRecord.scheduled_for <= horizon,
        )
    )
    if after is not None:
        at, record_id = after
        stmt = stmt.where(
            (MaintenanceRecord.scheduled_for > at)
            | ((MaintenanceRecord.scheduled_for == at) & (MaintenanceRecord.id > record_id))
        )
    stmt = stmt.order_by(MaintenanceRecord.scheduled_for, MaintenanceRecord.id).limit(limit)
    return [(record, tag, name) for record, tag, name in session.execute(stmt)]


def add(session: Session, record: MaintenanceRecord) -> MaintenanceRecord:
    session.add(record)
    session.flush()
    return record


def delete(session: Session, record: MaintenanceRecord) -> None:
    session.delete(record)
    session.flush()


def find_by_natural_key(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    asset_id: uuid.UUID,
    kind: MaintenanceKind,
    started_at: datetime,
) -> MaintenanceRecord | None:
    """The record of this asset, kind and start time (what a file import identifies it by)."""
    stmt = (
        select(MaintenanceRecord)
        .where(
            MaintenanceRecord.tenant_id == tenant_id,
            MaintenanceRecord.asset_id == asset_id,
            MaintenanceRecord.started_at == started_at,
            MaintenanceRecord.kind == kind,
        )
        .order_by(MaintenanceRecord.created_at, MaintenanceRecord.id)
        .limit(1)
    )
    return session.scalars(stmt).first()
