"""Assets and their sensors: business rules, audit, tenant isolation. Services never commit."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from foresight.assets import repository
from foresight.kit.errors import NotFound
from foresight.models import Asset


def get_asset(session: Session, *, tenant_id: uuid.UUID, asset_id: uuid.UUID) -> Asset:
    """The tenant's asset, or ``NotFound`` (also for another tenant's asset)."""
    asset = repository.get_asset(session, tenant_id=tenant_id, asset_id=asset_id)
    if asset is None:
        raise NotFound(f"Asset {asset_id} not found.")
    return asset
