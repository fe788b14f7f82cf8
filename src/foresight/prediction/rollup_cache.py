"""Sealed rollup buckets of scored fleets, kept in memory from one scoring to the next.

Scoring an asset reads its series' buckets over the baseline days and the longest window: a
fleet of a thousand assets is close to a million buckets a scoring, nearly all of them the same
as an hour before. A bucket that ends by the start of the 6-hour block holding its series'
newest point is *sealed* (``timeseries.store.SEALED_BLOCK_MS``): it can only change by a write
into it, or a retention delete, and either gives the series a new ``series_latest.revision``.
So what one scoring read of sealed buckets is kept, with each series' revision, and the next
scoring of the same fleet reads from the database only what is not kept (the newest hours,
a new day) or no longer valid (a series whose revision moved: all of its ranges again).

The buckets served are the very values the database holds, so the features are the same as
without the cache, to the bit. Safe under concurrent writers on both backends: each series'
revision and newest time are read before its buckets (PostgreSQL's read committed takes a new
snapshot per statement), so a write that lands in between either shows in the buckets read or
moves the revision, and a bucket kept under a stale revision is never used.

Entries are per fleet (the tuple of its series ids: a scheduler's tenant, a repeated batch, one
asset), least recently used dropped first, within ``set_budget_mb`` (``scoring_cache_mb``). A
fleet without an entry of its own (one asset's request after the hourly scoring of its tenant)
is served from the entries that hold its series: their parts are cut out and put together.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from foresight.timeseries.store import SEALED_BLOCK_MS

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B1 = npt.NDArray[np.bool_]

TIME_BITS = 43  # as prediction.labels: times below 2^43 ms (year 2248)
TIME_LIMIT = 1 << TIME_BITS
# A fetch's columns: bucket start (int64), then count, mean, m2, min, max, last (float64).
Columns = list[npt.NDArray[Any]]
N_COLUMNS = 7


@dataclass(frozen=True)
class Ranges:
    """What to read: bucket_ms in [lo, hi) of series ``sid``, one range an entry, sorted by
    (sid, lo); a series may have several."""

    sid: I64
    lo: I64
    hi: I64

    @classmethod
    def everything(cls, series_id: I64) -> Ranges:
        n = series_id.shape[0]
        return cls(series_id, np.zeros(n, np.int64), np.full(n, TIME_LIMIT, np.int64))

    def __len__(self) -> int:
        return int(self.sid.shape[0])

    def values(self, per_statement: int) -> Iterator[tuple[list[int], str]]:
        """Per statement: its ranges' series ids and a VALUES list of (sid, lo, hi), never
        splitting a series' ranges (integers only: they come from our own queries)."""
        n = self.sid.shape[0]
        at = 0
        sid, lo, hi = self.sid.tolist(), self.lo.tolist(), self.hi.tolist()
        while at < n:
            end = min(at + per_statement, n)
            while end < n and sid[end] == sid[end - 1]:
                end += 1
            text_ = ", ".join(map("({}, {}, {})".format, sid[at:end], lo[at:end], hi[at:end]))
            yield sid[at:end], text_
            at = end


def sealed_until(latest_ms: I64) -> I64:
    """Per series: buckets ending by this time are sealed (``SEALED_BLOCK_MS`` floor of the
    newest point; the writer truncates towards zero, never earlier than this floor)."""
    return latest_ms - np.mod(latest_ms, SEALED_BLOCK_MS)


@dataclass(frozen=True)
class _Kept:
    """One resolution's kept buckets: the ranges of the scoring that read them (each clipped
    to its sealed part, empty ones kept so that ranges pair up by position), and the buckets
    it read, sorted by (series index, start): only those inside the ranges are served (the
    rest, the newest hours, are the arrays the scoring used, shared rather than copied)."""

    sidx: I64  # per range
    lo: I64
    hi: I64
    key: I64  # per bucket: (series index << TIME_BITS) + start
    columns: Columns

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.sidx, self.lo, self.hi, self.key, *self.columns))


@dataclass(frozen=True)
class _Chunk:
    revision: I64  # per series index of the fleet
    valid: B1  # the series had a revision (a ``series_latest`` row) when read
    origin_day: I64  # per series: first data day (-1: none), from both resolutions
    kept: dict[int, _Kept]

    @property
    def nbytes(self) -> int:
        fixed = self.revision.nbytes + self.valid.nbytes + self.origin_day.nbytes
        return fixed + sum(k.nbytes for k in self.kept.values())

    def take(self, at: I64) -> _Chunk:
        """The part of the series at these indices (in this order: index i of the new chunk
        is series ``at[i]`` of this one)."""
        kept = {}
        for res, k in self.kept.items():
            # Both sorted by series index: each series' part is a slice (found by bisection,
            # so one asset out of a large fleet costs what its own buckets do).
            r = _slices(k.sidx, at)
            b = _slices(k.key, at << TIME_BITS, (at + 1) << TIME_BITS)
            start = k.key[b] & (TIME_LIMIT - 1)
            key = (_new_index(k.key[b] >> TIME_BITS, at) << TIME_BITS) + start
            ranges = (_new_index(k.sidx[r], at), k.lo[r], k.hi[r])
            kept[res] = _Kept(*ranges, key=key, columns=[c[b] for c in k.columns])
        return _Chunk(self.revision[at], self.valid[at], self.origin_day[at], kept)

    @classmethod
    def assemble(cls, n: int, parts: Sequence[tuple[I64, _Chunk]]) -> _Chunk:
        """One chunk of ``n`` series from parts (the new indices of a part's series, its
        chunk in that order); a series no part has is invalid (read again)."""
        revision = np.zeros(n, dtype=np.int64)
        valid = np.zeros(n, dtype=bool)
        origin = np.full(n, -1, dtype=np.int64)
        for at, c in parts:
            revision[at], valid[at], origin[at] = c.revision, c.valid, c.origin_day
        kept: dict[int, _Kept] = {}
        for res in {r for _, c in parts for r in c.kept}:
            pieces = [(at, c.kept[res]) for at, c in parts if res in c.kept]
            sidx = np.concatenate([at[k.sidx] for at, k in pieces])
            lo = np.concatenate([k.lo for _, k in pieces])
            hi = np.concatenate([k.hi for _, k in pieces])
            key = np.concatenate(
                [
                    (at[k.key >> TIME_BITS] << TIME_BITS) + (k.key & (TIME_LIMIT - 1))
                    for at, k in pieces
                ]
            )
            columns = [np.concatenate([k.columns[i] for _, k in pieces]) for i in range(N_COLUMNS)]
            r_order = np.lexsort((lo, sidx))  # stable: a series' ranges stay in their order
            b_order = np.argsort(key, kind="stable")
            kept[res] = _Kept(
                sidx[r_order], lo[r_order], hi[r_order], key[b_order], [c[b_order] for c in columns]
            )
        return cls(revision, valid, origin, kept)


class RollupCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._chunks: OrderedDict[tuple[int, ...], _Chunk] = OrderedDict()
        # Per series id: the key of the newest entry holding it, and its index there.
        self._holder: dict[int, tuple[tuple[int, ...], int]] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0  # buckets served from memory
        self.misses = 0  # buckets read from the database

    def __len__(self) -> int:
        return len(self._chunks)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def begin(self, series_id: I64, revision: I64, valid: B1, latest_ms: I64) -> ScoringReads:
        """A scoring's reads of the fleet whose series are ``series_id`` (sorted), with their
        revisions and newest times as just read (``valid``: the series has them)."""
        key = tuple(series_id.tolist())
        with self._lock:
            old = self._chunks.get(key)
            if old is not None:
                self._chunks.move_to_end(key)
            else:
                old = self._borrow(key)
        return ScoringReads(self, key, old, revision, valid, sealed_until(latest_ms))

    def _borrow(self, key: tuple[int, ...]) -> _Chunk | None:
        """The fleet's series cut out of the entries that hold them (None: none does)."""
        # Grouped by the holder's identity: a fleet's key is a long tuple, whose hash and
        # equality cost as many steps as it has series.
        by_holder: dict[int, tuple[tuple[int, ...], list[int], list[int]]] = {}
        for i, sid in enumerate(key):
            found = self._holder.get(sid)
            if found is not None:
                _, mine, theirs = by_holder.setdefault(id(found[0]), (found[0], [], []))
                mine.append(i)
                theirs.append(found[1])
        if not by_holder:
            return None
        parts = []
        for holder, mine, theirs in by_holder.values():
            self._chunks.move_to_end(holder)
            at = np.asarray(theirs, dtype=np.int64)
            parts.append((np.asarray(mine, dtype=np.int64), self._chunks[holder].take(at)))
        return _Chunk.assemble(len(key), parts)

    def clear(self) -> None:
        with self._lock:
            self._chunks.clear()
            self._holder.clear()
            self._bytes = 0

    def _drop(self, key: tuple[int, ...], chunk: _Chunk) -> None:
        self._bytes -= chunk.nbytes
        for sid in key:
            found = self._holder.get(sid)
            if found is not None and found[0] is key:  # (not ==: see _borrow)
                del self._holder[sid]

    def _put(self, key: tuple[int, ...], chunk: _Chunk) -> None:
        size = chunk.nbytes
        with self._lock:
            old = self._chunks.pop(key, None)
            if old is not None:
                self._drop(key, old)
            if size > self.max_bytes:
                return
            self._chunks[key] = chunk
            self._bytes += size
            for i, sid in enumerate(key):
                self._holder[sid] = (key, i)
            while self._bytes > self.max_bytes and self._chunks:
                dropped_key, dropped = self._chunks.popitem(last=False)
                self._drop(dropped_key, dropped)


def _slices(sorted_: I64, lo: I64, hi: I64 | None = None) -> I64:
    """Positions of the entries of ``sorted_`` in [lo[i], hi[i]) (``hi`` None: equal to lo),
    in the order of the intervals."""
    start = np.searchsorted(sorted_, lo, side="left")
    end = np.searchsorted(sorted_, lo if hi is None else hi, side="right" if hi is None else "left")
    sizes = end - start
    total = int(sizes.sum())
    if not total:
        return np.empty(0, np.int64)
    offsets = np.repeat(start - np.r_[0, np.cumsum(sizes)[:-1]], sizes)
    positions: I64 = np.arange(total, dtype=np.int64) + offsets
    return positions


def _new_index(old: I64, at: I64) -> I64:
    """Each old series index's position in ``at`` (every one of them is in it)."""
    order = np.argsort(at, kind="stable")
    found: I64 = order[np.searchsorted(at[order], old)].astype(np.int64)
    return found


def _ordinals(sidx: I64) -> I64:
    """Each entry's position among its series' entries (entries sorted by series)."""
    n = sidx.shape[0]
    if not n:
        return np.empty(0, np.int64)
    head = np.flatnonzero(np.r_[True, sidx[1:] != sidx[:-1]])
    sizes = np.diff(np.r_[head, n])
    return np.arange(n, dtype=np.int64) - np.repeat(head, sizes)


def _in_intervals(key: I64, lo: I64, hi: I64) -> B1:
    """key[i] in some [lo[j], hi[j]) (intervals sorted, disjoint, non-empty)."""
    if not lo.shape[0] or not key.shape[0]:
        return np.zeros(key.shape[0], dtype=bool)
    at = np.searchsorted(lo, key, side="right") - 1
    inside = at >= 0
    inside[inside] = key[inside] < hi[at[inside]]
    return inside


class ScoringReads:
    """One scoring's use of the cache: ``origins`` and ``rollups`` serve what is kept and read
    the rest through the callables given; ``finish`` keeps what this scoring read."""

    def __init__(
        self,
        cache: RollupCache,
        key: tuple[int, ...],
        old: _Chunk | None,
        revision: I64,
        valid: B1,
        sealed: I64,
    ) -> None:
        self.cache = cache
        self.key = key
        self.revision = revision
        self.valid = valid
        self.sealed = sealed
        self.old = old
        n = revision.shape[0]
        if old is not None and old.revision.shape[0] == n:
            self.fresh = old.valid & valid & (old.revision == revision)
        else:
            self.old, self.fresh = None, np.zeros(n, dtype=bool)
        self._origin_day: I64 | None = None
        self._kept: dict[int, _Kept] = {}

    def origins(self, read: Callable[[I64], I64]) -> I64:
        """Per series index: its first data day (-1: none); ``read(series indices)`` gives
        them for the series whose kept value is missing or stale."""
        n = self.revision.shape[0]
        out = np.full(n, -1, dtype=np.int64)
        stale = np.flatnonzero(~self.fresh)
        if self.old is not None:
            out[self.fresh] = self.old.origin_day[self.fresh]
        if stale.shape[0]:
            out[stale] = read(stale)
        self._origin_day = out
        return out

    def missing(self, resolution_s: int, sidx: I64, ranges: Ranges) -> Ranges:
        """What :meth:`rollups` of the same arguments will ask its ``read`` for (so that a
        caller can read several resolutions' in one statement first)."""
        return self._plan(resolution_s, sidx, ranges)[4]

    def _plan(
        self, resolution_s: int, sidx: I64, ranges: Ranges
    ) -> tuple[_Kept | None, I64, I64, B1, Ranges]:
        """(kept buckets of the resolution, the served part [lo, hi) of each range, which are
        served, what is left to read)."""
        lo, hi = ranges.lo, ranges.hi
        n = lo.shape[0]
        kept = self.old.kept.get(resolution_s) if self.old is not None else None
        ov_lo, ov_hi = hi.copy(), hi.copy()  # the part of each range served from memory
        if kept is not None and n and kept.sidx.shape[0]:
            # Ranges pair with kept ones by position within their series, when the series has
            # as many ranges as then (the baseline's and the window's).
            n_series = self.revision.shape[0]
            same_count = np.bincount(sidx, minlength=n_series) == np.bincount(
                kept.sidx, minlength=n_series
            )
            pos, kept_pos = _ordinals(sidx), _ordinals(kept.sidx)
            width = int(max(pos.max(), kept_pos.max())) + 1
            probe, kept_key = sidx * width + pos, kept.sidx * width + kept_pos
            at = np.minimum(np.searchsorted(kept_key, probe), kept_key.shape[0] - 1)
            k_lo, k_hi = np.maximum(lo, kept.lo[at]), np.minimum(hi, kept.hi[at])
            ok = self.fresh[sidx] & same_count[sidx] & (kept_key[at] == probe) & (k_lo < k_hi)
            ov_lo[ok], ov_hi[ok] = k_lo[ok], k_hi[ok]
        served = ov_lo < ov_hi
        # What is left: the part before the kept one, and after it (all of a range not served).
        both = np.r_[np.arange(n), np.arange(n)]
        m_lo = np.concatenate([lo, np.where(served, ov_hi, hi)])
        m_hi = np.concatenate([np.where(served, ov_lo, hi), hi])
        left = np.flatnonzero(m_lo < m_hi)
        left = left[np.lexsort((m_lo[left], sidx[both[left]]))]
        missing = Ranges(ranges.sid[both[left]], m_lo[left], m_hi[left])
        return kept, ov_lo, ov_hi, served, missing

    def rollups(
        self, resolution_s: int, sidx: I64, ranges: Ranges, read: Callable[[Ranges], Columns]
    ) -> tuple[I64, Columns]:
        """The buckets of ``ranges`` (``sidx``: each range's series index), sorted by (series
        index, start): kept ones from memory, the rest by ``read(ranges)``, which returns the
        columns of the buckets plus, first, their series index."""
        lo, hi = ranges.lo, ranges.hi
        kept, ov_lo, ov_hi, served, missing = self._plan(resolution_s, sidx, ranges)
        served_key: I64 | None = None
        if kept is not None and served.any():
            base = sidx[served] << TIME_BITS
            take = np.flatnonzero(
                _in_intervals(kept.key, base + ov_lo[served], base + ov_hi[served])
            )
            if take.shape[0]:
                served_key = kept.key[take]
                self.cache.hits += int(take.shape[0])
        if len(missing):
            got_sidx, *got = read(missing)
            self.cache.misses += int(got_sidx.shape[0])
        else:
            got_sidx, got = np.empty(0, np.int64), []
        if served_key is None or kept is None:
            out_sidx: I64 = got_sidx
            out: Columns = got or [np.empty(0, np.int64)] + [
                np.empty(0) for _ in range(N_COLUMNS - 1)
            ]
            key = (out_sidx << TIME_BITS) + out[0]
            if key.shape[0] > 1 and np.any(key[1:] < key[:-1]):
                order = np.argsort(key, kind="stable")
                key, out_sidx, out = key[order], out_sidx[order], [c[order] for c in out]
        else:
            # Kept and read buckets merged in key order by one gather a column: each read one
            # goes where it sorts among the kept (both sorted; a read bucket never equals a
            # kept one, the ranges are disjoint).
            got_key = (got_sidx << TIME_BITS) + got[0] if got else np.empty(0, np.int64)
            if got_key.shape[0] > 1 and np.any(got_key[1:] < got_key[:-1]):
                order = np.argsort(got_key, kind="stable")
                got_key, got_sidx, got = got_key[order], got_sidx[order], [c[order] for c in got]
            total = take.shape[0] + got_key.shape[0]
            dest = np.searchsorted(served_key, got_key) + np.arange(got_key.shape[0])
            source = np.empty(total, dtype=np.int64)
            from_kept = np.ones(total, dtype=bool)
            from_kept[dest] = False
            source[from_kept] = take
            source[dest] = 0
            key = kept.key.take(source)
            key[dest] = got_key
            out = []
            for i, column in enumerate(kept.columns):
                merged = column.take(source)
                if got:
                    merged[dest] = got[i]
                out.append(merged)
            out_sidx = key >> TIME_BITS
        # Keep this scoring's ranges, clipped to their sealed buckets (start + span ≤ sealed),
        # and all of the buckets read: only those inside the kept ranges are ever served.
        span = resolution_s * 1000
        c_hi = np.maximum(np.minimum(hi, self.sealed[sidx] - span + 1), lo)
        for column in (key, *out):
            column.flags.writeable = False  # shared with the caller: neither may change them
        self._kept[resolution_s] = _Kept(
            sidx=sidx.copy(), lo=lo.copy(), hi=c_hi, key=key, columns=list(out)
        )
        return out_sidx, out

    def finish(self) -> None:
        """Keep what this scoring read (replacing the fleet's previous entry)."""
        origin = self._origin_day
        if origin is None:
            return
        chunk = _Chunk(self.revision, self.valid, origin, self._kept)
        self.cache._put(self.key, chunk)


# --- one cache per database engine -------------------------------------------------------------

_DEFAULT_BUDGET_MB = 128.0
_budget_bytes = int(_DEFAULT_BUDGET_MB * 1024 * 1024)
_caches: weakref.WeakKeyDictionary[Any, RollupCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def set_budget_mb(megabytes: float) -> None:
    """The memory every engine's cache may hold from now on (0: no caching)."""
    global _budget_bytes
    _budget_bytes = int(max(megabytes, 0.0) * 1024 * 1024)
    with _caches_lock:
        for cache in _caches.values():
            cache.max_bytes = _budget_bytes
            cache.clear()


def for_engine(engine: Any) -> RollupCache | None:
    """The cache of this engine's database (None when caching is off). Keyed by the engine's
    connection pool, which its option views share (``engine.execution_options(...)``: the
    snapshot readers' engine): one cache whichever of them a session is bound to."""
    if _budget_bytes <= 0:
        return None
    key = engine.pool
    with _caches_lock:
        cache = _caches.get(key)
        if cache is None:
            cache = _caches[key] = RollupCache(_budget_bytes)
        return cache


__all__: Sequence[str] = ["RollupCache", "Ranges", "ScoringReads", "for_engine", "set_budget_mb"]
