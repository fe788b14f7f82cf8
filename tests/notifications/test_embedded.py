"""The dispatcher the API process runs (FORESIGHT_NOTIFY_EMBEDDED): an alert hook called by
detection ends up at the receiver without anyone driving the dispatcher."""

from __future__ import annotations

from fastapi.testclient import TestClient

from foresight.config import Settings
from foresight.kit.db import Database
from foresight.models import Role
from foresight.web.app import create_app
from tests.factories import Factory
from tests.notifications.helpers import Env, fire
from tests.notifications.servers import Receiver


def test_the_app_delivers_the_outbox(
    settings: Settings, db: Database, factory: Factory, env: Env, receiver: Receiver
) -> None:
    embedded = settings.model_copy(update={"notify_embedded": True, "notify_poll_interval_s": 60})
    app = create_app(embedded, db)
    admin = factory.user(env.tenant_id, Role.admin)
    with TestClient(app) as client:
        # The hook detection calls is registered on the app.
        from foresight.notifications.outbox import enqueue

        assert enqueue in app.state.alert_hooks
        body = {"name": "hook", "kind": "webhook", "config": {"url": receiver.base_url + "/in"}}
        created = client.post("/api/v1/notification-channels", json=body, headers=admin.headers)
        assert created.status_code == 201, created.text
        fire(env, title="Seen by the embedded dispatcher")
        # The commit wakes the dispatcher (the poll interval alone would take a minute).
        [request] = receiver.wait_for(1)
        assert request.json()["alert"]["title"] == "Seen by the embedded dispatcher"
