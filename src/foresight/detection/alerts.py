"""Alerts: opened, repeated and auto-resolved by detection; acknowledged and resolved by people.

One alert per (source, asset) is not resolved at a time (a partial unique index enforces it):
a repeat while it is open or acknowledged increments ``count`` and updates the last value
instead of opening another. Services never commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from foresight.audit import service as audit_service
from foresight.auth.schemas import Principal
from foresight.detection.schemas import AlertPage, AlertRead, AlertStats, CountBy
from foresight.kit.errors import Conflict, NotFound
from foresight.kit.pagination import decode_time_cursor, encode_cursor
from foresight.kit.time import as_utc, utcnow
from foresight.models import Alert, AlertStatus, Severity

OPEN_STATUSES = (AlertStatus.open, AlertStatus.acknowledged)


@dataclass(frozen=True)
class Trigger:
    """Detection says: this source fires on this asset at data time ``at``."""

    tenant_id: uuid.UUID
    asset_id: uuid.UUID
    source: str
    severity: Severity
    title: str
    message: str
    at: datetime
    value: float | None
    sensor: str | None = None
    rule_id: uuid.UUID | None = None
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class Clear:
    """Detection says: the source's condition on this asset is normal again at ``at``."""

    tenant_id: uuid.UUID
    asset_id: uuid.UUID
    source: str
    at: datetime
    value: float | None
    note: str = "condition cleared"


def find_active(
    session: Session, *, tenant_id: uuid.UUID, source: str, asset_id: uuid.UUID
) -> Alert | None:
    return session.scalars(
        select(Alert).where(
            Alert.tenant_id == tenant_id,
            Alert.source == source,
            Alert.asset_id == asset_id,
            Alert.status.in_(OPEN_STATUSES),
        )
    ).first()


ActiveAlerts = dict[tuple[uuid.UUID, str, uuid.UUID], Alert]


def active_for(session: Session, actions: Sequence[Trigger | Clear]) -> ActiveAlerts:
    """The active alert of every (tenant, source, asset) the actions name, by that key; the
    ``active`` argument of :func:`fire` and :func:`auto_resolve`, which keep it up to date."""
    keys = {(a.tenant_id, a.source, a.asset_id) for a in actions}
    if not keys:
        return {}
    found = session.scalars(
        select(Alert).where(
            Alert.asset_id.in_({k[2] for k in keys}),
            Alert.source.in_({k[1] for k in keys}),
            Alert.status.in_(OPEN_STATUSES),
        )
    ).all()
    return {
        (a.tenant_id, a.source, a.asset_id): a
        for a in found
        if (a.tenant_id, a.source, a.asset_id) in keys
    }


def _active(
    session: Session,
    active: ActiveAlerts | None,
    tenant_id: uuid.UUID,
    source: str,
    asset_id: uuid.UUID,
) -> Alert | None:
    if active is None:
        return find_active(session, tenant_id=tenant_id, source=source, asset_id=asset_id)
    return active.get((tenant_id, source, asset_id))


def fire(
    session: Session, trigger: Trigger, *, active: ActiveAlerts | None = None
) -> tuple[Alert, bool]:
    """Open an alert, or count a repeat on the active one. Returns (alert, opened)."""
    alert = _active(session, active, trigger.tenant_id, trigger.source, trigger.asset_id)
    if alert is not None:
        alert.count += 1
        alert.last_value = trigger.value
        if trigger.at > alert.last_triggered_at:
            alert.last_triggered_at = trigger.at
        if trigger.severity.rank > alert.severity.rank:
            alert.severity = trigger.severity
        return alert, False
    alert = Alert(
        tenant_id=trigger.tenant_id,
        asset_id=trigger.asset_id,
        rule_id=trigger.rule_id,
        source=trigger.source,
        severity=trigger.severity,
        status=AlertStatus.open,
        title=trigger.title[:300],
        message=trigger.message,
        sensor=trigger.sensor,
        triggered_at=trigger.at,
        last_triggered_at=trigger.at,
        count=1,
        last_value=trigger.value,
        details=trigger.details or {},
    )
    session.add(alert)
    session.flush()
    if active is not None:
        active[(trigger.tenant_id, trigger.source, trigger.asset_id)] = alert
    return alert, True


def auto_resolve(
    session: Session, clear: Clear, *, active: ActiveAlerts | None = None
) -> Alert | None:
    alert = _active(session, active, clear.tenant_id, clear.source, clear.asset_id)
    if alert is None:
        return None
    if active is not None:
        del active[(clear.tenant_id, clear.source, clear.asset_id)]
    alert.status = AlertStatus.resolved
    # Data time, like triggered_at; never before it (a late point cannot resolve the past).
    alert.resolved_at = max(clear.at, alert.last_triggered_at)
    alert.resolved_by = "auto"
    alert.resolve_note = clear.note
    if clear.value is not None:
        alert.last_value = clear.value
    alert.updated_at = utcnow()
    session.flush()
    return alert


def active_sources(session: Session) -> list[tuple[uuid.UUID, str, uuid.UUID]]:
    """(tenant, source, asset) of every alert not resolved: detection's firing state."""
    rows = session.execute(
        select(Alert.tenant_id, Alert.source, Alert.asset_id).where(Alert.status.in_(OPEN_STATUSES))
    )
    return [(t, s, a) for t, s, a in rows]


# --- the API side: reads, lifecycle by people, statistics ------------------------------------

AlertHook = Callable[[Session, str, Alert], None]


def get_alert(session: Session, *, tenant_id: uuid.UUID, alert_id: uuid.UUID) -> Alert:
    alert = session.scalars(
        select(Alert).where(Alert.tenant_id == tenant_id, Alert.id == alert_id)
    ).first()
    if alert is None:
        raise NotFound(f"Alert {alert_id} not found.")
    return alert


def list_alerts(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    asset_id: uuid.UUID | None = None,
    status: AlertStatus | None = None,
    severity: Severity | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> AlertPage:
    """Newest first by triggered_at (data time); ``start`` inclusive, ``end`` exclusive."""
    stmt = select(Alert).where(Alert.tenant_id == tenant_id)
    if asset_id is not None:
        stmt = stmt.where(Alert.asset_id == asset_id)
    if status is not None:
        stmt = stmt.where(Alert.status == status)
    if severity is not None:
        stmt = stmt.where(Alert.severity == severity)
    if start is not None:
        stmt = stmt.where(Alert.triggered_at >= start)
    if end is not None:
        stmt = stmt.where(Alert.triggered_at < end)
    if cursor:
        at, after_id = decode_time_cursor(cursor)
        stmt = stmt.where(
            (Alert.triggered_at < at) | ((Alert.triggered_at == at) & (Alert.id < after_id))
        )
    rows = session.scalars(
        stmt.order_by(Alert.triggered_at.desc(), Alert.id.desc()).limit(limit + 1)
    ).all()
    items = [AlertRead.model_validate(r) for r in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    next_cursor = (
        encode_cursor([as_utc(last.triggered_at).isoformat(), str(last.id)]) if last else None
    )
    return AlertPage(items=items, next_cursor=next_cursor)


def _snapshot(alert: Alert) -> dict[str, Any]:
    return {
        "status": str(alert.status),
        "acknowledged_by": alert.acknowledged_by,
        "acknowledge_note": alert.acknowledge_note,
        "resolved_by": alert.resolved_by,
        "resolve_note": alert.resolve_note,
    }


def acknowledge(
    session: Session,
    *,
    principal: Principal,
    alert_id: uuid.UUID,
    note: str,
    hooks: list[AlertHook] | None = None,
) -> Alert:
    alert = get_alert(session, tenant_id=principal.tenant_id, alert_id=alert_id)
    if alert.status is not AlertStatus.open:
        raise Conflict(
            f"Alert {alert_id} is {alert.status}; only an open alert can be acknowledged."
        )
    before = _snapshot(alert)
    alert.status = AlertStatus.acknowledged
    alert.acknowledged_at = utcnow()
    alert.acknowledged_by = principal.label
    alert.acknowledge_note = note
    alert.updated_at = alert.acknowledged_at
    _record(session, principal, "alert.acknowledge", alert, before)
    for hook in hooks or []:
        hook(session, "alert.acknowledged", alert)
    return alert


def resolve(
    session: Session,
    *,
    principal: Principal,
    alert_id: uuid.UUID,
    note: str,
    hooks: list[AlertHook] | None = None,
) -> Alert:
    alert = get_alert(session, tenant_id=principal.tenant_id, alert_id=alert_id)
    if alert.status is AlertStatus.resolved:
        raise Conflict(f"Alert {alert_id} is resolved already.")
    before = _snapshot(alert)
    alert.status = AlertStatus.resolved
    alert.resolved_at = utcnow()
    alert.resolved_by = principal.label
    alert.resolve_note = note
    alert.updated_at = alert.resolved_at
    _record(session, principal, "alert.resolve", alert, before)
    for hook in hooks or []:
        hook(session, "alert.resolved", alert)
    return alert


def _record(
    session: Session, principal: Principal, action: str, alert: Alert, before: dict[str, Any]
) -> None:
    session.flush()
    audit_service.record(
        session,
        actor=principal.actor,
        action=action,
        object_type="alert",
        object_id=alert.id,
        changes=audit_service.diff(before, _snapshot(alert)),
    )


def stats(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    asset_id: uuid.UUID | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> AlertStats:
    """Counts by severity, status, asset and day (of triggered_at), and mean times to
    acknowledge and to resolve (from when the alert was created, in seconds)."""
    conditions = [Alert.tenant_id == tenant_id]
    if asset_id is not None:
        conditions.append(Alert.asset_id == asset_id)
    if start is not None:
        conditions.append(Alert.triggered_at >= start)
    if end is not None:
        conditions.append(Alert.triggered_at < end)
    rows = session.execute(
        select(
            Alert.severity, Alert.status, Alert.asset_id, Alert.triggered_at, Alert.created_at,
            Alert.acknowledged_at, Alert.resolved_at, Alert.resolved_by,
        ).where(*conditions)
    ).all()  # fmt: skip
    by_severity = {s.value: 0 for s in Severity}
    by_status = {s.value: 0 for s in AlertStatus}
    by_asset: dict[str, int] = {}
    by_day: dict[str, int] = {}
    ack_s: list[float] = []
    resolve_s: list[float] = []
    for severity, status, asset, triggered, created, acked, resolved, resolved_by in rows:
        by_severity[str(severity)] += 1
        by_status[str(status)] += 1
        by_asset[str(asset)] = by_asset.get(str(asset), 0) + 1
        day = as_utc(triggered).date().isoformat()
        by_day[day] = by_day.get(day, 0) + 1
        if acked is not None:
            ack_s.append((as_utc(acked) - as_utc(created)).total_seconds())
        if resolved is not None and resolved_by != "auto":
            resolve_s.append((as_utc(resolved) - as_utc(created)).total_seconds())
    top = sorted(by_asset.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    return AlertStats(
        total=len(rows),
        by_severity=by_severity,
        by_status=by_status,
        by_asset=[CountBy(key=k, count=v) for k, v in top],
        by_day=[CountBy(key=k, count=v) for k, v in sorted(by_day.items())],
        mean_time_to_acknowledge_s=sum(ack_s) / len(ack_s) if ack_s else None,
        mean_time_to_resolve_s=sum(resolve_s) / len(resolve_s) if resolve_s else None,
    )
