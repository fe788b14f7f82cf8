"""Bearer tokens: every bad or revoked token is a 401 problem with WWW-Authenticate."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt
from fastapi.testclient import TestClient

from foresight.config import Settings
from foresight.kit.time import utcnow
from foresight.models import Role
from tests.auth.helpers import TOKEN_URL, assert_unauthenticated, bearer
from tests.factories import PASSWORD, Factory, TestUser

ME = "/api/v1/auth/me"


def _payload(settings: Settings, user: TestUser, **overrides: Any) -> dict[str, Any]:
    now = int(utcnow().timestamp())
    payload: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "sub": str(user.id),
        "tid": str(user.tenant_id),
        "typ": "access",
        "ver": 0,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def _sign(settings: Settings, payload: dict[str, Any], secret: str | None = None) -> str:
    return jwt.encode(payload, secret or settings.secret_key.get_secret_value(), "HS256")


def _unsigned(payload: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


TokenMaker = Callable[[Settings, TestUser], str]

BAD_TOKENS: dict[str, tuple[TokenMaker, str | None]] = {
    "expired": (
        lambda s, u: _sign(
            s,
            _payload(
                s,
                u,
                iat=int((utcnow() - timedelta(hours=2)).timestamp()),
                nbf=int((utcnow() - timedelta(hours=2)).timestamp()),
                exp=int((utcnow() - timedelta(hours=1)).timestamp()),
            ),
        ),
        "expired",
    ),
    "forged signature": (
        lambda s, u: _sign(s, _payload(s, u), secret="another-secret-of-plenty-length-0123456789"),
        "invalid",
    ),
    "alg none": (lambda s, u: _unsigned(_payload(s, u)), "invalid"),
    "garbage": (lambda s, u: "this-is-not-a-jwt", "invalid"),
    "truncated": (lambda s, u: _sign(s, _payload(s, u))[:-5], "invalid"),
    "wrong issuer": (lambda s, u: _sign(s, _payload(s, u, iss="someone-else")), "invalid"),
    "no expiry": (lambda s, u: _sign(s, _payload(s, u, exp=None)), "invalid"),
    "not yet valid": (
        lambda s, u: _sign(s, _payload(s, u, nbf=int(utcnow().timestamp()) + 3600)),
        "invalid",
    ),
    "subject not a uuid": (lambda s, u: _sign(s, _payload(s, u, sub="admin")), "malformed"),
    "unknown subject": (lambda s, u: _sign(s, _payload(s, u, sub=str(uuid.uuid4()))), None),
    "other tenant": (lambda s, u: _sign(s, _payload(s, u, tid=str(uuid.uuid4()))), None),
    "stale version": (lambda s, u: _sign(s, _payload(s, u, ver=7)), "revoked"),
    "refresh type": (lambda s, u: _sign(s, _payload(s, u, typ="refresh")), "access token"),
}


def test_well_formed_token_is_accepted(
    client: TestClient, factory: Factory, settings: Settings
) -> None:
    # The control for the table below: the same construction, unaltered, authenticates.
    user = factory.user(factory.tenant(), Role.viewer)
    r = client.get(ME, headers=bearer(_sign(settings, _payload(settings, user))))
    assert r.status_code == 200, r.text
    assert r.json()["id"] == str(user.id)


def test_bad_tokens_are_refused(client: TestClient, factory: Factory, settings: Settings) -> None:
    # One user for the whole table keeps this fast; each case names itself when it fails.
    user = factory.user(factory.tenant(), Role.admin)
    for case, (make, detail) in BAD_TOKENS.items():
        token = make(settings, user)
        for r in (
            client.get(ME, headers=bearer(token)),
            # A write route too (it opens a different kind of session on SQLite).
            client.post("/api/v1/api-keys", json={"label": case}, headers=bearer(token)),
        ):
            assert r.status_code == 401, (case, r.text)
            assert r.headers["content-type"] == "application/problem+json", case
            assert r.headers.get("www-authenticate") == "Bearer", case
            if detail is not None:
                assert detail in r.json()["detail"].lower(), (case, r.json())
    # Nothing was created by the refused writes.
    r = client.get("/api/v1/api-keys", headers=user.headers)
    assert r.status_code == 200 and r.json()["items"] == []


def test_missing_credentials(client: TestClient) -> None:
    assert_unauthenticated(client.get(ME), detail_contains="Authentication required")
    assert_unauthenticated(client.get(ME, headers={"Authorization": "Bearer "}))
    assert_unauthenticated(client.get(ME, headers={"Authorization": "Basic dXNlcjpwYXNz"}))


def test_token_of_a_deleted_user_is_refused(client: TestClient, factory: Factory) -> None:
    tenant = factory.tenant()
    admin = factory.user(tenant, Role.admin)
    victim = factory.user(tenant, Role.analyst)
    assert client.get(ME, headers=victim.headers).status_code == 200

    assert client.delete(f"/api/v1/users/{victim.id}", headers=admin.headers).status_code == 204

    assert_unauthenticated(client.get(ME, headers=victim.headers), detail_contains="no longer")


def test_password_change_revokes_access_and_refresh_tokens(
    client: TestClient, factory: Factory
) -> None:
    user = factory.user(factory.tenant(), Role.admin)
    old = client.post(TOKEN_URL, json={"email": user.email, "password": PASSWORD}).json()
    assert client.get(ME, headers=bearer(old["access_token"])).status_code == 200

    r = client.patch(
        f"/api/v1/users/{user.id}", json={"password": "a-brand-new-passw0rd"}, headers=user.headers
    )
    assert r.status_code == 200, r.text

    assert_unauthenticated(client.get(ME, headers=user.headers), detail_contains="revoked")
    assert_unauthenticated(client.get(ME, headers=bearer(old["access_token"])))
    r = client.post("/api/v1/auth/refresh", json={"refresh_token": old["refresh_token"]})
    assert_unauthenticated(r, detail_contains="revoked")
    # A fresh sign-in with the new password works.
    r = client.post(TOKEN_URL, json={"email": user.email, "password": "a-brand-new-passw0rd"})
    assert r.status_code == 200, r.text
    assert client.get(ME, headers=bearer(r.json()["access_token"])).status_code == 200
