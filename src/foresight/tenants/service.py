from __future__ import annotations

import uuid

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from foresight.audit import service as audit_service
from foresight.audit.schemas import Actor
from foresight.kit.errors import Conflict, FieldError, InvalidInput, NotFound
from foresight.models import Tenant
from foresight.tenants import repository
from foresight.tenants.schemas import TenantName, TenantUpdate

_NAME = TypeAdapter(TenantName)


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


def get_by_name(session: Session, name: str) -> Tenant:
    tenant = repository.get_by_name(session, name)
    if tenant is None:
        raise NotFound(f"No tenant named {name!r}.")
    return tenant


def update(session: Session, *, tenant_id: uuid.UUID, data: TenantUpdate, actor: Actor) -> Tenant:
    tenant = get(session, tenant_id)
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
