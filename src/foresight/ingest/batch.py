"""The one shape every ingestion door produces: a columnar batch plus per-row errors."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from foresight.kit.time import utcnow

# Points before this are refused (and keep epoch-ms bucket arithmetic non-negative).
MIN_TS_MS = 0
RESERVED_SINGLE_KEYS = frozenset({"equipment_id", "asset", "timestamp", "ts"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class RowError:
    """Why one point (or a whole row) was refused. ``row`` counts from 0 in the request."""

    row: int
    reason: str
    asset: str | None = None
    sensor: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "asset": self.asset, "sensor": self.sensor, "reason": self.reason}


@dataclass
class Batch:
    """Good points of one request, columnar; ``row`` maps each point back to its input row."""

    tenant_id: uuid.UUID
    asset: list[str] = field(default_factory=list)
    sensor: list[str] = field(default_factory=list)
    ts_ms: list[int] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    row: list[int] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    # Who sent it (audit label for sensors or assets created on the fly).
    actor_label: str = "ingest"

    def __len__(self) -> int:
        return len(self.ts_ms)

    def add(self, row: int, asset: str, sensor: str, ts_ms: int, value: float) -> None:
        self.asset.append(asset)
        self.sensor.append(sensor)
        self.ts_ms.append(ts_ms)
        self.value.append(value)
        self.row.append(row)

    def reject(
        self, row: int, reason: str, asset: str | None = None, sensor: str | None = None
    ) -> None:
        # Echoed input may hold lone surrogates (JSON "\ud800"), which no response can encode.
        asset, sensor = (None if t is None else _echo(t) for t in (asset, sensor))
        self.errors.append(RowError(row, _echo(reason), asset, sensor))


def _echo(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class Limits:
    """Validation bounds shared by every door."""

    def __init__(self, *, max_future_s: float) -> None:
        self.max_future_ms = int(max_future_s * 1000)

    def latest_allowed_ms(self) -> int:
        return int(utcnow().timestamp() * 1000) + self.max_future_ms


def parse_ts(raw: Any) -> int:
    """ISO 8601 (a zone-less time is UTC) or epoch seconds (number or numeric string) → ms."""
    if isinstance(raw, bool):
        raise ValueError("timestamp must be ISO 8601 or epoch seconds, not a boolean")
    if isinstance(raw, int | float):
        try:
            seconds = float(raw)
        except OverflowError as exc:  # an integer too large for a float
            raise ValueError("timestamp out of range") from exc
    elif isinstance(raw, str):
        text = raw.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError as exc:
                raise ValueError(f"unreadable timestamp {raw[:40]!r}") from exc
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            try:
                # Exact: float seconds * 1000 may land just under the millisecond it names.
                return (parsed - _EPOCH) // _ONE_MS
            except (OverflowError, OSError) as exc:
                raise ValueError(f"timestamp out of range {raw[:40]!r}") from exc
    else:
        raise ValueError("timestamp must be ISO 8601 or epoch seconds")
    if not math.isfinite(seconds):
        raise ValueError("timestamp must be finite")
    return int(round(seconds * 1000))


def parse_value(raw: Any) -> float:
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, int | float):
        try:
            value = float(raw)
        except OverflowError as exc:  # an integer too large for a float
            raise ValueError("value out of range") from exc
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError as exc:
            raise ValueError(f"not a number: {raw[:40]!r}") from exc
    else:
        raise ValueError(f"not a number: {type(raw).__name__}")
    if not math.isfinite(value):
        raise ValueError("value must be finite (NaN and infinity are refused)")
    return value


def check_ts(ts_ms: int, limits: Limits, latest_ms: int) -> str | None:
    if ts_ms < MIN_TS_MS:
        return "timestamp before 1970-01-01"
    if ts_ms > latest_ms:
        return f"timestamp more than {limits.max_future_ms // 1000} s in the future"
    return None
