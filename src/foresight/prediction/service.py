"""The predictive engine as a platform service: train and register models, score assets.

:func:`train` builds the tenant's training rows from the store (``features.build_dataset``),
measures a model on a held-out time window, fits the model to keep on all rows, records a
version in the registry and applies the champion/challenger rule (``registry``).

:func:`predict` scores assets as of each one's latest reading with the champion model and
stores one :class:`~foresight.models.Prediction` per asset, with ``top_factors`` (the TreeSHAP
contributions to the 30-day failure classifier, largest first, phrased by
``FeatureSpec.describe``). Where there is no champion, or an asset has too little history (no
data, or its early-life baseline period is not over), the rule-based fallback scores it instead,
and the prediction says so (``fallback: true`` and ``fallback_reason``).

Rule-based fallback (:func:`fallback_prediction`): a hazard from the asset's health signals, as
of its latest reading (``now`` when it has none)::

    lam = 0.02                                        (base: a quiet asset)
        + 0.01 info + 0.05 warning + 0.20 critical + 0.50 emergency   per open alert
          (at most 3 alerts counted per severity)
        + 0.30 * min(1, flagged anomaly minutes in the last 24 h / 60)
        + 0.10 * min(1, max(0, days since maintenance - 90) / 90)     (overdue maintenance)
    p30 = 1 - exp(-lam);  p_H = 1 - (1 - p30) ** (H / 30)    (a constant hazard)
    hazard per day k = lam / 30;  rul_days = ln 2 / k (the median),
    rul_low = -ln 0.9 / k, rul_high = -ln 0.1 / k (the 10 % and 90 % quantiles), each capped at
    max_rul_days;  confidence = 0.2 (a rule, not a learned model).

Each term that is not zero is one of the fallback's ``top_factors`` (its share of ``lam`` as the
contribution). Every prediction, model or fallback, carries the health score, status, the points
each signal cost (``health_penalties``) and the trend of the stored scores (``health_trend``):
``prediction.health`` has the formula, ``prediction.signals`` what it is fed.
"""

from __future__ import annotations

import math
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import BindParameter, bindparam, insert, select, text, update
from sqlalchemy.orm import Session

from foresight.audit import service as audit_service
from foresight.audit.schemas import Actor
from foresight.config import get_settings
from foresight.kit.db import Database, UTCDateTime, chunks, uuid_literal
from foresight.kit.errors import NotFound
from foresight.kit.time import as_utc, from_ms, utcnow
from foresight.live.events import Event, health_event
from foresight.models import (
    Asset,
    HealthScoreDay,
    JobStatus,
    ModelStatus,
    ModelVersion,
    Prediction,
    Severity,
    Tenant,
    TrainingJob,
)
from foresight.prediction import feedback, modeling, registry, signals, tracking
from foresight.prediction.features import (
    FeatureConfig,
    FeatureFrame,
    FeatureSpec,
    build_dataset,
    maintenance_rows,
)
from foresight.prediction.health import health as health_score

DEFAULT_MAX_RUL_DAYS = 180.0
HOLDOUT_FRACTION = 0.2
TOP_K = 5
FALLBACK_CONFIDENCE = 0.2
ALERT_WEIGHTS = {
    Severity.info: 0.01,
    Severity.warning: 0.05,
    Severity.critical: 0.20,
    Severity.emergency: 0.50,
}
ALERTS_COUNTED = 3
BASE_HAZARD = 0.02
ANOMALY_WEIGHT = 0.30
OVERDUE_WEIGHT = 0.10
MAINTENANCE_DUE_DAYS = 90.0

#: What :func:`train` uses unless told otherwise (tests shrink them).
DEFAULT_FEATURE_CONFIG = FeatureConfig()
DEFAULT_TRAIN_CONFIG = modeling.TrainConfig()

Progress = Callable[[float, str], None]


def _no_progress(_fraction: float, _stage: str) -> None:
    return None


# --- training ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    version_id: uuid.UUID
    version: int
    status: ModelStatus
    promoted: bool
    reason: str
    metrics: dict[str, Any]


def tenant_max_rul_days(session: Session, tenant_id: uuid.UUID) -> float:
    """The tenant setting ``max_rul_days`` (positive number), else 180."""
    tenant = session.get(Tenant, tenant_id)
    value = (tenant.settings or {}).get("max_rul_days") if tenant is not None else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return DEFAULT_MAX_RUL_DAYS


def _ms(value: int | None) -> datetime | None:
    return None if value is None else from_ms(int(value))


def train(
    db: Database,
    tenant_id: uuid.UUID,
    *,
    max_rul_days: float | None = None,
    progress: Progress | None = None,
    created_by: str = "system",
    feature_config: FeatureConfig | None = None,
    train_config: modeling.TrainConfig | None = None,
    mlflow_uri: str | None = None,
) -> TrainResult:
    """Train, evaluate on the held-out window, register; raises ``modeling.InsufficientData``.
    People's verdicts weigh and censor rows (``prediction.feedback``); with an MLflow URI
    (``mlflow_uri``, default ``FORESIGHT_MLFLOW_URI``) the run is tracked there too."""
    report = progress or _no_progress
    fconfig = feature_config or DEFAULT_FEATURE_CONFIG
    with db.transaction(write=False) as session:
        cap = max_rul_days if max_rul_days is not None else tenant_max_rul_days(session, tenant_id)
    if not cap > 0:
        raise ValueError("max_rul_days must be positive")
    tconfig = replace(train_config or DEFAULT_TRAIN_CONFIG, max_rul_days=float(cap))
    report(0.05, "building features")
    seen = feedback.training_data(db, tenant_id, fconfig, horizon_days=max(tconfig.horizons))
    frame, data = seen.frame, seen.data
    reasons = modeling.check_data(data, tconfig)
    if reasons:
        raise modeling.InsufficientData(reasons)
    report(0.3, "training on the time before the held-out window")
    fit_part, holdout = modeling.time_holdout(data, HOLDOUT_FRACTION)
    holdout_start = int(holdout.as_of_ms.min()) if len(holdout) else None
    holdout_metrics: dict[str, Any] | None = None
    notes: list[str] = []
    try:
        holdout_model = modeling.train(fit_part, tconfig)
        holdout_metrics = modeling.evaluate(holdout_model, holdout)
    except modeling.InsufficientData as exc:
        notes.append(f"held-out window not evaluated: {exc}")
    report(0.6, "training on every row")
    bundle = modeling.train(data, tconfig, metadata={"tenant_id": str(tenant_id)})
    artifact = bundle.to_bytes()
    report(0.85, "comparing with the champion")

    with db.transaction() as session:
        current = registry.champion(session, tenant_id)
        champion_metrics: dict[str, Any] | None = None
        if current is not None and current.artifact is not None and holdout_metrics is not None:
            champion_metrics = _score_champion_on(current, frame, holdout)
        if current is None:
            promoted, reason = True, "first model of the tenant"
        elif holdout_metrics is None:
            promoted, reason = False, "no held-out evaluation: " + "; ".join(notes)
        elif champion_metrics is None:
            promoted, reason = False, "the champion could not be scored on the held-out window"
        else:
            promoted, reason = registry.beats(holdout_metrics, champion_metrics)
            reason = ("beats the champion: " if promoted else "does not beat the champion: ") + (
                reason
            )
        metrics = {
            "training": bundle.metrics,
            "holdout": holdout_metrics,
            "holdout_window": {
                "start": None if holdout_start is None else from_ms(holdout_start).isoformat(),
                "end": from_ms(int(frame.as_of_ms.max())).isoformat(),
                "rows": len(holdout),
                "fraction": HOLDOUT_FRACTION,
            },
            "comparison": {
                "champion_version": None if current is None else current.version,
                "champion_holdout": champion_metrics,
                "new": registry.comparison_figures(holdout_metrics),
                "champion": registry.comparison_figures(champion_metrics),
                "promoted": promoted,
                "reason": reason,
            },
            "counts": bundle.counts,
            "feedback": seen.feedback,
            "notes": notes,
        }
        version = ModelVersion(
            tenant_id=tenant_id,
            version=registry.next_number(session, tenant_id),
            status=ModelStatus.challenger,
            data_start=_ms(bundle.data_window[0]),
            data_end=_ms(bundle.data_window[1]),
            holdout_start=_ms(holdout_start),
            feature_specs=[s.to_dict() for s in frame.specs],
            feature_config=_json_config(fconfig),
            categories={k: list(v) for k, v in frame.categories.items()},
            params=bundle.params,
            metrics=metrics,
            horizons=list(bundle.horizons),
            max_rul_days=float(cap),
            artifact=artifact,
            created_by=created_by,
            note=reason,
        )
        session.add(version)
        session.flush()
        if promoted:
            registry.promote(session, version, by=created_by)
        result = TrainResult(version.id, version.version, version.status, promoted, reason, metrics)
    tracking.log_training(db, result.version_id, uri=mlflow_uri)  # after the commit; never raises
    report(1.0, "done")  # outside the write transaction: the callback may write (job progress)
    return result


def _json_config(config: FeatureConfig) -> dict[str, Any]:
    d = config.to_dict()
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _score_champion_on(
    current: ModelVersion, frame: FeatureFrame, holdout: modeling.TrainingSet
) -> dict[str, Any] | None:
    """The champion's metrics on the held-out rows (its own columns, conformed)."""
    try:
        bundle = load_bundle(current)
        specs = [FeatureSpec.from_dict(s) for s in current.feature_specs]
        rows = np.isin(frame.as_of_ms, holdout.as_of_ms)
        sub = frame.filter(rows)
        key = np.char.add(sub.asset_id.astype(np.str_), sub.as_of_ms.astype(np.str_))
        want = np.char.add(holdout.asset_id.astype(np.str_), holdout.as_of_ms.astype(np.str_))
        sub = sub.filter(np.isin(key, want)).conform(specs, current.categories)
        return modeling.evaluate(bundle, sub)
    except (ValueError, KeyError):
        return None


# --- background jobs ------------------------------------------------------------------------------


def create_job(
    session: Session, tenant_id: uuid.UUID, *, requested_by: str, params: dict[str, Any]
) -> TrainingJob:
    job = TrainingJob(
        tenant_id=tenant_id,
        status=JobStatus.queued,
        progress=0.0,
        stage="queued",
        params=params,
        requested_by=requested_by,
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, tenant_id: uuid.UUID, job_id: uuid.UUID) -> TrainingJob:
    job = session.get(TrainingJob, job_id)
    if job is None or job.tenant_id != tenant_id:
        raise NotFound(f"Training job {job_id} not found.")
    return job


class JobInterrupted(Exception):
    """A training run ended early because its job was asked to stop (``run_job``)."""

    def __init__(self) -> None:
        super().__init__(JOB_INTERRUPTED)


#: The error of a job that was stopped before it finished (the process was shutting down).
JOB_INTERRUPTED = "interrupted: the process stopped before training finished"


def run_job(
    db: Database,
    job_id: uuid.UUID,
    *,
    should_stop: Callable[[], bool] | None = None,
    **train_kwargs: Any,
) -> None:
    """Run a queued job to its end, recording progress, the version made or the error.
    ``should_stop`` is asked at each progress step before the last: once it says yes the run
    ends there, before any version is recorded, and the job fails with ``JOB_INTERRUPTED``."""
    with db.transaction() as session:
        job = session.get(TrainingJob, job_id)
        if job is None or job.status is not JobStatus.queued:
            return
        job.status, job.started_at, job.stage = JobStatus.running, utcnow(), "starting"
        tenant_id, params, by = job.tenant_id, dict(job.params), job.requested_by

    def progress(fraction: float, stage: str) -> None:
        if should_stop is not None and fraction < 1.0 and should_stop():
            raise JobInterrupted
        with db.transaction() as s:
            j = s.get(TrainingJob, job_id)
            if j is not None:
                j.progress, j.stage = max(0.0, min(1.0, float(fraction))), stage[:200]

    try:
        result = train(
            db,
            tenant_id,
            max_rul_days=params.get("max_rul_days"),
            progress=progress,
            created_by=by,
            **train_kwargs,
        )
    except Exception as exc:  # the job records every failure; nothing else would see it
        detail = str(exc) or type(exc).__name__
        with db.transaction() as session:
            job = session.get(TrainingJob, job_id)
            if job is not None:
                job.status, job.error, job.finished_at = JobStatus.failed, detail, utcnow()
                job.stage = "failed"
        return
    with db.transaction() as session:
        job = session.get(TrainingJob, job_id)
        if job is not None:
            job.status, job.progress, job.stage = JobStatus.succeeded, 1.0, result.reason[:200]
            job.model_version_id, job.finished_at = result.version_id, utcnow()


# --- scoring -------------------------------------------------------------------------------------


_CACHE: dict[uuid.UUID, modeling.ModelBundle] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 8


def scoring_model(
    session: Session, version_id: uuid.UUID
) -> tuple[modeling.ModelBundle, list[FeatureSpec], FeatureConfig]:
    """The version's bundle, feature specs and config, from the caches; the version's row (its
    artifact: megabytes) is read only when they do not hold it yet."""
    with _CACHE_LOCK:
        bundle = _CACHE.get(version_id)
        recipe = _RECIPES.get(version_id)
    if bundle is None or recipe is None:
        version = session.get(ModelVersion, version_id)
        if version is None:
            raise NotFound(f"Model {version_id} not found.")
        bundle, recipe = load_bundle(version), _model_recipe(version)
    return bundle, *recipe


def load_bundle(version: ModelVersion) -> modeling.ModelBundle:
    """The version's artifact as a bundle (cached by version id: artifacts never change)."""
    with _CACHE_LOCK:
        bundle = _CACHE.get(version.id)
    if bundle is None:
        if version.artifact is None:
            raise ValueError(f"model version {version.version} has no artifact")
        bundle = modeling.ModelBundle.from_bytes(version.artifact)
        with _CACHE_LOCK:
            if len(_CACHE) >= _CACHE_SIZE:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[version.id] = bundle
    return bundle


_RECIPES: dict[uuid.UUID, tuple[list[FeatureSpec], FeatureConfig]] = {}


def _model_recipe(version: ModelVersion) -> tuple[list[FeatureSpec], FeatureConfig]:
    """The version's feature specs and config, parsed once (a version never changes)."""
    with _CACHE_LOCK:
        found = _RECIPES.get(version.id)
    if found is None:
        found = (
            [FeatureSpec.from_dict(s) for s in version.feature_specs],
            FeatureConfig.from_dict(version.feature_config),
        )
        with _CACHE_LOCK:
            if len(_RECIPES) >= _CACHE_SIZE:
                _RECIPES.pop(next(iter(_RECIPES)))
            _RECIPES[version.id] = found
    return found


@dataclass
class PredictionRow:
    """One asset's prediction (what is stored, returned and printed)."""

    asset_id: uuid.UUID
    asset_tag: str
    as_of: datetime | None
    computed_at: datetime
    model_version_id: uuid.UUID | None
    model_version: int | None
    fallback: bool
    fallback_reason: str | None
    failure_probability: dict[int, float]  # horizon days -> probability
    rul_days: float | None
    rul_low: float | None
    rul_high: float | None
    rul_at_cap: bool
    confidence: float | None
    max_rul_days: float
    health_score: float | None = None
    status: str | None = None
    top_factors: list[dict[str, Any]] = field(default_factory=list)
    id: uuid.UUID | None = None
    health_penalties: dict[str, float] | None = None
    health_trend: float | None = None  # points per week over the last four weeks
    # The asset's health score before this prediction was stored (not stored itself).
    previous_health_score: float | None = None

    def to_values(self, tenant_id: uuid.UUID) -> dict[str, Any]:
        """The ``predictions`` row's column values."""
        p = self.failure_probability
        return {
            "id": self.id or uuid.uuid4(),
            "tenant_id": tenant_id,
            "asset_id": self.asset_id,
            "as_of": self.as_of,
            "computed_at": self.computed_at,
            "model_version_id": self.model_version_id,
            "model_version": self.model_version,
            "fallback": self.fallback,
            "fallback_reason": self.fallback_reason,
            "failure_probability_7d": p.get(7),
            "failure_probability_14d": p.get(14),
            "failure_probability_30d": p.get(30),
            "rul_days": self.rul_days,
            "rul_low": self.rul_low,
            "rul_high": self.rul_high,
            "rul_at_cap": self.rul_at_cap,
            "confidence": self.confidence,
            "health_score": self.health_score,
            "status": self.status,
            "top_factors": self.top_factors,
            "health_penalties": self.health_penalties,
            "health_trend": self.health_trend,
        }

    def to_model(self, tenant_id: uuid.UUID) -> Prediction:
        return Prediction(**self.to_values(tenant_id))

    @classmethod
    def from_model(cls, row: Prediction, tag: str, max_rul_days: float) -> PredictionRow:
        probs = {
            h: v
            for h, v in (
                (7, row.failure_probability_7d),
                (14, row.failure_probability_14d),
                (30, row.failure_probability_30d),
            )
            if v is not None
        }
        return cls(
            id=row.id,
            asset_id=row.asset_id,
            asset_tag=tag,
            as_of=row.as_of,
            computed_at=row.computed_at,
            model_version_id=row.model_version_id,
            model_version=row.model_version,
            fallback=row.fallback,
            fallback_reason=row.fallback_reason,
            failure_probability=probs,
            rul_days=row.rul_days,
            rul_low=row.rul_low,
            rul_high=row.rul_high,
            rul_at_cap=row.rul_at_cap,
            confidence=row.confidence,
            max_rul_days=max_rul_days,
            health_score=row.health_score,
            status=row.status,
            top_factors=list(row.top_factors or []),
            health_penalties=None if row.health_penalties is None else dict(row.health_penalties),
            health_trend=row.health_trend,
        )


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _resolve_assets(
    session: Session, tenant_id: uuid.UUID, asset_ids: Sequence[uuid.UUID] | None
) -> list[Asset]:
    if asset_ids is not None:
        wanted = list(dict.fromkeys(asset_ids))
        found: dict[uuid.UUID, Asset] = {}
        for chunk in chunks(wanted):
            params = {"tenant": tenant_id, "ids": list(chunk)}
            found.update((a.id, a) for a in session.scalars(_ASSETS_BY_ID, params))
        missing = [str(a) for a in wanted if a not in found]
        if missing:
            raise NotFound(f"Asset(s) not found: {', '.join(missing[:10])}.")
        return [found[a] for a in wanted]
    return list(
        session.scalars(select(Asset).where(Asset.tenant_id == tenant_id).order_by(Asset.tag))
    )


def model_factors(
    contrib: modeling.Contributions, row: int, specs: Sequence[FeatureSpec], k: int = TOP_K
) -> list[dict[str, Any]]:
    """The row's top factors for the explained failure horizon, phrased for an engineer."""
    out = []
    for f in contrib.top(row, k, "failure"):
        spec = specs[f.index]
        out.append(
            {
                "feature": f.feature,
                "value": _finite(f.value),
                "contribution": round(f.contribution, 6),
                "direction": "raises risk" if f.contribution > 0 else "lowers risk",
                "text": spec.describe(f.value, f.contribution),
                "target": f"failure_{contrib.horizon}d",
            }
        )
    return out


def _too_little_history(frame: FeatureFrame) -> list[str | None]:
    """Per row: why the model cannot score it (None: it can)."""
    out: list[str | None] = [None] * len(frame)
    checks = (
        ("baseline_delta", "the asset's early-life baseline period is not over yet"),
        (None, "no recent sensor data"),
    )
    for stat, reason in checks:
        columns = [
            i
            for i, s in enumerate(frame.specs)
            if (s.stat == stat if stat is not None else s.sensor is not None)
        ]
        if not columns:
            continue
        blank = ~np.isfinite(frame.X[:, columns]).any(axis=1)
        for row in np.flatnonzero(blank).tolist():
            if out[row] is None:
                out[row] = f"too little history: {reason}"
    return out


def _attach_health(
    rows: Sequence[PredictionRow], found: dict[uuid.UUID, signals.AssetSignals]
) -> None:
    """Fill in each row's health score, status, breakdown and trend (``prediction.health`` from
    the prediction and the asset's signals, gathered at the row's ``as_of``)."""
    for r in rows:
        s = found[r.asset_id]
        p = r.failure_probability
        h = health_score(s.inputs(p.get(7), p.get(30), r.rul_days))
        r.health_score, r.status, r.health_penalties = h.score, h.status, h.penalties
        r.health_trend = s.trend_with(h.score)


def predict(
    db: Database,
    tenant_id: uuid.UUID,
    asset_ids: Sequence[uuid.UUID] | None = None,
    include_explanation: bool = True,
    *,
    store: bool = True,
    session: Session | None = None,
    reader: Session | None = None,
) -> list[PredictionRow]:
    """Score the assets (all of the tenant's, or ``asset_ids``, in that order) and store the
    predictions: in ``session`` when given (a request's write transaction: on SQLite a second
    writer would wait for it forever), else in a transaction of their own. Everything is read
    in one transaction: ``reader`` (e.g. a request's read-only session) or one of its own."""
    if reader is None:
        with db.transaction(write=False, snapshot=True) as own_reader:
            ordered = _score(own_reader, tenant_id, asset_ids, include_explanation)
    else:
        ordered = _score(reader, tenant_id, asset_ids, include_explanation)
    if store and session is not None:
        _store(session, tenant_id, ordered)
    elif store and ordered:
        if len(ordered) <= ONE_STATEMENT_ROWS and db.engine.dialect.name == "postgresql":
            _store_at_once(db, tenant_id, ordered)
        else:
            with db.transaction() as own:
                _store(own, tenant_id, ordered)
    return ordered


def _score(
    reader: Session,
    tenant_id: uuid.UUID,
    asset_ids: Sequence[uuid.UUID] | None,
    include_explanation: bool,
) -> list[PredictionRow]:
    now = utcnow()
    assets = _resolve_assets(reader, tenant_id, asset_ids)
    current = registry.champion_head(reader, tenant_id)
    if current is None:
        cap = tenant_max_rul_days(reader, tenant_id)
    else:
        cap = current.max_rul_days
        bundle, specs, config = scoring_model(reader, current.id)
    rows: dict[uuid.UUID, PredictionRow] = {}
    reasons: dict[uuid.UUID, str] = {}
    if not assets:
        return []
    # Read once for the features and the health signals.
    maintenance = maintenance_rows(reader, tenant_id, [a.id for a in assets])
    if current is None:
        for a in assets:
            reasons[a.id] = "no champion model: rule-based fallback"
    else:
        frame = build_dataset(
            None,
            tenant_id,
            config,
            as_of="latest",
            categories=current.categories,
            session=reader,
            assets=assets,  # read above in this transaction: not read again
            maintenance=maintenance,
        ).conform(specs, current.categories)
        index = {aid: i for i, aid in enumerate(frame.asset_id.tolist())}
        usable: list[int] = []
        too_little = _too_little_history(frame)
        for a in assets:
            i = index.get(str(a.id))
            if i is None:
                reasons[a.id] = "too little history: no readings"
                continue
            why = too_little[i]
            if why is not None:
                reasons[a.id] = why
            else:
                usable.append(i)
        if usable:
            X = frame.X[usable]
            threads = batch_threads(len(usable))
            pred = modeling.predict(bundle, X, num_threads=threads)
            contrib = (
                modeling.contributions(bundle, X, num_threads=threads)
                if include_explanation
                else None
            )
            tags = {str(a.id): a.tag for a in assets}
            for j, i in enumerate(usable):
                aid = frame.asset_id[i]
                rows[uuid.UUID(aid)] = PredictionRow(
                    asset_id=uuid.UUID(aid),
                    asset_tag=tags[aid],
                    as_of=from_ms(int(frame.as_of_ms[i])),
                    computed_at=now,
                    model_version_id=current.id,
                    model_version=current.version,
                    fallback=False,
                    fallback_reason=None,
                    failure_probability={
                        int(h): float(p[j]) for h, p in pred.probabilities.items()
                    },
                    rul_days=float(pred.rul_days[j]),
                    rul_low=float(pred.rul_low[j]),
                    rul_high=float(pred.rul_high[j]),
                    rul_at_cap=bool(pred.at_cap[j]),
                    confidence=float(pred.confidence[j]),
                    max_rul_days=float(bundle.max_rul_days),
                    top_factors=model_factors(contrib, j, specs) if contrib is not None else [],
                )
    # The signals of every asset at its own time, in one query each: the fallback's inputs and
    # the health score's.
    by_rule = [a for a in assets if a.id in reasons]
    latest = signals.latest_readings(reader, [a.id for a in by_rule]) if by_rule else {}
    times = {aid: r.as_of or r.computed_at for aid, r in rows.items()}
    times.update({a.id: latest.get(a.id, now) for a in by_rule})
    found = signals.gather(reader, assets, times, maintenance=maintenance)
    for a in by_rule:
        rows[a.id] = fallback_prediction(
            a, found[a.id], as_of=latest.get(a.id), reason=reasons[a.id], now=now,
            max_rul_days=cap, include_explanation=include_explanation,
        )  # fmt: skip
    ordered = [rows[a.id] for a in assets]
    _attach_health(ordered, found)
    for r in ordered:
        r.id = uuid.uuid4()
    return ordered


#: Rows from which a batch is scored on several threads (FORESIGHT_PREDICT_THREADS).
BATCH_THREADS_FROM = 64


def batch_threads(rows: int) -> int:
    """LightGBM threads for scoring ``rows`` assets: one below BATCH_THREADS_FROM (a thread's
    start-up costs more than it saves), else FORESIGHT_PREDICT_THREADS (0: one per core, at
    most 4)."""
    if rows < BATCH_THREADS_FROM:
        return 1
    wanted = get_settings().predict_threads
    return wanted if wanted > 0 else max(1, min(os.cpu_count() or 1, 4))


_IDS: BindParameter[Any] = bindparam("ids", expanding=True)
_ASSETS_BY_ID = select(Asset).where(Asset.tenant_id == bindparam("tenant"), Asset.id.in_(_IDS))
_HEALTH_SCORES = select(Asset.id, Asset.health_score).where(Asset.id.in_(_IDS))
_INSERT_PREDICTIONS = insert(Prediction)
_FEW_CHANGES = 20
_SET_HEALTH_SCORE = (
    update(Asset).where(Asset.id == bindparam("asset_id")).values(health_score=bindparam("score"))
)


def _store(session: Session, tenant_id: uuid.UUID, rows: Sequence[PredictionRow]) -> None:
    """Store the predictions and make each asset's ``health_score`` the new one (the score it
    had is kept on the row, for :func:`health_events`). Core statements built once: this runs
    for every prediction, and the ORM's unit of work costs more than the inserts."""
    conn = session.connection()
    previous: dict[uuid.UUID, float | None] = {}
    ids = list(dict.fromkeys(r.asset_id for r in rows))
    for chunk in chunks(ids):
        previous.update(
            (aid, score) for aid, score in conn.execute(_HEALTH_SCORES, {"ids": list(chunk)})
        )
    conn.execute(_INSERT_PREDICTIONS, [r.to_values(tenant_id) for r in rows])
    signals.record_scores(
        session,
        tenant_id,
        [
            (r.asset_id, r.as_of, r.health_score)
            for r in rows
            if r.as_of is not None and r.health_score is not None
        ],
    )
    changes: list[tuple[uuid.UUID, float]] = []
    for r in rows:
        r.previous_health_score = previous.get(r.asset_id)
        if r.health_score is not None and r.health_score != r.previous_health_score:
            changes.append((r.asset_id, r.health_score))
    # Many: one statement a thousand rows (an executemany is a statement each); a few, or a
    # score no literal spells, bound.
    many = len(changes) > _FEW_CHANGES
    bulk: list[tuple[uuid.UUID, float]] = []
    bound: list[dict[str, Any]] = []
    for a, v in changes:
        if many and math.isfinite(v):
            bulk.append((a, v))
        else:
            bound.append({"asset_id": a, "score": v})
    if bound:
        conn.execute(_SET_HEALTH_SCORE, bound)
    dialect = conn.dialect.name
    for chunk in chunks(bulk, 1000):
        values = ", ".join(f"({uuid_literal(dialect, a)}, {float(v)!r})" for a, v in chunk)
        statement = text(
            f"WITH v (id, score) AS (VALUES {values}) UPDATE assets"
            " SET health_score = v.score, updated_at = :now FROM v WHERE assets.id = v.id"
        ).bindparams(bindparam("now", type_=UTCDateTime()))
        conn.execute(statement, {"now": utcnow()})


#: Rows stored in one autocommitted statement on PostgreSQL (:func:`_store_at_once`).
ONE_STATEMENT_ROWS = 8
_PREDICTION_COLUMNS = [c.name for c in Prediction.__table__.columns]
_DAY_COLUMNS = ["asset_id", "day", "tenant_id", "n", "sum_x", "sum_y", "sum_xx", "sum_xy"]
_DAY_COLUMNS += ["min_x", "max_x"]
_AT_ONCE: dict[tuple[int, int, int], Any] = {}


def _at_once_statement(rows: int, days: int, scores: int) -> Any:
    """The statement of :func:`_store_at_once` for that many rows, day sums and scores (built
    once per shape: bound parameters ``p{i}_{column}``, ``d{i}_{column}``, ``s{i}_id`` and
    ``s{i}_score``, ``now``)."""
    key = (rows, days, scores)
    statement = _AT_ONCE.get(key)
    if statement is not None:
        return statement
    ctes = []
    binds = [bindparam("now", type_=UTCDateTime())]
    table = Prediction.__table__
    for i in range(rows):
        names = ", ".join(_PREDICTION_COLUMNS)
        params = ", ".join(f":p{i}_{c}" for c in _PREDICTION_COLUMNS)
        ctes.append(f"stored{i} AS (INSERT INTO predictions ({names}) VALUES ({params}))")
        binds += [bindparam(f"p{i}_{c.name}", type_=c.type) for c in table.columns]
    day_table = HealthScoreDay.__table__
    for i in range(days):
        names = ", ".join(_DAY_COLUMNS)
        params = ", ".join(f":d{i}_{c}" for c in _DAY_COLUMNS)
        ctes.append(
            f"days{i} AS (INSERT INTO health_score_days ({names}) VALUES ({params})"
            " ON CONFLICT (asset_id, day) DO UPDATE SET "
            + ", ".join(
                f"{c} = health_score_days.{c} + excluded.{c}"
                for c in ("n", "sum_x", "sum_y", "sum_xx", "sum_xy")
            )
            + ", min_x = LEAST(health_score_days.min_x, excluded.min_x),"
            " max_x = GREATEST(health_score_days.max_x, excluded.max_x))"
        )
        binds += [bindparam(f"d{i}_{c}", type_=day_table.c[c].type) for c in _DAY_COLUMNS]
    asset_table = Asset.__table__
    for i in range(scores):
        ctes.append(
            f"scored{i} AS (UPDATE assets SET health_score = :s{i}_score, updated_at = :now"
            f" WHERE id = :s{i}_id AND CAST(:s{i}_score AS DOUBLE PRECISION) IS NOT NULL"
            f" AND health_score IS DISTINCT FROM :s{i}_score)"
        )
        binds += [
            bindparam(f"s{i}_id", type_=asset_table.c.id.type),
            bindparam(f"s{i}_score", type_=asset_table.c.health_score.type),
        ]
    ids = " OR ".join(f"id = :s{i}_id" for i in range(scores)) or "false"
    sql = f"WITH {', '.join(ctes)} SELECT id, health_score FROM assets WHERE {ids}"
    statement = _AT_ONCE[key] = text(sql).bindparams(*binds)
    return statement


def _store_at_once(db: Database, tenant_id: uuid.UUID, rows: Sequence[PredictionRow]) -> None:
    """What :func:`_store` does, for a few rows on PostgreSQL, as one statement run on its own
    (atomic by itself, so no transaction around it): the predictions inserted, their day sums
    added to ``health_score_days`` and the assets' scores set, by data-modifying CTEs, while the
    statement's own SELECT reads the scores the assets had (every part of one statement sees
    the same snapshot). One round trip where a transaction of its own takes six (BEGIN, four
    statements, COMMIT): a single scored prediction's store."""
    params: dict[str, Any] = {"now": utcnow()}
    for i, r in enumerate(rows):
        params.update((f"p{i}_{c}", v) for c, v in r.to_values(tenant_id).items())
    sums = signals.day_sums(
        [
            (r.asset_id, r.as_of, r.health_score)
            for r in rows
            if r.as_of is not None and r.health_score is not None
        ]
    )
    for i, (a, d, acc) in enumerate(sums):
        params.update(
            zip(
                (f"d{i}_{c}" for c in _DAY_COLUMNS),
                [a, int(d), tenant_id, int(acc[0]), *acc[1:]],
                strict=True,
            )
        )
    # Every asset of the rows: one without a score has its previous one read all the same.
    scores = {r.asset_id: r.health_score for r in rows}
    for i, (a, score) in enumerate(scores.items()):
        params[f"s{i}_id"], params[f"s{i}_score"] = a, score
    statement = _at_once_statement(len(rows), len(sums), len(scores))
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        previous: dict[uuid.UUID, float | None] = dict(conn.execute(statement, params).all())
    for r in rows:
        r.previous_health_score = previous.get(r.asset_id)


def health_events(rows: Sequence[PredictionRow]) -> list[tuple[uuid.UUID, Event]]:
    """The live ``health`` events of stored predictions whose score changed, to publish (e.g.
    ``live.publish(tenant_id, asset_id, event)``) once the transaction that stored them
    committed."""
    return [
        (
            r.asset_id,
            health_event(
                health_score=r.health_score,
                previous=r.previous_health_score,
                status=r.status,
                trend=r.health_trend,
                prediction_id=None if r.id is None else str(r.id),
            ),
        )
        for r in rows
        if r.health_score is not None and r.health_score != r.previous_health_score
    ]


# --- the rule-based fallback ------------------------------------------------------------------


def fallback_prediction(
    asset: Asset,
    found: signals.AssetSignals,
    *,
    as_of: datetime | None,
    reason: str,
    now: datetime,
    max_rul_days: float,
    include_explanation: bool = True,
) -> PredictionRow:
    """The transparent rule (see the module docstring), as of the asset's latest reading
    (``as_of``; ``now`` when it has none), from its signals at that time (``signals.gather``)."""
    t = as_of or now
    counts = found.open_alerts
    flagged = found.flagged_minutes_24h
    last_maintenance = found.last_maintenance
    terms: list[tuple[str, float, float, str]] = [("base", 1.0, BASE_HAZARD, "base rate")]
    for severity, weight in ALERT_WEIGHTS.items():
        n = int(counts.get(severity.value, 0) or 0)
        if n:
            counted = min(n, ALERTS_COUNTED)
            word = "alert" if n == 1 else "alerts"
            terms.append(
                (
                    f"open_alerts_{severity.value}",
                    n,
                    weight * counted,
                    f"{n} open {severity} {word}",
                )
            )
    anomaly = min(1.0, flagged / 60.0)
    if flagged:
        terms.append(
            (
                "anomaly_minutes__24h",
                flagged,
                ANOMALY_WEIGHT * anomaly,
                f"{flagged} anomalous minutes in the last 24 h",
            )
        )
    days_since: float | None = None
    if isinstance(last_maintenance, datetime):
        days_since = (t - as_utc(last_maintenance)) / timedelta(days=1)
        overdue = min(1.0, max(0.0, days_since - MAINTENANCE_DUE_DAYS) / MAINTENANCE_DUE_DAYS)
        if overdue > 0:
            terms.append(
                (
                    "days_since_maintenance",
                    days_since,
                    OVERDUE_WEIGHT * overdue,
                    f"no maintenance for {round(days_since)} days",
                )
            )
    lam = sum(term[2] for term in terms)
    p30 = 1.0 - math.exp(-lam)
    probs = {h: 1.0 - (1.0 - p30) ** (h / 30.0) for h in (7, 14, 30)}
    k = lam / 30.0
    cap = float(max_rul_days)
    rul = min(cap, math.log(2) / k)
    factors = [
        {
            "feature": name,
            "value": float(value),
            "contribution": round(part / lam, 6),
            "direction": "raises risk",
            "text": text,
            "target": "fallback_hazard",
        }
        for name, value, part, text in sorted(terms[1:], key=lambda x: -x[2])[:TOP_K]
    ]
    return PredictionRow(
        asset_id=asset.id,
        asset_tag=asset.tag,
        as_of=as_of,
        computed_at=now,
        model_version_id=None,
        model_version=None,
        fallback=True,
        fallback_reason=reason,
        failure_probability=probs,
        rul_days=rul,
        rul_low=min(cap, -math.log(0.9) / k),
        rul_high=min(cap, -math.log(0.1) / k),
        rul_at_cap=rul >= cap,
        confidence=FALLBACK_CONFIDENCE,
        max_rul_days=cap,
        top_factors=factors if include_explanation else [],
    )


# --- reading stored predictions ------------------------------------------------------------------


def _asset(session: Session, tenant_id: uuid.UUID, asset_id: uuid.UUID) -> Asset:
    asset = session.get(Asset, asset_id)
    if asset is None or asset.tenant_id != tenant_id:
        raise NotFound(f"Asset {asset_id} not found.")
    return asset


def history(
    session: Session, tenant_id: uuid.UUID, asset_id: uuid.UUID, *, limit: int = 100
) -> list[PredictionRow]:
    """The asset's stored predictions, newest first."""
    asset = _asset(session, tenant_id, asset_id)
    cap = tenant_max_rul_days(session, tenant_id)
    rows = session.scalars(
        select(Prediction)
        .where(Prediction.tenant_id == tenant_id, Prediction.asset_id == asset_id)
        .order_by(Prediction.computed_at.desc(), Prediction.id)
        .limit(limit)
    )
    return [PredictionRow.from_model(r, asset.tag, cap) for r in rows]


def assets_by_tag(session: Session, tenant_id: uuid.UUID, tags: Sequence[str]) -> list[uuid.UUID]:
    found = {
        a.tag: a.id
        for a in session.scalars(
            select(Asset).where(Asset.tenant_id == tenant_id, Asset.tag.in_(list(tags)))
        )
    }
    missing = [t for t in tags if t not in found]
    if missing:
        raise NotFound(f"Asset(s) not found: {', '.join(missing[:10])}.")
    return [found[t] for t in tags]


# --- registry actions (audited) ------------------------------------------------------------------


def _version_summary(v: ModelVersion) -> dict[str, Any]:
    return {"version": v.version, "status": v.status.value}


def promote(
    session: Session, tenant_id: uuid.UUID, version: ModelVersion, *, actor: Actor
) -> ModelVersion | None:
    """Make ``version`` champion by hand (audited); returns the champion it replaced."""
    replaced = registry.promote(session, version, by=actor.label)
    audit_service.record(
        session,
        actor=actor,
        action="model.promote",
        object_type="model_version",
        object_id=version.id,
        changes={
            "version": version.version,
            "replaced": None if replaced is None else replaced.version,
        },
    )
    return replaced


def rollback(
    session: Session, tenant_id: uuid.UUID, *, actor: Actor
) -> tuple[ModelVersion, ModelVersion]:
    """Bring the previous champion back (audited): (restored, retired)."""
    restored, retired = registry.rollback(session, tenant_id, by=actor.label)
    audit_service.record(
        session,
        actor=actor,
        action="model.rollback",
        object_type="model_version",
        object_id=restored.id,
        changes={"restored": _version_summary(restored), "retired": _version_summary(retired)},
    )
    return restored, retired


def cli_row(row: PredictionRow) -> dict[str, Any]:
    """The ``foresight predict`` row: exactly the documented columns. A fallback prediction's
    first factor says so (``feature: "fallback"``, with the reason)."""
    factors = list(row.top_factors)
    if row.fallback:
        factors.insert(
            0,
            {
                "feature": "fallback",
                "value": None,
                "contribution": None,
                "direction": None,
                "text": f"rule-based fallback: {row.fallback_reason}",
            },
        )
    p = row.failure_probability
    return {
        "asset": row.asset_tag,
        "as_of": None if row.as_of is None else row.as_of.isoformat(),
        "failure_probability_7d": p.get(7),
        "failure_probability_14d": p.get(14),
        "failure_probability_30d": p.get(30),
        "rul_days": row.rul_days,
        "rul_low": row.rul_low,
        "rul_high": row.rul_high,
        "health_score": row.health_score,
        "status": row.status,
        "top_factors": factors,
    }


CLI_COLUMNS = (
    "asset",
    "as_of",
    "failure_probability_7d",
    "failure_probability_14d",
    "failure_probability_30d",
    "rul_days",
    "rul_low",
    "rul_high",
    "health_score",
    "status",
    "top_factors",
)
