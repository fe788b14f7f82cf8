from __future__ import annotations

from typing import Any, cast

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from foresight.web.deps import Ingestor
from tests.auth.helpers import use_fast_password_hashing


@pytest.fixture(autouse=True)
def _fast_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_password_hashing(monkeypatch)


@pytest.fixture
def ingest_client(client: TestClient) -> TestClient:
    """The app plus a probe route guarded like the ingest endpoints (ingest permission).

    No real ingest endpoint exists yet; the probe shows whom a credential authenticates as.
    """
    router = APIRouter()

    @router.post("/api/v1/_probe/ingest")
    def probe(principal: Ingestor) -> dict[str, Any]:
        return {
            "tenant_id": str(principal.tenant_id),
            "kind": str(principal.kind),
            "id": str(principal.id),
            "label": principal.label,
        }

    cast(FastAPI, client.app).include_router(router)
    return client
