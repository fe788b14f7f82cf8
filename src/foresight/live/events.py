"""The messages pushed to WebSocket clients: one envelope for every kind of event.

Every message is a JSON object ``{"type", "asset_id", "at", "data"}`` (alerts add ``event``):

* ``type``: ``readings`` | ``alert`` | ``anomaly`` | ``health`` (and ``hello`` / ``pong`` from
  the socket itself); clients should ignore types they do not know.
* ``asset_id``: the asset the event is about (``null`` for tenant-wide events).
* ``at``: when the event was emitted (ISO 8601, UTC); data times live inside ``data``.
* ``data``: the payload of that type.

Anyone may publish an event of a new type with :func:`envelope` (or a builder below) through
``publish(tenant_id, asset_id, event)`` of the process's publisher (``app.state.live``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from foresight.detection.schemas import AlertRead
from foresight.models import Alert

READINGS = "readings"
ALERT = "alert"
ANOMALY = "anomaly"
HEALTH = "health"
EVENT_TYPES = frozenset({READINGS, ALERT, ANOMALY, HEALTH})

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Event = dict[str, Any]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def iso_ms(ts_ms: int) -> str:
    return iso(_EPOCH + timedelta(milliseconds=int(ts_ms)))


def now_iso() -> str:
    return iso(datetime.now(UTC))


def envelope(
    type_: str, data: Mapping[str, Any], *, event: str | None = None, at: str | None = None
) -> Event:
    """An event without its asset (``publish`` adds ``asset_id``; ``at`` defaults to now)."""
    message: Event = {"type": type_}
    if event is not None:
        message["event"] = event
    message["at"] = at or now_iso()
    message["data"] = dict(data)
    return message


def alert_event(kind: str, alert: Alert) -> Event:
    """``kind`` is the alert change: alert.opened|repeated|acknowledged|resolved."""
    data = AlertRead.model_validate(alert).model_dump(mode="json")
    return envelope(ALERT, data, event=kind)


def anomaly_event(
    *,
    sensor: str | None,
    ts: datetime,
    score: float,
    flag: bool,
    drivers: list[str] | None = None,
    **extra: Any,
) -> Event:
    """An anomaly score change: the data time, the score, whether it is flagged, which sensors."""
    data: dict[str, Any] = {"sensor": sensor, "ts": iso(ts), "score": score, "flag": flag}
    data["drivers"] = list(drivers or ([sensor] if sensor else []))
    return envelope(ANOMALY, {**data, **extra})


def health_event(
    *, health_score: float | None, previous: float | None = None, **extra: Any
) -> Event:
    """An asset's health score (0-100) changed."""
    return envelope(HEALTH, {"health_score": health_score, "previous": previous, **extra})


@dataclass(slots=True)
class SensorStat:
    """A sensor's points over one interval: the newest one, and min/max/count of all."""

    ts_ms: int
    value: float
    min: float
    max: float
    count: int

    def merge(self, other: SensorStat) -> None:
        if other.ts_ms >= self.ts_ms:
            self.ts_ms, self.value = other.ts_ms, other.value
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count

    def as_list(self) -> list[float | int]:
        return [self.ts_ms, self.value, self.min, self.max, self.count]

    @classmethod
    def from_list(cls, raw: list[Any]) -> SensorStat:
        ts_ms, value, low, high, count = raw
        return cls(int(ts_ms), float(value), float(low), float(high), int(count))


@dataclass(slots=True)
class AssetReadings:
    """New points of one asset since its last readings message, per sensor key."""

    tenant_id: uuid.UUID
    asset_id: uuid.UUID
    sensors: dict[str, SensorStat] = field(default_factory=dict)

    def add(self, key: str, stat: SensorStat) -> None:
        known = self.sensors.get(key)
        if known is None:
            self.sensors[key] = SensorStat(stat.ts_ms, stat.value, stat.min, stat.max, stat.count)
        else:
            known.merge(stat)

    def merge(self, other: AssetReadings) -> None:
        for key, stat in other.sensors.items():
            self.add(key, stat)

    def event(self) -> Event:
        sensors = {
            key: {
                "ts": iso_ms(stat.ts_ms),
                "value": stat.value,
                "min": stat.min,
                "max": stat.max,
                "count": stat.count,
            }
            for key, stat in sorted(self.sensors.items())
        }
        return with_asset(self.asset_id, envelope(READINGS, {"sensors": sensors}))


def with_asset(asset_id: uuid.UUID | None, event: Mapping[str, Any]) -> Event:
    """The wire shape: ``type`` first, then ``event`` (if any), ``asset_id``, ``at``, ``data``."""
    if "type" not in event or not isinstance(event["type"], str):
        raise ValueError("a live event needs a string 'type'")
    message: Event = {"type": event["type"]}
    if "event" in event:
        message["event"] = event["event"]
    message["asset_id"] = str(asset_id) if asset_id is not None else None
    message["at"] = event.get("at") or now_iso()
    message["data"] = dict(event.get("data") or {})
    for key, value in event.items():
        message.setdefault(key, value)
    return message
