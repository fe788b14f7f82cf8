from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Float, ForeignKey, Index, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from foresight.kit.db import Base, IdMixin, TimestampMixin
from foresight.models._types import str_enum
from foresight.models.enums import MaintenanceKind, MaintenanceStatus


class MaintenanceRecord(IdMixin, TimestampMixin, Base):
    __tablename__ = "maintenance_records"
    __table_args__ = (
        Index("ix_maintenance_tenant_asset_started", "tenant_id", "asset_id", "started_at"),
        Index("ix_maintenance_tenant_status_scheduled", "tenant_id", "status", "scheduled_for"),
        CheckConstraint(
            "ended_at IS NULL OR started_at IS NULL OR ended_at >= started_at", name="ended_after"
        ),
        CheckConstraint("cost IS NULL OR cost >= 0", name="cost_nonnegative"),
        CheckConstraint(
            "downtime_hours IS NULL OR downtime_hours >= 0", name="downtime_nonnegative"
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    asset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"))
    kind: Mapped[MaintenanceKind] = mapped_column(str_enum(MaintenanceKind, "maintenance_kind"))
    status: Mapped[MaintenanceStatus] = mapped_column(
        str_enum(MaintenanceStatus, "maintenance_status"), default=MaintenanceStatus.completed
    )
    title: Mapped[str] = mapped_column(String(200), default="")
    scheduled_for: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    failure_mode: Mapped[str | None] = mapped_column(String(200), default=None)
    cost: Mapped[float | None] = mapped_column(Numeric(14, 2, asdecimal=False), default=None)
    downtime_hours: Mapped[float | None] = mapped_column(Float, default=None)
    notes: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
