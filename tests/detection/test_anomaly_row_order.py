"""SeriesBank scores series the same whatever order their rows were allocated in."""

from __future__ import annotations

import numpy as np

from foresight.detection.anomaly import AnomalyConfig, SeriesBank


def test_rows_grouped_but_not_sorted_score_like_sorted_ones() -> None:
    rng = np.random.default_rng(1)
    a = SeriesBank(AnomalyConfig())
    b = SeriesBank(AnomalyConfig())
    for key in ("s1", "s2", "s3"):
        a.row(key)
    for key in ("s3", "s1", "s2"):  # first seen in another order: rows not in key order
        b.row(key)
    for batch in range(12):
        n = 25
        values = {k: rng.normal(10 * i, 1, n) for i, k in enumerate(("s1", "s2", "s3"))}
        if batch == 10:
            values["s2"][5] += 40  # a spike
        ts = np.arange(batch * n, (batch + 1) * n, dtype=np.int64) * 1000
        got = {}
        for bank in (a, b):
            rows = np.concatenate([np.full(n, bank.row(k), np.int64) for k in values])
            scores, _ = bank.score(rows, np.tile(ts, 3), np.concatenate(list(values.values())))
            got[id(bank)] = scores
        np.testing.assert_allclose(got[id(a)], got[id(b)])
        if batch == 10:
            assert got[id(a)][n + 5] >= 1.0  # and the spike was found
