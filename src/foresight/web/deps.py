"""FastAPI dependencies: the unit of work, the caller, and permission checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Response, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy.orm import Session

from foresight.auth import service as auth_service
from foresight.auth.rbac import Permission
from foresight.auth.schemas import Principal
from foresight.config import Settings
from foresight.kit.db import Database
from foresight.kit.errors import Unauthenticated
from foresight.models import ActorType

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

bearer_scheme = HTTPBearer(auto_error=False, description="Access token from /api/v1/auth/token")
api_key_scheme = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="Device API key (ingest only)"
)
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)]
ApiKeyCredentials = Annotated[str | None, Security(api_key_scheme)]


# Dependencies that never block are `async def`: FastAPI runs a plain `def` dependency on the
# thread pool, a hop that costs more than what they do.
async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


F = TypeVar("F", bound=Callable[..., Any])


def reads_only(endpoint: F) -> F:
    """Mark a POST endpoint whose request transaction only reads (it writes, if at all, in short
    transactions of its own): on SQLite its session then does not hold the write lock while it
    works (e.g. scoring a thousand assets), so ingestion is not kept waiting. It reads from one
    snapshot (``Database.transaction(snapshot=True)``): its many reads see one state."""
    endpoint.__foresight_reads_only__ = True  # type: ignore[attr-defined]
    return endpoint


def get_session(
    request: Request, db: Annotated[Database, Depends(get_database)]
) -> Iterator[Session]:
    """One transaction per request, committed when the endpoint returns without error."""
    endpoint = request.scope.get("endpoint")
    reads_only_ = getattr(endpoint, "__foresight_reads_only__", False)
    write = request.method not in _READ_METHODS and not reads_only_
    with db.transaction(write=write, snapshot=reads_only_) as session:
        yield session


# scope="function": the commit runs when the endpoint returns, before the response is sent,
# so a 2xx always means committed (a failed commit becomes an error response instead).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_principal(
    session: SessionDep,
    settings: SettingsDep,
    bearer: BearerCredentials,
    api_key: ApiKeyCredentials,
) -> Principal:
    if bearer is not None and bearer.credentials:
        return auth_service.principal_from_token(session, settings, bearer.credentials)
    if api_key:
        return auth_service.principal_from_api_key(session, api_key)
    raise Unauthenticated("Authentication required: send 'Authorization: Bearer <token>'.")


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(permission: Permission) -> Callable[[Principal], Awaitable[Principal]]:
    async def dependency(principal: PrincipalDep) -> Principal:
        auth_service.require(principal, permission)
        return principal

    dependency.__name__ = f"require_{permission.name}"
    return dependency


Reader = Annotated[Principal, Depends(require(Permission.read))]
MaintenanceWriter = Annotated[Principal, Depends(require(Permission.maintenance_write))]
AssetWriter = Annotated[Principal, Depends(require(Permission.assets_write))]
UserAdmin = Annotated[Principal, Depends(require(Permission.users_manage))]
KeyAdmin = Annotated[Principal, Depends(require(Permission.apikeys_manage))]
SettingsAdmin = Annotated[Principal, Depends(require(Permission.settings_manage))]
AuditReader = Annotated[Principal, Depends(require(Permission.audit_read))]
RuleWriter = Annotated[Principal, Depends(require(Permission.rules_write))]
ModelWriter = Annotated[Principal, Depends(require(Permission.models_write))]
AlertActor = Annotated[Principal, Depends(require(Permission.alerts_ack))]


def get_ingest_principal(
    request: Request,
    settings: SettingsDep,
    bearer: BearerCredentials,
    api_key: ApiKeyCredentials,
) -> Principal:
    """The ingest routes' caller, from a short read-only transaction of its own.

    Ingest endpoints hold no session while they wait for the writer (on SQLite a writer session
    held by the request would block the very writer it waits for).
    """
    db: Database = request.app.state.db
    with db.transaction(write=False) as session:
        principal = get_principal(session, settings, bearer, api_key)
        auth_service.require(principal, Permission.ingest)
    if principal.kind is ActorType.api_key and auth_service.api_key_use_due(principal.id):
        with db.transaction() as session:
            auth_service.record_api_key_use(session, key_id=principal.id)
    return principal


Ingestor = Annotated[Principal, Depends(get_ingest_principal)]
DatabaseDep = Annotated[Database, Depends(get_database)]


@dataclass(frozen=True)
class Caller:
    """What a hot endpoint needs to do all of its blocking work in one thread-pool call: the
    database, the settings and the credentials sent (not yet checked).

    FastAPI runs each plain `def` dependency and endpoint on the thread pool, and the session
    dependency's opening and closing too: five hand-offs between the event loop and a worker
    for one request, each a wake-up of another thread (about 2 ms of a 4 ms request on a busy
    2-core machine). An `async def` endpoint taking a ``CallerDep`` makes it one
    (``run_in_threadpool``), with the same checks in the same order."""

    db: Database
    settings: Settings
    bearer: HTTPAuthorizationCredentials | None
    api_key: str | None

    def authenticate(self, session: Session, permission: Permission) -> Principal:
        """As ``require(permission)``: 401 without valid credentials, 403 without the right."""
        principal = get_principal(session, self.settings, self.bearer, self.api_key)
        auth_service.require(principal, permission)
        return principal


async def get_caller(
    request: Request, bearer: BearerCredentials, api_key: ApiKeyCredentials
) -> Caller:
    return Caller(request.app.state.db, request.app.state.settings, bearer, api_key)


CallerDep = Annotated[Caller, Depends(get_caller)]


def json_response(model: BaseModel) -> Response:
    """``model`` as the JSON body FastAPI would send for it as the route's response model (an
    endpoint returning a Response skips FastAPI's second validation and its thread hop)."""
    return Response(model.model_dump_json(), media_type="application/json")
