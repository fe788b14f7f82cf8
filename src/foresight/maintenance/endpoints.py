from __future__ import annotations

import uuid
from http import HTTPStatus
from typing import Annotated

from fastapi import APIRouter, Query, Response

from foresight.maintenance import service
from foresight.maintenance.schemas import (
    MaintenanceCreate,
    MaintenancePage,
    MaintenanceRead,
    MaintenanceUpdate,
    UpcomingPage,
    UtcDateTime,
)
from foresight.models import MaintenanceKind, MaintenanceStatus
from foresight.web.deps import MaintenanceWriter, Reader, SessionDep

router = APIRouter(tags=["maintenance"])
Limit = Annotated[int, Query(ge=1, le=500, description="Page size")]
Cursor = Annotated[str | None, Query(max_length=512, description="next_cursor of the last page")]
KindFilter = Annotated[MaintenanceKind | None, Query(description="Only records of this kind")]
StatusFilter = Annotated[MaintenanceStatus | None, Query(description="Only records in this status")]
Since = Annotated[
    UtcDateTime | None,
    Query(description="Only records that started (else are scheduled) at or after this time"),
]
Until = Annotated[
    UtcDateTime | None,
    Query(description="Only records that started (else are scheduled) before this time"),
]
Days = Annotated[int, Query(ge=1, le=365, description="Look-ahead window in days")]


@router.get("/assets/{asset_id}/maintenance", response_model=MaintenancePage)
def list_asset_maintenance(
    asset_id: uuid.UUID,
    principal: Reader,
    session: SessionDep,
    kind: KindFilter = None,
    status: StatusFilter = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> MaintenancePage:
    """One asset's maintenance history, newest first (by started_at, else scheduled_for)."""
    return service.list_asset_records(
        session,
        tenant_id=principal.tenant_id,
        asset_id=asset_id,
        kind=kind,
        status=status,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )


@router.post(
    "/assets/{asset_id}/maintenance",
    response_model=MaintenanceRead,
    status_code=HTTPStatus.CREATED,
)
def create_maintenance(
    asset_id: uuid.UUID, body: MaintenanceCreate, principal: MaintenanceWriter, session: SessionDep
) -> MaintenanceRead:
    """Record maintenance work or a failure on an asset (or schedule work)."""
    record = service.create_record(session, principal=principal, asset_id=asset_id, data=body)
    return MaintenanceRead.model_validate(record)


@router.get("/maintenance", response_model=MaintenancePage)
def list_maintenance(
    principal: Reader,
    session: SessionDep,
    asset_id: uuid.UUID | None = None,
    kind: KindFilter = None,
    status: StatusFilter = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> MaintenancePage:
    """The tenant's maintenance records, newest first (by started_at, else scheduled_for)."""
    return service.list_records(
        session,
        tenant_id=principal.tenant_id,
        asset_id=asset_id,
        kind=kind,
        status=status,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )


# Declared before /maintenance/{record_id}, which would otherwise capture "upcoming".
@router.get("/maintenance/upcoming", response_model=UpcomingPage)
def list_upcoming_maintenance(
    principal: Reader,
    session: SessionDep,
    days: Days = 30,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> UpcomingPage:
    """Scheduled work due within `days`, plus overdue work (flagged), soonest first."""
    return service.list_upcoming(
        session, tenant_id=principal.tenant_id, days=days, cursor=cursor, limit=limit
    )


@router.get("/maintenance/{record_id:uuid}", response_model=MaintenanceRead)
def get_maintenance(
    record_id: uuid.UUID, principal: Reader, session: SessionDep
) -> MaintenanceRead:
    record = service.get_record(session, tenant_id=principal.tenant_id, record_id=record_id)
    return MaintenanceRead.model_validate(record)


@router.patch("/maintenance/{record_id:uuid}", response_model=MaintenanceRead)
def update_maintenance(
    record_id: uuid.UUID, body: MaintenanceUpdate, principal: MaintenanceWriter, session: SessionDep
) -> MaintenanceRead:
    """Change some fields; the merged record must still be valid."""
    record = service.update_record(session, principal=principal, record_id=record_id, data=body)
    return MaintenanceRead.model_validate(record)


@router.delete("/maintenance/{record_id:uuid}", status_code=HTTPStatus.NO_CONTENT)
def delete_maintenance(
    record_id: uuid.UUID, principal: MaintenanceWriter, session: SessionDep
) -> Response:
    service.delete_record(session, principal=principal, record_id=record_id)
    return Response(status_code=HTTPStatus.NO_CONTENT)
