"""Assets, their hierarchy and their sensors: API models.

Inputs accept the FleetVision seed format verbatim (``equipment_id`` for ``tag``, enum values in
any case, common status synonyms); outputs carry both ``tag`` and ``equipment_id``.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    computed_field,
    field_validator,
    model_validator,
)

from foresight.kit.schemas import CleanStr, InputModel, OutputModel, Page, check_text
from foresight.models.enums import AssetStatus, Criticality, SensorKind

METADATA_MAX_BYTES = 16 * 1024
METADATA_MAX_DEPTH = 16
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/\-]*$"
SENSOR_KEY_PATTERN = r"^[a-z][a-z0-9_]*$"


# --- text hygiene ---------------------------------------------------------------------------


def _text(max_length: int, *, min_length: int = 0, description: str | None = None) -> Any:
    return Field(min_length=min_length, max_length=max_length, description=description)


Tag = Annotated[
    CleanStr,
    Field(
        min_length=1,
        max_length=64,
        pattern=TAG_PATTERN,
        description="Tenant-unique equipment tag, e.g. PUMP-001 (alias: equipment_id)",
    ),
]
AssetName = Annotated[CleanStr, _text(200, min_length=1)]
AssetType = Annotated[CleanStr, _text(64, description="Free text: pump, motor, site, line, …")]
Location = Annotated[CleanStr, _text(200)]
Description = Annotated[CleanStr, _text(10_000)]
HealthScore = Annotated[
    float, Field(ge=0, le=100, allow_inf_nan=False, description="0 (failed) to 100 (healthy)")
]
SensorKey = Annotated[
    CleanStr,
    Field(
        min_length=1,
        max_length=64,
        pattern=SENSOR_KEY_PATTERN,
        description="Unique per asset, e.g. temperature",
    ),
]
SensorName = Annotated[CleanStr, _text(200)]
Unit = Annotated[CleanStr, _text(32, description="Unit of measure, e.g. °C, bar, rpm")]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
SamplingInterval = Annotated[
    float, Field(gt=0, allow_inf_nan=False, description="Expected seconds between readings")
]


# --- enums: case-insensitive, with the synonyms FleetVision seeds use --------------------------

STATUS_SYNONYMS: dict[str, AssetStatus] = {
    "active": AssetStatus.operational,
    "running": AssetStatus.operational,
    "online": AssetStatus.operational,
    "ok": AssetStatus.operational,
    "normal": AssetStatus.operational,
    "healthy": AssetStatus.operational,
    "degraded": AssetStatus.warning,
    "warn": AssetStatus.warning,
    "alarm": AssetStatus.critical,
    "fault": AssetStatus.critical,
    "faulted": AssetStatus.critical,
    "failed": AssetStatus.critical,
    "under_maintenance": AssetStatus.maintenance,
    "in_maintenance": AssetStatus.maintenance,
    "maintenance_mode": AssetStatus.maintenance,
    "servicing": AssetStatus.maintenance,
    "inactive": AssetStatus.offline,
    "down": AssetStatus.offline,
    "stopped": AssetStatus.offline,
    "retired": AssetStatus.decommissioned,
}


def _enum_key(value: object) -> object:
    if isinstance(value, str):
        return "_".join(value.strip().lower().replace("-", " ").split())
    return value


def _normalize_status(value: object) -> object:
    key = _enum_key(value)
    return STATUS_SYNONYMS.get(key, key) if isinstance(key, str) else key


STATUS_DESCRIPTION = (
    "One of operational, warning, critical, maintenance, offline, decommissioned, in any case. "
    "Synonyms accepted on input: active/running/online/ok/normal/healthy → operational; "
    "degraded/warn → warning; alarm/fault/faulted/failed → critical; under_maintenance/"
    "in_maintenance/maintenance_mode/servicing → maintenance; inactive/down/stopped → offline; "
    "retired → decommissioned. Spaces and hyphens count as underscores."
)

StatusIn = Annotated[
    AssetStatus, BeforeValidator(_normalize_status), Field(description=STATUS_DESCRIPTION)
]
CriticalityIn = Annotated[
    Criticality,
    BeforeValidator(_enum_key),
    Field(description="low, medium, high or critical (any case)"),
]
SensorKindIn = Annotated[
    SensorKind,
    BeforeValidator(_enum_key),
    Field(description="gauge, counter, boolean or state (any case)"),
]


# --- metadata -------------------------------------------------------------------------------


def _check_json_tree(value: Any, depth: int) -> None:
    if depth > METADATA_MAX_DEPTH:
        raise ValueError(f"is nested deeper than {METADATA_MAX_DEPTH} levels")
    if isinstance(value, str):
        check_text(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must not contain NaN or infinite numbers")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(str(key))
            _check_json_tree(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json_tree(item, depth + 1)


def check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    _check_json_tree(value, 1)
    try:
        raw = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError("must be a JSON object") from exc
    if len(raw.encode()) > METADATA_MAX_BYTES:
        raise ValueError(f"must be at most {METADATA_MAX_BYTES} bytes serialized as JSON")
    return value


Metadata = Annotated[
    dict[str, Any],
    AfterValidator(check_metadata),
    Field(
        description=f"Free JSON object (at most {METADATA_MAX_BYTES // 1024} KiB serialized, "
        f"{METADATA_MAX_DEPTH} levels deep); replaced as a whole on update"
    ),
]


# --- assets ---------------------------------------------------------------------------------


def _merge_tag_alias(data: Any) -> Any:
    """``equipment_id`` is FleetVision's name for ``tag``; both at once must agree."""
    if isinstance(data, dict) and "tag" in data and "equipment_id" in data:
        if data["tag"] != data["equipment_id"]:
            raise ValueError("tag and equipment_id are the same field; send one of them")
        data = {k: v for k, v in data.items() if k != "equipment_id"}
    return data


TAG_ALIASES = AliasChoices("tag", "equipment_id")


class AssetCreate(InputModel):
    """Also accepts the FleetVision seed JSON verbatim."""

    tag: Tag = Field(validation_alias=TAG_ALIASES)
    name: AssetName
    type: AssetType = ""
    location: Location = ""
    criticality: CriticalityIn = Criticality.medium
    status: StatusIn = AssetStatus.operational
    parent_id: uuid.UUID | None = Field(
        default=None, description="Parent asset in the same tenant (site → line → asset)"
    )
    install_date: date | None = None
    health_score: HealthScore | None = None
    description: Description = ""
    metadata: Metadata = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _tag_alias(cls, data: Any) -> Any:
        return _merge_tag_alias(data)


_NOT_NULL_ASSET_FIELDS = (
    "tag",
    "name",
    "type",
    "location",
    "criticality",
    "status",
    "description",
    "metadata",
)


class AssetUpdate(InputModel):
    """Partial update: only the fields sent change. ``null`` clears parent_id, install_date and
    health_score; the other fields cannot be null."""

    tag: Tag | None = Field(default=None, validation_alias=TAG_ALIASES)
    name: AssetName | None = None
    type: AssetType | None = None
    location: Location | None = None
    criticality: CriticalityIn | None = None
    status: StatusIn | None = None
    parent_id: uuid.UUID | None = None
    install_date: date | None = None
    health_score: HealthScore | None = None
    description: Description | None = None
    metadata: Metadata | None = None

    @model_validator(mode="before")
    @classmethod
    def _tag_alias(cls, data: Any) -> Any:
        return _merge_tag_alias(data)

    @field_validator(*_NOT_NULL_ASSET_FIELDS)
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may not be null")
        return value


class AssetRead(OutputModel):
    id: uuid.UUID
    tag: str
    name: str
    type: str
    location: str
    criticality: Criticality
    status: AssetStatus
    parent_id: uuid.UUID | None
    install_date: date | None
    health_score: float | None
    description: str
    metadata: dict[str, Any] = Field(validation_alias=AliasChoices("attributes", "metadata"))
    created_at: datetime
    updated_at: datetime

    @computed_field(description="Same as tag (FleetVision compatibility)")  # type: ignore[prop-decorator]
    @property
    def equipment_id(self) -> str:
        return self.tag


AssetPage = Page[AssetRead]


class AssetSort(StrEnum):
    tag = "tag"
    tag_desc = "-tag"
    name = "name"
    name_desc = "-name"
    created_at = "created_at"
    created_at_desc = "-created_at"
    updated_at = "updated_at"
    updated_at_desc = "-updated_at"
    criticality = "criticality"
    criticality_desc = "-criticality"
    health_score = "health_score"
    health_score_desc = "-health_score"

    @property
    def field(self) -> str:
        return self.value.lstrip("-")

    @property
    def descending(self) -> bool:
        return self.value.startswith("-")


@dataclass(frozen=True)
class AssetFilters:
    """List filters; each one given narrows the result (AND)."""

    q: str | None = None
    type: str | None = None
    location: str | None = None
    statuses: tuple[AssetStatus, ...] = ()
    criticalities: tuple[Criticality, ...] = ()
    parent_id: uuid.UUID | None = None
    root: bool = False


# --- sensors --------------------------------------------------------------------------------


class SensorCreate(InputModel):
    key: SensorKey
    name: SensorName = ""
    unit: Unit = ""
    kind: SensorKindIn = SensorKind.gauge
    expected_min: FiniteFloat | None = None
    expected_max: FiniteFloat | None = Field(default=None, description="Must be ≥ expected_min")
    sampling_interval_s: SamplingInterval | None = None


_NOT_NULL_SENSOR_FIELDS = ("key", "name", "unit", "kind")


class SensorUpdate(InputModel):
    """Partial update; ``null`` clears expected_min, expected_max and sampling_interval_s."""

    key: SensorKey | None = None
    name: SensorName | None = None
    unit: Unit | None = None
    kind: SensorKindIn | None = None
    expected_min: FiniteFloat | None = None
    expected_max: FiniteFloat | None = None
    sampling_interval_s: SamplingInterval | None = None

    @field_validator(*_NOT_NULL_SENSOR_FIELDS)
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may not be null")
        return value


class SensorRead(OutputModel):
    id: uuid.UUID
    asset_id: uuid.UUID
    key: str
    name: str
    unit: str
    kind: SensorKind
    expected_min: float | None
    expected_max: float | None
    sampling_interval_s: float | None
    created_at: datetime
    updated_at: datetime


SensorPage = Page[SensorRead]
