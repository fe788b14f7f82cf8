from __future__ import annotations

from fastapi import APIRouter

from foresight.tenants import service
from foresight.tenants.schemas import TenantRead, TenantUpdate
from foresight.web.deps import Reader, SessionDep, SettingsAdmin

router = APIRouter(tags=["tenant"])


@router.get("/tenant", response_model=TenantRead)
def get_current_tenant(principal: Reader, session: SessionDep) -> TenantRead:
    """The caller's own tenant (the only one a caller can ever see)."""
    return TenantRead.model_validate(service.get(session, principal.tenant_id))


@router.patch("/tenant", response_model=TenantRead)
def update_current_tenant(
    body: TenantUpdate, principal: SettingsAdmin, session: SessionDep
) -> TenantRead:
    tenant = service.update(
        session, tenant_id=principal.tenant_id, data=body, actor=principal.actor
    )
    return TenantRead.model_validate(tenant)
