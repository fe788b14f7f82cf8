"""Bad rows are refused one by one, with a reason; the good rows of the same request are stored."""

from __future__ import annotations

import json
from typing import Any

from foresight.kit.time import utcnow
from tests.ingest.conftest import (
    CSV,
    NDJSON,
    T0_MS,
    T0_S,
    Tenant,
    assert_ok,
    assert_problem,
    asset_exists,
    iso,
)

Expected = list[tuple[int, str | None, str | None, str]]  # row, asset, sensor, part of the reason


def _check_errors(body: dict[str, Any], expected: Expected) -> None:
    got = [(e["row"], e["asset"], e["sensor"]) for e in body["errors"]]
    assert got == sorted(got, key=lambda g: g[0]), "errors are in row order"
    assert sorted(got, key=repr) == sorted(((r, a, s) for r, a, s, _ in expected), key=repr), body
    for row, asset, sensor, reason in expected:
        matching = [
            e["reason"]
            for e in body["errors"]
            if (e["row"], e["asset"], e["sensor"]) == (row, asset, sensor)
        ]
        assert any(reason in m for m in matching), (row, sensor, reason, matching)


def _now_s() -> int:
    return int(utcnow().timestamp())


def test_json_batch_rows_are_refused_one_by_one(tenant: Tenant) -> None:
    tenant.asset("A", "temperature")
    future, soon = _now_s() + 3600, _now_s() + 60
    items: list[Any] = [
        {"asset": "A", "ts": T0_S, "values": {"temperature": 1.0, "vibration": 2}},  # 0: good
        {"asset": "A", "ts": T0_S + 1, "values": {"temperature": "hot", "vibration": 3}},
        {"asset": "A", "ts": T0_S + 2, "values": {"temperature": float("nan")}},
        {
            "asset": "A",
            "ts": T0_S + 3,
            "values": {"temperature": float("inf"), "vibration": -float("inf")},
        },
        {"asset": "A", "ts": future, "values": {"temperature": 1}},
        {"asset": "A", "ts": -1, "values": {"temperature": 1}},  # 5
        {"asset": "A", "ts": "1969-12-31T23:59:59Z", "values": {"temperature": 1}},
        {"asset": "A", "values": {"temperature": 1}},  # no ts
        {"asset": "NOPE", "ts": T0_S, "values": {"temperature": 1, "vibration": 2}},
        {"asset": "A", "ts": T0_S + 9, "values": {"Temp-1": 1, "temperature": 9}},
        {"asset": "A", "ts": "yesterday", "values": {"temperature": 1}},  # 10
        {"ts": T0_S, "values": {"temperature": 1}},  # no asset
        {"asset": "A", "ts": T0_S, "values": {}},
        {"asset": "A", "ts": T0_S + 13, "values": {"big": 10**400, "temperature": 13}},
        "not an object",
        {"asset": "A", "ts": T0_S + 15, "values": {"temperature": 1}, "extra": 1},  # 15
        {"asset": "A", "ts": True, "values": {"temperature": 1}},
        {"asset": "A", "ts": T0_S + 17, "values": {"flag": True}},  # booleans are 1/0
        {"asset": "A", "ts": str(T0_S + 18), "values": {"temperature": " 18.5 "}},  # strings
        {"asset": "A", "ts": T0_S + 19, "values": {"temperature": {"v": 1}}},
        {"asset": "A" * 65, "ts": T0_S, "values": {"temperature": 1}},  # 20
        {"asset": "A", "ts": 10**400, "values": {"temperature": 1}},
        {"asset": "A", "ts": soon, "values": {"temperature": 22}},  # a little ahead: fine
        {"asset": "bad tag!", "ts": T0_S, "values": {"temperature": 1}},
        {"asset": "A", "ts": T0_S + 24, "values": {"temperature": None}},
        {"asset": "A", "ts": "nan", "values": {"temperature": 1}},  # 25
    ]
    # Raw JSON NaN/Infinity, as Python's json module writes them.
    raw = json.dumps({"readings": items})
    assert "NaN" in raw and "-Infinity" in raw
    body = assert_ok(tenant.post(raw, content_type="application/json"), accepted=8, rejected=24)
    _check_errors(
        body,
        [
            (1, "A", "temperature", "not a number"),
            (2, "A", "temperature", "finite"),
            (3, "A", "temperature", "finite"),
            (3, "A", "vibration", "finite"),
            (4, "A", None, "in the future"),
            (5, "A", None, "before 1970"),
            (6, "A", None, "before 1970"),
            (7, "A", None, "missing timestamp"),
            (8, "NOPE", "temperature", "unknown asset 'NOPE'"),
            (8, "NOPE", "vibration", "unknown asset 'NOPE'"),
            (9, "A", "Temp-1", "invalid sensor key"),
            (10, "A", None, "unreadable timestamp"),
            (11, None, None, "missing asset"),
            (12, "A", None, "non-empty"),
            (13, "A", "big", "out of range"),
            (14, None, None, "JSON object"),
            (15, "A", None, "unknown field(s): extra"),
            (16, "A", None, "boolean"),
            (19, "A", "temperature", "not a number"),
            (20, "A" * 64, None, "invalid asset tag"),
            (21, "A", None, "out of range"),
            (23, "bad tag!", None, "invalid asset tag"),
            (24, "A", "temperature", "not a number"),
            (25, "A", None, "finite"),
        ],
    )
    assert tenant.points("A") == {
        ("temperature", T0_MS): 1.0,
        ("vibration", T0_MS): 2.0,
        ("vibration", T0_MS + 1000): 3.0,
        ("temperature", T0_MS + 9000): 9.0,
        ("temperature", T0_MS + 13_000): 13.0,
        ("flag", T0_MS + 17_000): 1.0,
        ("temperature", T0_MS + 18_000): 18.5,
        ("temperature", soon * 1000): 22.0,
    }
    # Refused rows created nothing: no sensor for a refused key, no asset for an unknown tag.
    assert set(tenant.series("A")) == {"temperature", "vibration", "flag"}
    assert tenant.series("NOPE") == {}
    assert len(tenant.audit("asset.create")) == 1  # A itself, made by the test


def test_single_reading_errors(tenant: Tenant) -> None:
    tenant.asset("PUMP-001")
    raw = (
        f'{{"equipment_id": "PUMP-001", "timestamp": {T0_S}, "temperature": NaN, "vibration": 2.1,'
        ' "pressure": Infinity, "status": "running", "Bad Key": 1, "rpm": "1480"}'
    )
    body = assert_ok(tenant.post(raw, content_type="application/json"), accepted=2, rejected=4)
    _check_errors(
        body,
        [
            (0, "PUMP-001", "temperature", "finite"),
            (0, "PUMP-001", "pressure", "finite"),
            (0, "PUMP-001", "status", "not a number"),
            (0, "PUMP-001", "Bad Key", "invalid sensor key"),
        ],
    )
    assert tenant.points("PUMP-001") == {("vibration", T0_MS): 2.1, ("rpm", T0_MS): 1480.0}


def test_ndjson_rows_are_refused_one_by_one(tenant: Tenant) -> None:
    tenant.asset("A")
    lines = [
        json.dumps({"equipment_id": "A", "timestamp": T0_S, "temperature": 1}),  # 0: good
        '{"asset": "A", "ts": 1, "values": {',  # malformed
        "",  # blank lines are skipped, but keep their number
        # A raw U+2028 inside a JSON string is legal: the line is still one row.
        f'{{"asset": "A", "ts": {T0_S + 3}, "values": {{"temperature": "6\u20285"}}}}',
        json.dumps({"asset": "A", "ts": T0_S + 4, "values": {"temperature": 4}}),  # good
        f'{{"asset": "A", "ts": {T0_S + 5}, "values": {{"temperature": NaN}}}}',  # 5
        "[1, 2]",
        json.dumps({"equipment_id": "A"}),  # no values
        json.dumps({"asset": "GHOST", "ts": T0_S, "values": {"temperature": 1}}),
        json.dumps({"asset": "A", "ts": iso(_now_s() + 3600), "values": {"x": 1}}),
        "   ",  # 10
        json.dumps({"asset": "A", "ts": iso(T0_S + 11), "values": {"x": 11}}),  # good
    ]
    body = assert_ok(tenant.post("\r\n".join(lines), content_type=NDJSON), accepted=3, rejected=7)
    _check_errors(
        body,
        [
            (1, None, None, "malformed JSON line"),
            (3, "A", "temperature", "not a number"),
            (5, "A", "temperature", "finite"),
            (6, None, None, "JSON object"),
            (7, "A", None, "no sensor values"),
            (8, "GHOST", "temperature", "unknown asset"),
            (9, "A", None, "in the future"),
        ],
    )
    assert tenant.points("A") == {
        ("temperature", T0_MS): 1.0,
        ("temperature", T0_MS + 4000): 4.0,
        ("x", T0_MS + 11_000): 11.0,
    }


def test_csv_wide_rows_are_refused_one_by_one(tenant: Tenant) -> None:
    tenant.asset("A")
    rows = [
        "asset,ts,temperature,vibration,Bad-Key",
        f"A,{T0_S},1,2,",  # 0: good (an empty cell is no reading)
        f"A,{T0_S + 1},1",  # too few columns
        f"A,{T0_S + 2},hot,3,",
        f"A,{T0_S + 3},NaN,inf,",
        f"NOPE,{T0_S + 4},1,2,",
        f"A,{iso(_now_s() + 3600)},1,2,",  # 5
        "A,,1,2,",
        f",{T0_S},1,2,",
        f"A,{T0_S + 8},1,2,3",  # good, but the Bad-Key column is refused
        "",
        f"A,{T0_S + 10},1,2,,extra",  # 10: too many columns
        "A,1969-12-31T00:00:00Z,1,2,",
        f'"A",{T0_S + 12},"1,5",2,',  # a quoted comma: not a number
    ]
    body = assert_ok(tenant.post("\n".join(rows) + "\n", content_type=CSV), accepted=6, rejected=13)
    _check_errors(
        body,
        [
            (1, None, None, "expected 5 columns, found 3"),
            (2, "A", "temperature", "not a number"),
            (3, "A", "temperature", "finite"),
            (3, "A", "vibration", "finite"),
            (4, "NOPE", "temperature", "unknown asset"),
            (4, "NOPE", "vibration", "unknown asset"),
            (5, "A", None, "in the future"),
            (6, "A", None, "missing timestamp"),
            (7, None, None, "missing asset"),
            (8, "A", "Bad-Key", "invalid sensor key"),
            (10, None, None, "expected 5 columns, found 6"),
            (11, "A", None, "before 1970"),
            (12, "A", "temperature", "not a number"),
        ],
    )
    assert tenant.points("A") == {
        ("temperature", T0_MS): 1.0,
        ("vibration", T0_MS): 2.0,
        ("vibration", T0_MS + 2000): 3.0,
        ("temperature", T0_MS + 8000): 1.0,
        ("vibration", T0_MS + 8000): 2.0,
        ("vibration", T0_MS + 12_000): 2.0,
    }


def test_csv_long_rows_are_refused_one_by_one(tenant: Tenant) -> None:
    tenant.asset("A")
    rows = [
        "asset,sensor,ts,value",
        f"A,temperature,{T0_S},1",  # 0: good
        f"A,Temperature,{T0_S},1",
        f"A,temperature,{T0_S + 2},abc",
        f"A,temperature,{T0_S + 3}",
        f"NOPE,temperature,{T0_S},1",
        f"A,vibration,{iso(T0_S + 5)},2.5",  # 5: good
        "A,temperature,-5,1",
        f"A,temperature,{T0_S + 7},",
        f"A,,{T0_S + 8},1",
    ]
    body = assert_ok(tenant.post("\n".join(rows), content_type=CSV), accepted=2, rejected=7)
    _check_errors(
        body,
        [
            (1, "A", "Temperature", "invalid sensor key"),
            (2, "A", "temperature", "not a number"),
            (3, None, None, "expected 4 columns, found 3"),
            (4, "NOPE", "temperature", "unknown asset"),
            (6, "A", None, "before 1970"),
            (7, "A", "temperature", "not a number"),
            (8, "A", "", "invalid sensor key"),
        ],
    )
    assert tenant.points("A") == {("temperature", T0_MS): 1.0, ("vibration", T0_MS + 5000): 2.5}


def test_every_row_rejected_is_a_422_problem_listing_the_errors(tenant: Tenant) -> None:
    tenant.asset("A")
    cases: list[tuple[str, str, int]] = [
        ('{"equipment_id": "A", "temperature": "hot", "vibration": NaN}', "application/json", 2),
        ('{"equipment_id": "UNKNOWN", "temperature": 1}', "application/json", 1),
        (
            json.dumps(
                {
                    "readings": [
                        {"asset": "A", "values": {"t": 1}},
                        {"asset": "A", "ts": -5, "values": {"t": 1}},
                    ]
                }
            ),
            "application/json",
            2,
        ),
        ('not json\n{"asset": "A", "ts": 1, "values": {"Bad": 1}}\n', NDJSON, 2),
        (f"asset,ts,temperature\nA,{T0_S}\nA,{T0_S},x\n", CSV, 2),
        (f"asset,sensor,ts,value\nZ,t,{T0_S},1\n", CSV, 1),
    ]
    for body, content_type, rejected in cases:
        r = tenant.post(body, content_type=content_type)
        problem = assert_problem(r, 422)
        assert problem["type"] == "urn:foresight:problem:readings-rejected"
        assert (problem["accepted"], problem["rejected"]) == (0, rejected), problem
        assert len(problem["errors"]) == rejected
        for error in problem["errors"]:
            assert error["loc"][:1] == ["body"] and isinstance(error["loc"][1], int)
            assert error["type"] == "row_rejected" and error["msg"]
    # The messages name the asset, the sensor (in loc) and the reason.
    r = tenant.post(f'{{"equipment_id": "A", "timestamp": {T0_S}, "temperature": "hot"}}')
    problem = assert_problem(r, 422)
    assert problem["errors"] == [
        {"loc": ["body", 0, "temperature"], "msg": "A: not a number: 'hot'", "type": "row_rejected"}
    ]
    assert tenant.points("A") == {}
    assert tenant.series("A") == {}
    # Unknown assets are not registered by default (auto_register_assets is off).
    assert not asset_exists(tenant.factory.db, tenant.id, "UNKNOWN")
    assert [e["changes"]["tag"] for e in tenant.audit("asset.create")] == ["A"]


def test_error_list_is_truncated_but_counted(tenant: Tenant) -> None:
    tenant.asset("A")
    lines = [json.dumps({"asset": "A", "ts": T0_S, "values": {"ok": 1}})]
    lines += [f'{{"asset": "A", "ts": {T0_S}, "values": {{"v": "x"}}}}'] * 1200
    r = tenant.post("\n".join(lines), content_type=NDJSON, gzipped=True)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["rejected"], body["errors_truncated"]) == (1, 1200, True)
    assert len(body["errors"]) == 1000
    assert [e["row"] for e in body["errors"]] == list(range(1, 1001))
    assert tenant.points("A") == {("ok", T0_MS): 1.0}


def test_unprintable_input_is_echoed_safely(tenant: Tenant) -> None:
    # JSON may carry lone surrogates ("\ud800"): no database stores them, no response encodes
    # them. The rows are refused and the rest of the request goes through.
    tenant.asset("A")
    raw = json.dumps(
        {
            "readings": [
                {"asset": "A\ud800", "ts": T0_S, "values": {"t": 1}},
                {"asset": "A", "ts": T0_S, "values": {"\ud800": 1, "t": 2}},
                {"asset": "A", "ts": T0_S + 1, "values": {"t": 3}, "\udfff": 1},
                {"asset": "A", "ts": "\ud800", "values": {"t": 4}},
            ]
        }
    )
    body = assert_ok(tenant.post(raw, content_type="application/json"), accepted=1, rejected=4)
    _check_errors(
        body,
        [
            (0, "A\\ud800", None, "invalid asset tag"),
            (1, "A", "\\ud800", "invalid sensor key"),
            (2, "A", None, "unknown field(s): \\udfff"),
            (3, "A", None, "unreadable timestamp"),
        ],
    )
    assert tenant.points("A") == {("t", T0_MS): 2.0}
