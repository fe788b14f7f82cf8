"""Parsers for every body format. Each returns a Batch of good points plus per-row errors."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from foresight.assets.schemas import TAG_PATTERN
from foresight.ingest.batch import Batch, Limits, check_ts, parse_ts, parse_value
from foresight.kit.time import utcnow

SENSOR_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")
# What an asset's tag may be: a tag no asset can have is refused here, before the writer.
ASSET_TAG = re.compile(TAG_PATTERN)
MAX_TAG_LENGTH = 64
ASSET_FIELDS = ("asset", "equipment_id")
TS_FIELDS = ("ts", "timestamp")
_INT_FAST = 2**53  # integers this small convert to floats exactly


class BodyError(ValueError):
    """The body as a whole cannot be read (not one bad row): answered with a 4xx."""


class MalformedJSON(BodyError):
    """The JSON body is not JSON at all (answered with 400, like any malformed JSON body)."""


class _Context:
    def __init__(self, batch: Batch, limits: Limits) -> None:
        self.batch = batch
        self.limits = limits
        self.latest_ms = limits.latest_allowed_ms()
        self.now_ms = int(utcnow().timestamp() * 1000)
        self.valid_keys: set[str] = set()

    def _check_key(self, key: Any) -> bool:
        if isinstance(key, str) and SENSOR_KEY.fullmatch(key):
            self.valid_keys.add(key)  # each key is checked once per request, not per point
            return True
        return False

    def asset(self, row: int, raw: Any) -> str | None:
        if not isinstance(raw, str) or not raw.strip():
            self.batch.reject(row, "missing asset (field 'asset' or 'equipment_id')")
            return None
        tag = raw.strip()
        if len(tag) > MAX_TAG_LENGTH or not ASSET_TAG.fullmatch(tag):
            self.batch.reject(row, "invalid asset tag", asset=tag[:MAX_TAG_LENGTH])
            return None
        return tag

    def ts(self, row: int, raw: Any, asset: str, *, default_now: bool) -> int | None:
        if raw is None:
            if default_now:
                return self.now_ms
            self.batch.reject(row, "missing timestamp (field 'ts')", asset=asset)
            return None
        try:
            ts_ms = parse_ts(raw)
        except ValueError as exc:
            self.batch.reject(row, str(exc), asset=asset)
            return None
        problem = check_ts(ts_ms, self.limits, self.latest_ms)
        if problem:
            self.batch.reject(row, problem, asset=asset)
            return None
        return ts_ms

    def point(self, row: int, asset: str, key: Any, ts_ms: int, raw: Any) -> None:
        if key not in self.valid_keys and not self._check_key(key):
            self.batch.reject(
                row,
                "invalid sensor key: lower-case letters, digits and '_', starting with a letter",
                asset=asset,
                sensor=str(key)[:64],
            )
            return
        try:
            value = parse_value(raw)
        except ValueError as exc:
            self.batch.reject(row, str(exc), asset=asset, sensor=key)
            return
        self.batch.add(row, asset, key, ts_ms, value)


def _first(obj: dict[str, Any], names: Iterable[str]) -> Any:
    for name in names:
        if name in obj:
            return obj[name]
    return None


def _object_row(ctx: _Context, row: int, obj: Any) -> None:
    """One JSON object: the FleetVision single reading, or a batch item {asset, ts, values}."""
    if not isinstance(obj, dict):
        ctx.batch.reject(row, "a reading must be a JSON object")
        return
    asset = ctx.asset(row, _first(obj, ASSET_FIELDS))
    if asset is None:
        return
    if "values" in obj:
        values = obj["values"]
        if not isinstance(values, dict) or not values:
            ctx.batch.reject(row, "'values' must be a non-empty object of sensor: number", asset)
            return
        extra = set(obj) - {"values", *ASSET_FIELDS, *TS_FIELDS}
        if extra:
            ctx.batch.reject(row, f"unknown field(s): {', '.join(sorted(extra))}", asset)
            return
        ts_ms = ctx.ts(row, _first(obj, TS_FIELDS), asset, default_now=False)
        items: Iterable[tuple[Any, Any]] = values.items()
    else:
        ts_ms = ctx.ts(row, _first(obj, TS_FIELDS), asset, default_now=True)
        items = [(k, v) for k, v in obj.items() if k not in (*ASSET_FIELDS, *TS_FIELDS)]
        if not items:
            ctx.batch.reject(row, "no sensor values in the reading", asset)
            return
    if ts_ms is None:
        return
    # Fast path for the common case (a valid key, a finite float or a modest int), the same
    # outcome as ctx.point, which takes every other value and says what is wrong with it.
    batch, valid_keys = ctx.batch, ctx.valid_keys
    for key, raw in items:
        kind = type(raw)
        if key in valid_keys and (
            (kind is float and raw - raw == 0.0) or (kind is int and -_INT_FAST < raw < _INT_FAST)
        ):
            batch.asset.append(asset)
            batch.sensor.append(key)
            batch.ts_ms.append(ts_ms)
            batch.value.append(float(raw))
            batch.row.append(row)
        else:
            ctx.point(row, asset, key, ts_ms, raw)


def parse_json(body: bytes, tenant_id: uuid.UUID, limits: Limits) -> Batch:
    """A single reading object, or ``{"readings": [...]}``."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedJSON(f"malformed JSON: {exc}") from exc
    batch = Batch(tenant_id)
    ctx = _Context(batch, limits)
    if isinstance(doc, dict) and "readings" in doc:
        readings = doc["readings"]
        if set(doc) != {"readings"}:
            raise BodyError("a batch body has exactly one field, 'readings'")
        if not isinstance(readings, list):
            raise BodyError("'readings' must be a list")
        for row, item in enumerate(readings):
            _object_row(ctx, row, item)
    elif isinstance(doc, dict):
        _object_row(ctx, 0, doc)
    else:
        raise BodyError("the body must be a JSON object (a reading, or {'readings': [...]})")
    return batch


def parse_ndjson(body: bytes, tenant_id: uuid.UUID, limits: Limits) -> Batch:
    """One reading object per line (either shape); a bad line is a rejected row."""
    batch = Batch(tenant_id)
    ctx = _Context(batch, limits)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError("NDJSON must be UTF-8") from exc
    # Only "\n" ends a line: a JSON string may hold U+2028 or U+0085 (which splitlines splits on).
    for row, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        try:
            obj = json.loads(line.lstrip("\x1e"))  # application/json-seq starts records with RS
        except ValueError:
            batch.reject(row, "malformed JSON line")
            continue
        _object_row(ctx, row, obj)
    return batch


def parse_csv(body: bytes, tenant_id: uuid.UUID, limits: Limits) -> Batch:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BodyError("CSV must be UTF-8") from exc
    return parse_csv_rows(csv.reader(io.StringIO(text)), tenant_id, limits)


def parse_csv_rows(rows: Iterator[list[str]], tenant_id: uuid.UUID, limits: Limits) -> Batch:
    """Wide (``asset, ts, <sensor>…``) or long (``asset, sensor, ts, value``) layout."""
    try:
        header = [h.strip() for h in next(rows)]
    except StopIteration as exc:
        raise BodyError("the CSV is empty (a header row is required)") from exc
    except csv.Error as exc:
        raise BodyError(f"unreadable CSV: {exc}") from exc
    columns = {name: i for i, name in enumerate(header)}
    asset_col = next((columns[n] for n in ASSET_FIELDS if n in columns), None)
    ts_col = next((columns[n] for n in TS_FIELDS if n in columns), None)
    if asset_col is None or ts_col is None:
        raise BodyError("the CSV header needs an 'asset' and a 'ts' column")
    long = "sensor" in columns and "value" in columns
    sensor_cols = [(i, name) for i, name in enumerate(header) if i not in (asset_col, ts_col)]
    if long and len(header) != 4:
        raise BodyError("a long-layout CSV has exactly the columns asset, sensor, ts, value")
    if not long and not sensor_cols:
        raise BodyError("a wide-layout CSV needs at least one sensor column after asset and ts")
    batch = Batch(tenant_id)
    ctx = _Context(batch, limits)
    row = -1
    try:
        for row, record in enumerate(rows):
            if not record or all(not cell.strip() for cell in record):
                continue
            if len(record) != len(header):
                batch.reject(row, f"expected {len(header)} columns, found {len(record)}")
                continue
            asset = ctx.asset(row, record[asset_col])
            if asset is None:
                continue
            ts_ms = ctx.ts(row, record[ts_col] or None, asset, default_now=False)
            if ts_ms is None:
                continue
            if long:
                ctx.point(
                    row, asset, record[columns["sensor"]].strip(), ts_ms, record[columns["value"]]
                )
            else:
                for i, key in sensor_cols:
                    if record[i].strip() != "":  # an empty cell is no reading, not an error
                        ctx.point(row, asset, key, ts_ms, record[i])
    except csv.Error as exc:
        batch.reject(row + 1, f"unreadable CSV line: {exc}")
    return batch
