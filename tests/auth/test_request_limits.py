"""Request bodies over max_body_bytes (64 KiB in the test settings) are refused with a 413."""

from __future__ import annotations

import json
from collections.abc import Iterator

from fastapi.testclient import TestClient

from foresight.config import Settings
from foresight.kit.db import Database
from foresight.models import Role
from tests.auth.helpers import TOKEN_URL, assert_problem, audit_row_count, error_locs
from tests.factories import PASSWORD, Factory


def _oversized_login(settings: Settings) -> bytes:
    padding = "x" * (settings.max_body_bytes + 1024)
    return json.dumps({"email": "a@example.com", "password": padding}).encode()


def test_declared_oversized_body_is_a_413(client: TestClient, settings: Settings) -> None:
    body = _oversized_login(settings)
    r = client.post(TOKEN_URL, content=body, headers={"Content-Type": "application/json"})
    problem = assert_problem(r, 413, detail_contains=str(settings.max_body_bytes))
    assert problem["type"] == "urn:foresight:problem:payload-too-large"
    assert r.headers.get("x-request-id")


def test_chunked_oversized_body_is_a_413(
    client: TestClient, factory: Factory, settings: Settings, db: Database
) -> None:
    admin = factory.user(factory.tenant(), Role.admin)
    entries_before = audit_row_count(db)
    body = json.dumps({"label": "y" * (settings.max_body_bytes * 2)}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    r = client.post(
        "/api/v1/api-keys",
        content=chunks(),
        headers={**admin.headers, "Content-Type": "application/json"},
    )

    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert r.request.headers.get("transfer-encoding") == "chunked"
    problem = assert_problem(r, 413, detail_contains=str(settings.max_body_bytes))
    assert problem["type"] == "urn:foresight:problem:payload-too-large"
    # Nothing was created.
    assert client.get("/api/v1/api-keys", headers=admin.headers).json()["items"] == []
    assert audit_row_count(db) == entries_before


def test_body_under_the_limit_is_processed(
    client: TestClient, factory: Factory, settings: Settings
) -> None:
    # Just under the limit the request reaches validation (password max_length is 256).
    user = factory.user(factory.tenant(), Role.viewer)
    padding = "x" * (settings.max_body_bytes - 200)
    body = json.dumps({"email": user.email, "password": padding}).encode()
    assert len(body) < settings.max_body_bytes

    r = client.post(TOKEN_URL, content=body, headers={"Content-Type": "application/json"})

    assert ["body", "password"] in error_locs(assert_problem(r, 422))

    def chunks() -> Iterator[bytes]:
        yield json.dumps({"email": user.email, "password": PASSWORD}).encode()

    r = client.post(TOKEN_URL, content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
