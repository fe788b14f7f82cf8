"""Alert rules evaluated in the stream: conditions, windows, hold, hysteresis, combine, scope."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from foresight.models import Role
from tests.assets.helpers import assert_problem, create_asset
from tests.detection.helpers import alerts, at, rule, send, settle
from tests.factories import Factory, TestUser


def setup(client: TestClient, factory: Factory, *tags: str, **asset: Any) -> TestUser:
    user = factory.user(factory.tenant(), Role.analyst)
    for tag in tags or ("PUMP-001",):
        a = create_asset(client, user.headers, tag, **asset)
        for key in ("temperature", "vibration", "pressure"):
            r = client.post(
                f"/api/v1/assets/{a['id']}/sensors", json={"key": key}, headers=user.headers
            )
            assert r.status_code == 201, r.text
    return user


def test_threshold_opens_once_counts_nothing_extra_and_auto_resolves_with_hysteresis(
    client: TestClient, factory: Factory
) -> None:
    user = setup(client, factory)
    h = user.headers
    r = rule(
        client, h, name="hot",
        conditions=[{"sensor": "temperature", "op": ">", "threshold": 80}],
        clear_hysteresis=5,
    )  # fmt: skip
    send(client, h, "PUMP-001", [(0, {"temperature": 70.0}), (10, {"temperature": 79.9})])
    assert alerts(client, h) == []
    send(client, h, "PUMP-001", [(20, {"temperature": 85.0}), (30, {"temperature": 90.0})])
    [alert] = alerts(client, h)
    assert alert["status"] == "open" and alert["severity"] == "warning"
    assert alert["triggered_at"] == at(20)  # data time of the reading that opened it
    assert alert["rule_id"] == r["id"] and alert["sensor"] == "temperature"
    assert alert["count"] == 1 and alert["title"] == "hot on PUMP-001"
    # Within the hysteresis band (> 75): still active, no new alert.
    send(client, h, "PUMP-001", [(40, {"temperature": 77.0})])
    [alert] = alerts(client, h)
    assert alert["status"] == "open" and alert["resolved_at"] is None
    # Below 75: resolved automatically, at data time.
    send(client, h, "PUMP-001", [(50, {"temperature": 74.0})])
    [alert] = alerts(client, h)
    assert alert["status"] == "resolved" and alert["resolved_at"] == at(50)
    assert alert["resolved_by"] == "auto"
    # Fires again later: a new alert.
    send(client, h, "PUMP-001", [(60, {"temperature": 95.0})])
    found = alerts(client, h)
    assert [a["status"] for a in found] == ["open", "resolved"]


def test_resent_points_fire_nothing_and_repeats_count_without_auto_resolve(
    client: TestClient, factory: Factory
) -> None:
    user = setup(client, factory)
    h = user.headers
    rule(
        client, h, name="low", auto_resolve=False,
        conditions=[{"sensor": "pressure", "op": "<", "threshold": 2}],
    )  # fmt: skip
    batch = [(0, {"pressure": 1.0}), (10, {"pressure": 3.0}), (20, {"pressure": 1.5})]
    send(client, h, "PUMP-001", batch)
    [alert] = alerts(client, h)
    assert alert["count"] == 2 and alert["last_value"] == 1.5 and alert["status"] == "open"
    send(client, h, "PUMP-001", batch)  # the same batch again: not new, nothing happens
    [alert] = alerts(client, h)
    assert alert["count"] == 2


def test_window_aggregate_and_hold(client: TestClient, factory: Factory) -> None:
    user = setup(client, factory)
    h = user.headers
    rule(
        client, h, name="vib",
        conditions=[
            {"sensor": "vibration", "op": ">=", "threshold": 5, "aggregate": "mean", "window": "1m"}
        ],
        **{"for": "2m"},
    )  # fmt: skip
    # One spike does not move a 1-minute mean over 5 (mean of 4, 4, 4, 10 over 60 s = 5.5 ...)
    points = [(t, {"vibration": 4.0}) for t in range(0, 120, 15)]
    points.append((120, {"vibration": 9.0}))  # window (60,120]: 4,4,4,9 -> 5.25 >= 5: true
    points += [(t, {"vibration": 4.0}) for t in range(135, 200, 15)]  # back under: false
    send(client, h, "PUMP-001", points)
    assert alerts(client, h) == []  # true for less than the 2-minute hold
    # Sustained: mean >= 5 from t=300 on; the alert opens at the first point 2 min later.
    send(client, h, "PUMP-001", [(t, {"vibration": 6.0}) for t in range(300, 600, 15)])
    [alert] = alerts(client, h)
    # The window (t-60, t] holds only 6.0s once t >= 345 (4.0 at 195 left it at t=255, and the
    # first 6.0 at 300: mean at 300 = 6 already since 195 + 60 < 300).
    assert alert["triggered_at"] == at(300 + 120)


def test_window_history_is_read_back_from_the_store(client: TestClient, factory: Factory) -> None:
    user = setup(client, factory)
    h = user.headers
    send(client, h, "PUMP-001", [(t, {"vibration": 10.0}) for t in range(0, 60, 10)])
    # The rule exists only now; its window must include the stored points before.
    rule(
        client, h, name="max",
        conditions=[{"sensor": "vibration", "op": ">", "threshold": 8, "aggregate": "max",
                     "window": "5m"}],
    )  # fmt: skip
    engine = client.app.state.detection.engine  # type: ignore[attr-defined]
    engine._tails.clear()  # as after a restart
    send(client, h, "PUMP-001", [(70, {"vibration": 1.0})])
    [alert] = alerts(client, h)
    assert alert["triggered_at"] == at(70) and alert["last_value"] == 10.0


def test_a_new_window_reads_the_history_a_kept_tail_lacks(
    client: TestClient, factory: Factory
) -> None:
    user = setup(client, factory)
    h = user.headers
    # A raw rule keeps only the last point of the series in memory...
    rule(client, h, name="raw", conditions=[{"sensor": "vibration", "op": ">", "threshold": 50}])
    send(
        client,
        h,
        "PUMP-001",
        [(t, {"vibration": 10.0 if t == 0 else 1.0}) for t in range(0, 60, 10)],
    )
    # ...so a window added now must be filled from the store, not from that one point.
    rule(
        client, h, name="max",
        conditions=[{"sensor": "vibration", "op": ">", "threshold": 8, "aggregate": "max",
                     "window": "5m"}],
    )  # fmt: skip
    send(client, h, "PUMP-001", [(70, {"vibration": 1.0})])
    [alert] = alerts(client, h)  # the 10 at t = 0 is in the window, not in the kept tail
    assert alert["triggered_at"] == at(70) and alert["last_value"] == 10.0


def test_all_and_any_across_sensors(client: TestClient, factory: Factory) -> None:
    user = setup(client, factory)
    h = user.headers
    both = [
        {"sensor": "temperature", "op": ">", "threshold": 80},
        {"sensor": "vibration", "op": "outside", "min": 0, "max": 7},
    ]
    rule(client, h, name="and", conditions=both, combine="all", severity="critical")
    rule(client, h, name="or", conditions=both, combine="any")
    send(client, h, "PUMP-001", [(0, {"temperature": 85.0, "vibration": 3.0})])
    assert [a["title"] for a in alerts(client, h)] == ["or on PUMP-001"]
    send(client, h, "PUMP-001", [(10, {"temperature": 85.0, "vibration": 7.5})])
    found = {a["title"]: a for a in alerts(client, h)}
    assert set(found) == {"or on PUMP-001", "and on PUMP-001"}
    assert found["and on PUMP-001"]["severity"] == "critical"
    assert found["and on PUMP-001"]["triggered_at"] == at(10)
    send(client, h, "PUMP-001", [(20, {"temperature": 70.0})])  # the AND no longer holds
    found = {a["title"]: a["status"] for a in alerts(client, h)}
    assert found == {"or on PUMP-001": "open", "and on PUMP-001": "resolved"}


def test_rate_of_change(client: TestClient, factory: Factory) -> None:
    user = setup(client, factory)
    h = user.headers
    rule(
        client, h, name="jump",
        conditions=[{"sensor": "pressure", "op": "rate", "threshold": 2, "per": "1m"}],
    )  # fmt: skip
    # 0.5 per 30 s = 1 per minute: fine; then +3 in 60 s = 3 per minute: fires.
    send(client, h, "PUMP-001", [(0, {"pressure": 5.0}), (30, {"pressure": 5.5})])
    assert alerts(client, h) == []
    send(client, h, "PUMP-001", [(90, {"pressure": 8.5})])
    [alert] = alerts(client, h)
    assert alert["triggered_at"] == at(90) and alert["last_value"] == 3.0


def test_scope_by_type_and_criticality(client: TestClient, factory: Factory) -> None:
    user = factory.user(factory.tenant(), Role.analyst)
    h = user.headers
    specs = {"P-1": ("pump", "high"), "P-2": ("pump", "low"), "M-1": ("motor", "high")}
    for tag, (kind, criticality) in specs.items():
        extra = {"metadata": {"line": "A"}} if tag == "M-1" else {}
        a = create_asset(client, h, tag, type=kind, criticality=criticality, **extra)
        client.post(f"/api/v1/assets/{a['id']}/sensors", json={"key": "temperature"}, headers=h)
    cond = [{"sensor": "temperature", "op": ">", "threshold": 50}]
    rule(client, h, name="pumps", scope={"asset_type": "pump"}, conditions=cond)
    rule(client, h, name="important", scope={"criticality": ["high"]}, conditions=cond)
    rule(client, h, name="p1", scope={"tag_pattern": "P-1*"}, conditions=cond)
    rule(client, h, name="labelled", scope={"metadata": {"line": "A"}}, conditions=cond)
    for tag in specs:
        send(client, h, tag, [(0, {"temperature": 60.0})])
    titles = sorted(a["title"] for a in alerts(client, h))
    assert titles == [
        "important on M-1", "important on P-1", "labelled on M-1", "p1 on P-1", "pumps on P-1",
        "pumps on P-2",
    ]  # fmt: skip


def test_rule_changes_are_hot_reloaded(client: TestClient, factory: Factory) -> None:
    user = setup(client, factory)
    h = user.headers
    r = rule(
        client, h, name="t", conditions=[{"sensor": "temperature", "op": ">", "threshold": 80}]
    )
    send(client, h, "PUMP-001", [(0, {"temperature": 70.0})])
    patched = client.patch(
        f"/api/v1/alert-rules/{r['id']}",
        json={"conditions": [{"sensor": "temperature", "op": ">", "threshold": 60}]},
        headers=h,
    )
    assert patched.status_code == 200 and patched.json()["version"] == 2
    engine = client.app.state.detection.engine  # type: ignore[attr-defined]
    engine._checked_at = -1e9  # the reload interval has passed
    send(client, h, "PUMP-001", [(10, {"temperature": 70.0})])
    assert len(alerts(client, h)) == 1
    # Disabled: no longer evaluated.
    client.patch(f"/api/v1/alert-rules/{r['id']}", json={"enabled": False}, headers=h)
    engine._checked_at = -1e9
    client.post(f"/api/v1/alerts/{alerts(client, h)[0]['id']}/resolve", headers=h)
    send(client, h, "PUMP-001", [(20, {"temperature": 90.0})])
    assert [a["status"] for a in alerts(client, h)] == ["resolved"]


def test_a_rule_that_fails_is_disabled_with_its_error(client: TestClient, factory: Factory) -> None:
    user = setup(client, factory)
    h = user.headers
    r = rule(
        client, h, name="t", conditions=[{"sensor": "temperature", "op": ">", "threshold": 80}]
    )
    good = rule(
        client, h, name="good", conditions=[{"sensor": "temperature", "op": ">", "threshold": 50}]
    )
    engine = client.app.state.detection.engine  # type: ignore[attr-defined]
    engine.reload_if_changed(force=True)
    broken = engine.rules[__import__("uuid").UUID(r["id"])]
    condition = broken.conditions[0]
    object.__setattr__(condition, "op", "bogus")  # triggers() now raises
    object.__setattr__(condition, "threshold", None)
    send(client, h, "PUMP-001", [(0, {"temperature": 90.0})])
    body = client.get(f"/api/v1/alert-rules/{r['id']}", headers=h).json()
    assert body["enabled"] is False and "AssertionError" in body["error"]
    # The pipeline went on: the good rule fired, and ingestion still works.
    assert [a["rule_id"] for a in alerts(client, h)] == [good["id"]]
    send(client, h, "PUMP-001", [(10, {"temperature": 91.0})])
    settle(client)


def test_default_rules_from_expected_ranges(client: TestClient, factory: Factory) -> None:
    user = factory.user(factory.tenant(), Role.analyst)
    h = user.headers
    a = create_asset(client, h, "PUMP-001")
    r = client.post(
        f"/api/v1/assets/{a['id']}/sensors",
        json={"key": "temperature", "expected_min": 10, "expected_max": 90},
        headers=h,
    )
    assert r.status_code == 201
    send(client, h, "PUMP-001", [(0, {"temperature": 50.0})])
    defaults = client.get("/api/v1/alert-rules", params={"origin": "default"}, headers=h).json()
    [default] = defaults["items"]
    assert default["name"] == "PUMP-001 temperature outside expected range"
    assert default["conditions"][0] == {
        "sensor": "temperature", "op": "outside", "aggregate": "raw", "min": 10.0, "max": 90.0,
    }  # fmt: skip
    client.app.state.detection.engine.reload_if_changed(force=True)  # type: ignore[attr-defined]
    send(client, h, "PUMP-001", [(10, {"temperature": 95.0}), (40, {"temperature": 96.0})])
    assert alerts(client, h) == []  # held for a minute first
    send(client, h, "PUMP-001", [(70, {"temperature": 95.5})])
    [alert] = alerts(client, h)
    assert alert["triggered_at"] == at(70)
    assert alert["title"] == "PUMP-001 temperature outside expected range on PUMP-001"


def test_no_data(client: TestClient, factory: Factory) -> None:
    user = setup(client, factory)
    h = user.headers
    rule(
        client,
        h,
        name="silent",
        conditions=[{"sensor": "pressure", "op": "no_data", "minutes": 10}],
    )
    send(client, h, "PUMP-001", [(0, {"pressure": 5.0})])
    engine = client.app.state.detection.engine  # type: ignore[attr-defined]
    from datetime import timedelta

    from tests.detection.helpers import T0

    assert engine.check_silence(T0 + timedelta(minutes=9)) == []
    [(kind, _)] = engine.check_silence(T0 + timedelta(minutes=11))
    assert kind == "alert.opened"
    [alert] = alerts(client, h)
    assert alert["triggered_at"] == at(600)  # when the silence reached 10 minutes
    assert engine.check_silence(T0 + timedelta(minutes=12)) == []  # not again
    send(client, h, "PUMP-001", [(700, {"pressure": 5.0})])  # it speaks: resolved
    [alert] = alerts(client, h)
    assert alert["status"] == "resolved" and alert["resolved_at"] == at(700)


def test_invalid_rules_name_the_problem(client: TestClient, factory: Factory) -> None:
    user = setup(client, factory)
    h = user.headers
    base: dict[str, Any] = {"name": "x", "severity": "warning"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"conditions": [{"sensor": "nope", "op": ">", "threshold": 1}]}, "unknown sensor"),
        (
            {"conditions": [{"sensor": "temperature", "op": ">", "threshold": 1,
                             "aggregate": "mean", "window": 0}]},
            "window",
        ),
        ({"conditions": [{"sensor": "temperature", "op": "outside", "min": 5, "max": 1}]}, "min"),
        ({"severity": "apocalyptic", "conditions": [{"sensor": "temperature", "op": ">",
                                                      "threshold": 1}]}, "severity"),
        ({"conditions": []}, "conditions"),
        ({"conditions": [{"sensor": "temperature", "op": ">"}]}, "threshold"),
        ({"conditions": [{"sensor": "temperature", "op": ">", "threshold": 1}],
          "scope": {"asset_tag": "GHOST"}}, "asset"),
        ({"conditions": [{"sensor": "temperature", "op": ">", "threshold": 1}],
          "for": "ten minutes"}, "duration"),
    ]  # fmt: skip
    for fields, needle in cases:
        r = client.post("/api/v1/alert-rules", json={**base, **fields}, headers=h)
        assert r.status_code == 422, (fields, r.text)
        assert needle in r.text, (needle, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    ok = {**base, "conditions": [{"sensor": "temperature", "op": ">", "threshold": 1}]}
    assert client.post("/api/v1/alert-rules", json=ok, headers=h).status_code == 201
    assert_problem(client.post("/api/v1/alert-rules", json=ok, headers=h), 409)
