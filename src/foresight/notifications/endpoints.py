from __future__ import annotations

import uuid
from http import HTTPStatus
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, Security
from fastapi.security import HTTPAuthorizationCredentials

from foresight.auth import service as auth_service
from foresight.auth.rbac import Permission
from foresight.auth.schemas import Principal
from foresight.kit.db import Database
from foresight.models import DeliveryStatus
from foresight.notifications import service
from foresight.notifications.dispatcher import DispatchPolicy
from foresight.notifications.schemas import (
    ChannelCreate,
    ChannelPage,
    ChannelRead,
    ChannelTestResult,
    ChannelUpdate,
    DeliveryPage,
)
from foresight.notifications.senders import SenderOptions, default_senders
from foresight.web.deps import (
    DatabaseDep,
    SessionDep,
    SettingsAdmin,
    SettingsDep,
    api_key_scheme,
    bearer_scheme,
    get_principal,
)

router = APIRouter(tags=["notifications"])
Limit = Annotated[int, Query(ge=1, le=500, description="Page size")]
Cursor = Annotated[str | None, Query(max_length=512, description="next_cursor of the last page")]
BASE = "/notification-channels"
StatusFilter = Annotated[DeliveryStatus | None, Query(description="Only deliveries in this status")]


def _admin_without_session(
    request: Request,
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    api_key: Annotated[str | None, Security(api_key_scheme)],
) -> Principal:
    """The caller, checked in a short read-only transaction: the test route holds no request
    session while it waits for the receiver (on SQLite it would block every writer)."""
    db: Database = request.app.state.db
    with db.transaction(write=False) as session:
        principal = get_principal(session, settings, bearer, api_key)
        auth_service.require(principal, Permission.settings_manage)
    return principal


SettingsAdminNoSession = Annotated[Principal, Depends(_admin_without_session)]


@router.get(BASE, response_model=ChannelPage)
def list_channels(
    principal: SettingsAdmin, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> ChannelPage:
    """The tenant's notification channels, by name. Secrets are never shown."""
    return service.list_channels(session, tenant_id=principal.tenant_id, cursor=cursor, limit=limit)


@router.post(BASE, response_model=ChannelRead, status_code=HTTPStatus.CREATED)
def create_channel(
    body: ChannelCreate, principal: SettingsAdmin, session: SessionDep
) -> ChannelRead:
    """Add a channel: Slack (incoming webhook or chat.postMessage), webhook or e-mail."""
    channel = service.create_channel(session, principal=principal, data=body)
    return service.to_read(channel)


@router.get(BASE + "/{channel_id}", response_model=ChannelRead)
def get_channel(
    channel_id: uuid.UUID, principal: SettingsAdmin, session: SessionDep
) -> ChannelRead:
    channel = service.get_channel(session, tenant_id=principal.tenant_id, channel_id=channel_id)
    return service.to_read(channel)


@router.patch(BASE + "/{channel_id}", response_model=ChannelRead)
def update_channel(
    channel_id: uuid.UUID, body: ChannelUpdate, principal: SettingsAdmin, session: SessionDep
) -> ChannelRead:
    """Change some fields; ``config`` merges into the current one (secrets not sent are kept)."""
    channel = service.update_channel(session, principal=principal, channel_id=channel_id, data=body)
    return service.to_read(channel)


@router.delete(BASE + "/{channel_id}", status_code=HTTPStatus.NO_CONTENT)
def delete_channel(
    channel_id: uuid.UUID, principal: SettingsAdmin, session: SessionDep
) -> Response:
    """Delete the channel with its pending deliveries and delivery log."""
    service.delete_channel(session, principal=principal, channel_id=channel_id)
    return Response(status_code=HTTPStatus.NO_CONTENT)


@router.post(BASE + "/{channel_id}/test", response_model=ChannelTestResult)
def test_channel(
    channel_id: uuid.UUID, principal: SettingsAdminNoSession, settings: SettingsDep, db: DatabaseDep
) -> ChannelTestResult:
    """Send a test message now and say how it went (200 either way: ``ok`` tells). It is logged
    as a delivery of event ``test``; quiet hours and the rate limit do not apply."""
    options = SenderOptions(
        timeout_s=settings.notify_timeout_s, slack_api_base_url=settings.slack_api_base_url
    )
    return service.send_test(
        db,
        principal=principal,
        channel_id=channel_id,
        senders=default_senders(options),
        policy=DispatchPolicy.from_settings(settings),
    )


@router.get(BASE + "/{channel_id}/deliveries", response_model=DeliveryPage)
def list_deliveries(
    channel_id: uuid.UUID,
    principal: SettingsAdmin,
    session: SessionDep,
    status: StatusFilter = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> DeliveryPage:
    """The delivery log, newest first: each delivery (its id is the Idempotency-Key) with its
    attempts, status codes and errors; ``dead_lettered`` once given up."""
    return service.list_deliveries(
        session,
        tenant_id=principal.tenant_id,
        channel_id=channel_id,
        status=status,
        cursor=cursor,
        limit=limit,
    )
