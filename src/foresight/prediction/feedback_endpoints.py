"""Verdicts on predictions and alerts over HTTP (operator+, audited) and their listing (any
role). What a verdict changes (training, anomaly thresholds, realised metrics) is in
``prediction.feedback``."""

from __future__ import annotations

import uuid
from http import HTTPStatus
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, Request

from foresight.kit.errors import FieldError, InvalidInput
from foresight.kit.schemas import UtcDatetime
from foresight.models import FeedbackVerdict
from foresight.prediction import feedback as service
from foresight.prediction.feedback_schemas import (
    FeedbackCreate,
    FeedbackKind,
    FeedbackPage,
    FeedbackRead,
)
from foresight.web.deps import AlertActor, Reader, SessionDep

router = APIRouter(tags=["feedback"])

Limit = Annotated[int, Query(ge=1, le=500, description="Page size")]
Cursor = Annotated[str | None, Query(max_length=512, description="next_cursor of the last page")]
Start = Annotated[UtcDatetime | None, Query(description="created_at at or after (ISO 8601)")]
End = Annotated[UtcDatetime | None, Query(description="created_at before (ISO 8601)")]


@router.post(
    "/predictions/{prediction_id:uuid}/feedback",
    response_model=FeedbackRead,
    status_code=HTTPStatus.CREATED,
)
def prediction_feedback(
    prediction_id: uuid.UUID, body: FeedbackCreate, principal: AlertActor, session: SessionDep
) -> FeedbackRead:
    """Mark a stored prediction `confirmed` (the asset was degrading) or `false_alarm`; the
    next training run weighs the asset's rows of that time accordingly."""
    return service.record_for_prediction(
        session,
        principal=principal,
        prediction_id=prediction_id,
        verdict=body.verdict,
        note=body.note,
    )


@router.post(
    "/alerts/{alert_id:uuid}/feedback",
    response_model=FeedbackRead,
    status_code=HTTPStatus.CREATED,
)
def alert_feedback(
    alert_id: uuid.UUID,
    body: FeedbackCreate,
    principal: AlertActor,
    session: SessionDep,
    request: Request,
    background: BackgroundTasks,
) -> FeedbackRead:
    """Mark an alert `confirmed` or `false_alarm`. On an anomaly alert it tunes the detector
    that raised it on that asset (`threshold_scale`), from the next evaluation on."""
    read = service.record_for_alert(
        session, principal=principal, alert_id=alert_id, verdict=body.verdict, note=body.note
    )
    detection = getattr(request.app.state, "detection", None)
    if read.threshold_scale is not None and detection is not None:
        # After the commit (background tasks run after the response): this process's detection
        # re-reads the thresholds now; other processes within their reload interval.
        background.add_task(detection.reload)
    return read


@router.get("/feedback", response_model=FeedbackPage)
def list_feedback(
    principal: Reader,
    session: SessionDep,
    kind: FeedbackKind | None = None,
    verdict: FeedbackVerdict | None = None,
    asset_id: uuid.UUID | None = None,
    prediction_id: uuid.UUID | None = None,
    alert_id: uuid.UUID | None = None,
    start: Start = None,
    end: End = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> FeedbackPage:
    """The tenant's verdicts, newest first, filtered by any of the parameters."""
    if start is not None and end is not None and start >= end:
        message = "start must be before end"
        raise InvalidInput(message, errors=[FieldError(["query", "end"], message)])
    return service.list_feedback(
        session,
        tenant_id=principal.tenant_id,
        kind=kind,
        verdict=verdict,
        asset_id=asset_id,
        prediction_id=prediction_id,
        alert_id=alert_id,
        start=start,
        end=end,
        limit=limit,
        cursor=cursor,
    )
