"""Password hashing (argon2), JWTs and device API keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from foresight.config import Settings
from foresight.kit.errors import Unauthenticated
from foresight.kit.time import utcnow

# OWASP's argon2id recommendation (19 MiB, 2 passes, 1 lane): ~40 ms a hash on a small server
# core. argon2-cffi's default (64 MiB, 3 passes, 4 lanes) took ~1 s here, which turns sign-in
# into a denial-of-service lever. Hashes record their parameters, so old ones still verify and
# are re-hashed on the next sign-in (see needs_rehash).
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verifying against this keeps unknown e-mails as slow as wrong passwords (no user enumeration).
_DUMMY_HASH = _hasher.hash("foresight-timing-equaliser")

TokenType = Literal["access", "refresh"]
API_KEY_PREFIX = "fsk_"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


@dataclass(frozen=True)
class TokenClaims:
    user_id: uuid.UUID
    tenant_id: uuid.UUID
    token_type: TokenType
    version: int


def create_token(
    settings: Settings, *, user_id: uuid.UUID, tenant_id: uuid.UUID, version: int, kind: TokenType
) -> tuple[str, int]:
    """Returns the signed token and its lifetime in seconds."""
    lifetime = (
        timedelta(minutes=settings.access_token_minutes)
        if kind == "access"
        else timedelta(days=settings.refresh_token_days)
    )
    now = utcnow()
    payload: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "sub": str(user_id),
        "tid": str(tenant_id),
        "typ": kind,
        "ver": version,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(payload, settings.secret_key.get_secret_value(), settings.jwt_algorithm)
    return token, int(lifetime.total_seconds())


def decode_token(settings: Settings, token: str, *, expected: TokenType) -> TokenClaims:
    try:
        payload = jwt.decode(
            token,
            settings.secret_key.get_secret_value(),
            algorithms=[settings.jwt_algorithm],
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "iat", "sub", "tid", "typ", "ver"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthenticated("The token has expired; sign in or refresh it.") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated(f"The token is invalid: {exc}.") from exc
    if payload.get("typ") != expected:
        raise Unauthenticated(f"A {expected} token is required here.")
    try:
        return TokenClaims(
            user_id=uuid.UUID(str(payload["sub"])),
            tenant_id=uuid.UUID(str(payload["tid"])),
            token_type=expected,
            version=int(payload["ver"]),
        )
    except (ValueError, TypeError) as exc:
        raise Unauthenticated("The token's claims are malformed.") from exc


def generate_api_key() -> tuple[str, str, str]:
    """A new key as (full key, public prefix, sha256 hex). The full key is shown once."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    key = f"{API_KEY_PREFIX}{prefix}_{secret}"
    return key, prefix, hash_api_key(key)


def hash_api_key(key: str) -> str:
    # API keys carry 256 bits of entropy, so a fast hash is safe (unlike passwords).
    return hashlib.sha256(key.encode()).hexdigest()


def split_api_key(key: str) -> str | None:
    """The prefix of a well-formed key, or None."""
    if not key.startswith(API_KEY_PREFIX):
        return None
    rest = key[len(API_KEY_PREFIX) :]
    prefix, sep, secret = rest.partition("_")
    if not sep or len(prefix) != 12 or not secret:
        return None
    return prefix


def api_key_matches(key: str, key_hash: str) -> bool:
    return hmac.compare_digest(hash_api_key(key), key_hash)
