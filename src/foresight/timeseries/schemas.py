"""Readings of an asset's sensors: API models for raw points, rollups and latest values.

Timestamps are epoch milliseconds (UTC) in the store and ISO 8601 UTC at the API.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from foresight.kit.schemas import CleanStr, OutputModel

# The most points per sensor a JSON answer carries (what `resolution=auto` aims below).
MAX_POINTS = 2000

SensorKeyIn = Annotated[CleanStr, Field(min_length=1, max_length=64)]


class Resolution(StrEnum):
    auto = "auto"
    raw = "raw"
    m5 = "5m"
    h1 = "1h"
    d1 = "1d"

    @property
    def seconds(self) -> int | None:
        """The rollup's bucket width; None for raw points (and for auto)."""
        return {"5m": 300, "1h": 3600, "1d": 86400}.get(self.value)


class ExportFormat(StrEnum):
    json = "json"
    csv = "csv"


@dataclass(frozen=True)
class ReadingsQuery:
    """What `GET /assets/{id}/readings` asks for (times already UTC; None = default)."""

    sensors: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    resolution: Resolution = Resolution.auto


class RawPoint(OutputModel):
    ts: datetime
    value: float


class RollupPoint(OutputModel):
    ts: datetime = Field(description="Start of the bucket")
    count: int
    mean: float
    min: float
    max: float
    stddev: float = Field(description="Population standard deviation")
    last: float = Field(description="The bucket's newest value")


class SensorSeries(OutputModel):
    sensor: str = Field(description="Sensor key")
    unit: str
    points: list[RawPoint] | list[RollupPoint]


class ReadingsResponse(OutputModel):
    asset_id: uuid.UUID
    start: datetime
    end: datetime
    resolution: str = Field(
        pattern=r"^(raw|5m|1h|[1-9][0-9]*d)$",
        description="raw, 5m, 1h, 1d, or <n>d when daily rollups were merged into n-day buckets",
    )
    series: list[SensorSeries]


class LatestValue(OutputModel):
    sensor: str = Field(description="Sensor key")
    unit: str
    ts: datetime | None = Field(description="null while the sensor has no data")
    value: float | None


class LatestReadings(OutputModel):
    asset_id: uuid.UUID
    sensors: list[LatestValue]
