"""Live updates wired for the two kinds of process.

* :class:`LiveUpdates`, an API node: a hub for its WebSocket clients and a readings tap on its
  writer (embedded), or, with NATS, a relay that publishes this node's events and subscribes to
  everyone's.
* :class:`LiveProducer`, a `foresight worker`: a readings tap on its pipeline and a NATS
  publisher; it has no clients of its own.

Both offer the same producer API: ``observe`` (a pipeline observer), ``alert_listener`` (a
post-commit alert listener) and ``publish(tenant_id, asset_id, event)`` for anything else
(anomaly and health changes: build the event with ``live.events``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from foresight.config import Settings
from foresight.detection.anomaly import MinuteScore
from foresight.kit.db import Database
from foresight.kit.time import from_ms
from foresight.live import logs
from foresight.live.events import Event, alert_event, anomaly_event, with_asset
from foresight.live.hub import LiveHub
from foresight.live.nats_relay import NatsEvents, check_prefix
from foresight.live.tap import ReadingsTap
from foresight.models import Alert
from foresight.timeseries.store import WriteResult


class LiveUpdates:
    def __init__(self, db: Database, hub: LiveHub, relay: NatsEvents | None = None) -> None:
        self.hub = hub
        self.relay = relay
        self.tap = ReadingsTap(db, hub.publish_readings, wanted=hub.has_clients)

    @classmethod
    def from_settings(
        cls, settings: Settings, db: Database, *, registry: CollectorRegistry | None = None
    ) -> LiveUpdates:
        hub = LiveHub(
            readings_interval_s=settings.ws_readings_interval_s,
            client_queue=settings.ws_client_queue,
            registry=registry,
        )
        relay = None
        if settings.nats_url:
            check_prefix(settings.ws_nats_subject_prefix, settings.nats_subject_prefix)
            relay = NatsEvents(
                settings.nats_url, settings.ws_nats_subject_prefix, name="foresight-api-live"
            )
        return cls(db, hub, relay)

    def observe(self, write: WriteResult) -> None:
        self.tap.observe(write)

    def publish(
        self, tenant_id: uuid.UUID, asset_id: uuid.UUID | None, event: Mapping[str, Any]
    ) -> None:
        self.hub.publish(tenant_id, asset_id, event)

    def alert_listener(self, kind: str, alert: Alert) -> None:
        self.publish(alert.tenant_id, alert.asset_id, alert_event(kind, alert))

    def anomaly_listener(self, score: MinuteScore) -> None:
        """A flagged minute (or the first normal one after) of an asset's anomaly score."""
        self.publish(score.tenant_id, score.asset_id, anomaly_from_score(score))

    async def start(self) -> None:
        logs.install()  # ?token= stays out of the server's handshake log lines
        await self.hub.start()
        if self.relay is not None:
            await self.relay.start(
                on_event=self.hub.receive_event, on_readings=self.hub.receive_readings
            )
            self.hub.relay = self.relay
        self.tap.start()

    async def stop(self) -> None:
        self.tap.stop()
        await self.hub.stop()
        if self.relay is not None:
            self.hub.relay = None
            await self.relay.stop()


class LiveProducer:
    """A worker's side: what it persists (and detects) goes to NATS for the API nodes."""

    def __init__(self, db: Database, relay: NatsEvents, *, readings_interval_s: float) -> None:
        self.relay = relay
        self.tap = ReadingsTap(db, relay.publish_readings, min_gap_s=readings_interval_s)

    @classmethod
    def from_settings(cls, settings: Settings, db: Database) -> LiveProducer:
        check_prefix(settings.ws_nats_subject_prefix, settings.nats_subject_prefix)
        relay = NatsEvents(
            settings.nats_url, settings.ws_nats_subject_prefix, name="foresight-worker-live"
        )
        return cls(db, relay, readings_interval_s=settings.ws_readings_interval_s)

    def observe(self, write: WriteResult) -> None:
        self.tap.observe(write)

    def publish(
        self, tenant_id: uuid.UUID, asset_id: uuid.UUID | None, event: Mapping[str, Any]
    ) -> None:
        self.relay.publish_event(tenant_id, with_asset(asset_id, event))

    def alert_listener(self, kind: str, alert: Alert) -> None:
        self.publish(alert.tenant_id, alert.asset_id, alert_event(kind, alert))

    def anomaly_listener(self, score: MinuteScore) -> None:
        """A flagged minute (or the first normal one after) of an asset's anomaly score."""
        self.publish(score.tenant_id, score.asset_id, anomaly_from_score(score))

    async def start(self) -> None:
        await self.relay.start()
        self.tap.start()

    async def stop(self) -> None:
        self.tap.stop()
        await self.relay.stop()


def anomaly_from_score(score: MinuteScore) -> Event:
    sensors = list(score.sensors)
    return anomaly_event(
        sensor=sensors[0] if sensors else None,
        ts=from_ms(score.minute_ms),
        score=round(float(score.score), 3),
        flag=score.score >= 1.0,
        drivers=sensors,
        detector=score.detector,
        kind=score.kind,
    )
