"""Who may subscribe: access tokens only (query, header or subprotocol), tenant-scoped."""

from __future__ import annotations

import logging
import uuid

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from starlette.websockets import WebSocketDisconnect

from foresight.auth import security
from foresight.live import logs
from foresight.models import Role
from tests.assets.helpers import create_asset
from tests.factories import Factory
from tests.live.helpers import connect, hello, receive

POLICY = 1008


def refused(client: TestClient, path: str, **kw: object) -> WebSocketDisconnect:
    """Connect and expect an immediate close with 1008 (accepted first, so the reason shows)."""
    with (
        client.websocket_connect(f"/api/v1/ws/{path}", **kw) as ws,  # type: ignore[arg-type]
        pytest.raises(WebSocketDisconnect) as caught,
    ):
        receive(ws)
    assert caught.value.code == POLICY, (caught.value.code, caught.value.reason)
    return caught.value


def test_no_token_bad_token_and_refresh_token_are_refused(
    client: TestClient, factory: Factory
) -> None:
    user = factory.user(factory.tenant(), Role.viewer)
    assert "authentication required" in refused(client, "fleet").reason
    assert refused(client, "fleet?token=not-a-jwt").reason
    forged = security.create_token(
        factory.settings.model_copy(update={"secret_key": SecretStr("another-secret-" + "x" * 40)}),
        user_id=user.id, tenant_id=user.tenant_id, version=0, kind="access",
    )[0]  # fmt: skip
    assert refused(client, f"fleet?token={forged}").reason
    refresh = security.create_token(
        factory.settings, user_id=user.id, tenant_id=user.tenant_id, version=0, kind="refresh"
    )[0]
    assert refused(client, f"fleet?token={refresh}").reason
    # A bearer header with garbage is refused too.
    refused(client, "fleet", headers={"Authorization": "Bearer nope"})


def test_device_api_keys_are_refused(client: TestClient, factory: Factory) -> None:
    admin = factory.user(factory.tenant(), Role.admin)
    r = client.post("/api/v1/api-keys", json={"label": "plc"}, headers=admin.headers)
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    reason = refused(client, "fleet", headers={"X-API-Key": key}).reason
    assert "API key" in reason
    # Passed where a token goes, a key is not a valid token either.
    refused(client, f"fleet?token={key}")
    refused(client, "fleet", headers={"Authorization": f"Bearer {key}"})


def test_token_in_query_header_or_subprotocol(client: TestClient, factory: Factory) -> None:
    viewer = factory.user(factory.tenant(), Role.viewer)  # the least role: read is enough
    with connect(client, "fleet", viewer.token) as ws:
        message = hello(ws)
        assert message["scope"] == "fleet" and message["asset_id"] is None
    with client.websocket_connect("/api/v1/ws/fleet", headers=viewer.headers) as ws:
        hello(ws)
    with client.websocket_connect("/api/v1/ws/fleet", subprotocols=["bearer", viewer.token]) as ws:
        assert ws.accepted_subprotocol == "bearer"
        hello(ws)
        # The socket answers pings (keep-alive for proxies that close idle connections).
        ws.send_json({"type": "ping"})
        assert receive(ws)["type"] == "pong"


def test_asset_of_another_tenant_reads_like_a_missing_one(
    client: TestClient, factory: Factory
) -> None:
    a = factory.user(factory.tenant(), Role.analyst)
    b = factory.user(factory.tenant(), Role.analyst)
    asset_a = create_asset(client, a.headers, "PUMP-A")
    with connect(client, f"assets/{asset_a['id']}", a.token) as ws:
        message = hello(ws)
        assert message["scope"] == "asset" and message["asset_id"] == asset_a["id"]
    other = refused(client, f"assets/{asset_a['id']}?token={b.token}").reason
    missing_id = uuid.uuid4()
    missing = refused(client, f"assets/{missing_id}?token={b.token}").reason
    assert other == f"asset {asset_a['id']} not found"
    assert missing == f"asset {missing_id} not found"
    assert "not found" in refused(client, f"assets/not-a-uuid?token={b.token}").reason


def test_unknown_event_types_are_refused(client: TestClient, factory: Factory) -> None:
    viewer = factory.user(factory.tenant(), Role.viewer)
    reason = refused(client, f"fleet?token={viewer.token}&types=gossip").reason
    assert "unknown event types" in reason
    with connect(client, "fleet", viewer.token + "&types=alert,health") as ws:
        assert hello(ws)["types"] == ["alert", "health"]


def test_a_deactivated_user_is_disconnected_at_the_next_check(
    client: TestClient, factory: Factory
) -> None:
    tenant = factory.tenant()
    admin = factory.user(tenant, Role.admin)
    viewer = factory.user(tenant, Role.viewer)
    client.app.state.settings = client.app.state.settings.model_copy(  # type: ignore[attr-defined]
        update={"ws_auth_recheck_s": 0.2}
    )
    with connect(client, "fleet", viewer.token) as ws:
        hello(ws)
        r = client.patch(
            f"/api/v1/users/{viewer.id}", json={"is_active": False}, headers=admin.headers
        )
        assert r.status_code == 200, r.text
        with pytest.raises(WebSocketDisconnect) as caught:
            receive(ws)
        assert caught.value.code == POLICY and "reconnect" in caught.value.reason


def test_tokens_in_the_url_are_masked_in_the_server_log() -> None:
    logs.install()
    logs.install()  # idempotent
    logger = logging.getLogger("uvicorn.error")
    assert sum(isinstance(f, logs.RedactTokens) for f in logger.filters) == 1
    record = logger.makeRecord(
        "uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5000", "/api/v1/ws/fleet?types=alert&token=eyJ.secret.sig"), None,
    )  # fmt: skip
    for f in logger.filters:
        f.filter(record)
    line = record.getMessage()
    assert "secret" not in line and "token=***" in line and "types=alert" in line
