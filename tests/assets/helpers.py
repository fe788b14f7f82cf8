"""Shared helpers for the asset tests."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

ASSETS = "/api/v1/assets"
PROBLEM_JSON = "application/problem+json"


def create_asset(
    client: TestClient, headers: dict[str, str], tag: str, **fields: Any
) -> dict[str, Any]:
    body = {"tag": tag, "name": f"Asset {tag}", **fields}
    r = client.post(ASSETS, json=body, headers=headers)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


def assert_problem(response: Any, status: int, loc: list[str] | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    if loc is not None:
        assert loc in [e["loc"] for e in body["errors"]], body
    return body
