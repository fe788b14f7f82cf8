"""File import: readings and maintenance history from CSV, gzipped CSV or Parquet files.

Readings come in the two layouts every door accepts: wide (``asset, ts, <sensor>…``) or long
(``asset, sensor, ts, value``); ``ts`` is ISO 8601 (a zone-less time is UTC) or epoch seconds.

How a large file stays fast and small in memory:

* the file is read in blocks (CSV: a few MiB of whole lines, parsed by polars; Parquet: row
  slices), regrouped into chunks of about ``chunk_points`` points, never all at once;
* validation is vectorised in polars (timestamps to epoch ms, values to finite floats), with the
  row-by-row parser of the HTTP door only as a fallback for unusual timestamps;
* (asset, sensor) pairs are resolved to series once per chunk, creating the sensors (and, when
  asked, the assets) that are missing, audited like any other creation;
* each chunk is written by ``timeseries.store.write_points`` in its own transaction, sorted by
  (series, ts). The store ignores points already stored, so rerunning an interrupted import
  finishes it without duplicating anything (nor changing rollups);
* reading and validating the next chunk overlaps with writing the current one (one thread).

Maintenance records go one by one through the maintenance service (validated and audited). Their
natural key is (asset, kind, started_at): a row whose record exists already is skipped, so a
file can be imported again safely.
"""

from __future__ import annotations

import abc
import csv
import gzip
import io
import math
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, TypeVar, cast

import polars as pl
from pydantic import ValidationError
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from foresight.assets import service as assets_service
from foresight.assets.schemas import TAG_PATTERN, AssetCreate, SensorCreate
from foresight.auth.schemas import Principal
from foresight.ingest.batch import MIN_TS_MS, Limits, parse_ts
from foresight.ingest.parse import ASSET_FIELDS, MAX_TAG_LENGTH, SENSOR_KEY, TS_FIELDS
from foresight.kit.db import Database
from foresight.kit.errors import Conflict, DomainError
from foresight.maintenance import service as maintenance_service
from foresight.maintenance.schemas import MaintenanceCreate
from foresight.models import ActorType, Role
from foresight.tenants import service as tenants_service
from foresight.timeseries.store import WriteResult, write_arrays

T = TypeVar("T")

SUFFIXES = (".csv", ".csv.gz", ".parquet")
DEFAULT_CHUNK_POINTS = 200_000
# CSV blocks: whole lines, about this many bytes (then regrouped into chunks of points).
BLOCK_BYTES = 8 * 1024 * 1024
# Parquet blocks: about this many cells (rows × columns) per slice.
BLOCK_CELLS = 2_000_000
MAX_EXAMPLES = 5
# Tries per chunk when a concurrent writer gets in the way (a duplicate creation, a deadlock).
ATTEMPTS = 3
_ISO_START = r"^\d{4}-\d{2}-\d{2}"
SENSOR_KEY_RE = f"^{SENSOR_KEY.pattern}$"
_LINE = "_line"


class ImportFileError(Exception):
    """The file as a whole cannot be read (missing, wrong type, bad header, corrupt).

    ``points_stored`` counts the points stored before a problem found part-way through.
    """

    points_stored: int = 0


# --- reports --------------------------------------------------------------------------------


@dataclass
class Rejections:
    """Refused rows or values: a count per reason and the first few, with their line."""

    limit: int = MAX_EXAMPLES
    counts: Counter[str] = field(default_factory=Counter)
    examples: list[tuple[int, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, line: int, reason: str, detail: str | None = None) -> None:
        self.counts[reason] += 1
        self._example(line, f"{reason}: {detail}" if detail else reason)

    def add_frame(self, frame: pl.DataFrame) -> None:
        """``frame`` has columns ``_line``, ``reason`` and ``detail`` (may be null)."""
        if frame.is_empty():
            return
        for reason, count in frame.group_by("reason").len().iter_rows():
            self.counts[str(reason)] += int(count)
        first = frame.sort(_LINE).head(self.limit)
        for line, reason, detail in first.select(_LINE, "reason", "detail").iter_rows():
            self._example(int(line), f"{reason}: {detail}" if detail else str(reason))

    def merge(self, other: Rejections) -> None:
        self.counts.update(other.counts)
        for line, text in other.examples:
            self._example(line, text)

    def _example(self, line: int, text: str) -> None:
        if len(self.examples) >= self.limit and line >= self.examples[-1][0]:
            return
        self.examples.append((line, text))
        self.examples.sort(key=lambda e: e[0])
        del self.examples[self.limit :]


@dataclass
class ReadingsReport:
    path: Path
    layout: str = ""
    sensor_columns: int = 0
    line_label: str = "line"
    rows_read: int = 0
    points_accepted: int = 0
    points_new: int = 0
    points_present: int = 0  # already stored, or repeated in the file
    assets_created: int = 0
    sensors_created: int = 0
    rejections: Rejections = field(default_factory=Rejections)
    warnings: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def points_per_s(self) -> float:
        return self.points_accepted / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class MaintenanceReport:
    path: Path
    line_label: str = "line"
    rows_read: int = 0
    created: int = 0
    skipped: int = 0  # the record (asset, kind, started_at) exists already
    rejections: Rejections = field(default_factory=lambda: Rejections(limit=50))
    elapsed_s: float = 0.0


# (position, total) in the source (bytes or rows, as Source.unit says; total None if unknown),
# then rows read and points accepted (records created, for maintenance).
ProgressFn = Callable[[int, int | None, int, int], None]


# --- reading files in blocks ----------------------------------------------------------------


@dataclass
class Block:
    """Some whole rows of the file, every column as read, plus ``_line`` (1-based line/row)."""

    frame: pl.DataFrame
    position: int
    # Rows refused while reading (CSV lines with the wrong number of fields).
    rejected: list[tuple[int, str, str | None]] = field(default_factory=list)


class Source(abc.ABC):
    """A readable file: its columns, and its rows in blocks."""

    columns: list[str]
    total: int | None  # progress total, in ``unit``
    unit: str
    line_label: str

    @abc.abstractmethod
    def blocks(self) -> Iterator[Block]:
        """The file's rows, block by block (each subclass reads its own format)."""


def open_source(
    path: Path, *, block_bytes: int = BLOCK_BYTES, block_cells: int = BLOCK_CELLS
) -> Source:
    name = path.name.lower()
    if not path.is_file():
        raise ImportFileError(f"cannot read {path}: no such file")
    if name.endswith(".parquet"):
        return ParquetSource(path, block_cells)
    if name.endswith((".csv", ".csv.gz")):
        return CsvSource(path, block_bytes)
    raise ImportFileError(
        f"cannot read {path}: unsupported file type (expected {', '.join(SUFFIXES)})"
    )


def _check_columns(path: Path, columns: list[str]) -> list[str]:
    seen: set[str] = set()
    for name in columns:
        if name in seen:
            raise ImportFileError(f"cannot read {path}: column {name!r} appears twice")
        if name == _LINE:
            raise ImportFileError(f"cannot read {path}: column name {_LINE!r} is reserved")
        seen.add(name)
    return columns


class CsvSource(Source):
    """UTF-8 CSV (optionally gzipped) with a header row; blocks of whole lines."""

    unit = "bytes"
    line_label = "line"

    def __init__(self, path: Path, block_bytes: int) -> None:
        self.path = path
        self.block_bytes = block_bytes
        self.gzipped = path.name.lower().endswith(".gz")
        self.total = path.stat().st_size
        with self._open() as (stream, _raw):
            header = self._read_header(stream)
        self.columns = header

    def _open(self) -> _Opened:
        return _Opened(self.path, self.gzipped)

    def _read_header(self, stream: IO[bytes]) -> list[str]:
        try:
            line = stream.readline()
        except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
            raise ImportFileError(f"cannot read {self.path}: {exc}") from exc
        if not line.strip():
            raise ImportFileError(f"cannot read {self.path}: the file is empty (no header row)")
        try:
            text = line.decode("utf-8-sig")
            names = next(csv.reader([text]))
        except (UnicodeDecodeError, csv.Error, StopIteration) as exc:
            raise ImportFileError(f"cannot read {self.path}: unreadable header row") from exc
        return _check_columns(self.path, [n.strip() for n in names])

    def blocks(self) -> Iterator[Block]:
        with self._open() as (stream, raw):
            stream.readline()
            line = 2  # the first data line
            rest = b""
            while True:
                try:
                    data = stream.read(self.block_bytes)
                except (OSError, EOFError) as exc:
                    raise ImportFileError(
                        f"cannot read {self.path} after line {line - 1}: {exc}"
                    ) from exc
                buf = rest + data if rest else data
                if not data:
                    if buf.strip():
                        yield self._parse(buf, line, raw.tell())
                    return
                cut = _record_boundary(buf)
                if cut == 0:  # one record longer than a block: read on
                    rest = buf
                    continue
                body, rest = buf[:cut], buf[cut:]
                yield self._parse(body, line, raw.tell())
                line += body.count(b"\n")

    def _parse(self, body: bytes, first_line: int, position: int) -> Block:
        lines = body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
        schema = pl.Schema(dict.fromkeys(self.columns, pl.String()))
        try:
            frame = pl.read_csv(
                io.BytesIO(body), has_header=False, schema=schema, infer_schema=False
            )
        except Exception:  # noqa: BLE001 - e.g. a line with too many fields: go line by line
            frame = None
        if frame is not None and frame.height == lines:
            frame = frame.with_columns(
                pl.int_range(first_line, first_line + lines, dtype=pl.Int64).alias(_LINE)
            )
            return Block(frame, position)
        return self._parse_slowly(body, first_line, position)

    def _parse_slowly(self, body: bytes, first_line: int, position: int) -> Block:
        """Line by line with the csv module: exact line numbers, ragged lines refused."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = first_line + body[: exc.start].count(b"\n")
            raise ImportFileError(f"cannot read {self.path}: line {bad} is not UTF-8") from exc
        width = len(self.columns)
        cells: list[list[str | None]] = [[] for _ in range(width)]
        lines: list[int] = []
        rejected: list[tuple[int, str, str | None]] = []
        reader = csv.reader(io.StringIO(text, newline=""))
        start = first_line
        try:
            for record in reader:
                line, start = start, first_line + reader.line_num
                if not record or all(not cell.strip() for cell in record):
                    continue
                if len(record) != width:
                    rejected.append(
                        (line, "wrong number of fields", f"expected {width}, found {len(record)}")
                    )
                    continue
                lines.append(line)
                for i, cell in enumerate(record):
                    cells[i].append(cell if cell != "" else None)
        except csv.Error as exc:
            raise ImportFileError(f"cannot read {self.path}: line {start}: {exc}") from exc
        frame = pl.DataFrame(
            {
                name: pl.Series(name, cells[i], dtype=pl.String)
                for i, name in enumerate(self.columns)
            }
        ).with_columns(pl.Series(_LINE, lines, dtype=pl.Int64))
        return Block(frame, position, rejected)


def _record_boundary(buf: bytes) -> int:
    """Length of the longest prefix of ``buf`` made of whole CSV records (0 if none).

    A newline inside a quoted field does not end a record: the prefix must hold an even number
    of quote characters (RFC 4180 doubles quotes inside quoted fields, so parity is enough).
    """
    cut = buf.rfind(b"\n") + 1
    if cut == 0:
        return 0
    quotes = buf.count(b'"', 0, cut)
    while quotes % 2 and cut:
        previous = buf.rfind(b"\n", 0, cut - 1) + 1
        quotes -= buf.count(b'"', previous, cut)
        cut = previous
    return cut


class _Opened:
    """The file as a byte stream (decompressed if gzipped) and the raw file, for positions."""

    def __init__(self, path: Path, gzipped: bool) -> None:
        self.path = path
        self.gzipped = gzipped

    def __enter__(self) -> tuple[IO[bytes], IO[bytes]]:
        try:
            self.raw: IO[bytes] = open(self.path, "rb")  # noqa: SIM115 - closed in __exit__
        except OSError as exc:
            raise ImportFileError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        stream = cast(IO[bytes], gzip.GzipFile(fileobj=self.raw)) if self.gzipped else self.raw
        self.stream = stream
        return stream, self.raw

    def __exit__(self, *exc: object) -> None:
        if self.stream is not self.raw:
            self.stream.close()
        self.raw.close()


class ParquetSource(Source):
    unit = "rows"
    line_label = "row"

    def __init__(self, path: Path, block_cells: int) -> None:
        self.path = path
        try:
            self.scan = pl.scan_parquet(path)
            schema = self.scan.collect_schema()
            self.total = int(self.scan.select(pl.len()).collect().item())
        except Exception as exc:  # noqa: BLE001 - polars raises several kinds for a bad file
            raise ImportFileError(f"cannot read {path}: not a readable Parquet file") from exc
        self.columns = _check_columns(path, [str(name) for name in schema.names()])
        self.block_rows = max(1, block_cells // max(len(self.columns), 1))

    def blocks(self) -> Iterator[Block]:
        total = self.total or 0
        for offset in range(0, total, self.block_rows):
            try:
                frame = self.scan.slice(offset, self.block_rows).collect()
            except Exception as exc:  # noqa: BLE001
                raise ImportFileError(f"cannot read {self.path} after row {offset}: {exc}") from exc
            frame = frame.with_columns(
                pl.int_range(offset + 1, offset + 1 + frame.height, dtype=pl.Int64).alias(_LINE)
            )
            yield Block(frame, offset + frame.height)


def _rechunk(blocks: Iterable[Block], rows: int) -> Iterator[Block]:
    """Blocks regrouped into blocks of ``rows`` rows (the last one may be shorter)."""
    pending: list[pl.DataFrame] = []
    count = 0
    rejected: list[tuple[int, str, str | None]] = []
    position = 0
    for block in blocks:
        position = block.position
        rejected.extend(block.rejected)
        if block.frame.height:
            pending.append(block.frame)
            count += block.frame.height
        while count >= rows:
            frame = pl.concat(pending, how="vertical") if len(pending) > 1 else pending[0]
            yield Block(frame.slice(0, rows), position, rejected)
            rejected = []
            rest = frame.slice(rows)
            pending = [rest] if rest.height else []
            count = rest.height
    if count or rejected:
        frame = pl.concat(pending, how="vertical") if pending else pl.DataFrame()
        yield Block(frame, position, rejected)


# --- vectorised validation ------------------------------------------------------------------


def _blank_to_null(expr: pl.Expr) -> pl.Expr:
    stripped = expr.str.strip_chars()
    return pl.when(stripped == "").then(None).otherwise(stripped)


def _as_text(series: pl.Series) -> pl.Series:
    text = series if series.dtype == pl.String else series.cast(pl.String)
    return pl.select(_blank_to_null(pl.lit(text))).to_series().alias(series.name)


def _timestamps(raw: pl.Series, limits: Limits) -> tuple[pl.Series, pl.Series]:
    """Epoch ms (null where refused) and the reason for each refusal (null where accepted).

    ISO 8601 (a zone-less time is UTC) or epoch seconds, as ``batch.parse_ts`` reads them;
    Parquet date-time columns are taken as they are (a zone-less one is UTC).
    """
    reason = pl.Series("reason", [None] * len(raw), dtype=pl.String)
    if raw.dtype == pl.Date:
        raw = raw.cast(pl.Datetime("ms"))
    if isinstance(raw.dtype, pl.Datetime):
        present = raw.is_not_null()
        ms = raw.dt.epoch("ms")
    elif raw.dtype.is_numeric():
        present = raw.is_not_null()
        seconds = raw.cast(pl.Float64)
        ms = _seconds_to_ms(seconds)
        reason = _where(present & ~seconds.is_finite(), "timestamp must be finite", reason)
    else:
        text = _as_text(raw)
        present = text.is_not_null()
        number = text.cast(pl.Float64, strict=False)
        ms = _seconds_to_ms(number)
        reason = _where(
            number.is_not_null() & ~number.is_finite(), "timestamp must be finite", reason
        )
        other = (number.is_null() & present).arg_true()
        if len(other):
            parsed = _iso_to_ms(text.gather(other))
            ms = ms.scatter(other, parsed)
            failed = other.filter(parsed.is_null())
            if len(failed):
                values, problems = _python_timestamps(text.gather(failed))
                ms = ms.scatter(failed, values)
                reason = reason.scatter(failed, problems)
    future = f"timestamp more than {limits.max_future_ms // 1000} s in the future"
    checks = pl.DataFrame({"present": present, "ms": ms.cast(pl.Int64), "reason": reason})
    reason = checks.select(
        pl.when(~pl.col("present"))
        .then(pl.lit("missing timestamp"))
        .when(pl.col("reason").is_not_null())
        .then(pl.col("reason"))
        .when(pl.col("ms").is_null())
        .then(pl.lit("timestamp out of range"))
        .when(pl.col("ms") < MIN_TS_MS)
        .then(pl.lit("timestamp before 1970-01-01"))
        .when(pl.col("ms") > limits.latest_allowed_ms())
        .then(pl.lit(future))
        .alias("reason")
    ).to_series()
    ms = _where(reason.is_not_null(), None, checks["ms"]).alias("ts_ms")
    return ms, reason


def _where(mask: pl.Series, value: Any, otherwise: pl.Series) -> pl.Series:
    """``value`` where ``mask`` is true, else ``otherwise`` (a null mask counts as false)."""
    frame = pl.DataFrame({"m": mask.fill_null(False), "o": otherwise})
    return (
        frame.select(
            pl.when(pl.col("m")).then(pl.lit(value, dtype=otherwise.dtype)).otherwise(pl.col("o"))
        )
        .to_series()
        .alias(otherwise.name)
    )


def _seconds_to_ms(seconds: pl.Series) -> pl.Series:
    finite = pl.when(pl.lit(seconds).is_finite() & (pl.lit(seconds).abs() < 1e15))
    scaled = finite.then((pl.lit(seconds) * 1000).round()).cast(pl.Int64)
    return pl.select(scaled).to_series().alias("ts_ms")


def _iso_to_ms(text: pl.Series) -> pl.Series:
    """ISO 8601 strings to epoch ms, vectorised; null where polars could not (or should not)."""
    iso = text.str.contains(_ISO_START)
    try:
        parsed = text.str.to_datetime(strict=False, time_unit="us").dt.epoch("ms")
    except Exception:  # noqa: BLE001 - no format could be inferred: leave it to the fallback
        return pl.Series("ts_ms", [None] * len(text), dtype=pl.Int64)
    return pl.select(pl.when(pl.lit(iso)).then(pl.lit(parsed))).to_series().cast(pl.Int64)


def _python_timestamps(text: pl.Series) -> tuple[pl.Series, pl.Series]:
    """The HTTP door's parser, once per distinct value, for what polars did not read."""
    parsed: dict[str, tuple[int | None, str | None]] = {}
    for value in text.unique().to_list():
        try:
            parsed[value] = (parse_ts(value), None)
        except ValueError as exc:
            out = "timestamp out of range" if "out of range" in str(exc) else None
            parsed[value] = (None, out or "unreadable timestamp")
    values = [parsed[v][0] for v in text.to_list()]
    reasons = [parsed[v][1] for v in text.to_list()]
    return pl.Series(values, dtype=pl.Int64), pl.Series(reasons, dtype=pl.String)


def _values(raw: pl.Series) -> tuple[pl.Series, pl.Series, pl.Series]:
    """Floats, the reason each refused cell was refused (a non-number, NaN or infinity), and
    which cells are empty (no reading: neither value nor reason)."""
    if raw.dtype.is_numeric() or raw.dtype == pl.Boolean:
        value = raw.cast(pl.Float64)
        missing = raw.is_null()
    else:
        text = _as_text(raw)
        value = text.cast(pl.Float64, strict=False)
        missing = text.is_null()
    checks = pl.DataFrame({"missing": missing, "value": value})
    reason = checks.select(
        pl.when(pl.col("missing"))
        .then(None)
        .when(pl.col("value").is_null())
        .then(pl.lit("not a number"))
        .when(~pl.col("value").is_finite())
        .then(pl.lit("value must be finite"))
        .cast(pl.String)
        .alias("reason")
    ).to_series()
    value = _where(reason.is_not_null(), None, value).alias("value")
    return value, reason, missing


def _detail(expr: pl.Expr) -> pl.Expr:
    text = expr.cast(pl.String)
    return (
        pl.when(text.str.len_chars() > 40)
        .then(pl.format("'{}…'", text.str.slice(0, 40)))
        .otherwise(pl.format("'{}'", text))
    )


@dataclass
class _Layout:
    long: bool
    asset: str
    ts: str
    sensors: list[str]  # wide: the sensor columns (valid keys or not)
    bad_keys: set[str]

    @property
    def points_per_row(self) -> int:
        return 1 if self.long else max(len(self.sensors), 1)


def _layout(path: Path, columns: list[str]) -> _Layout:
    asset = next((n for n in ASSET_FIELDS if n in columns), None)
    ts = next((n for n in TS_FIELDS if n in columns), None)
    if asset is None or ts is None:
        raise ImportFileError(
            f"cannot read {path}: the header needs an 'asset' and a 'ts' column "
            f"(found: {', '.join(columns)[:200]})"
        )
    if "sensor" in columns and "value" in columns:
        if len(columns) != 4:
            raise ImportFileError(
                f"cannot read {path}: a long-layout file has exactly the columns "
                "asset, sensor, ts, value"
            )
        return _Layout(True, asset, ts, [], set())
    sensors = [c for c in columns if c not in (asset, ts)]
    if not sensors:
        raise ImportFileError(
            f"cannot read {path}: a wide-layout file needs at least one sensor column "
            "after asset and ts"
        )
    bad = {c for c in sensors if not SENSOR_KEY.fullmatch(c)}
    return _Layout(False, asset, ts, sensors, bad)


@dataclass
class _Prepared:
    """One chunk, validated: good points (long), refusals so far, rows read, progress."""

    points: pl.DataFrame  # _line, asset, sensor, ts_ms, value
    rejections: Rejections
    rows: int
    position: int


_POINTS_SCHEMA = {
    _LINE: pl.Int64,
    "asset": pl.String,
    "sensor": pl.String,
    "ts_ms": pl.Int64,
    "value": pl.Float64,
}
_VALUE_REASONS = ["not a number", "value must be finite"]


def _prepare(block: Block, layout: _Layout, limits: Limits) -> _Prepared:
    """Validate one chunk: good points in long form, and every refusal with its line."""
    rejections = Rejections()
    for line, why, detail in block.rejected:
        rejections.add(line, why, detail)
    if block.frame.is_empty():
        empty = pl.DataFrame(schema=_POINTS_SCHEMA)
        return _Prepared(empty, rejections, len(block.rejected), block.position)
    # The file's columns by position (_c0, _c1, …): no name in a file can clash with the
    # columns computed here.
    content = [c for c in block.frame.columns if c != _LINE]
    column = {name: f"_c{i}" for i, name in enumerate(content)}
    frame = block.frame.rename(column)
    content = list(column.values())
    frame = frame.filter(
        ~pl.all_horizontal(
            pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "")
            if frame[c].dtype == pl.String
            else pl.col(c).is_null()
            for c in content
        )
    )
    rows = frame.height + len(block.rejected)

    # Row-level checks: asset tag and timestamp.
    ts_column = column[layout.ts]
    asset = _as_text(frame[column[layout.asset]]).alias("asset")
    ts_ms, ts_reason = _timestamps(frame[ts_column], limits)
    checked = frame.with_columns(asset, ts_ms, ts_reason.alias("ts_reason")).with_columns(
        reason=pl.when(pl.col("asset").is_null())
        .then(pl.lit("missing asset"))
        .when(
            (pl.col("asset").str.len_chars() > MAX_TAG_LENGTH)
            | ~pl.col("asset").str.contains(TAG_PATTERN)
        )
        .then(pl.lit("invalid asset tag"))
        .otherwise(pl.col("ts_reason"))
    )
    rejections.add_frame(
        checked.filter(pl.col("reason").is_not_null()).select(
            _LINE,
            "reason",
            detail=pl.when(pl.col("reason") == "invalid asset tag")
            .then(_detail(pl.col("asset")))
            .when((pl.col("reason") == pl.col("ts_reason")) & pl.col(ts_column).is_not_null())
            .then(_detail(pl.col(ts_column))),
        )
    )
    good = checked.filter(pl.col("reason").is_null())

    # Point-level checks: sensor key and value.
    if layout.long:
        long = good.select(
            _LINE, "asset", "ts_ms", sensor=pl.col(column["sensor"]), raw=pl.col(column["value"])
        )
        sensor = _as_text(long["sensor"])
        value, reason, missing = _values(long["raw"])
        long = long.with_columns(sensor, value, reason, missing.alias("missing")).with_columns(
            reason=pl.when(pl.col("sensor").is_null())
            .then(pl.lit("missing sensor"))
            .when(~pl.col("sensor").str.contains(SENSOR_KEY_RE).fill_null(False))
            .then(pl.lit("invalid sensor key"))
            .when(pl.col("missing"))
            .then(pl.lit("missing value"))
            .otherwise(pl.col("reason"))
        )
    else:
        sensors = [column[key] for key in layout.sensors]
        wide = good.select(_LINE, "asset", "ts_ms", *sensors)
        typed = [c for c in sensors if wide[c].dtype != pl.String]
        if typed:  # Parquet: numbers stay numbers unless some column holds text
            as_type = pl.Float64 if len(typed) == len(sensors) else pl.String
            wide = wide.with_columns(pl.col(sensors).cast(as_type))
        long = wide.unpivot(
            index=[_LINE, "asset", "ts_ms"], on=sensors, variable_name="column", value_name="raw"
        )
        value, reason, missing = _values(long["raw"])
        long = long.with_columns(value, reason, missing.alias("missing")).filter(
            ~pl.col("missing")  # an empty cell is no reading, not an error
        )
        key_of = {column[key]: key for key in layout.sensors}
        long = long.with_columns(
            sensor=pl.col("column").replace_strict(key_of, return_dtype=pl.String)
        )
        if layout.bad_keys:
            bad = [column[key] for key in layout.bad_keys]
            long = long.with_columns(
                reason=pl.when(pl.col("column").is_in(bad))
                .then(pl.lit("invalid sensor key"))
                .otherwise(pl.col("reason"))
            )
    refused = long.filter(pl.col("reason").is_not_null())
    if refused.height:
        rejections.add_frame(
            refused.select(
                _LINE,
                "reason",
                detail=pl.when(pl.col("reason") == "invalid sensor key")
                .then(_detail(pl.col("sensor")))
                .when(pl.col("reason").is_in(_VALUE_REASONS))
                .then(_detail(pl.col("raw"))),
            )
        )
    points = long.filter(pl.col("reason").is_null()).select(*_POINTS_SCHEMA)
    return _Prepared(points, rejections, rows, block.position)


# --- resolving series -----------------------------------------------------------------------


def tune_for_bulk(database: Database) -> None:
    """SQLite: keep the store's temporary staging tables in memory, not in a temporary file.

    Call before the database's first connection (it applies to connections made after it).
    """
    if database.engine.dialect.name != "sqlite":
        return

    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.close()

    event.listen(database.engine, "connect", _on_connect)


def _principal(tenant_id: uuid.UUID, label: str) -> Principal:
    # Creations made by an import are attributed to the system actor with the caller's label.
    return Principal(tenant_id, ActorType.system, uuid.UUID(int=0), label, Role.admin)


@dataclass
class _Resolved:
    mapping: pl.DataFrame  # asset, sensor, series_id
    refused: pl.DataFrame  # asset, sensor, reason
    assets: dict[str, tuple[uuid.UUID, dict[str, int]]]  # tags looked up or created
    absent: set[str]
    assets_created: int = 0
    sensors_created: int = 0


class _Resolver:
    """(tag, key) → series id for one import, creating what is missing.

    What a chunk's transaction created is remembered only once that transaction committed.
    """

    def __init__(
        self, tenant_id: uuid.UUID, *, create_assets: bool, create_sensors: bool, label: str
    ) -> None:
        self.tenant_id = tenant_id
        self.create_assets = create_assets
        self.create_sensors = create_sensors
        self.principal = _principal(tenant_id, label)
        self.known: dict[str, tuple[uuid.UUID, dict[str, int]]] = {}
        self.absent: set[str] = set()  # tags not registered (and not to be created)

    def resolve(self, session: Session, pairs: pl.DataFrame) -> _Resolved:
        tags = sorted(set(pairs["asset"].to_list()))
        assets = {
            tag: (self.known[tag][0], dict(self.known[tag][1])) for tag in tags if tag in self.known
        }
        absent = set(self.absent)
        lookup = [t for t in tags if t not in assets and t not in absent]
        if lookup:
            found = assets_service.series_by_tag(session, tenant_id=self.tenant_id, tags=lookup)
            assets.update(found)
            absent.update(t for t in lookup if t not in found)
        resolved = _Resolved(pl.DataFrame(), pl.DataFrame(), assets, absent)
        keys: list[str] = []
        sensors: list[str] = []
        series: list[int] = []
        refused: list[tuple[str, str, str]] = []
        invalid_tags: set[str] = set()
        for tag, key in pairs.select("asset", "sensor").iter_rows():
            if tag not in assets:
                if tag in invalid_tags:
                    refused.append((tag, key, "invalid asset tag"))
                    continue
                if not self.create_assets:
                    refused.append((tag, key, "unknown asset (--create-assets registers it)"))
                    continue
                try:
                    data = AssetCreate(tag=tag, name=tag)
                except ValidationError:
                    invalid_tags.add(tag)
                    refused.append((tag, key, "invalid asset tag"))
                    continue
                asset = assets_service.create_asset(session, principal=self.principal, data=data)
                assets[tag] = (asset.id, {})
                absent.discard(tag)
                resolved.assets_created += 1
            asset_id, by_key = assets[tag]
            if key not in by_key:
                if not self.create_sensors:
                    refused.append(
                        (tag, key, "unknown sensor (auto_create_sensors is off for the tenant)")
                    )
                    continue
                sensor = assets_service.create_sensor(
                    session, principal=self.principal, asset_id=asset_id, data=SensorCreate(key=key)
                )
                by_key[key] = sensor.series_id
                resolved.sensors_created += 1
            keys.append(tag)
            sensors.append(key)
            series.append(by_key[key])
        resolved.mapping = pl.DataFrame(
            {"asset": keys, "sensor": sensors, "series_id": series},
            schema={"asset": pl.String, "sensor": pl.String, "series_id": pl.Int64},
        )
        resolved.refused = pl.DataFrame(
            refused,
            schema={"asset": pl.String, "sensor": pl.String, "reason": pl.String},
            orient="row",
        )
        return resolved

    def forget(self) -> None:
        self.known.clear()
        self.absent.clear()

    def remember(self, resolved: _Resolved) -> None:
        self.known.update(resolved.assets)
        self.absent = resolved.absent - set(resolved.assets)
        if len(self.known) > 100_000:
            self.known.clear()


# --- importing readings ---------------------------------------------------------------------


def import_readings(
    db: Database,
    path: Path,
    *,
    tenant_id: uuid.UUID,
    limits: Limits,
    create_assets: bool = False,
    actor_label: str = "import",
    chunk_points: int = DEFAULT_CHUNK_POINTS,
    progress: ProgressFn | None = None,
    block_bytes: int = BLOCK_BYTES,
    block_cells: int = BLOCK_CELLS,
    on_written: Callable[[WriteResult], None] | None = None,
) -> ReadingsReport:
    """Import a readings file into the tenant; safe to rerun (see the module docstring).

    ``on_written`` is called with each chunk's write once it committed (detection).

    Raises ``ImportFileError`` if the file cannot be read; rows already imported stay imported.
    """
    started = time.perf_counter()
    source = open_source(path, block_bytes=block_bytes, block_cells=block_cells)
    layout = _layout(path, source.columns)
    report = ReadingsReport(
        path,
        layout="long" if layout.long else "wide",
        sensor_columns=len(layout.sensors),
        line_label=source.line_label,
    )
    for key in sorted(layout.bad_keys):
        report.warnings.append(
            f"column {key!r} is not a valid sensor key (lower-case letters, digits and '_', "
            "starting with a letter): its values are refused"
        )
    with db.transaction(write=False) as session:
        settings = tenants_service.get(session, tenant_id).settings or {}
    resolver = _Resolver(
        tenant_id,
        create_assets=create_assets,
        create_sensors=bool(settings.get("auto_create_sensors", True)),
        label=actor_label,
    )
    rows_per_chunk = max(1, chunk_points // layout.points_per_row)
    chunks = _rechunk(source.blocks(), rows_per_chunk)
    prepared = (_prepare(block, layout, limits) for block in chunks)
    try:
        for chunk in _prefetch(prepared):
            report.rows_read += chunk.rows
            report.rejections.merge(chunk.rejections)
            if chunk.points.height:
                _write_chunk(db, resolver, chunk, report, on_written)
            if progress is not None:
                progress(chunk.position, source.total, report.rows_read, report.points_accepted)
    except ImportFileError as exc:
        exc.points_stored = report.points_accepted
        raise
    report.elapsed_s = time.perf_counter() - started
    return report


def _write_chunk(
    db: Database,
    resolver: _Resolver,
    chunk: _Prepared,
    report: ReadingsReport,
    on_written: Callable[[WriteResult], None] | None = None,
) -> None:
    pairs = chunk.points.select("asset", "sensor").unique()
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with db.transaction() as session:
                resolved = resolver.resolve(session, pairs)
                result = _store(session, chunk.points, resolved.mapping)
            break
        except (Conflict, IntegrityError):
            # Another writer created one of these assets or sensors meanwhile: look again.
            if attempt == ATTEMPTS:
                raise
            resolver.forget()
        except DBAPIError as exc:
            # A deadlock or serialisation failure between writers is worth another go.
            code = getattr(getattr(exc, "orig", None), "sqlstate", None)
            if code not in ("40P01", "40001") or attempt == ATTEMPTS:
                raise
            time.sleep(0.05 * attempt)
    resolver.remember(resolved)
    if on_written is not None and result.inserted:
        on_written(result)
    if resolved.refused.height:
        refused = chunk.points.join(resolved.refused, on=["asset", "sensor"], how="inner")
        # An asset problem refuses the row once; a sensor problem refuses each of its values.
        per_row = refused.filter(~pl.col("reason").str.starts_with("unknown sensor"))
        per_value = refused.filter(pl.col("reason").str.starts_with("unknown sensor"))
        report.rejections.add_frame(
            pl.concat(
                [
                    per_row.unique([_LINE, "reason"], keep="first", maintain_order=True).select(
                        _LINE, "reason", detail=_detail(pl.col("asset"))
                    ),
                    per_value.select(
                        _LINE, "reason", detail=pl.format("{} on {}", "sensor", "asset")
                    ),
                ]
            )
        )
    report.points_accepted += result.received
    report.points_new += result.inserted
    report.points_present += result.duplicates
    report.assets_created += resolved.assets_created
    report.sensors_created += resolved.sensors_created


def _store(session: Session, points: pl.DataFrame, series: pl.DataFrame) -> WriteResult:
    points = points.join(series, on=["asset", "sensor"], how="inner")
    if not points.height:
        return WriteResult(0, 0)
    # Sorted by (series, ts) the store's B-tree inserts are appends; stable, so that of two
    # points with the same (series, ts) in the file the first wins, as it does across chunks.
    points = points.sort("series_id", "ts_ms", maintain_order=True)
    return write_arrays(
        session,
        points["series_id"].to_numpy(),
        points["ts_ms"].to_numpy(),
        points["value"].to_numpy(),
    )


class _Prefetch(Generic[T]):
    """Runs an iterator one item ahead in a thread (bounded: memory stays flat)."""

    def __init__(self, items: Iterator[T], depth: int = 1) -> None:
        self.items = items
        self.queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="import-reader", daemon=True)

    def _put(self, item: tuple[str, Any]) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self.items:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed over to the consumer
            self._put(("error", exc))
        finally:
            close = getattr(self.items, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[T]:
        self.thread.start()
        try:
            while True:
                kind, value = self.queue.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                yield value
        finally:
            self.stop.set()
            self.thread.join()


def _prefetch(items: Iterator[T]) -> Iterator[T]:
    return iter(_Prefetch(items))


# --- importing maintenance records ----------------------------------------------------------

MAINTENANCE_REQUIRED = ("asset", "kind", "started_at")
MAINTENANCE_OPTIONAL = (
    "ended_at",
    "failure_mode",
    "cost",
    "downtime_hours",
    "notes",
    "title",
    "status",
)
MAINTENANCE_CHUNK_ROWS = 500


def import_maintenance(
    db: Database,
    path: Path,
    *,
    tenant_id: uuid.UUID,
    actor_label: str = "import",
    chunk_rows: int = MAINTENANCE_CHUNK_ROWS,
    progress: ProgressFn | None = None,
) -> MaintenanceReport:
    """Create a maintenance record per row, through the maintenance service.

    A bad row is refused (with its line and reason) without blocking the others; a row whose
    record (asset, kind, started_at) exists already is skipped, so reruns duplicate nothing.
    """
    started = time.perf_counter()
    source = open_source(path)
    missing = [c for c in MAINTENANCE_REQUIRED if c not in source.columns]
    unknown = [c for c in source.columns if c not in (*MAINTENANCE_REQUIRED, *MAINTENANCE_OPTIONAL)]
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown column(s) {', '.join(unknown)}")
        raise ImportFileError(
            f"cannot read {path}: {'; '.join(problems)} (expected "
            f"{', '.join(MAINTENANCE_REQUIRED)} and optionally {', '.join(MAINTENANCE_OPTIONAL)})"
        )
    report = MaintenanceReport(path, line_label=source.line_label)
    principal = _principal(tenant_id, actor_label)
    assets: dict[str, uuid.UUID] = {}
    for block in _rechunk(source.blocks(), chunk_rows):
        for line, reason, detail in block.rejected:
            report.rows_read += 1
            report.rejections.add(line, reason, detail)
        rows = list(block.frame.iter_rows(named=True)) if block.frame.height else []
        with db.transaction() as session:
            tags = sorted({str(t) for r in rows if (t := _clean(r["asset"]))} - set(assets))
            if tags:
                found = assets_service.series_by_tag(session, tenant_id=tenant_id, tags=tags)
                assets.update({tag: asset_id for tag, (asset_id, _) in found.items()})
            for row in rows:
                _maintenance_row(session, principal, assets, row, report)
        if progress is not None:
            progress(block.position, source.total, report.rows_read, report.created)
    report.elapsed_s = time.perf_counter() - started
    return report


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _maintenance_row(
    session: Session,
    principal: Principal,
    assets: dict[str, uuid.UUID],
    row: dict[str, Any],
    report: MaintenanceReport,
) -> None:
    line = int(row.pop(_LINE))
    values = {name: _clean(value) for name, value in row.items()}
    if all(v is None for v in values.values()):
        return
    report.rows_read += 1
    rejections = report.rejections
    tag = values.pop("asset")
    if tag is None:
        rejections.add(line, "missing asset")
        return
    for name in ("kind", "status"):
        if isinstance(values.get(name), str):
            values[name] = values[name].lower()
    data_in = {name: value for name, value in values.items() if value is not None}
    try:
        data = MaintenanceCreate.model_validate(data_in)
    except ValidationError as exc:
        rejections.add(line, "invalid values", _validation_detail(exc))
        return
    if data.started_at is None:
        rejections.add(line, "missing started_at", "it identifies the record on a rerun")
        return
    asset_id = assets.get(str(tag))
    if asset_id is None:
        rejections.add(line, "unknown asset", repr(str(tag)[:64]))
        return
    if maintenance_service.find_by_natural_key(
        session,
        tenant_id=principal.tenant_id,
        asset_id=asset_id,
        kind=data.kind,
        started_at=data.started_at,
    ):
        report.skipped += 1
        return
    try:
        maintenance_service.create_record(
            session, principal=principal, asset_id=asset_id, data=data
        )
    except DomainError as exc:
        detail = "; ".join(f"{e.loc[-1]}: {e.msg}" for e in exc.errors) or exc.detail
        rejections.add(line, "refused by the maintenance rules", detail)
        return
    report.created += 1


def _validation_detail(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "row"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


# --- a synthetic file, for the benchmark ----------------------------------------------------


def write_synthetic_wide_csv(
    path: Path,
    *,
    points: int,
    assets: int = 50,
    sensors: int = 20,
    start_s: int = 1_735_689_600,  # 2025-01-01T00:00:00Z
    step_s: int = 10,
) -> int:
    """Write a wide CSV of about ``points`` points (rows of ``sensors`` values, assets taking
    turns every ``step_s`` seconds), in pieces so memory stays flat. Returns the points written."""
    rows = max(1, math.ceil(points / sensors))
    piece = 100_000
    with open(path, "wb") as out:
        for first in range(0, rows, piece):
            i = pl.int_range(first, min(first + piece, rows), dtype=pl.Int64)
            values = [
                (((i * 12.9898 + j * 78.233).sin() * 43758.5453).mod(1.0) * 100)
                .round(3)
                .alias(f"s{j}")
                for j in range(sensors)
            ]
            frame = pl.select(
                pl.format("BENCH-{}", (i % assets).cast(pl.String).str.zfill(4)).alias("asset"),
                (start_s + (i // assets) * step_s).alias("ts"),
                *values,
            )
            frame.write_csv(out, include_header=first == 0)
    return rows * sensors
