"""Anomaly thresholds tuned by people's verdicts on anomaly alerts (issue 5, the closed loop).

A verdict on a ``detector:*`` alert (``prediction_feedback`` rows with an ``alert_id``) moves
the flag threshold of the detector that raised it, for that asset only: the per-sensor detector
of the alert's ``sensor``, or the asset's multivariate detector. Each alert counts once, with
its latest verdict (changing one's mind replaces the earlier verdict). Walking the detector's
alerts in the order they were raised (``triggered_at``), each with its verdict::

    level = 0
    false_alarm:  level = min(MAX_STEPS, level + 1)
    confirmed:    level = max(0, level - 1)
    threshold scale = STEP ** level            (1, 1.25, 1.56, 1.95, 2.44)

A minute is flagged when its score reaches the scale instead of 1 (scores are divided by it,
as the tenant's ``anomaly_sensitivity`` multiplies them), so each false alarm asks for a 25 %
stronger anomaly on that sensor, at most 2.44 times the default; a confirmed alert undoes one
step (it never makes a detector more sensitive than the default). Rule alerts take verdicts
too, but their thresholds are the rule's own (edit the rule): they are not tuned here.

The scales are a pure function of the stored verdicts, so every detection process computes the
same ones; :class:`Tuning` re-reads them when the verdicts' fingerprint (count, newest) changes,
checked with the rules (every ``FORESIGHT_DETECTION_RELOAD_INTERVAL_S``): no restart needed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from foresight.kit.time import as_utc
from foresight.models import Alert, FeedbackVerdict, PredictionFeedback

STEP = 1.25
MAX_STEPS = 4
DETECTOR_PREFIX = "detector:"

#: (asset id, detector name, sensor key or None for the multivariate detector)
Key = tuple[uuid.UUID, str, str | None]


def key_of(asset_id: uuid.UUID, source: str, sensor: str | None) -> Key | None:
    """The tuned detector an alert of this source belongs to (None: not an anomaly alert)."""
    if not source.startswith(DETECTOR_PREFIX):
        return None
    detector = source[len(DETECTOR_PREFIX) :]
    return (asset_id, detector, sensor if detector == "sensor" else None)


def levels(verdicts: Iterable[tuple[Key, FeedbackVerdict | str]]) -> dict[Key, int]:
    """The level of each detector after these verdicts (in the order given, one per alert)."""
    out: dict[Key, int] = {}
    for key, verdict in verdicts:
        level = out.get(key, 0)
        if FeedbackVerdict(verdict) is FeedbackVerdict.false_alarm:
            out[key] = min(MAX_STEPS, level + 1)
        else:
            out[key] = max(0, level - 1)
    return out


def scale_of(level: int) -> float:
    return float(STEP**level)


def _verdict_rows(session: Session, *, tenant_id: uuid.UUID | None = None) -> list[Any]:
    stmt = (
        select(
            PredictionFeedback.alert_id,
            PredictionFeedback.verdict,
            Alert.asset_id,
            Alert.source,
            Alert.sensor,
            Alert.triggered_at,
        )
        .join(Alert, Alert.id == PredictionFeedback.alert_id)
        .where(Alert.source.like(DETECTOR_PREFIX + "%"))
        .order_by(PredictionFeedback.created_at, PredictionFeedback.id)
    )  # verdicts in the order given: the last one of an alert wins
    if tenant_id is not None:
        stmt = stmt.where(PredictionFeedback.tenant_id == tenant_id)
    return list(session.execute(stmt).all())


def scales(session: Session, *, tenant_id: uuid.UUID | None = None) -> dict[Key, float]:
    """Threshold scales that differ from 1, for every tenant (detection) or one."""
    latest: dict[uuid.UUID, tuple[datetime, str, Key, FeedbackVerdict]] = {}
    for alert_id, verdict, asset_id, source, sensor, triggered in _verdict_rows(
        session, tenant_id=tenant_id
    ):
        key = key_of(asset_id, source, sensor)
        if key is not None:
            latest[alert_id] = (as_utc(triggered), str(alert_id), key, verdict)
    in_order = [(key, verdict) for _, _, key, verdict in sorted(latest.values())]
    return {k: scale_of(n) for k, n in levels(in_order).items() if n}


def fingerprint(session: Session) -> tuple[int, datetime | None]:
    """Changes whenever an alert verdict is added (or removed with its alert)."""
    count, newest = session.execute(
        select(func.count(PredictionFeedback.id), func.max(PredictionFeedback.created_at)).where(
            PredictionFeedback.alert_id.is_not(None)
        )
    ).one()
    return int(count), newest


class Tuning:
    """The scales detection applies, re-read when the verdicts changed."""

    def __init__(self) -> None:
        self.scales: dict[Key, float] = {}
        self._fingerprint: tuple[int, datetime | None] | None = None

    def refresh(self, session: Session) -> bool:
        found = fingerprint(session)
        if found == self._fingerprint:
            return False
        self.scales = scales(session)
        self._fingerprint = found
        return True

    def factor(self, asset_id: uuid.UUID, detector: str, sensor: str | None = None) -> float:
        """What the detector's scores are multiplied by (1 / the threshold scale)."""
        scale = self.scales.get((asset_id, detector, sensor))
        return 1.0 if scale is None else 1.0 / scale
