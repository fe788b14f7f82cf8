"""Accuracy check of the models on NASA C-MAPSS FD001 (``../shared/data/cmapss/train_FD001.txt``).

100 engines run to failure; one cycle counts as one day. Features are computed per engine with
numpy, each from that engine's cycles up to the row's own (trailing windows only, so nothing
after the prediction time is used): rolling mean, standard deviation and least-squares slope
over 5, 10, 20 and 30 cycles of every informative sensor (sensors with at most two distinct
values in the file are dropped as flat, as are the operational settings: FD001 has one operating
condition), the change of the 10-cycle mean against the engine's own baseline (mean of its
first up-to-20 cycles), and the age in cycles. These stand in for the platform's feature builder
(windows in hours, baseline ratios, age).

:func:`cmapss_cv`: engines are dealt into ``n_splits`` folds (:func:`~.modeling.group_kfold`);
the models are trained on every cycle of the other folds' engines, and each held-out engine is
scored at one random cut-off in its life (uniform over its cycles, seeded), against the true RUL
capped at ``max_rul_days`` (125, the benchmark's usual cap). Reported: RMSE, MAE, PHM08 (sum
and mean over engines), ROC AUC of "fails within 30 days", and the interval's coverage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from foresight.prediction import metrics as m
from foresight.prediction.modeling import (
    DAY_MS,
    ModelBundle,
    TrainConfig,
    TrainingSet,
    contributions,
    group_kfold,
    predict,
    train,
)

F64 = npt.NDArray[np.float64]
DEFAULT_PATH = Path("../shared/data/cmapss/train_FD001.txt")
WINDOWS = (5, 10, 20, 30)
BASELINE_CYCLES = 20
MAX_RUL = 125.0

#: The configuration :func:`cmapss_cv` trains with unless told otherwise.
CMAPSS_CONFIG = TrainConfig(max_rul_days=MAX_RUL, horizons=(7, 14, 30))


@dataclass(frozen=True)
class Fd001:
    unit: npt.NDArray[np.int64]
    cycle: npt.NDArray[np.int64]
    sensors: F64  # [n, 21]


def load_fd001(path: Path | str = DEFAULT_PATH) -> Fd001:
    raw = np.loadtxt(path, dtype=np.float64)
    if raw.ndim != 2 or raw.shape[1] != 26:
        raise ValueError(f"{path}: expected 26 columns, got shape {raw.shape}")
    return Fd001(raw[:, 0].astype(np.int64), raw[:, 1].astype(np.int64), raw[:, 5:26])


def informative_sensors(sensors: F64) -> list[int]:
    """0-based sensor columns with more than two distinct values."""
    return [j for j in range(sensors.shape[1]) if np.unique(sensors[:, j]).size > 2]


def _window_sums(v: F64, w: int) -> tuple[npt.NDArray[np.int64], F64, F64, F64, F64, F64]:
    """Trailing-window sums (partial at the start) of x, x^2, t, t^2 and t*x; t = row index."""
    n = v.shape[0]
    t = np.arange(n, dtype=np.float64)[:, None]
    idx = np.arange(n)
    lo = np.maximum(0, idx - w + 1)
    cnt = (idx - lo + 1)[:, None]

    def ws(a: F64) -> F64:
        c = np.vstack([np.zeros((1, a.shape[1])), np.cumsum(a, axis=0)])
        return np.asarray(c[idx + 1] - c[lo], dtype=np.float64)

    tt = np.broadcast_to(t, v.shape)
    return (
        cnt,
        ws(v),
        ws(v * v),
        ws(np.ascontiguousarray(tt)),
        ws(np.ascontiguousarray(tt * tt)),
        ws(tt * v),
    )


def engine_features(values: F64, names: Sequence[str]) -> tuple[F64, list[str]]:
    """Per-cycle features of one engine's sensor matrix ``[cycles, sensors]`` (time-ordered)."""
    v = values - values[:1]  # centred on the first cycle: the cumulative sums stay well-conditioned
    n = v.shape[0]
    cols: list[F64] = []
    out_names: list[str] = []
    means: dict[int, F64] = {}
    for w in WINDOWS:
        cnt, s1, s2, st, stt, stx = _window_sums(v, w)
        mean = s1 / cnt
        var = np.maximum(s2 / cnt - mean * mean, 0.0)
        std = np.where(cnt >= 2, np.sqrt(var), np.nan)
        denom = cnt * stt - st * st
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where(cnt >= 3, (cnt * stx - st * s1) / denom, np.nan)
        means[w] = mean
        for label, arr in (("mean", mean + values[:1]), ("std", std), ("slope", slope)):
            cols.append(arr)
            out_names += [f"{s}_{label}_{w}" for s in names]
    first = np.cumsum(v, axis=0)[np.minimum(np.arange(n), BASELINE_CYCLES - 1)]
    baseline = first / np.minimum(np.arange(1, n + 1), BASELINE_CYCLES)[:, None]
    cols.append(means[10] - baseline)
    out_names += [f"{s}_delta_baseline" for s in names]
    cols.append(np.arange(1, n + 1, dtype=np.float64)[:, None])
    out_names.append("age")
    return np.hstack(cols), out_names


def cmapss_dataset(path: Path | str = DEFAULT_PATH) -> tuple[TrainingSet, F64]:
    """Every cycle of every engine as a training row, and each row's true (uncapped) RUL."""
    fd = load_fd001(path)
    keep = informative_sensors(fd.sensors)
    names = [f"s{j + 1}" for j in keep]
    blocks, ttf, assets, as_of = [], [], [], []
    feature_names: list[str] = []
    for unit in np.unique(fd.unit):
        rows = np.flatnonzero(fd.unit == unit)
        rows = rows[np.argsort(fd.cycle[rows])]
        feats, feature_names = engine_features(
            fd.sensors[np.ix_(rows, np.asarray(keep, dtype=np.int64))], names
        )
        cycles = fd.cycle[rows]
        life = int(cycles.max())
        blocks.append(feats)
        ttf.append((life - cycles).astype(np.float64))
        assets += [f"engine-{unit:03d}"] * rows.size
        as_of.append(cycles.astype(np.int64) * DAY_MS)
    rul = np.concatenate(ttf)
    ds = TrainingSet(
        X=np.vstack(blocks),
        feature_names=feature_names,
        categorical=[],
        asset_id=np.asarray(assets, dtype=np.str_),
        as_of_ms=np.concatenate(as_of),
        ttf_days=rul,
        observed_days=rul.copy(),
    )
    return ds, rul


@dataclass(frozen=True)
class CmapssResult:
    engines: int
    rmse: float
    mae: float
    phm08: float  # summed over the held-out engines (the challenge's definition)
    phm08_mean: float
    roc_auc_30d: float
    coverage: float  # of the RUL interval, nominal ``interval_coverage``
    mean_width: float
    rmse_all_cycles: float  # every cycle of every held-out engine, for a steadier figure
    roc_auc_30d_all_cycles: float
    coverage_all_cycles: float
    fold_rmse: list[float] = field(default_factory=list)

    def table(self) -> list[str]:
        return [
            "| engines | RMSE | MAE | PHM08 (sum) | PHM08 (mean) | ROC AUC 30 d | coverage "
            "| width |",
            "|---|---|---|---|---|---|---|---|",
            f"| {self.engines} | {self.rmse:.2f} | {self.mae:.2f} | {self.phm08:.1f} | "
            f"{self.phm08_mean:.3f} | {self.roc_auc_30d:.3f} | {self.coverage:.2f} | "
            f"{self.mean_width:.1f} |",
        ]


def cmapss_cv(
    path: Path | str = DEFAULT_PATH,
    config: TrainConfig = CMAPSS_CONFIG,
    *,
    n_splits: int = 5,
    seed: int = 0,
    train_stride: int = 2,
) -> CmapssResult:
    """Cross-validated accuracy on FD001 (see the module docstring). Seeded: reruns agree."""
    ds, rul = cmapss_dataset(path)
    cap = config.max_rul_days
    rng = np.random.default_rng(seed)
    engines = np.unique(ds.asset_id)
    cut_row: dict[str, int] = {}
    for e in engines.tolist():  # one cut-off per engine, uniform over its cycles
        rows = np.flatnonzero(ds.asset_id == e)
        cut_row[e] = int(rows[rng.integers(0, rows.size)])
    pred_rul, lo, hi, p30, truth, fold_rmse = [], [], [], [], [], []
    all_truth, all_pred, all_p30, all_lo, all_hi = [], [], [], [], []
    for train_idx, test_idx in group_kfold(ds.asset_id, n_splits, seed=seed):
        # Consecutive cycles are near-duplicates: every ``train_stride``-th one trains as well.
        fit_rows = train_idx[(ds.as_of_ms[train_idx] // DAY_MS) % train_stride == 0]
        bundle = train(ds.take(fit_rows), replace(config, seed=seed))
        cut = np.array([cut_row[e] for e in np.unique(ds.asset_id[test_idx]).tolist()])
        pred = predict(bundle, ds.X[cut])
        pred_rul.append(pred.rul_days)
        lo.append(pred.rul_low)
        hi.append(pred.rul_high)
        p30.append(pred.probabilities[30])
        truth.append(rul[cut])
        fold_rmse.append(m.rmse(np.minimum(rul[cut], cap), pred.rul_days))
        every = predict(bundle, ds.X[test_idx])
        all_truth.append(rul[test_idx])
        all_pred.append(every.rul_days)
        all_p30.append(every.probabilities[30])
        all_lo.append(every.rul_low)
        all_hi.append(every.rul_high)
    y = np.concatenate(truth)
    yc = np.minimum(y, cap)
    r = np.concatenate(pred_rul)
    ya = np.concatenate(all_truth)
    return CmapssResult(
        engines=int(y.size),
        rmse=m.rmse(yc, r),
        mae=m.mae(yc, r),
        phm08=m.phm08(yc, r),
        phm08_mean=float(np.mean(m.phm08_scores(yc, r))),
        roc_auc_30d=m.roc_auc(y <= 30, np.concatenate(p30)),
        coverage=m.coverage(yc, np.concatenate(lo), np.concatenate(hi)),
        mean_width=float(np.mean(np.concatenate(hi) - np.concatenate(lo))),
        rmse_all_cycles=m.rmse(np.minimum(ya, cap), np.concatenate(all_pred)),
        roc_auc_30d_all_cycles=m.roc_auc(ya <= 30, np.concatenate(all_p30)),
        coverage_all_cycles=m.coverage(
            np.minimum(ya, cap), np.concatenate(all_lo), np.concatenate(all_hi)
        ),
        fold_rmse=fold_rmse,
    )


def predict_timing(bundle: ModelBundle, X: F64, *, rows: int = 1000) -> dict[str, float]:
    """Milliseconds: one row through every model plus contributions and top factors (p50/p99
    over ``rows`` single-row calls), and one batch of ``rows`` rows (best of three)."""
    import time

    def one(x: F64) -> None:
        predict(bundle, x)
        c = contributions(bundle, x)
        c.top(0, 5)
        c.top(0, 5, "rul")

    sample = X[np.random.default_rng(0).integers(0, X.shape[0], rows)]
    for x in sample[:20]:  # warm-up
        one(x)
    single = []
    for x in sample:
        t = time.perf_counter()
        one(x)
        single.append(time.perf_counter() - t)
    batch, batch_explained = [], []
    for _ in range(3):
        t = time.perf_counter()
        predict(bundle, sample)
        t1 = time.perf_counter()
        contributions(bundle, sample)
        batch.append(t1 - t)
        batch_explained.append(time.perf_counter() - t)
    ms = np.asarray(single) * 1e3
    return {
        "single_p50_ms": float(np.percentile(ms, 50)),
        "single_p99_ms": float(np.percentile(ms, 99)),
        "batch_ms": min(batch) * 1e3,
        "batch_with_contributions_ms": min(batch_explained) * 1e3,
    }


def main() -> None:  # python -m foresight.prediction.cmapss [PATH] [--timing]
    import sys
    import time

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    path = Path(args[0]) if args else DEFAULT_PATH
    t0 = time.perf_counter()
    res = cmapss_cv(path)
    print("\n".join(res.table()))
    print(
        f"all cycles: RMSE {res.rmse_all_cycles:.2f}, "
        f"ROC AUC 30 d {res.roc_auc_30d_all_cycles:.3f}, "
        f"coverage {res.coverage_all_cycles:.3f}; "
        f"fold RMSE {', '.join(f'{x:.1f}' for x in res.fold_rmse)}; "
        f"{time.perf_counter() - t0:.1f} s"
    )
    if "--timing" in sys.argv:
        ds, _ = cmapss_dataset(path)
        bundle = train(ds.take(np.flatnonzero((ds.as_of_ms // DAY_MS) % 2 == 0)), CMAPSS_CONFIG)
        t = predict_timing(bundle, ds.X)
        print(
            f"predict, 1 thread, {len(bundle.feature_names)} features: one row with all models, "
            f"contributions and top factors p50 {t['single_p50_ms']:.2f} ms, "
            f"p99 {t['single_p99_ms']:.2f} ms; 1,000 rows {t['batch_ms']:.0f} ms, "
            f"{t['batch_with_contributions_ms']:.0f} ms with contributions"
        )


if __name__ == "__main__":
    main()
