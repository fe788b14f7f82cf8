from __future__ import annotations

from collections.abc import Iterator

import pytest

from foresight.config import Settings
from foresight.kit.db import Database
from tests.factories import Factory
from tests.notifications.helpers import Clock, Env, make_asset
from tests.notifications.servers import MailServer, Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


@pytest.fixture
def mail() -> Iterator[MailServer]:
    with MailServer() as server:
        yield server


@pytest.fixture
def settings(settings: Settings, receiver: Receiver) -> Settings:
    # Tests drive the dispatcher themselves (test_embedded starts the app's own one).
    return settings.model_copy(
        update={"notify_embedded": False, "slack_api_base_url": receiver.base_url + "/api/"}
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def env(db: Database, factory: Factory) -> Env:
    tenant = factory.tenant()
    return Env(
        db,
        tenant.id,
        make_asset(db, tenant.id, "PUMP-101", "pump"),
        make_asset(db, tenant.id, "MOTOR-101", "Motor"),
    )
