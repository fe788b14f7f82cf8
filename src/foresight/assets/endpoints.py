"""Assets (with their site → line → asset hierarchy) and their sensors.

Reading needs any role; writing needs ``assets:write`` (analyst or admin). Device API keys are
refused. Everything is scoped to the caller's tenant.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from foresight.assets import service
from foresight.assets.schemas import (
    AssetCreate,
    AssetFilters,
    AssetPage,
    AssetRead,
    AssetSort,
    AssetUpdate,
    CriticalityIn,
    SensorCreate,
    SensorPage,
    SensorRead,
    SensorUpdate,
    StatusIn,
)
from foresight.kit.schemas import CleanStr
from foresight.web.deps import AssetWriter, Reader, SessionDep

router = APIRouter()

Limit = Annotated[int, Query(ge=1, le=500, description="Page size")]
# Cursors carry the last row's sort key (a name can be 200 escaped characters), hence the room.
Cursor = Annotated[
    str | None, Query(max_length=4096, description="next_cursor of the previous page")
]
Sort = Annotated[
    AssetSort,
    Query(
        description="Sort key, `-` for descending; ties are broken by id. criticality sorts "
        "low < medium < high < critical; assets without health_score sort as -1 (first "
        "ascending, last descending). Keep the same sort while following next_cursor."
    ),
]


@router.get("/assets", response_model=AssetPage, tags=["assets"])
def list_assets(
    principal: Reader,
    session: SessionDep,
    q: Annotated[
        CleanStr | None,
        Query(
            max_length=200,
            description="Case-insensitive substring of tag, name, location or description",
        ),
    ] = None,
    type_: Annotated[
        CleanStr | None,
        Query(alias="type", max_length=64, description="Exact type, case-insensitive"),
    ] = None,
    location: Annotated[
        CleanStr | None, Query(max_length=200, description="Exact location, case-insensitive")
    ] = None,
    status_: Annotated[
        list[StatusIn] | None,
        Query(alias="status", max_length=10, description="Repeat for any of several"),
    ] = None,
    criticality: Annotated[
        list[CriticalityIn] | None,
        Query(max_length=4, description="Repeat for any of several"),
    ] = None,
    parent_id: Annotated[
        uuid.UUID | None, Query(description="Only the direct children of this asset")
    ] = None,
    root: Annotated[
        bool, Query(description="Only top-level assets (no parent); excludes parent_id")
    ] = False,
    sort: Sort = AssetSort.tag,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> AssetPage:
    """The tenant's assets, filtered, sorted and keyset-paginated."""
    filters = AssetFilters(
        q=q or None,
        type=type_,
        location=location,
        statuses=tuple(status_ or ()),
        criticalities=tuple(criticality or ()),
        parent_id=parent_id,
        root=root,
    )
    return service.list_assets(
        session,
        tenant_id=principal.tenant_id,
        filters=filters,
        sort=sort,
        cursor=cursor,
        limit=limit,
    )


@router.post(
    "/assets", response_model=AssetRead, status_code=status.HTTP_201_CREATED, tags=["assets"]
)
def create_asset(body: AssetCreate, principal: AssetWriter, session: SessionDep) -> AssetRead:
    """Create an asset. The FleetVision seed format (``equipment_id`` …) is accepted verbatim."""
    return AssetRead.model_validate(service.create_asset(session, principal=principal, data=body))


@router.get("/assets/{asset_id}", response_model=AssetRead, tags=["assets"])
def get_asset(asset_id: uuid.UUID, principal: Reader, session: SessionDep) -> AssetRead:
    asset = service.get_asset(session, tenant_id=principal.tenant_id, asset_id=asset_id)
    return AssetRead.model_validate(asset)


@router.patch("/assets/{asset_id}", response_model=AssetRead, tags=["assets"])
def update_asset(
    asset_id: uuid.UUID, body: AssetUpdate, principal: AssetWriter, session: SessionDep
) -> AssetRead:
    """Change the fields sent; re-parenting that would form a cycle is refused (422)."""
    asset = service.update_asset(session, principal=principal, asset_id=asset_id, data=body)
    return AssetRead.model_validate(asset)


@router.delete("/assets/{asset_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["assets"])
def delete_asset(asset_id: uuid.UUID, principal: AssetWriter, session: SessionDep) -> Response:
    """Delete an asset with its sensors and maintenance records; 409 while it has children."""
    service.delete_asset(session, principal=principal, asset_id=asset_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/assets/{asset_id}/children", response_model=AssetPage, tags=["assets"])
def list_children(
    asset_id: uuid.UUID,
    principal: Reader,
    session: SessionDep,
    sort: Sort = AssetSort.tag,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> AssetPage:
    """The asset's direct children."""
    return service.list_children(
        session,
        tenant_id=principal.tenant_id,
        asset_id=asset_id,
        sort=sort,
        cursor=cursor,
        limit=limit,
    )


@router.get("/assets/{asset_id}/ancestors", response_model=list[AssetRead], tags=["assets"])
def list_ancestors(asset_id: uuid.UUID, principal: Reader, session: SessionDep) -> list[AssetRead]:
    """The path to the root: the parent first, the root last (empty for a top-level asset)."""
    rows = service.list_ancestors(session, tenant_id=principal.tenant_id, asset_id=asset_id)
    return [AssetRead.model_validate(a) for a in rows]


@router.get("/assets/{asset_id}/sensors", response_model=SensorPage, tags=["sensors"])
def list_sensors(
    asset_id: uuid.UUID,
    principal: Reader,
    session: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> SensorPage:
    """The asset's sensors, by key."""
    return service.list_sensors(
        session, tenant_id=principal.tenant_id, asset_id=asset_id, cursor=cursor, limit=limit
    )


@router.post(
    "/assets/{asset_id}/sensors",
    response_model=SensorRead,
    status_code=status.HTTP_201_CREATED,
    tags=["sensors"],
)
def create_sensor(
    asset_id: uuid.UUID, body: SensorCreate, principal: AssetWriter, session: SessionDep
) -> SensorRead:
    sensor = service.create_sensor(session, principal=principal, asset_id=asset_id, data=body)
    return SensorRead.model_validate(sensor)


@router.get("/assets/{asset_id}/sensors/{sensor_id}", response_model=SensorRead, tags=["sensors"])
def get_sensor(
    asset_id: uuid.UUID, sensor_id: uuid.UUID, principal: Reader, session: SessionDep
) -> SensorRead:
    sensor = service.get_sensor(
        session, tenant_id=principal.tenant_id, asset_id=asset_id, sensor_id=sensor_id
    )
    return SensorRead.model_validate(sensor)


@router.patch("/assets/{asset_id}/sensors/{sensor_id}", response_model=SensorRead, tags=["sensors"])
def update_sensor(
    asset_id: uuid.UUID,
    sensor_id: uuid.UUID,
    body: SensorUpdate,
    principal: AssetWriter,
    session: SessionDep,
) -> SensorRead:
    sensor = service.update_sensor(
        session, principal=principal, asset_id=asset_id, sensor_id=sensor_id, data=body
    )
    return SensorRead.model_validate(sensor)


@router.delete(
    "/assets/{asset_id}/sensors/{sensor_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["sensors"],
)
def delete_sensor(
    asset_id: uuid.UUID, sensor_id: uuid.UUID, principal: AssetWriter, session: SessionDep
) -> Response:
    service.delete_sensor(session, principal=principal, asset_id=asset_id, sensor_id=sensor_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
