"""Queries for channels, the outbox and the delivery log. Tenant-facing ones take ``tenant_id``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, exists, select, update
from sqlalchemy.orm import Session

from foresight.models import (
    Asset,
    DeliveryStatus,
    NotificationAttempt,
    NotificationChannel,
    NotificationOutbox,
)

# --- channels -------------------------------------------------------------------------------


def get_channel(
    session: Session, *, tenant_id: uuid.UUID, channel_id: uuid.UUID
) -> NotificationChannel | None:
    stmt = select(NotificationChannel).where(
        NotificationChannel.id == channel_id, NotificationChannel.tenant_id == tenant_id
    )
    return session.scalars(stmt).one_or_none()


def find_channel_by_name(
    session: Session, *, tenant_id: uuid.UUID, name: str
) -> NotificationChannel | None:
    stmt = select(NotificationChannel).where(
        NotificationChannel.tenant_id == tenant_id, NotificationChannel.name == name
    )
    return session.scalars(stmt).one_or_none()


def list_channels(
    session: Session, *, tenant_id: uuid.UUID, after: tuple[str, uuid.UUID] | None, limit: int
) -> list[NotificationChannel]:
    stmt = select(NotificationChannel).where(NotificationChannel.tenant_id == tenant_id)
    if after is not None:
        name, channel_id = after
        stmt = stmt.where(
            (NotificationChannel.name > name)
            | ((NotificationChannel.name == name) & (NotificationChannel.id > channel_id))
        )
    stmt = stmt.order_by(NotificationChannel.name, NotificationChannel.id).limit(limit)
    return list(session.scalars(stmt))


def enabled_channels(session: Session, *, tenant_id: uuid.UUID) -> list[NotificationChannel]:
    stmt = select(NotificationChannel).where(
        NotificationChannel.tenant_id == tenant_id, NotificationChannel.enabled.is_(True)
    )
    return list(session.scalars(stmt))


def existing_asset_ids(
    session: Session, *, tenant_id: uuid.UUID, asset_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    if not asset_ids:
        return set()
    stmt = select(Asset.id).where(Asset.tenant_id == tenant_id, Asset.id.in_(list(asset_ids)))
    return set(session.scalars(stmt))


def add(session: Session, obj: object) -> None:
    session.add(obj)
    session.flush()


def delete(session: Session, obj: object) -> None:
    session.delete(obj)
    session.flush()


def release_held(session: Session, *, channel_id: uuid.UUID, now: datetime) -> None:
    """Make deliveries held for quiet hours or the rate limit due now (the rules changed)."""
    session.execute(
        update(NotificationOutbox)
        .where(
            NotificationOutbox.channel_id == channel_id,
            NotificationOutbox.status == DeliveryStatus.pending,
            NotificationOutbox.deferred_reason.is_not(None),
        )
        .values(next_attempt_at=now, deferred_reason=None)
    )


# --- the dispatcher's queries (every tenant) ------------------------------------------------


def _due(now: datetime) -> list[ColumnElement[bool]]:
    return [
        NotificationOutbox.status == DeliveryStatus.pending,
        NotificationOutbox.next_attempt_at <= now,
        NotificationOutbox.claimed_until.is_(None) | (NotificationOutbox.claimed_until <= now),
        NotificationChannel.enabled.is_(True),
    ]


def any_due(session: Session, *, now: datetime) -> bool:
    stmt = select(
        exists().where(*_due(now)).where(NotificationChannel.id == NotificationOutbox.channel_id)
    )
    return bool(session.scalar(stmt))


def claim_due(session: Session, *, now: datetime, limit: int) -> list[NotificationOutbox]:
    """Due entries of enabled channels, oldest first, locked. On PostgreSQL ``SKIP LOCKED``
    lets several dispatchers claim disjoint batches; SQLite has one writer at a time."""
    stmt = (
        select(NotificationOutbox)
        .join(NotificationChannel, NotificationChannel.id == NotificationOutbox.channel_id)
        .where(*_due(now))
        .order_by(NotificationOutbox.next_attempt_at, NotificationOutbox.created_at)
        .limit(limit)
        .with_for_update(of=NotificationOutbox, skip_locked=True)
    )
    return list(session.scalars(stmt))


def lock_channels(
    session: Session, channel_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, NotificationChannel]:
    """Lock channels (id order, so claimers never deadlock) for a consistent rate-limit count.
    ``FOR NO KEY UPDATE`` does not block the foreign-key checks of new outbox rows."""
    stmt = (
        select(NotificationChannel)
        .where(NotificationChannel.id.in_(list(channel_ids)))
        .order_by(NotificationChannel.id)
        .with_for_update(key_share=True)  # FOR NO KEY UPDATE on PostgreSQL
    )
    return {channel.id: channel for channel in session.scalars(stmt)}


def attempt_starts(session: Session, *, channel_id: uuid.UUID, since: datetime) -> list[datetime]:
    """Start times of the channel's attempts after ``since`` (in-flight ones included), oldest
    first: what its rate limit counts."""
    stmt = (
        select(NotificationAttempt.started_at)
        .where(NotificationAttempt.channel_id == channel_id, NotificationAttempt.started_at > since)
        .order_by(NotificationAttempt.started_at)
    )
    return list(session.scalars(stmt))


def get_attempt(session: Session, attempt_id: uuid.UUID) -> NotificationAttempt | None:
    return session.get(NotificationAttempt, attempt_id)


def lock_claimed(
    session: Session, *, outbox_id: uuid.UUID, claim_token: uuid.UUID
) -> NotificationOutbox | None:
    """The entry if ``claim_token`` still holds its lease (else another dispatcher took over)."""
    stmt = (
        select(NotificationOutbox)
        .where(NotificationOutbox.id == outbox_id, NotificationOutbox.claim_token == claim_token)
        .with_for_update()
    )
    return session.scalars(stmt).one_or_none()


# --- delivery log ---------------------------------------------------------------------------


def list_deliveries(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    channel_id: uuid.UUID,
    status: DeliveryStatus | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[NotificationOutbox]:
    """Newest first by (created_at, id)."""
    stmt = select(NotificationOutbox).where(
        NotificationOutbox.tenant_id == tenant_id, NotificationOutbox.channel_id == channel_id
    )
    if status is not None:
        stmt = stmt.where(NotificationOutbox.status == status)
    if after is not None:
        at, outbox_id = after
        stmt = stmt.where(
            (NotificationOutbox.created_at < at)
            | ((NotificationOutbox.created_at == at) & (NotificationOutbox.id < outbox_id))
        )
    stmt = stmt.order_by(NotificationOutbox.created_at.desc(), NotificationOutbox.id.desc())
    return list(session.scalars(stmt.limit(limit)))


def attempts_of(
    session: Session, outbox_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[NotificationAttempt]]:
    result: dict[uuid.UUID, list[NotificationAttempt]] = {i: [] for i in outbox_ids}
    if not outbox_ids:
        return result
    stmt = (
        select(NotificationAttempt)
        .where(NotificationAttempt.outbox_id.in_(list(outbox_ids)))
        .order_by(NotificationAttempt.outbox_id, NotificationAttempt.attempt)
    )
    for attempt in session.scalars(stmt):
        result[attempt.outbox_id].append(attempt)
    return result
