"""Only score rows that change what is stored leave the anomaly stage (a minute keeps its
largest score): repeats of the open minute that do not beat it are dropped, the rest pass."""

from __future__ import annotations

import uuid

from foresight.detection.anomaly import MinuteScore
from foresight.detection.anomaly_stage import AnomalyStage


def _row(asset: uuid.UUID, detector: str, minute: int, score: float) -> MinuteScore:
    return MinuteScore(asset, uuid.UUID(int=1), detector, minute * 60_000, score, "spike", ("x",))


def test_only_rows_that_raise_a_minute_or_start_one_pass() -> None:
    stage = AnomalyStage()
    a, b = uuid.uuid4(), uuid.uuid4()
    first = [_row(a, "sensor", 10, 0.4), _row(b, "sensor", 10, 0.2)]
    assert stage.news(first) == first
    # Same minute: lower or equal is dropped, higher passes; another detector is its own key.
    assert stage.news([_row(a, "sensor", 10, 0.3), _row(b, "sensor", 10, 0.2)]) == []
    higher = [_row(a, "sensor", 10, 0.9), _row(a, "multivariate", 10, 0.1)]
    assert stage.news(higher) == higher
    assert stage.news([_row(a, "sensor", 10, 0.9)]) == []
    # A new minute passes whatever its score, and becomes the one compared against.
    assert stage.news([_row(a, "sensor", 11, 0.05)]) == [_row(a, "sensor", 11, 0.05)]
    assert stage.news([_row(a, "sensor", 11, 0.01)]) == []
    # An older minute (replayed out of order) always passes and changes nothing.
    old = [_row(a, "sensor", 3, 0.01)]
    assert stage.news(old) == old
    assert stage.news([_row(a, "sensor", 11, 0.07)]) == [_row(a, "sensor", 11, 0.07)]
    # Within one batch rows are minute-ordered per key: each passes against the one before.
    batch = [_row(b, "sensor", 10, 0.5), _row(b, "sensor", 11, 0.1), _row(b, "sensor", 11, 0.1)]
    assert stage.news(batch) == batch[:2]
