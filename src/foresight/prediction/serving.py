"""What the API serves from the prediction engine: an asset's current prediction, its history,
the fleet's health, training jobs and registry actions.

**Current prediction** (:func:`current`): the asset's latest stored prediction while it is still
current, else a fresh one, scored and stored. A stored prediction is *stale* when

* the asset has a reading newer than the prediction's ``as_of`` (predictions are made as of the
  latest reading, so a newer one would change the features), or
* the champion changed since it was computed (training promoted a model, a promote or a
  rollback), or the model that made it is no longer champion and none is;

or when ``refresh`` asks for a fresh one. A current stored prediction is served as is, so a
dashboard polling an asset whose data has not moved costs a few indexed reads.

**Fleet health** (:func:`fleet_health`): each asset with its latest stored prediction in one
query (an indexed ``LIMIT 1`` lookup per asset inside it), counted by status and ranked.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from foresight.audit import service as audit_service
from foresight.audit.schemas import Actor
from foresight.kit.db import Database
from foresight.kit.errors import Conflict, NotFound
from foresight.kit.time import from_ms, utcnow
from foresight.models import (
    Asset,
    JobStatus,
    ModelVersion,
    Prediction,
    Sensor,
    SeriesLatest,
    TrainingJob,
)
from foresight.prediction import realised, registry, service
from foresight.prediction.health import STATUSES
from foresight.prediction.schemas import (
    FleetHealth,
    ModelVersionRead,
    PromoteResult,
    RiskyAsset,
    RollbackResult,
    TrainingJobRead,
)
from foresight.prediction.service import PredictionRow

UNSCORED = "unscored"


# --- stored predictions --------------------------------------------------------------------------


def _stored(tenant_id: uuid.UUID) -> Select[Prediction, str, float]:
    """Predictions with their asset's tag and their model's RUL cap (None for a fallback)."""
    return (
        select(Prediction, Asset.tag, ModelVersion.max_rul_days)
        .join(Asset, Asset.id == Prediction.asset_id)
        .outerjoin(ModelVersion, ModelVersion.id == Prediction.model_version_id)
        .where(Prediction.tenant_id == tenant_id)
    )


def _rows(
    session: Session, tenant_id: uuid.UUID, query: Select[Prediction, str, float]
) -> list[PredictionRow]:
    tenant_cap = service.tenant_max_rul_days(session, tenant_id)
    return [
        PredictionRow.from_model(p, tag, tenant_cap if cap is None else cap)
        for p, tag, cap in session.execute(query).all()
    ]


def _asset(session: Session, tenant_id: uuid.UUID, asset_id: uuid.UUID) -> Asset:
    asset = session.get(Asset, asset_id)
    if asset is None or asset.tenant_id != tenant_id:
        raise NotFound(f"Asset {asset_id} not found.")
    return asset


def history(
    session: Session,
    tenant_id: uuid.UUID,
    asset_id: uuid.UUID,
    *,
    limit: int = 100,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[PredictionRow]:
    """The asset's stored predictions, newest first, computed in ``[since, until)``."""
    _asset(session, tenant_id, asset_id)
    query = _stored(tenant_id).where(Prediction.asset_id == asset_id)
    if since is not None:
        query = query.where(Prediction.computed_at >= since)
    if until is not None:
        query = query.where(Prediction.computed_at < until)
    query = query.order_by(Prediction.computed_at.desc(), Prediction.id.desc()).limit(limit)
    return _rows(session, tenant_id, query)


def latest_stored(
    session: Session, tenant_id: uuid.UUID, asset_id: uuid.UUID
) -> PredictionRow | None:
    rows = history(session, tenant_id, asset_id, limit=1)
    return rows[0] if rows else None


def latest_reading_at(session: Session, asset_id: uuid.UUID) -> datetime | None:
    """The asset's newest reading time (what predictions are made as of)."""
    ms = session.scalar(
        select(func.max(SeriesLatest.ts_ms))
        .join(Sensor, Sensor.series_id == SeriesLatest.series_id)
        .where(Sensor.asset_id == asset_id)
    )
    return None if ms is None else from_ms(int(ms))


def stale_reason(
    stored: PredictionRow | None,
    latest_reading: datetime | None,
    champion: registry.ChampionHead | ModelVersion | None,
) -> str | None:
    """Why ``stored`` is no longer the asset's current prediction (None: it is)."""
    if stored is None:
        return "no stored prediction"
    if latest_reading is not None and (stored.as_of is None or stored.as_of < latest_reading):
        return "a newer reading"
    if champion is None:
        return "its model is no longer champion" if stored.model_version_id is not None else None
    if champion.promoted_at is not None and stored.computed_at < champion.promoted_at:
        return "the champion changed"
    if not stored.fallback and stored.model_version_id != champion.id:
        return "the champion changed"
    return None


def current(
    db: Database,
    session: Session,
    tenant_id: uuid.UUID,
    asset_id: uuid.UUID,
    *,
    refresh: bool = False,
) -> tuple[PredictionRow, bool]:
    """The asset's current prediction (see the module docstring) and whether it was scored now.
    A fresh one is stored in a transaction of its own: ``session`` (the request's) is only read
    from."""
    if not refresh:
        _asset(session, tenant_id, asset_id)
        stored = latest_stored(session, tenant_id, asset_id)
        if stored is not None:
            reading = latest_reading_at(session, asset_id)
            if stale_reason(stored, reading, registry.champion_head(session, tenant_id)) is None:
                return stored, False
    # (An unknown asset is a 404 from the scoring itself.)
    rows = service.predict(db, tenant_id, [asset_id], include_explanation=True, reader=session)
    return rows[0], True


def score(
    db: Database,
    session: Session,
    tenant_id: uuid.UUID,
    asset_ids: list[uuid.UUID],
    *,
    include_explanation: bool = True,
) -> list[PredictionRow]:
    """Score fresh and store (in a transaction of its own: ``session``, the request's, only
    reads, so the scoring does not hold SQLite's write lock): one row per requested id, in order
    (a repeated id gets the same prediction); unknown ids are a 404 before anything is scored."""
    rows = service.predict(
        db, tenant_id, asset_ids, include_explanation=include_explanation, reader=session
    )
    by_id = {r.asset_id: r for r in rows}
    return [by_id[a] for a in asset_ids]


def score_tags(
    db: Database, session: Session, tenant_id: uuid.UUID, tags: list[str]
) -> list[PredictionRow]:
    """:func:`score` by asset tag (the seed's ``equipment_id``); unknown tags are a 404."""
    return score(db, session, tenant_id, service.assets_by_tag(session, tenant_id, tags))


# --- fleet health --------------------------------------------------------------------------------


def fleet_health(session: Session, tenant_id: uuid.UUID, *, limit: int = 10) -> FleetHealth:
    """Counts by status, mean health score and the ``limit`` riskiest assets, from each asset's
    latest stored prediction."""
    latest_id = (
        select(Prediction.id)
        .where(Prediction.tenant_id == tenant_id, Prediction.asset_id == Asset.id)
        .order_by(Prediction.computed_at.desc(), Prediction.id.desc())
        .limit(1)
        .correlate(Asset)
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            Asset.id,
            Asset.tag,
            Asset.name,
            Prediction.id,
            Prediction.health_score,
            Prediction.status,
            Prediction.failure_probability_30d,
            Prediction.rul_days,
            Prediction.computed_at,
        )
        .select_from(Asset)
        .outerjoin(Prediction, Prediction.id == latest_id)
        .where(Asset.tenant_id == tenant_id)
    ).all()
    counts: dict[str, int] = dict.fromkeys((*STATUSES, UNSCORED), 0)
    scores: list[float] = []
    scored: list[RiskyAsset] = []
    for asset_id, tag, name, pid, score_, status, p30, rul, computed_at in rows:
        if pid is None:
            counts[UNSCORED] += 1
            continue
        key = status if status is not None and score_ is not None else UNSCORED
        counts[key] = counts.get(key, 0) + 1
        if score_ is not None:
            scores.append(float(score_))
        scored.append(
            RiskyAsset(
                asset_id=asset_id,
                tag=tag,
                name=name,
                health_score=score_,
                status=status,
                p30=p30,
                rul_days=rul,
                computed_at=computed_at,
            )
        )
    scored.sort(key=_risk_order)
    return FleetHealth(
        assets=len(rows),
        counts=counts,
        mean_health_score=round(sum(scores) / len(scores), 2) if scores else None,
        riskiest=scored[:limit],
    )


def _risk_order(a: RiskyAsset) -> tuple[Any, ...]:
    # Lowest score first (no score last), then the highest 30-day probability, then the tag.
    score_key = (1, 0.0) if a.health_score is None else (0, a.health_score)
    return (*score_key, -(a.p30 if a.p30 is not None else -1.0), a.tag)


# --- registry and jobs -------------------------------------------------------------------------


def list_models(session: Session, tenant_id: uuid.UUID) -> list[ModelVersionRead]:
    versions = registry.list_versions(session, tenant_id)
    done = realised.realised_for(session, tenant_id, versions)
    return [ModelVersionRead.of(v, done.get(v.id)) for v in versions]


def job(session: Session, tenant_id: uuid.UUID, job_id: uuid.UUID) -> TrainingJobRead:
    found: TrainingJob = service.get_job(session, tenant_id, job_id)
    version = (
        session.get(ModelVersion, found.model_version_id)
        if found.model_version_id is not None
        else None
    )
    return TrainingJobRead.of(found, version)


#: A queued or running job that has not reported progress for this long is taken for dead.
STALE_JOB_S = 3600.0


def request_training(
    session: Session, tenant_id: uuid.UUID, *, actor: Actor, params: dict[str, Any]
) -> TrainingJobRead:
    """A queued training job (audited); the caller runs it once this transaction committed.
    409 while another of the tenant's jobs — from any process: another API worker, the
    scheduler — is queued or running and has shown life (progress) in the last
    ``STALE_JOB_S``; a job whose process died is not waited for beyond that."""
    other = session.scalar(
        select(TrainingJob.id)
        .where(
            TrainingJob.tenant_id == tenant_id,
            TrainingJob.status.in_((JobStatus.queued, JobStatus.running)),
            TrainingJob.updated_at >= utcnow() - timedelta(seconds=STALE_JOB_S),
        )
        .order_by(TrainingJob.created_at.desc())
        .limit(1)
    )
    if other is not None:
        raise Conflict(
            f"Training job {other} is still queued or running: follow it at "
            f"/api/v1/models/jobs/{other}."
        )
    queued = service.create_job(session, tenant_id, requested_by=actor.label, params=params)
    audit_service.record(
        session,
        actor=actor,
        action="model.train",
        object_type="training_job",
        object_id=queued.id,
        changes={"params": params},
    )
    return TrainingJobRead.of(queued)


def promote(
    session: Session, tenant_id: uuid.UUID, version_id: uuid.UUID, *, actor: Actor
) -> PromoteResult:
    version = registry.get(session, tenant_id, version_id)
    replaced = service.promote(session, tenant_id, version, actor=actor)
    return PromoteResult(
        champion=ModelVersionRead.of(version),
        replaced=None if replaced is None else ModelVersionRead.of(replaced),
    )


def rollback(session: Session, tenant_id: uuid.UUID, *, actor: Actor) -> RollbackResult:
    restored, retired = service.rollback(session, tenant_id, actor=actor)
    return RollbackResult(
        champion=ModelVersionRead.of(restored), retired=ModelVersionRead.of(retired)
    )
