"""Every body format POST /api/v1/readings accepts, plain and compressed, and the ones it refuses.

Variants that only exercise parsing are looped inside one test (each test builds a whole app on
two backends); test_parsing.py covers the parsers' corner cases without a database.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from foresight.kit.time import utcnow
from tests.ingest.conftest import (
    CSV,
    FLEETVISION,
    FLEETVISION_KEYS,
    NDJSON,
    READINGS,
    T0_MS,
    T0_S,
    Tenant,
    assert_ok,
    assert_problem,
    iso,
)

MAX_DECOMPRESSED = 200_000


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"max_decompressed_bytes": MAX_DECOMPRESSED}


def test_fleetvision_single_reading_verbatim(tenant: Tenant) -> None:
    tenant.asset("PUMP-001")
    before = int(utcnow().timestamp() * 1000)
    assert_ok(tenant.post(FLEETVISION), accepted=5)
    after = int(utcnow().timestamp() * 1000)

    points = tenant.points("PUMP-001")
    assert {key for key, _ in points} == set(FLEETVISION_KEYS)
    # No timestamp: the reading is stamped "now", one instant for all of its values.
    stamps = {ts for _, ts in points}
    assert len(stamps) == 1 and before <= stamps.pop() <= after
    assert {k: v for (k, _), v in points.items()} == {
        "temperature": 65.2,
        "vibration": 2.1,
        "pressure": 8.5,
        "power_consumption": 15.3,
        "operating_hours": 2450.0,
    }

    # The sensors were created on the fly, and audited as such (attributed to the ingest path).
    assert set(tenant.series("PUMP-001")) == set(FLEETVISION_KEYS)
    created = tenant.audit("sensor.create")
    assert sorted(e["changes"]["key"] for e in created) == sorted(FLEETVISION_KEYS)
    for entry in created:
        assert entry["object_type"] == "sensor"
        assert entry["tenant_id"] == str(tenant.id)
        assert entry["actor_label"].startswith("ingest:")
    # Sending again creates nothing more.
    assert_ok(tenant.post({**FLEETVISION, "timestamp": T0_S}), accepted=5)
    assert len(tenant.audit("sensor.create")) == 5


def test_single_reading_timestamps_and_aliases(tenant: Tenant) -> None:
    tenant.asset("PUMP-001")
    stamps: list[Any] = [
        T0_S + 90,  # epoch seconds
        float(T0_S + 90),
        str(T0_S + 90),  # epoch seconds as a string
        iso(T0_S + 90),  # ISO 8601, Z
        "2026-01-01T00:01:30",  # no zone: UTC
        "2026-01-01T01:01:30+01:00",
    ]
    for i, stamp in enumerate(stamps):
        assert_ok(tenant.post({"equipment_id": "PUMP-001", "timestamp": stamp, f"s{i}": i}), 1)
    # `asset` and `ts` are aliases of `equipment_id` and `timestamp`.
    assert_ok(tenant.post({"asset": "PUMP-001", "ts": T0_S + 90, "rpm": 1480}), accepted=1)
    expected = {(f"s{i}", T0_MS + 90_000): float(i) for i in range(len(stamps))}
    assert tenant.points("PUMP-001") == {**expected, ("rpm", T0_MS + 90_000): 1480.0}


def test_timestamps_keep_their_milliseconds(tenant: Tenant) -> None:
    tenant.asset("PUMP-001")
    # ISO times whose float epoch seconds * 1000 falls just under the millisecond they name,
    # and epoch seconds with a fraction (rounded to the millisecond).
    stamps: list[tuple[Any, int]] = [
        ("2004-03-15T07:55:47.472+00:00", 1_079_337_347_472),
        ("2026-01-01T00:00:00.001Z", T0_MS + 1),
        ("2026-01-01T00:00:00.999Z", T0_MS + 999),
        ("2026-01-01T02:00:00.007+02:00", T0_MS + 7),
        ("2026-01-01T00:00:01.000999Z", T0_MS + 1000),
        (T0_S + 2.0017, T0_MS + 2002),
        (f"{T0_S + 3}.25", T0_MS + 3250),
    ]
    body = {
        "readings": [
            {"asset": "PUMP-001", "ts": stamp, "values": {"x": i}}
            for i, (stamp, _) in enumerate(stamps)
        ]
    }
    assert_ok(tenant.post(body), accepted=len(stamps))
    assert tenant.points("PUMP-001") == {("x", ms): float(i) for i, (_, ms) in enumerate(stamps)}


# --- one data set, every format -------------------------------------------------------------


def _rows(prefix: str) -> list[tuple[str, int, dict[str, float]]]:
    """Two assets, two sensors, three instants: 12 points."""
    return [
        (f"{prefix}-{n}", T0_S + i * 60, {"temperature": 60.0 + i + n * 10, "pressure": 8 + i / 10})
        for n in (1, 2)
        for i in range(3)
    ]


def _expected(
    rows: list[tuple[str, int, dict[str, float]]], tag: str
) -> dict[tuple[str, int], float]:
    return {(k, ts * 1000): v for t, ts, values in rows if t == tag for k, v in values.items()}


def _stamp(ts: int, ts_format: str) -> Any:
    return iso(ts) if ts_format == "iso" else ts


def _as_json(rows: list[Any], ts_format: str) -> bytes:
    items = [{"asset": a, "ts": _stamp(ts, ts_format), "values": v} for a, ts, v in rows]
    return json.dumps({"readings": items}).encode()


def _as_ndjson(rows: list[Any], ts_format: str) -> bytes:
    lines = []
    for i, (a, ts, v) in enumerate(rows):
        if i % 2:  # both shapes may be mixed: the batch item and the FleetVision reading
            lines.append(json.dumps({"asset": a, "ts": _stamp(ts, ts_format), "values": v}))
        else:
            lines.append(json.dumps({"equipment_id": a, "timestamp": _stamp(ts, ts_format), **v}))
    return ("\r\n".join(lines) + "\r\n").encode()  # CRLF line ends are fine too


def _as_csv_wide(rows: list[Any], ts_format: str) -> bytes:
    lines = ["asset,ts,temperature,pressure"]
    lines += [
        f"{a},{_stamp(ts, ts_format)},{v['temperature']},{v['pressure']}" for a, ts, v in rows
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def _as_csv_long(rows: list[Any], ts_format: str) -> bytes:
    lines = ["asset,sensor,ts,value"]
    lines += [f"{a},{k},{_stamp(ts, ts_format)},{x}" for a, ts, v in rows for k, x in v.items()]
    return ("\n".join(lines) + "\n").encode()


FORMATS = {
    "json": (_as_json, "application/json"),
    "ndjson": (_as_ndjson, NDJSON),
    "csv-wide": (_as_csv_wide, CSV),
    "csv-long": (_as_csv_long, CSV),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_plain_and_gzipped_epoch_and_iso(tenant: Tenant, fmt: str) -> None:
    build, content_type = FORMATS[fmt]
    for ts_format in ("epoch", "iso"):
        for gzipped in (False, True):
            prefix = f"{ts_format}-{'gz' if gzipped else 'plain'}"
            rows = _rows(prefix)
            tenant.asset(f"{prefix}-1")
            tenant.asset(f"{prefix}-2", "temperature")  # one sensor exists, one is created
            r = tenant.post(build(rows, ts_format), content_type=content_type, gzipped=gzipped)
            assert_ok(r, accepted=12)
            for n in (1, 2):
                assert tenant.points(f"{prefix}-{n}") == _expected(rows, f"{prefix}-{n}"), prefix


def test_content_type_variants(tenant: Tenant) -> None:
    rows = _rows("P")
    tenant.asset("P-1")
    tenant.asset("P-2")
    variants = [
        ("application/json; charset=utf-8", _as_json),
        ("APPLICATION/JSON", _as_json),
        ("application/ndjson", _as_ndjson),
        ("application/jsonl", _as_ndjson),
        ("text/csv; charset=utf-8; header=present", _as_csv_wide),
    ]
    for content_type, build in variants:
        assert_ok(tenant.post(build(rows, "epoch"), content_type=content_type), accepted=12)
    # application/json-seq (RFC 7464): each record starts with an RS character.
    seq = "".join(
        f"\x1e{json.dumps({'asset': 'P-1', 'ts': T0_S + i, 'values': {'q': i}})}\n"
        for i in range(3)
    )
    assert_ok(tenant.post(seq, content_type="application/json-seq"), accepted=3)
    # No Content-Type at all: JSON.
    r = tenant.client.post(
        READINGS, content=json.dumps(FLEETVISION).encode(), headers=tenant.operator
    )
    assert r.status_code == 422  # PUMP-001 is not registered: every point refused, as JSON
    assert r.json()["rejected"] == 5
    assert tenant.points("P-1") == {
        **_expected(rows, "P-1"),
        **{("q", (T0_S + i) * 1000): float(i) for i in range(3)},
    }
    assert tenant.points("P-2") == _expected(rows, "P-2")


def test_csv_details(tenant: Tenant) -> None:
    tenant.asset("P-1")
    # A byte-order mark, the FleetVision column names, quoting, spaces, empty cells.
    body = (
        "\ufeffequipment_id , timestamp,a,b\r\n"
        f"P-1,2026-01-01T00:00:00Z,1.5,\r\n"
        f'"P-1",{T0_S + 1},, 2 \r\n'
        "\r\n"
        f'P-1,{T0_S + 2},"3",4e0\r\n'
    )
    assert_ok(tenant.post(body, content_type=CSV), accepted=4)
    assert tenant.points("P-1") == {
        ("a", T0_MS): 1.5,
        ("b", T0_MS + 1000): 2.0,
        ("a", T0_MS + 2000): 3.0,
        ("b", T0_MS + 2000): 4.0,
    }


UNREADABLE: list[tuple[str | bytes, str]] = [
    ("", CSV),
    ("asset,temperature\nP-1,1\n", CSV),  # no ts column
    ("ts,temperature\n1,1\n", CSV),  # no asset column
    ("asset,ts\nP-1,1\n", CSV),  # no sensor column
    ("asset,sensor,ts,value,extra\nP-1,t,1,1,1\n", CSV),  # long layout with a fifth column
    ("[1, 2]", "application/json"),
    ('"a string"', "application/json"),
    ("null", "application/json"),
    ('{"readings": {"asset": "P-1"}}', "application/json"),
    ('{"readings": [], "extra": 1}', "application/json"),
    (b"\xff\xfe{}", NDJSON),
    (b"asset,ts,a\n\xff,1,1\n", CSV),
]


def test_refused_bodies_and_headers(tenant: Tenant) -> None:
    tenant.asset("PUMP-001")
    # Empty, but well-formed: nothing to do, nothing refused.
    assert_ok(tenant.post({"readings": []}), accepted=0)
    assert_ok(tenant.post("\n\n", content_type=NDJSON), accepted=0)
    assert_ok(tenant.post("asset,ts,a\n", content_type=CSV), accepted=0)
    for body, content_type in UNREADABLE:
        problem = assert_problem(tenant.post(body, content_type=content_type), 422)
        assert problem["errors"][0]["loc"] == ["body"], body
    malformed: list[str | bytes] = [
        '{"equipment_id": "PUMP-001", "temperature": ',
        "{'a': 1}",
        "not json",
        "",
        b'{"equipment_id": "PUMP-001", "a": 1}\xff',  # not UTF-8
    ]
    for body in malformed:
        problem = assert_problem(tenant.post(body, content_type="application/json"), 400)
        assert problem["type"] == "urn:foresight:problem:malformed-json", body
    valid = json.dumps({**FLEETVISION, "timestamp": T0_S})
    for content_type in [
        "application/xml",
        "text/plain",
        "multipart/form-data; boundary=x",
        "json",
    ]:
        problem = assert_problem(tenant.post(valid, content_type=content_type), 415)
        assert problem["type"] == "urn:foresight:problem:unsupported-media-type"
    for encoding in ["br", "compress", "zstd", "gzip, br"]:
        body = valid.encode() if encoding != "gzip, br" else gzip.compress(valid.encode())
        problem = assert_problem(
            tenant.post(body, content_type="application/json", encoding=encoding), 415
        )
        assert encoding in problem["detail"]
    assert tenant.points("PUMP-001") == {}


# --- compression ------------------------------------------------------------------------------


def test_content_encodings(tenant: Tenant) -> None:
    tenant.asset("PUMP-001")
    compress: dict[str, Callable[[bytes], bytes]] = {
        "gzip": gzip.compress,
        "x-gzip": gzip.compress,
        "GZIP": gzip.compress,
        "deflate": zlib.compress,
        "identity": bytes,
    }
    for i, (encoding, fn) in enumerate(compress.items()):
        raw = json.dumps({"equipment_id": "PUMP-001", "timestamp": T0_S + i, "v": i}).encode()
        assert_ok(tenant.post(fn(raw), content_type="application/json", encoding=encoding), 1)
    # `cat a.gz b.gz` is one valid gzip stream: every member counts, not just the first.
    first = gzip.compress(f"asset,ts,w\nPUMP-001,{T0_S},1\n".encode())
    second = gzip.compress(f"PUMP-001,{T0_S + 1},2\n".encode())
    assert_ok(tenant.post(first + second, content_type=CSV, encoding="gzip"), accepted=2)
    assert tenant.points("PUMP-001") == {
        **{("v", (T0_S + i) * 1000): float(i) for i in range(len(compress))},
        ("w", T0_MS): 1.0,
        ("w", T0_MS + 1000): 2.0,
    }


def test_gzip_bomb_is_refused(tenant: Tenant) -> None:
    tenant.asset("PUMP-001")
    line = json.dumps({**FLEETVISION, "timestamp": T0_S}) + "\n"
    # Exactly at the limit: fine.
    at_limit = (line + "\n" * (MAX_DECOMPRESSED - len(line))).encode()
    assert len(at_limit) == MAX_DECOMPRESSED
    assert_ok(tenant.post(gzip.compress(at_limit), content_type=NDJSON, encoding="gzip"), 5)
    # A valid body padded with blank lines: small on the wire, far too big once inflated.
    inflated = (
        json.dumps({**FLEETVISION, "timestamp": T0_S + 1}) + "\n" * (50 * MAX_DECOMPRESSED)
    ).encode()
    for bomb in (gzip.compress(inflated), gzip.compress(at_limit) + gzip.compress(b"\n")):
        assert len(bomb) < 20_000 < MAX_DECOMPRESSED
        r = tenant.post(bomb, content_type=NDJSON, encoding="gzip")
        problem = assert_problem(r, r.status_code)
        assert 400 <= r.status_code < 500
        assert "exceeds" in problem["detail"]
    assert {ts for _, ts in tenant.points("PUMP-001")} == {T0_MS}


def test_corrupt_gzip_is_refused_and_nothing_stored(tenant: Tenant) -> None:
    tenant.asset("P-1")
    csv_body = ("asset,ts,a\n" + "".join(f"P-1,{T0_S + i},{i}\n" for i in range(500))).encode()
    good = gzip.compress(csv_body)
    corrupt = {
        "garbage": b"\x1f\x8b\x08\x00garbage-garbage-garbage",
        "not-compressed": csv_body,
        "truncated": good[: len(good) // 2],
        "no-trailer": good[:-8],
        "bad-crc": good[:-8] + b"\x00\x00\x00\x00" + good[-4:],
        "trailing-garbage": good + b"garbage",
        "empty": b"",
    }
    for kind, body in corrupt.items():
        r = tenant.post(body, content_type=CSV, encoding="gzip")
        assert r.status_code == 422, (kind, r.text)
        assert_problem(r, 422)
        # Nothing of a body that could not be read whole is stored.
        assert tenant.points("P-1") == {}, kind
