"""The prediction engine over HTTP: models (`/models`, analyst+ to change), predictions and the
fleet's health (any role), and the FleetVision seed's `/predict` shapes.

Scoring (`POST /predictions`, `/predict`, `/predict/batch`, and `GET …/prediction` when the
stored prediction is stale) needs only `read`: it stores a prediction, which is derived data (a
record of what the champion said), not a change anyone decides; so it is not audited either. What
decides predictions (training, promote, rollback) needs `models:write` and is audited.
"""

from __future__ import annotations

import uuid
from http import HTTPStatus
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Body, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from foresight.auth.rbac import Permission
from foresight.kit.errors import Conflict, FieldError, InvalidInput
from foresight.kit.schemas import UtcDatetime
from foresight.prediction import service, serving
from foresight.prediction.jobs import TrainingRunner
from foresight.prediction.schemas import (
    FleetHealth,
    ModelVersionList,
    PredictionList,
    PredictionRead,
    PredictRequest,
    PromoteResult,
    RollbackResult,
    SeedBatchList,
    SeedBatchRequest,
    SeedBatchResult,
    SeedPrediction,
    SeedPredictRequest,
    TrainingJobRead,
    TrainRequest,
)
from foresight.prediction.service import PredictionRow
from foresight.web.deps import (
    CallerDep,
    DatabaseDep,
    ModelWriter,
    Reader,
    SessionDep,
    json_response,
    reads_only,
)

router = APIRouter(tags=["prediction"])

HistoryLimit = Annotated[int, Query(ge=1, le=1000, description="At most this many, newest first")]
Since = Annotated[UtcDatetime | None, Query(description="computed_at at or after (ISO 8601)")]
Until = Annotated[UtcDatetime | None, Query(description="computed_at before (ISO 8601)")]
FleetLimit = Annotated[int, Query(ge=1, le=100, description="How many riskiest assets")]
Refresh = Annotated[bool, Query(description="Score fresh even if the stored one is current")]


def _runner(request: Request) -> TrainingRunner:
    runner: TrainingRunner = request.app.state.training
    return runner


def _publish_health(
    request: Request, background: BackgroundTasks, tenant_id: uuid.UUID, rows: list[PredictionRow]
) -> None:
    """Live `health` events of the scores that changed, sent once stored: background tasks run
    after the response, hence after the session dependency committed."""
    live = getattr(request.app.state, "live", None)
    if live is None:
        return
    for asset_id, event in service.health_events(list({r.asset_id: r for r in rows}.values())):
        background.add_task(live.publish, tenant_id, asset_id, event)


# --- models ---------------------------------------------------------------------------------------


@router.get("/models", response_model=ModelVersionList)
def list_models(principal: Reader, session: SessionDep) -> ModelVersionList:
    """The tenant's model versions, newest first (metrics and parameters, never the artifact)."""
    return ModelVersionList(items=serving.list_models(session, principal.tenant_id))


@router.post("/models/train", response_model=TrainingJobRead, status_code=HTTPStatus.ACCEPTED)
def train_model(
    principal: ModelWriter,
    session: SessionDep,
    request: Request,
    response: Response,
    background: BackgroundTasks,
    body: TrainRequest | None = None,
) -> TrainingJobRead:
    """Queue a training run (409 while one of the tenant's is queued or running); follow it at
    `GET /models/jobs/{id}` (the `Location` header)."""
    runner = _runner(request)
    active = runner.active_job(principal.tenant_id)
    if active is not None:
        raise Conflict(
            f"Training job {active} is still queued or running: follow it at "
            f"/api/v1/models/jobs/{active}."
        )
    params = (
        {} if body is None or body.max_rul_days is None else {"max_rul_days": body.max_rul_days}
    )
    job = serving.request_training(
        session, principal.tenant_id, actor=principal.actor, params=params
    )
    # A background task runs after the response, hence after the session dependency committed:
    # the job's own transactions never wait for this request's.
    background.add_task(runner.submit, principal.tenant_id, job.id)
    response.headers["Location"] = f"/api/v1/models/jobs/{job.id}"
    return job


@router.get("/models/jobs/{job_id:uuid}", response_model=TrainingJobRead)
def get_training_job(job_id: uuid.UUID, principal: Reader, session: SessionDep) -> TrainingJobRead:
    """Progress (0-1) and stage, the error of a failed run, the version a finished one made."""
    return serving.job(session, principal.tenant_id, job_id)


@router.post("/models/{version_id:uuid}/promote", response_model=PromoteResult)
def promote_model(
    version_id: uuid.UUID, principal: ModelWriter, session: SessionDep
) -> PromoteResult:
    """Make this version champion by hand; the one it replaces is retired (a rollback brings it
    back)."""
    return serving.promote(session, principal.tenant_id, version_id, actor=principal.actor)


@router.post("/models/rollback", response_model=RollbackResult)
def rollback_model(principal: ModelWriter, session: SessionDep) -> RollbackResult:
    """Retire the champion and restore the one it replaced (409 when there is none)."""
    return serving.rollback(session, principal.tenant_id, actor=principal.actor)


# --- predictions ----------------------------------------------------------------------------------


@router.get("/assets/{asset_id:uuid}/prediction", response_model=PredictionRead)
async def get_prediction(
    asset_id: uuid.UUID, caller: CallerDep, request: Request, refresh: Refresh = False
) -> Response:
    """The asset's current prediction: the stored one unless the asset has a newer reading or the
    champion changed since (then scored fresh and stored), or `refresh=true`."""
    live = getattr(request.app.state, "live", None)

    def work() -> Response:  # the request's whole blocking part, in one thread-pool call
        db = caller.db
        with db.transaction(write=False, snapshot=True) as session:
            principal = caller.authenticate(session, Permission.read)
            row, fresh = serving.current(
                db, session, principal.tenant_id, asset_id, refresh=refresh
            )
        if fresh and live is not None:  # stored (committed) by now
            for aid, event in service.health_events([row]):
                live.publish(principal.tenant_id, aid, event)
        return json_response(PredictionRead.of(row))

    return await run_in_threadpool(work)


@router.get("/assets/{asset_id:uuid}/predictions", response_model=PredictionList)
def list_predictions(
    asset_id: uuid.UUID,
    principal: Reader,
    session: SessionDep,
    limit: HistoryLimit = 100,
    since: Since = None,
    until: Until = None,
) -> PredictionList:
    """The asset's stored predictions, newest first (by computed_at)."""
    if since is not None and until is not None and since >= until:
        message = "since must be before until"
        raise InvalidInput(message, errors=[FieldError(["query", "until"], message)])
    rows = serving.history(
        session, principal.tenant_id, asset_id, limit=limit, since=since, until=until
    )
    return PredictionList(items=[PredictionRead.of(r) for r in rows])


@router.post("/predictions", response_model=PredictionList)
@reads_only
def predict(
    body: PredictRequest,
    principal: Reader,
    session: SessionDep,
    db: DatabaseDep,
    request: Request,
    background: BackgroundTasks,
) -> PredictionList:
    """Score these assets now and store the predictions: one per id, in order; unknown ids → 404."""
    rows = serving.score(
        db,
        session,
        principal.tenant_id,
        body.asset_ids,
        include_explanation=body.include_explanation,
    )
    _publish_health(request, background, principal.tenant_id, rows)
    return PredictionList(items=[PredictionRead.of(r) for r in rows])


@router.post("/predict", response_model=SeedPrediction)
@reads_only
def seed_predict(
    body: SeedPredictRequest,
    principal: Reader,
    session: SessionDep,
    db: DatabaseDep,
    request: Request,
    background: BackgroundTasks,
) -> SeedPrediction:
    """The FleetVision seed shape: `{"equipment_id": TAG}` → the 30-day `failure_probability`,
    `rul_days`, `confidence_score`, `top_factors` (scored now and stored)."""
    rows = serving.score_tags(db, session, principal.tenant_id, [body.equipment_id])
    _publish_health(request, background, principal.tenant_id, rows)
    return SeedPrediction.of(rows[0])


@router.post("/predict/batch", response_model=SeedBatchResult)
@reads_only
def seed_predict_batch(
    body: Annotated[SeedBatchRequest | SeedBatchList, Body()],
    principal: Reader,
    session: SessionDep,
    db: DatabaseDep,
    request: Request,
    background: BackgroundTasks,
) -> SeedBatchResult:
    """`{"equipment_ids": [TAG, …]}` or `[{"equipment_id": TAG}, …]` → `{"predictions": […]}`
    in that order."""
    tags = (
        body.equipment_ids
        if isinstance(body, SeedBatchRequest)
        else [item.equipment_id for item in body]
    )
    rows = serving.score_tags(db, session, principal.tenant_id, tags)
    _publish_health(request, background, principal.tenant_id, rows)
    return SeedBatchResult(predictions=[SeedPrediction.of(r) for r in rows])


@router.get("/fleet/health", response_model=FleetHealth)
def fleet_health(principal: Reader, session: SessionDep, limit: FleetLimit = 10) -> FleetHealth:
    """Counts by status, mean health score and the riskiest assets, from each asset's latest
    stored prediction (assets without one count as `unscored`)."""
    return serving.fleet_health(session, principal.tenant_id, limit=limit)
