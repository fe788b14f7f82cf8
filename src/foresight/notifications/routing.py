"""Which channels get which alert events, and when: routing, quiet hours, backoff (pure)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from foresight.kit.time import as_utc
from foresight.models import NotificationChannel, Severity

ALERT_EVENTS = ("alert.opened", "alert.repeated", "alert.acknowledged", "alert.resolved")
# Repeats of an open alert can come with every batch of readings: a channel opts in to them.
DEFAULT_EVENTS = ("alert.opened", "alert.acknowledged", "alert.resolved")
TEST_EVENT = "test"


def routes(
    channel: NotificationChannel,
    *,
    event: str,
    severity: Severity,
    asset_id: uuid.UUID,
    asset_type: str | None,
) -> bool:
    """Does ``channel`` take this event? Severity at least its minimum; the asset among its
    asset ids or asset types (either list matches; both empty: every asset)."""
    if not channel.enabled or event not in channel.events:
        return False
    if severity.rank < Severity(channel.min_severity).rank:
        return False
    if not channel.asset_ids and not channel.asset_types:
        return True
    return str(asset_id) in channel.asset_ids or (
        asset_type is not None and asset_type in channel.asset_types
    )


def parse_hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def quiet_until(
    now: datetime, *, start: str | None, end: str | None, timezone: str | None
) -> datetime | None:
    """The end (UTC) of the quiet window ``now`` falls in, or None outside quiet hours.

    ``start``/``end`` are local wall-clock times ("22:00", "06:00") in the IANA ``timezone``;
    a window with start after end spans midnight. The start is inside the window, the end not.
    """
    if not (start and end and timezone):
        return None
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # Validated on input; a zone the system has since lost is read as UTC, not an outage.
        zone = ZoneInfo("UTC")
    local = as_utc(now).astimezone(zone)
    begin, finish = parse_hhmm(start), parse_hhmm(end)
    clock = local.time().replace(tzinfo=None)
    today = local.date()
    if begin < finish:
        if not begin <= clock < finish:
            return None
        end_date = today
    elif clock >= begin:
        end_date = today + timedelta(days=1)
    elif clock < finish:
        end_date = today
    else:
        return None
    # A wall-clock end that a DST change skips is read with the offset before the change.
    until = datetime.combine(end_date, finish, tzinfo=zone)
    return as_utc(until)


def backoff_s(attempt: int, *, base_s: float, max_s: float, rng: Callable[[], float]) -> float:
    """Delay before the attempt after ``attempt`` (1-based): base · 2^(attempt-1), capped, with
    "equal jitter" (a random half on top of a fixed half) so retries of many deliveries spread."""
    delay = min(max_s, base_s * 2.0 ** (attempt - 1))
    return delay / 2 + rng() * delay / 2
