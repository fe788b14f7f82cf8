"""The detector's float32 sorts give numpy's float64 quantiles and medians to within 10⁻⁶ of
each row's spread, whatever the offset of the values (a 10⁶-sized level, NaN gaps)."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from foresight.detection.anomaly import _middle, _row_medians, _row_quantiles


def _rows(seed: int, offset: float, scale: float, gaps: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = offset + scale * rng.standard_t(3, size=(40, 64))
    x[rng.random(x.shape) < gaps] = np.nan
    x[0] = np.nan  # a row with nothing
    return x


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([0.0, 50.0, -3e4, 1e6]),
       st.sampled_from([1e-3, 1.0, 250.0]), st.sampled_from([0.0, 0.2]))  # fmt: skip
def test_quantiles_match_numpy(seed: int, offset: float, scale: float, gaps: float) -> None:
    x = _rows(seed, offset, scale, gaps)
    probabilities = (0.5, 0.025, 0.975)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanquantile(x, probabilities, axis=1)
        spread = np.nanmax(x, axis=1) - np.nanmin(x, axis=1)
    got = _row_quantiles(x, probabilities, _middle(x))
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(np.isnan(g), np.isnan(w))
        ok = ~np.isnan(w)
        assert np.all(np.abs(g[ok] - w[ok]) <= 1e-6 * spread[ok] + 1e-12 * abs(offset))
    # Distances (already centred): no centre needed.
    d = np.abs(x - want[0][:, None])
    (mad,) = _row_quantiles(d, (0.5,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want_mad = np.nanmedian(d, axis=1)
    ok = ~np.isnan(want_mad)
    assert np.all(np.abs(mad[ok] - want_mad[ok]) <= 1e-6 * spread[ok])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([0.0, 50.0, 1e6]), st.sampled_from([0.0, 0.05]))
def test_medians_match_numpy_and_keep_its_nan(seed: int, offset: float, gaps: float) -> None:
    rng = np.random.default_rng(seed)
    x = offset + rng.normal(size=(200, 16))
    x[rng.random(x.shape) < gaps] = np.nan
    want = np.median(x, axis=1)  # NaN where a row has one
    got = _row_medians(x, np.full(200, offset))
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    assert np.all(np.abs(got[ok] - want[ok]) <= 1e-6)
    diffs = np.diff(x, axis=1)
    got_d, want_d = _row_medians(diffs), np.median(diffs, axis=1)
    assert np.array_equal(np.isnan(got_d), np.isnan(want_d))
    assert np.all(np.abs(got_d[~np.isnan(want_d)] - want_d[~np.isnan(want_d)]) <= 1e-6)


def test_a_quantised_sawtooth_is_not_an_anomaly() -> None:
    """Its differences are all one value but one: a spread left by rounding is no spread (the
    baseline noise comes from the standard deviation, as in float64), so nothing is flagged."""
    from foresight.detection.anomaly import AnomalyConfig, SeriesState, score_series

    i = np.arange(400)
    values = 60.0 + (i % 7) * 0.3
    scores, _ = score_series(SeriesState(), values, AnomalyConfig(), i.astype(np.int64) * 60_000)
    assert scores.max() < 1.0
