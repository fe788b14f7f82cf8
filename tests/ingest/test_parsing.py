"""The parsers and the decompressor on their own (no database, no app): many cases, quickly."""

from __future__ import annotations

import gzip
import random
import uuid
import zlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from foresight.ingest.batch import Limits, parse_ts, parse_value
from foresight.ingest.endpoints import _decompress
from foresight.ingest.parse import BodyError, MalformedJSON, parse_csv, parse_json, parse_ndjson
from foresight.kit.errors import InvalidInput

LIMITS = Limits(max_future_s=300)
IST = timezone(timedelta(hours=5, minutes=30))
TENANT = uuid.uuid4()


def test_iso_timestamps_are_exact_to_the_millisecond() -> None:
    rng = random.Random(11)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for _ in range(20_000):
        ms = rng.randrange(0, 4_102_444_800_000)
        moment = epoch + timedelta(milliseconds=ms)
        assert parse_ts(moment.isoformat(timespec="milliseconds")) == ms
        assert parse_ts(moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z") == ms
        offset = moment.astimezone(IST)
        assert parse_ts(offset.isoformat(timespec="milliseconds")) == ms


@pytest.mark.parametrize(
    ("raw", "ms"),
    [
        (0, 0),
        (1.0017, 1002),  # rounded to the millisecond
        ("1767225600", 1_767_225_600_000),
        (" 1767225600.5 ", 1_767_225_600_500),
        ("2026-01-01T00:00:00z", 1_767_225_600_000),
        ("2026-01-01", 1_767_225_600_000),
        ("2026-01-01T00:00:00.000999+00:00", 1_767_225_600_000),  # truncated below the ms
        ("1969-12-31T23:59:59.9995Z", -1),  # floor, so it is refused as before 1970
    ],
)
def test_parse_ts(raw: object, ms: int) -> None:
    assert parse_ts(raw) == ms


@pytest.mark.parametrize(
    "raw",
    [
        True,
        None,
        [1],
        {"a": 1},
        "",
        "soon",
        "nan",
        "inf",
        float("nan"),
        10**400,
        "0001-01-01T00:00:00+14:00x",
    ],
)
def test_parse_ts_refuses(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_ts(raw)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "x",
        "1,5",
        [1],
        {},
        float("nan"),
        float("-inf"),
        "NaN",
        "-Infinity",
        10**400,
        "1e400",
    ],
)
def test_parse_value_refuses(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_value(raw)


def test_parse_value_accepts() -> None:
    assert [parse_value(v) for v in (1, 2.5, " -3e2 ", True, False, 10**300)] == [
        1.0, 2.5, -300.0, 1.0, 0.0, 1e300,
    ]  # fmt: skip


def test_ndjson_rows_are_lines() -> None:
    body = (
        '{"asset": "A", "ts": 1, "values": {"a": "x\u2028y"}}\n'  # a raw U+2028 in a string
        '{"asset": "A", "ts": 1, "values": {"a": "x\x85y"}}\r\n'  # and a raw NEL
        "\n"
        "\x1e" + '{"asset": "A", "ts": 2, "values": {"a": 1}}\n'  # a json-seq record
        "{oops\n"
    ).encode()
    batch = parse_ndjson(body, TENANT, LIMITS)
    assert [(e.row, e.reason[:12]) for e in batch.errors] == [
        (0, "not a number"),
        (1, "not a number"),
        (4, "malformed JS"),
    ]
    assert (batch.row, batch.ts_ms) == ([3], [2000])


def test_malformed_json_is_its_own_error() -> None:
    with pytest.raises(MalformedJSON):
        parse_json(b"{", TENANT, LIMITS)
    with pytest.raises(BodyError) as caught:
        parse_json(b"[]", TENANT, LIMITS)
    assert not isinstance(caught.value, MalformedJSON)


def test_asset_tags_must_be_possible_tags() -> None:
    body = "asset,ts,a\nP-1,1,1\nP 1,1,1\nP/1:x_y.z,1,1\n-P,1,1\n\u00e9,1,1\n".encode()
    batch = parse_csv(body, TENANT, LIMITS)
    assert batch.asset == ["P-1", "P/1:x_y.z"]
    assert [e.row for e in batch.errors] == [1, 3, 4]
    assert {e.reason for e in batch.errors} == {"invalid asset tag"}


LIMIT = 10_000


def test_decompress() -> None:
    data = b"x" * LIMIT
    for encoding, compress in (("gzip", gzip.compress), ("deflate", zlib.compress)):
        assert _decompress(compress(data), encoding, LIMIT) == data
        with pytest.raises(InvalidInput, match="exceeds"):
            _decompress(compress(data + b"x"), encoding, LIMIT)
        whole = compress(data[:100])
        for broken in (whole[:-1], whole[: len(whole) // 2], whole + b"junk", b"junk", b""):
            with pytest.raises(InvalidInput):
                _decompress(broken, encoding, LIMIT)
    # Several gzip members: all read, and all count towards the limit.
    members = gzip.compress(b"a" * 10) + gzip.compress(b"b" * 10)
    assert _decompress(members, "gzip", LIMIT) == b"a" * 10 + b"b" * 10
    with pytest.raises(InvalidInput, match="exceeds"):
        _decompress(gzip.compress(data) + gzip.compress(b"b"), "gzip", LIMIT)
    assert _decompress(b"plain", "identity", LIMIT) == b"plain"
