from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from foresight.kit.schemas import InputModel, OutputModel

TenantName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.\-]*$")
]


class TenantRead(OutputModel):
    id: uuid.UUID
    name: str
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class TenantUpdate(InputModel):
    settings: dict[str, Any] = Field(description="Replaces the tenant's settings object")


# --- retention (tenant settings ``retention_*_days``) ---------------------------------------

MAX_RETENTION_DAYS = 36_500  # 100 years; beyond that, say null (keep forever)

RetentionDays = Annotated[int, Field(strict=True, ge=1, le=MAX_RETENTION_DAYS)] | None
"""Whole days to keep; None (JSON null) keeps forever."""


class Retention(BaseModel):
    """How long a tenant's time-series data is kept, per table (settings keys, in days)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    retention_raw_days: RetentionDays = 90
    retention_5m_days: RetentionDays = 30
    retention_1h_days: RetentionDays = 90
    retention_1d_days: RetentionDays = None

    def rollup_days(self, resolution_s: int) -> int | None:
        """Days kept for rollups of this resolution (300, 3600 or 86400 s)."""
        days: int | None = {
            300: self.retention_5m_days,
            3600: self.retention_1h_days,
            86400: self.retention_1d_days,
        }[resolution_s]
        return days


RETENTION_KEYS = tuple(Retention.model_fields)
