"""`foresight eval anomaly`: precision, recall and detection delay of the per-sensor detector.

Faults of each kind are injected, one per series copy, into

* **realistic signals**: the plant simulator's pumps, motors and conveyors (daily load cycle,
  noise, slow wear; counters left out), a reading a minute for four days, faults starting on the
  fourth day (after the drift reference period);
* **NASA C-MAPSS FD001** (``../shared/data/cmapss/train_FD001.txt``): the informative sensors of
  every engine, one cycle per point (no drift: a trajectory is too short for a reference, and
  its degradation is a drift of its own); faults of 20 cycles start after the warm-up and end
  40 cycles before the failure, and false alarms are counted on that healthy part only.

Magnitudes are in units of the series' own point-to-point noise σ (robust spread of first
differences of the clean series): spike +12 σ on one point; level shift +10 σ; noise ×5; stuck
(the value frozen); drift a ramp to +40 σ over 20 hours. Each fault but the spike lasts
``DURATION`` points (the drift lasts until the end).

A fault counts as **detected** if a point in ``[onset, end + tolerance)`` is flagged; **delay**
is points from the onset to the first flag. **Precision** is over alarm events (runs of flagged
points, gaps under 10 merged): the share that overlap a fault window. Everything is seeded:
the same command prints the same table.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from foresight.detection.anomaly import KINDS, AnomalyConfig, SeriesState, score_series

F64 = npt.NDArray[np.float64]
DURATION = 120
TOLERANCE = 60
CMAPSS_SENSORS = (2, 3, 4, 7, 11, 12, 15, 17, 20, 21)
CMAPSS_DURATION = 20


@dataclass
class KindResult:
    kind: str
    faults: int = 0
    detected: int = 0
    delays: list[int] = field(default_factory=list)
    true_events: int = 0
    false_events: int = 0
    labelled: int = 0  # detected faults whose flagged points mostly name this kind

    @property
    def recall(self) -> float:
        return self.detected / self.faults if self.faults else math.nan

    @property
    def precision(self) -> float:
        total = self.true_events + self.false_events
        return self.true_events / total if total else math.nan


def noise_sigma(values: F64) -> float:
    diffs = np.diff(values)
    return max(1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) / math.sqrt(2), 1e-9)


def inject(values: F64, kind: str, onset: int, duration: int, sigma: float, seed: int) -> int:
    """Apply the fault in place; returns where its window ends."""
    rng = np.random.default_rng(seed)
    n = values.shape[0]
    end = min(n, onset + duration)
    if kind == "spike":
        values[onset] += 12 * sigma
        return onset + 1
    if kind == "level_shift":
        values[onset:end] += 10 * sigma
    elif kind == "noise":
        values[onset:end] += rng.normal(0, 5 * sigma, end - onset)
    elif kind == "stuck":
        values[onset:end] = values[onset]
    elif kind == "drift":
        end = n
        ramp = np.minimum(np.arange(n - onset) / 1200.0, 1.0) * 40 * sigma
        values[onset:] += ramp
    return int(end)


def _events(flags: npt.NDArray[np.bool_], gap: int = 10) -> list[tuple[int, int]]:
    idx = np.flatnonzero(flags)
    if not idx.size:
        return []
    events, start, last = [], int(idx[0]), int(idx[0])
    for i in idx[1:].tolist():
        if i - last > gap:
            events.append((start, last + 1))
            start = i
        last = i
    events.append((start, last + 1))
    return events


def evaluate_series(
    clean: F64,
    ts: npt.NDArray[np.int64],
    kind: str,
    onset: int,
    duration: int,
    result: KindResult,
    config: AnomalyConfig,
    seed: int,
    healthy_until: int | None = None,
) -> None:
    values = clean.copy()
    end = inject(values, kind, onset, duration, noise_sigma(clean), seed)
    scores, kinds = score_series(SeriesState(), values, config, ts)
    flags = scores >= 1.0
    window = (onset, min(values.shape[0], end + TOLERANCE))
    hit = np.flatnonzero(flags[window[0] : window[1]])
    result.faults += 1
    if hit.size:
        result.detected += 1
        result.delays.append(int(hit[0]))
        named = [KINDS[int(k)] for k in kinds[window[0] : window[1]][hit]]
        if max(set(named), key=named.count) == kind:
            result.labelled += 1
    limit = healthy_until if healthy_until is not None else values.shape[0]
    for a, b in _events(flags):
        if a < window[1] and b > window[0]:
            result.true_events += 1
        elif a < limit:
            result.false_events += 1


def simulated_series(seed: int, days: float = 4.0) -> Iterator[tuple[str, F64]]:
    """(asset/sensor, values) of a simulated plant, a reading a minute, counters left out."""
    from foresight.simulator import SENSORS, Plant

    # Wear slowed right down: the clean copies must hold no anomaly but the injected one.
    plant = Plant(8, seed=seed, wear=0.01, initial_wear=(0.0, 0.1))
    ticks = int(days * 1440)
    out: list[dict[str, object]] = []
    start = 1_767_225_600.0
    for i in range(ticks):
        plant.tick(start + i * 60.0, out)
    by_series: dict[str, list[float]] = {}
    gauges = {
        kind: {key for key, _unit, sensor_kind, *_ in specs if sensor_kind == "gauge"}
        for kind, specs in SENSORS.items()
    }
    kind_of = {a.tag: a.kind for a in plant.assets}
    for reading in out:
        tag = str(reading["asset"])
        values = reading["values"]
        assert isinstance(values, dict)
        for key, value in values.items():
            if key in gauges[kind_of[tag]]:
                by_series.setdefault(f"{tag}/{key}", []).append(float(value))
    for name, series in sorted(by_series.items()):
        if len(series) == ticks:  # a series interrupted by a failure is left out
            yield name, np.array(series, dtype=np.float64)


def cmapss_series(path: Path) -> Iterator[tuple[str, F64]]:
    data = np.loadtxt(path)
    for unit in np.unique(data[:, 0]).astype(int).tolist():
        rows = data[data[:, 0] == unit]
        for sensor in CMAPSS_SENSORS:
            yield f"{unit}/s{sensor}", rows[:, 4 + sensor].astype(np.float64)


def run(
    *, seed: int = 7, cmapss: Path | None = None, config: AnomalyConfig | None = None
) -> dict[str, dict[str, KindResult]]:
    config = config or AnomalyConfig()
    rng = np.random.default_rng(seed)
    results: dict[str, dict[str, KindResult]] = {}
    sim = {k: KindResult(k) for k in KINDS}
    minute = 60_000
    for name, clean in simulated_series(seed):
        ts = np.arange(clean.shape[0], dtype=np.int64) * minute
        for kind in KINDS:
            onset = int(rng.integers(3 * 1440, 3 * 1440 + 600))
            evaluate_series(clean, ts, kind, onset, DURATION, sim[kind], config, seed)
        _ = name
    results["simulated plant (1 reading/min, 4 days)"] = sim
    if cmapss is not None and cmapss.exists():
        cm = {k: KindResult(k) for k in KINDS if k != "drift"}
        day = 86_400_000
        for _name, clean in cmapss_series(cmapss):
            if np.ptp(clean) == 0:
                continue
            n = clean.shape[0]
            ts = np.arange(n, dtype=np.int64) * day
            healthy = n - 40
            for kind in cm:
                onset = int(rng.integers(config.warmup + 2, healthy - CMAPSS_DURATION))
                evaluate_series(
                    clean, ts, kind, onset, CMAPSS_DURATION, cm[kind], config, seed, healthy
                )
        results["NASA C-MAPSS FD001 (1 point/cycle)"] = cm
    return results


def table(
    results: dict[str, dict[str, KindResult]], *, minutes_per_point: dict[str, str]
) -> list[str]:
    lines = [
        "| data | fault | faults | recall | precision | median delay | labelled as the kind |",
        "|---|---|---|---|---|---|---|",
    ]
    for data, by_kind in results.items():
        unit = minutes_per_point.get(data, "points")
        for kind, r in by_kind.items():
            delay = f"{float(np.median(r.delays)):.0f} {unit}" if r.delays else "-"
            labelled = f"{r.labelled / r.detected:.0%}" if r.detected else "-"
            lines.append(
                f"| {data} | {kind} | {r.faults} | {r.recall:.1%} | {r.precision:.1%} | "
                f"{delay} | {labelled} |"
            )
    return lines
