"""Notification channels: validation, secrets kept write-only, audit; the delivery log; test
messages. Services never commit (``send_test`` is the exception that proves it: it runs its own
short transactions around the network call, so no database lock is held while it waits)."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from pydantic import SecretStr, ValidationError
from sqlalchemy.orm import Session

from foresight.audit import service as audit_service
from foresight.auth.schemas import Principal
from foresight.kit.db import Database
from foresight.kit.errors import Conflict, FieldError, InvalidInput, NotFound
from foresight.kit.pagination import decode_cursor, encode_cursor
from foresight.kit.time import as_utc, utcnow
from foresight.models import ChannelKind, DeliveryStatus, NotificationChannel, NotificationOutbox
from foresight.notifications import outbox, repository
from foresight.notifications.dispatcher import (
    Claimed,
    DispatchPolicy,
    record_result,
    start_attempt,
    target_of,
)
from foresight.notifications.schemas import (
    CONFIG_MODELS,
    SECRET_FIELDS,
    AttemptRead,
    ChannelCreate,
    ChannelPage,
    ChannelRead,
    ChannelTestResult,
    ChannelUpdate,
    DeliveryPage,
    DeliveryRead,
    QuietHours,
    QuietHoursRead,
)
from foresight.notifications.senders import Delivery, Sender, SendResult

OBJECT_TYPE = "notification_channel"
TEST_MESSAGE = "Test notification from Foresight: this channel works."


# --- config and secrets ---------------------------------------------------------------------


def _split_config(kind: ChannelKind, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate ``raw`` against the kind's model; return (public config, secrets)."""
    # A config read back from the API carries "<secret>_set" flags: they are not input.
    raw = {k: v for k, v in raw.items() if k not in {f"{n}_set" for n in SECRET_FIELDS[kind]}}
    try:
        model = CONFIG_MODELS[kind].model_validate(raw)
    except ValidationError as exc:
        errors = [
            FieldError(["body", "config", *e["loc"]], e["msg"], e["type"]) for e in exc.errors()
        ]
        names = ", ".join(".".join(str(p) for p in err.loc[1:]) for err in errors)
        raise InvalidInput(f"Invalid {kind} channel config ({names}).", errors=errors) from exc
    public: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    for name, value in model.model_dump(mode="python").items():
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif value is not None and not isinstance(value, str | int | float | bool | list):
            value = str(value)  # URLs
        (secrets if name in SECRET_FIELDS[kind] else public)[name] = value
    return public, secrets


def public_config(channel: NotificationChannel) -> dict[str, Any]:
    kind = ChannelKind(channel.kind)
    shown = dict(channel.config)
    for name in SECRET_FIELDS[kind]:
        shown[f"{name}_set"] = bool(channel.secrets.get(name))
    return shown


def to_read(channel: NotificationChannel) -> ChannelRead:
    quiet = None
    if channel.quiet_start and channel.quiet_end and channel.quiet_timezone:
        quiet = QuietHoursRead(
            start=channel.quiet_start, end=channel.quiet_end, timezone=channel.quiet_timezone
        )
    return ChannelRead(
        id=channel.id,
        tenant_id=channel.tenant_id,
        name=channel.name,
        kind=ChannelKind(channel.kind),
        enabled=channel.enabled,
        config=public_config(channel),
        min_severity=channel.min_severity,
        asset_ids=[uuid.UUID(a) for a in channel.asset_ids],
        asset_types=list(channel.asset_types),
        events=list(channel.events),
        quiet_hours=quiet,
        rate_limit_per_minute=channel.rate_limit_per_minute,
        created_at=channel.created_at,
        updated_at=channel.updated_at,
    )


def _snapshot(channel: NotificationChannel) -> dict[str, Any]:
    """For the audit trail: everything the API shows, never a secret."""
    return to_read(channel).model_dump(
        mode="json", exclude={"id", "tenant_id", "created_at", "updated_at"}
    )


# --- channels -------------------------------------------------------------------------------


def get_channel(
    session: Session, *, tenant_id: uuid.UUID, channel_id: uuid.UUID
) -> NotificationChannel:
    channel = repository.get_channel(session, tenant_id=tenant_id, channel_id=channel_id)
    if channel is None:
        raise NotFound(f"Notification channel {channel_id} not found.")
    return channel


def list_channels(
    session: Session, *, tenant_id: uuid.UUID, cursor: str | None = None, limit: int = 50
) -> ChannelPage:
    after = None
    if cursor:
        name, raw_id = decode_cursor(cursor, length=2)
        after = (str(name), _cursor_uuid(raw_id))
    rows = repository.list_channels(session, tenant_id=tenant_id, after=after, limit=limit + 1)
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor([last.name, str(last.id)])
    return ChannelPage(items=[to_read(c) for c in rows[:limit]], next_cursor=next_cursor)


def _bad_cursor() -> InvalidInput:
    return InvalidInput(
        "The pagination cursor is malformed; pass back the next_cursor of a previous page.",
        errors=[FieldError(["query", "cursor"], "malformed cursor", "cursor_invalid")],
    )


def _cursor_uuid(value: object) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise _bad_cursor() from exc


def _check_name_free(
    session: Session, *, tenant_id: uuid.UUID, name: str, channel_id: uuid.UUID | None = None
) -> None:
    other = repository.find_channel_by_name(session, tenant_id=tenant_id, name=name)
    if other is not None and other.id != channel_id:
        raise Conflict(
            f"A notification channel named {name!r} exists already.",
            errors=[FieldError(["body", "name"], "already used by another channel", "duplicate")],
        )


def _check_assets(session: Session, *, tenant_id: uuid.UUID, asset_ids: list[uuid.UUID]) -> None:
    known = repository.existing_asset_ids(session, tenant_id=tenant_id, asset_ids=asset_ids)
    missing = [(i, a) for i, a in enumerate(asset_ids) if a not in known]
    if missing:
        raise InvalidInput(
            f"Unknown asset id(s): {', '.join(str(a) for _, a in missing)}.",
            errors=[
                FieldError(["body", "asset_ids", i], "no such asset", "unknown_asset")
                for i, _ in missing
            ],
        )


def _routing_values(
    *,
    asset_ids: list[uuid.UUID],
    asset_types: list[str],
    events: list[str],
) -> dict[str, Any]:
    return {
        "asset_ids": sorted({str(a) for a in asset_ids}),
        "asset_types": sorted({t.casefold() for t in asset_types}),
        "events": sorted(set(events)),
    }


def _quiet_values(quiet: QuietHours | None) -> dict[str, Any]:
    if quiet is None:
        return {"quiet_start": None, "quiet_end": None, "quiet_timezone": None}
    return {"quiet_start": quiet.start, "quiet_end": quiet.end, "quiet_timezone": quiet.timezone}


def create_channel(
    session: Session, *, principal: Principal, data: ChannelCreate
) -> NotificationChannel:
    tenant_id = principal.tenant_id
    config, secrets = _split_config(data.kind, data.config)
    _check_name_free(session, tenant_id=tenant_id, name=data.name)
    _check_assets(session, tenant_id=tenant_id, asset_ids=data.asset_ids)
    channel = NotificationChannel(
        tenant_id=tenant_id,
        name=data.name,
        kind=data.kind,
        enabled=data.enabled,
        config=config,
        secrets=secrets,
        min_severity=data.min_severity,
        rate_limit_per_minute=data.rate_limit_per_minute,
        **_routing_values(
            asset_ids=data.asset_ids, asset_types=data.asset_types, events=list(data.events)
        ),
        **_quiet_values(data.quiet_hours),
    )
    repository.add(session, channel)
    audit_service.record(
        session,
        actor=principal.actor,
        action="notification_channel.create",
        object_type=OBJECT_TYPE,
        object_id=channel.id,
        changes=_snapshot(channel),
    )
    return channel


def update_channel(
    session: Session, *, principal: Principal, channel_id: uuid.UUID, data: ChannelUpdate
) -> NotificationChannel:
    tenant_id = principal.tenant_id
    channel = get_channel(session, tenant_id=tenant_id, channel_id=channel_id)
    before = _snapshot(channel)
    secrets_before = dict(channel.secrets)
    sent = data.model_fields_set
    if "config" in sent and data.config is not None:
        kind = ChannelKind(channel.kind)
        merged = {**channel.config, **channel.secrets, **data.config}
        channel.config, channel.secrets = _split_config(kind, merged)
    if "name" in sent and data.name is not None and data.name != channel.name:
        _check_name_free(session, tenant_id=tenant_id, name=data.name, channel_id=channel.id)
        channel.name = data.name
    if "enabled" in sent and data.enabled is not None:
        channel.enabled = data.enabled
    if "min_severity" in sent and data.min_severity is not None:
        channel.min_severity = data.min_severity
    if "asset_ids" in sent and data.asset_ids is not None:
        _check_assets(session, tenant_id=tenant_id, asset_ids=data.asset_ids)
    routing = _routing_values(
        asset_ids=data.asset_ids
        if data.asset_ids is not None
        else [uuid.UUID(a) for a in channel.asset_ids],
        asset_types=data.asset_types if data.asset_types is not None else channel.asset_types,
        events=list(data.events) if data.events is not None else channel.events,
    )
    for name, value in routing.items():
        setattr(channel, name, value)
    if "quiet_hours" in sent:
        for name, value in _quiet_values(data.quiet_hours).items():
            setattr(channel, name, value)
    if "rate_limit_per_minute" in sent:
        channel.rate_limit_per_minute = data.rate_limit_per_minute
    if {"quiet_hours", "rate_limit_per_minute", "enabled"} & sent:
        # Held deliveries are re-judged by the new rules at the next round.
        repository.release_held(session, channel_id=channel.id, now=utcnow())
    session.flush()
    after = _snapshot(channel)
    changes = audit_service.diff(before, after)
    changed_secrets = sorted(
        name
        for name in SECRET_FIELDS[ChannelKind(channel.kind)]
        if channel.secrets.get(name) != secrets_before.get(name)
    )
    if changed_secrets:
        changes["secrets_changed"] = changed_secrets  # which ones, never their values
    if changes:
        audit_service.record(
            session,
            actor=principal.actor,
            action="notification_channel.update",
            object_type=OBJECT_TYPE,
            object_id=channel.id,
            changes=changes,
        )
    return channel


def delete_channel(session: Session, *, principal: Principal, channel_id: uuid.UUID) -> None:
    """Delete the channel, its pending deliveries and its delivery log."""
    channel = get_channel(session, tenant_id=principal.tenant_id, channel_id=channel_id)
    snapshot = _snapshot(channel)
    repository.delete(session, channel)
    audit_service.record(
        session,
        actor=principal.actor,
        action="notification_channel.delete",
        object_type=OBJECT_TYPE,
        object_id=channel_id,
        changes=snapshot,
    )


# --- the delivery log -----------------------------------------------------------------------


def delivery_read(row: NotificationOutbox, attempts: list[AttemptRead]) -> DeliveryRead:
    pending = row.status is DeliveryStatus.pending
    return DeliveryRead(
        id=row.id,
        channel_id=row.channel_id,
        alert_id=row.alert_id,
        event=row.event,
        severity=row.severity,
        status=DeliveryStatus(row.status),
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at if pending else None,
        deferred_reason=row.deferred_reason if pending else None,
        delivered_at=row.delivered_at,
        dead_lettered=row.status is DeliveryStatus.dead,
        dead_at=row.dead_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        attempt_log=attempts,
    )


def list_deliveries(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    channel_id: uuid.UUID,
    status: DeliveryStatus | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> DeliveryPage:
    get_channel(session, tenant_id=tenant_id, channel_id=channel_id)
    after: tuple[datetime, uuid.UUID] | None = None
    if cursor:
        raw_at, raw_id = decode_cursor(cursor, length=2)
        try:
            at = as_utc(datetime.fromisoformat(str(raw_at)))
        except ValueError as exc:
            raise _bad_cursor() from exc
        after = (at, _cursor_uuid(raw_id))
    rows = repository.list_deliveries(
        session,
        tenant_id=tenant_id,
        channel_id=channel_id,
        status=status,
        after=after,
        limit=limit + 1,
    )
    page = rows[:limit]
    attempts = repository.attempts_of(session, [r.id for r in page])
    items = [
        delivery_read(r, [AttemptRead.model_validate(a) for a in attempts[r.id]]) for r in page
    ]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor([last.created_at.isoformat(), str(last.id)])
    return DeliveryPage(items=items, next_cursor=next_cursor)


# --- test messages --------------------------------------------------------------------------


def send_test(
    db: Database,
    *,
    principal: Principal,
    channel_id: uuid.UUID,
    senders: dict[ChannelKind, Sender],
    policy: DispatchPolicy,
) -> ChannelTestResult:
    """Send a test message to the channel now (quiet hours and rate limit do not apply), and
    log it as a delivery. Three short transactions, none held during the send: claim (with the
    audit entry), send, record. A test is not retried."""
    now = utcnow()
    with db.transaction() as session:
        channel = get_channel(session, tenant_id=principal.tenant_id, channel_id=channel_id)
        row = outbox.test_message_row(channel, message=TEST_MESSAGE, now=now)
        repository.add(session, row)
        attempt = start_attempt(session, row, now=now, lease_s=policy.lease_s)
        claimed = Claimed(
            delivery=Delivery(row.id, row.event, dict(row.payload), row.attempts),
            target=target_of(channel),
            attempt_id=attempt.id,
        )
        audit_service.record(
            session,
            actor=principal.actor,
            action="notification_channel.test",
            object_type=OBJECT_TYPE,
            object_id=channel.id,
            changes={"delivery_id": str(row.id)},
        )
    started = time.monotonic()
    try:
        result = senders[claimed.target.kind].send(claimed.delivery, claimed.target)
    except Exception as exc:  # noqa: BLE001 - reported to the caller, and logged as an attempt
        result = SendResult(False, error=f"{type(exc).__name__}: {exc}"[:500])
    duration_ms = round((time.monotonic() - started) * 1000, 3)
    with db.transaction() as session:
        record_result(
            session,
            claimed=claimed,
            result=result,
            started=started,
            now=utcnow(),
            policy=policy,
            rng=lambda: 0.0,
        )
    return ChannelTestResult(
        ok=result.ok,
        delivery_id=claimed.delivery.id,
        status_code=result.status_code,
        error=result.error,
        duration_ms=duration_ms,
    )
