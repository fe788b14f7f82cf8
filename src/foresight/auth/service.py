"""Sign-in, tokens, users and device API keys. Services never commit: the edge does."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from foresight.audit import service as audit_service
from foresight.audit.schemas import Actor
from foresight.auth import repository, security
from foresight.auth.rbac import MINIMUM_ROLE, Permission
from foresight.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPage,
    ApiKeyRead,
    Me,
    Principal,
    TokenPair,
    UserCreate,
    UserPage,
    UserRead,
    UserUpdate,
)
from foresight.config import Settings
from foresight.kit.errors import (
    Conflict,
    FieldError,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthenticated,
)
from foresight.kit.pagination import decode_cursor, encode_cursor
from foresight.kit.time import utcnow
from foresight.models import ActorType, ApiKey, Role, User
from foresight.tenants import service as tenants_service

INVALID_CREDENTIALS = "Invalid e-mail or password."
API_KEY_USE_RESOLUTION = timedelta(minutes=5)


# --- sign-in and tokens ---------------------------------------------------------------------


def _issue(settings: Settings, user: User) -> TokenPair:
    access, lifetime = security.create_token(
        settings,
        user_id=user.id,
        tenant_id=user.tenant_id,
        version=user.token_version,
        kind="access",
    )
    refresh, _ = security.create_token(
        settings,
        user_id=user.id,
        tenant_id=user.tenant_id,
        version=user.token_version,
        kind="refresh",
    )
    return TokenPair(access_token=access, refresh_token=refresh, expires_in=lifetime)


def authenticate(session: Session, settings: Settings, *, email: str, password: str) -> TokenPair:
    user = repository.get_user_by_email(session, email)
    ok = security.verify_password(user.password_hash if user else None, password)
    if user is None or not ok or not user.is_active:
        raise Unauthenticated(INVALID_CREDENTIALS)
    if security.needs_rehash(user.password_hash):
        user.password_hash = security.hash_password(password)
    user.last_login_at = utcnow()
    session.flush()
    audit_service.record(
        session,
        actor=_user_actor(user),
        action="auth.login",
        object_type="user",
        object_id=user.id,
    )
    return _issue(settings, user)


def record_failed_login(session: Session, *, email: str) -> None:
    """Failed sign-ins are audited in their own transaction (the request itself fails)."""
    user = repository.get_user_by_email(session, email)
    if user is None:
        return  # no tenant to attribute it to; the access log has it
    audit_service.record(
        session,
        actor=Actor(ActorType.system, None, "auth", user.tenant_id),
        action="auth.login_failed",
        object_type="user",
        object_id=user.id,
        changes={"email": user.email},
    )


def refresh(session: Session, settings: Settings, *, refresh_token: str) -> TokenPair:
    claims = security.decode_token(settings, refresh_token, expected="refresh")
    user = _active_user_for(session, claims)
    return _issue(settings, user)


def _active_user_for(session: Session, claims: security.TokenClaims) -> User:
    user = repository.get_user(session, tenant_id=claims.tenant_id, user_id=claims.user_id)
    if user is None or not user.is_active:
        raise Unauthenticated("The account behind this token no longer exists or is disabled.")
    if user.token_version != claims.version:
        raise Unauthenticated("The token was revoked (password or account changed); sign in.")
    return user


def principal_from_token(session: Session, settings: Settings, token: str) -> Principal:
    claims = security.decode_token(settings, token, expected="access")
    user = _active_user_for(session, claims)
    return Principal(user.tenant_id, ActorType.user, user.id, user.email, user.role)


def principal_from_api_key(session: Session, key: str) -> Principal:
    prefix = security.split_api_key(key)
    api_key = repository.get_api_key_by_prefix(session, prefix) if prefix else None
    if api_key is None or not security.api_key_matches(key, api_key.key_hash):
        raise Unauthenticated("The API key is not valid.")
    if api_key.revoked_at is not None:
        raise Unauthenticated("The API key was revoked.")
    return Principal(
        api_key.tenant_id,
        ActorType.api_key,
        api_key.id,
        f"api-key:{api_key.prefix}" + (f" ({api_key.label})" if api_key.label else ""),
        None,
    )


_last_recorded_use: dict[uuid.UUID, float] = {}


def api_key_use_due(key_id: uuid.UUID) -> bool:
    """Whether this process should record the key's use now (at most every few minutes)."""
    last = _last_recorded_use.get(key_id)
    return last is None or time.monotonic() - last > API_KEY_USE_RESOLUTION.total_seconds()


def record_api_key_use(session: Session, *, key_id: uuid.UUID) -> None:
    # A hint for admins ("is this device still sending?"), not a log: devices send often.
    _last_recorded_use[key_id] = time.monotonic()
    repository.touch_api_key(session, key_id=key_id, now=utcnow())


def me(session: Session, principal: Principal) -> Me:
    user = get_user(session, principal=principal, user_id=principal.id)
    tenant = tenants_service.get(session, principal.tenant_id)
    permissions = [p for p in Permission if principal.has(p)]
    return Me(
        **UserRead.model_validate(user).model_dump(),
        tenant_name=tenant.name,
        permissions=permissions,
    )


def _user_actor(user: User) -> Actor:
    return Actor(ActorType.user, str(user.id), user.email, user.tenant_id)


# --- users ----------------------------------------------------------------------------------


def _user_snapshot(user: User) -> dict[str, object]:
    return {
        "email": user.email,
        "full_name": user.full_name,
        "role": str(user.role),
        "is_active": user.is_active,
    }


def create_user(session: Session, *, tenant_id: uuid.UUID, data: UserCreate, actor: Actor) -> User:
    email = str(data.email).lower()
    if repository.get_user_by_email(session, email) is not None:
        raise Conflict(
            f"A user with e-mail {email!r} already exists.",
            errors=[FieldError(["body", "email"], "already registered", "duplicate")],
        )
    user = User(
        tenant_id=tenant_id,
        email=email,
        full_name=data.full_name,
        role=data.role,
        password_hash=security.hash_password(data.password.get_secret_value()),
        is_active=True,
    )
    repository.add(session, user)
    audit_service.record(
        session,
        actor=actor,
        action="user.create",
        object_type="user",
        object_id=user.id,
        changes=_user_snapshot(user),
    )
    return user


def get_user(session: Session, *, principal: Principal, user_id: uuid.UUID) -> User:
    user = repository.get_user(session, tenant_id=principal.tenant_id, user_id=user_id)
    if user is None:
        raise NotFound("User not found.")
    return user


def list_users(
    session: Session, *, principal: Principal, cursor: str | None, limit: int
) -> UserPage:
    after = str(decode_cursor(cursor, length=1)[0]) if cursor else None
    rows = repository.list_users(
        session, tenant_id=principal.tenant_id, after_email=after, limit=limit + 1
    )
    items = [UserRead.model_validate(u) for u in rows[:limit]]
    next_cursor = encode_cursor([rows[limit - 1].email]) if len(rows) > limit else None
    return UserPage(items=items, next_cursor=next_cursor)


def _guard_last_admin(session: Session, user: User, *, demoting: bool) -> None:
    if (
        demoting
        and user.role is Role.admin
        and user.is_active
        and repository.count_active_admins(session, tenant_id=user.tenant_id) <= 1
    ):
        raise Conflict(
            "This is the tenant's last active admin; promote another user first.",
            errors=[FieldError(["body"], "last active admin", "last_admin")],
        )


def update_user(
    session: Session, *, principal: Principal, user_id: uuid.UUID, data: UserUpdate
) -> User:
    user = get_user(session, principal=principal, user_id=user_id)
    before = _user_snapshot(user)
    demoting = (data.role is not None and data.role is not Role.admin) or data.is_active is False
    _guard_last_admin(session, user, demoting=demoting)
    fields = data.model_dump(exclude_unset=True, exclude={"password"})
    for key, value in fields.items():
        if value is None:
            continue
        setattr(user, key, value)
    revoke = False
    if data.password is not None:
        user.password_hash = security.hash_password(data.password.get_secret_value())
        revoke = True
    if data.is_active is False or (data.role is not None and str(data.role) != before["role"]):
        revoke = True
    if revoke:
        user.token_version += 1  # every token issued before stops working
    session.flush()
    changes = audit_service.diff(before, _user_snapshot(user))
    if data.password is not None:
        changes["password"] = "changed"
    audit_service.record(
        session,
        actor=principal.actor,
        action="user.update",
        object_type="user",
        object_id=user.id,
        changes=changes,
    )
    return user


def delete_user(session: Session, *, principal: Principal, user_id: uuid.UUID) -> None:
    user = get_user(session, principal=principal, user_id=user_id)
    if user.id == principal.id:
        raise Conflict("You cannot delete your own account.")
    _guard_last_admin(session, user, demoting=True)
    snapshot = _user_snapshot(user)
    session.delete(user)
    session.flush()
    audit_service.record(
        session,
        actor=principal.actor,
        action="user.delete",
        object_type="user",
        object_id=user_id,
        changes=snapshot,
    )


# --- API keys -------------------------------------------------------------------------------


def create_api_key(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    data: ApiKeyCreate,
    actor: Actor,
    created_by_id: uuid.UUID | None = None,
) -> ApiKeyCreated:
    key, prefix, key_hash = security.generate_api_key()
    api_key = ApiKey(
        tenant_id=tenant_id,
        label=data.label,
        prefix=prefix,
        key_hash=key_hash,
        created_by_id=created_by_id,
    )
    repository.add(session, api_key)
    audit_service.record(
        session,
        actor=actor,
        action="apikey.create",
        object_type="api_key",
        object_id=api_key.id,
        changes={"label": data.label, "prefix": prefix},
    )
    return ApiKeyCreated(**ApiKeyRead.model_validate(api_key).model_dump(), key=key)


def list_api_keys(
    session: Session, *, principal: Principal, cursor: str | None, limit: int
) -> ApiKeyPage:
    after = None
    if cursor:
        created, key_id = decode_cursor(cursor, length=2)
        try:
            after = (datetime.fromisoformat(str(created)), uuid.UUID(str(key_id)))
        except ValueError as exc:
            raise InvalidInput(
                "The pagination cursor is malformed.",
                errors=[FieldError(["query", "cursor"], "malformed cursor", "cursor_invalid")],
            ) from exc
    rows = repository.list_api_keys(
        session, tenant_id=principal.tenant_id, after=after, limit=limit + 1
    )
    items = [ApiKeyRead.model_validate(k) for k in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    next_cursor = encode_cursor([last.created_at.isoformat(), str(last.id)]) if last else None
    return ApiKeyPage(items=items, next_cursor=next_cursor)


def revoke_api_key(session: Session, *, principal: Principal, key_id: uuid.UUID) -> ApiKey:
    api_key = repository.get_api_key(session, tenant_id=principal.tenant_id, key_id=key_id)
    if api_key is None:
        raise NotFound("API key not found.")
    if api_key.revoked_at is None:
        api_key.revoked_at = utcnow()
        session.flush()
        audit_service.record(
            session,
            actor=principal.actor,
            action="apikey.revoke",
            object_type="api_key",
            object_id=api_key.id,
            changes={"prefix": api_key.prefix},
        )
    return api_key


def require(principal: Principal, permission: Permission) -> None:
    if not principal.has(permission):
        if principal.kind is ActorType.api_key:
            raise Forbidden("Device API keys may only ingest readings; sign in as a user.")
        raise Forbidden(
            f"This needs the {permission.value!r} permission "
            f"(role {MINIMUM_ROLE[permission].value} or above); you are {principal.role}."
        )
