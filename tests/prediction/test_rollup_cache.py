"""The scoring cache of sealed rollup buckets: the features it gives are the database's to the
bit, whatever is written (in order, late, before the first data) or deleted by retention; and
the store's revision that makes that so, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from sqlalchemy import select

from foresight.audit.schemas import Actor
from foresight.kit.db import Database
from foresight.models import SeriesLatest
from foresight.prediction import rollup_cache
from foresight.prediction.features import FeatureConfig, FeatureFrame
from foresight.tenants import service as tenants_service
from foresight.tenants.schemas import TenantUpdate
from foresight.timeseries.retention import enforce
from foresight.timeseries.store import SEALED_BLOCK_MS, write_arrays
from tests.factories import Factory
from tests.prediction.test_features import DAY_MS, HOUR_MS, MIN_MS, T0, Fleet

CONFIG = FeatureConfig(windows_h=(24, 168), anomaly_windows_h=(24,), alert_windows_h=(24,))
STEP = 15 * MIN_MS


def revision(db: Database, series_id: int) -> int:
    with db.transaction(write=False) as session:
        return int(
            session.scalar(select(SeriesLatest.revision).where(SeriesLatest.series_id == series_id))
        )


def write(db: Database, series_id: int, *ts: int) -> None:
    with db.transaction() as session:
        stamps = np.array(ts, dtype=np.int64)
        write_arrays(session, np.full(len(ts), series_id), stamps, np.arange(len(ts)) + 1.0)


def test_a_write_into_sealed_buckets_and_only_that_changes_the_revision(
    db: Database, factory: Factory
) -> None:
    fleet = Fleet(db, factory.tenant().id)
    fleet.asset("P-1", {"t": "°C"})
    sid = fleet.series[("P-1", "t")]
    block = T0 + 40 * SEALED_BLOCK_MS  # the start of a 6-hour block
    write(db, sid, block + 3 * HOUR_MS)
    first = revision(db, sid)
    write(db, sid, block + 4 * HOUR_MS, block + 5 * HOUR_MS)  # newer
    write(db, sid, block + 1 * HOUR_MS)  # late, inside the newest point's block
    write(db, sid, block + 3 * HOUR_MS)  # a resend: nothing new
    assert revision(db, sid) == first
    write(db, sid, block - 1)  # before the block: a sealed bucket changes
    second = revision(db, sid)
    assert second != first
    write(db, sid, block - 1, block + 6 * HOUR_MS)  # a resend of it, and a newer point
    assert revision(db, sid) == second
    # The newest point is in the next block now: the last one is sealed too.
    write(db, sid, block + 2 * HOUR_MS)
    assert revision(db, sid) not in (first, second)


def _bits(frame: FeatureFrame) -> np.ndarray:
    return frame.X.view(np.uint64)


class Scoring:
    """Scores the fleet as of its latest readings twice after each change: from what the cache
    kept (warm), then from the database alone (cold: the cache emptied first)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        cache = rollup_cache.for_engine(fleet.db.engine)
        assert cache is not None
        self.cache = cache

    def check(self, *, served: bool = True, **kwargs: object) -> FeatureFrame:
        before = self.cache.hits
        warm = self.fleet.build(CONFIG, as_of="latest", **kwargs)
        hits = self.cache.hits - before
        self.cache.clear()
        cold = self.fleet.build(CONFIG, as_of="latest", **kwargs)
        assert warm.asset_id.tolist() == cold.asset_id.tolist()
        assert warm.as_of_ms.tolist() == cold.as_of_ms.tolist()
        assert np.array_equal(_bits(warm), _bits(cold)), [
            warm.specs[j].name for j in np.flatnonzero((_bits(warm) != _bits(cold)).any(axis=0))
        ]
        assert (hits > 0) == served
        return warm


def test_cached_scoring_is_the_databases_to_the_bit_through_every_kind_of_change(
    db: Database, factory: Factory
) -> None:
    tenant = factory.tenant()
    fleet = Fleet(db, tenant.id)
    rng = np.random.default_rng(3)
    for tag in ("P-1", "P-2"):
        fleet.asset(tag, {"temperature": "°C", "vibration": "mm/s"})
    end = T0 + 25 * DAY_MS + 14 * HOUR_MS + 20 * MIN_MS
    ts = np.arange(T0 + 5 * MIN_MS, end, STEP)
    for (tag, key), _sid in fleet.series.items():
        level = 60.0 if key == "temperature" else 3.0
        fleet.write(tag, key, ts, level + rng.normal(0, 1, ts.shape[0]))
    scoring = Scoring(fleet)
    scoring.check(served=False)  # nothing kept yet
    first = scoring.check()  # unchanged: from memory, the same
    assert first.as_of_ms.max() == ts[-1]

    def more(tag: str, start: int, hours: float) -> None:
        for key in ("temperature", "vibration"):
            new = np.arange(start, start + int(hours * HOUR_MS), STEP)
            fleet.write(tag, key, new, 50 + rng.normal(0, 1, new.shape[0]))

    # In order: within the newest block, across a block boundary, into a new day.
    more("P-1", int(ts[-1]) + STEP, 2)
    scoring.check()
    more("P-1", int(ts[-1]) + STEP + 2 * HOUR_MS, 4)
    more("P-2", int(ts[-1]) + STEP, 11)
    scoring.check()
    # Late points: into a sealed hour of the 24 h window, a sealed day of the 168 h window,
    # the early-life baseline, and before the first data (the baseline moves).
    for late in (end - 20 * HOUR_MS, end - 4 * DAY_MS, T0 + 2 * DAY_MS + 7 * MIN_MS, T0 - DAY_MS):
        fleet.write("P-1", "temperature", np.array([late]), np.array([500.0]))
        scoring.check()
    # Retention drops 1 h rollups older than a day: the days stand in for them.
    with db.transaction() as session:
        tenants_service.update(
            session,
            tenant_id=tenant.id,
            data=TenantUpdate(settings={"retention_1h_days": 1}),
            actor=Actor.system("test", tenant.id),
        )
    enforce(db, datetime.fromtimestamp((end + 12 * HOUR_MS) / 1000, UTC))
    scoring.check(served=False)  # every series lost buckets: every one read again
    scoring.check()
    # Another asset: another fleet, its first scoring served the others' series from the
    # entry that holds them.
    fleet.asset("P-3", {"temperature": "°C"})
    fleet.write("P-3", "temperature", ts, 40 + rng.normal(0, 1, ts.shape[0]))
    scoring.check()
    scoring.check()


def test_one_assets_scoring_is_served_from_its_fleets_entry_to_the_bit(
    db: Database, factory: Factory
) -> None:
    fleet = Fleet(db, factory.tenant().id)
    rng = np.random.default_rng(5)
    for tag in ("P-1", "P-2", "P-3"):
        fleet.asset(tag, {"temperature": "°C", "vibration": "mm/s"})
    end = T0 + 20 * DAY_MS + 9 * HOUR_MS
    ts = np.arange(T0, end, STEP)
    for (tag, key), _sid in fleet.series.items():
        fleet.write(tag, key, ts, 50 + rng.normal(0, 1, ts.shape[0]))
    scoring = Scoring(fleet)
    cache = scoring.cache
    cache.clear()
    fleet.build(CONFIG, as_of="latest")  # the tenant's scoring: one entry for all three
    one = [fleet.assets["P-2"]]
    before = cache.hits
    warm = fleet.build(CONFIG, as_of="latest", asset_ids=one)
    assert cache.hits > before  # served from the fleet's entry
    cache.clear()
    cold = fleet.build(CONFIG, as_of="latest", asset_ids=one)
    assert np.array_equal(_bits(warm), _bits(cold))
    # A late point into one of P-2's sealed hours: that series read again, the other kept.
    fleet.build(CONFIG, as_of="latest")
    fleet.write("P-2", "vibration", np.array([end - 30 * HOUR_MS]), np.array([90.0]))
    misses = cache.misses
    scoring.check(asset_ids=one)
    assert cache.misses > misses
    # Scored apart (P-1 with P-3, P-2 alone), then all together: put together from both
    # entries, whose series interleave in the fleet's order.
    cache.clear()
    fleet.build(CONFIG, as_of="latest", asset_ids=[fleet.assets["P-1"], fleet.assets["P-3"]])
    fleet.build(CONFIG, as_of="latest", asset_ids=one)
    assert len(cache) == 2
    misses = cache.misses
    scoring.check()
    assembled = cache.misses - misses  # the warm build's, then the cold one's
    misses = cache.misses
    scoring.check()  # from its own entry now
    assert cache.misses - misses == assembled  # no more read than from an entry of its own


def test_the_cache_keeps_within_its_budget(db: Database, factory: Factory) -> None:
    fleet = Fleet(db, factory.tenant().id)
    fleet.asset("P-1", {"temperature": "°C"})
    ts = np.arange(T0, T0 + 12 * DAY_MS, HOUR_MS)
    fleet.write("P-1", "temperature", ts, np.sin(ts / 1e7))
    cache = rollup_cache.for_engine(db.engine)
    assert cache is not None
    fleet.build(CONFIG, as_of="latest")
    assert len(cache) == 1 and cache.nbytes > 0
    size = cache.nbytes
    cache.max_bytes = size - 1  # too small for the entry: not kept
    cache.clear()
    fleet.build(CONFIG, as_of="latest")
    assert len(cache) == 0 and cache.nbytes == 0


def test_a_zero_budget_turns_caching_off(db: Database) -> None:
    try:
        rollup_cache.set_budget_mb(0)
        assert rollup_cache.for_engine(db.engine) is None
    finally:
        rollup_cache.set_budget_mb(128)
    assert rollup_cache.for_engine(db.engine) is not None


def test_kept_and_read_buckets_merge_in_order_and_empty_kept_ranges_read_again() -> None:
    """At the array level: a second scoring serves the sealed buckets kept (also of a series
    whose kept ranges held none), reads the rest, and returns what one read of everything
    returns; the arrays it hands out are read-only (they are kept)."""
    span = HOUR_MS
    db: dict[int, list[int]] = {10: list(range(0, 30)), 11: [], 12: [2, 3, 29]}

    def read(ranges: rollup_cache.Ranges) -> list[np.ndarray]:
        sid, start = [], []
        for s, lo, hi in zip(
            ranges.sid.tolist(), ranges.lo.tolist(), ranges.hi.tolist(), strict=True
        ):
            for h in db[s]:
                if lo <= h * span < hi:
                    sid.append(s)
                    start.append(h * span)
        at = np.searchsorted(series, np.array(sid, dtype=np.int64))
        t = np.array(start, dtype=np.int64)
        return [at.astype(np.int64), t] + [t / span + k for k in range(1, 7)]

    series = np.array([10, 11, 12], dtype=np.int64)
    ranges = rollup_cache.Ranges(series, np.zeros(3, np.int64), np.full(3, 40 * span, np.int64))
    sidx = np.arange(3, dtype=np.int64)
    revision, valid = np.array([1, 2, 3], np.int64), np.ones(3, bool)
    cache = rollup_cache.RollupCache(1 << 20)

    def score(latest_h: int) -> tuple[np.ndarray, list[np.ndarray]]:
        reads = cache.begin(series, revision, valid, np.full(3, latest_h * span, np.int64))
        reads.origins(lambda which: np.zeros(which.shape[0], np.int64))
        got = reads.rollups(3600, sidx, ranges, read)
        reads.finish()
        return got

    score(30)
    db[10] += [30, 31, 32]
    db[11] += [31, 33]  # newer than what was sealed: the revision holds
    db[12] += [30]
    hits = cache.hits
    got_sidx, got = score(33)
    assert cache.hits - hits > 20  # series 10's and 12's sealed hours came from memory
    want_sidx, *want = read(ranges)
    assert np.array_equal(got_sidx, want_sidx)
    for a, b in zip(got, want, strict=True):
        assert np.array_equal(a, b)
    assert not got[0].flags.writeable
    # A fleet whose kept ranges held no bucket at all: nothing served, all read.
    series, sidx = series[1:2], sidx[:1]
    ranges = rollup_cache.Ranges(series, np.zeros(1, np.int64), np.full(1, 40 * span, np.int64))
    revision, valid = revision[1:2], valid[:1]
    db[11] = []
    score(30)
    db[11] = [31]
    got_sidx, got = score(33)
    assert got_sidx.tolist() == [0] and got[0].tolist() == [31 * span]
