from __future__ import annotations

import pytest

from tests.factories import Factory
from tests.maintenance.helpers import Env, make_asset


@pytest.fixture
def env(factory: Factory) -> Env:
    tenant, users = factory.tenant_with_users()
    return Env(tenant.id, users, make_asset(factory, tenant.id, "PUMP-001", "Pump 1"))
