"""Sign-in (POST /auth/token), refresh and /auth/me."""

from __future__ import annotations

import jwt
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from foresight.auth import security
from foresight.auth.rbac import Permission
from foresight.auth.service import INVALID_CREDENTIALS
from foresight.config import Settings
from foresight.kit.db import Database
from foresight.models import Role, User
from tests.auth.helpers import (
    TOKEN_URL,
    assert_problem,
    assert_unauthenticated,
    audit_entries,
    audit_row_count,
    bearer,
    error_locs,
)
from tests.factories import PASSWORD, Factory


def _claims(settings: Settings, token: str) -> dict[str, object]:
    decoded: dict[str, object] = jwt.decode(
        token,
        settings.secret_key.get_secret_value(),
        algorithms=["HS256"],
        issuer=settings.jwt_issuer,
    )
    return decoded


def test_sign_in_returns_access_and_refresh_tokens(
    client: TestClient, factory: Factory, settings: Settings, db: Database
) -> None:
    tenant = factory.tenant()
    user = factory.user(tenant, Role.analyst)

    r = client.post(TOKEN_URL, json={"email": user.email, "password": PASSWORD})

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.access_token_minutes * 60
    access = _claims(settings, body["access_token"])
    refresh = _claims(settings, body["refresh_token"])
    assert access["typ"] == "access" and refresh["typ"] == "refresh"
    assert access["sub"] == refresh["sub"] == str(user.id)
    assert access["tid"] == refresh["tid"] == str(tenant.id)
    me = client.get("/api/v1/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json()["id"] == str(user.id)
    assert me.json()["last_login_at"] is not None
    # The sign-in itself is audited.
    last = audit_entries(db, tenant.id)[-1]
    assert (last.action, last.object_id, last.actor_id) == (
        "auth.login",
        str(user.id),
        str(user.id),
    )


def test_sign_in_ignores_e_mail_case(client: TestClient, factory: Factory) -> None:
    user = factory.user(factory.tenant())
    r = client.post(TOKEN_URL, json={"email": user.email.upper(), "password": PASSWORD})
    assert r.status_code == 200, r.text


def test_failed_sign_ins_are_indistinguishable(client: TestClient, factory: Factory) -> None:
    tenant = factory.tenant()
    user = factory.user(tenant, Role.viewer)
    disabled = factory.user(tenant, Role.viewer, is_active=False)

    attempts = {
        "wrong password": {"email": user.email, "password": PASSWORD + "x"},
        "unknown e-mail": {"email": "nobody@example.com", "password": PASSWORD},
        "disabled user": {"email": disabled.email, "password": PASSWORD},
    }
    details = set()
    for label, payload in attempts.items():
        r = client.post(TOKEN_URL, json=payload)
        body = assert_unauthenticated(r)
        assert "access_token" not in body, label
        details.add(body["detail"])
    assert details == {INVALID_CREDENTIALS}


def test_failed_sign_in_for_known_e_mail_is_audited(
    client: TestClient, factory: Factory, db: Database
) -> None:
    tenant = factory.tenant()
    user = factory.user(tenant, Role.viewer)
    disabled = factory.user(tenant, Role.viewer, is_active=False)
    before = audit_entries(db, tenant.id)

    assert client.post(TOKEN_URL, json={"email": user.email, "password": "nope-nope"}).is_error
    assert client.post(TOKEN_URL, json={"email": disabled.email, "password": PASSWORD}).is_error

    new = audit_entries(db, tenant.id)[len(before) :]
    assert [(e.action, e.object_id) for e in new] == [
        ("auth.login_failed", str(user.id)),
        ("auth.login_failed", str(disabled.id)),
    ]
    assert new[0].changes == {"email": user.email}
    assert new[0].tenant_id == tenant.id
    assert str(new[0].actor_type) == "system"
    # The failed attempt never records the password that was tried.
    assert all("nope-nope" not in str(e.changes) for e in new)


def test_failed_sign_in_for_unknown_e_mail_writes_nothing(
    client: TestClient, factory: Factory, db: Database
) -> None:
    factory.tenant()
    before = audit_row_count(db)
    r = client.post(TOKEN_URL, json={"email": "ghost@example.com", "password": PASSWORD})
    assert_unauthenticated(r)
    assert audit_row_count(db) == before


def test_malformed_json_is_a_400_problem(client: TestClient) -> None:
    r = client.post(
        TOKEN_URL,
        content=b'{"email": "a@example.com", "password": ',
        headers={"Content-Type": "application/json"},
    )
    body = assert_problem(r, 400, detail_contains="not valid JSON")
    assert body["type"] == "urn:foresight:problem:malformed-json"
    assert body["title"] == "Malformed JSON"


def test_unknown_field_is_a_422_naming_it(client: TestClient, factory: Factory) -> None:
    user = factory.user(factory.tenant())
    r = client.post(
        TOKEN_URL, json={"email": user.email, "password": PASSWORD, "tenant": "someone-else"}
    )
    body = assert_problem(r, 422, detail_contains="body.tenant")
    assert ["body", "tenant"] in error_locs(body)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": "a@example.com"}, "password"),
        ({"email": "not-an-e-mail", "password": "x"}, "email"),
        ({"email": "a@example.com", "password": ""}, "password"),
    ],
)
def test_invalid_credentials_payload_is_a_422(
    client: TestClient, payload: dict[str, str], field: str
) -> None:
    body = assert_problem(client.post(TOKEN_URL, json=payload), 422)
    assert ["body", field] in error_locs(body)


def _sign_in(client: TestClient, email: str) -> dict[str, str]:
    r = client.post(TOKEN_URL, json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    tokens: dict[str, str] = r.json()
    return tokens


def test_refresh_issues_a_working_pair(
    client: TestClient, factory: Factory, settings: Settings
) -> None:
    user = factory.user(factory.tenant(), Role.viewer)
    tokens = _sign_in(client, user.email)

    r = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})

    assert r.status_code == 200, r.text
    pair = r.json()
    assert _claims(settings, pair["access_token"])["typ"] == "access"
    assert _claims(settings, pair["refresh_token"])["typ"] == "refresh"
    me = client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))
    assert me.status_code == 200 and me.json()["id"] == str(user.id)


def test_refresh_refuses_an_access_token(client: TestClient, factory: Factory) -> None:
    user = factory.user(factory.tenant(), Role.viewer)
    r = client.post("/api/v1/auth/refresh", json={"refresh_token": user.token})
    assert_unauthenticated(r, detail_contains="refresh token is required")


def test_refresh_token_is_not_a_bearer_token(client: TestClient, factory: Factory) -> None:
    user = factory.user(factory.tenant(), Role.viewer)
    tokens = _sign_in(client, user.email)
    r = client.get("/api/v1/auth/me", headers=bearer(tokens["refresh_token"]))
    assert_unauthenticated(r, detail_contains="access token is required")


def test_refresh_fails_once_the_account_is_disabled(client: TestClient, factory: Factory) -> None:
    tenant = factory.tenant()
    admin = factory.user(tenant, Role.admin)
    user = factory.user(tenant, Role.viewer)
    tokens = _sign_in(client, user.email)
    r = client.patch(f"/api/v1/users/{user.id}", json={"is_active": False}, headers=admin.headers)
    assert r.status_code == 200, r.text

    r = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_unauthenticated(r)


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (Role.viewer, {Permission.read}),
        (
            Role.operator,
            {
                Permission.read,
                Permission.ingest,
                Permission.alerts_ack,
                Permission.maintenance_write,
            },
        ),
        (Role.admin, set(Permission)),
    ],
)
def test_me_shows_tenant_and_permissions(
    client: TestClient, factory: Factory, role: Role, expected: set[Permission]
) -> None:
    tenant = factory.tenant()
    user = factory.user(tenant, role, full_name="Ada Lovelace")

    r = client.get("/api/v1/auth/me", headers=user.headers)

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tenant_name"] == tenant.name
    assert body["tenant_id"] == str(tenant.id)
    assert body["email"] == user.email
    assert body["role"] == role.value
    assert body["full_name"] == "Ada Lovelace"
    assert isinstance(body["permissions"], list)
    assert set(body["permissions"]) == {p.value for p in expected}
    assert not {"password", "password_hash", "token_version"} & set(body)


def test_outdated_password_hash_is_upgraded_on_sign_in(
    client: TestClient, factory: Factory, db: Database
) -> None:
    old_hasher = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    user = factory.user(factory.tenant(), Role.viewer)
    with db.transaction() as session:
        row = session.get(User, user.id)
        assert row is not None
        row.password_hash = old_hasher.hash(PASSWORD)

    r = client.post(TOKEN_URL, json={"email": user.email, "password": PASSWORD})

    assert r.status_code == 200, r.text
    with db.transaction(write=False) as session:
        row = session.get(User, user.id)
        assert row is not None
        assert row.password_hash.startswith("$argon2id$")
        assert not security.needs_rehash(row.password_hash)
        assert security.verify_password(row.password_hash, PASSWORD)
