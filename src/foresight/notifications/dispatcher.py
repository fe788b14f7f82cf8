"""The outbox dispatcher: claim due deliveries, send them, record each attempt.

Three short transactions per delivery, none held across the network:

1. **claim** (a batch): due entries of enabled channels, locked ``FOR UPDATE SKIP LOCKED`` on
   PostgreSQL so several dispatchers share the work. Entries in their channel's quiet hours
   (below ``emergency``) or beyond its rate limit are deferred instead; the others get a lease
   (``claimed_until``) and an attempt row in the delivery log.
2. **send**, outside any transaction, with the entry's id as the idempotency key.
3. **record**: the attempt's result; delivered, or retried after an exponential backoff with
   jitter, or dead-lettered after the last attempt (or a permanent error).

A dispatcher that dies between 2 and 3 leaves the lease to expire; the entry is then claimed
and sent again with the same idempotency key (at least once, never lost).
"""

from __future__ import annotations

import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from foresight.config import Settings
from foresight.kit.db import Database
from foresight.kit.logging import get_logger
from foresight.kit.time import utcnow
from foresight.models import (
    ChannelKind,
    DeliveryStatus,
    NotificationAttempt,
    NotificationChannel,
    NotificationOutbox,
    Severity,
)
from foresight.notifications import outbox, repository
from foresight.notifications.routing import TEST_EVENT, backoff_s, quiet_until
from foresight.notifications.senders import (
    Delivery,
    Sender,
    SenderOptions,
    SendResult,
    Target,
    default_senders,
)

log = get_logger("foresight.notifications")
RATE_WINDOW = timedelta(seconds=60)
# However long a receiver's Retry-After, look again within a day.
MAX_RETRY_AFTER_S = 86_400.0


@dataclass(frozen=True)
class DispatchPolicy:
    max_attempts: int = 8
    backoff_base_s: float = 10.0
    backoff_max_s: float = 3600.0
    lease_s: float = 120.0
    batch_size: int = 50
    concurrency: int = 4
    poll_interval_s: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DispatchPolicy:
        return cls(
            max_attempts=settings.notify_max_attempts,
            backoff_base_s=settings.notify_backoff_base_s,
            backoff_max_s=settings.notify_backoff_max_s,
            lease_s=settings.notify_lease_s,
            batch_size=settings.notify_batch_size,
            concurrency=settings.notify_concurrency,
            poll_interval_s=settings.notify_poll_interval_s,
        )


@dataclass(frozen=True)
class Claimed:
    """A claimed delivery, detached from the claiming session."""

    delivery: Delivery
    target: Target
    attempt_id: uuid.UUID


@dataclass
class Counts:
    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    deferred: int = 0


def target_of(channel: NotificationChannel) -> Target:
    return Target(
        id=channel.id,
        name=channel.name,
        kind=ChannelKind(channel.kind),
        config={**channel.config, **channel.secrets},
    )


def start_attempt(
    session: Session, row: NotificationOutbox, *, now: datetime, lease_s: float
) -> NotificationAttempt:
    """Take the lease on ``row`` and open its next attempt in the delivery log."""
    row.attempts += 1
    attempt = NotificationAttempt(
        id=uuid.uuid4(),
        tenant_id=row.tenant_id,
        channel_id=row.channel_id,
        outbox_id=row.id,
        attempt=row.attempts,
        started_at=now,
    )
    session.add(attempt)
    row.claim_token = attempt.id
    row.claimed_until = now + timedelta(seconds=lease_s)
    row.deferred_reason = None
    return attempt


def record_result(
    session: Session,
    *,
    claimed: Claimed,
    result: SendResult,
    started: float,
    now: datetime,
    policy: DispatchPolicy,
    rng: Callable[[], float],
) -> DeliveryStatus | None:
    """Complete the attempt; settle the entry if this attempt still holds its lease. Returns
    the entry's new status (None if the lease had been lost to another dispatcher)."""
    attempt = repository.get_attempt(session, claimed.attempt_id)
    if attempt is not None:
        attempt.finished_at = now
        attempt.duration_ms = round((time.monotonic() - started) * 1000, 3)
        attempt.ok = result.ok
        attempt.status_code = result.status_code
        attempt.error = result.error
    row = repository.lock_claimed(
        session, outbox_id=claimed.delivery.id, claim_token=claimed.attempt_id
    )
    if row is None:
        return None
    row.claim_token = None
    row.claimed_until = None
    row.last_status_code = result.status_code
    row.last_error = result.error
    if result.ok:
        row.status = DeliveryStatus.delivered
        row.delivered_at = now
    elif result.permanent or row.attempts >= policy.max_attempts or row.event == TEST_EVENT:
        row.status = DeliveryStatus.dead
        row.dead_at = now
        if attempt is not None:
            attempt.dead_lettered = True
    else:
        delay = backoff_s(
            row.attempts, base_s=policy.backoff_base_s, max_s=policy.backoff_max_s, rng=rng
        )
        if result.retry_after_s is not None:
            delay = max(delay, min(result.retry_after_s, MAX_RETRY_AFTER_S))
        row.next_attempt_at = now + timedelta(seconds=delay)
    session.flush()
    return DeliveryStatus(row.status)


class Dispatcher:
    """Delivers the outbox. ``run_once`` does one claim → send → record round (tests and
    ``foresight notify run --once`` call it); ``start`` runs rounds in a thread until ``stop``.
    ``clock`` and ``rng`` are injectable so that tests need no waiting."""

    def __init__(
        self,
        db: Database,
        *,
        policy: DispatchPolicy | None = None,
        senders: Mapping[ChannelKind, Sender] | None = None,
        options: SenderOptions | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: Callable[[], float] = random.random,
        node: str | None = None,
    ) -> None:
        self.db = db
        self.policy = policy or DispatchPolicy()
        self.senders = dict(senders) if senders else default_senders(options or SenderOptions())
        self.clock = clock
        self.rng = rng
        self.node = node or f"{socket.gethostname()}:{uuid.uuid4().hex[:6]}"
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.totals = Counts()

    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> Dispatcher:
        return cls(
            db,
            policy=DispatchPolicy.from_settings(settings),
            options=SenderOptions(
                timeout_s=settings.notify_timeout_s,
                slack_api_base_url=settings.slack_api_base_url,
            ),
        )

    # --- one round --------------------------------------------------------------------------

    def run_once(self) -> Counts:
        counts = Counts()
        claimed = self.claim(counts)
        if not claimed:
            return counts
        if self.policy.concurrency > 1 and len(claimed) > 1:
            pool = self._pool or ThreadPoolExecutor(self.policy.concurrency, "notify-send")
            try:
                statuses = list(pool.map(self.deliver, claimed))
            finally:
                if self._pool is None:
                    pool.shutdown()
        else:
            statuses = [self.deliver(item) for item in claimed]
        for status in statuses:
            if status is DeliveryStatus.delivered:
                counts.delivered += 1
            elif status is DeliveryStatus.dead:
                counts.dead += 1
            elif status is DeliveryStatus.pending:
                counts.retried += 1
        self._add(counts)
        return counts

    def claim(self, counts: Counts | None = None) -> list[Claimed]:
        counts = counts if counts is not None else Counts()
        now = self.clock()
        with self.db.transaction(write=False) as session:
            if not repository.any_due(session, now=now):
                return []  # the common case costs a read, not SQLite's write lock
        claimed: list[Claimed] = []
        with self.db.transaction() as session:
            rows = repository.claim_due(session, now=now, limit=self.policy.batch_size)
            if not rows:
                return []
            channels = repository.lock_channels(session, sorted({r.channel_id for r in rows}))
            windows: dict[uuid.UUID, list[datetime]] = {}
            for row in rows:
                channel = channels.get(row.channel_id)
                if channel is None:  # deleted meanwhile: its entries go with it
                    continue
                if row.claim_token is not None and self._lease_expired(session, row, now):
                    continue  # dead-lettered: it kept failing without a result
                if self._defer(session, row, channel, now, windows):
                    counts.deferred += 1
                    continue
                attempt = start_attempt(session, row, now=now, lease_s=self.policy.lease_s)
                claimed.append(
                    Claimed(
                        delivery=Delivery(row.id, row.event, dict(row.payload), row.attempts),
                        target=target_of(channel),
                        attempt_id=attempt.id,
                    )
                )
            session.flush()
        counts.claimed += len(claimed)
        return claimed

    def _lease_expired(self, session: Session, row: NotificationOutbox, now: datetime) -> bool:
        """A previous claim's lease ran out with no result recorded (its dispatcher stopped).
        Note it in the log; dead-letter the entry if that was its last attempt."""
        assert row.claim_token is not None
        previous = repository.get_attempt(session, row.claim_token)
        message = "no result recorded before the lease expired (dispatcher stopped?)"
        if previous is not None and previous.ok is None:
            previous.error = message
        log.warning("notification_lease_expired", delivery_id=str(row.id), attempts=row.attempts)
        row.claim_token = None
        row.claimed_until = None
        if row.attempts < self.policy.max_attempts:
            return False
        row.status = DeliveryStatus.dead
        row.dead_at = now
        row.last_error = message
        if previous is not None:
            previous.dead_lettered = True
        return True

    def _defer(
        self,
        session: Session,
        row: NotificationOutbox,
        channel: NotificationChannel,
        now: datetime,
        windows: dict[uuid.UUID, list[datetime]],
    ) -> bool:
        if row.event == TEST_EVENT:
            return False
        if Severity(row.severity) is not Severity.emergency:
            until = quiet_until(
                now,
                start=channel.quiet_start,
                end=channel.quiet_end,
                timezone=channel.quiet_timezone,
            )
            if until is not None:
                row.next_attempt_at = until
                row.deferred_reason = "quiet_hours"
                return True
        limit = channel.rate_limit_per_minute
        if limit is None:
            return False
        if channel.id not in windows:
            windows[channel.id] = repository.attempt_starts(
                session, channel_id=channel.id, since=now - RATE_WINDOW
            )
        window = windows[channel.id]
        if len(window) >= limit:
            # A slot frees when the oldest send that keeps the count at the limit leaves it.
            row.next_attempt_at = window[len(window) - limit] + RATE_WINDOW
            row.deferred_reason = "rate_limit"
            return True
        window.append(now)
        return False

    def deliver(self, claimed: Claimed) -> DeliveryStatus | None:
        sender = self.senders[claimed.target.kind]
        started = time.monotonic()
        try:
            result = sender.send(claimed.delivery, claimed.target)
        except Exception as exc:  # noqa: BLE001 - a sender bug must not kill the dispatcher
            log.exception("notification_sender_failed", delivery_id=str(claimed.delivery.id))
            result = SendResult(False, error=f"{type(exc).__name__}: {exc}"[:500])
        return self.record(claimed, result, started)

    def record(self, claimed: Claimed, result: SendResult, started: float) -> DeliveryStatus | None:
        with self.db.transaction() as session:
            status = record_result(
                session,
                claimed=claimed,
                result=result,
                started=started,
                now=self.clock(),
                policy=self.policy,
                rng=self.rng,
            )
        log.info(
            "notification_attempt",
            delivery_id=str(claimed.delivery.id),
            channel_id=str(claimed.target.id),
            attempt=claimed.delivery.attempt,
            ok=result.ok,
            status_code=result.status_code,
            error=result.error,
            outcome=str(status) if status else "lease_lost",
        )
        return status

    def _add(self, counts: Counts) -> None:
        self.totals.claimed += counts.claimed
        self.totals.delivered += counts.delivered
        self.totals.retried += counts.retried
        self.totals.dead += counts.dead
        self.totals.deferred += counts.deferred

    # --- background thread ------------------------------------------------------------------

    def start(self) -> None:
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(self.policy.concurrency, "notify-send")
        self._thread = threading.Thread(target=self._run, name="notify-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the round in progress (its sends are bounded by the timeout), then return."""
        self.stop_soon()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def stop_soon(self) -> None:
        """Ask the loop to end after its round (safe in a signal handler)."""
        self._stopping.set()
        outbox.wakeup.set()

    def _run(self) -> None:
        log.info("notification_dispatcher_started", node=self.node)
        while not self._stopping.is_set():
            # Cleared before the round: a commit during it leaves the event set for the next.
            outbox.wakeup.clear()
            busy = False
            try:
                counts = self.run_once()
                busy = counts.claimed + counts.deferred >= self.policy.batch_size
            except Exception:  # noqa: BLE001 - logged; the next round tries again
                log.exception("notification_dispatch_failed")
            if not busy:
                outbox.wakeup.wait(self.policy.poll_interval_s)

    def run_forever(self) -> None:
        """Run rounds in the calling thread until ``stop`` (from a signal handler)."""
        self._pool = ThreadPoolExecutor(self.policy.concurrency, "notify-send")
        try:
            self._run()
        finally:
            self._pool.shutdown(wait=True)
            self._pool = None
