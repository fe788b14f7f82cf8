"""The detector's float32 sorts give numpy's float64 quantiles and medians to within 10⁻⁶ of
each row's spread, whatever the offset of the values (a 10⁶-sized level, NaN gaps)."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from foresight.detection.anomaly import (
    _middle,
    _quantiles,
    _row_medians,
    _row_std,
    _sorted_mad,
    _sorted_rows,
    _sorted_span,
)


def _row_quantiles(
    x: np.ndarray, probabilities: tuple[float, ...], centre: np.ndarray | None = None
) -> list[np.ndarray]:
    """Quantiles of each row ignoring NaN, as the detector takes them: one float32 sort."""
    ordered, n = _sorted_rows(x, centre, ~np.isnan(x))
    return _quantiles(ordered, n, probabilities, centre)


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


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([0.0, 50.0, -3e4, 1e6]),
       st.sampled_from([1e-3, 1.0, 250.0]), st.sampled_from([0.0, 0.2, 0.6]))  # fmt: skip
def test_the_mad_from_one_sort_matches_numpy(
    seed: int, offset: float, scale: float, gaps: float
) -> None:
    """The baseline's MAD and standard deviation come from the window's one sort (no sort of
    the distances): numpy's own, to within 10⁻⁶ of the spread, odd and even counts, gaps,
    ties and a row with nothing."""
    x = _rows(seed, offset, scale, gaps)
    x[1, :40] = offset + 1.0  # mostly ties
    use = ~np.isnan(x)
    centre = _middle(x)
    ordered, n = _sorted_rows(x, centre, use)
    (median,) = _quantiles(ordered, n, (0.5,), centre)
    mad = _sorted_mad(ordered, n, median - centre)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want_median = np.nanmedian(x, axis=1)
        want_mad = np.nanmedian(np.abs(x - want_median[:, None]), axis=1)
        want_std = np.nanstd(x, axis=1)
        spread = np.nanmax(x, axis=1) - np.nanmin(x, axis=1)
    assert np.array_equal(np.isnan(mad), np.isnan(want_mad))
    ok = ~np.isnan(want_mad)
    assert np.all(np.abs(mad[ok] - want_mad[ok]) <= 1e-6 * spread[ok] + 1e-12 * abs(offset))
    assert np.allclose(_sorted_span(ordered, n)[ok], spread[ok], rtol=1e-6, atol=1e-9)
    std = _row_std(x, use)
    assert np.array_equal(np.isnan(std), np.isnan(want_std))
    assert np.allclose(std[ok], want_std[ok], rtol=1e-9, atol=1e-12 * abs(offset))


def test_a_row_missing_every_eighth_value_is_centred_on_its_values() -> None:
    """The first baseline's centre is the median of every 8th value, or of all where those are
    missing: never 0 for values near 50 (the float32 sort would lose their precision)."""
    rng = np.random.default_rng(3)
    x = 50.0 + 1e-3 * rng.normal(size=(2, 64))
    x[0, ::8] = np.nan
    centre = _middle(x)
    assert np.all(np.abs(centre - 50.0) < 0.01)
    (median,) = _row_quantiles(x, (0.5,), centre)
    assert np.allclose(median, np.nanmedian(x, axis=1), rtol=0, atol=1e-9)
