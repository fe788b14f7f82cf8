from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from foresight.models import ApiKey, Role, User


def get_user(session: Session, *, tenant_id: uuid.UUID, user_id: uuid.UUID) -> User | None:
    stmt = select(User).where(User.id == user_id, User.tenant_id == tenant_id)
    return session.scalars(stmt).one_or_none()


def get_user_by_email(session: Session, email: str) -> User | None:
    return session.scalars(select(User).where(User.email == email.lower())).one_or_none()


def list_users(
    session: Session, *, tenant_id: uuid.UUID, after_email: str | None, limit: int
) -> list[User]:
    stmt = select(User).where(User.tenant_id == tenant_id)
    if after_email is not None:
        stmt = stmt.where(User.email > after_email)
    return list(session.scalars(stmt.order_by(User.email).limit(limit)))


def count_active_admins(session: Session, *, tenant_id: uuid.UUID) -> int:
    # Locking the rows (PostgreSQL; SQLite writers are serialised anyway) stops two admins who
    # demote each other concurrently from both seeing two admins and leaving the tenant with none.
    stmt = (
        select(User.id)
        .where(User.tenant_id == tenant_id, User.role == Role.admin, User.is_active.is_(True))
        .with_for_update()
    )
    return len(session.scalars(stmt).all())


def add(session: Session, obj: User | ApiKey) -> None:
    session.add(obj)
    session.flush()


def get_api_key(session: Session, *, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey | None:
    stmt = select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id)
    return session.scalars(stmt).one_or_none()


def get_api_key_by_prefix(session: Session, prefix: str) -> ApiKey | None:
    return session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one_or_none()


def list_api_keys(
    session: Session, *, tenant_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[ApiKey]:
    stmt = select(ApiKey).where(ApiKey.tenant_id == tenant_id)
    if after is not None:
        created, key_id = after
        stmt = stmt.where(
            (ApiKey.created_at < created) | ((ApiKey.created_at == created) & (ApiKey.id < key_id))
        )
    stmt = stmt.order_by(ApiKey.created_at.desc(), ApiKey.id.desc()).limit(limit)
    return list(session.scalars(stmt))


def touch_api_key(session: Session, *, key_id: uuid.UUID, now: datetime) -> None:
    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))
