"""Assets, their hierarchy and their sensors: business rules, audit, tenant isolation.

Services never commit (the request's unit of work does) and every lookup is scoped to the
caller's tenant: another tenant's asset or sensor is simply "not found".
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from foresight.assets import repository
from foresight.assets.schemas import (
    AssetCreate,
    AssetFilters,
    AssetPage,
    AssetRead,
    AssetSort,
    AssetUpdate,
    SensorCreate,
    SensorPage,
    SensorRead,
    SensorUpdate,
)
from foresight.audit import service as audit_service
from foresight.auth.schemas import Principal
from foresight.kit.errors import Conflict, FieldError, InvalidInput, NotFound
from foresight.kit.pagination import decode_cursor, encode_cursor
from foresight.kit.schemas import check_text
from foresight.kit.time import as_utc
from foresight.models import Asset, Sensor

# --- assets ---------------------------------------------------------------------------------


def get_asset(session: Session, *, tenant_id: uuid.UUID, asset_id: uuid.UUID) -> Asset:
    """The tenant's asset, or ``NotFound`` (also for another tenant's asset)."""
    asset = repository.get_asset(session, tenant_id=tenant_id, asset_id=asset_id)
    if asset is None:
        raise NotFound(f"Asset {asset_id} not found.")
    return asset


def asset_snapshot(asset: Asset) -> dict[str, Any]:
    """A JSON-able picture of the asset, as the audit trail records it."""
    return {
        "tag": asset.tag,
        "name": asset.name,
        "type": asset.type,
        "location": asset.location,
        "criticality": str(asset.criticality),
        "status": str(asset.status),
        "parent_id": str(asset.parent_id) if asset.parent_id else None,
        "install_date": asset.install_date.isoformat() if asset.install_date else None,
        "health_score": asset.health_score,
        "description": asset.description,
        "metadata": asset.attributes,
    }


def _duplicate_tag(tag: str) -> Conflict:
    return Conflict(
        f"An asset tagged {tag!r} already exists.",
        errors=[FieldError(["body", "tag"], "already in use", "duplicate")],
    )


def _parent_error(detail: str, msg: str, kind: str) -> InvalidInput:
    return InvalidInput(detail, errors=[FieldError(["body", "parent_id"], msg, kind)])


def _check_parent_exists(session: Session, *, tenant_id: uuid.UUID, parent_id: uuid.UUID) -> None:
    if repository.get_asset(session, tenant_id=tenant_id, asset_id=parent_id) is None:
        raise _parent_error(f"Parent asset {parent_id} not found.", "no such asset", "not_found")


def create_asset(session: Session, *, principal: Principal, data: AssetCreate) -> Asset:
    tenant_id = principal.tenant_id
    if repository.get_asset_by_tag(session, tenant_id=tenant_id, tag=data.tag) is not None:
        raise _duplicate_tag(data.tag)
    if data.parent_id is not None:
        _check_parent_exists(session, tenant_id=tenant_id, parent_id=data.parent_id)
    asset = Asset(
        tenant_id=tenant_id,
        tag=data.tag,
        name=data.name,
        type=data.type,
        location=data.location,
        criticality=data.criticality,
        status=data.status,
        parent_id=data.parent_id,
        install_date=data.install_date,
        health_score=data.health_score,
        description=data.description,
        attributes=data.metadata,
    )
    repository.add(session, asset)
    audit_service.record(
        session,
        actor=principal.actor,
        action="asset.create",
        object_type="asset",
        object_id=asset.id,
        changes=asset_snapshot(asset),
    )
    return asset


def _check_reparent(session: Session, asset: Asset, parent_id: uuid.UUID) -> None:
    if parent_id == asset.id:
        raise _parent_error("An asset cannot be its own parent.", "is the asset itself", "cycle")
    repository.lock_hierarchy(session, tenant_id=asset.tenant_id)
    _check_parent_exists(session, tenant_id=asset.tenant_id, parent_id=parent_id)
    above = repository.ancestor_ids(session, tenant_id=asset.tenant_id, asset_id=parent_id)
    if asset.id in above:
        raise _parent_error(
            f"Asset {parent_id} is below {asset.tag!r} in the hierarchy; "
            "making it the parent would create a cycle.",
            "would create a cycle",
            "cycle",
        )


def update_asset(
    session: Session, *, principal: Principal, asset_id: uuid.UUID, data: AssetUpdate
) -> Asset:
    asset = get_asset(session, tenant_id=principal.tenant_id, asset_id=asset_id)
    before = asset_snapshot(asset)
    fields = data.model_dump(exclude_unset=True)
    if "tag" in fields and fields["tag"] != asset.tag:
        found = repository.get_asset_by_tag(session, tenant_id=asset.tenant_id, tag=fields["tag"])
        if found is not None:
            raise _duplicate_tag(fields["tag"])
    if "parent_id" in fields and fields["parent_id"] not in (None, asset.parent_id):
        _check_reparent(session, asset, fields["parent_id"])
    if "metadata" in fields:
        fields["attributes"] = fields.pop("metadata")
    for key, value in fields.items():
        if getattr(asset, key) != value:  # untouched columns keep updated_at as it is
            setattr(asset, key, value)
    changes = audit_service.diff(before, asset_snapshot(asset))
    if not changes:
        return asset  # nothing changed: nothing to write or audit
    session.flush()
    audit_service.record(
        session,
        actor=principal.actor,
        action="asset.update",
        object_type="asset",
        object_id=asset.id,
        changes=changes,
    )
    return asset


def delete_asset(session: Session, *, principal: Principal, asset_id: uuid.UUID) -> None:
    """Delete an asset with its sensors and maintenance history; refused while it has children."""
    asset = get_asset(session, tenant_id=principal.tenant_id, asset_id=asset_id)
    children = repository.count_children(session, tenant_id=asset.tenant_id, asset_id=asset.id)
    if children:
        raise Conflict(
            f"Asset {asset.tag!r} has {children} child asset(s); "
            "delete them or move them to another parent first.",
            errors=[FieldError(["path", "asset_id"], "has child assets", "has_children")],
        )
    snapshot = asset_snapshot(asset)
    snapshot["sensors_deleted"] = repository.count_sensors(
        session, tenant_id=asset.tenant_id, asset_id=asset.id
    )
    repository.delete(session, asset)
    audit_service.record(
        session,
        actor=principal.actor,
        action="asset.delete",
        object_type="asset",
        object_id=asset_id,
        changes=snapshot,
    )


def _bad_cursor(detail: str) -> InvalidInput:
    return InvalidInput(
        detail, errors=[FieldError(["query", "cursor"], "malformed cursor", "cursor_invalid")]
    )


def _decode_asset_cursor(cursor: str, sort: AssetSort) -> repository.Keyset:
    sort_name, raw_value, raw_id = decode_cursor(cursor, length=3)
    if sort_name != sort.value:
        raise _bad_cursor(
            f"The cursor belongs to sort={sort_name!s:.40}; pass the same sort as the first page."
        )
    field = sort.field
    value: Any
    try:
        row_id = uuid.UUID(str(raw_id))
        if field in ("tag", "name"):
            if not isinstance(raw_value, str) or len(raw_value) > 1000:
                raise ValueError("not a string")
            value = check_text(raw_value)
        elif field in ("created_at", "updated_at"):
            if not isinstance(raw_value, str):
                raise ValueError("not a timestamp")
            value = as_utc(datetime.fromisoformat(raw_value))
        elif field == "criticality":
            if type(raw_value) is not int or raw_value not in repository.CRITICALITY_RANK.values():
                raise ValueError("not a criticality rank")
            value = raw_value
        else:  # health_score
            if type(raw_value) not in (int, float) or not math.isfinite(raw_value):
                raise ValueError("not a number")
            value = float(raw_value)
    except (TypeError, ValueError) as exc:
        raise _bad_cursor(
            "The pagination cursor is malformed; pass back the next_cursor of a previous page."
        ) from exc
    return repository.Keyset(value=value, id=row_id)


def _encode_asset_cursor(asset: Asset, sort: AssetSort) -> str:
    value = repository.sort_value(asset, sort.field)
    if isinstance(value, datetime):
        value = value.isoformat()
    return encode_cursor([sort.value, value, str(asset.id)])


def list_assets(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    filters: AssetFilters,
    sort: AssetSort = AssetSort.tag,
    cursor: str | None = None,
    limit: int = 50,
) -> AssetPage:
    if filters.root and filters.parent_id is not None:
        raise InvalidInput(
            "Pass either parent_id or root=true, not both.",
            errors=[FieldError(["query", "root"], "conflicts with parent_id", "conflict")],
        )
    after = _decode_asset_cursor(cursor, sort) if cursor else None
    rows = repository.list_assets(
        session,
        tenant_id=tenant_id,
        filters=filters,
        sort_field=sort.field,
        descending=sort.descending,
        after=after,
        limit=limit + 1,
    )
    items = [AssetRead.model_validate(a) for a in rows[:limit]]
    next_cursor = _encode_asset_cursor(rows[limit - 1], sort) if len(rows) > limit else None
    return AssetPage(items=items, next_cursor=next_cursor)


def list_children(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    asset_id: uuid.UUID,
    sort: AssetSort = AssetSort.tag,
    cursor: str | None = None,
    limit: int = 50,
) -> AssetPage:
    asset = get_asset(session, tenant_id=tenant_id, asset_id=asset_id)
    return list_assets(
        session,
        tenant_id=tenant_id,
        filters=AssetFilters(parent_id=asset.id),
        sort=sort,
        cursor=cursor,
        limit=limit,
    )


def list_ancestors(session: Session, *, tenant_id: uuid.UUID, asset_id: uuid.UUID) -> list[Asset]:
    """The path from the asset's parent up to its root (nearest first; empty for a root)."""
    asset = get_asset(session, tenant_id=tenant_id, asset_id=asset_id)
    ids = repository.ancestor_ids(session, tenant_id=tenant_id, asset_id=asset.id)
    found = repository.get_assets(session, tenant_id=tenant_id, asset_ids=ids)
    return [found[i] for i in ids if i in found]


# --- sensors --------------------------------------------------------------------------------


def sensor_snapshot(sensor: Sensor) -> dict[str, Any]:
    return {
        "asset_id": str(sensor.asset_id),
        "key": sensor.key,
        "name": sensor.name,
        "unit": sensor.unit,
        "kind": str(sensor.kind),
        "expected_min": sensor.expected_min,
        "expected_max": sensor.expected_max,
        "sampling_interval_s": sensor.sampling_interval_s,
    }


def get_sensor(
    session: Session, *, tenant_id: uuid.UUID, asset_id: uuid.UUID, sensor_id: uuid.UUID
) -> Sensor:
    """The sensor of the tenant's asset, or ``NotFound`` (also under another asset or tenant)."""
    asset = get_asset(session, tenant_id=tenant_id, asset_id=asset_id)
    sensor = repository.get_sensor(
        session, tenant_id=tenant_id, asset_id=asset.id, sensor_id=sensor_id
    )
    if sensor is None:
        raise NotFound(f"Sensor {sensor_id} not found on asset {asset.tag!r}.")
    return sensor


def _duplicate_key(key: str, asset: Asset) -> Conflict:
    return Conflict(
        f"Asset {asset.tag!r} already has a sensor with key {key!r}.",
        errors=[FieldError(["body", "key"], "already in use on this asset", "duplicate")],
    )


def _check_range(low: float | None, high: float | None, *, field: str) -> None:
    if low is not None and high is not None and low > high:
        raise InvalidInput(
            f"expected_min ({low}) must not exceed expected_max ({high}).",
            errors=[FieldError(["body", field], "expected_min > expected_max", "range")],
        )


def list_sensors(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    asset_id: uuid.UUID,
    cursor: str | None = None,
    limit: int = 50,
) -> SensorPage:
    asset = get_asset(session, tenant_id=tenant_id, asset_id=asset_id)
    after = decode_cursor(cursor, length=1)[0] if cursor else None
    if after is not None and not isinstance(after, str):
        raise _bad_cursor("The pagination cursor is malformed.")
    if after is not None:
        try:
            check_text(after)
        except ValueError as exc:
            raise _bad_cursor("The pagination cursor is malformed.") from exc
    rows = repository.list_sensors(
        session, tenant_id=tenant_id, asset_id=asset.id, after_key=after, limit=limit + 1
    )
    items = [SensorRead.model_validate(s) for s in rows[:limit]]
    next_cursor = encode_cursor([rows[limit - 1].key]) if len(rows) > limit else None
    return SensorPage(items=items, next_cursor=next_cursor)


def create_sensor(
    session: Session, *, principal: Principal, asset_id: uuid.UUID, data: SensorCreate
) -> Sensor:
    asset = get_asset(session, tenant_id=principal.tenant_id, asset_id=asset_id)
    if repository.get_sensor_by_key(
        session, tenant_id=asset.tenant_id, asset_id=asset.id, key=data.key
    ):
        raise _duplicate_key(data.key, asset)
    _check_range(data.expected_min, data.expected_max, field="expected_max")
    sensor = Sensor(
        tenant_id=asset.tenant_id,
        asset_id=asset.id,
        key=data.key,
        name=data.name,
        unit=data.unit,
        kind=data.kind,
        expected_min=data.expected_min,
        expected_max=data.expected_max,
        sampling_interval_s=data.sampling_interval_s,
        series_id=repository.next_series_id(session),
    )
    repository.add(session, sensor)
    audit_service.record(
        session,
        actor=principal.actor,
        action="sensor.create",
        object_type="sensor",
        object_id=sensor.id,
        changes=sensor_snapshot(sensor),
    )
    return sensor


def update_sensor(
    session: Session,
    *,
    principal: Principal,
    asset_id: uuid.UUID,
    sensor_id: uuid.UUID,
    data: SensorUpdate,
) -> Sensor:
    sensor = get_sensor(
        session, tenant_id=principal.tenant_id, asset_id=asset_id, sensor_id=sensor_id
    )
    before = sensor_snapshot(sensor)
    fields = data.model_dump(exclude_unset=True)
    if "key" in fields and fields["key"] != sensor.key:
        clash = repository.get_sensor_by_key(
            session, tenant_id=sensor.tenant_id, asset_id=sensor.asset_id, key=fields["key"]
        )
        if clash is not None:
            asset = get_asset(session, tenant_id=principal.tenant_id, asset_id=asset_id)
            raise _duplicate_key(fields["key"], asset)
    low = fields.get("expected_min", sensor.expected_min)
    high = fields.get("expected_max", sensor.expected_max)
    _check_range(low, high, field="expected_max" if "expected_max" in fields else "expected_min")
    for key, value in fields.items():
        if getattr(sensor, key) != value:
            setattr(sensor, key, value)
    changes = audit_service.diff(before, sensor_snapshot(sensor))
    if not changes:
        return sensor
    session.flush()
    audit_service.record(
        session,
        actor=principal.actor,
        action="sensor.update",
        object_type="sensor",
        object_id=sensor.id,
        changes=changes,
    )
    return sensor


def delete_sensor(
    session: Session, *, principal: Principal, asset_id: uuid.UUID, sensor_id: uuid.UUID
) -> None:
    sensor = get_sensor(
        session, tenant_id=principal.tenant_id, asset_id=asset_id, sensor_id=sensor_id
    )
    snapshot = sensor_snapshot(sensor)
    repository.delete(session, sensor)
    audit_service.record(
        session,
        actor=principal.actor,
        action="sensor.delete",
        object_type="sensor",
        object_id=sensor_id,
        changes=snapshot,
    )


def series_by_tag(
    session: Session, *, tenant_id: uuid.UUID, tags: list[str]
) -> dict[str, tuple[uuid.UUID, dict[str, int]]]:
    """Ingestion's lookup: tag → (asset id, {sensor key: series id}) for the tags that exist."""
    return repository.series_by_tag(session, tenant_id=tenant_id, tags=tags)
