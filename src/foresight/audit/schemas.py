from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import Field

from foresight.kit.schemas import OutputModel, Page
from foresight.models.enums import ActorType


@dataclass(frozen=True)
class Actor:
    """Who did something, as the audit trail records it."""

    type: ActorType
    id: str | None
    label: str
    tenant_id: uuid.UUID | None

    @classmethod
    def system(cls, label: str = "cli", tenant_id: uuid.UUID | None = None) -> Actor:
        return cls(ActorType.system, None, label, tenant_id)


class AuditEntryRead(OutputModel):
    id: int
    chain: str
    seq: int
    occurred_at: datetime
    tenant_id: uuid.UUID | None
    actor_type: ActorType
    actor_id: str | None
    actor_label: str
    action: str
    object_type: str
    object_id: str | None
    changes: dict[str, Any]
    request_id: str | None
    prev_hash: str
    hash: str


AuditPage = Page[AuditEntryRead]


class ChainProblem(OutputModel):
    chain: str
    seq: int | None = Field(description="Sequence number of the first bad entry")
    entry_id: int | None = Field(description="Row id of the first bad entry, if it still exists")
    reason: str


class VerifyReport(OutputModel):
    ok: bool
    chains_checked: int
    entries_checked: int
    problems: list[ChainProblem]
