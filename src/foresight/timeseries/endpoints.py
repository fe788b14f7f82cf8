"""Readings of an asset's sensors: ranges (raw or rolled up, JSON or CSV) and latest values.

Reading needs any role; device API keys are refused. Everything is scoped to the caller's
tenant through the asset.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from foresight.kit.schemas import UtcDatetime
from foresight.timeseries import service
from foresight.timeseries.schemas import (
    MAX_POINTS,
    ExportFormat,
    LatestReadings,
    ReadingsQuery,
    ReadingsResponse,
    Resolution,
    SensorKeyIn,
)
from foresight.web.deps import DatabaseDep, Reader, SessionDep

router = APIRouter(tags=["readings"])

CSV_MEDIA_TYPE = "text/csv"


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value)
            except ValueError:
                return 0.0
            return quality if 0.0 <= quality <= 1.0 else 0.0
    return 1.0


def wants_csv(accept: str | None) -> bool:
    """Whether Accept names text/csv with a higher quality than application/json (on a tie, the
    one listed first wins; wildcards count for neither, so JSON stays the default)."""
    best: tuple[float, str] = (0.0, "json")
    for media_range in (accept or "").split(","):
        media_type, *params = media_range.split(";")
        kind = {"text/csv": "csv", "application/json": "json"}.get(media_type.strip().lower())
        quality = _quality(params)
        if kind is not None and quality > best[0]:
            best = (quality, kind)
    return best[1] == "csv"


@router.get(
    "/assets/{asset_id}/readings",
    response_model=ReadingsResponse,
    responses={
        200: {
            "description": "The readings (JSON), or a CSV file with format=csv or "
            "`Accept: text/csv`",
            "content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}},
        }
    },
)
def get_readings(
    asset_id: uuid.UUID,
    request: Request,
    principal: Reader,
    session: SessionDep,
    db: DatabaseDep,
    sensor: Annotated[
        list[SensorKeyIn] | None,
        Query(max_length=100, description="Sensor key; repeat for several (default: all)"),
    ] = None,
    start: Annotated[
        UtcDatetime | None, Query(description="ISO 8601, inclusive (default: end - 24 h)")
    ] = None,
    end: Annotated[UtcDatetime | None, Query(description="ISO 8601, exclusive (default: now)")] = (
        None
    ),
    resolution: Annotated[
        Resolution,
        Query(
            description=f"auto picks the finest of raw, 5m, 1h, 1d that keeps each sensor at or "
            f"under {MAX_POINTS} points, merging daily rollups into n-day buckets when even 1d "
            f"is too fine. An explicit resolution over {MAX_POINTS} points per sensor is refused "
            "in JSON (422) but streamed in CSV. Rollup points are whole buckets overlapping the "
            "range."
        ),
    ] = Resolution.auto,
    format_: Annotated[
        ExportFormat | None,
        Query(alias="format", description="csv: a CSV download (same as Accept: text/csv)"),
    ] = None,
) -> ReadingsResponse | StreamingResponse:
    """An asset's readings over a time range, raw or rolled up, as JSON or as a CSV export."""
    query = ReadingsQuery(sensors=tuple(sensor or ()), start=start, end=end, resolution=resolution)
    csv_wanted = (
        format_ is ExportFormat.csv
        if format_ is not None
        else wants_csv(request.headers.get("accept"))
    )
    if not csv_wanted:
        return service.get_readings(
            session, tenant_id=principal.tenant_id, asset_id=asset_id, query=query
        )
    export = service.prepare_export(
        session, tenant_id=principal.tenant_id, asset_id=asset_id, query=query
    )
    return StreamingResponse(
        service.export_csv(db, export),
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{export.filename}"'},
    )


@router.get("/assets/{asset_id}/readings/latest", response_model=LatestReadings)
def get_latest_readings(
    asset_id: uuid.UUID, principal: Reader, session: SessionDep, request: Request
) -> LatestReadings:
    """The newest value of each of the asset's sensors (null where a sensor has no data yet).

    Served from memory: what this node ingested shows at once, other writers' points within
    `FORESIGHT_LATEST_CACHE_TTL_S`."""
    return service.latest_readings(
        session,
        tenant_id=principal.tenant_id,
        asset_id=asset_id,
        cache=getattr(request.app.state, "latest_cache", None),
    )
