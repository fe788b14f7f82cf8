"""Notification channels, the outbox of deliveries to them, and the log of delivery attempts."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from foresight.kit.db import Base, IdMixin, JSONType, TimestampMixin
from foresight.models._types import str_enum
from foresight.models.enums import Severity


class ChannelKind(StrEnum):
    slack_webhook = "slack_webhook"
    slack_api = "slack_api"
    webhook = "webhook"
    email = "email"


class DeliveryStatus(StrEnum):
    pending = "pending"  # waiting for its due time (new, retrying, held or deferred)
    delivered = "delivered"
    dead = "dead"  # dead-lettered: gave up after the last attempt or a permanent error


class NotificationChannel(IdMixin, TimestampMixin, Base):
    """Where a tenant's alert notifications go, which ones, and when."""

    __tablename__ = "notification_channels"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[ChannelKind] = mapped_column(str_enum(ChannelKind, "channel_kind"))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # What the API shows (URL, Slack channel, SMTP host, recipients…) …
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # … and what it never shows (bot token, webhook secret, SMTP password, Slack webhook URL).
    secrets: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Routing: alerts at or above min_severity, on these assets or asset types (none: all).
    min_severity: Mapped[Severity] = mapped_column(
        str_enum(Severity, "severity"), default=Severity.warning
    )
    asset_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    asset_types: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # Alert events notified ("alert.opened", "alert.repeated", …).
    events: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # Quiet hours: local "HH:MM" times in an IANA zone; non-emergency deliveries wait them out.
    quiet_start: Mapped[str | None] = mapped_column(String(5), default=None)
    quiet_end: Mapped[str | None] = mapped_column(String(5), default=None)
    quiet_timezone: Mapped[str | None] = mapped_column(String(64), default=None)
    # At most this many deliveries in any 60 s (None: no limit); the rest are deferred.
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)


class NotificationOutbox(IdMixin, TimestampMixin, Base):
    """One notification to one channel. Written in the transaction that changed the alert, so
    it exists exactly when the change does; the dispatcher delivers it at least once. Its id is
    the idempotency key receivers see."""

    __tablename__ = "notification_outbox"
    __table_args__ = (
        Index("ix_notification_outbox_due", "status", "next_attempt_at"),
        Index("ix_notification_outbox_channel_created", "channel_id", "created_at"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    channel_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("notification_channels.id", ondelete="CASCADE")
    )
    alert_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("alerts.id", ondelete="SET NULL"), default=None
    )
    # "alert.opened" | "alert.repeated" | "alert.acknowledged" | "alert.resolved" | "test"
    event: Mapped[str] = mapped_column(String(32))
    severity: Mapped[Severity] = mapped_column(str_enum(Severity, "severity"))
    # The notification as it was when the event happened (later alert changes do not alter it).
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[DeliveryStatus] = mapped_column(
        str_enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.pending
    )
    # Attempts started (counted when claimed, so a delivery that keeps crashing its
    # dispatcher is still dead-lettered in the end).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column()
    # "quiet_hours" or "rate_limit" while held back for that reason.
    deferred_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    # A dispatcher's lease: until then no other dispatcher takes it; after, it is resent.
    claimed_until: Mapped[datetime | None] = mapped_column(default=None)
    # The attempt (notification_attempts.id) holding the lease; its result is recorded only
    # while it still does.
    claim_token: Mapped[uuid.UUID | None] = mapped_column(default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
    dead_at: Mapped[datetime | None] = mapped_column(default=None)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)


class NotificationAttempt(IdMixin, Base):
    """The delivery log: one row per attempt to deliver an outbox entry, written when a
    dispatcher claims the entry and completed when it records the result. One left without a
    result (``ok`` null after its lease) is a dispatcher that stopped mid-delivery."""

    __tablename__ = "notification_attempts"
    __table_args__ = (
        Index("ix_notification_attempts_outbox", "outbox_id", "attempt"),
        Index("ix_notification_attempts_channel_started", "channel_id", "started_at"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    channel_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("notification_channels.id", ondelete="CASCADE")
    )
    outbox_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("notification_outbox.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    duration_ms: Mapped[float | None] = mapped_column(Float, default=None)
    ok: Mapped[bool | None] = mapped_column(Boolean, default=None)
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # This attempt's failure dead-lettered the delivery.
    dead_lettered: Mapped[bool] = mapped_column(Boolean, default=False)
