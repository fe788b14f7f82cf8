"""Training and scoring data from the store, on both backends: statistics against numpy, no
leakage (bit-identical rows when anything after t changes), labels with censoring, missing
sensors, scoring as of the latest reading (also after the 1 h rollups expired), encodings and the
engineer-facing phrasing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, text

from foresight.assets import service as assets_service
from foresight.assets.schemas import AssetCreate, SensorCreate
from foresight.auth.schemas import Principal
from foresight.detection import alerts as alerts_service
from foresight.detection.anomaly import MinuteScore
from foresight.detection.anomaly_stage import store_scores
from foresight.kit.db import Database
from foresight.maintenance import service as maintenance_service
from foresight.maintenance.schemas import MaintenanceCreate
from foresight.models import (
    ActorType,
    Criticality,
    MaintenanceKind,
    MaintenanceStatus,
    Role,
    Severity,
)
from foresight.prediction import labels
from foresight.prediction.features import (
    FeatureConfig,
    FeatureFrame,
    FeatureSpec,
    build_dataset,
)
from foresight.timeseries.store import write_arrays
from tests.factories import Factory

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MIN_MS = 60_000
HOUR_MS = 60 * MIN_MS
DAY_MS = 24 * HOUR_MS
SMALL = FeatureConfig(
    windows_h=(24, 168),
    anomaly_windows_h=(24, 168),
    alert_windows_h=(168,),
    ewma_halflife_h=12.0,
)


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass
class Fleet:
    db: Database
    tenant_id: uuid.UUID
    series: dict[tuple[str, str], int] = field(default_factory=dict)  # (tag, key) → series
    assets: dict[str, uuid.UUID] = field(default_factory=dict)
    points: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def principal(self) -> Principal:
        return Principal(self.tenant_id, ActorType.system, uuid.UUID(int=0), "test", Role.admin)

    def asset(
        self,
        tag: str,
        sensors: dict[str, str],
        *,
        type: str = "pump",
        criticality: Criticality = Criticality.medium,
        install_date: date | None = None,
    ) -> uuid.UUID:
        with self.db.transaction() as session:
            asset = assets_service.create_asset(
                session,
                principal=self.principal,
                data=AssetCreate(
                    tag=tag,
                    name=tag,
                    type=type,
                    criticality=criticality,
                    install_date=install_date,
                ),
            )
            for key, unit in sensors.items():
                sensor = assets_service.create_sensor(
                    session,
                    principal=self.principal,
                    asset_id=asset.id,
                    data=SensorCreate(key=key, unit=unit),
                )
                self.series[(tag, key)] = sensor.series_id
            self.assets[tag] = asset.id
            return asset.id

    def write(self, tag: str, key: str, ts: np.ndarray, values: np.ndarray) -> None:
        sid = self.series[(tag, key)]
        ts = np.asarray(ts, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        with self.db.transaction() as session:
            write_arrays(session, np.full(ts.shape, sid), ts, values)
        old_ts, old_v = self.points.get(sid, (np.empty(0, np.int64), np.empty(0)))
        self.points[sid] = (np.r_[old_ts, ts], np.r_[old_v, values])

    def record(
        self,
        tag: str,
        kind: MaintenanceKind,
        started_ms: int | None,
        *,
        ended_ms: int | None = None,
        status: MaintenanceStatus | None = None,
    ) -> None:
        with self.db.transaction() as session:
            maintenance_service.create_record(
                session,
                principal=self.principal,
                asset_id=self.assets[tag],
                data=MaintenanceCreate(
                    kind=kind,
                    status=status,
                    started_at=None if started_ms is None else at(started_ms),
                    ended_at=None if ended_ms is None else at(ended_ms),
                ),
            )

    def build(self, config: FeatureConfig = SMALL, **kwargs: object) -> FeatureFrame:
        return build_dataset(self.db, self.tenant_id, config, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def fleet(db: Database, factory: Factory) -> Fleet:
    return Fleet(db, factory.tenant().id)


def row(frame: FeatureFrame, asset_id: uuid.UUID, t: int) -> int:
    hits = np.flatnonzero((frame.asset_id == str(asset_id)) & (frame.as_of_ms == t))
    assert hits.shape[0] == 1, f"no single row for {asset_id} at {t}"
    return int(hits[0])


def value(frame: FeatureFrame, asset_id: uuid.UUID, t: int, name: str) -> float:
    return float(frame.X[row(frame, asset_id, t), frame.index(name)])


def hourly(ts: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bucket start, count, mean) of the 1 h buckets of these points."""
    bucket = ts - ts % HOUR_MS
    starts, inverse, counts = np.unique(bucket, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=values)
    return starts, counts.astype(float), sums / counts


# --- statistics ------------------------------------------------------------------------------


def mixed(
    ts: np.ndarray, values: np.ndarray, t: int, tail_h: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bucket centre, count, mean) of the buckets complete by t: 1 h buckets from the UTC
    midnight at or before t - tail_h on (everywhere when tail_h is None), 1 d buckets before."""
    cut = -1 if tail_h is None else (t - tail_h * HOUR_MS) // DAY_MS * DAY_MS
    span = np.where(ts >= cut, HOUR_MS, DAY_MS)
    start = ts - ts % span
    key = start * 2 + (span == DAY_MS)
    keys, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=values)
    starts = keys // 2
    spans = np.where(keys % 2 == 1, DAY_MS, HOUR_MS)
    done = starts + spans <= t
    return (starts + spans / 2)[done], counts[done].astype(float), (sums / counts)[done]


@pytest.mark.parametrize("tail_h", [24, None], ids=["hourly-tail", "hourly-everywhere"])
def test_window_statistics_match_numpy(fleet: Fleet, tail_h: int | None) -> None:
    rng = np.random.default_rng(3)
    asset = fleet.asset("P-1", {"temperature": "°C"})
    # 12 days of irregular points (about every 10 min), drifting up, with a 6 h gap on day 9.
    ts = T0 + np.sort(rng.choice(12 * 144, 12 * 120, replace=False)) * 10 * MIN_MS + 1234
    ts = ts[(ts < T0 + 9 * DAY_MS) | (ts >= T0 + 9 * DAY_MS + 6 * HOUR_MS)]
    values = 50 + (ts - T0) / DAY_MS * 0.8 + rng.normal(0, 2, ts.shape[0])
    fleet.write("P-1", "temperature", ts, values)
    frame = fleet.build(replace(SMALL, hourly_tail_h=tail_h))

    t = T0 + 10 * DAY_MS
    for window in (24, 168):
        inside = (ts < t) & (ts >= t - window * HOUR_MS)
        ref = values[inside]
        name = f"temperature__{{}}__{window}h"
        assert value(frame, asset, t, name.format("mean")) == pytest.approx(ref.mean(), rel=1e-12)
        assert value(frame, asset, t, name.format("std")) == pytest.approx(ref.std(), rel=1e-9)
        assert value(frame, asset, t, name.format("min")) == ref.min()
        assert value(frame, asset, t, name.format("max")) == ref.max()
        # Slope: count-weighted least squares of bucket means on bucket centres, per hour
        # (1 h buckets in the last day, 1 d buckets before it, with the hourly tail).
        centre, counts, means = mixed(ts[inside], ref, t, tail_h)
        slope = np.polyfit(centre / HOUR_MS, means, 1, w=np.sqrt(counts))[0]
        assert value(frame, asset, t, name.format("slope")) == pytest.approx(slope, rel=1e-8)
        # Baseline: the first 7 days from the first data's midnight.
        base = values[ts < T0 + 7 * DAY_MS]
        delta = ref.mean() - base.mean()
        assert value(frame, asset, t, name.format("baseline_delta")) == pytest.approx(
            delta, rel=1e-9
        )
        assert value(frame, asset, t, name.format("baseline_ratio")) == pytest.approx(
            ref.mean() / base.mean(), rel=1e-12
        )
        assert value(frame, asset, t, name.format("baseline_z")) == pytest.approx(
            delta / base.std(), rel=1e-9
        )
    before = ts < t
    assert value(frame, asset, t, "temperature__last") == values[before][-1]
    # EWMA within the longest window, half-life 12 h, weights by bucket centre: of the 1 h
    # means everywhere, or of the points (a bucket weighs as its count) with the hourly tail.
    centre, counts, means = mixed(ts[before], values[before], t, tail_h)
    keep = centre + HOUR_MS / 2 > t - 168 * HOUR_MS  # complete within the window
    weights = 2.0 ** (-(t - centre[keep]) / (12 * HOUR_MS))
    if tail_h is not None:
        weights *= counts[keep]
    ewma = float(np.sum(weights * means[keep]) / np.sum(weights))
    assert value(frame, asset, t, "temperature__ewma") == pytest.approx(ewma, rel=1e-9)
    # Before the baseline period is over there is no baseline to compare with.
    early = T0 + 5 * DAY_MS
    assert np.isnan(value(frame, asset, early, "temperature__baseline_ratio__24h"))
    assert np.isfinite(value(frame, asset, early, "temperature__mean__24h"))


def test_training_rows_every_step_only_where_there_is_data(fleet: Fleet) -> None:
    asset = fleet.asset("P-1", {"vibration": "mm/s"})
    hours = np.r_[np.arange(0, 5 * 24), np.arange(9 * 24, 12 * 24)]  # days 5-8 missing
    fleet.write("P-1", "vibration", T0 + hours * HOUR_MS + 5 * MIN_MS, np.ones(hours.shape[0]))
    frame = fleet.build()
    days = sorted(((frame.as_of_ms - T0) // DAY_MS).tolist())
    assert days == [1, 2, 3, 4, 5, 10, 11, 12]
    assert set(frame.asset_id.tolist()) == {str(asset)}
    assert np.all(frame.as_of_ms % DAY_MS == 0)  # UTC midnights: one calendar for the fleet
    # A 6 h step.
    six = fleet.build(FeatureConfig(windows_h=(24,), step_h=6))
    assert np.all(np.diff(six.as_of_ms[:5]) == 6 * HOUR_MS)


# --- no leakage ------------------------------------------------------------------------------


def _bits(frame: FeatureFrame, index: np.ndarray) -> np.ndarray:
    return frame.X[index].view(np.uint64)


def test_rows_are_bit_identical_whatever_happens_after_t(fleet: Fleet, db: Database) -> None:
    rng = np.random.default_rng(11)
    tags = ["P-1", "P-2", "P-3"]
    for i, tag in enumerate(tags):
        fleet.asset(tag, {"temperature": "°C", "vibration": "mm/s"})
        ts = T0 + np.arange(0, 20 * 24 * 6) * 10 * MIN_MS + i * 7_000
        for key in ("temperature", "vibration"):
            fleet.write(tag, key, ts, 30 + 10 * i + rng.normal(0, 1, ts.shape[0]))
    fleet.record("P-1", MaintenanceKind.failure, T0 + 15 * DAY_MS)
    fleet.record("P-2", MaintenanceKind.preventive, T0 + 8 * DAY_MS)
    cut = T0 + 12 * DAY_MS
    before = fleet.build()

    # Everything after the cut changes: points appended (one exactly at the cut, more in the
    # cut's own hour and day), stored rollups altered, new records, alerts and anomalies.
    for tag in tags:
        extra = cut + np.r_[0, 1, 59 * MIN_MS, np.arange(1, 30 * 24) * HOUR_MS + 17]
        for key in ("temperature", "vibration"):
            fleet.write(tag, key, extra, 500 + rng.normal(0, 50, extra.shape[0]))
    with db.transaction() as session:
        session.execute(
            text(
                "UPDATE readings_rollup SET mean = mean * 3 + 1, max = max + 100, "
                "min = min - 100, m2 = m2 * 7 WHERE bucket_ms >= :cut"
            ),
            {"cut": cut},
        )
    fleet.record("P-2", MaintenanceKind.failure, cut + HOUR_MS)
    fleet.record("P-3", MaintenanceKind.corrective, cut + 1)
    with db.transaction() as session:
        for tag in tags:
            alerts_service.fire(
                session,
                alerts_service.Trigger(
                    tenant_id=fleet.tenant_id,
                    asset_id=fleet.assets[tag],
                    source="rule:x",
                    severity=Severity.critical,
                    title="late",
                    message="",
                    at=at(cut + 1),
                    value=1.0,
                ),
            )
        store_scores(
            session,
            [
                MinuteScore(fleet.assets[tag], fleet.tenant_id, "sensor", m, 3.0, "spike", ())
                for tag in tags
                for m in (cut, cut + 5 * MIN_MS)
            ],
        )
    after = fleet.build()

    old = np.flatnonzero(before.as_of_ms <= cut)
    assert old.shape[0] == 3 * 12
    match = np.array(
        [
            row(after, uuid.UUID(a), int(t))
            for a, t in zip(before.asset_id[old], before.as_of_ms[old], strict=True)
        ]
    )
    assert after.names == before.names
    assert np.array_equal(_bits(before, old), _bits(after, match))
    assert np.isfinite(before.X[old]).mean() > 0.8
    # The changes were seen: later rows differ, and the labels of earlier rows moved.
    later = np.flatnonzero(after.as_of_ms > cut)
    assert not np.allclose(
        after.X[later, after.index("temperature__mean__24h")][:3],
        before.X[:3, before.index("temperature__mean__24h")],
    )
    p2 = row(before, fleet.assets["P-2"], cut)
    assert np.isnan(before.ttf_days[p2])
    assert after.ttf_days[row(after, fleet.assets["P-2"], cut)] == pytest.approx(1 / 24)


# --- labels -----------------------------------------------------------------------------------


def test_labels_time_to_failure_and_censoring(fleet: Fleet) -> None:
    asset = fleet.asset("P-1", {"temperature": "°C"})
    hours = np.arange(0, 30 * 24)
    fleet.write("P-1", "temperature", T0 + hours * HOUR_MS, np.full(hours.shape[0], 40.0))
    fleet.record("P-1", MaintenanceKind.failure, T0 + 10 * DAY_MS + 6 * HOUR_MS)
    fleet.record("P-1", MaintenanceKind.failure, T0 + 20 * DAY_MS, ended_ms=T0 + 21 * DAY_MS)
    fleet.record(
        "P-1", MaintenanceKind.failure, T0 + 25 * DAY_MS, status=MaintenanceStatus.cancelled
    )
    fleet.record("P-1", MaintenanceKind.preventive, T0 + 3 * DAY_MS + 12 * HOUR_MS)
    frame = fleet.build()

    def label(day: int) -> tuple[float, float]:
        i = row(frame, asset, T0 + day * DAY_MS)
        return float(frame.ttf_days[i]), float(frame.observed_days[i])

    last = (T0 + (30 * 24 - 1) * HOUR_MS - T0) / DAY_MS
    assert label(5) == (pytest.approx(5.25), pytest.approx(last - 5))
    assert label(10) == (pytest.approx(0.25), pytest.approx(last - 10))
    assert label(11) == (pytest.approx(9.0), pytest.approx(last - 11))
    ttf, observed = label(21)  # no failure followed: right-censored, seen for ~9 more days
    assert np.isnan(ttf) and observed == pytest.approx(last - 21)
    assert frame.censored[row(frame, asset, T0 + 21 * DAY_MS)]
    # The failure at day 20 00:00 is at t itself: not "after t", so the row is censored.
    assert np.isnan(label(20)[0])

    assert label(30) == (pytest.approx(np.nan, nan_ok=True), 0.0)  # just after the last reading
    assert frame.observed_days.min() >= 0

    within7 = frame.fails_within(7)
    assert within7[row(frame, asset, T0 + 2 * DAY_MS)] == 0.0  # fails in 8.25 days
    assert within7[row(frame, asset, T0 + 5 * DAY_MS)] == 1.0  # in 5.25 days
    assert within7[row(frame, asset, T0 + 21 * DAY_MS)] == 0.0  # seen 8+ days, no failure
    assert np.isnan(within7[row(frame, asset, T0 + 27 * DAY_MS)])  # seen < 7 days: unknown

    def feature(day: int, name: str) -> float:
        return value(frame, asset, T0 + day * DAY_MS, name)

    assert np.isnan(feature(3, "days_since_maintenance"))
    assert feature(4, "days_since_maintenance") == pytest.approx(0.5)
    assert np.isnan(feature(10, "days_since_failure"))
    assert feature(11, "days_since_failure") == pytest.approx(0.75)
    assert feature(11, "failure_count") == 1
    assert feature(21, "failure_count") == 2
    assert feature(29, "failure_count") == 2  # the cancelled one does not count
    assert feature(12, "age_days") == 12  # no install date: since the first data's midnight


# --- missing sensors, encodings ---------------------------------------------------------------


def test_sensors_are_matched_by_key_and_missing_ones_are_nan(fleet: Fleet) -> None:
    a = fleet.asset(
        "P-1", {"temperature": "°C", "vibration": "mm/s"}, install_date=date(2025, 12, 1)
    )
    b = fleet.asset("P-2", {"temperature": "°C"}, type="compressor", criticality=Criticality.high)
    c = fleet.asset("P-3", {"temperature": "°C"}, type="", criticality=Criticality.low)
    ts = T0 + np.arange(0, 10 * 24) * HOUR_MS
    for tag in ("P-1", "P-2", "P-3"):
        fleet.write(tag, "temperature", ts, np.linspace(40, 50, ts.shape[0]))
    fleet.write("P-1", "vibration", ts, np.full(ts.shape[0], 2.5))
    frame = fleet.build()
    t = T0 + 9 * DAY_MS
    vib = [i for i, n in enumerate(frame.names) if n.startswith("vibration__")]
    temp = [i for i, n in enumerate(frame.names) if n.startswith("temperature__")]
    assert len(vib) == len(temp) == 2 + 2 * 8
    assert np.isfinite(frame.X[row(frame, a, t), vib]).sum() >= 10
    assert np.isnan(frame.X[row(frame, b, t), vib]).all()
    assert np.isfinite(frame.X[row(frame, b, t), temp]).sum() >= 10
    assert frame.spec("vibration__mean__24h").unit == "mm/s"
    assert frame.spec("vibration__baseline_z__24h").unit == ""

    assert frame.categories == {"asset_type": ["compressor", "pump"]}
    assert frame.categorical == [frame.index("asset_type")] and frame.feature_names == frame.names
    spec = frame.spec("asset_type")
    assert spec.categorical and spec.levels == ("compressor", "pump")
    assert value(frame, a, t, "asset_type") == 1.0
    assert value(frame, b, t, "asset_type") == 0.0
    assert np.isnan(value(frame, c, t, "asset_type"))
    assert [value(frame, x, t, "criticality") for x in (a, b, c)] == [1.0, 2.0, 0.0]
    assert not frame.spec("criticality").categorical
    assert value(frame, a, t, "age_days") == (t - T0) / DAY_MS + 31  # since the install date
    assert spec.describe(1.0, 0.2) == "asset type pump"
    assert frame.spec("criticality").describe(2.0, 0.1) == "criticality high"

    # Scoring conforms to the trained model's columns and levels.
    model_specs = [frame.spec("temperature__mean__24h"), frame.spec("asset_type")]
    scored = fleet.build(as_of="latest").conform(model_specs, {"asset_type": ["pump", "motor"]})
    assert scored.names == ["temperature__mean__24h", "asset_type"]
    codes = dict(zip(scored.asset_id.tolist(), scored.X[:, 1].tolist(), strict=True))
    assert codes[str(a)] == 0.0 and np.isnan(codes[str(b)]) and np.isnan(codes[str(c)])
    assert scored.categories == {"asset_type": ["pump", "motor"]}


# --- scoring ----------------------------------------------------------------------------------


def test_scoring_is_as_of_each_assets_latest_reading(fleet: Fleet, db: Database) -> None:
    rng = np.random.default_rng(5)
    live = fleet.asset("P-LIVE", {"temperature": "°C"})
    old = fleet.asset("P-OLD", {"temperature": "°C"})
    ts = T0 + np.arange(0, 20 * 24 * 4) * 15 * MIN_MS + 37 * MIN_MS
    values = 60 + rng.normal(0, 3, ts.shape[0])
    fleet.write("P-LIVE", "temperature", ts, values)
    # The old asset's history ended 400 days before: still scored, at its own last reading.
    old_ts = ts - 420 * DAY_MS
    fleet.write("P-OLD", "temperature", old_ts, values[::-1].copy())
    frame = fleet.build(as_of="latest")
    assert len(frame) == 2
    # Scoring passes the assets it already read (in the same transaction): the same frame.
    from foresight.models import Asset

    with fleet.db.transaction(write=False) as session:
        read = list(session.scalars(select(Asset).where(Asset.tenant_id == fleet.tenant_id)))
        given = build_dataset(
            None, fleet.tenant_id, SMALL, as_of="latest", session=session, assets=read[::-1]
        )
    assert given.asset_id.tolist() == frame.asset_id.tolist()
    assert np.array_equal(given.X, frame.X, equal_nan=True)
    with pytest.raises(ValueError, match="session"):
        build_dataset(fleet.db, fleet.tenant_id, SMALL, as_of="latest", assets=read)
    t_live, t_old = int(ts[-1]), int(old_ts[-1])
    assert frame.as_of_ms[row(frame, live, t_live)] == t_live
    assert frame.as_of_ms[row(frame, old, t_old)] == t_old
    assert (t_live - t_old) == 420 * DAY_MS
    assert value(frame, live, t_live, "temperature__last") == values[-1]
    assert value(frame, old, t_old, "temperature__last") == values[0]
    # The window holds the buckets complete by t, and the one holding t (nothing newer exists).
    bucket_end = ts - ts % HOUR_MS + HOUR_MS
    inside = np.minimum(bucket_end, t_live) > t_live - 24 * HOUR_MS
    assert value(frame, live, t_live, "temperature__mean__24h") == pytest.approx(
        values[inside].mean(), rel=1e-12
    )
    assert frame.observed_days.tolist() == [0.0, 0.0]
    assert frame.censored.all()

    # Retention removes the old asset's raw points and 1 h rollups: daily rollups stand in.
    with db.transaction() as session:
        sid = fleet.series[("P-OLD", "temperature")]
        session.execute(text("DELETE FROM readings WHERE series_id = :s"), {"s": sid})
        session.execute(
            text("DELETE FROM readings_rollup WHERE series_id = :s AND resolution_s < 86400"),
            {"s": sid},
        )
        # As retention does: sealed buckets went, so the series gets a new revision.
        session.execute(
            text("UPDATE series_latest SET revision = revision + 1 WHERE series_id = :s"),
            {"s": sid},
        )
    after = fleet.build(as_of="latest")
    day_end = old_ts - old_ts % DAY_MS + DAY_MS
    inside = np.minimum(day_end, t_old) > t_old - 168 * HOUR_MS
    old_values = values[::-1]
    assert value(after, old, t_old, "temperature__mean__168h") == pytest.approx(
        old_values[inside].mean(), rel=1e-12
    )
    assert value(after, old, t_old, "temperature__max__168h") == old_values[inside].max()
    assert value(after, old, t_old, "temperature__last") == old_values[-1]
    assert np.isfinite(value(after, old, t_old, "temperature__baseline_z__168h"))
    # The live asset is unaffected, bit for bit.
    i, j = row(frame, live, t_live), row(after, live, t_live)
    assert np.array_equal(frame.X[i].view(np.uint64), after.X[j].view(np.uint64))


def test_scoring_matches_training_and_takes_a_cut_off_time(fleet: Fleet) -> None:
    asset = fleet.asset("P-1", {"temperature": "°C"})
    ts = T0 + np.arange(0, 15 * 24) * HOUR_MS + 20 * MIN_MS
    rng = np.random.default_rng(9)
    fleet.write("P-1", "temperature", ts, 10 + np.cumsum(rng.normal(0, 1, ts.shape[0])))
    config = FeatureConfig(windows_h=(24, 168), alert_windows_h=(24,), anomaly_windows_h=(24,))
    training = fleet.build(config)
    cut = T0 + 12 * DAY_MS
    scored = fleet.build(config, as_of=at(cut), asset_ids=[asset])
    assert len(scored) == 1 and scored.as_of_ms[0] == cut
    i = row(training, asset, cut)
    np.testing.assert_allclose(scored.X[0], training.X[i], rtol=1e-9, atol=1e-12)
    assert fleet.build(config, as_of=cut).as_of_ms.tolist() == [cut]


# --- phrasing and the frame -------------------------------------------------------------------


def test_describe_speaks_like_a_maintenance_engineer() -> None:
    ratio = FeatureSpec("vibration__baseline_ratio__24h", "baseline_ratio", "vibration", 24)
    assert ratio.describe(1.38, 0.4) == "vibration 24 h mean 38% above this asset's baseline"
    assert ratio.describe(0.9, -0.1) == "vibration 24 h mean 10% below this asset's baseline"
    maint = FeatureSpec("days_since_maintenance", "days_since_maintenance", unit="days")
    assert maint.describe(212.4, 0.3) == "no maintenance for 212 days"
    assert maint.describe(float("nan"), 0.3) == "no maintenance on record"
    slope = FeatureSpec("temperature__slope__168h", "slope", "temperature", 168, "°C")
    assert slope.describe(0.05, 0.2) == "temperature rising 1.2 °C per day over 7 days"
    assert slope.describe(-0.5, 0.2) == "temperature falling 12 °C per day over 7 days"
    hourly_slope = FeatureSpec("temperature__slope__24h", "slope", "temperature", 24, "°C")
    assert hourly_slope.describe(0.25, 0.1) == "temperature rising 0.25 °C per hour over 24 h"
    mean = FeatureSpec("vibration__mean__24h", "mean", "vibration", 24, "mm/s")
    assert mean.describe(4.237, 0.1) == "vibration 24 h mean 4.24 mm/s"
    assert mean.describe(float("nan"), 0.0) == "vibration: no data in the last 24 h"
    z = FeatureSpec("vibration__baseline_z__720h", "baseline_z", "vibration", 720)
    assert z.describe(3.14, 1.0) == (
        "vibration 30-day mean 3.14 standard deviations above this asset's baseline"
    )
    alerts = FeatureSpec("alerts_critical__168h", "alerts_critical", window_h=168)
    assert alerts.describe(2, 0.1) == "2 critical alerts in the last 7 days"
    assert alerts.describe(1, 0.1) == "1 critical alert in the last 7 days"
    anomalies = FeatureSpec("anomaly_minutes__24h", "anomaly_minutes", window_h=24)
    assert anomalies.describe(0, -0.1) == "no anomalies in the last 24 h"
    assert FeatureSpec("days_since_failure", "days_since_failure").describe(45, 0.1) == (
        "last failure 45 days ago"
    )


def test_frame_filters_concatenates_and_round_trips(tmp_path: Path) -> None:
    specs = [
        FeatureSpec("a__mean__24h", "mean", "a", 24),
        FeatureSpec("asset_type", "asset_type", categorical=True, levels=("fan", "pump")),
    ]
    one = FeatureFrame(
        asset_id=np.array(["x", "y"]),
        as_of_ms=np.array([1, 2], dtype=np.int64),
        X=np.array([[1.0, 0.0], [2.0, 1.0]]),
        specs=specs,
        categories={"asset_type": ["fan", "pump"]},
        ttf_days=np.array([np.nan, 3.0]),
        observed_days=np.array([5.0, 9.0]),
    )
    other = FeatureFrame(
        asset_id=np.array(["z"]),
        as_of_ms=np.array([3], dtype=np.int64),
        X=np.array([[0.0, 7.5]]),
        specs=[
            FeatureSpec("asset_type", "asset_type", categorical=True, levels=("pump",)),
            FeatureSpec("b__max__24h", "max", "b", 24),
        ],
        categories={"asset_type": ["pump"]},
        ttf_days=np.array([1.0]),
        observed_days=np.array([1.0]),
    )
    both = FeatureFrame.concat([one, other])
    assert both.names == ["a__mean__24h", "asset_type"]
    assert both.asset_id.tolist() == ["x", "y", "z"]
    np.testing.assert_array_equal(both.X[2], [np.nan, 1.0])  # 'pump' is code 1 in the first
    picked = both.filter(both.as_of_ms >= 2)
    assert picked.asset_id.tolist() == ["y", "z"] and len(picked) == 2
    assert picked.censored.tolist() == [False, False] and one.censored.tolist() == [True, False]
    path = tmp_path / "frame.npz"
    both.save(path)
    loaded = FeatureFrame.load(path)
    assert loaded.specs == both.specs and loaded.categories == both.categories
    np.testing.assert_array_equal(loaded.X, both.X)
    np.testing.assert_array_equal(loaded.ttf_days, both.ttf_days)
    assert loaded.asset_id.tolist() == ["x", "y", "z"]
    target, known = labels.capped_rul(
        np.array([3.0, 400.0, np.nan, np.nan]), np.array([10.0, 500.0, 200.0, 20.0]), 180
    )
    np.testing.assert_array_equal(target, [3.0, 180.0, 180.0, np.nan])
    assert known.tolist() == [True, True, True, False]
    config = FeatureConfig(windows_h=(168, 24))
    assert config.windows_h == (24, 168)
    assert FeatureConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError):
        FeatureConfig(step_h=0)


def test_an_empty_tenant_gives_an_empty_frame(fleet: Fleet) -> None:
    fleet.asset("P-1", {"temperature": "°C"})
    for as_of in (None, "latest"):
        frame = fleet.build(as_of=as_of)
        assert len(frame) == 0 and frame.X.shape == (0, len(frame.specs))


def test_alert_and_anomaly_counts_by_window(fleet: Fleet, db: Database) -> None:
    asset = fleet.asset("P-1", {"temperature": "°C"})
    hours = np.arange(0, 12 * 24)
    fleet.write("P-1", "temperature", T0 + hours * HOUR_MS, np.full(hours.shape[0], 40.0))
    t = T0 + 10 * DAY_MS
    with db.transaction() as session:
        for i, (severity, when) in enumerate(
            [
                (Severity.critical, t - HOUR_MS),  # in 24 h and 168 h
                (Severity.critical, t - 3 * DAY_MS),  # in 168 h only
                (Severity.warning, t),  # at t: counts
                (Severity.warning, t + 1),  # after t: not yet
                (Severity.emergency, t - 8 * DAY_MS),  # outside both windows
            ]
        ):
            alerts_service.fire(
                session,
                alerts_service.Trigger(
                    tenant_id=fleet.tenant_id,
                    asset_id=asset,
                    source=f"rule:{i}",
                    severity=severity,
                    title="x",
                    message="",
                    at=at(when),
                    value=1.0,
                ),
            )
        minutes = [t - 2 * HOUR_MS, t - 2 * HOUR_MS, t - MIN_MS, t, t - 2 * DAY_MS]
        store_scores(
            session,
            [
                MinuteScore(asset, fleet.tenant_id, detector, m, 2.0, "spike", ())
                for detector, m in zip(
                    ["sensor", "multivariate", "sensor", "sensor", "sensor"], minutes, strict=True
                )
            ]
            + [MinuteScore(asset, fleet.tenant_id, "sensor", t - 3 * HOUR_MS, 0.4, "spike", ())],
        )
    frame = fleet.build()
    assert value(frame, asset, t, "alerts_critical__168h") == 2
    assert value(frame, asset, t, "alerts_warning__168h") == 1
    assert value(frame, asset, t, "alerts_emergency__168h") == 0
    assert value(frame, asset, t, "alerts_info__168h") == 0
    # Flagged minutes, once over, any detector, a minute counted once; the unflagged one not.
    assert value(frame, asset, t, "anomaly_minutes__24h") == 2
    assert value(frame, asset, t, "anomaly_minutes__168h") == 3
    scored = fleet.build(as_of="latest")
    assert value(scored, asset, int(scored.as_of_ms[0]), "alerts_warning__168h") == 2
    # Scoring counts in the database: the same figures as training's at the same time.
    at_t = fleet.build(as_of=t)
    names = [n for n in frame.names if n.startswith(("alerts_", "anomaly_minutes__"))]
    assert [value(at_t, asset, t, n) for n in names] == [value(frame, asset, t, n) for n in names]


def test_ewma_states_match_the_definition_series_by_series() -> None:
    """The all-series-at-once recurrence against the sums written out, for series of uneven
    lengths (empty ones too), with and without weights."""
    from foresight.prediction.features import _ewma_states

    rng = np.random.default_rng(3)
    lengths = np.array([0, 1, 7, 0, 25, 3, 40, 2])
    first = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    tau = np.concatenate([np.cumsum(rng.exponential(2.0, n)) + rng.normal(0, 50) for n in lengths])
    x = rng.normal(10.0, 3.0, tau.shape[0])
    weight = rng.integers(1, 60, tau.shape[0]).astype(np.float64)
    for w in (None, weight):
        num, den = _ewma_states(tau, x, first, 6.0, w)
        ww = np.ones_like(x) if w is None else w
        for s in range(lengths.shape[0]):
            for k in range(int(first[s]), int(first[s + 1])):
                j = np.arange(int(first[s]), k + 1)
                decay = np.exp2(-(tau[k] - tau[j]) / 6.0)
                assert num[k] == pytest.approx(np.sum(ww[j] * x[j] * decay), rel=1e-12)
                assert den[k] == pytest.approx(np.sum(ww[j] * decay), rel=1e-12)
