"""Queries for assets and sensors; every one is scoped to a tenant."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from foresight.models import Asset


def get_asset(session: Session, *, tenant_id: uuid.UUID, asset_id: uuid.UUID) -> Asset | None:
    stmt = select(Asset).where(Asset.id == asset_id, Asset.tenant_id == tenant_id)
    return session.scalars(stmt).one_or_none()
