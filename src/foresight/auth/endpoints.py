from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from foresight.auth import service
from foresight.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPage,
    ApiKeyRead,
    Me,
    RefreshRequest,
    TokenPair,
    TokenRequest,
    UserCreate,
    UserPage,
    UserRead,
    UserUpdate,
)
from foresight.kit.errors import Unauthenticated
from foresight.web.deps import (
    KeyAdmin,
    Reader,
    SessionDep,
    SettingsDep,
    UserAdmin,
)

router = APIRouter()
Limit = Annotated[int, Query(ge=1, le=500, description="Page size")]
Cursor = Annotated[str | None, Query(max_length=512, description="next_cursor of the last page")]


@router.post("/auth/token", response_model=TokenPair, tags=["auth"])
def issue_token(body: TokenRequest, session: SessionDep, settings: SettingsDep) -> TokenPair:
    """Sign in with e-mail and password; returns an access and a refresh token."""
    try:
        return service.authenticate(
            session, settings, email=str(body.email), password=body.password.get_secret_value()
        )
    except Unauthenticated:
        # The failed attempt is audited and kept even though the request fails.
        session.rollback()
        service.record_failed_login(session, email=str(body.email))
        session.commit()
        raise


@router.post("/auth/refresh", response_model=TokenPair, tags=["auth"])
def refresh_token(body: RefreshRequest, session: SessionDep, settings: SettingsDep) -> TokenPair:
    """Trade a refresh token for a new token pair."""
    return service.refresh(session, settings, refresh_token=body.refresh_token)


@router.get("/auth/me", response_model=Me, tags=["auth"])
def who_am_i(principal: Reader, session: SessionDep) -> Me:
    return service.me(session, principal)


@router.get("/users", response_model=UserPage, tags=["users"])
def list_users(
    principal: UserAdmin, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> UserPage:
    return service.list_users(session, principal=principal, cursor=cursor, limit=limit)


@router.post("/users", response_model=UserRead, status_code=status.HTTP_201_CREATED, tags=["users"])
def create_user(body: UserCreate, principal: UserAdmin, session: SessionDep) -> UserRead:
    user = service.create_user(
        session, tenant_id=principal.tenant_id, data=body, actor=principal.actor
    )
    return UserRead.model_validate(user)


@router.get("/users/{user_id}", response_model=UserRead, tags=["users"])
def get_user(user_id: uuid.UUID, principal: UserAdmin, session: SessionDep) -> UserRead:
    return UserRead.model_validate(service.get_user(session, principal=principal, user_id=user_id))


@router.patch("/users/{user_id}", response_model=UserRead, tags=["users"])
def update_user(
    user_id: uuid.UUID, body: UserUpdate, principal: UserAdmin, session: SessionDep
) -> UserRead:
    user = service.update_user(session, principal=principal, user_id=user_id, data=body)
    return UserRead.model_validate(user)


@router.delete("/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["users"])
def delete_user(user_id: uuid.UUID, principal: UserAdmin, session: SessionDep) -> Response:
    service.delete_user(session, principal=principal, user_id=user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/api-keys", response_model=ApiKeyPage, tags=["api-keys"])
def list_api_keys(
    principal: KeyAdmin, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> ApiKeyPage:
    return service.list_api_keys(session, principal=principal, cursor=cursor, limit=limit)


@router.post(
    "/api-keys",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    tags=["api-keys"],
)
def create_api_key(body: ApiKeyCreate, principal: KeyAdmin, session: SessionDep) -> ApiKeyCreated:
    """Create a device key (ingest only). The full key is in this response and never again."""
    return service.create_api_key(
        session,
        tenant_id=principal.tenant_id,
        data=body,
        actor=principal.actor,
        created_by_id=principal.id,
    )


@router.delete("/api-keys/{key_id}", response_model=ApiKeyRead, tags=["api-keys"])
def revoke_api_key(key_id: uuid.UUID, principal: KeyAdmin, session: SessionDep) -> ApiKeyRead:
    """Revoke a key; devices using it are refused from the next request on."""
    return ApiKeyRead.model_validate(
        service.revoke_api_key(session, principal=principal, key_id=key_id)
    )
