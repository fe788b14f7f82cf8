"""The transactional outbox: notifications are rows written in the transaction that changes the
alert, so they exist exactly when the change does (a rolled-back change notifies no one, a
committed one is never lost). The dispatcher delivers them later, at least once.

``enqueue`` is the alert hook (``hook(session, kind, alert)``) that detection and the alert
endpoints call inside their transaction.
"""

from __future__ import annotations

import math
import threading
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from foresight.kit.time import utcnow
from foresight.models import Alert, Asset, NotificationChannel, NotificationOutbox, Severity
from foresight.notifications import repository
from foresight.notifications.routing import ALERT_EVENTS, routes

# Set after a commit that wrote outbox rows: wakes this process's dispatcher at once.
wakeup = threading.Event()
_SESSION_FLAG = "foresight.notifications.wake_on_commit"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def alert_payload(alert: Alert, asset: Asset | None) -> dict[str, Any]:
    """The alert as notifications carry it (a snapshot: later changes do not alter it)."""
    return {
        "id": str(alert.id),
        "status": str(alert.status),
        "severity": str(alert.severity),
        "title": alert.title,
        "message": alert.message,
        "source": alert.source,
        "rule_id": str(alert.rule_id) if alert.rule_id else None,
        "sensor": alert.sensor,
        "triggered_at": _iso(alert.triggered_at),
        "last_triggered_at": _iso(alert.last_triggered_at),
        "count": alert.count,
        "last_value": _finite(alert.last_value),
        "details": alert.details or {},
        "acknowledged_at": _iso(alert.acknowledged_at),
        "acknowledged_by": alert.acknowledged_by,
        "acknowledge_note": alert.acknowledge_note,
        "resolved_at": _iso(alert.resolved_at),
        "resolved_by": alert.resolved_by,
        "resolve_note": alert.resolve_note,
        "asset": {
            "id": str(alert.asset_id),
            "tag": asset.tag if asset else None,
            "name": asset.name if asset else None,
            "type": asset.type if asset else None,
        },
    }


def _payload(
    delivery_id: uuid.UUID, kind: str, channel: NotificationChannel, now: datetime, alert: Any
) -> dict[str, Any]:
    return {
        "id": str(delivery_id),
        "event": kind,
        "occurred_at": now.isoformat(),
        "tenant_id": str(channel.tenant_id),
        "channel": {"id": str(channel.id), "name": channel.name},
        "alert": alert,
    }


def _wake_after_commit(session: Session) -> None:
    if session.info.get(_SESSION_FLAG):
        return
    session.info[_SESSION_FLAG] = True

    def on_commit(committed: Session) -> None:
        committed.info.pop(_SESSION_FLAG, None)
        wakeup.set()

    event.listen(session, "after_commit", on_commit, once=True)


def enqueue(session: Session, kind: str, alert: Alert) -> None:
    """Write one outbox row per channel that routes this alert event, in the caller's
    transaction. ``kind``: alert.opened | alert.repeated | alert.acknowledged | alert.resolved
    (anything else is ignored). Never commits."""
    if kind not in ALERT_EVENTS:
        return
    channels = repository.enabled_channels(session, tenant_id=alert.tenant_id)
    if not channels:
        return
    severity = Severity(alert.severity)
    asset = session.get(Asset, alert.asset_id)
    asset_type = asset.type.casefold() if asset is not None and asset.type else None
    matching = [
        channel
        for channel in channels
        if routes(
            channel, event=kind, severity=severity, asset_id=alert.asset_id, asset_type=asset_type
        )
    ]
    if not matching:
        return
    now = utcnow()
    snapshot = alert_payload(alert, asset)
    for channel in matching:
        delivery_id = uuid.uuid4()
        session.add(
            NotificationOutbox(
                id=delivery_id,
                tenant_id=alert.tenant_id,
                channel_id=channel.id,
                alert_id=alert.id,
                event=kind,
                severity=severity,
                payload=_payload(delivery_id, kind, channel, now, snapshot),
                next_attempt_at=now,
            )
        )
    session.flush()
    _wake_after_commit(session)


def test_message_row(
    channel: NotificationChannel, *, message: str, now: datetime
) -> NotificationOutbox:
    """An outbox entry for a test message to ``channel`` (not routed, never held back)."""
    delivery_id = uuid.uuid4()
    payload = _payload(delivery_id, "test", channel, now, None)
    payload["message"] = message
    return NotificationOutbox(
        id=delivery_id,
        tenant_id=channel.tenant_id,
        channel_id=channel.id,
        alert_id=None,
        event="test",
        severity=Severity.info,
        payload=payload,
        next_attempt_at=now,
    )
