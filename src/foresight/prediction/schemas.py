"""The prediction engine over the API: model versions, training jobs, predictions, fleet health.

A prediction (``GET /api/v1/assets/{id}/prediction``)::

    {"asset_id": "…", "asset_tag": "PUMP-001", "as_of": "2026-04-10T23:00:00Z",
     "computed_at": "…", "model_version": 3, "fallback": false, "fallback_reason": null,
     "failure_probability": {"7d": 0.04, "14d": 0.09, "30d": 0.31},
     "rul_days": 41.5, "rul_low": 22.0, "rul_high": 88.0, "rul_at_cap": false,
     "max_rul_days": 180.0, "confidence": 0.74,
     "health_score": 63.2, "status": "warning", "health_penalties": {…}, "health_trend": -2.1,
     "top_factors": [{"feature": "vibration__mean_24h", "text": "vibration 24 h mean 38% above
                      this asset's baseline", "contribution": 0.41, …}]}

``rul_at_cap: true`` means "at least ``max_rul_days`` days" (the model's target is capped there).
The FleetVision seed shapes (``POST /predict``, ``POST /predict/batch``) name the asset by its tag
(``equipment_id``) and give the 30-day probability as ``failure_probability``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field

from foresight.kit.schemas import CleanStr, InputModel, OutputModel
from foresight.models import JobStatus, ModelStatus, ModelVersion, TrainingJob
from foresight.prediction.service import PredictionRow

MAX_ASSETS = 1000
MAX_RUL_DAYS_LIMIT = 3650.0
Tag = Annotated[CleanStr, Field(min_length=1, max_length=200)]


# --- models and training -------------------------------------------------------------------------


class ModelVersionRead(OutputModel):
    """A registered model version (never its artifact)."""

    id: uuid.UUID
    version: int
    status: ModelStatus
    data_start: datetime | None = Field(description="First training row's prediction time")
    data_end: datetime | None = Field(description="Last training row's prediction time")
    holdout_start: datetime | None = Field(description="Where the held-out window began")
    features_count: int
    horizons: list[int] = Field(description="Failure horizons in days")
    max_rul_days: float = Field(description="RUL cap: a prediction at it means 'at least'")
    params: dict[str, Any]
    metrics: dict[str, Any] = Field(
        description="training (cross-validation), holdout, holdout_window, comparison with the "
        "champion of the time, counts, notes"
    )
    note: str = Field(description="Why it was (not) promoted")
    created_by: str
    created_at: datetime
    promoted_by: str | None
    promoted_at: datetime | None
    previous_champion_id: uuid.UUID | None = Field(description="What a rollback brings back")
    realised: dict[str, Any] | None = Field(
        default=None,
        description="How it did on the predictions it made as champion whose outcome is known "
        "(prediction.realised): per horizon (7d, 14d, 30d) evaluated, positives, threshold, "
        "precision, recall, brier, calibration bins; predictions, since, feedback counts",
    )

    @classmethod
    def of(cls, v: ModelVersion, realised: dict[str, Any] | None = None) -> ModelVersionRead:
        return cls(
            id=v.id,
            version=v.version,
            status=v.status,
            data_start=v.data_start,
            data_end=v.data_end,
            holdout_start=v.holdout_start,
            features_count=len(v.feature_specs or []),
            horizons=list(v.horizons or []),
            max_rul_days=v.max_rul_days,
            params=dict(v.params or {}),
            metrics=dict(v.metrics or {}),
            note=v.note,
            created_by=v.created_by,
            created_at=v.created_at,
            promoted_by=v.promoted_by,
            promoted_at=v.promoted_at,
            previous_champion_id=v.previous_champion_id,
            realised=realised,
        )


class ModelVersionList(OutputModel):
    items: list[ModelVersionRead] = Field(description="Newest version first")


class TrainRequest(InputModel):
    max_rul_days: float | None = Field(
        default=None,
        gt=0,
        le=MAX_RUL_DAYS_LIMIT,
        description="Cap on the RUL target in days (default: the tenant setting, else 180)",
    )


class TrainingJobRead(OutputModel):
    id: uuid.UUID
    status: JobStatus
    progress: float = Field(ge=0, le=1)
    stage: str = Field(description="What it is doing; once done, why the model was (not) promoted")
    error: str | None
    params: dict[str, Any]
    requested_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    model_version_id: uuid.UUID | None = Field(description="The version it registered")
    model_version: int | None
    model_status: ModelStatus | None = Field(description="That version's standing now")

    @classmethod
    def of(cls, job: TrainingJob, version: ModelVersion | None = None) -> TrainingJobRead:
        return cls(
            id=job.id,
            status=job.status,
            progress=job.progress,
            stage=job.stage,
            error=job.error,
            params=dict(job.params or {}),
            requested_by=job.requested_by,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            model_version_id=job.model_version_id,
            model_version=None if version is None else version.version,
            model_status=None if version is None else version.status,
        )


class PromoteResult(OutputModel):
    champion: ModelVersionRead
    replaced: ModelVersionRead | None = Field(description="The champion it replaced (retired)")


class RollbackResult(OutputModel):
    champion: ModelVersionRead = Field(description="The earlier champion, restored")
    retired: ModelVersionRead = Field(description="The champion rolled back")


# --- predictions ---------------------------------------------------------------------------------


class TopFactor(OutputModel):
    feature: str
    value: float | None = None
    contribution: float | None = Field(
        default=None, description="SHAP contribution (log-odds), or the fallback's hazard share"
    )
    direction: str | None = None
    text: str = ""
    target: str | None = Field(default=None, description="failure_30d, or fallback_hazard")


class PredictionRead(OutputModel):
    id: uuid.UUID | None
    asset_id: uuid.UUID
    asset_tag: str
    as_of: datetime | None = Field(description="The asset's latest reading it was scored as of")
    computed_at: datetime
    model_version_id: uuid.UUID | None
    model_version: int | None
    fallback: bool = Field(description="Scored by the rule-based fallback, not a model")
    fallback_reason: str | None
    failure_probability: dict[str, float] = Field(description='By horizon: "7d", "14d", "30d"')
    failure_probability_7d: float | None
    failure_probability_14d: float | None
    failure_probability_30d: float | None
    rul_days: float | None = Field(description="Remaining useful life in days from as_of")
    rul_low: float | None
    rul_high: float | None
    rul_at_cap: bool = Field(description="rul_days is the cap: 'at least max_rul_days days'")
    max_rul_days: float
    confidence: float | None
    health_score: float | None = Field(description="0-100 (see the README's formula)")
    status: str | None = Field(description="healthy, warning, critical or failed")
    health_penalties: dict[str, float] | None = Field(description="Points lost per signal")
    health_trend: float | None = Field(description="Points per week over the last four weeks")
    top_factors: list[TopFactor]

    @classmethod
    def of(cls, row: PredictionRow) -> PredictionRead:
        p = row.failure_probability
        return cls(
            id=row.id,
            asset_id=row.asset_id,
            asset_tag=row.asset_tag,
            as_of=row.as_of,
            computed_at=row.computed_at,
            model_version_id=row.model_version_id,
            model_version=row.model_version,
            fallback=row.fallback,
            fallback_reason=row.fallback_reason,
            failure_probability={f"{h}d": v for h, v in sorted(p.items())},
            failure_probability_7d=p.get(7),
            failure_probability_14d=p.get(14),
            failure_probability_30d=p.get(30),
            rul_days=row.rul_days,
            rul_low=row.rul_low,
            rul_high=row.rul_high,
            rul_at_cap=row.rul_at_cap,
            max_rul_days=row.max_rul_days,
            confidence=row.confidence,
            health_score=row.health_score,
            status=row.status,
            health_penalties=row.health_penalties,
            health_trend=row.health_trend,
            top_factors=[TopFactor.model_validate(f) for f in row.top_factors],
        )


class PredictionList(OutputModel):
    items: list[PredictionRead]


class PredictRequest(InputModel):
    asset_ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_ASSETS)
    include_explanation: bool = Field(default=True, description="Compute top_factors")


# --- the FleetVision seed shapes ----------------------------------------------------------------


class SeedPredictRequest(InputModel):
    equipment_id: Tag = Field(description="The asset's tag")


class SeedBatchRequest(InputModel):
    equipment_ids: list[Tag] = Field(min_length=1, max_length=MAX_ASSETS)


SeedBatchList = Annotated[list[SeedPredictRequest], Field(min_length=1, max_length=MAX_ASSETS)]


class SeedPrediction(OutputModel):
    equipment_id: str = Field(description="The asset's tag")
    asset_id: uuid.UUID
    failure_probability: float | None = Field(description="Within 30 days")
    failure_probability_7d: float | None
    failure_probability_14d: float | None
    rul_days: float | None
    rul_low: float | None
    rul_high: float | None
    rul_at_cap: bool
    confidence_score: float | None
    health_score: float | None
    status: str | None
    top_factors: list[TopFactor]
    model_version: int | None
    fallback: bool
    as_of: datetime | None
    computed_at: datetime

    @classmethod
    def of(cls, row: PredictionRow) -> SeedPrediction:
        p = row.failure_probability
        return cls(
            equipment_id=row.asset_tag,
            asset_id=row.asset_id,
            failure_probability=p.get(30),
            failure_probability_7d=p.get(7),
            failure_probability_14d=p.get(14),
            rul_days=row.rul_days,
            rul_low=row.rul_low,
            rul_high=row.rul_high,
            rul_at_cap=row.rul_at_cap,
            confidence_score=row.confidence,
            health_score=row.health_score,
            status=row.status,
            top_factors=[TopFactor.model_validate(f) for f in row.top_factors],
            model_version=row.model_version,
            fallback=row.fallback,
            as_of=row.as_of,
            computed_at=row.computed_at,
        )


class SeedBatchResult(OutputModel):
    predictions: list[SeedPrediction]


# --- fleet health -------------------------------------------------------------------------------


class RiskyAsset(OutputModel):
    asset_id: uuid.UUID
    tag: str
    name: str
    health_score: float | None
    status: str | None
    p30: float | None = Field(description="Failure probability within 30 days")
    rul_days: float | None
    computed_at: datetime


class FleetHealth(OutputModel):
    assets: int
    counts: dict[str, int] = Field(
        description="healthy, warning, critical, failed; unscored: no prediction yet, or one "
        "without a health score"
    )
    mean_health_score: float | None = Field(description="Over the assets with a score")
    riskiest: list[RiskyAsset] = Field(
        description="Lowest health score first, then highest 30-day probability"
    )
