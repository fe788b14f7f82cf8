from __future__ import annotations

import json
import logging
import re

import pytest
from fastapi.testclient import TestClient

from foresight.kit.logging import configure_logging
from tests.factories import Factory


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["database"] == "ok"


def test_ready_reports_unreachable_database(client: TestClient) -> None:
    from foresight.kit.db import Database

    app = client.app
    original = app.state.db  # type: ignore[attr-defined]
    app.state.db = Database.from_url(  # type: ignore[attr-defined]
        "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1"
    )
    try:
        response = client.get("/ready")
    finally:
        app.state.db.dispose()  # type: ignore[attr-defined]
        app.state.db = original  # type: ignore[attr-defined]
    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"


def test_metrics_count_requests_by_route_template_and_status(
    client: TestClient, factory: Factory
) -> None:
    tenant = factory.tenant()
    admin = factory.user(tenant)
    client.get("/api/v1/auth/me", headers=admin.headers)
    client.get("/api/v1/auth/me")  # 401
    client.get(f"/api/v1/users/{admin.id}", headers=admin.headers)
    body = client.get("/metrics").text
    assert re.search(
        r'foresight_http_requests_total\{method="GET",route="/api/v1/auth/me",status="200"\} 1\.0',
        body,
    )
    assert 'route="/api/v1/auth/me",status="401"' in body
    # Ids never become label values: the template is used.
    assert 'route="/api/v1/users/{user_id}"' in body
    assert str(admin.id) not in body
    assert "foresight_http_request_duration_seconds_bucket" in body


def test_unknown_route_is_problem_json(client: TestClient) -> None:
    response = client.get("/api/v1/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert 'route="unmatched"' in client.get("/metrics").text


def test_request_id_is_echoed_and_generated(client: TestClient) -> None:
    response = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = client.get("/health").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    # A hostile value is replaced, not reflected.
    hostile = client.get("/health", headers={"X-Request-ID": "x" * 500})
    assert hostile.headers["x-request-id"] != "x" * 500


def test_json_logs_carry_the_request_id(
    client: TestClient, factory: Factory, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", json=True)
    try:
        tenant = factory.tenant()
        admin = factory.user(tenant)
        client.post(
            "/api/v1/auth/token",
            json={"email": admin.email, "password": "wrong-password"},
            headers={"X-Request-ID": "req-log-1"},
        )
        lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    finally:
        logging.getLogger().handlers = []
    records = [json.loads(line) for line in lines]
    access = [
        r for r in records if r.get("event") == "request" and r.get("request_id") == "req-log-1"
    ]
    assert access, records
    assert access[0]["status"] == 401
    assert access[0]["route"] == "/api/v1/auth/token"
    assert "timestamp" in access[0] and access[0]["level"] == "info"


def test_openapi_documents_problem_responses(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/api/v1/auth/token" in spec["paths"]
    responses = spec["paths"]["/api/v1/users"]["post"]["responses"]
    assert "application/problem+json" in responses["422"]["content"]
    assert client.get("/docs").status_code == 200


def test_unexpected_errors_are_500_problems_with_the_request_id(client: TestClient) -> None:
    def explode() -> None:
        raise RuntimeError("boom")

    client.app.add_api_route("/explode", explode)  # type: ignore[attr-defined]
    response = client.get("/explode", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "req-500"
    body = response.json()
    assert body["request_id"] == "req-500" and body["instance"] == "/explode"
    assert "boom" not in response.text  # internals are logged, not returned
    assert 'route="/explode",status="500"' in client.get("/metrics").text
