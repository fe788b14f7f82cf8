"""Notification channels and deliveries: API models.

A channel's ``config`` depends on its ``kind`` (one model per kind below, checked by the
service so that errors name ``config.<field>``). Secret fields (the Slack webhook URL, which
embeds its token; the bot token; the webhook signing secret; the SMTP password) are write-only:
reads show ``<field>_set: true|false`` instead.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

from pydantic import AnyHttpUrl, EmailStr, Field, SecretStr, field_validator, model_validator

from foresight.kit.schemas import CleanStr, InputModel, OutputModel, Page
from foresight.models import ChannelKind, DeliveryStatus, Severity
from foresight.notifications.routing import DEFAULT_EVENTS

EventKind = Literal["alert.opened", "alert.repeated", "alert.acknowledged", "alert.resolved"]
HHMM = Annotated[
    str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="Local time, 24 h: HH:MM")
]
WebUrl = Annotated[AnyHttpUrl, Field(max_length=2000, description="http:// or https:// URL")]


# --- per-kind configuration -----------------------------------------------------------------


class SlackWebhookConfig(InputModel):
    """A Slack incoming webhook."""

    url: WebUrl = Field(description="The incoming webhook URL (secret: it embeds the token)")


class SlackApiConfig(InputModel):
    """A Slack app's bot token posting with ``chat.postMessage``."""

    token: Annotated[SecretStr, Field(min_length=1, max_length=500)] = Field(
        description="Bot token (xoxb-…), secret"
    )
    channel: Annotated[CleanStr, Field(min_length=1, max_length=80)] = Field(
        description="Channel id (C0123…) or #name"
    )


class WebhookConfig(InputModel):
    """Any HTTPS endpoint: JSON POST, HMAC-SHA256 signed when a secret is set."""

    url: WebUrl
    secret: Annotated[SecretStr, Field(min_length=16, max_length=500)] | None = Field(
        default=None, description="Signing key for X-Foresight-Signature (secret)"
    )


class EmailConfig(InputModel):
    """An SMTP server and the recipients."""

    host: Annotated[CleanStr, Field(min_length=1, max_length=255)]
    port: Annotated[int, Field(ge=1, le=65535)] = 587
    starttls: bool = Field(default=True, description="Upgrade the connection with STARTTLS")
    username: Annotated[CleanStr, Field(min_length=1, max_length=320)] | None = None
    password: Annotated[SecretStr, Field(max_length=500)] | None = Field(
        default=None, description="SMTP password (secret)"
    )
    from_address: EmailStr
    to: Annotated[list[EmailStr], Field(min_length=1, max_length=50)]


CONFIG_MODELS: dict[ChannelKind, type[InputModel]] = {
    ChannelKind.slack_webhook: SlackWebhookConfig,
    ChannelKind.slack_api: SlackApiConfig,
    ChannelKind.webhook: WebhookConfig,
    ChannelKind.email: EmailConfig,
}
SECRET_FIELDS: dict[ChannelKind, tuple[str, ...]] = {
    ChannelKind.slack_webhook: ("url",),
    ChannelKind.slack_api: ("token",),
    ChannelKind.webhook: ("secret",),
    ChannelKind.email: ("password",),
}


# --- channels -------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


class QuietHours(InputModel):
    """Between ``start`` and ``end`` (local time in ``timezone``; may span midnight),
    notifications below ``emergency`` are held and sent when the window ends."""

    start: HHMM
    end: HHMM
    timezone: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        description="IANA time zone, e.g. Europe/Berlin"
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value not in _zones():
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. Europe/Berlin, UTC)")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self


ChannelName = Annotated[CleanStr, Field(min_length=1, max_length=200)]
AssetTypeName = Annotated[CleanStr, Field(min_length=1, max_length=64)]
RateLimit = Annotated[int, Field(ge=1, le=10_000, description="Deliveries per minute at most")]
Events = Annotated[list[EventKind], Field(min_length=1, max_length=4)]
AssetIds = Annotated[list[uuid.UUID], Field(max_length=500)]
AssetTypes = Annotated[list[AssetTypeName], Field(max_length=100)]

_CONFIG_DOC = (
    "Depends on kind. slack_webhook: {url}. slack_api: {token, channel}. webhook: {url, secret?}. "
    "email: {host, port=587, starttls=true, username?, password?, from_address, to: [...]}. "
    "Secrets are write-only; on update, fields not sent keep their value."
)


class ChannelCreate(InputModel):
    name: ChannelName
    kind: ChannelKind
    enabled: bool = True
    config: dict[str, Any] = Field(description=_CONFIG_DOC)
    min_severity: Severity = Field(
        default=Severity.warning, description="Only alerts at or above this severity"
    )
    asset_ids: AssetIds = Field(
        default_factory=list, description="Only these assets (with asset_types: either matches)"
    )
    asset_types: AssetTypes = Field(
        default_factory=list, description="Only assets of these types (case-insensitive)"
    )
    events: Events = Field(
        default_factory=lambda: list(DEFAULT_EVENTS),  # type: ignore[arg-type]
        description="Alert events to notify; alert.repeated is off by default (floods)",
    )
    quiet_hours: QuietHours | None = None
    rate_limit_per_minute: RateLimit | None = Field(
        default=None, description="Deliveries beyond this in any 60 s wait (none are dropped)"
    )


_NOT_NULL = ("name", "enabled", "config", "min_severity", "asset_ids", "asset_types", "events")


class ChannelUpdate(InputModel):
    """Partial update: only the fields sent change (``config`` merges into the current one);
    null clears ``quiet_hours`` and ``rate_limit_per_minute``. The kind cannot change."""

    name: ChannelName | None = None
    enabled: bool | None = None
    config: dict[str, Any] | None = Field(default=None, description=_CONFIG_DOC)
    min_severity: Severity | None = None
    asset_ids: AssetIds | None = None
    asset_types: AssetTypes | None = None
    events: Events | None = None
    quiet_hours: QuietHours | None = None
    rate_limit_per_minute: RateLimit | None = None

    @field_validator(*_NOT_NULL)
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Defaults are not validated, so this sees only an explicit null.
        if value is None:
            raise ValueError("may not be null")
        return value


class QuietHoursRead(OutputModel):
    start: str
    end: str
    timezone: str


class ChannelRead(OutputModel):
    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    kind: ChannelKind
    enabled: bool
    config: dict[str, Any] = Field(description="Without secrets: <field>_set tells if one is set")
    min_severity: Severity
    asset_ids: list[uuid.UUID]
    asset_types: list[str]
    events: list[str]
    quiet_hours: QuietHoursRead | None
    rate_limit_per_minute: int | None
    created_at: datetime
    updated_at: datetime


ChannelPage = Page[ChannelRead]


# --- deliveries -----------------------------------------------------------------------------


class AttemptRead(OutputModel):
    attempt: int
    started_at: datetime
    finished_at: datetime | None
    duration_ms: float | None
    ok: bool | None = Field(description="null: no result recorded (in flight, or the sender died)")
    status_code: int | None = Field(description="HTTP status (SMTP reply code for e-mail)")
    error: str | None
    dead_lettered: bool


class DeliveryRead(OutputModel):
    id: uuid.UUID = Field(description="Also the Idempotency-Key receivers see")
    channel_id: uuid.UUID
    alert_id: uuid.UUID | None
    event: str
    severity: Severity
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None = Field(description="When pending: the next try")
    deferred_reason: str | None = Field(description="quiet_hours or rate_limit while held")
    delivered_at: datetime | None
    dead_lettered: bool
    dead_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    attempt_log: list[AttemptRead]


DeliveryPage = Page[DeliveryRead]


class ChannelTestResult(OutputModel):
    ok: bool
    delivery_id: uuid.UUID
    status_code: int | None
    error: str | None
    duration_ms: float
