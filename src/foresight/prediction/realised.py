"""How each model version did on the predictions it made as champion (realised performance).

For a version, its stored predictions (``model_version_id``: only the champion of the time
scores with a model) are judged once their outcome is known: for a horizon H, a prediction as
of t is **positive** when the asset has a ``failure`` record in (t, t + H] (known as soon as the
failure is recorded), **negative** when t + H has passed without one, and not yet judged
otherwise. One prediction per asset and day counts (the day's latest), so assets scored on
demand more often do not weigh more. Per horizon (7, 14, 30 d):

- ``evaluated``, ``positives``; ``precision`` and ``recall`` of "probability ≥ threshold", the
  threshold being the one the version chose on its validation part (``metrics.training.
  validation.failure_<H>d.threshold``), else 0.5; ``brier`` (mean squared error of the
  probability); ``calibration``: ten bins of the predicted probability ([0, 0.1), …, [0.9, 1])
  with the count, mean predicted probability and observed failure rate of each non-empty bin;
- plus ``predictions`` (all its stored predictions), ``since`` (when it was promoted) and
  ``feedback``: the verdicts on its predictions (``confirmed``, ``false_alarm``; the latest
  per prediction).

Failure times are those the labels use (``started_at``, else ``ended_at``; cancelled and
scheduled records ignored).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from foresight.kit.time import as_utc, utcnow
from foresight.models import (
    FeedbackVerdict,
    MaintenanceKind,
    MaintenanceRecord,
    MaintenanceStatus,
    ModelVersion,
    Prediction,
    PredictionFeedback,
)
from foresight.prediction import labels
from foresight.prediction.metrics import brier

HORIZONS = (7, 14, 30)
DAY_MS = 86_400_000
BINS = 10
DEFAULT_THRESHOLD = 0.5


def _ms(at: datetime) -> int:
    return int(as_utc(at).timestamp() * 1000)


def threshold_of(version: ModelVersion, horizon: int) -> float:
    """The decision threshold the version chose for ``horizon`` (else 0.5)."""
    training = (version.metrics or {}).get("training") or {}
    found = ((training.get("validation") or {}).get(f"failure_{horizon}d") or {}).get("threshold")
    if isinstance(found, int | float) and not isinstance(found, bool) and 0 < found < 1:
        return float(found)
    return DEFAULT_THRESHOLD


def _failure_keys(session: Session, tenant_id: uuid.UUID, index: dict[uuid.UUID, int]) -> Any:
    rows = session.execute(
        select(
            MaintenanceRecord.asset_id, MaintenanceRecord.started_at, MaintenanceRecord.ended_at
        ).where(
            MaintenanceRecord.tenant_id == tenant_id,
            MaintenanceRecord.kind == MaintenanceKind.failure,
            MaintenanceRecord.status.not_in(
                [MaintenanceStatus.cancelled, MaintenanceStatus.scheduled]
            ),
        )
    ).all()
    a, t = [], []
    for asset_id, started, ended in rows:
        when = started if started is not None else ended
        if when is not None and asset_id in index:
            a.append(index[asset_id])
            t.append(_ms(when))
    return labels.event_keys(np.array(a, dtype=np.int64), np.array(t, dtype=np.int64))


def _clean(x: float) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 6)


def _horizon(p: Any, ttf: Any, elapsed_days: Any, threshold: float, h: int) -> dict[str, Any]:
    known_pos = np.isfinite(ttf) & (ttf <= h)
    known = known_pos | (elapsed_days >= h)
    y = known_pos[known].astype(np.float64)
    q = p[known]
    flagged = q >= threshold
    tp = int(np.sum(flagged & (y == 1)))
    n_flagged, n_pos = int(flagged.sum()), int((y == 1).sum())
    bins = []
    which = np.minimum((q * BINS).astype(np.int64), BINS - 1)
    for b in range(BINS):
        inside = which == b
        if inside.any():
            bins.append(
                {
                    "low": b / BINS,
                    "high": (b + 1) / BINS,
                    "count": int(inside.sum()),
                    "mean_predicted": _clean(float(q[inside].mean())),
                    "observed_rate": _clean(float(y[inside].mean())),
                }
            )
    return {
        "evaluated": int(y.size),
        "positives": n_pos,
        "threshold": threshold,
        "precision": _clean(tp / n_flagged) if n_flagged else None,
        "recall": _clean(tp / n_pos) if n_pos else None,
        "brier": _clean(brier(y, q)) if y.size else None,
        "calibration": bins,
    }


def realised_for(
    session: Session,
    tenant_id: uuid.UUID,
    versions: Sequence[ModelVersion],
    *,
    now: datetime | None = None,
) -> dict[uuid.UUID, dict[str, Any]]:
    """:func:`realised_performance` of several versions (one query for their predictions)."""
    ids = [v.id for v in versions]
    if not ids:
        return {}
    now_ms = _ms(now or utcnow())
    rows = session.execute(
        select(
            Prediction.id,
            Prediction.model_version_id,
            Prediction.asset_id,
            Prediction.as_of,
            Prediction.computed_at,
            Prediction.failure_probability_7d,
            Prediction.failure_probability_14d,
            Prediction.failure_probability_30d,
        ).where(Prediction.tenant_id == tenant_id, Prediction.model_version_id.in_(ids))
    ).all()
    verdicts: dict[uuid.UUID, FeedbackVerdict] = {}
    for pid, verdict in session.execute(
        select(PredictionFeedback.prediction_id, PredictionFeedback.verdict)
        .join(Prediction, Prediction.id == PredictionFeedback.prediction_id)
        .where(PredictionFeedback.tenant_id == tenant_id, Prediction.model_version_id.in_(ids))
        .order_by(PredictionFeedback.created_at, PredictionFeedback.id)
    ):
        if pid is not None:
            verdicts[pid] = FeedbackVerdict(verdict)  # the latest wins
    assets = sorted({r[2] for r in rows})
    index = {a: i for i, a in enumerate(assets)}
    keys = _failure_keys(session, tenant_id, index)
    out: dict[uuid.UUID, dict[str, Any]] = {}
    for v in versions:
        mine = [r for r in rows if r[1] == v.id]
        counts = {verdict.value: 0 for verdict in FeedbackVerdict}
        for r in mine:
            if r[0] in verdicts:
                counts[verdicts[r[0]].value] += 1
        # The latest prediction per asset and day of as_of.
        latest: dict[tuple[uuid.UUID, int], Any] = {}
        for r in mine:
            if r[3] is None:
                continue
            key = (r[2], _ms(r[3]) // DAY_MS)
            if key not in latest or as_utc(r[4]) >= as_utc(latest[key][4]):
                latest[key] = r
        chosen = list(latest.values())
        t = np.array([_ms(r[3]) for r in chosen], dtype=np.int64)
        a = np.array([index[r[2]] for r in chosen], dtype=np.int64)
        ttf = labels.days_to_next(keys, a, t) if len(chosen) else np.empty(0)
        elapsed = (now_ms - t) / DAY_MS
        horizons = {}
        for h, column in zip(HORIZONS, (5, 6, 7), strict=True):
            p = np.array(
                [np.nan if r[column] is None else r[column] for r in chosen], dtype=np.float64
            )
            ok = np.isfinite(p)
            horizons[f"{h}d"] = _horizon(p[ok], ttf[ok], elapsed[ok], threshold_of(v, h), h)
        out[v.id] = {
            "since": None if v.promoted_at is None else as_utc(v.promoted_at).isoformat(),
            "predictions": len(mine),
            "judged_per_asset_day": len(chosen),
            "horizons": horizons,
            "feedback": counts,
        }
    return out


def realised_performance(
    session: Session, tenant_id: uuid.UUID, version: ModelVersion, *, now: datetime | None = None
) -> dict[str, Any]:
    """How ``version`` did on the predictions it made (see the module docstring)."""
    if version.tenant_id != tenant_id:
        raise ValueError("the version belongs to another tenant")
    return realised_for(session, tenant_id, [version], now=now)[version.id]
