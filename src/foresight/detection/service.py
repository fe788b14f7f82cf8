"""Alert rules: validation against the tenant's assets, audit, defaults, export and import.

Services never commit. Every change bumps the rule's ``version`` and ``updated_at``, which is
what the rule engines of every process watch to hot-reload.
"""

from __future__ import annotations

import uuid
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from foresight.audit import service as audit_service
from foresight.auth.schemas import Principal
from foresight.detection.schemas import (
    ConditionIn,
    RuleCreate,
    RuleImportResult,
    RulePage,
    RuleRead,
    RuleSet,
    RuleUpdate,
    ScopeIn,
)
from foresight.kit.errors import Conflict, FieldError, InvalidInput, NotFound
from foresight.kit.pagination import decode_cursor, encode_cursor
from foresight.kit.time import utcnow
from foresight.models import AlertRule, Asset, Sensor, Severity
from foresight.tenants import service as tenants_service

OBJECT_TYPE = "alert_rule"
DEFAULT_ORIGIN = "default"
_FIELDS = (
    "name", "description", "enabled", "severity", "scope", "conditions", "combine", "for_s",
    "clear_hysteresis", "auto_resolve",
)  # fmt: skip


def _snapshot(rule: AlertRule) -> dict[str, Any]:
    values = {name: getattr(rule, name) for name in _FIELDS}
    values["severity"] = str(rule.severity)
    return values


def _invalid(loc: list[str | int], msg: str, type_: str = "value_error") -> InvalidInput:
    return InvalidInput(
        f"The alert rule is not valid: {msg}.", errors=[FieldError(loc, msg, type_)]
    )


# --- validation against the tenant's assets --------------------------------------------------


def _resolve_scope(session: Session, tenant_id: uuid.UUID, scope: ScopeIn) -> dict[str, Any]:
    stored = scope.stored()
    if scope.asset_tag and scope.asset_id is None:
        asset = session.scalars(
            select(Asset).where(Asset.tenant_id == tenant_id, Asset.tag == scope.asset_tag)
        ).first()
        if asset is None:
            raise _invalid(
                ["body", "scope", "asset_tag"], f"unknown asset tag {scope.asset_tag!r}", "unknown"
            )
        stored["asset_id"] = str(asset.id)
    elif scope.asset_id is not None:
        asset = session.scalars(
            select(Asset).where(Asset.tenant_id == tenant_id, Asset.id == scope.asset_id)
        ).first()
        if asset is None:
            raise _invalid(
                ["body", "scope", "asset_id"], f"unknown asset {scope.asset_id}", "unknown"
            )
        if scope.asset_tag and asset.tag != scope.asset_tag:
            raise _invalid(
                ["body", "scope", "asset_tag"], "asset_tag does not match asset_id", "mismatch"
            )
        stored["asset_tag"] = asset.tag
    return stored


def _check_sensors(
    session: Session, tenant_id: uuid.UUID, scope: dict[str, Any], conditions: list[ConditionIn]
) -> None:
    """Every condition's sensor must exist on at least one asset in the scope."""
    stmt = (
        select(Sensor.key)
        .join(Asset, Asset.id == Sensor.asset_id)
        .where(Sensor.tenant_id == tenant_id)
        .distinct()
    )
    if scope.get("asset_id"):
        stmt = stmt.where(Asset.id == uuid.UUID(scope["asset_id"]))
    if scope.get("asset_type"):
        stmt = stmt.where(Asset.type == scope["asset_type"])
    if scope.get("criticality"):
        stmt = stmt.where(Asset.criticality.in_(scope["criticality"]))
    known = set(session.scalars(stmt))
    if scope.get("tag_pattern"):
        rows_ = session.execute(
            select(Sensor.key, Asset.tag)
            .join(Asset, Asset.id == Sensor.asset_id)
            .where(Sensor.tenant_id == tenant_id, Sensor.key.in_(known))
        )
        known = {k for k, tag in rows_ if fnmatchcase(tag, scope["tag_pattern"])}
    if scope.get("metadata"):
        # Metadata is JSON on both backends: filter in Python (rules are few, sensors indexed).
        rows = session.execute(
            select(Sensor.key, Asset.attributes)
            .join(Asset, Asset.id == Sensor.asset_id)
            .where(Sensor.tenant_id == tenant_id, Sensor.key.in_(known))
        )
        wanted = scope["metadata"].items()
        known = {k for k, attrs in rows if all((attrs or {}).get(a) == v for a, v in wanted)}
    for index, condition in enumerate(conditions):
        if condition.sensor not in known:
            raise _invalid(
                ["body", "conditions", index, "sensor"],
                f"unknown sensor {condition.sensor!r}: no asset in the rule's scope has it",
                "unknown_sensor",
            )


def _values_from(session: Session, tenant_id: uuid.UUID, data: RuleCreate) -> dict[str, Any]:
    scope = _resolve_scope(session, tenant_id, data.scope)
    _check_sensors(session, tenant_id, scope, data.conditions)
    return {
        "name": data.name,
        "description": data.description,
        "enabled": data.enabled,
        "severity": data.severity,
        "scope": scope,
        "conditions": [c.stored() for c in data.conditions],
        "combine": data.combine,
        "for_s": data.for_,
        "clear_hysteresis": data.clear_hysteresis,
        "auto_resolve": data.auto_resolve,
    }


def _check_name_free(
    session: Session, tenant_id: uuid.UUID, name: str, rule_id: uuid.UUID | None = None
) -> None:
    stmt = select(AlertRule.id).where(AlertRule.tenant_id == tenant_id, AlertRule.name == name)
    other = session.scalars(stmt).first()
    if other is not None and other != rule_id:
        raise Conflict(
            f"An alert rule named {name!r} exists already.",
            errors=[FieldError(["body", "name"], "already used by another rule", "duplicate")],
        )


# --- CRUD -----------------------------------------------------------------------------------


def get_rule(session: Session, *, tenant_id: uuid.UUID, rule_id: uuid.UUID) -> AlertRule:
    rule = session.scalars(
        select(AlertRule).where(AlertRule.tenant_id == tenant_id, AlertRule.id == rule_id)
    ).first()
    if rule is None:
        raise NotFound(f"Alert rule {rule_id} not found.")
    return rule


def list_rules(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    enabled: bool | None = None,
    origin: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> RulePage:
    """By name; ``next_cursor`` continues after the last rule."""
    stmt = select(AlertRule).where(AlertRule.tenant_id == tenant_id)
    if enabled is not None:
        stmt = stmt.where(AlertRule.enabled.is_(enabled))
    if origin is not None:
        stmt = stmt.where(AlertRule.origin == origin)
    if cursor:
        (after,) = decode_cursor(cursor, length=1)
        stmt = stmt.where(AlertRule.name > str(after))
    rows = session.scalars(stmt.order_by(AlertRule.name).limit(limit + 1)).all()
    items = [RuleRead.model_validate(r) for r in rows[:limit]]
    next_cursor = encode_cursor([rows[limit - 1].name]) if len(rows) > limit else None
    return RulePage(items=items, next_cursor=next_cursor)


def create_rule(session: Session, *, principal: Principal, data: RuleCreate) -> AlertRule:
    tenant_id = principal.tenant_id
    values = _values_from(session, tenant_id, data)
    _check_name_free(session, tenant_id, data.name)
    rule = AlertRule(tenant_id=tenant_id, origin="user", version=1, **values)
    session.add(rule)
    session.flush()
    audit_service.record(
        session,
        actor=principal.actor,
        action="alert_rule.create",
        object_type=OBJECT_TYPE,
        object_id=rule.id,
        changes=_snapshot(rule),
    )
    return rule


def _as_create(rule: AlertRule) -> RuleCreate:
    return RuleCreate.model_validate(
        {
            "name": rule.name,
            "description": rule.description,
            "enabled": rule.enabled,
            "severity": rule.severity,
            "scope": dict(rule.scope or {}),
            "conditions": rule.conditions,
            "combine": rule.combine,
            "for": rule.for_s,
            "clear_hysteresis": rule.clear_hysteresis,
            "auto_resolve": rule.auto_resolve,
        }
    )


def update_rule(
    session: Session, *, principal: Principal, rule_id: uuid.UUID, data: RuleUpdate
) -> AlertRule:
    rule = get_rule(session, tenant_id=principal.tenant_id, rule_id=rule_id)
    merged = _as_create(rule).model_dump(by_alias=True)
    changes = data.model_dump(exclude_unset=True, by_alias=True)
    if "scope" in changes:
        merged["scope"] = changes["scope"]
    merged.update({k: v for k, v in changes.items() if k != "scope"})
    if "scope" not in changes and "asset_id" in merged["scope"]:
        merged["scope"].pop("asset_tag", None)  # the stored id is authoritative
    values = _values_from(session, principal.tenant_id, RuleCreate.model_validate(merged))
    if values["name"] != rule.name:
        _check_name_free(session, principal.tenant_id, values["name"], rule.id)
    before = _snapshot(rule)
    for name, value in values.items():
        setattr(rule, name, value)
    after = _snapshot(rule)
    retry = changes.get("enabled") is True and rule.error is not None
    if after != before or retry:
        if rule.enabled:
            rule.error = None  # re-enabling a rule that failed clears the failure
        rule.version += 1
        rule.updated_at = utcnow()
        if rule.origin == DEFAULT_ORIGIN:
            rule.origin = "user"  # edited by someone: the defaults no longer manage it
        audit_service.record(
            session,
            actor=principal.actor,
            action="alert_rule.update",
            object_type=OBJECT_TYPE,
            object_id=rule.id,
            changes=audit_service.diff(before, after),
        )
    session.flush()
    return rule


def delete_rule(session: Session, *, principal: Principal, rule_id: uuid.UUID) -> None:
    rule = get_rule(session, tenant_id=principal.tenant_id, rule_id=rule_id)
    snapshot = _snapshot(rule)
    session.delete(rule)
    session.flush()
    audit_service.record(
        session,
        actor=principal.actor,
        action="alert_rule.delete",
        object_type=OBJECT_TYPE,
        object_id=rule_id,
        changes=snapshot,
    )


# --- export and import ----------------------------------------------------------------------


def export_rules(session: Session, *, tenant_id: uuid.UUID) -> RuleSet:
    """Every rule of the tenant, portable: one-asset scopes name the asset by tag."""
    rules = session.scalars(
        select(AlertRule).where(AlertRule.tenant_id == tenant_id).order_by(AlertRule.name)
    ).all()
    out = []
    for rule in rules:
        item = _as_create(rule)
        if item.scope.asset_id is not None:
            item.scope.asset_id = None
        out.append(item)
    return RuleSet(rules=out)


def import_rules(session: Session, *, principal: Principal, data: RuleSet) -> RuleImportResult:
    """Create or update rules by name (all or nothing: the first invalid rule fails the import)."""
    created = updated = unchanged = 0
    names = [r.name for r in data.rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidInput(
            f"The rule set names a rule more than once: {', '.join(duplicates)}.",
            errors=[FieldError(["body", "rules"], "duplicate rule names", "duplicate")],
        )
    existing = {
        r.name: r
        for r in session.scalars(
            select(AlertRule).where(AlertRule.tenant_id == principal.tenant_id)
        )
    }
    for index, item in enumerate(data.rules):
        try:
            rule = existing.get(item.name)
            if rule is None:
                create_rule(session, principal=principal, data=item)
                created += 1
                continue
            version = rule.version
            update_rule(
                session,
                principal=principal,
                rule_id=rule.id,
                data=RuleUpdate.model_validate(item.model_dump(by_alias=True)),
            )
            if rule.version == version:
                unchanged += 1
            else:
                updated += 1
        except InvalidInput as exc:
            for error in exc.errors:
                error.loc[1:1] = ["rules", index]
            raise InvalidInput(f"Rule {index} ({item.name!r}): {exc.detail}", exc.errors) from exc
    return RuleImportResult(created=created, updated=updated, unchanged=unchanged)


# --- defaults from sensors' expected ranges --------------------------------------------------


def _default_name(tag: str, key: str) -> str:
    return f"{tag} {key} outside expected range"


def sync_default_rules(session: Session, *, tenant_id: uuid.UUID) -> dict[str, int]:
    """One rule per sensor with an expected range: ``outside [min, max]`` for a minute, warning.

    Made, updated (when the range changes) and removed (when the sensor or its range goes)
    by this function; a default rule someone edited becomes theirs and is left alone, and a
    disabled one stays disabled. Off when the tenant setting ``default_alert_rules`` is false.
    """
    counts = {"created": 0, "updated": 0, "deleted": 0}
    settings = tenants_service.get(session, tenant_id).settings or {}
    enabled = settings.get("default_alert_rules", True) not in (False, "false", 0, "0")
    wanted: dict[str, dict[str, Any]] = {}
    if enabled:
        rows = session.execute(
            select(Asset.id, Asset.tag, Sensor.key, Sensor.expected_min, Sensor.expected_max)
            .join(Asset, Asset.id == Sensor.asset_id)
            .where(Sensor.tenant_id == tenant_id)
            .where(Sensor.expected_min.is_not(None), Sensor.expected_max.is_not(None))
        )
        for asset_id, tag, key, low, high in rows:
            assert low is not None and high is not None
            span = float(high) - float(low)
            wanted[_default_name(tag, key)] = {
                "scope": {"asset_id": str(asset_id), "asset_tag": tag},
                "conditions": [
                    {"sensor": key, "op": "outside", "aggregate": "raw", "min": low, "max": high}
                ],
                # Held a minute and cleared 5 % inside the range: a value hovering at a limit
                # makes one alert, not one every few minutes.
                "clear_hysteresis": round(span * 0.05, 6),
                "for_s": 60.0,
            }
    existing = {
        r.name: r
        for r in session.scalars(
            select(AlertRule).where(
                AlertRule.tenant_id == tenant_id, AlertRule.origin == DEFAULT_ORIGIN
            )
        )
    }
    now = utcnow()
    for name, rule in existing.items():
        if name not in wanted:
            session.delete(rule)
            counts["deleted"] += 1
    taken = set(
        session.scalars(
            select(AlertRule.name).where(
                AlertRule.tenant_id == tenant_id, AlertRule.origin != DEFAULT_ORIGIN
            )
        )
    )
    for name, values in wanted.items():
        current = existing.get(name)
        if current is None:
            if name in taken:
                continue  # a user rule of that name (an edited default) replaces it
            session.add(
                AlertRule(
                    tenant_id=tenant_id, name=name, severity=Severity.warning, origin="default",
                    description="Made from the sensor's expected range (edit it to take it over).",
                    enabled=True, combine="all", auto_resolve=True, version=1,
                    **values,
                )
            )  # fmt: skip
            counts["created"] += 1
        elif any(getattr(current, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(current, k, v)
            current.version += 1
            current.updated_at = now
            counts["updated"] += 1
    session.flush()
    return counts


def sensors_fingerprint(session: Session) -> tuple[Any, ...]:
    """Changes whenever a sensor is added, removed or edited (defaults need a sync)."""
    return tuple(session.execute(select(func.count(Sensor.id), func.max(Sensor.updated_at))).one())
