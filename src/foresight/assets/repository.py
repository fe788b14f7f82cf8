"""Queries for assets and sensors; every one is scoped to a tenant."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import SQLColumnExpression, and_, case, func, literal, or_, select, text
from sqlalchemy.orm import Session

from foresight.assets.schemas import AssetFilters
from foresight.models import Asset, Criticality, Sensor, SeriesLatest, Tenant

# A bound on hierarchy walks, so even corrupt data (a cycle written outside the API) terminates.
MAX_WALK_DEPTH = 1000

CRITICALITY_RANK: dict[Criticality, int] = {
    Criticality.low: 0,
    Criticality.medium: 1,
    Criticality.high: 2,
    Criticality.critical: 3,
}
# Assets without a health score sort as -1: first ascending, last descending, on every backend.
NULL_HEALTH_SCORE = -1.0


# --- assets ---------------------------------------------------------------------------------


def get_asset(session: Session, *, tenant_id: uuid.UUID, asset_id: uuid.UUID) -> Asset | None:
    stmt = select(Asset).where(Asset.id == asset_id, Asset.tenant_id == tenant_id)
    return session.scalars(stmt).one_or_none()


def get_asset_by_tag(session: Session, *, tenant_id: uuid.UUID, tag: str) -> Asset | None:
    stmt = select(Asset).where(Asset.tenant_id == tenant_id, Asset.tag == tag)
    return session.scalars(stmt).one_or_none()


def add(session: Session, obj: Asset | Sensor) -> None:
    session.add(obj)
    session.flush()


def delete(session: Session, obj: Asset | Sensor) -> None:
    session.delete(obj)
    session.flush()


def next_series_id(session: Session) -> int:
    """A new sensor's time-series id, never reused (a deleted sensor's points may remain).

    A sequence on PostgreSQL; on SQLite one past the highest id any sensor or any stored point
    ever had (safe: SQLite writers hold the database lock for their whole transaction).
    """
    if session.get_bind().dialect.name == "postgresql":
        return int(session.scalar(text("SELECT nextval('sensor_series_id_seq')")) or 0)
    highest = select(func.max(Sensor.series_id)).union_all(select(func.max(SeriesLatest.series_id)))
    return max((int(v) for v in session.scalars(highest) if v is not None), default=0) + 1


def count_children(session: Session, *, tenant_id: uuid.UUID, asset_id: uuid.UUID) -> int:
    stmt = select(func.count()).where(Asset.tenant_id == tenant_id, Asset.parent_id == asset_id)
    return int(session.scalar(stmt) or 0)


def count_sensors(session: Session, *, tenant_id: uuid.UUID, asset_id: uuid.UUID) -> int:
    stmt = select(func.count()).where(Sensor.tenant_id == tenant_id, Sensor.asset_id == asset_id)
    return int(session.scalar(stmt) or 0)


def lock_hierarchy(session: Session, *, tenant_id: uuid.UUID) -> None:
    """Serialize re-parenting within a tenant so two concurrent moves cannot form a cycle.

    PostgreSQL: a ``FOR NO KEY UPDATE`` lock on the tenant row (it does not block inserts that
    reference the tenant). SQLite needs nothing: its writers already run one at a time.
    """
    stmt = select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True)
    session.execute(stmt)


def ancestor_ids(session: Session, *, tenant_id: uuid.UUID, asset_id: uuid.UUID) -> list[uuid.UUID]:
    """The ids from ``asset_id``'s parent up to its root, nearest first."""
    start = (
        select(Asset.parent_id.label("id"), literal(1).label("depth"))
        .where(Asset.id == asset_id, Asset.tenant_id == tenant_id)
        .cte("ancestors", recursive=True)
    )
    step = (
        select(Asset.parent_id, start.c.depth + 1)
        .join(start, Asset.id == start.c.id)
        .where(Asset.tenant_id == tenant_id, start.c.depth < MAX_WALK_DEPTH)
    )
    walk = start.union_all(step)
    stmt = select(walk.c.id).where(walk.c.id.is_not(None)).order_by(walk.c.depth)
    return list(session.scalars(stmt))


def get_assets(
    session: Session, *, tenant_id: uuid.UUID, asset_ids: list[uuid.UUID]
) -> dict[uuid.UUID, Asset]:
    if not asset_ids:
        return {}
    stmt = select(Asset).where(Asset.tenant_id == tenant_id, Asset.id.in_(asset_ids))
    return {asset.id: asset for asset in session.scalars(stmt)}


def series_by_tag(
    session: Session, *, tenant_id: uuid.UUID, tags: list[str]
) -> dict[str, tuple[uuid.UUID, dict[str, int]]]:
    """For each known tag: the asset id and its sensors' series ids by key (one query)."""
    found: dict[str, tuple[uuid.UUID, dict[str, int]]] = {}
    for start in range(0, len(tags), 500):
        stmt = (
            select(Asset.tag, Asset.id, Sensor.key, Sensor.series_id)
            .outerjoin(Sensor, and_(Sensor.asset_id == Asset.id, Sensor.tenant_id == tenant_id))
            .where(Asset.tenant_id == tenant_id, Asset.tag.in_(tags[start : start + 500]))
        )
        for tag, asset_id, key, series_id in session.execute(stmt):
            _, sensors = found.setdefault(tag, (asset_id, {}))
            if key is not None:
                sensors[key] = series_id
    return found


@dataclass(frozen=True)
class Keyset:
    """The position after which a page starts: the sort key's value and the row's id."""

    value: Any
    id: uuid.UUID


def sort_expression(field: str) -> SQLColumnExpression[Any]:
    if field == "criticality":
        return case(
            *[(Asset.criticality == crit, rank) for crit, rank in CRITICALITY_RANK.items()],
            else_=-1,
        )
    if field == "health_score":
        return func.coalesce(Asset.health_score, NULL_HEALTH_SCORE)
    columns: dict[str, SQLColumnExpression[Any]] = {
        "tag": Asset.tag,
        "name": Asset.name,
        "created_at": Asset.created_at,
        "updated_at": Asset.updated_at,
    }
    return columns[field]


def sort_value(asset: Asset, field: str) -> Any:
    """The Python value of ``sort_expression(field)`` for ``asset``."""
    if field == "criticality":
        return CRITICALITY_RANK[asset.criticality]
    if field == "health_score":
        return NULL_HEALTH_SCORE if asset.health_score is None else asset.health_score
    return getattr(asset, field)


def list_assets(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    filters: AssetFilters,
    sort_field: str,
    descending: bool,
    after: Keyset | None,
    limit: int,
) -> list[Asset]:
    stmt = select(Asset).where(Asset.tenant_id == tenant_id)
    if filters.q:
        # LIKE with % and _ escaped (autoescape), lower-cased on both sides: SQLite and PG alike.
        needle = filters.q.lower()
        stmt = stmt.where(
            or_(
                *[
                    func.lower(column).contains(needle, autoescape=True)
                    for column in (Asset.tag, Asset.name, Asset.location, Asset.description)
                ]
            )
        )
    if filters.type is not None:
        stmt = stmt.where(func.lower(Asset.type) == filters.type.lower())
    if filters.location is not None:
        stmt = stmt.where(func.lower(Asset.location) == filters.location.lower())
    if filters.statuses:
        stmt = stmt.where(Asset.status.in_(filters.statuses))
    if filters.criticalities:
        stmt = stmt.where(Asset.criticality.in_(filters.criticalities))
    if filters.parent_id is not None:
        stmt = stmt.where(Asset.parent_id == filters.parent_id)
    if filters.root:
        stmt = stmt.where(Asset.parent_id.is_(None))

    key = sort_expression(sort_field)
    if after is not None:
        if descending:
            stmt = stmt.where(or_(key < after.value, and_(key == after.value, Asset.id < after.id)))
        else:
            stmt = stmt.where(or_(key > after.value, and_(key == after.value, Asset.id > after.id)))
    order = (key.desc(), Asset.id.desc()) if descending else (key.asc(), Asset.id.asc())
    return list(session.scalars(stmt.order_by(*order).limit(limit)))


# --- sensors --------------------------------------------------------------------------------


def get_sensor(
    session: Session, *, tenant_id: uuid.UUID, asset_id: uuid.UUID, sensor_id: uuid.UUID
) -> Sensor | None:
    stmt = select(Sensor).where(
        Sensor.id == sensor_id, Sensor.asset_id == asset_id, Sensor.tenant_id == tenant_id
    )
    return session.scalars(stmt).one_or_none()


def get_sensor_by_key(
    session: Session, *, tenant_id: uuid.UUID, asset_id: uuid.UUID, key: str
) -> Sensor | None:
    stmt = select(Sensor).where(
        Sensor.tenant_id == tenant_id, Sensor.asset_id == asset_id, Sensor.key == key
    )
    return session.scalars(stmt).one_or_none()


def list_sensors(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    asset_id: uuid.UUID,
    after_key: str | None,
    limit: int,
) -> list[Sensor]:
    stmt = select(Sensor).where(Sensor.tenant_id == tenant_id, Sensor.asset_id == asset_id)
    if after_key is not None:
        stmt = stmt.where(Sensor.key > after_key)
    return list(session.scalars(stmt.order_by(Sensor.key).limit(limit)))
