from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from foresight.kit.db import Base, IdMixin, JSONType, TimestampMixin
from foresight.models._types import str_enum
from foresight.models.enums import AssetStatus, Criticality, SensorKind


class Asset(IdMixin, TimestampMixin, Base):
    __tablename__ = "assets"
    __table_args__ = (
        UniqueConstraint("tenant_id", "tag"),
        Index("ix_assets_tenant_parent", "tenant_id", "parent_id"),
        CheckConstraint(
            "health_score IS NULL OR (health_score >= 0 AND health_score <= 100)",
            name="health_score_range",
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    tag: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(64), default="")
    location: Mapped[str] = mapped_column(String(200), default="")
    criticality: Mapped[Criticality] = mapped_column(
        str_enum(Criticality, "criticality"), default=Criticality.medium
    )
    status: Mapped[AssetStatus] = mapped_column(
        str_enum(AssetStatus, "asset_status"), default=AssetStatus.operational
    )
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("assets.id", ondelete="RESTRICT"), default=None
    )
    install_date: Mapped[date | None] = mapped_column(default=None)
    health_score: Mapped[float | None] = mapped_column(Float, default=None)
    description: Mapped[str] = mapped_column(Text, default="")
    # "metadata" is reserved by SQLAlchemy's declarative base; the API calls it metadata.
    attributes: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)


class Sensor(IdMixin, TimestampMixin, Base):
    __tablename__ = "sensors"
    __table_args__ = (
        UniqueConstraint("asset_id", "key"),
        Index("ix_sensors_tenant_asset", "tenant_id", "asset_id"),
        CheckConstraint(
            "expected_min IS NULL OR expected_max IS NULL OR expected_min <= expected_max",
            name="expected_range",
        ),
        CheckConstraint(
            "sampling_interval_s IS NULL OR sampling_interval_s > 0", name="sampling_positive"
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    asset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), default="")
    unit: Mapped[str] = mapped_column(String(32), default="")
    kind: Mapped[SensorKind] = mapped_column(
        str_enum(SensorKind, "sensor_kind"), default=SensorKind.gauge
    )
    expected_min: Mapped[float | None] = mapped_column(Float, default=None)
    expected_max: Mapped[float | None] = mapped_column(Float, default=None)
    sampling_interval_s: Mapped[float | None] = mapped_column(Float, default=None)
    # Integer surrogate used by the time-series tables (compact keys for billions of points).
    series_id: Mapped[int] = mapped_column(BigInteger, unique=True)
