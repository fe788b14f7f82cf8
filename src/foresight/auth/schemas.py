from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import EmailStr, Field, SecretStr

from foresight.audit.schemas import Actor
from foresight.auth.rbac import API_KEY_PERMISSIONS, Permission, role_has
from foresight.kit.schemas import InputModel, OutputModel, Page
from foresight.models.enums import ActorType, Role

Password = Annotated[SecretStr, Field(min_length=8, max_length=256)]


@dataclass(frozen=True)
class Principal:
    """The authenticated caller. The tenant always comes from here, never from the request."""

    tenant_id: uuid.UUID
    kind: ActorType
    id: uuid.UUID
    label: str
    role: Role | None  # None for device API keys

    def has(self, permission: Permission) -> bool:
        if self.kind is ActorType.api_key:
            return permission in API_KEY_PERMISSIONS
        return self.role is not None and role_has(self.role, permission)

    @property
    def actor(self) -> Actor:
        return Actor(self.kind, str(self.id), self.label, self.tenant_id)


class TokenRequest(InputModel):
    email: EmailStr
    password: Annotated[SecretStr, Field(min_length=1, max_length=256)]


class RefreshRequest(InputModel):
    refresh_token: Annotated[str, Field(min_length=1, max_length=4096)]


class TokenPair(OutputModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Lifetime of the access token in seconds")


class UserRead(OutputModel):
    id: uuid.UUID
    tenant_id: uuid.UUID
    email: str
    full_name: str
    role: Role
    is_active: bool
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None


class Me(UserRead):
    tenant_name: str
    permissions: list[Permission]


class UserCreate(InputModel):
    email: EmailStr
    password: Password
    role: Role = Role.viewer
    full_name: Annotated[str, Field(max_length=200)] = ""


class UserUpdate(InputModel):
    full_name: Annotated[str, Field(max_length=200)] | None = None
    role: Role | None = None
    is_active: bool | None = None
    password: Password | None = None


UserPage = Page[UserRead]


class ApiKeyCreate(InputModel):
    label: Annotated[str, Field(max_length=200)] = ""


class ApiKeyRead(OutputModel):
    id: uuid.UUID
    tenant_id: uuid.UUID
    label: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The full key. It is shown only once; store it now.")


ApiKeyPage = Page[ApiKeyRead]
