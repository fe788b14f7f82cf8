"""Factories that build test data through the real services (so audit entries exist too)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from foresight.audit.schemas import Actor
from foresight.auth import security
from foresight.config import Settings
from foresight.kit.db import Database
from foresight.models import Role, Tenant, User
from foresight.tenants import service as tenants_service

PASSWORD = "correct-horse-battery"
# Hashing is slow on purpose; one hash serves every factory-made user.
_PASSWORD_HASH = security.hash_password(PASSWORD)


@dataclass
class TestUser:
    __test__ = False

    id: uuid.UUID
    tenant_id: uuid.UUID
    email: str
    role: Role
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Factory:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def tenant(self, name: str | None = None) -> Tenant:
        with self.db.transaction() as session:
            return tenants_service.create(
                session, name=name or f"t-{uuid.uuid4().hex[:10]}", actor=Actor.system("test")
            )

    def user(self, tenant: Tenant | uuid.UUID, role: Role = Role.admin, **fields: Any) -> TestUser:
        tenant_id = tenant if isinstance(tenant, uuid.UUID) else tenant.id
        email = fields.pop("email", f"{role.value}-{uuid.uuid4().hex[:10]}@example.com")
        with self.db.transaction() as session:
            user = User(
                tenant_id=tenant_id,
                email=email,
                role=role,
                password_hash=_PASSWORD_HASH,
                full_name=fields.pop("full_name", ""),
                **fields,
            )
            session.add(user)
            session.flush()
            token, _ = security.create_token(
                self.settings,
                user_id=user.id,
                tenant_id=tenant_id,
                version=user.token_version,
                kind="access",
            )
            return TestUser(user.id, tenant_id, email, role, token)

    def tenant_with_users(self) -> tuple[Tenant, dict[Role, TestUser]]:
        tenant = self.tenant()
        return tenant, {role: self.user(tenant, role) for role in Role}
