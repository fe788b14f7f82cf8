"""Assertions and small helpers shared by the auth and audit tests."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from foresight.audit import service as audit_service
from foresight.audit.schemas import AuditEntryRead
from foresight.auth import security
from foresight.kit.db import Database
from foresight.models import AuditEntry
from tests import factories

# Same algorithm (argon2id), far cheaper parameters: a production-strength hash or verify takes
# ~0.5 s, and these tests sign in and create users hundreds of times.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
_FAST_PASSWORD_HASH = FAST_HASHER.hash(factories.PASSWORD)
_FAST_DUMMY_HASH = FAST_HASHER.hash("foresight-timing-equaliser")


def use_fast_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(security, "_hasher", FAST_HASHER)
    monkeypatch.setattr(security, "_DUMMY_HASH", _FAST_DUMMY_HASH)
    monkeypatch.setattr(factories, "_PASSWORD_HASH", _FAST_PASSWORD_HASH)


PROBLEM_JSON = "application/problem+json"
TOKEN_URL = "/api/v1/auth/token"


def assert_problem(
    response: httpx.Response, status: int, *, detail_contains: str | None = None
) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:foresight:problem:")
    assert body["title"]
    if detail_contains is not None:
        assert detail_contains.lower() in (body["detail"] or "").lower(), body
    return body


def assert_unauthenticated(
    response: httpx.Response, *, detail_contains: str | None = None
) -> dict[str, Any]:
    body = assert_problem(response, 401, detail_contains=detail_contains)
    assert response.headers.get("www-authenticate") == "Bearer"
    assert body["type"] == "urn:foresight:problem:unauthenticated"
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_locs(body: dict[str, Any]) -> list[list[str | int]]:
    return [e["loc"] for e in body["errors"]]


def audit_entries(db: Database, tenant_id: uuid.UUID) -> list[AuditEntryRead]:
    """The tenant's chain straight from the database, oldest first."""
    with db.transaction(write=False) as session:
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.chain == str(tenant_id)).order_by(AuditEntry.seq)
        )
        return [audit_service.to_read(row) for row in rows]


def audit_row_count(db: Database) -> int:
    with db.transaction(write=False) as session:
        return len(session.scalars(select(AuditEntry.id)).all())


def last_audit_entry(db: Database, tenant_id: uuid.UUID, action: str) -> AuditEntryRead:
    """The newest entry of the tenant's chain with this action."""
    matching = [e for e in audit_entries(db, tenant_id) if e.action == action]
    assert matching, f"no {action!r} entry in the audit trail"
    return matching[-1]
