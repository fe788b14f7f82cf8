"""/api/v1/notification-channels: CRUD, write-only secrets, validation naming the field, the
test message and the delivery log."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from foresight.models import ChannelKind, Role
from tests.factories import Factory, TestUser
from tests.notifications.helpers import Clock, Env, channel_config, dispatcher, fire
from tests.notifications.servers import (
    SLACK_TOKEN,
    SLACK_WEBHOOK_PATH,
    SMTP_PASSWORD,
    WEBHOOK_SECRET,
    MailServer,
    Receiver,
    free_port,
)

URL = "/api/v1/notification-channels"
SECRETS = {
    ChannelKind.slack_webhook: SLACK_WEBHOOK_PATH,
    ChannelKind.slack_api: SLACK_TOKEN,
    ChannelKind.webhook: WEBHOOK_SECRET,
    ChannelKind.email: SMTP_PASSWORD,
}


@pytest.fixture
def admin(env: Env, factory: Factory) -> TestUser:
    return factory.user(env.tenant_id, Role.admin)


def _create(client: TestClient, admin: TestUser, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(URL, json=body, headers=admin.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def _errors(response: Any) -> list[tuple[Any, ...]]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return [tuple(e["loc"]) for e in response.json()["errors"]]


@pytest.mark.parametrize("kind", list(ChannelKind), ids=[k.value for k in ChannelKind])
def test_secrets_are_write_only(
    client: TestClient,
    admin: TestUser,
    receiver: Receiver,
    mail: MailServer,
    kind: ChannelKind,
) -> None:
    body = {"name": f"{kind}-channel", "kind": kind, "config": channel_config(kind, receiver, mail)}
    created = _create(client, admin, body)
    secret = SECRETS[kind]
    shown = [
        client.post(URL, json=body | {"name": "again"}, headers=admin.headers).text,
        str(created),
        client.get(f"{URL}/{created['id']}", headers=admin.headers).text,
        client.get(URL, headers=admin.headers).text,
        client.patch(f"{URL}/{created['id']}", json={"enabled": False}, headers=admin.headers).text,
        client.get("/api/v1/audit?limit=500", headers=admin.headers).text,
    ]
    for text in shown:
        assert secret not in text
    flag = {"slack_webhook": "url_set", "slack_api": "token_set"}.get(kind, "")
    flag = flag or {"webhook": "secret_set", "email": "password_set"}[kind]
    assert created["config"][flag] is True


def test_create_read_update_delete(
    client: TestClient, admin: TestUser, env: Env, receiver: Receiver
) -> None:
    body = {
        "name": "Plant A on-call",
        "kind": "webhook",
        "config": {"url": receiver.base_url + "/in", "secret": WEBHOOK_SECRET},
        "min_severity": "critical",
        "asset_ids": [str(env.pump.id)],
        "asset_types": ["Motor", "pump"],
        "quiet_hours": {"start": "22:00", "end": "06:00", "timezone": "Europe/Berlin"},
        "rate_limit_per_minute": 10,
    }
    created = _create(client, admin, body)
    assert created["config"] == {"url": receiver.base_url + "/in", "secret_set": True}
    assert created["asset_types"] == ["motor", "pump"]  # matched case-insensitively
    assert created["events"] == ["alert.acknowledged", "alert.opened", "alert.resolved"]
    assert created["quiet_hours"]["timezone"] == "Europe/Berlin"
    path = f"{URL}/{created['id']}"
    assert client.get(path, headers=admin.headers).json() == created
    # PATCH: config merges (the secret not sent is kept); null clears quiet hours.
    patched = client.patch(
        path,
        json={"config": {"url": receiver.base_url + "/new"}, "quiet_hours": None},
        headers=admin.headers,
    )
    assert patched.status_code == 200, patched.text
    data = patched.json()
    assert data["config"] == {"url": receiver.base_url + "/new", "secret_set": True}
    assert data["quiet_hours"] is None and data["rate_limit_per_minute"] == 10
    # A config read back (with secret_set) can be sent again as it is.
    again = client.patch(path, json={"config": data["config"]}, headers=admin.headers)
    assert again.status_code == 200 and again.json()["config"]["secret_set"] is True
    cleared = client.patch(path, json={"config": {"secret": None}}, headers=admin.headers)
    assert cleared.json()["config"]["secret_set"] is False
    listed = client.get(URL, headers=admin.headers).json()["items"]
    assert [c["id"] for c in listed] == [created["id"]]
    assert client.delete(path, headers=admin.headers).status_code == 204
    assert client.get(path, headers=admin.headers).status_code == 404
    actions = [
        e["action"]
        for e in client.get(
            "/api/v1/audit?object_type=notification_channel", headers=admin.headers
        ).json()["items"]
    ]
    # The PATCH that changed nothing left no entry; the one that cleared the secret did.
    assert actions.count("notification_channel.update") == 2
    assert {"notification_channel.create", "notification_channel.delete"} <= set(actions)


def test_list_is_paginated_by_name(client: TestClient, admin: TestUser, receiver: Receiver) -> None:
    for name in ("c", "a", "b"):
        _create(
            client, admin, {"name": name, "kind": "webhook", "config": {"url": receiver.base_url}}
        )
    first = client.get(URL, params={"limit": 2}, headers=admin.headers).json()
    assert [c["name"] for c in first["items"]] == ["a", "b"]
    rest = client.get(
        URL, params={"limit": 2, "cursor": first["next_cursor"]}, headers=admin.headers
    ).json()
    assert [c["name"] for c in rest["items"]] == ["c"] and rest["next_cursor"] is None
    bad = client.get(URL, params={"cursor": "nonsense"}, headers=admin.headers)
    assert bad.status_code == 422


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"kind": "pager"}, ("body", "kind")),
        ({"config": {}}, ("body", "config", "url")),
        ({"config": {"url": "ftp://x"}}, ("body", "config", "url")),
        ({"config": {"url": "http://x", "secret": "short"}}, ("body", "config", "secret")),
        ({"config": {"url": "http://x", "colour": "red"}}, ("body", "config", "colour")),
        ({"name": ""}, ("body", "name")),
        ({"min_severity": "catastrophic"}, ("body", "min_severity")),
        ({"asset_ids": ["not-a-uuid"]}, ("body", "asset_ids", 0)),
        ({"events": []}, ("body", "events")),
        ({"events": ["alert.exploded"]}, ("body", "events", 0)),
        ({"rate_limit_per_minute": 0}, ("body", "rate_limit_per_minute")),
        (
            {"quiet_hours": {"start": "22:00", "end": "06:00", "timezone": "Mars/Olympus"}},
            ("body", "quiet_hours", "timezone"),
        ),
        (
            {"quiet_hours": {"start": "25:00", "end": "06:00", "timezone": "UTC"}},
            ("body", "quiet_hours", "start"),
        ),
        (
            {"quiet_hours": {"start": "06:00", "end": "06:00", "timezone": "UTC"}},
            ("body", "quiet_hours"),
        ),
    ],
)
def test_invalid_input_names_the_field(
    client: TestClient, admin: TestUser, body: dict[str, Any], loc: tuple[Any, ...]
) -> None:
    base = {"name": "x", "kind": "webhook", "config": {"url": "https://example.com/hook"}}
    response = client.post(URL, json=base | body, headers=admin.headers)
    assert loc in _errors(response)


@pytest.mark.parametrize(
    ("kind", "config", "loc"),
    [
        ("slack_api", {"channel": "#ops"}, ("body", "config", "token")),
        ("slack_api", {"token": "xoxb-1"}, ("body", "config", "channel")),
        ("slack_webhook", {"url": "not a url"}, ("body", "config", "url")),
        (
            "email",
            {"host": "smtp", "from_address": "a@example.com", "to": ["not-an-address"]},
            ("body", "config", "to", 0),
        ),
        (
            "email",
            {"host": "smtp", "from_address": "a@example.com", "to": []},
            ("body", "config", "to"),
        ),
        (
            "email",
            {"host": "smtp", "port": 0, "from_address": "a@example.com", "to": ["b@example.com"]},
            ("body", "config", "port"),
        ),
    ],
)
def test_invalid_config_per_kind(
    client: TestClient, admin: TestUser, kind: str, config: dict[str, Any], loc: tuple[Any, ...]
) -> None:
    response = client.post(
        URL, json={"name": "x", "kind": kind, "config": config}, headers=admin.headers
    )
    assert loc in _errors(response)


def test_unknown_asset_duplicate_name_and_immutable_kind(
    client: TestClient, admin: TestUser, factory: Factory, receiver: Receiver
) -> None:
    body = {"name": "dup", "kind": "webhook", "config": {"url": receiver.base_url}}
    created = _create(client, admin, body)
    conflict = client.post(URL, json=body, headers=admin.headers)
    assert conflict.status_code == 409 and conflict.json()["errors"][0]["loc"] == ["body", "name"]
    other_tenant_asset = factory.tenant()  # an id that is not an asset of this tenant
    unknown = client.post(
        URL,
        json=body | {"name": "u", "asset_ids": [str(other_tenant_asset.id)]},
        headers=admin.headers,
    )
    assert ("body", "asset_ids", 0) in _errors(unknown)
    path = f"{URL}/{created['id']}"
    assert ("body", "kind") in _errors(
        client.patch(path, json={"kind": "email"}, headers=admin.headers)
    )
    assert ("body", "name") in _errors(
        client.patch(path, json={"name": None}, headers=admin.headers)
    )
    bad_config = client.patch(path, json={"config": {"url": "nope"}}, headers=admin.headers)
    assert ("body", "config", "url") in _errors(bad_config)


def test_test_message_and_delivery_log(
    client: TestClient, admin: TestUser, env: Env, receiver: Receiver, clock: Clock
) -> None:
    channel = _create(
        client,
        admin,
        {"name": "hook", "kind": "webhook", "config": {"url": receiver.base_url + "/in"}},
    )
    path = f"{URL}/{channel['id']}"
    result = client.post(f"{path}/test", headers=admin.headers)
    assert result.status_code == 200, result.text
    data = result.json()
    assert data["ok"] is True and data["status_code"] == 200
    [request] = receiver.requests
    assert request.headers["x-foresight-event"] == "test"
    assert request.headers["idempotency-key"] == data["delivery_id"]
    # An alert delivery that fails once, then succeeds.
    fire(env)
    receiver.fail_next(1, 502, "bad gateway")
    d = dispatcher(env.db, clock)
    d.run_once()
    log = client.get(f"{path}/deliveries", headers=admin.headers).json()["items"]
    assert [item["event"] for item in log] == ["alert.opened", "test"]
    pending = log[0]
    assert pending["status"] == "pending" and pending["attempts"] == 1
    assert pending["next_attempt_at"] is not None and pending["dead_lettered"] is False
    assert pending["attempt_log"][0]["status_code"] == 502
    assert pending["attempt_log"][0]["error"] == "HTTP 502: bad gateway"
    clock.advance(11)
    d.run_once()
    delivered = client.get(
        f"{path}/deliveries", params={"status": "delivered", "limit": 1}, headers=admin.headers
    ).json()
    item = delivered["items"][0]
    assert item["event"] == "alert.opened" and item["delivered_at"] is not None
    assert [a["ok"] for a in item["attempt_log"]] == [False, True]
    older = client.get(
        f"{path}/deliveries",
        params={"status": "delivered", "cursor": delivered["next_cursor"]},
        headers=admin.headers,
    ).json()
    assert [i["event"] for i in older["items"]] == ["test"]


def test_failed_test_message_is_reported_not_retried(
    client: TestClient, admin: TestUser, receiver: Receiver
) -> None:
    channel = _create(
        client,
        admin,
        {"name": "dead", "kind": "webhook", "config": {"url": f"http://127.0.0.1:{free_port()}/"}},
    )
    data = client.post(f"{URL}/{channel['id']}/test", headers=admin.headers).json()
    assert data["ok"] is False and "Connection refused" in data["error"]
    [item] = client.get(f"{URL}/{channel['id']}/deliveries", headers=admin.headers).json()["items"]
    assert item["status"] == "dead" and item["dead_lettered"] is True


def test_test_message_to_slack_api_uses_the_configured_base_url(
    client: TestClient, admin: TestUser, receiver: Receiver, mail: MailServer
) -> None:
    # settings.slack_api_base_url points at the local server (tests/notifications/conftest.py).
    config = channel_config(ChannelKind.slack_api, receiver, mail)
    channel = _create(client, admin, {"name": "slack", "kind": "slack_api", "config": config})
    data = client.post(f"{URL}/{channel['id']}/test", headers=admin.headers).json()
    assert data["ok"] is True, data
    assert receiver.requests[0].path == "/api/chat.postMessage"


def test_routes_need_an_admin(client: TestClient, env: Env, factory: Factory) -> None:
    analyst = factory.user(env.tenant_id, Role.analyst)
    assert client.get(URL, headers=analyst.headers).status_code == 403
    body = {"name": "x", "kind": "webhook", "config": {"url": "https://example.com"}}
    assert client.post(URL, json=body, headers=analyst.headers).status_code == 403
