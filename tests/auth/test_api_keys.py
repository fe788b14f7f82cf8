"""Device API keys: shown once, stored hashed, ingest only, tenant-bound, revocable."""

from __future__ import annotations

import hashlib
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import text

from foresight.auth import security
from foresight.kit.db import Database
from foresight.models import Role
from tests.auth.helpers import (
    assert_problem,
    assert_unauthenticated,
    audit_entries,
    error_locs,
    last_audit_entry,
)
from tests.factories import Factory, TestUser

KEYS = "/api/v1/api-keys"
PROBE = "/api/v1/_probe/ingest"


def _create_key(client: TestClient, admin: TestUser, label: str = "press-7") -> dict[str, str]:
    r = client.post(KEYS, json={"label": label}, headers=admin.headers)
    assert r.status_code == 201, r.text
    body: dict[str, str] = r.json()
    return body


def test_create_returns_the_full_key_once(
    client: TestClient, factory: Factory, db: Database
) -> None:
    admin = factory.user(factory.tenant(), Role.admin)

    created = _create_key(client, admin)

    key = created["key"]
    assert key.startswith("fsk_")
    assert security.split_api_key(key) == created["prefix"]
    assert len(key) > 40
    assert created["label"] == "press-7"
    assert created["tenant_id"] == str(admin.tenant_id)
    assert created["revoked_at"] is None
    # Never again: not in the list, not in the revoke response, not in the audit trail.
    listing = client.get(KEYS, headers=admin.headers)
    assert listing.status_code == 200
    (item,) = listing.json()["items"]
    assert item["id"] == created["id"] and item["prefix"] == created["prefix"]
    assert not {"key", "key_hash", "hash"} & set(item)
    assert key not in listing.text
    assert security.hash_api_key(key) not in listing.text
    entry = last_audit_entry(db, admin.tenant_id, "apikey.create")
    assert entry.changes == {"label": "press-7", "prefix": created["prefix"]}
    assert all(key not in str(e.changes) for e in audit_entries(db, admin.tenant_id))


def test_key_is_stored_hashed(client: TestClient, factory: Factory, db: Database) -> None:
    admin = factory.user(factory.tenant(), Role.admin)
    created = _create_key(client, admin)
    key = created["key"]
    secret_part = key.rsplit("_", 1)[1]

    with db.engine.connect() as conn:
        row = conn.execute(
            text("SELECT * FROM api_keys WHERE prefix = :p"), {"p": created["prefix"]}
        ).one()
    values = [str(v) for v in row._mapping.values() if v is not None]

    assert row._mapping["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert not any(key in v or secret_part in v for v in values)


def test_key_authenticates_as_its_own_tenant(ingest_client: TestClient, factory: Factory) -> None:
    client = ingest_client
    admin_a = factory.user(factory.tenant(), Role.admin)
    admin_b = factory.user(factory.tenant(), Role.admin)
    key_a = _create_key(client, admin_a, "a-sensor")
    key_b = _create_key(client, admin_b, "b-sensor")

    for admin, created in ((admin_a, key_a), (admin_b, key_b)):
        r = client.post(PROBE, headers={"X-API-Key": created["key"]})
        assert r.status_code == 200, r.text
        who = r.json()
        assert who["tenant_id"] == str(admin.tenant_id)
        assert who["kind"] == "api_key"
        assert who["id"] == created["id"]
        assert created["prefix"] in who["label"]


def test_ingest_permission_follows_the_role_matrix(
    ingest_client: TestClient, factory: Factory
) -> None:
    tenant = factory.tenant()
    assert ingest_client.post(PROBE, headers=factory.user(tenant, Role.operator).headers).is_success
    r = ingest_client.post(PROBE, headers=factory.user(tenant, Role.viewer).headers)
    assert_problem(r, 403, detail_contains="ingest")


def test_keys_are_ingest_only(client: TestClient, factory: Factory) -> None:
    admin = factory.user(factory.tenant(), Role.admin)
    key = _create_key(client, admin)["key"]
    headers = {"X-API-Key": key}

    for method, url, payload in (
        ("GET", "/api/v1/auth/me", None),
        ("GET", "/api/v1/assets", None),
        ("GET", "/api/v1/tenant", None),
        ("GET", "/api/v1/users", None),
        ("POST", "/api/v1/users", {"email": "dev@example.com", "password": "long-enough-pw"}),
        ("GET", KEYS, None),
        ("POST", KEYS, {"label": "escalate"}),
        ("GET", "/api/v1/audit", None),
    ):
        r = client.request(method, url, json=payload, headers=headers)
        body = assert_problem(r, 403, detail_contains="may only ingest")
        assert body["type"] == "urn:foresight:problem:forbidden", (method, url)
    assert len(client.get(KEYS, headers=admin.headers).json()["items"]) == 1


def test_revoked_key_is_refused(ingest_client: TestClient, factory: Factory, db: Database) -> None:
    client = ingest_client
    admin = factory.user(factory.tenant(), Role.admin)
    created = _create_key(client, admin)
    assert client.post(PROBE, headers={"X-API-Key": created["key"]}).status_code == 200

    r = client.delete(f"{KEYS}/{created['id']}", headers=admin.headers)

    assert r.status_code == 200, r.text
    assert r.json()["revoked_at"] is not None
    assert "key" not in r.json()
    assert_unauthenticated(
        client.post(PROBE, headers={"X-API-Key": created["key"]}), detail_contains="revoked"
    )
    assert last_audit_entry(db, admin.tenant_id, "apikey.revoke").object_id == created["id"]
    # Revoking again is harmless and not audited twice.
    assert client.delete(f"{KEYS}/{created['id']}", headers=admin.headers).status_code == 200
    actions = [e.action for e in audit_entries(db, admin.tenant_id)]
    assert actions.count("apikey.revoke") == 1
    listed = client.get(KEYS, headers=admin.headers).json()["items"]
    assert listed[0]["revoked_at"] is not None


def test_bad_keys_are_refused(ingest_client: TestClient, factory: Factory) -> None:
    client = ingest_client
    admin = factory.user(factory.tenant(), Role.admin)
    key = _create_key(client, admin)["key"]
    prefix = security.split_api_key(key)
    assert prefix is not None
    other_prefix = "0" * 12 if prefix != "0" * 12 else "1" * 12
    bad = {
        "wrong secret": f"fsk_{prefix}_{'A' * 43}",
        "truncated": key[:-1],
        "extended": key + "x",
        "unknown prefix": f"fsk_{other_prefix}_{key.rsplit('_', 1)[1]}",
        "no scheme prefix": key.removeprefix("fsk_"),
        "garbage": "not-a-key",
        "bare prefix": "fsk_",
        "short prefix": f"fsk_abc_{'A' * 43}",
    }
    for case, value in bad.items():
        r = client.post(PROBE, headers={"X-API-Key": value})
        assert r.status_code == 401, (case, r.text)
        assert r.headers["content-type"] == "application/problem+json", case
        assert r.headers.get("www-authenticate") == "Bearer", case
    # The key in the Authorization header is not a bearer token either.
    assert_unauthenticated(client.post(PROBE, headers={"Authorization": f"Bearer {key}"}))
    # The genuine key still works after all that.
    assert client.post(PROBE, headers={"X-API-Key": key}).status_code == 200


def test_another_tenants_key_cannot_be_revoked(ingest_client: TestClient, factory: Factory) -> None:
    client = ingest_client
    owner = factory.user(factory.tenant(), Role.admin)
    intruder = factory.user(factory.tenant(), Role.admin)
    created = _create_key(client, owner)

    assert_problem(client.delete(f"{KEYS}/{created['id']}", headers=intruder.headers), 404)
    assert_problem(client.delete(f"{KEYS}/{uuid.uuid4()}", headers=intruder.headers), 404)
    assert client.get(KEYS, headers=intruder.headers).json()["items"] == []
    assert client.post(PROBE, headers={"X-API-Key": created["key"]}).status_code == 200


def test_only_admins_manage_keys(client: TestClient, factory: Factory) -> None:
    tenant = factory.tenant()
    admin = factory.user(tenant, Role.admin)
    created = _create_key(client, admin)
    analyst = factory.user(tenant, Role.analyst)

    for method, url in (("GET", KEYS), ("POST", KEYS), ("DELETE", f"{KEYS}/{created['id']}")):
        r = client.request(
            method, url, json={} if method == "POST" else None, headers=analyst.headers
        )
        assert_problem(r, 403, detail_contains="apikeys:manage")
    assert client.get(KEYS, headers=admin.headers).json()["items"][0]["revoked_at"] is None


def test_list_keys_with_cursor_pagination(client: TestClient, factory: Factory) -> None:
    admin = factory.user(factory.tenant(), Role.admin)
    created = [_create_key(client, admin, f"k{i}")["id"] for i in range(5)]
    factory_other = factory.user(factory.tenant(), Role.admin)
    _create_key(client, factory_other, "elsewhere")

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, str | int] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        r = client.get(KEYS, params=params, headers=admin.headers)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= 2
        seen += [k["id"] for k in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert sorted(seen) == sorted(created)
    assert len(seen) == len(set(seen))
    # Newest first.
    r = client.get(KEYS, params={"limit": 500}, headers=admin.headers)
    stamps = [k["created_at"] for k in r.json()["items"]]
    assert stamps == sorted(stamps, reverse=True)
    # A cursor that is not one of ours is a 422, not a 500.
    for bad in ("garbage!", "WyJ4IiwieSJd"):  # the second is ["x","y"]
        r = client.get(KEYS, params={"cursor": bad}, headers=admin.headers)
        assert ["query", "cursor"] in error_locs(assert_problem(r, 422))


def test_last_used_at_is_recorded(ingest_client: TestClient, factory: Factory) -> None:
    client = ingest_client
    admin = factory.user(factory.tenant(), Role.admin)
    created = _create_key(client, admin, "plc")
    assert created["last_used_at"] is None
    assert client.post(PROBE, headers={"X-API-Key": created["key"]}).status_code == 200
    listed = client.get("/api/v1/api-keys", headers=admin.headers).json()["items"]
    used = next(k for k in listed if k["id"] == created["id"])
    assert used["last_used_at"] is not None
