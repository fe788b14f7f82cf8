"""User management: admin only, tenant-scoped, never locks a tenant out of administration."""

from __future__ import annotations

import threading
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from foresight.auth import service as auth_service
from foresight.auth.schemas import Principal, UserUpdate
from foresight.kit.db import Database
from foresight.kit.errors import Conflict
from foresight.models import ActorType, Role, User
from tests.auth.helpers import (
    TOKEN_URL,
    assert_problem,
    assert_unauthenticated,
    audit_entries,
    bearer,
    error_locs,
    last_audit_entry,
)
from tests.factories import PASSWORD, Factory, TestUser

USERS = "/api/v1/users"
NEW_PASSWORD = "n3w-and-l0ng-enough"


def _sign_in(client: TestClient, email: str, password: str = PASSWORD) -> str:
    r = client.post(TOKEN_URL, json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


def _admin(factory: Factory) -> TestUser:
    return factory.user(factory.tenant(), Role.admin)


def test_create_user(client: TestClient, factory: Factory, db: Database) -> None:
    admin = _admin(factory)
    secret = "pl41n-text-password"

    r = client.post(
        USERS,
        json={
            "email": "New.Person@Example.com",
            "password": secret,
            "role": "operator",
            "full_name": "New Person",
        },
        headers=admin.headers,
    )

    assert r.status_code == 201, r.text
    body = r.json()
    assert body["email"] == "new.person@example.com"
    assert body["role"] == "operator"
    assert body["tenant_id"] == str(admin.tenant_id)
    assert body["is_active"] is True
    assert not {"password", "password_hash"} & set(body)
    assert secret not in r.text
    with db.transaction(write=False) as session:
        row = session.get(User, uuid.UUID(body["id"]))
        assert row is not None
        assert row.password_hash.startswith("$argon2id$") and secret not in row.password_hash
    # The new user can sign in, and sees the role they were given.
    me = client.get("/api/v1/auth/me", headers=bearer(_sign_in(client, body["email"], secret)))
    assert me.json()["role"] == "operator"
    # Audited, without the password.
    entry = last_audit_entry(db, admin.tenant_id, "user.create")
    assert entry.object_id == body["id"]
    assert (entry.actor_id, entry.actor_label) == (str(admin.id), admin.email)
    assert entry.changes == {
        "email": "new.person@example.com",
        "full_name": "New Person",
        "role": "operator",
        "is_active": True,
    }


def test_create_user_defaults_to_viewer(client: TestClient, factory: Factory) -> None:
    admin = _admin(factory)
    r = client.post(
        USERS, json={"email": "v@example.com", "password": PASSWORD}, headers=admin.headers
    )
    assert r.status_code == 201, r.text
    assert r.json()["role"] == "viewer"


def test_duplicate_e_mail_is_a_409_naming_email(
    client: TestClient, factory: Factory, db: Database
) -> None:
    admin = _admin(factory)
    # E-mails are global (login is by e-mail alone): another tenant's address also conflicts.
    elsewhere = factory.user(factory.tenant(), Role.viewer)
    entries_before = len(audit_entries(db, admin.tenant_id))

    for email in (admin.email, admin.email.upper(), elsewhere.email):
        r = client.post(USERS, json={"email": email, "password": PASSWORD}, headers=admin.headers)
        body = assert_problem(r, 409)
        assert ["body", "email"] in error_locs(body), email
        assert email.lower() in body["detail"]
    assert len(audit_entries(db, admin.tenant_id)) == entries_before


def test_create_user_validation(client: TestClient, factory: Factory) -> None:
    admin = _admin(factory)
    cases: list[tuple[dict[str, object], str]] = [
        ({"email": "short@example.com", "password": "1234567"}, "password"),
        ({"email": "nope", "password": PASSWORD}, "email"),
        ({"email": "r@example.com", "password": PASSWORD, "role": "superuser"}, "role"),
        ({"email": "x@example.com", "password": PASSWORD, "is_admin": True}, "is_admin"),
        (
            {"email": "t@example.com", "password": PASSWORD, "tenant_id": str(uuid.uuid4())},
            "tenant_id",
        ),
    ]
    for payload, field in cases:
        body = assert_problem(client.post(USERS, json=payload, headers=admin.headers), 422)
        assert ["body", field] in error_locs(body), payload
        assert f"body.{field}" in body["detail"], payload
    assert [u["email"] for u in client.get(USERS, headers=admin.headers).json()["items"]] == [
        admin.email
    ]


def test_list_users_with_cursor_pagination(client: TestClient, factory: Factory) -> None:
    tenant = factory.tenant()
    admin = factory.user(tenant, Role.admin, email="a-admin@example.com")
    others = [factory.user(tenant, Role.viewer, email=f"u{i}@example.com") for i in range(4)]
    factory.user(factory.tenant(), Role.viewer, email="b-outsider@example.com")

    emails: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        r = client.get(USERS, params=params, headers=admin.headers)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= 2
        assert all(u["tenant_id"] == str(tenant.id) for u in page["items"])
        emails += [u["email"] for u in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 10, "pagination does not terminate"

    assert emails == sorted([admin.email, *(u.email for u in others)])
    assert pages == 3


def test_list_users_rejects_a_malformed_cursor(client: TestClient, factory: Factory) -> None:
    admin = _admin(factory)
    r = client.get(USERS, params={"cursor": "%%%not-a-cursor"}, headers=admin.headers)
    assert ["query", "cursor"] in error_locs(assert_problem(r, 422))


def test_get_user(client: TestClient, factory: Factory) -> None:
    admin = _admin(factory)
    user = factory.user(admin.tenant_id, Role.analyst)
    r = client.get(f"{USERS}/{user.id}", headers=admin.headers)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == str(user.id)
    assert r.json()["role"] == "analyst"
    assert_problem(client.get(f"{USERS}/{uuid.uuid4()}", headers=admin.headers), 404)
    assert_problem(client.get(f"{USERS}/not-a-uuid", headers=admin.headers), 422)


def test_another_tenants_user_is_not_found(
    client: TestClient, factory: Factory, db: Database
) -> None:
    admin = _admin(factory)
    stranger = factory.user(factory.tenant(), Role.admin)
    url = f"{USERS}/{stranger.id}"

    assert_problem(client.get(url, headers=admin.headers), 404)
    assert_problem(client.patch(url, json={"role": "viewer"}, headers=admin.headers), 404)
    assert_problem(client.delete(url, headers=admin.headers), 404)

    with db.transaction(write=False) as session:
        row = session.get(User, stranger.id)
        assert row is not None and row.role is Role.admin and row.is_active
    assert client.get("/api/v1/auth/me", headers=stranger.headers).status_code == 200


def test_patch_role(client: TestClient, factory: Factory, db: Database) -> None:
    admin = _admin(factory)
    user = factory.user(admin.tenant_id, Role.viewer)

    r = client.patch(f"{USERS}/{user.id}", json={"role": "analyst"}, headers=admin.headers)

    assert r.status_code == 200, r.text
    assert r.json()["role"] == "analyst"
    entry = last_audit_entry(db, admin.tenant_id, "user.update")
    assert entry.object_id == str(user.id)
    assert entry.changes == {"role": ["viewer", "analyst"]}
    # The new role is in force from the next sign-in.
    token = _sign_in(client, user.email)
    me = client.get("/api/v1/auth/me", headers=bearer(token)).json()
    assert "assets:write" in me["permissions"]


def test_patch_password_revokes_old_tokens(
    client: TestClient, factory: Factory, db: Database
) -> None:
    admin = _admin(factory)
    user = factory.user(admin.tenant_id, Role.operator)
    session_token = _sign_in(client, user.email)

    r = client.patch(f"{USERS}/{user.id}", json={"password": NEW_PASSWORD}, headers=admin.headers)

    assert r.status_code == 200, r.text
    assert NEW_PASSWORD not in r.text
    assert_unauthenticated(client.get("/api/v1/auth/me", headers=user.headers))
    assert_unauthenticated(client.get("/api/v1/auth/me", headers=bearer(session_token)))
    assert_unauthenticated(client.post(TOKEN_URL, json={"email": user.email, "password": PASSWORD}))
    assert client.get("/api/v1/auth/me", headers=bearer(_sign_in(client, user.email, NEW_PASSWORD)))
    entry = last_audit_entry(db, admin.tenant_id, "user.update")
    assert entry.object_id == str(user.id)
    assert entry.changes == {"password": "changed"}
    # The admin's own token is untouched.
    assert client.get("/api/v1/auth/me", headers=admin.headers).status_code == 200


def test_patch_is_active_false_revokes_and_blocks_sign_in(
    client: TestClient, factory: Factory
) -> None:
    admin = _admin(factory)
    user = factory.user(admin.tenant_id, Role.analyst)

    r = client.patch(f"{USERS}/{user.id}", json={"is_active": False}, headers=admin.headers)

    assert r.status_code == 200, r.text
    assert r.json()["is_active"] is False
    assert_unauthenticated(client.get("/api/v1/auth/me", headers=user.headers))
    assert_unauthenticated(client.post(TOKEN_URL, json={"email": user.email, "password": PASSWORD}))
    # Re-activating lets them sign in again (but the old token stays dead).
    r = client.patch(f"{USERS}/{user.id}", json={"is_active": True}, headers=admin.headers)
    assert r.status_code == 200, r.text
    assert_unauthenticated(client.get("/api/v1/auth/me", headers=user.headers))
    assert client.get("/api/v1/auth/me", headers=bearer(_sign_in(client, user.email))).is_success


def test_patch_validation(client: TestClient, factory: Factory) -> None:
    admin = _admin(factory)
    user = factory.user(admin.tenant_id, Role.viewer)
    url = f"{USERS}/{user.id}"
    for payload, field in (
        ({"password": "short"}, "password"),
        ({"role": "root"}, "role"),
        ({"email": "changed@example.com"}, "email"),
        ({"token_version": 0}, "token_version"),
    ):
        body = assert_problem(client.patch(url, json=payload, headers=admin.headers), 422)
        assert ["body", field] in error_locs(body), payload
    assert client.get("/api/v1/auth/me", headers=user.headers).status_code == 200


def test_delete_user(client: TestClient, factory: Factory, db: Database) -> None:
    admin = _admin(factory)
    user = factory.user(admin.tenant_id, Role.viewer)

    r = client.delete(f"{USERS}/{user.id}", headers=admin.headers)

    assert r.status_code == 204
    assert r.content == b""
    assert_problem(client.get(f"{USERS}/{user.id}", headers=admin.headers), 404)
    assert_problem(client.delete(f"{USERS}/{user.id}", headers=admin.headers), 404)
    with db.transaction(write=False) as session:
        assert session.get(User, user.id) is None
    entry = last_audit_entry(db, admin.tenant_id, "user.delete")
    assert entry.object_id == str(user.id)
    assert entry.changes["email"] == user.email


def test_delete_keeps_api_keys_created_by_the_user(client: TestClient, factory: Factory) -> None:
    tenant = factory.tenant()
    admin = factory.user(tenant, Role.admin)
    other_admin = factory.user(tenant, Role.admin)
    r = client.post("/api/v1/api-keys", json={"label": "plc"}, headers=other_admin.headers)
    assert r.status_code == 201, r.text

    assert client.delete(f"{USERS}/{other_admin.id}", headers=admin.headers).status_code == 204

    keys = client.get("/api/v1/api-keys", headers=admin.headers).json()["items"]
    assert [k["label"] for k in keys] == ["plc"]


def test_cannot_delete_yourself(client: TestClient, factory: Factory) -> None:
    tenant = factory.tenant()
    admin = factory.user(tenant, Role.admin)
    factory.user(tenant, Role.admin)  # not the last admin: the self-check alone refuses
    assert_problem(
        client.delete(f"{USERS}/{admin.id}", headers=admin.headers),
        409,
        detail_contains="own account",
    )
    assert client.get("/api/v1/auth/me", headers=admin.headers).status_code == 200


def test_last_active_admin_cannot_be_demoted_or_deactivated(
    client: TestClient, factory: Factory, db: Database
) -> None:
    tenant = factory.tenant()
    admin = factory.user(tenant, Role.admin)
    factory.user(tenant, Role.admin, is_active=False)  # an inactive admin does not count
    factory.user(tenant, Role.analyst)
    url = f"{USERS}/{admin.id}"
    entries_before = len(audit_entries(db, tenant.id))

    for payload in (
        {"role": "analyst"},
        {"is_active": False},
        {"role": "viewer", "is_active": False},
    ):
        body = assert_problem(client.patch(url, json=payload, headers=admin.headers), 409)
        assert "last active admin" in body["detail"], payload

    r = client.get(url, headers=admin.headers)
    assert r.status_code == 200 and r.json()["role"] == "admin" and r.json()["is_active"]
    assert len(audit_entries(db, tenant.id)) == entries_before
    # A no-op "role: admin" is not a demotion.
    assert client.patch(url, json={"role": "admin"}, headers=admin.headers).status_code == 200


def test_an_admin_may_step_down_when_another_remains(client: TestClient, factory: Factory) -> None:
    tenant = factory.tenant()
    admin = factory.user(tenant, Role.admin)
    successor = factory.user(tenant, Role.admin)

    r = client.patch(f"{USERS}/{admin.id}", json={"role": "viewer"}, headers=admin.headers)
    assert r.status_code == 200, r.text

    # Now the successor is the last admin and is protected.
    r = client.patch(f"{USERS}/{successor.id}", json={"role": "viewer"}, headers=successor.headers)
    assert_problem(r, 409)
    # The former admin signs in again and no longer manages users.
    token = _sign_in(client, admin.email)
    assert_problem(client.get(USERS, headers=bearer(token)), 403)


def test_last_active_admin_cannot_be_deleted(factory: Factory, db: Database) -> None:
    # Over HTTP the only caller who could delete the last admin is that admin (refused as a
    # self-deletion), so the guard is exercised at the service layer.
    tenant = factory.tenant()
    admin = factory.user(tenant, Role.admin)
    caller = Principal(tenant.id, ActorType.user, uuid.uuid4(), "someone", Role.admin)
    with db.transaction() as session, pytest.raises(Conflict, match="last active admin"):
        auth_service.delete_user(session, principal=caller, user_id=admin.id)
    with db.transaction(write=False) as session:
        assert session.get(User, admin.id) is not None


def test_concurrent_demotions_leave_an_admin(factory: Factory, db: Database) -> None:
    """Two admins demoting each other at once must not both succeed (zero admins)."""
    tenant = factory.tenant()
    a = factory.user(tenant, Role.admin)
    b = factory.user(tenant, Role.admin)

    def principal(user: TestUser) -> Principal:
        return Principal(tenant.id, ActorType.user, user.id, user.email, Role.admin)

    demote = UserUpdate(role=Role.viewer)
    first = db.new_session(write=True)
    outcome: list[str] = []
    try:
        auth_service.update_user(first, principal=principal(a), user_id=b.id, data=demote)

        def second() -> None:
            try:
                with db.transaction() as session:
                    auth_service.update_user(
                        session, principal=principal(b), user_id=a.id, data=demote
                    )
                outcome.append("demoted")
            except Conflict:
                outcome.append("refused")

        thread = threading.Thread(target=second)
        thread.start()
        # Give the second demotion every chance to run against the uncommitted first one; with
        # the row locks it waits for the commit below whatever this join's outcome.
        thread.join(timeout=1.0)
        first.commit()
    finally:
        first.close()
    thread.join(timeout=60)
    assert not thread.is_alive()

    assert outcome == ["refused"]
    with db.transaction(write=False) as session:
        admins = session.scalars(
            select(User.email).where(
                User.tenant_id == tenant.id, User.role == Role.admin, User.is_active.is_(True)
            )
        ).all()
    assert admins == [a.email]


def test_non_admins_cannot_manage_users(client: TestClient, factory: Factory) -> None:
    tenant = factory.tenant()
    admin = factory.user(tenant, Role.admin)
    users = {
        role: factory.user(tenant, role) for role in (Role.viewer, Role.operator, Role.analyst)
    }
    for role, user in users.items():
        requests = [
            ("GET", USERS, None),
            ("POST", USERS, {"email": "sneaky@example.com", "password": PASSWORD, "role": "admin"}),
            ("GET", f"{USERS}/{admin.id}", None),
            ("PATCH", f"{USERS}/{user.id}", {"role": "admin"}),
            ("DELETE", f"{USERS}/{admin.id}", None),
        ]
        for method, url, payload in requests:
            r = client.request(method, url, json=payload, headers=user.headers)
            body = assert_problem(r, 403, detail_contains="users:manage")
            assert body["type"] == "urn:foresight:problem:forbidden", (role, method, url)
    # Nothing changed.
    listing = client.get(USERS, headers=admin.headers).json()["items"]
    assert {u["email"]: u["role"] for u in listing} == {
        admin.email: "admin",
        **{u.email: role.value for role, u in users.items()},
    }
