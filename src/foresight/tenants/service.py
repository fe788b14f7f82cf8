from __future__ import annotations

import uuid
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from foresight.audit import service as audit_service
from foresight.audit.schemas import Actor
from foresight.kit.errors import Conflict, FieldError, InvalidInput, NotFound
from foresight.kit.logging import get_logger
from foresight.models import Tenant
from foresight.tenants import repository
from foresight.tenants.schemas import (
    MAX_RETENTION_DAYS,
    RETENTION_KEYS,
    Retention,
    RetentionDays,
    TenantName,
    TenantUpdate,
)

log = get_logger(__name__)

_NAME = TypeAdapter(TenantName)
_DAYS: TypeAdapter[int | None] = TypeAdapter(RetentionDays)


def create(session: Session, *, name: str, actor: Actor) -> Tenant:
    try:
        name = _NAME.validate_python(name)
    except ValidationError as exc:
        raise InvalidInput(
            f"Invalid tenant name {name!r}: 1-100 letters, digits, spaces, '_', '.' or '-', "
            "starting with a letter or digit.",
            errors=[FieldError(["name"], "invalid tenant name", "string_pattern_mismatch")],
        ) from exc
    if repository.get_by_name(session, name) is not None:
        raise Conflict(
            f"A tenant named {name!r} already exists.",
            errors=[FieldError(["name"], "already exists", "duplicate")],
        )
    tenant = repository.add(session, Tenant(name=name, settings={}))
    # The system chain records that the tenant exists; its own chain starts with its creation.
    audit_service.record(
        session,
        actor=actor,
        action="tenant.create",
        object_type="tenant",
        object_id=tenant.id,
        changes={"name": name},
    )
    tenant_actor = Actor(actor.type, actor.id, actor.label, tenant.id)
    audit_service.record(
        session,
        actor=tenant_actor,
        action="tenant.create",
        object_type="tenant",
        object_id=tenant.id,
        changes={"name": name},
    )
    return tenant


def get(session: Session, tenant_id: uuid.UUID) -> Tenant:
    tenant = repository.get(session, tenant_id)
    if tenant is None:
        raise NotFound("Tenant not found.")
    return tenant


def list_all(session: Session) -> list[Tenant]:
    return repository.list_all(session)


def get_by_name(session: Session, name: str) -> Tenant:
    tenant = repository.get_by_name(session, name)
    if tenant is None:
        raise NotFound(f"No tenant named {name!r}.")
    return tenant


def update(session: Session, *, tenant_id: uuid.UUID, data: TenantUpdate, actor: Actor) -> Tenant:
    tenant = get(session, tenant_id)
    _check_settings(data.settings)
    changes = audit_service.diff({"settings": tenant.settings}, {"settings": data.settings})
    tenant.settings = data.settings
    session.flush()
    audit_service.record(
        session,
        actor=actor,
        action="tenant.update",
        object_type="tenant",
        object_id=tenant.id,
        changes=changes,
    )
    return tenant


def _check_settings(settings: dict[str, Any]) -> None:
    """Refuse settings the platform would misread; other keys are the tenant's own business."""
    bad = [key for key in RETENTION_KEYS if key in settings and not _valid_days(settings[key])]
    if bad:
        rule = f"a whole number of days from 1 to {MAX_RETENTION_DAYS}, or null to keep forever"
        got = ", ".join(f"{key}={repr(settings[key])[:40]}" for key in bad)
        raise InvalidInput(
            f"Invalid tenant setting(s): {got}; each must be {rule}.",
            errors=[
                FieldError(["body", "settings", key], f"must be {rule}", "retention_days")
                for key in bad
            ],
        )


def _valid_days(value: Any) -> bool:
    try:
        _DAYS.validate_python(value)
    except ValidationError:
        return False
    return True


def retention(tenant: Tenant) -> Retention:
    """The tenant's retention; a stored value that is not valid (saved before validation
    existed, or edited in the database) falls back to its default rather than deleting data."""
    settings = tenant.settings or {}
    valid = {k: settings[k] for k in RETENTION_KEYS if k in settings and _valid_days(settings[k])}
    ignored = sorted(k for k in RETENTION_KEYS if k in settings and k not in valid)
    if ignored:
        log.warning("tenant_retention_setting_ignored", tenant=tenant.name, keys=ignored)
    return Retention.model_validate(valid)
