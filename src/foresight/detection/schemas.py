"""Alert rules and alerts over the API.

A rule (``POST /api/v1/alert-rules``)::

    {"name": "Bearing running hot", "severity": "warning",
     "scope": {"asset_type": "pump"},
     "conditions": [{"sensor": "temperature", "op": ">", "threshold": 80,
                     "aggregate": "mean", "window": "5m"}],
     "combine": "all", "for": "10m", "clear_hysteresis": 2}

* ``op``: ``>``, ``>=``, ``<``, ``<=`` (with ``threshold``), ``outside`` (with ``min`` ≤ ``max``),
  ``rate`` (absolute change per ``per``, default 1 min, above ``threshold``), ``no_data`` (the
  sensor silent for ``minutes``);
* ``aggregate``: ``raw`` (default) or ``mean``/``min``/``max`` over the trailing ``window``;
* durations are seconds or strings such as ``"30s"``, ``"5m"``, ``"1h"``, ``"2d"``; responses give
  seconds;
* ``scope``: ``asset_id`` or ``asset_tag`` (one asset), ``tag_pattern`` (a glob on asset tags,
  e.g. ``PUMP-*``), ``asset_type``, ``criticality`` (a list) and ``metadata`` (key/value pairs the
  asset's metadata must hold), all optional and combined with AND; ``{}`` watches every asset;
* ``combine``: ``all`` (AND) or ``any`` (OR) of the conditions;
* ``for``: the combination must hold this long (data time) before the alert opens;
* ``clear_hysteresis``: how far back past the threshold a value must come to clear (``> 80``
  with 2 clears below 78); ``auto_resolve`` (default true) resolves the alert when it clears.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from foresight.kit.schemas import InputModel, OutputModel, Page, check_text
from foresight.models.enums import AlertStatus, Criticality, Severity

SENSOR_KEY = r"^[a-z][a-z0-9_]{0,63}$"
MAX_DURATION_S = 366 * 86400
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def _duration(value: Any) -> Any:
    """Seconds from a number or "30s" / "5m" / "1h" / "2d"."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '5m'")
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if not match:
            raise ValueError(f"unreadable duration {value[:40]!r}: use seconds or e.g. '5m', '1h'")
        return float(match.group(1)) * _UNITS[match.group(2)]
    return value


Duration = Annotated[
    float,
    BeforeValidator(_duration),
    Field(ge=0, le=MAX_DURATION_S, allow_inf_nan=False, description="Seconds, or e.g. '5m'"),
]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(check_text)]
Text = Annotated[str, Field(max_length=5000), AfterValidator(check_text)]
Op = Literal[">", ">=", "<", "<=", "outside", "rate", "no_data"]
Aggregate = Literal["raw", "mean", "min", "max"]


class ConditionIn(InputModel):
    sensor: Annotated[str, Field(pattern=SENSOR_KEY, description="A sensor key, e.g. vibration")]
    op: Op
    threshold: FiniteFloat | None = None
    min: FiniteFloat | None = None
    max: FiniteFloat | None = None
    aggregate: Aggregate = "raw"
    window: Duration | None = Field(default=None, description="For aggregates: trailing window")
    per: Duration | None = Field(default=None, description="For rate: per this period (1 min)")
    minutes: Annotated[float, Field(gt=0, le=MAX_DURATION_S / 60, allow_inf_nan=False)] | None = (
        Field(default=None, description="For no_data: silent this many minutes")
    )

    @model_validator(mode="after")
    def _consistent(self) -> ConditionIn:
        op = self.op
        if op in (">", ">=", "<", "<=", "rate") and self.threshold is None:
            raise ValueError(f"op {op!r} needs a threshold")
        if op == "outside":
            if self.min is None or self.max is None:
                raise ValueError("op 'outside' needs min and max")
            if self.min > self.max:
                raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        if op == "no_data":
            if self.minutes is None:
                raise ValueError("op 'no_data' needs minutes (how long the sensor is silent)")
            if self.aggregate != "raw":
                raise ValueError("op 'no_data' takes no aggregate")
        elif self.minutes is not None:
            raise ValueError("minutes applies to op 'no_data' only")
        if self.aggregate != "raw":
            if self.window is None or self.window <= 0:
                raise ValueError(
                    f"aggregate {self.aggregate!r} needs a window longer than 0 (e.g. '5m')"
                )
        elif self.window is not None:
            raise ValueError("window applies to aggregates (mean, min, max) only")
        if op == "rate":
            if self.per is not None and self.per <= 0:
                raise ValueError("per must be longer than 0")
        elif self.per is not None:
            raise ValueError("per applies to op 'rate' only")
        if op != "outside" and (self.min is not None or self.max is not None):
            raise ValueError("min and max apply to op 'outside' only")
        if op in ("outside", "no_data") and self.threshold is not None:
            raise ValueError(f"op {op!r} takes no threshold")
        return self

    def stored(self) -> dict[str, Any]:
        """The canonical JSON kept in the rule (and returned by the API)."""
        out: dict[str, Any] = {"sensor": self.sensor, "op": self.op, "aggregate": self.aggregate}
        for name in ("threshold", "min", "max", "window", "minutes"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.op == "rate":
            out["per"] = self.per if self.per is not None else 60.0
        return out


class ScopeIn(InputModel):
    asset_id: uuid.UUID | None = None
    asset_tag: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="One asset by tag (portable between sites, unlike asset_id)"
    )
    asset_type: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    tag_pattern: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="Assets whose tag matches this glob, e.g. 'PUMP-*'"
    )
    criticality: list[Criticality] | None = None
    metadata: dict[str, str | int | float | bool] | None = None

    def stored(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.asset_id is not None:
            out["asset_id"] = str(self.asset_id)
        if self.asset_tag:
            out["asset_tag"] = self.asset_tag
        if self.asset_type:
            out["asset_type"] = self.asset_type
        if self.tag_pattern:
            out["tag_pattern"] = self.tag_pattern
        if self.criticality:
            out["criticality"] = sorted({c.value for c in self.criticality})
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out


class _RuleFields(InputModel):
    @field_validator("for_", check_fields=False)
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be finite")
        return value


class RuleCreate(_RuleFields):
    name: Name
    description: Text = ""
    enabled: bool = True
    severity: Severity
    scope: ScopeIn = Field(default_factory=ScopeIn)
    conditions: Annotated[list[ConditionIn], Field(min_length=1, max_length=20)]
    combine: Literal["all", "any"] = "all"
    for_: Duration = Field(default=0.0, alias="for", description="Hold this long before firing")
    clear_hysteresis: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    auto_resolve: bool = True


class RuleUpdate(_RuleFields):
    """Partial update: only the fields sent change."""

    name: Name | None = None
    description: Text | None = None
    enabled: bool | None = None
    severity: Severity | None = None
    scope: ScopeIn | None = None
    conditions: Annotated[list[ConditionIn], Field(min_length=1, max_length=20)] | None = None
    combine: Literal["all", "any"] | None = None
    for_: Duration | None = Field(default=None, alias="for")
    clear_hysteresis: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    auto_resolve: bool | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> RuleUpdate:
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name.rstrip('_')} may not be null")
        return self


class RuleRead(OutputModel):
    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    description: str
    enabled: bool
    severity: Severity
    scope: dict[str, Any]
    conditions: list[dict[str, Any]]
    combine: str
    for_: float = Field(alias="for_s", serialization_alias="for")
    clear_hysteresis: float
    auto_resolve: bool
    origin: str = Field(description="user, or default (made from a sensor's expected range)")
    error: str | None = Field(description="Why evaluation failed and the rule was disabled")
    version: int
    created_at: datetime
    updated_at: datetime


RulePage = Page[RuleRead]


class RuleSet(InputModel):
    """A tenant's rules for export and import (names identify rules across sites)."""

    format: Literal["foresight.alert-rules/v1"] = "foresight.alert-rules/v1"
    rules: Annotated[list[RuleCreate], Field(max_length=5000)]


class RuleImportResult(OutputModel):
    created: int
    updated: int
    unchanged: int


# --- alerts ---------------------------------------------------------------------------------


class AlertRead(OutputModel):
    id: uuid.UUID
    tenant_id: uuid.UUID
    asset_id: uuid.UUID
    rule_id: uuid.UUID | None
    source: str
    severity: Severity
    status: AlertStatus
    title: str
    message: str
    sensor: str | None
    triggered_at: datetime = Field(description="Data time of the reading that opened it")
    last_triggered_at: datetime
    count: int = Field(description="Times it fired while active")
    last_value: float | None
    details: dict[str, Any]
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    acknowledge_note: str
    resolved_at: datetime | None
    resolved_by: str | None
    resolve_note: str
    created_at: datetime
    updated_at: datetime


AlertPage = Page[AlertRead]


class AlertAction(InputModel):
    note: Text = ""


class CountBy(OutputModel):
    key: str
    count: int


class AlertStats(OutputModel):
    total: int
    by_severity: dict[str, int]
    by_status: dict[str, int]
    by_asset: list[CountBy] = Field(description="Assets with the most alerts first (top 20)")
    by_day: list[CountBy] = Field(description="Alerts triggered per UTC day (YYYY-MM-DD)")
    mean_time_to_acknowledge_s: float | None
    mean_time_to_resolve_s: float | None


class AnomalyPoint(OutputModel):
    ts: datetime = Field(description="Start of the minute (data time)")
    detector: str = Field(description="sensor (per-sensor baselines) or multivariate")
    score: float = Field(description="1 = at the detection threshold")
    flag: bool
    kind: str = Field(description="spike, level_shift, noise, stuck, drift or multivariate")
    sensors: list[str] = Field(description="The sensors that drove the score, most first")


class AnomalySeries(OutputModel):
    asset_id: uuid.UUID
    start: datetime
    end: datetime
    items: list[AnomalyPoint]
    truncated: bool = Field(description="More minutes than `limit` in the window")
