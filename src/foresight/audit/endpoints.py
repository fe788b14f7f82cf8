from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from foresight.audit import service
from foresight.audit.schemas import AuditPage, VerifyReport
from foresight.kit.schemas import CleanStr, UtcDatetime
from foresight.web.deps import AuditReader, SessionDep

router = APIRouter(tags=["audit"])


@router.get("/audit", response_model=AuditPage)
def list_audit_entries(
    principal: AuditReader,
    session: SessionDep,
    action: Annotated[CleanStr | None, Query(max_length=64)] = None,
    object_type: Annotated[CleanStr | None, Query(max_length=64)] = None,
    object_id: Annotated[CleanStr | None, Query(max_length=64)] = None,
    since: UtcDatetime | None = None,
    until: UtcDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[CleanStr | None, Query(max_length=512)] = None,
) -> AuditPage:
    """The caller's tenant's audit trail, newest first."""
    return service.list_entries(
        session,
        tenant_id=principal.tenant_id,
        action=action,
        object_type=object_type,
        object_id=object_id,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )


@router.get("/audit/verify", response_model=VerifyReport)
def verify_audit_chain(principal: AuditReader, session: SessionDep) -> VerifyReport:
    """Re-hash the caller's tenant's chain; names the first edited, inserted or deleted entry."""
    return service.verify(session, tenant_id=principal.tenant_id)
