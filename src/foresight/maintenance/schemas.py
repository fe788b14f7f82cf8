"""Maintenance records: the work done on (or planned for) an asset, and its failures.

Status, when a create request omits it, follows from the times given:

* no ``started_at`` and no ``ended_at`` → ``scheduled`` (``scheduled_for`` is then required);
* else ``ended_at`` given → ``completed``;
* else → ``in_progress``.

Every write (create, and the merged record of a PATCH) must satisfy:

* at least one of ``scheduled_for`` / ``started_at``;
* ``ended_at`` ≥ ``started_at`` when both are set;
* a ``failure`` record has ``started_at`` (when the failure occurred);
* a ``scheduled`` record has ``scheduled_for``; an ``in_progress`` record has ``started_at``;
* ``failure_mode`` only on ``failure`` and ``corrective`` records (the failure they are about).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, field_validator

from foresight.kit.schemas import InputModel, OutputModel, Page, UtcDatetime, check_text
from foresight.models.enums import MaintenanceKind, MaintenanceStatus

# Numeric(14, 2): twelve digits before the point.
MAX_COST = 999_999_999_999.99
# A sanity bound (over a century of downtime), not a business rule.
MAX_DOWNTIME_HOURS = 1_000_000.0
TITLE_MAX = 200
FAILURE_MODE_MAX = 200
NOTES_MAX = 20_000


def _round_cents(value: float) -> float:
    return round(value, 2)


UtcDateTime = UtcDatetime
Title = Annotated[str, Field(max_length=TITLE_MAX), AfterValidator(check_text)]
FailureMode = Annotated[str, Field(max_length=FAILURE_MODE_MAX), AfterValidator(check_text)]
Notes = Annotated[str, Field(max_length=NOTES_MAX), AfterValidator(check_text)]
Cost = Annotated[
    float,
    Field(ge=0, le=MAX_COST, allow_inf_nan=False, description="Rounded to cents"),
    AfterValidator(_round_cents),
]
DowntimeHours = Annotated[
    float, Field(ge=0, le=MAX_DOWNTIME_HOURS, allow_inf_nan=False, description="Hours")
]


class MaintenanceCreate(InputModel):
    kind: MaintenanceKind
    status: MaintenanceStatus | None = Field(
        default=None,
        description="Omitted: scheduled if neither started_at nor ended_at is given, "
        "else completed if ended_at is given, else in_progress.",
    )
    title: Title = ""
    scheduled_for: UtcDateTime | None = None
    started_at: UtcDateTime | None = Field(
        default=None, description="When the work started (for a failure: when it occurred)"
    )
    ended_at: UtcDateTime | None = Field(default=None, description="At or after started_at")
    failure_mode: FailureMode | None = Field(
        default=None, description="Only on failure and corrective records; blank means none"
    )
    cost: Cost | None = None
    downtime_hours: DowntimeHours | None = None
    notes: Notes = ""

    @field_validator("failure_mode")
    @classmethod
    def _blank_failure_mode_is_none(cls, value: str | None) -> str | None:
        return value or None


_NOT_NULL = ("kind", "status", "title", "notes")


def _document_not_null(schema: dict[str, Any]) -> None:
    """Say in the JSON schema what ``_not_null`` enforces: these may be omitted, not null."""
    for name in _NOT_NULL:
        prop = schema.get("properties", {}).get(name, {})
        options = [o for o in prop.pop("anyOf", []) if o.get("type") != "null"]
        if len(options) == 1:
            prop.update(options[0])
        elif options:
            prop["anyOf"] = options
        prop.pop("default", None)


class MaintenanceUpdate(InputModel):
    """Partial update: only the fields sent change; null clears an optional field (not kind,
    status, title or notes)."""

    model_config = ConfigDict(json_schema_extra=_document_not_null)

    kind: MaintenanceKind | None = None
    status: MaintenanceStatus | None = Field(
        default=None,
        description="Moving to in_progress stamps started_at (now) if it is unset; moving to "
        "completed stamps ended_at (now) if it is unset.",
    )
    title: Title | None = None
    scheduled_for: UtcDateTime | None = None
    started_at: UtcDateTime | None = None
    ended_at: UtcDateTime | None = None
    failure_mode: FailureMode | None = None
    cost: Cost | None = None
    downtime_hours: DowntimeHours | None = None
    notes: Notes | None = None

    @field_validator(*_NOT_NULL)
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Defaults are not validated, so this sees only an explicit null.
        if value is None:
            raise ValueError("may not be null")
        return value

    @field_validator("failure_mode")
    @classmethod
    def _blank_failure_mode_is_none(cls, value: str | None) -> str | None:
        return value or None


class MaintenanceRead(OutputModel):
    id: uuid.UUID
    tenant_id: uuid.UUID
    asset_id: uuid.UUID
    kind: MaintenanceKind
    status: MaintenanceStatus
    title: str
    scheduled_for: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    failure_mode: str | None
    cost: float | None
    downtime_hours: float | None
    notes: str
    created_by_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class UpcomingMaintenance(MaintenanceRead):
    asset_tag: str
    asset_name: str
    overdue: bool = Field(description="Still scheduled although scheduled_for has passed")


MaintenancePage = Page[MaintenanceRead]
UpcomingPage = Page[UpcomingMaintenance]
