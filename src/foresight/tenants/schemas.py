from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from foresight.kit.schemas import InputModel, OutputModel

TenantName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.\-]*$")
]


class TenantRead(OutputModel):
    id: uuid.UUID
    name: str
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class TenantUpdate(InputModel):
    settings: dict[str, Any] = Field(description="Replaces the tenant's settings object")
