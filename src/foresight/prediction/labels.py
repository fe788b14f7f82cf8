"""Labels from maintenance records, and per-asset event look-ups shared with the features.

A failure's time is its ``started_at`` ("for a failure: when it occurred", as the maintenance API
documents it), or its ``ended_at`` when no start was recorded. Cancelled records are ignored.

For a row at prediction time t of an asset:

- ``ttf_days``: days from t to the asset's first failure strictly after t; NaN when none
  followed in the stored history (the row is right-censored);
- ``observed_days``: days from t to the end of the asset's observed data (its newest reading),
  the censoring horizon: a censored row says "no failure for at least ``observed_days``".

``fails_within`` and ``capped_rul`` turn these into the targets a model trains on.

Events are kept as one sorted int64 array of composite keys ``asset << 43 | time_ms`` (times
are epoch milliseconds, 0 ≤ t < 2^43, i.e. before the year 2248), so every look-up for every
row is one ``searchsorted``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

DAY_MS = 86_400_000
TIME_BITS = 43
TIME_LIMIT = 1 << TIME_BITS


def event_keys(asset_index: npt.ArrayLike, time_ms: npt.ArrayLike) -> I64:
    """Sorted composite keys of events (asset index, time); times are clipped into range."""
    a = np.asarray(asset_index, dtype=np.int64)
    t = np.clip(np.asarray(time_ms, dtype=np.int64), 0, TIME_LIMIT - 1)
    return np.sort((a << TIME_BITS) + t)


def _row_keys(asset_index: I64, t_ms: I64) -> I64:
    return (asset_index << TIME_BITS) + np.clip(t_ms, -1, TIME_LIMIT - 1)


def count_in_window(keys: I64, asset_index: I64, t_ms: I64, window_ms: int) -> F64:
    """How many events of each row's asset have time in (t - window, t]."""
    hi = np.searchsorted(keys, _row_keys(asset_index, t_ms), side="right")
    lo = np.searchsorted(keys, _row_keys(asset_index, t_ms - window_ms), side="right")
    return (hi - lo).astype(np.float64)


def count_until(keys: I64, asset_index: I64, t_ms: I64) -> F64:
    """How many events of each row's asset have time ≤ t."""
    hi = np.searchsorted(keys, _row_keys(asset_index, t_ms), side="right")
    lo = np.searchsorted(keys, asset_index << TIME_BITS, side="left")
    return (hi - lo).astype(np.float64)


def days_since_last(keys: I64, asset_index: I64, t_ms: I64) -> F64:
    """Days from each row's asset's latest event at or before t to t; NaN if none."""
    if not len(keys):
        return np.full(t_ms.shape, np.nan)
    idx = np.searchsorted(keys, _row_keys(asset_index, t_ms), side="right") - 1
    safe = np.maximum(idx, 0)
    found = (idx >= 0) & (keys[safe] >> TIME_BITS == asset_index)
    when = keys[safe] & (TIME_LIMIT - 1)
    return np.where(found, (t_ms - when) / DAY_MS, np.nan)


def days_to_next(keys: I64, asset_index: I64, t_ms: I64) -> F64:
    """Days from t to each row's asset's first event strictly after t; NaN if none."""
    if not len(keys):
        return np.full(t_ms.shape, np.nan)
    idx = np.searchsorted(keys, _row_keys(asset_index, t_ms), side="right")
    safe = np.minimum(idx, len(keys) - 1)
    found = (idx < len(keys)) & (keys[safe] >> TIME_BITS == asset_index)
    when = keys[safe] & (TIME_LIMIT - 1)
    return np.where(found, (when - t_ms) / DAY_MS, np.nan)


def fails_within(ttf_days: F64, observed_days: F64, horizon_days: float) -> F64:
    """1.0 if a failure came within the horizon, 0.0 if the asset was seen to outlive it, and
    NaN where the data ended first without a failure (censored: unknown)."""
    failed = ttf_days <= horizon_days
    survived = ~failed & (observed_days >= horizon_days)
    out = np.full(ttf_days.shape, np.nan)
    out[failed] = 1.0
    out[survived] = 0.0
    return out


def capped_rul(ttf_days: F64, observed_days: F64, max_days: float) -> tuple[F64, F64]:
    """(target, known): RUL capped at ``max_days``. A censored row whose observed horizon
    reaches the cap is known to be at the cap; one that does not is unknown (NaN)."""
    target = np.minimum(ttf_days, max_days)
    censored = np.isnan(ttf_days)
    target[censored & (observed_days >= max_days)] = max_days
    return target, ~np.isnan(target)
