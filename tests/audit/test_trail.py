"""The audit trail: what mutations record, how it is listed, and verification of a clean chain."""

from __future__ import annotations

import re
import uuid
from datetime import datetime

from fastapi.testclient import TestClient

from foresight.audit import service as audit_service
from foresight.audit.schemas import Actor
from foresight.audit.service import GENESIS_HASH, canonical_json
from foresight.kit.db import Database
from foresight.kit.pagination import encode_cursor
from foresight.models import Role
from tests.auth.helpers import (
    TOKEN_URL,
    assert_problem,
    audit_entries,
    error_locs,
    last_audit_entry,
)
from tests.factories import Factory, TestUser

AUDIT = "/api/v1/audit"
VERIFY = "/api/v1/audit/verify"


def _admin(factory: Factory) -> TestUser:
    return factory.user(factory.tenant(), Role.admin)


def _make_entries(client: TestClient, admin: TestUser, count: int) -> None:
    for i in range(count):
        r = client.patch("/api/v1/tenant", json={"settings": {"n": i}}, headers=admin.headers)
        assert r.status_code == 200, r.text


def _all_pages(client: TestClient, admin: TestUser, **params: str | int) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    cursor: str | None = None
    for _ in range(50):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = client.get(AUDIT, params=query, headers=admin.headers)
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination does not terminate")


def test_mutation_records_who_what_and_the_request_id(
    client: TestClient, factory: Factory, db: Database
) -> None:
    admin = _admin(factory)
    before = audit_entries(db, admin.tenant_id)

    r = client.post(
        "/api/v1/users",
        json={"email": "audited@example.com", "password": "long-enough-pw", "role": "analyst"},
        headers={**admin.headers, "X-Request-ID": "req-42.audit_TEST"},
    )

    assert r.status_code == 201, r.text
    assert r.headers["x-request-id"] == "req-42.audit_TEST"
    after = audit_entries(db, admin.tenant_id)
    assert len(after) == len(before) + 1
    entry = after[-1]
    assert entry.chain == str(admin.tenant_id)
    assert entry.tenant_id == admin.tenant_id
    assert entry.seq == before[-1].seq + 1
    assert str(entry.actor_type) == "user"
    assert entry.actor_id == str(admin.id)
    assert entry.actor_label == admin.email
    assert entry.action == "user.create"
    assert entry.object_type == "user"
    assert entry.object_id == r.json()["id"]
    assert entry.changes == {
        "email": "audited@example.com",
        "full_name": "",
        "role": "analyst",
        "is_active": True,
    }
    assert entry.request_id == "req-42.audit_TEST"
    assert entry.prev_hash == before[-1].hash
    assert re.fullmatch(r"[0-9a-f]{64}", entry.hash)
    # The API shows the same entry.
    listed = client.get(AUDIT, params={"limit": 1}, headers=admin.headers).json()["items"][0]
    assert listed == entry.model_dump(mode="json")


def test_update_records_a_diff(client: TestClient, factory: Factory, db: Database) -> None:
    admin = _admin(factory)
    _make_entries(client, admin, 1)  # settings {} -> {"n": 0}
    r = client.patch(
        "/api/v1/tenant", json={"settings": {"n": 1, "site": "Ghent"}}, headers=admin.headers
    )
    assert r.status_code == 200, r.text
    entry = last_audit_entry(db, admin.tenant_id, "tenant.update")
    assert entry.changes == {"settings": [{"n": 0}, {"n": 1, "site": "Ghent"}]}
    assert (entry.object_type, entry.object_id) == ("tenant", str(admin.tenant_id))


def test_request_id_is_generated_when_missing_or_unsafe(
    client: TestClient, factory: Factory, db: Database
) -> None:
    admin = _admin(factory)
    for sent in (None, "has spaces in it", "x" * 65, "semi;colon", "new\\nline"):
        headers = dict(admin.headers)
        if sent is not None:
            headers["X-Request-ID"] = sent
        r = client.post("/api/v1/api-keys", json={"label": "k"}, headers=headers)
        assert r.status_code == 201, r.text
        echoed = r.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", echoed), (sent, echoed)
        assert last_audit_entry(db, admin.tenant_id, "apikey.create").request_id == echoed


def test_failed_sign_in_entry_carries_the_request_id(
    client: TestClient, factory: Factory, db: Database
) -> None:
    user = factory.user(factory.tenant(), Role.viewer)
    r = client.post(
        TOKEN_URL,
        json={"email": user.email, "password": "wrong-password"},
        headers={"X-Request-ID": "failed-login-1"},
    )
    assert r.status_code == 401
    assert r.headers["x-request-id"] == "failed-login-1"
    assert r.json()["request_id"] == "failed-login-1"
    entry = last_audit_entry(db, user.tenant_id, "auth.login_failed")
    assert entry.request_id == "failed-login-1"


def test_refused_and_failed_mutations_append_nothing(
    client: TestClient, factory: Factory, db: Database
) -> None:
    tenant = factory.tenant()
    admin = factory.user(tenant, Role.admin)
    viewer = factory.user(tenant, Role.viewer)
    before = audit_entries(db, tenant.id)

    assert client.post("/api/v1/api-keys", json={}, headers=viewer.headers).status_code == 403
    dup = {"email": viewer.email, "password": "long-enough-pw"}
    assert client.post("/api/v1/users", json=dup, headers=admin.headers).status_code == 409
    assert client.patch("/api/v1/tenant", json={"settings": 3}, headers=admin.headers).is_error
    assert client.delete(f"/api/v1/users/{admin.id}", headers=admin.headers).status_code == 409

    assert audit_entries(db, tenant.id) == before


def test_listing_is_newest_first_with_cursor_pagination(
    client: TestClient, factory: Factory, db: Database
) -> None:
    admin = _admin(factory)
    _make_entries(client, admin, 6)
    total = len(audit_entries(db, admin.tenant_id))
    assert total == 7  # tenant.create + 6 updates

    first = client.get(AUDIT, params={"limit": 3}, headers=admin.headers).json()
    assert [e["seq"] for e in first["items"]] == [7, 6, 5]
    assert first["next_cursor"]

    items = _all_pages(client, admin, limit=3)
    assert [e["seq"] for e in items] == list(range(total, 0, -1))
    assert items[-1]["prev_hash"] == GENESIS_HASH
    assert items[-1]["action"] == "tenant.create"
    # Each entry links to the one before it.
    for newer, older in zip(items, items[1:], strict=False):
        assert newer["prev_hash"] == older["hash"]


def test_listing_filters(client: TestClient, factory: Factory) -> None:
    admin = _admin(factory)
    _make_entries(client, admin, 3)
    key = client.post("/api/v1/api-keys", json={"label": "k"}, headers=admin.headers).json()
    assert client.delete(f"/api/v1/api-keys/{key['id']}", headers=admin.headers).is_success

    def seqs(**params: str | int) -> list[int]:
        return [int(str(e["seq"])) for e in _all_pages(client, admin, limit=2, **params)]

    assert seqs(action="tenant.update") == [4, 3, 2]
    assert seqs(action="apikey.revoke") == [6]
    assert seqs(object_type="api_key") == [6, 5]
    assert seqs(object_type="tenant") == [4, 3, 2, 1]
    assert seqs(object_id=key["id"]) == [6, 5]
    assert seqs(action="apikey.create", object_id=key["id"]) == [5]
    assert seqs(action="no.such.action") == []

    everything = _all_pages(client, admin)
    stamp = {int(str(e["seq"])): str(e["occurred_at"]) for e in everything}
    since = seqs(since=stamp[3])
    until = seqs(until=stamp[3])
    # since is inclusive and until exclusive, so together they partition the trail.
    assert 3 in since and 3 not in until
    assert sorted(since + until) == sorted(stamp)
    assert all(datetime.fromisoformat(stamp[s]) >= datetime.fromisoformat(stamp[3]) for s in since)
    assert seqs(since=stamp[2], until=stamp[2]) == []


def test_listing_rejects_malformed_cursors(client: TestClient, factory: Factory) -> None:
    admin = _admin(factory)
    for cursor in ("%%%", encode_cursor(["abc"]), encode_cursor([None]), encode_cursor([1, 2])):
        r = client.get(AUDIT, params={"cursor": cursor}, headers=admin.headers)
        body = assert_problem(r, 422)
        assert ["query", "cursor"] in error_locs(body), cursor


def test_listing_shows_only_the_callers_tenant(
    client: TestClient, factory: Factory, db: Database
) -> None:
    admin_a = _admin(factory)
    admin_b = _admin(factory)
    _make_entries(client, admin_a, 3)
    _make_entries(client, admin_b, 1)

    seen_by_b = _all_pages(client, admin_b)

    assert len(seen_by_b) == len(audit_entries(db, admin_b.tenant_id)) == 2
    assert {e["chain"] for e in seen_by_b} == {str(admin_b.tenant_id)}
    assert {e["tenant_id"] for e in seen_by_b} == {str(admin_b.tenant_id)}
    r = client.get(
        AUDIT, params={"object_id": str(admin_a.tenant_id)}, headers=admin_b.headers
    ).json()
    assert r["items"] == []
    # And B's verification covers B's chain only.
    report = client.get(VERIFY, headers=admin_b.headers).json()
    assert (report["chains_checked"], report["entries_checked"]) == (1, 2)


def test_only_admins_read_the_trail(client: TestClient, factory: Factory) -> None:
    tenant = factory.tenant()
    factory.user(tenant, Role.admin)
    for role in (Role.viewer, Role.operator, Role.analyst):
        user = factory.user(tenant, role)
        for url in (AUDIT, VERIFY):
            assert_problem(client.get(url, headers=user.headers), 403, detail_contains="audit:read")
    assert_problem(client.get(AUDIT), 401)


def test_verify_reports_ok_on_a_clean_chain(
    client: TestClient, factory: Factory, db: Database
) -> None:
    admin = _admin(factory)
    _make_entries(client, admin, 4)
    entries = audit_entries(db, admin.tenant_id)

    r = client.get(VERIFY, headers=admin.headers)

    assert r.status_code == 200, r.text
    assert r.json() == {
        "ok": True,
        "chains_checked": 1,
        "entries_checked": len(entries),
        "problems": [],
    }
    with db.transaction(write=False) as session:
        # Every chain, including the system chain that records tenant creation.
        everything = audit_service.verify(session)
    assert everything.ok
    assert everything.chains_checked == 2
    assert everything.entries_checked == len(entries) + 1


def test_changes_are_stored_as_canonical_json(factory: Factory, db: Database) -> None:
    # The hash covers the stored text, so it must not depend on key order or spacing.
    tenant = factory.tenant()
    with db.transaction() as session:
        entry = audit_service.record(
            session,
            actor=Actor.system("test", tenant.id),
            action="test.canonical",
            object_type="thing",
            object_id=uuid.UUID(int=7),
            changes={"b": 1.5, "a": ["x", {"z": None, "y": "é"}]},
        )
        assert entry.changes == '{"a":["x",{"y":"é","z":null}],"b":1.5}'
        assert entry.changes == canonical_json({"a": ["x", {"y": "é", "z": None}], "b": 1.5})
    with db.transaction(write=False) as session:
        assert audit_service.verify(session, tenant_id=tenant.id).ok
