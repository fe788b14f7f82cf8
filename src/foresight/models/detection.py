"""Alert rules and the alerts they (and the anomaly detectors) raise."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Mapped, mapped_column

from foresight.kit.db import Base, IdMixin, JSONType, TimestampMixin
from foresight.models._types import str_enum
from foresight.models.enums import AlertStatus, Severity


class AlertRule(IdMixin, TimestampMixin, Base):
    """A tenant's rule: conditions on sensors of the assets in its scope (see detection.rules)."""

    __tablename__ = "alert_rules"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    severity: Mapped[Severity] = mapped_column(str_enum(Severity, "severity"))
    # {"asset_id": …} | {"asset_type": …} | {"criticality": […], "metadata": {…}}; {} = all assets
    scope: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    combine: Mapped[str] = mapped_column(String(8), default="all")
    for_s: Mapped[float] = mapped_column(Float, default=0.0)
    clear_hysteresis: Mapped[float] = mapped_column(Float, default=0.0)
    # Resolve the alert when the condition clears (else it stays open and repeats count up).
    auto_resolve: Mapped[bool] = mapped_column(Boolean, default=True)
    # "user", or "default" for the rules made from sensors' expected ranges.
    origin: Mapped[str] = mapped_column(String(16), default="user")
    # Set when evaluation failed and the rule was disabled because of it.
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # Bumped by every change: the detection workers reload rules whose version moved.
    version: Mapped[int] = mapped_column(Integer, default=1)


class Alert(IdMixin, TimestampMixin, Base):
    """One alert per (rule or detector, asset) while not resolved; repeats count up instead."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_tenant_status_triggered", "tenant_id", "status", "triggered_at"),
        Index("ix_alerts_tenant_asset_triggered", "tenant_id", "asset_id", "triggered_at"),
        Index(
            "uq_alerts_open_source_asset",
            "tenant_id",
            "source",
            "asset_id",
            unique=True,
            sqlite_where=sql_text("status != 'resolved'"),
            postgresql_where=sql_text("status != 'resolved'"),
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    asset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"))
    rule_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("alert_rules.id", ondelete="SET NULL"), default=None
    )
    # "rule:<rule id>" or "detector:<name>": what raised it (the deduplication key, with asset).
    source: Mapped[str] = mapped_column(String(100))
    severity: Mapped[Severity] = mapped_column(str_enum(Severity, "severity"))
    status: Mapped[AlertStatus] = mapped_column(
        str_enum(AlertStatus, "alert_status"), default=AlertStatus.open
    )
    title: Mapped[str] = mapped_column(String(300))
    message: Mapped[str] = mapped_column(Text, default="")
    sensor: Mapped[str | None] = mapped_column(String(64), default=None)
    # Data time of the reading that opened it (differs from created_at when history is replayed).
    triggered_at: Mapped[datetime] = mapped_column()
    last_triggered_at: Mapped[datetime] = mapped_column()
    count: Mapped[int] = mapped_column(Integer, default=1)
    last_value: Mapped[float | None] = mapped_column(Float, default=None)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    acknowledged_at: Mapped[datetime | None] = mapped_column(default=None)
    acknowledged_by: Mapped[str | None] = mapped_column(String(200), default=None)
    acknowledge_note: Mapped[str] = mapped_column(Text, default="")
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
    resolved_by: Mapped[str | None] = mapped_column(String(200), default=None)
    resolve_note: Mapped[str] = mapped_column(Text, default="")


class AnomalyScore(Base):
    """The largest anomaly score of an asset in one minute of data time, per detector."""

    __tablename__ = "anomaly_scores"
    __table_args__ = (
        Index("ix_anomaly_scores_tenant_minute", "tenant_id", "minute_ms"),
        # The flagged minutes of an asset, without visiting its rows (scoring counts them per
        # window for every asset): queries say ``flag = 1`` / ``flag`` as the predicate does.
        Index(
            "ix_anomaly_scores_flagged",
            "asset_id",
            "minute_ms",
            sqlite_where=sql_text("flag = 1"),
            postgresql_where=sql_text("flag"),
        ),
    )

    asset_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("assets.id", ondelete="CASCADE"), primary_key=True
    )
    detector: Mapped[str] = mapped_column(String(32), primary_key=True)
    minute_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    score: Mapped[float] = mapped_column(Float)
    flag: Mapped[bool] = mapped_column(Boolean)
    kind: Mapped[str] = mapped_column(String(32))
    # The sensors that drove the score, most to least.
    sensors: Mapped[list[str]] = mapped_column(JSONType, default=list)
