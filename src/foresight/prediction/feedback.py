"""The closed loop: people's verdicts on predictions and alerts, and what they change.

A verdict (``confirmed`` or ``false_alarm``) is stored in ``prediction_feedback`` (audited).
Each prediction or alert counts once, with its latest verdict. What a verdict changes:

**Training** (:func:`training_data`, used by ``service.train``). A verdict says a person looked
at the asset at a time T (a prediction's ``as_of``, an anomaly alert's ``triggered_at``) and
found it failing (``confirmed``) or healthy (``false_alarm``). The asset's training rows of
the ``VERIFIED_DAYS`` up to T are the ones judged:

- rows whose labels agree with the verdict (confirmed: a failure followed within the longest
  horizon, 30 d; false alarm: none did) weigh ``FEEDBACK_WEIGHT`` (3) in the boosters' fits:
  verified examples count more than unverified ones. Where the maintenance records say the
  opposite (a "false alarm" followed by a failure), the records win and the weight stays 1;
- a confirmed prediction with no failure recorded within the horizon was, as a rule, acted on
  (repaired before it failed): the asset's rows whose horizon reaches past T are censored at
  T (``modeling.censor_at``), so their "did not fail" labels become "unknown" instead of
  teaching the model that the warning pattern is harmless;
- a false alarm on an *anomaly* alert counts like a false-alarm prediction at the alert's
  ``triggered_at`` (the asset was found healthy); a confirmed anomaly alert (a real anomaly
  need not precede a failure) and verdicts on rule alerts do not change training.

New ``failure`` maintenance records feed the labels of every later training on their own
(``features.build_dataset`` reads them each time).

**Anomaly thresholds**: verdicts on anomaly alerts tune the detector that raised them, for that
asset (``detection.tuning``), in running detection within the reload interval.

**Realised performance** per model version (``prediction.realised``) counts the verdicts on
its predictions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from foresight.audit import service as audit_service
from foresight.auth.schemas import Principal
from foresight.detection import alerts as alerts_service
from foresight.detection import tuning
from foresight.kit.db import Database
from foresight.kit.errors import NotFound
from foresight.kit.pagination import decode_time_cursor, encode_cursor
from foresight.kit.time import as_utc
from foresight.models import Alert, FeedbackVerdict, Prediction, PredictionFeedback
from foresight.prediction import modeling
from foresight.prediction.features import FeatureConfig, FeatureFrame, build_dataset
from foresight.prediction.feedback_schemas import FeedbackKind, FeedbackPage, FeedbackRead

DAY_MS = 86_400_000
VERIFIED_DAYS = 7.0
FEEDBACK_WEIGHT = 3.0


# --- recording and reading verdicts ------------------------------------------------------------


def _read(fb: PredictionFeedback, asset_id: uuid.UUID, scale: float | None = None) -> FeedbackRead:
    return FeedbackRead(
        id=fb.id,
        kind="prediction" if fb.prediction_id is not None else "alert",
        prediction_id=fb.prediction_id,
        alert_id=fb.alert_id,
        asset_id=asset_id,
        verdict=fb.verdict,
        note=fb.note,
        created_by=fb.created_by,
        created_at=fb.created_at,
        threshold_scale=scale,
    )


def _store(
    session: Session,
    principal: Principal,
    verdict: FeedbackVerdict,
    note: str,
    *,
    prediction_id: uuid.UUID | None = None,
    alert_id: uuid.UUID | None = None,
) -> PredictionFeedback:
    fb = PredictionFeedback(
        tenant_id=principal.tenant_id,
        prediction_id=prediction_id,
        alert_id=alert_id,
        verdict=verdict,
        note=note,
        created_by=principal.label,
    )
    session.add(fb)
    session.flush()
    return fb


def record_for_prediction(
    session: Session,
    *,
    principal: Principal,
    prediction_id: uuid.UUID,
    verdict: FeedbackVerdict,
    note: str = "",
) -> FeedbackRead:
    """Store a verdict on one of the tenant's predictions (audited); unknown ids → NotFound."""
    prediction = session.scalars(
        select(Prediction).where(
            Prediction.tenant_id == principal.tenant_id, Prediction.id == prediction_id
        )
    ).first()
    if prediction is None:
        raise NotFound(f"Prediction {prediction_id} not found.")
    fb = _store(session, principal, verdict, note, prediction_id=prediction.id)
    audit_service.record(
        session,
        actor=principal.actor,
        action="prediction.feedback",
        object_type="prediction",
        object_id=prediction.id,
        changes={"feedback_id": str(fb.id), "verdict": verdict.value, "note": note},
    )
    return _read(fb, prediction.asset_id)


def record_for_alert(
    session: Session,
    *,
    principal: Principal,
    alert_id: uuid.UUID,
    verdict: FeedbackVerdict,
    note: str = "",
) -> FeedbackRead:
    """Store a verdict on one of the tenant's alerts (audited); for an anomaly alert the answer
    has the detector's threshold scale with the verdict counted."""
    alert = alerts_service.get_alert(session, tenant_id=principal.tenant_id, alert_id=alert_id)
    fb = _store(session, principal, verdict, note, alert_id=alert.id)
    key = tuning.key_of(alert.asset_id, alert.source, alert.sensor)
    scale = None
    if key is not None:
        scale = tuning.scales(session, tenant_id=principal.tenant_id).get(key, 1.0)
    audit_service.record(
        session,
        actor=principal.actor,
        action="alert.feedback",
        object_type="alert",
        object_id=alert.id,
        changes={
            "feedback_id": str(fb.id),
            "verdict": verdict.value,
            "note": note,
            **({} if scale is None else {"threshold_scale": scale}),
        },
    )
    return _read(fb, alert.asset_id, scale)


def _asset_column() -> Any:
    return func.coalesce(Prediction.asset_id, Alert.asset_id)


def _listing(tenant_id: uuid.UUID) -> Select[Any]:
    return (
        select(PredictionFeedback, _asset_column())
        .outerjoin(Prediction, Prediction.id == PredictionFeedback.prediction_id)
        .outerjoin(Alert, Alert.id == PredictionFeedback.alert_id)
        .where(PredictionFeedback.tenant_id == tenant_id)
    )


def list_feedback(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    kind: FeedbackKind | None = None,
    verdict: FeedbackVerdict | None = None,
    asset_id: uuid.UUID | None = None,
    prediction_id: uuid.UUID | None = None,
    alert_id: uuid.UUID | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> FeedbackPage:
    """Newest first by created_at; ``start`` inclusive, ``end`` exclusive."""
    stmt = _listing(tenant_id)
    if kind == "prediction":
        stmt = stmt.where(PredictionFeedback.prediction_id.is_not(None))
    elif kind == "alert":
        stmt = stmt.where(PredictionFeedback.alert_id.is_not(None))
    if verdict is not None:
        stmt = stmt.where(PredictionFeedback.verdict == verdict)
    if asset_id is not None:
        stmt = stmt.where(_asset_column() == asset_id)
    if prediction_id is not None:
        stmt = stmt.where(PredictionFeedback.prediction_id == prediction_id)
    if alert_id is not None:
        stmt = stmt.where(PredictionFeedback.alert_id == alert_id)
    if start is not None:
        stmt = stmt.where(PredictionFeedback.created_at >= start)
    if end is not None:
        stmt = stmt.where(PredictionFeedback.created_at < end)
    if cursor:
        at, after = decode_time_cursor(cursor)
        stmt = stmt.where(
            (PredictionFeedback.created_at < at)
            | ((PredictionFeedback.created_at == at) & (PredictionFeedback.id < after))
        )
    rows = session.execute(
        stmt.order_by(PredictionFeedback.created_at.desc(), PredictionFeedback.id.desc()).limit(
            limit + 1
        )
    ).all()
    items = [_read(fb, asset) for fb, asset in rows[:limit]]
    last = rows[limit - 1][0] if len(rows) > limit else None
    next_cursor = (
        encode_cursor([as_utc(last.created_at).isoformat(), str(last.id)]) if last else None
    )
    return FeedbackPage(items=items, next_cursor=next_cursor)


# --- verdicts into training -----------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What a verdict says for training: the asset was failing or healthy at ``at_ms``."""

    asset_id: uuid.UUID
    at_ms: int
    failing: bool
    source: str  # "prediction" or "alert"


def training_verdicts(session: Session, tenant_id: uuid.UUID) -> list[Verdict]:
    """The tenant's verdicts that bear on training, the latest per prediction and per alert."""
    rows = session.execute(
        select(
            PredictionFeedback.prediction_id,
            PredictionFeedback.alert_id,
            PredictionFeedback.verdict,
            Prediction.asset_id,
            Prediction.as_of,
            Alert.asset_id,
            Alert.source,
            Alert.triggered_at,
        )
        .outerjoin(Prediction, Prediction.id == PredictionFeedback.prediction_id)
        .outerjoin(Alert, Alert.id == PredictionFeedback.alert_id)
        .where(PredictionFeedback.tenant_id == tenant_id)
        .order_by(PredictionFeedback.created_at, PredictionFeedback.id)
    ).all()
    latest: dict[uuid.UUID, Verdict | None] = {}
    for pid, aid, verdict, p_asset, as_of, a_asset, source, triggered in rows:
        failing = FeedbackVerdict(verdict) is FeedbackVerdict.confirmed
        if pid is not None:
            latest[pid] = (
                None
                if as_of is None
                else Verdict(p_asset, _ms(as_of), failing, "prediction")  # never reported
            )
        elif aid is not None:
            # Only a false alarm on an anomaly alert says something about the asset's health.
            anomaly = str(source).startswith(tuning.DETECTOR_PREFIX)
            latest[aid] = (
                Verdict(a_asset, _ms(triggered), False, "alert")
                if anomaly and not failing
                else None
            )
    return [v for v in latest.values() if v is not None]


def _ms(at: datetime) -> int:
    return int(as_utc(at).timestamp() * 1000)


@dataclass(frozen=True)
class Adjusted:
    ttf_days: modeling.F64
    observed_days: modeling.F64
    weight: modeling.F64
    summary: dict[str, Any]


def adjust(
    verdicts: list[Verdict],
    asset_id: np.ndarray[Any, Any],
    as_of_ms: modeling.I64,
    ttf_days: modeling.F64,
    observed_days: modeling.F64,
    *,
    horizon_days: float,
) -> Adjusted:
    """Training rows' weights and labels after the verdicts (the rules in the module docstring)."""
    ids = np.asarray(asset_id).astype(np.str_)
    t = np.asarray(as_of_ms, dtype=np.int64)
    ttf = np.array(ttf_days, dtype=np.float64)
    obs = np.array(observed_days, dtype=np.float64)
    weight = np.ones(t.shape[0], dtype=np.float64)
    censored = np.zeros(t.shape[0], dtype=np.bool_)
    used = {"prediction": 0, "alert": 0}
    for v in verdicts:
        mine = ids == str(v.asset_id)
        if not mine.any():
            continue
        used[v.source] += 1
        fails = np.isfinite(ttf) & (ttf <= horizon_days)
        judged = mine & (t > v.at_ms - VERIFIED_DAYS * DAY_MS) & (t <= v.at_ms)
        agree = judged & (fails if v.failing else ~fails)
        weight[agree] = FEEDBACK_WEIGHT
        if v.failing:
            # Acted on: rows whose horizon reaches past T, with no failure within it, censored.
            acted = mine & ~fails & (t <= v.at_ms) & (t > v.at_ms - horizon_days * DAY_MS)
            if acted.any():
                new_ttf, new_obs = modeling.censor_at(t[acted], ttf[acted], obs[acted], v.at_ms)
                ttf[acted], obs[acted] = new_ttf, new_obs
                censored |= acted
    summary = {
        "verdicts": used,
        "rows_weighted": int(np.sum(weight != 1.0)),
        "rows_censored": int(censored.sum()),
        "weight": FEEDBACK_WEIGHT,
        "verified_days": VERIFIED_DAYS,
    }
    return Adjusted(ttf, obs, weight, summary)


@dataclass(frozen=True)
class TrainingData:
    """What a training run sees: the frame (labels after the verdicts), the same rows as a
    weighted ``modeling.TrainingSet``, and what the verdicts changed."""

    frame: FeatureFrame
    data: modeling.TrainingSet
    feedback: dict[str, Any]


def training_data(
    db: Database, tenant_id: uuid.UUID, config: FeatureConfig, *, horizon_days: float
) -> TrainingData:
    """The tenant's training rows from the store (features, labels from its maintenance
    records) with the verdicts applied (:func:`adjust`)."""
    frame = build_dataset(db, tenant_id, config)
    with db.transaction(write=False) as session:
        verdicts = training_verdicts(session, tenant_id)
    adjusted = adjust(
        verdicts,
        frame.asset_id,
        frame.as_of_ms,
        frame.ttf_days,
        frame.observed_days,
        horizon_days=horizon_days,
    )
    frame = replace(frame, ttf_days=adjusted.ttf_days, observed_days=adjusted.observed_days)
    data = modeling.TrainingSet.of(frame).with_weight(adjusted.weight)
    return TrainingData(frame, data, adjusted.summary)
