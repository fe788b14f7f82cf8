"""Time-series tables: raw points, mergeable rollups and the latest value of each sensor.

Points are narrow and numeric: (series_id, ts_ms, value). ``series_id`` is the sensor's integer
surrogate (``sensors.series_id``) and ``ts_ms`` is epoch milliseconds, UTC: compact on SQLite
(a WITHOUT ROWID table keyed by both) and the range-partitioning key on PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Integer
from sqlalchemy.orm import Mapped, mapped_column

from foresight.kit.db import Base

# Rollup resolutions, in seconds.
RESOLUTIONS_S = (300, 3600, 86400)


class Reading(Base):
    __tablename__ = "readings"
    __table_args__ = {
        "sqlite_with_rowid": False,
        "postgresql_partition_by": "RANGE (ts_ms)",
    }

    series_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    ts_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class Rollup(Base):
    """Mergeable aggregates of one series over one bucket (Chan et al. for the variance)."""

    __tablename__ = "readings_rollup"
    __table_args__ = {"sqlite_with_rowid": False}

    series_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    resolution_s: Mapped[int] = mapped_column(Integer, primary_key=True)
    bucket_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    mean: Mapped[float] = mapped_column(Float)
    m2: Mapped[float] = mapped_column(Float)  # sum of squared deviations from the mean
    min: Mapped[float] = mapped_column(Float)
    max: Mapped[float] = mapped_column(Float)
    last_ts_ms: Mapped[int] = mapped_column(BigInteger)
    last: Mapped[float] = mapped_column(Float)


class SeriesLatest(Base):
    """The newest point of each series (what `readings/latest` serves, without a scan)."""

    __tablename__ = "series_latest"

    series_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[float] = mapped_column(Float)
    # Changes whenever sealed buckets of the series change (``timeseries.store.SEALED_BLOCK_MS``):
    # readers that kept them compare it. Random, so a recreated row never repeats an old value.
    revision: Mapped[int] = mapped_column(BigInteger)
    write_min_ms: Mapped[int | None] = mapped_column(BigInteger)  # earliest point of the last write


__all__ = ["RESOLUTIONS_S", "Reading", "Rollup", "SeriesLatest"]
