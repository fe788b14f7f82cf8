"""NASA C-MAPSS FD001 end to end through the platform, with the documented commands only.

For each fold (engines split by unit number, seeded) a tenant of its own is filled exactly as a
user would fill one, by running ``foresight`` itself:

1. ``foresight tenant create cmapss-foldK``;
2. ``foresight import readings readings.csv --tenant cmapss-foldK --create-assets`` — every
   engine's 21 sensors, one cycle = one day; the training engines' whole lives, and each held-out
   engine only up to a random cut-off in its life (uniform over its cycles, seeded);
3. ``foresight import maintenance failures.csv --tenant cmapss-foldK`` — a ``failure`` record at
   each *training* engine's last cycle (the held-out engines have not failed yet, as far as the
   platform knows);
4. ``foresight train --tenant cmapss-foldK --max-rul-days 125``;
5. ``foresight predict --tenant cmapss-foldK --format json`` — each held-out engine is scored as of
   its latest reading, its cut-off.

Scored against the truth (RUL = life − cut-off, capped at 125 as the benchmark does): RMSE, MAE,
the PHM08 score and the ROC AUC of "fails within 30 days" (``failure_probability_30d``), pooled
over the held-out engines of every fold.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from foresight.prediction import metrics

DEFAULT_DATA = Path("../shared/data/cmapss/train_FD001.txt")
SENSORS = [f"s{i}" for i in range(1, 22)]
DAY0 = datetime(2025, 1, 1, tzinfo=UTC)


def load(path: Path) -> dict[int, np.ndarray[Any, np.dtype[np.float64]]]:
    """Engine → its rows (cycle, 3 settings, 21 sensors), in cycle order."""
    table = np.loadtxt(path)
    if table.ndim != 2 or table.shape[1] != 26:
        raise ValueError(f"{path}: expected 26 columns (unit, cycle, 3 settings, 21 sensors)")
    return {int(u): table[table[:, 0] == u, 1:] for u in np.unique(table[:, 0])}


@dataclass
class Result:
    engines: int
    folds: int
    rmse: float
    mae: float
    phm08: float
    phm08_mean: float
    roc_auc_30d: float
    fold_rmse: list[float] = field(default_factory=list)
    seconds: float = 0.0
    fallback: int = 0

    def table(self) -> list[str]:
        return [
            "| engines | folds | RUL RMSE | MAE | PHM08 (sum) | PHM08 (mean) | ROC AUC 30 d |",
            "|---|---|---|---|---|---|---|",
            f"| {self.engines} | {self.folds} | {self.rmse:.2f} | {self.mae:.2f} | "
            f"{self.phm08:.1f} | {self.phm08_mean:.2f} | {self.roc_auc_30d:.3f} |",
            "",
            f"RMSE per fold: {', '.join(f'{x:.1f}' for x in self.fold_rmse)}; "
            f"{self.fallback} fallback predictions; {self.seconds:.0f} s.",
        ]


def _run(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "foresight", *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"foresight {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}"
        )
    return done.stdout


def _day(cycle: float) -> str:
    return (DAY0 + timedelta(days=float(cycle) - 1)).isoformat().replace("+00:00", "Z")


def run(
    data: Path = DEFAULT_DATA,
    *,
    folds: int = 5,
    seed: int = 0,
    max_rul_days: int = 125,
    engines: int | None = None,
    database_url: str | None = None,
    progress: Any = None,
) -> Result:
    """Cross-validate through the platform (see the module docstring); a temporary SQLite
    database unless ``database_url`` is given."""
    started = time.perf_counter()
    lives = load(data)
    units = sorted(lives)[:engines] if engines else sorted(lives)
    rng = np.random.default_rng(seed)
    order = rng.permutation(units).tolist()
    cut = {u: int(rng.integers(1, lives[u].shape[0] + 1)) for u in units}  # cycles kept
    truth_rul, pred_rul, prob30, fold_rmse = [], [], [], []
    fallback = 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        url = database_url or f"sqlite:///{work / 'cmapss.db'}"
        env = {
            **os.environ,
            "FORESIGHT_DATABASE_URL": url,
            "FORESIGHT_DATA_DIR": str(work / "var"),
            "FORESIGHT_LOG_LEVEL": "WARNING",
        }
        _run(["db", "upgrade"], env)
        for k in range(folds):
            held = set(order[k::folds])
            tenant = f"cmapss-fold{k}-{seed}"
            _run(["tenant", "create", tenant], env)
            readings, failures = work / f"readings{k}.csv", work / f"failures{k}.csv"
            with readings.open("w", newline="") as f:
                out = csv.writer(f)
                out.writerow(["asset", "ts", *SENSORS])
                for u in units:
                    rows = lives[u][: cut[u]] if u in held else lives[u]
                    for row in rows:
                        out.writerow([f"ENGINE-{u:03d}", _day(row[0]), *row[4:].tolist()])
            with failures.open("w", newline="") as f:
                out = csv.writer(f)
                out.writerow(["asset", "kind", "started_at"])
                for u in units:
                    if u not in held:
                        out.writerow([f"ENGINE-{u:03d}", "failure", _day(lives[u][-1, 0])])
            _run(["import", "readings", str(readings), "--tenant", tenant, "--create-assets"], env)
            _run(["import", "maintenance", str(failures), "--tenant", tenant], env)
            _run(["train", "--tenant", tenant, "--max-rul-days", str(max_rul_days)], env)
            tags = [f"ENGINE-{u:03d}" for u in sorted(held)]
            args = ["predict", "--tenant", tenant, "--format", "json"]
            for tag in tags:
                args += ["--asset", tag]
            rows_out = _predictions(_run(args, env))
            got = {r["asset"]: r for r in rows_out}
            fold_truth, fold_pred = [], []
            for u in sorted(held):
                row = got.get(f"ENGINE-{u:03d}")
                if row is None:
                    raise RuntimeError(f"no prediction for ENGINE-{u:03d} in fold {k}")
                fallback += bool(row.get("fallback"))
                true = float(lives[u].shape[0] - cut[u])
                fold_truth.append(min(true, max_rul_days))
                fold_pred.append(float(row["rul_days"]))
                truth_rul.append(true)
                pred_rul.append(float(row["rul_days"]))
                prob30.append(float(row["failure_probability_30d"]))
            fold_rmse.append(metrics.rmse(np.array(fold_truth), np.array(fold_pred)))
            if progress is not None:
                progress(k + 1, folds, fold_rmse[-1])
    truth = np.minimum(np.array(truth_rul), max_rul_days)
    pred = np.array(pred_rul)
    scores = metrics.phm08_scores(truth, pred)
    return Result(
        engines=len(units),
        folds=folds,
        rmse=metrics.rmse(truth, pred),
        mae=metrics.mae(truth, pred),
        phm08=float(np.sum(scores)),
        phm08_mean=float(np.mean(scores)),
        roc_auc_30d=metrics.roc_auc((np.array(truth_rul) <= 30).astype(float), np.array(prob30)),
        fold_rmse=fold_rmse,
        seconds=time.perf_counter() - started,
        fallback=fallback,
    )


def _predictions(text: str) -> list[dict[str, Any]]:
    """`foresight predict --format json` output: a JSON array (or one object per line)."""
    text = text.strip()
    if text.startswith("["):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def lines(result: Result) -> Iterator[str]:
    yield from result.table()
