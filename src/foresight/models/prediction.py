"""The model registry, training jobs, stored predictions and the feedback on them (issue 5)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from foresight.kit.db import Base, IdMixin, JSONType, TimestampMixin
from foresight.models._types import str_enum


class ModelStatus(StrEnum):
    champion = "champion"  # the one that scores (at most one per tenant)
    challenger = "challenger"  # trained, did not beat the champion (can be promoted by hand)
    retired = "retired"  # was champion, replaced or rolled back
    failed = "failed"  # the run did not produce a usable model


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class FeedbackVerdict(StrEnum):
    confirmed = "confirmed"
    false_alarm = "false_alarm"


class ModelVersion(IdMixin, TimestampMixin, Base):
    """One training run's model: what it saw, how it did, its artifact and its standing."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "version"),
        Index("ix_model_versions_tenant_status", "tenant_id", "status"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[ModelStatus] = mapped_column(str_enum(ModelStatus, "model_status"))
    # Prediction times of the training rows (first and last), and where the held-out window began.
    data_start: Mapped[datetime | None] = mapped_column(default=None)
    data_end: Mapped[datetime | None] = mapped_column(default=None)
    holdout_start: Mapped[datetime | None] = mapped_column(default=None)
    feature_specs: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    feature_config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    categories: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # {"training": …, "holdout": …, "comparison": …} (see prediction.registry).
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    horizons: Mapped[list[int]] = mapped_column(JSONType, default=list)
    max_rul_days: Mapped[float] = mapped_column(Float)
    artifact: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    promoted_by: Mapped[str | None] = mapped_column(String(200), default=None)
    promoted_at: Mapped[datetime | None] = mapped_column(default=None)
    # The champion this one replaced when it was promoted (what a rollback brings back).
    previous_champion_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"), default=None
    )
    note: Mapped[str] = mapped_column(Text, default="")


class TrainingJob(IdMixin, TimestampMixin, Base):
    """A background training run and its progress."""

    __tablename__ = "training_jobs"
    __table_args__ = (
        Index("ix_training_jobs_tenant_created", "tenant_id", "created_at"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress_range"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    status: Mapped[JobStatus] = mapped_column(
        str_enum(JobStatus, "job_status"), default=JobStatus.queued
    )
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str] = mapped_column(String(200), default="queued")
    error: Mapped[str | None] = mapped_column(Text, default=None)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    requested_by: Mapped[str] = mapped_column(String(200), default="")
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    model_version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"), default=None
    )


class Prediction(IdMixin, Base):
    """One asset's scored prediction, as of its latest reading."""

    __tablename__ = "predictions"
    __table_args__ = (
        Index("ix_predictions_tenant_asset_computed", "tenant_id", "asset_id", "computed_at"),
        # The health trend reads an asset's scores by data time.
        Index("ix_predictions_tenant_asset_as_of", "tenant_id", "asset_id", "as_of"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    asset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"))
    # The asset's latest reading time (None: it has never reported).
    as_of: Mapped[datetime | None] = mapped_column(default=None)
    computed_at: Mapped[datetime] = mapped_column()
    model_version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"), default=None
    )
    model_version: Mapped[int | None] = mapped_column(Integer, default=None)
    fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    fallback_reason: Mapped[str | None] = mapped_column(Text, default=None)
    failure_probability_7d: Mapped[float | None] = mapped_column(Float, default=None)
    failure_probability_14d: Mapped[float | None] = mapped_column(Float, default=None)
    failure_probability_30d: Mapped[float | None] = mapped_column(Float, default=None)
    rul_days: Mapped[float | None] = mapped_column(Float, default=None)
    rul_low: Mapped[float | None] = mapped_column(Float, default=None)
    rul_high: Mapped[float | None] = mapped_column(Float, default=None)
    rul_at_cap: Mapped[bool] = mapped_column(Boolean, default=False)
    confidence: Mapped[float | None] = mapped_column(Float, default=None)
    health_score: Mapped[float | None] = mapped_column(Float, default=None)
    status: Mapped[str | None] = mapped_column(String(16), default=None)
    # Points the score lost per signal (see prediction.health), and its trend in points per week.
    health_penalties: Mapped[dict[str, float] | None] = mapped_column(JSONType, default=None)
    health_trend: Mapped[float | None] = mapped_column(Float, default=None)
    top_factors: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)


class HealthScoreDay(Base):
    """Per asset and UTC day of ``as_of``, the sums of its stored predictions' health scores
    that the trend's least squares need (x: days since that day's midnight, y: the score),
    kept by ``prediction.signals.record_scores`` as predictions are stored: the trend reads
    at most a row a day of its window, however often the asset is scored."""

    __tablename__ = "health_score_days"

    asset_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("assets.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[int] = mapped_column(Integer, primary_key=True)  # days since 1970-01-01 UTC
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    n: Mapped[int] = mapped_column(Integer)
    sum_x: Mapped[float] = mapped_column(Float)
    sum_y: Mapped[float] = mapped_column(Float)
    sum_xx: Mapped[float] = mapped_column(Float)
    sum_xy: Mapped[float] = mapped_column(Float)
    min_x: Mapped[float] = mapped_column(Float)
    max_x: Mapped[float] = mapped_column(Float)


class PredictionFeedback(IdMixin, TimestampMixin, Base):
    """A user's verdict on a prediction or an anomaly alert (fed to the next training run)."""

    __tablename__ = "prediction_feedback"
    __table_args__ = (
        Index("ix_prediction_feedback_tenant_created", "tenant_id", "created_at"),
        CheckConstraint(
            "prediction_id IS NOT NULL OR alert_id IS NOT NULL", name="prediction_or_alert"
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    prediction_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("predictions.id", ondelete="CASCADE"), default=None
    )
    alert_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("alerts.id", ondelete="CASCADE"), default=None
    )
    verdict: Mapped[FeedbackVerdict] = mapped_column(str_enum(FeedbackVerdict, "feedback_verdict"))
    note: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(200), default="")
