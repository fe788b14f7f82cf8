"""Resolve a batch's (asset tag, sensor key) pairs to series and persist its points.

Runs wherever batches are persisted: the in-process writer (embedded) or `foresight worker`
(scale-out). Sensors unknown to an asset are created on the fly unless the tenant turned that
off (tenant setting ``auto_create_sensors``, default true); unknown assets are rejected rows unless
the tenant enabled ``auto_register_assets`` (default false). Creations are audited.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from foresight.assets import service as assets_service
from foresight.assets.schemas import AssetCreate, SensorCreate
from foresight.auth.schemas import Principal
from foresight.ingest.batch import Batch, RowError
from foresight.models import ActorType, Role
from foresight.tenants import service as tenants_service
from foresight.timeseries.latest import LatestCache
from foresight.timeseries.store import Points, WriteResult, write_points

CACHE_TTL_S = 30.0


@dataclass
class Outcome:
    """What happened to one batch: points accepted (stored, or already stored) and refused."""

    accepted: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return len(self.errors)


class SeriesCache:
    """(tenant, tag, key) → series id, and tenant ingest settings, for a few seconds.

    A short TTL bounds staleness after a tag is renamed or a sensor deleted elsewhere.
    """

    def __init__(self, ttl_s: float = CACHE_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._series: dict[tuple[uuid.UUID, str, str], tuple[int, float]] = {}
        self._settings: dict[uuid.UUID, tuple[dict[str, Any], float]] = {}

    def get(self, tenant_id: uuid.UUID, tag: str, key: str) -> int | None:
        hit = self._series.get((tenant_id, tag, key))
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def put(self, tenant_id: uuid.UUID, tag: str, key: str, series_id: int) -> None:
        if len(self._series) > 1_000_000:
            self._series.clear()
        self._series[(tenant_id, tag, key)] = (series_id, time.monotonic() + self.ttl_s)

    def tenant_settings(self, session: Session, tenant_id: uuid.UUID) -> dict[str, Any]:
        hit = self._settings.get(tenant_id)
        if hit is not None and hit[1] >= time.monotonic():
            return hit[0]
        settings = dict(tenants_service.get(session, tenant_id).settings or {})
        self._settings[tenant_id] = (settings, time.monotonic() + self.ttl_s)
        return settings

    def clear(self) -> None:
        self._series.clear()
        self._settings.clear()


def _flag(value: Any, *, default: bool) -> bool:
    """A tenant setting read as a boolean ("false" or 0 mean off, not on)."""
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _principal(batch: Batch) -> Principal:
    # Creations made on the fly are attributed to the ingest path and the credential's label.
    return Principal(
        batch.tenant_id, ActorType.system, uuid.UUID(int=0), f"ingest:{batch.actor_label}",
        Role.admin,
    )  # fmt: skip


class Pipeline:
    def __init__(
        self,
        cache: SeriesCache | None = None,
        latest: LatestCache | None = None,
        observers: list[Callable[[WriteResult], None]] | None = None,
    ) -> None:
        self.cache = cache or SeriesCache()
        # The in-memory latest values served by the API, fed after each commit (if any).
        self.latest = latest
        # Stages after persistence (detection): called with each committed write.
        self.observers = observers or []

    def resolve(
        self, session: Session, batch: Batch, created: dict[tuple[uuid.UUID, str, str], int]
    ) -> tuple[Points, Outcome]:
        """The batch's points as series points, and the rows refused while resolving.

        Series of sensors created in this transaction go to ``created``, not to the cache: the
        caller remembers them only once the transaction has committed.
        """
        outcome = Outcome(errors=list(batch.errors))
        tenant = batch.tenant_id

        def lookup(tag: str, key: str) -> int | None:
            return created.get((tenant, tag, key)) or self.cache.get(tenant, tag, key)

        # Work per distinct (asset, sensor) pair, then map every point with one dict lookup.
        pairs = set(zip(batch.asset, batch.sensor, strict=True))
        series = {pair: lookup(*pair) for pair in pairs}
        missing = sorted(pair for pair, sid in series.items() if sid is None)
        unknown_assets: set[str] = set()
        if missing:
            unknown_assets = self._load(session, batch, missing, created)
            series.update({pair: lookup(*pair) for pair in missing})
        points = Points()
        ids = [series[pair] for pair in zip(batch.asset, batch.sensor, strict=True)]
        if None not in series.values():
            points.series_id, points.ts_ms, points.value = ids, list(batch.ts_ms), list(batch.value)  # type: ignore[assignment]
        else:
            for i, series_id in enumerate(ids):
                if series_id is None:
                    tag, key = batch.asset[i], batch.sensor[i]
                    reason = (
                        f"unknown asset {tag!r} (register it, or enable auto_register_assets)"
                        if tag in unknown_assets
                        else f"unknown sensor {key!r} on {tag!r} (auto_create_sensors is off)"
                    )
                    outcome.errors.append(RowError(batch.row[i], reason, tag, key))
                    continue
                points.append(series_id, batch.ts_ms[i], batch.value[i])
        outcome.accepted = len(points)
        outcome.errors.sort(key=lambda e: e.row)
        return points, outcome

    def _load(
        self,
        session: Session,
        batch: Batch,
        pairs: list[tuple[str, str]],
        created: dict[tuple[uuid.UUID, str, str], int],
    ) -> set[str]:
        tenant = batch.tenant_id
        settings = self.cache.tenant_settings(session, tenant)
        create_sensors = _flag(settings.get("auto_create_sensors"), default=True)
        register_assets = _flag(settings.get("auto_register_assets"), default=False)
        tags = sorted({tag for tag, _ in pairs})
        known = assets_service.series_by_tag(session, tenant_id=tenant, tags=tags)
        unknown_assets: set[str] = set()
        principal = _principal(batch)
        for tag, key in pairs:
            if tag not in known:
                if not register_assets:
                    unknown_assets.add(tag)
                    continue
                asset = assets_service.create_asset(
                    session, principal=principal, data=AssetCreate(tag=tag, name=tag)
                )
                known[tag] = (asset.id, {})
            asset_id, sensors = known[tag]
            if key not in sensors:
                if not create_sensors:
                    continue
                sensor = assets_service.create_sensor(
                    session, principal=principal, asset_id=asset_id, data=SensorCreate(key=key)
                )
                sensors[key] = created[(tenant, tag, key)] = sensor.series_id
            else:
                self.cache.put(tenant, tag, key, sensors[key])
        return unknown_assets

    def persist(self, session: Session, batches: list[Batch]) -> Persisted:
        """Resolve and write several batches in the caller's transaction (one group commit).

        Call ``remember`` with the result after the transaction commits.
        """
        combined = Points()
        persisted = Persisted()
        for batch in batches:
            points, outcome = self.resolve(session, batch, persisted.created)
            combined.extend(points)
            persisted.outcomes.append(outcome)
        persisted.write = write_points(session, combined)
        return persisted

    def remember(self, persisted: Persisted) -> None:
        """After the transaction committed: cache new sensors, publish the latest points."""
        for (tenant_id, tag, key), series_id in persisted.created.items():
            self.cache.put(tenant_id, tag, key, series_id)
        if self.latest is not None and persisted.write.latest:
            self.latest.observe(persisted.write.latest)
        if persisted.write.inserted:
            for observer in self.observers:
                observer(persisted.write)


@dataclass
class Persisted:
    outcomes: list[Outcome] = field(default_factory=list)
    write: WriteResult = field(default_factory=lambda: WriteResult(0, 0))
    # Sensors created in the transaction, cached only once it has committed.
    created: dict[tuple[uuid.UUID, str, str], int] = field(default_factory=dict)
