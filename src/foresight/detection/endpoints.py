"""Alert rules (`/alert-rules`, analyst+ to change) and alerts (`/alerts`, operator+ to act)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Annotated, Any, Literal

import yaml
from fastapi import APIRouter, BackgroundTasks, Query, Request, Response
from pydantic import ValidationError

from foresight.assets import service as assets_service
from foresight.detection import alerts as alerts_service
from foresight.detection import service
from foresight.detection.anomaly_stage import scores_query
from foresight.detection.schemas import (
    AlertAction,
    AlertPage,
    AlertRead,
    AlertStats,
    AnomalyPoint,
    AnomalySeries,
    RuleCreate,
    RuleImportResult,
    RulePage,
    RuleRead,
    RuleSet,
    RuleUpdate,
)
from foresight.kit.errors import FieldError, InvalidInput, MalformedBody, UnsupportedMediaType
from foresight.kit.schemas import UtcDatetime
from foresight.kit.time import EPOCH, from_ms, utcnow
from foresight.models import AlertStatus, AnomalyScore, Severity
from foresight.web.deps import AlertActor, Reader, RuleWriter, SessionDep

router = APIRouter(tags=["alerts"])

Limit = Annotated[int, Query(ge=1, le=500, description="Page size")]
Cursor = Annotated[str | None, Query(max_length=512, description="next_cursor of the last page")]
Start = Annotated[UtcDatetime | None, Query(description="triggered_at at or after (ISO 8601)")]
End = Annotated[UtcDatetime | None, Query(description="triggered_at before (ISO 8601)")]


def _hooks(request: Request) -> list[Any]:
    return list(getattr(request.app.state, "alert_hooks", []))


def _after_commit(request: Request, background: BackgroundTasks, kind: str, alert: Any) -> None:
    """Post-commit alert listeners (live updates): background tasks run after the response,
    hence after the session dependency committed."""
    for listener in getattr(request.app.state, "alert_listeners", []):
        background.add_task(listener, kind, alert)


# --- rules ----------------------------------------------------------------------------------


@router.get("/alert-rules", response_model=RulePage)
def list_rules(
    principal: Reader,
    session: SessionDep,
    enabled: bool | None = None,
    origin: Annotated[Literal["user", "default"] | None, Query()] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> RulePage:
    """The tenant's rules by name (`origin=default`: those made from sensors' expected ranges)."""
    return service.list_rules(
        session,
        tenant_id=principal.tenant_id,
        enabled=enabled,
        origin=origin,
        limit=limit,
        cursor=cursor,
    )


@router.post("/alert-rules", response_model=RuleRead, status_code=HTTPStatus.CREATED)
def create_rule(body: RuleCreate, principal: RuleWriter, session: SessionDep) -> RuleRead:
    """Create a rule; it is evaluated on every accepted point within seconds, on every worker."""
    return RuleRead.model_validate(service.create_rule(session, principal=principal, data=body))


@router.get(
    "/alert-rules/export",
    responses={200: {"content": {"application/json": {}, "application/yaml": {}}}},
)
def export_rules(
    principal: Reader,
    session: SessionDep,
    format: Annotated[Literal["json", "yaml"], Query(description="json or yaml")] = "json",
) -> Response:
    """The tenant's rule set, for review or to import at another site (assets by tag)."""
    rule_set = service.export_rules(session, tenant_id=principal.tenant_id)
    data = rule_set.model_dump(mode="json", by_alias=True, exclude_none=True)
    if format == "yaml":
        return Response(yaml.safe_dump(data, sort_keys=False), media_type="application/yaml")
    return Response(json.dumps(data, indent=2), media_type="application/json")


@router.post(
    "/alert-rules/import",
    response_model=RuleImportResult,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": RuleSet.model_json_schema(by_alias=True)},
                "application/yaml": {"schema": {"type": "string"}},
            },
        }
    },
)
async def import_rules(
    request: Request, principal: RuleWriter, session: SessionDep
) -> RuleImportResult:
    """Create or update rules by name from an exported set (JSON or YAML); all or nothing."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    raw = await request.body()
    try:
        if media in ("application/yaml", "application/x-yaml", "text/yaml"):
            document = yaml.safe_load(raw)
        elif media == "application/json":
            document = json.loads(raw)
        else:
            raise UnsupportedMediaType(
                f"Content-Type {media!r} is not supported: use application/json or "
                "application/yaml."
            )
    except (ValueError, yaml.YAMLError) as exc:
        message = f"the body is not valid {media}: {str(exc).splitlines()[0]}"
        raise MalformedBody(
            message, errors=[FieldError(["body"], message, "body_invalid")]
        ) from exc
    try:
        rule_set = RuleSet.model_validate(document)
    except ValidationError as exc:
        errors = [FieldError(["body", *e["loc"]], e["msg"], e["type"]) for e in exc.errors()[:50]]
        raise InvalidInput("The rule set is not valid.", errors=errors) from exc
    return service.import_rules(session, principal=principal, data=rule_set)


@router.get("/alert-rules/{rule_id:uuid}", response_model=RuleRead)
def get_rule(rule_id: uuid.UUID, principal: Reader, session: SessionDep) -> RuleRead:
    return RuleRead.model_validate(
        service.get_rule(session, tenant_id=principal.tenant_id, rule_id=rule_id)
    )


@router.patch("/alert-rules/{rule_id:uuid}", response_model=RuleRead)
def update_rule(
    rule_id: uuid.UUID, body: RuleUpdate, principal: RuleWriter, session: SessionDep
) -> RuleRead:
    """Change some fields (the merged rule must be valid); re-enabling clears a recorded error."""
    rule = service.update_rule(session, principal=principal, rule_id=rule_id, data=body)
    return RuleRead.model_validate(rule)


@router.delete("/alert-rules/{rule_id:uuid}", status_code=HTTPStatus.NO_CONTENT)
def delete_rule(rule_id: uuid.UUID, principal: RuleWriter, session: SessionDep) -> Response:
    service.delete_rule(session, principal=principal, rule_id=rule_id)
    return Response(status_code=HTTPStatus.NO_CONTENT)


# --- alerts ---------------------------------------------------------------------------------


@router.get("/alerts", response_model=AlertPage)
def list_alerts(
    principal: Reader,
    session: SessionDep,
    asset_id: uuid.UUID | None = None,
    status: AlertStatus | None = None,
    severity: Severity | None = None,
    start: Start = None,
    end: End = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> AlertPage:
    """Alerts, newest first by `triggered_at` (the data time of the reading that opened them)."""
    _check_window(start, end)
    return alerts_service.list_alerts(
        session,
        tenant_id=principal.tenant_id,
        asset_id=asset_id,
        status=status,
        severity=severity,
        start=start,
        end=end,
        limit=limit,
        cursor=cursor,
    )


@router.get("/alerts/stats", response_model=AlertStats)
def alert_stats(
    principal: Reader,
    session: SessionDep,
    asset_id: uuid.UUID | None = None,
    start: Start = None,
    end: End = None,
) -> AlertStats:
    """Counts by severity, status, asset and day; mean time to acknowledge and to resolve."""
    _check_window(start, end)
    return alerts_service.stats(
        session, tenant_id=principal.tenant_id, asset_id=asset_id, start=start, end=end
    )


@router.get("/alerts/{alert_id:uuid}", response_model=AlertRead)
def get_alert(alert_id: uuid.UUID, principal: Reader, session: SessionDep) -> AlertRead:
    return AlertRead.model_validate(
        alerts_service.get_alert(session, tenant_id=principal.tenant_id, alert_id=alert_id)
    )


@router.post("/alerts/{alert_id:uuid}/acknowledge", response_model=AlertRead)
def acknowledge_alert(
    alert_id: uuid.UUID,
    principal: AlertActor,
    session: SessionDep,
    request: Request,
    background: BackgroundTasks,
    body: AlertAction | None = None,
) -> AlertRead:
    """Open → acknowledged, with who, when and an optional note."""
    alert = alerts_service.acknowledge(
        session,
        principal=principal,
        alert_id=alert_id,
        note=body.note if body else "",
        hooks=_hooks(request),
    )
    _after_commit(request, background, "alert.acknowledged", alert)
    return AlertRead.model_validate(alert)


@router.post("/alerts/{alert_id:uuid}/resolve", response_model=AlertRead)
def resolve_alert(
    alert_id: uuid.UUID,
    principal: AlertActor,
    session: SessionDep,
    request: Request,
    background: BackgroundTasks,
    body: AlertAction | None = None,
) -> AlertRead:
    """Open or acknowledged → resolved, with who, when and an optional note."""
    alert = alerts_service.resolve(
        session,
        principal=principal,
        alert_id=alert_id,
        note=body.note if body else "",
        hooks=_hooks(request),
    )
    _after_commit(request, background, "alert.resolved", alert)
    return AlertRead.model_validate(alert)


@router.get("/assets/{asset_id}/anomalies", response_model=AnomalySeries)
def asset_anomalies(
    asset_id: uuid.UUID,
    principal: Reader,
    session: SessionDep,
    start: Annotated[UtcDatetime | None, Query(description="Default: 24 h before end")] = None,
    end: Annotated[UtcDatetime | None, Query(description="Default: now")] = None,
    flagged: Annotated[bool, Query(description="Only flagged minutes")] = False,
    limit: Annotated[int, Query(ge=1, le=20_000)] = 5_000,
) -> AnomalySeries:
    """Anomaly scores per minute of data time (time, score, flag, kind, driving sensors)."""
    _check_window(start, end)
    asset = assets_service.get_asset(session, tenant_id=principal.tenant_id, asset_id=asset_id)
    end = end or utcnow()
    start = start or end - timedelta(hours=24)
    stmt = scores_query(principal.tenant_id, asset.id, _ms(start), _ms(end))
    if flagged:
        stmt = stmt.where(AnomalyScore.flag.is_(True))
    rows = session.scalars(stmt.limit(limit + 1)).all()
    items = [
        AnomalyPoint(
            ts=from_ms(r.minute_ms), detector=r.detector, score=r.score,
            flag=r.flag, kind=r.kind, sensors=list(r.sensors or []),
        )
        for r in rows[:limit]
    ]  # fmt: skip
    return AnomalySeries(
        asset_id=asset.id, start=start, end=end, items=items, truncated=len(rows) > limit
    )


def _ms(value: datetime) -> int:
    return (value - EPOCH) // timedelta(milliseconds=1)


def _check_window(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and end <= start:
        raise InvalidInput(
            "end must be after start.",
            errors=[FieldError(["query", "end"], "must be after start", "window_empty")],
        )
