"""The model registry: versions per tenant, champion/challenger, manual promote and rollback.

Every training run is recorded as a :class:`~foresight.models.ModelVersion` (version number per
tenant, data window, feature specs and config, parameters, metrics, artifact). At most one
version per tenant is the **champion** (the one that scores).

Champion/challenger rule (:func:`beats`)
    A run's model is evaluated on a *held-out window*: the last 20 % of the run's prediction
    times (``modeling.time_holdout``; the part before it is relabelled as of the boundary, so
    nothing in the window leaks into the fit). The champion's artifact is scored on exactly the
    same rows. The new model wins, and is promoted, when on that window

    * its RUL RMSE (days, capped target) is lower than the champion's, and
    * its ROC AUC for "fails within 30 days" is not lower than the champion's by more than
      ``AUC_TOLERANCE`` (0.01);

    where one of the two figures is undefined for either model (no known RUL rows, or a window
    without both outcomes), the other decides alone (RMSE lower, or AUC strictly higher); with
    neither defined the new model stays challenger. The first model of a tenant becomes
    champion. The comparison is conservative: the champion may have been trained on rows of the
    window, the newcomer never was.

Promote and rollback
    ``promote`` makes a version champion by hand; the replaced champion becomes ``retired`` and
    is remembered as the new one's ``previous_champion_id``. ``rollback`` retires the champion
    and brings back its ``previous_champion_id`` (so repeated rollbacks walk back the chain).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from foresight.kit.errors import Conflict, NotFound
from foresight.kit.time import utcnow
from foresight.models import ModelStatus, ModelVersion

AUC_TOLERANCE = 0.01
COMPARISON_HORIZON = 30


def _metric(metrics: dict[str, Any] | None, *path: str) -> float | None:
    node: Any = metrics or {}
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return float(node) if isinstance(node, int | float) else None


def comparison_figures(holdout: dict[str, Any] | None) -> dict[str, float | None]:
    """The two figures the rule compares, from ``modeling.evaluate`` output."""
    return {
        "rul_rmse": _metric(holdout, "rul", "rmse"),
        "roc_auc_30d": _metric(holdout, f"failure_{COMPARISON_HORIZON}d", "roc_auc"),
    }


def beats(new: dict[str, Any] | None, champion: dict[str, Any] | None) -> tuple[bool, str]:
    """Whether ``new`` beats ``champion`` on the same held-out rows (see the module docstring),
    and why, in words."""
    a, b = comparison_figures(new), comparison_figures(champion)
    rmse_new, rmse_old = a["rul_rmse"], b["rul_rmse"]
    auc_new, auc_old = a["roc_auc_30d"], b["roc_auc_30d"]
    have_rmse = rmse_new is not None and rmse_old is not None
    have_auc = auc_new is not None and auc_old is not None
    if have_rmse and have_auc:
        assert rmse_new is not None and rmse_old is not None
        assert auc_new is not None and auc_old is not None
        ok = rmse_new < rmse_old and auc_new >= auc_old - AUC_TOLERANCE
        return ok, (
            f"RUL RMSE {rmse_new:.2f} vs {rmse_old:.2f} days, "
            f"30-day ROC AUC {auc_new:.3f} vs {auc_old:.3f}"
        )
    if have_rmse:
        assert rmse_new is not None and rmse_old is not None
        return rmse_new < rmse_old, f"RUL RMSE {rmse_new:.2f} vs {rmse_old:.2f} days (no AUC)"
    if have_auc:
        assert auc_new is not None and auc_old is not None
        return auc_new > auc_old, f"30-day ROC AUC {auc_new:.3f} vs {auc_old:.3f} (no RMSE)"
    return False, "no comparable figures on the held-out window"


def list_versions(session: Session, tenant_id: uuid.UUID) -> list[ModelVersion]:
    return list(
        session.scalars(
            select(ModelVersion)
            .where(ModelVersion.tenant_id == tenant_id)
            .order_by(ModelVersion.version.desc())
        )
    )


class ChampionHead(NamedTuple):
    """What scoring needs to know of the champion on every call (the artifact and the feature
    specs, large and immutable, are loaded once per version by the caller's cache)."""

    id: uuid.UUID
    version: int
    max_rul_days: float
    categories: dict[str, list[str]]
    promoted_at: datetime | None


_CHAMPION_HEAD = select(
    ModelVersion.id,
    ModelVersion.version,
    ModelVersion.max_rul_days,
    ModelVersion.categories,
    ModelVersion.promoted_at,
).where(ModelVersion.tenant_id == bindparam("tenant"), ModelVersion.status == ModelStatus.champion)


def champion_head(session: Session, tenant_id: uuid.UUID) -> ChampionHead | None:
    """The champion's identity and scoring settings, without its artifact (one prebuilt
    statement: this runs on every prediction)."""
    row = session.connection().execute(_CHAMPION_HEAD, {"tenant": tenant_id}).first()
    return None if row is None else ChampionHead(*row)


def champion(session: Session, tenant_id: uuid.UUID) -> ModelVersion | None:
    return session.scalars(
        select(ModelVersion).where(
            ModelVersion.tenant_id == tenant_id, ModelVersion.status == ModelStatus.champion
        )
    ).first()


def get(session: Session, tenant_id: uuid.UUID, version_id: uuid.UUID) -> ModelVersion:
    row = session.get(ModelVersion, version_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"Model {version_id} not found.")
    return row


def by_number(session: Session, tenant_id: uuid.UUID, number: int) -> ModelVersion:
    row = session.scalars(
        select(ModelVersion).where(
            ModelVersion.tenant_id == tenant_id, ModelVersion.version == number
        )
    ).first()
    if row is None:
        raise NotFound(f"Model version {number} not found.")
    return row


def next_number(session: Session, tenant_id: uuid.UUID) -> int:
    current = session.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.tenant_id == tenant_id)
    )
    return int(current or 0) + 1


def promote(session: Session, version: ModelVersion, *, by: str) -> ModelVersion | None:
    """Make ``version`` champion; returns the champion it replaced (now retired), if any."""
    if version.status is ModelStatus.failed or version.artifact is None:
        raise Conflict(f"Model version {version.version} failed to train and cannot be promoted.")
    current = champion(session, version.tenant_id)
    if current is not None and current.id == version.id:
        return None
    if current is not None:
        current.status = ModelStatus.retired
        version.previous_champion_id = current.id
        session.flush()  # at most one champion at any time
    version.status = ModelStatus.champion
    version.promoted_by = by
    version.promoted_at = utcnow()
    session.flush()
    return current


def rollback(
    session: Session, tenant_id: uuid.UUID, *, by: str
) -> tuple[ModelVersion, ModelVersion]:
    """Retire the champion and bring back the one it replaced: (restored, retired)."""
    current = champion(session, tenant_id)
    if current is None:
        raise Conflict("There is no champion model to roll back.")
    previous = (
        session.get(ModelVersion, current.previous_champion_id)
        if current.previous_champion_id is not None
        else None
    )
    if previous is None or previous.artifact is None:
        raise Conflict(
            f"Model version {current.version} replaced no earlier champion: nothing to roll "
            "back to."
        )
    current.status = ModelStatus.retired
    session.flush()
    previous.status = ModelStatus.champion
    previous.promoted_by = by
    previous.promoted_at = utcnow()
    session.flush()
    return previous, current
