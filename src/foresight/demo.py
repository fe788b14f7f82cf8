"""The demo tenant that `make run` creates on first start: an admin and a small plant."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from foresight.assets import service as assets_service
from foresight.assets.schemas import AssetCreate, SensorCreate
from foresight.audit.schemas import Actor
from foresight.auth import service as auth_service
from foresight.auth.schemas import Principal, UserCreate
from foresight.config import Settings
from foresight.models import ActorType, Role, Tenant
from foresight.tenants import repository as tenants_repository
from foresight.tenants import service as tenants_service

# (tag, name, type, criticality, sensors as (key, unit, expected_min, expected_max))
_SensorSpec = tuple[str, str, float, float]
_PLANT: list[tuple[str, str, str, str, list[_SensorSpec]]] = [
    ("PUMP-001", "Feed pump 1", "pump", "high", [
        ("temperature", "degC", 20, 80), ("vibration", "mm/s", 0, 7.1),
        ("pressure", "bar", 6, 10), ("power_consumption", "kW", 5, 20),
    ]),
    ("PUMP-002", "Feed pump 2", "pump", "high", [
        ("temperature", "degC", 20, 80), ("vibration", "mm/s", 0, 7.1),
        ("pressure", "bar", 6, 10), ("power_consumption", "kW", 5, 20),
    ]),
    ("MOTOR-001", "Conveyor drive motor", "motor", "critical", [
        ("temperature", "degC", 20, 95), ("vibration", "mm/s", 0, 4.5),
        ("current", "A", 10, 60), ("speed", "rpm", 1400, 1800),
    ]),
    ("CONV-001", "Main belt conveyor", "conveyor", "medium", [
        ("belt_speed", "m/s", 1, 3), ("load", "t/h", 0, 400), ("motor_temperature", "degC", 20, 90),
    ]),
]  # fmt: skip


def seed(session: Session, settings: Settings, actor: Actor) -> Tenant | None:
    """Create the demo tenant, its admin and a small plant; None if the tenant already exists."""
    if tenants_repository.get_by_name(session, settings.demo_tenant) is not None:
        return None
    tenant = tenants_service.create(session, name=settings.demo_tenant, actor=actor)
    tenant_actor = Actor(actor.type, actor.id, actor.label, tenant.id)
    auth_service.create_user(
        session,
        tenant_id=tenant.id,
        data=UserCreate(
            email=settings.demo_email,
            password=settings.demo_password,
            role=Role.admin,
            full_name="Demo Admin",
        ),
        actor=tenant_actor,
    )
    principal = Principal(tenant.id, ActorType.system, uuid.UUID(int=0), actor.label, Role.admin)
    site = assets_service.create_asset(
        session,
        principal=principal,
        data=AssetCreate(tag="SITE-A", name="Plant A", type="site", location="Plant A"),
    )
    line = assets_service.create_asset(
        session,
        principal=principal,
        data=AssetCreate(
            tag="LINE-1", name="Line 1", type="line", location="Plant A", parent_id=site.id
        ),
    )
    for tag, name, kind, criticality, sensors in _PLANT:
        asset = assets_service.create_asset(
            session,
            principal=principal,
            data=AssetCreate.model_validate(
                {
                    "tag": tag,
                    "name": name,
                    "type": kind,
                    "location": "Plant A / Line 1",
                    "criticality": criticality,
                    "parent_id": line.id,
                }
            ),
        )
        for key, unit, low, high in sensors:
            assets_service.create_sensor(
                session,
                principal=principal,
                asset_id=asset.id,
                data=SensorCreate(
                    key=key, unit=unit, expected_min=low, expected_max=high, sampling_interval_s=60
                ),
            )
    return tenant
