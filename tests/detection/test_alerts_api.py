"""Alerts over the API: lifecycle, filters, stats; rule export/import; tenant isolation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import yaml
from fastapi.testclient import TestClient
from sqlalchemy import select

from foresight.models import AuditEntry, Role
from tests.assets.helpers import assert_problem, create_asset
from tests.detection.helpers import T0, alerts, at, rule, send
from tests.factories import Factory, TestUser

HOT = [{"sensor": "temperature", "op": ">", "threshold": 80}]


def world(client: TestClient, factory: Factory, tags: tuple[str, ...] = ("P-1", "P-2")) -> TestUser:
    user = factory.user(factory.tenant(), Role.analyst)
    for tag in tags:
        a = create_asset(client, user.headers, tag, type="pump")
        client.post(
            f"/api/v1/assets/{a['id']}/sensors", json={"key": "temperature"}, headers=user.headers
        )
    return user


def test_lifecycle_with_who_when_and_note(client: TestClient, factory: Factory) -> None:
    analyst = world(client, factory)
    operator = factory.user(analyst.tenant_id, Role.operator)
    viewer = factory.user(analyst.tenant_id, Role.viewer)
    rule(client, analyst.headers, name="hot", scope={"asset_type": "pump"}, conditions=HOT)
    send(client, analyst.headers, "P-1", [(0, {"temperature": 90.0})])
    [alert] = alerts(client, viewer.headers)
    url = f"/api/v1/alerts/{alert['id']}"
    assert_problem(client.post(f"{url}/acknowledge", headers=viewer.headers), 403)
    r = client.post(f"{url}/acknowledge", json={"note": "crew sent"}, headers=operator.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "acknowledged" and body["acknowledge_note"] == "crew sent"
    assert body["acknowledged_by"] == operator.email and body["acknowledged_at"]
    assert_problem(client.post(f"{url}/acknowledge", headers=operator.headers), 409)
    # It clears at t=10 (auto-resolved, acknowledged or not) and fires anew at t=20.
    send(client, analyst.headers, "P-1", [(10, {"temperature": 70.0}), (20, {"temperature": 95.0})])
    assert [a["status"] for a in alerts(client, viewer.headers)] == ["open", "resolved"]
    [again] = alerts(client, viewer.headers, status="open")
    r = client.post(f"/api/v1/alerts/{again['id']}/resolve", json={"note": "replaced seal"},
                    headers=operator.headers)  # fmt: skip
    assert r.status_code == 200 and r.json()["resolved_by"] == operator.email
    assert r.json()["resolve_note"] == "replaced seal"
    assert_problem(
        client.post(f"/api/v1/alerts/{again['id']}/resolve", headers=operator.headers), 409
    )
    with factory.db.transaction(write=False) as session:
        actions = set(
            session.scalars(select(AuditEntry.action).where(AuditEntry.object_type == "alert"))
        )
    assert actions == {"alert.acknowledge", "alert.resolve"}
    assert_problem(client.get("/api/v1/alerts/00000000-0000-0000-0000-000000000000",
                              headers=viewer.headers), 404)  # fmt: skip


def test_filters_pagination_and_stats(client: TestClient, factory: Factory) -> None:
    user = world(client, factory, ("P-1", "P-2", "P-3"))
    h = user.headers
    rule(client, h, name="hot", scope={"asset_type": "pump"}, conditions=HOT)
    rule(client, h, name="very hot", severity="critical", scope={"asset_type": "pump"},
         conditions=[{"sensor": "temperature", "op": ">", "threshold": 100}])  # fmt: skip
    send(client, h, "P-1", [(0, {"temperature": 110.0})])
    send(client, h, "P-2", [(86400, {"temperature": 90.0})])
    send(
        client,
        h,
        "P-3",
        [(2 * 86400, {"temperature": 85.0}), (2 * 86400 + 60, {"temperature": 10.0})],
    )
    everything = alerts(client, h)
    assert len(everything) == 4
    assert [a["triggered_at"] for a in everything] == sorted(
        (a["triggered_at"] for a in everything), reverse=True
    )
    assert {a["severity"] for a in alerts(client, h, severity="critical")} == {"critical"}
    assert len(alerts(client, h, status="resolved")) == 1
    p1 = alerts(client, h, asset_id=everything[-1]["asset_id"])
    assert {a["asset_id"] for a in p1} == {everything[-1]["asset_id"]} and len(p1) == 2
    window = alerts(client, h, start=at(3600), end=at(2 * 86400))
    assert [a["triggered_at"] for a in window] == [at(86400)]
    # Pages of one, in order, no repeats.
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/alerts", params=params, headers=h).json()
        seen += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [a["id"] for a in everything]
    assert_problem(client.get("/api/v1/alerts", params={"cursor": "zz"}, headers=h), 422)
    assert_problem(
        client.get("/api/v1/alerts", params={"start": at(10), "end": at(5)}, headers=h), 422
    )
    stats = client.get("/api/v1/alerts/stats", headers=h).json()
    assert stats["total"] == 4
    assert stats["by_severity"] == {"info": 0, "warning": 3, "critical": 1, "emergency": 0}
    assert stats["by_status"] == {"open": 3, "acknowledged": 0, "resolved": 1}
    assert [d["key"] for d in stats["by_day"]] == [
        (T0 + timedelta(days=d)).date().isoformat() for d in range(3)
    ]
    assert stats["by_asset"][0]["count"] == 2
    assert stats["mean_time_to_acknowledge_s"] is None
    open_one = alerts(client, h, status="open")[0]
    assert client.post(f"/api/v1/alerts/{open_one['id']}/acknowledge", headers=h).status_code == 200
    stats = client.get("/api/v1/alerts/stats", headers=h).json()
    assert stats["mean_time_to_acknowledge_s"] is not None
    assert stats["mean_time_to_acknowledge_s"] >= 0


def test_export_and_import_between_sites(client: TestClient, factory: Factory) -> None:
    site_a = world(client, factory)
    rule(client, site_a.headers, name="hot", scope={"asset_tag": "P-1"}, conditions=HOT,
         clear_hysteresis=2, **{"for": "5m"})  # fmt: skip
    rule(client, site_a.headers, name="any pump", scope={"asset_type": "pump"},
         conditions=[{"sensor": "temperature", "op": "<", "threshold": 0, "aggregate": "mean",
                      "window": "10m"}])  # fmt: skip
    exported = client.get("/api/v1/alert-rules/export", headers=site_a.headers)
    assert exported.status_code == 200
    rule_set = exported.json()
    assert rule_set["format"] == "foresight.alert-rules/v1"
    assert [r["name"] for r in rule_set["rules"]] == ["any pump", "hot"]
    assert rule_set["rules"][1]["scope"] == {"asset_tag": "P-1"}  # portable: no asset id
    as_yaml = client.get("/api/v1/alert-rules/export", params={"format": "yaml"},
                         headers=site_a.headers)  # fmt: skip
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(as_yaml.text) == rule_set

    site_b = world(client, factory)  # another tenant with assets of the same tags
    r = client.post("/api/v1/alert-rules/import", content=as_yaml.text,
                    headers={**site_b.headers, "Content-Type": "application/yaml"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json() == {"created": 2, "updated": 0, "unchanged": 0}
    again = client.post("/api/v1/alert-rules/import", json=rule_set, headers=site_b.headers)
    assert again.json() == {"created": 0, "updated": 0, "unchanged": 2}
    rule_set["rules"][1]["severity"] = "critical"
    changed = client.post("/api/v1/alert-rules/import", json=rule_set, headers=site_b.headers)
    assert changed.json() == {"created": 0, "updated": 1, "unchanged": 1}
    b_rules = client.get("/api/v1/alert-rules", headers=site_b.headers).json()["items"]
    hot = next(x for x in b_rules if x["name"] == "hot")
    assert (
        hot["severity"] == "critical" and hot["for"] == 300 and hot["scope"]["asset_tag"] == "P-1"
    )
    b_asset = client.get("/api/v1/assets", params={"q": "P-1"}, headers=site_b.headers).json()
    assert hot["scope"]["asset_id"] == b_asset["items"][0]["id"]
    # All or nothing: one bad rule refuses the whole set, naming it.
    bad = {"rules": [rule_set["rules"][0], {**rule_set["rules"][1], "name": "new",
                     "conditions": [{"sensor": "ghost", "op": ">", "threshold": 1}]}]}  # fmt: skip
    r = client.post("/api/v1/alert-rules/import", json=bad, headers=site_b.headers)
    body = assert_problem(r, 422)
    assert "Rule 1 ('new')" in body["detail"]
    assert body["errors"][0]["loc"] == ["body", "rules", 1, "conditions", 0, "sensor"]
    assert len(client.get("/api/v1/alert-rules", headers=site_b.headers).json()["items"]) == 2
    as_json = {**site_b.headers, "Content-Type": "application/json"}
    as_text = {**site_b.headers, "Content-Type": "text/plain"}
    url = "/api/v1/alert-rules/import"
    assert_problem(client.post(url, content="{not json", headers=as_json), 400)
    assert_problem(client.post(url, content="x", headers=as_text), 415)


def test_rules_and_alerts_are_tenant_isolated(client: TestClient, factory: Factory) -> None:
    a = world(client, factory)
    b = world(client, factory)
    r = rule(client, a.headers, name="hot", scope={"asset_tag": "P-1"}, conditions=HOT)
    send(client, a.headers, "P-1", [(0, {"temperature": 90.0})])
    [alert] = alerts(client, a.headers)
    for path in (f"/api/v1/alert-rules/{r['id']}", f"/api/v1/alerts/{alert['id']}"):
        assert_problem(client.get(path, headers=b.headers), 404)
    assert_problem(client.patch(f"/api/v1/alert-rules/{r['id']}", json={"enabled": False},
                                headers=b.headers), 404)  # fmt: skip
    assert_problem(client.delete(f"/api/v1/alert-rules/{r['id']}", headers=b.headers), 404)
    for action in ("acknowledge", "resolve"):
        assert_problem(
            client.post(f"/api/v1/alerts/{alert['id']}/{action}", headers=b.headers), 404
        )
    assert alerts(client, b.headers) == []
    assert client.get("/api/v1/alert-rules", headers=b.headers).json()["items"] == []
    assert client.get("/api/v1/alerts/stats", headers=b.headers).json()["total"] == 0
    assert client.get("/api/v1/alert-rules/export", headers=b.headers).json()["rules"] == []
    # B cannot scope a rule to A's asset by id.
    a_asset = client.get("/api/v1/assets", params={"q": "P-1"}, headers=a.headers).json()
    foreign = {"asset_id": a_asset["items"][0]["id"]}
    body = {"name": "x", "severity": "info", "conditions": HOT, "scope": foreign}
    r = client.post("/api/v1/alert-rules", json=body, headers=b.headers)
    assert_problem(r, 422, ["body", "scope", "asset_id"])
    # B's readings never fire A's rules (same tag, same sensor).
    send(client, b.headers, "P-1", [(0, {"temperature": 99.0})])
    assert alerts(client, b.headers) == [] and len(alerts(client, a.headers)) == 1
    assert client.get(f"/api/v1/alerts/{alert['id']}", headers=a.headers).json()["status"] == "open"
