"""Rules and readings through the API, and waiting for detection to catch up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def send(
    client: TestClient,
    headers: dict[str, str],
    tag: str,
    points: list[tuple[float, dict[str, float]]],
) -> None:
    """Readings (seconds after T0, values) for one asset, then wait until detection saw them."""
    body = {"readings": [{"asset": tag, "ts": at(t), "values": v} for t, v in points]}
    r = client.post("/api/v1/readings", json=body, headers=headers)
    assert r.status_code == 200, r.text
    settle(client)


def settle(client: TestClient) -> None:
    detection = client.app.state.detection  # type: ignore[attr-defined]
    if not detection.drain(timeout=30):
        raise AssertionError("detection did not catch up within 30 s")


def rule(client: TestClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"name": "rule", "severity": "warning", **fields}
    r = client.post("/api/v1/alert-rules", json=body, headers=headers)
    assert r.status_code == 201, r.text
    # Engines reload within the reload interval; ask for it now so the test need not wait.
    client.app.state.detection.reload()  # type: ignore[attr-defined]
    return dict(r.json())


def alerts(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    r = client.get("/api/v1/alerts", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])
