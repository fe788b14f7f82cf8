from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from foresight.auth.schemas import Principal
from foresight.kit.db import Database
from foresight.kit.time import utcnow
from foresight.models import (
    ActorType,
    Alert,
    AlertStatus,
    Asset,
    ChannelKind,
    NotificationAttempt,
    NotificationChannel,
    NotificationOutbox,
    Role,
    Severity,
)
from foresight.notifications import service
from foresight.notifications.dispatcher import Dispatcher, DispatchPolicy
from foresight.notifications.outbox import enqueue
from foresight.notifications.schemas import ChannelCreate
from foresight.notifications.senders import SenderOptions
from tests.notifications.servers import (
    SLACK_CHANNEL,
    SLACK_TOKEN,
    SLACK_WEBHOOK_PATH,
    SMTP_PASSWORD,
    SMTP_USER,
    WEBHOOK_PATH,
    WEBHOOK_SECRET,
    MailServer,
    Receiver,
)


class Clock:
    """Real time plus an offset that tests move forward: never behind the rows' timestamps."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)

    def set(self, at: datetime) -> None:
        """Jump to ``at`` (which must be in the future)."""
        assert at > utcnow()
        self.offset = at - utcnow()


@dataclass
class Env:
    db: Database
    tenant_id: uuid.UUID
    pump: Asset
    motor: Asset

    @property
    def principal(self) -> Principal:
        return Principal(self.tenant_id, ActorType.user, uuid.uuid4(), "test-admin", Role.admin)


def make_asset(db: Database, tenant_id: uuid.UUID, tag: str, type_: str) -> Asset:
    with db.transaction() as session:
        asset = Asset(tenant_id=tenant_id, tag=tag, name=f"{tag} name", type=type_)
        session.add(asset)
        session.flush()
        return asset


def channel_config(kind: ChannelKind, receiver: Receiver, mail: MailServer) -> dict[str, Any]:
    if kind is ChannelKind.slack_webhook:
        return {"url": receiver.base_url + SLACK_WEBHOOK_PATH}
    if kind is ChannelKind.slack_api:
        return {"token": SLACK_TOKEN, "channel": SLACK_CHANNEL}
    if kind is ChannelKind.webhook:
        return {"url": receiver.base_url + WEBHOOK_PATH, "secret": WEBHOOK_SECRET}
    return {
        "host": "127.0.0.1",
        "port": mail.port,
        "starttls": False,
        "username": SMTP_USER,
        "password": SMTP_PASSWORD,
        "from_address": "foresight@example.com",
        "to": ["oncall@example.com", "lead@example.com"],
    }


def make_channel(
    env: Env, kind: ChannelKind, config: dict[str, Any], **fields: Any
) -> NotificationChannel:
    data = ChannelCreate.model_validate(
        {"name": f"ch-{uuid.uuid4().hex[:8]}", "kind": kind, "config": config, **fields}
    )
    with env.db.transaction() as session:
        return service.create_channel(session, principal=env.principal, data=data)


def fire(
    env: Env,
    *,
    asset: Asset | None = None,
    severity: Severity = Severity.critical,
    kind: str = "alert.opened",
    title: str = "Bearing temperature high",
) -> uuid.UUID:
    """Open an alert and call the hook in the same transaction, as detection does."""
    asset = asset or env.pump
    now = utcnow()
    with env.db.transaction() as session:
        alert = Alert(
            tenant_id=env.tenant_id,
            asset_id=asset.id,
            source=f"rule:{uuid.uuid4()}",
            severity=severity,
            status=AlertStatus.open,
            title=title,
            message=f"{asset.tag}: temperature > 80",
            sensor="temperature",
            triggered_at=now,
            last_triggered_at=now,
            last_value=92.5,
        )
        session.add(alert)
        session.flush()
        enqueue(session, kind, alert)
        return alert.id


def rows(db: Database, channel_id: uuid.UUID | None = None) -> list[NotificationOutbox]:
    with db.transaction(write=False) as session:
        stmt = select(NotificationOutbox).order_by(NotificationOutbox.created_at)
        if channel_id is not None:
            stmt = stmt.where(NotificationOutbox.channel_id == channel_id)
        return list(session.scalars(stmt))


def attempts(db: Database, outbox_id: uuid.UUID) -> list[NotificationAttempt]:
    with db.transaction(write=False) as session:
        stmt = (
            select(NotificationAttempt)
            .where(NotificationAttempt.outbox_id == outbox_id)
            .order_by(NotificationAttempt.attempt)
        )
        return list(session.scalars(stmt))


def dispatcher(
    db: Database, clock: Clock, *, slack_api_base_url: str = "", **policy: Any
) -> Dispatcher:
    defaults: dict[str, Any] = {"max_attempts": 3, "backoff_base_s": 10.0, "concurrency": 1}
    return Dispatcher(
        db,
        policy=DispatchPolicy(**{**defaults, **policy}),
        options=SenderOptions(timeout_s=5.0, slack_api_base_url=slack_api_base_url),
        clock=clock,
        rng=lambda: 1.0,  # the full backoff: base · 2^(attempt-1)
    )
