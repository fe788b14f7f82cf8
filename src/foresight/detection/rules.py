"""Compiled alert rules and their vectorised evaluation over a series' new points.

A condition looks at one sensor. Its *signal* is the raw value, an aggregate (mean, min or max)
over a trailing time window ``(t - window, t]``, or the absolute rate of change per ``per_s``
seconds between consecutive points. It *triggers* when the signal passes the threshold and
*clears* when it is back by the rule's hysteresis (``> 80`` with hysteresis 5 clears below 75);
in between it keeps its state. A rule combines its conditions with ``all`` or ``any`` and fires
once the combination has held for ``for_s`` seconds of data time.

Everything here works on numpy arrays of one series' points (sorted by time), so the cost per
point is a few vector operations, not a Python loop; Python only visits state changes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import numpy as np
import numpy.typing as npt

from foresight.models import Asset
from foresight.models.enums import Severity

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

COMPARISONS = (">", ">=", "<", "<=")
OPS = (*COMPARISONS, "outside", "rate", "no_data")
AGGREGATES = ("raw", "mean", "min", "max")


@dataclass(frozen=True)
class Condition:
    sensor: str
    op: str
    threshold: float | None = None
    min: float | None = None
    max: float | None = None
    aggregate: str = "raw"
    window_s: float = 0.0
    per_s: float = 60.0
    no_data_s: float = 0.0

    @property
    def lookback_ms(self) -> int:
        """How much history before a point its signal needs."""
        return int(self.window_s * 1000) if self.aggregate != "raw" else 0

    def describe(self) -> str:
        if self.op == "no_data":
            return f"{self.sensor} silent for {self.no_data_s / 60:g} min"
        signal = self.sensor
        if self.aggregate != "raw":
            signal = f"{self.aggregate}({self.sensor}, {_duration(self.window_s)})"
        if self.op == "rate":
            return f"rate of change of {signal} > {self.threshold:g} per {_duration(self.per_s)}"
        if self.op == "outside":
            return f"{signal} outside [{self.min:g}, {self.max:g}]"
        return f"{signal} {self.op} {self.threshold:g}"

    # --- evaluation ---------------------------------------------------------------------------

    def signal(self, ts: I64, value: F64, start: int) -> F64:
        """The signal at points ``start:`` of ``(ts, value)`` (the rest is history)."""
        if self.op == "rate":
            if start == 0:  # no previous point: the first new point has no rate
                prev_t = np.concatenate(([ts[0]], ts[:-1]))
                prev_v = np.concatenate(([value[0]], value[:-1]))
            else:
                prev_t, prev_v = ts[start - 1 : -1], value[start - 1 : -1]
            cur_t, cur_v = ts[start:], value[start:]
            dt_s = (cur_t - prev_t) / 1000.0
            with np.errstate(divide="ignore", invalid="ignore"):
                rate = np.abs(cur_v - prev_v) / dt_s * self.per_s
            rate[dt_s <= 0] = 0.0
            return np.asarray(rate, dtype=np.float64)
        if self.aggregate == "raw":
            return value[start:]
        window_ms = int(self.window_s * 1000)
        cur = ts[start:]
        left = np.searchsorted(ts, cur - window_ms, side="right")
        right = np.arange(start + 1, ts.shape[0] + 1)
        if self.aggregate == "mean":
            csum = np.concatenate(([0.0], np.cumsum(value)))
            return np.asarray((csum[right] - csum[left]) / (right - left), dtype=np.float64)
        ufunc = np.minimum if self.aggregate == "min" else np.maximum
        bounds = np.empty(2 * cur.shape[0], dtype=np.int64)
        bounds[0::2], bounds[1::2] = left, right
        padded = np.concatenate((value, value[-1:]))  # reduceat needs indices < len
        return np.asarray(ufunc.reduceat(padded, bounds)[0::2], dtype=np.float64)

    def triggers(self, x: F64) -> BoolArray:
        if self.op == "outside":
            assert self.min is not None and self.max is not None
            return np.asarray((x < self.min) | (x > self.max))
        assert self.threshold is not None
        if self.op in (">", "rate"):
            return np.asarray(x > self.threshold)
        if self.op == ">=":
            return np.asarray(x >= self.threshold)
        if self.op == "<":
            return np.asarray(x < self.threshold)
        return np.asarray(x <= self.threshold)

    def clears(self, x: F64, hysteresis: float) -> BoolArray:
        if self.op == "outside":
            assert self.min is not None and self.max is not None
            return np.asarray((x >= self.min + hysteresis) & (x <= self.max - hysteresis))
        assert self.threshold is not None
        if self.op in (">", ">=", "rate"):
            return np.asarray(x < self.threshold - hysteresis if hysteresis else ~self.triggers(x))
        return np.asarray(x > self.threshold + hysteresis if hysteresis else ~self.triggers(x))


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


@dataclass(frozen=True)
class Scope:
    """Which assets a rule watches: all conditions given must hold (empty: every asset)."""

    asset_id: uuid.UUID | None = None
    asset_type: str | None = None
    criticality: frozenset[str] = frozenset()
    metadata: tuple[tuple[str, Any], ...] = ()
    tag_pattern: str | None = None

    def matches(self, asset: AssetInfo) -> bool:
        if self.asset_id is not None and asset.id != self.asset_id:
            return False
        if self.tag_pattern is not None and not fnmatchcase(asset.tag, self.tag_pattern):
            return False
        if self.asset_type is not None and asset.type != self.asset_type:
            return False
        if self.criticality and asset.criticality not in self.criticality:
            return False
        return all(asset.metadata.get(k) == v for k, v in self.metadata)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Scope:
        asset_id = raw.get("asset_id")
        return cls(
            asset_id=uuid.UUID(str(asset_id)) if asset_id else None,
            asset_type=raw.get("asset_type") or None,
            criticality=frozenset(raw.get("criticality") or ()),
            metadata=tuple(sorted((raw.get("metadata") or {}).items())),
            tag_pattern=raw.get("tag_pattern") or None,
        )


@dataclass(frozen=True)
class AssetInfo:
    id: uuid.UUID
    tenant_id: uuid.UUID
    tag: str
    type: str
    criticality: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, asset: Asset) -> AssetInfo:
        return cls(
            asset.id, asset.tenant_id, asset.tag, asset.type, str(asset.criticality),
            dict(asset.attributes or {}),
        )  # fmt: skip


@dataclass(frozen=True)
class CompiledRule:
    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    severity: Severity
    scope: Scope
    conditions: tuple[Condition, ...]
    combine: str
    for_s: float
    hysteresis: float
    auto_resolve: bool
    version: int

    @property
    def source(self) -> str:
        return f"rule:{self.id}"

    @property
    def sensors(self) -> frozenset[str]:
        return frozenset(c.sensor for c in self.conditions)

    def combined(self, states: list[bool | None]) -> bool:
        known = [s for s in states if s is not None]
        if self.combine == "any":
            return any(known)
        return len(known) == len(states) and all(known)

    def definitely_false(self, states: list[bool | None]) -> bool:
        if self.combine == "any":
            return all(s is False for s in states)
        return any(s is False for s in states)

    def describe(self) -> str:
        joiner = " and " if self.combine == "all" else " or "
        text = joiner.join(c.describe() for c in self.conditions)
        if self.for_s:
            text += f" for {_duration(self.for_s)}"
        return text


def condition_from_json(raw: dict[str, Any]) -> Condition:
    """A stored (already validated) condition."""
    return Condition(
        sensor=str(raw["sensor"]),
        op=str(raw["op"]),
        threshold=_opt_float(raw.get("threshold")),
        min=_opt_float(raw.get("min")),
        max=_opt_float(raw.get("max")),
        aggregate=str(raw.get("aggregate") or "raw"),
        window_s=float(raw.get("window") or 0.0),
        per_s=float(raw.get("per") or 60.0),
        no_data_s=float(raw.get("minutes") or 0.0) * 60.0,
    )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def state_changes(
    trig: BoolArray, clear: BoolArray, initial: bool | None
) -> tuple[npt.NDArray[np.intp], BoolArray]:
    """Indices where a hysteresis state changes, and the state from each of them on.

    The state turns true on a trigger, false on a clear, and otherwise keeps its value.
    """
    n = trig.shape[0]
    event = np.full(n, -1, dtype=np.int8)
    event[clear] = 0
    event[trig] = 1  # a point that both triggers and clears (hysteresis 0 cannot) triggers
    has = event >= 0
    idx = np.where(has, np.arange(n), -1)
    np.maximum.accumulate(idx, out=idx)
    start = -1 if initial is None else int(initial)
    state = np.where(idx >= 0, event[np.maximum(idx, 0)], start)
    previous = np.concatenate(([start], state[:-1]))
    changed = np.flatnonzero(state != previous)
    return changed, state[changed].astype(bool)
