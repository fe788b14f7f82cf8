"""The RBAC matrix, checked for every route of the API and every kind of caller.

EXPECTED names, for each route, the permission it needs (None: public). Each route is called by
an anonymous client, a device API key and each role. A caller holding the permission must succeed
(2xx) on real objects of its own tenant; any other gets 401 (anonymous) or 403, and nothing is
written (the audit log does not grow). A route missing from EXPECTED fails the test, so new routes
must be classified here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from foresight.auth.rbac import Permission
from foresight.models import AuditEntry, ModelStatus, ModelVersion, Role
from tests.factories import PASSWORD, Factory, TestUser

P = Permission
EXPECTED: dict[tuple[str, str], Permission | None] = {
    ("POST", "/api/v1/auth/token"): None,
    ("POST", "/api/v1/auth/refresh"): None,
    ("GET", "/api/v1/auth/me"): P.read,
    ("GET", "/api/v1/users"): P.users_manage,
    ("POST", "/api/v1/users"): P.users_manage,
    ("GET", "/api/v1/users/{user_id}"): P.users_manage,
    ("PATCH", "/api/v1/users/{user_id}"): P.users_manage,
    ("DELETE", "/api/v1/users/{user_id}"): P.users_manage,
    ("GET", "/api/v1/api-keys"): P.apikeys_manage,
    ("POST", "/api/v1/api-keys"): P.apikeys_manage,
    ("DELETE", "/api/v1/api-keys/{key_id}"): P.apikeys_manage,
    ("GET", "/api/v1/tenant"): P.read,
    ("PATCH", "/api/v1/tenant"): P.settings_manage,
    ("GET", "/api/v1/assets"): P.read,
    ("POST", "/api/v1/assets"): P.assets_write,
    ("GET", "/api/v1/assets/{asset_id}"): P.read,
    ("PATCH", "/api/v1/assets/{asset_id}"): P.assets_write,
    ("DELETE", "/api/v1/assets/{asset_id}"): P.assets_write,
    ("GET", "/api/v1/assets/{asset_id}/children"): P.read,
    ("GET", "/api/v1/assets/{asset_id}/ancestors"): P.read,
    ("GET", "/api/v1/assets/{asset_id}/sensors"): P.read,
    ("POST", "/api/v1/assets/{asset_id}/sensors"): P.assets_write,
    ("GET", "/api/v1/assets/{asset_id}/sensors/{sensor_id}"): P.read,
    ("PATCH", "/api/v1/assets/{asset_id}/sensors/{sensor_id}"): P.assets_write,
    ("DELETE", "/api/v1/assets/{asset_id}/sensors/{sensor_id}"): P.assets_write,
    ("GET", "/api/v1/assets/{asset_id}/maintenance"): P.read,
    ("POST", "/api/v1/assets/{asset_id}/maintenance"): P.maintenance_write,
    ("GET", "/api/v1/maintenance"): P.read,
    ("GET", "/api/v1/maintenance/upcoming"): P.read,
    ("GET", "/api/v1/maintenance/{record_id}"): P.read,
    ("PATCH", "/api/v1/maintenance/{record_id}"): P.maintenance_write,
    ("DELETE", "/api/v1/maintenance/{record_id}"): P.maintenance_write,
    ("GET", "/api/v1/notification-channels"): P.settings_manage,
    ("POST", "/api/v1/notification-channels"): P.settings_manage,
    ("GET", "/api/v1/notification-channels/{channel_id}"): P.settings_manage,
    ("PATCH", "/api/v1/notification-channels/{channel_id}"): P.settings_manage,
    ("DELETE", "/api/v1/notification-channels/{channel_id}"): P.settings_manage,
    ("POST", "/api/v1/notification-channels/{channel_id}/test"): P.settings_manage,
    ("GET", "/api/v1/notification-channels/{channel_id}/deliveries"): P.settings_manage,
    ("POST", "/api/v1/readings"): P.ingest,
    ("GET", "/api/v1/assets/{asset_id}/readings"): P.read,
    ("GET", "/api/v1/assets/{asset_id}/readings/latest"): P.read,
    ("GET", "/api/v1/audit"): P.audit_read,
    ("GET", "/api/v1/audit/verify"): P.audit_read,
    ("GET", "/api/v1/alert-rules"): P.read,
    ("POST", "/api/v1/alert-rules"): P.rules_write,
    ("GET", "/api/v1/alert-rules/export"): P.read,
    ("POST", "/api/v1/alert-rules/import"): P.rules_write,
    ("GET", "/api/v1/alert-rules/{rule_id}"): P.read,
    ("PATCH", "/api/v1/alert-rules/{rule_id}"): P.rules_write,
    ("DELETE", "/api/v1/alert-rules/{rule_id}"): P.rules_write,
    ("GET", "/api/v1/alerts"): P.read,
    ("GET", "/api/v1/assets/{asset_id}/anomalies"): P.read,
    ("GET", "/api/v1/alerts/stats"): P.read,
    ("GET", "/api/v1/alerts/{alert_id}"): P.read,
    ("POST", "/api/v1/alerts/{alert_id}/acknowledge"): P.alerts_ack,
    ("POST", "/api/v1/alerts/{alert_id}/resolve"): P.alerts_ack,
    ("POST", "/api/v1/alerts/{alert_id}/feedback"): P.alerts_ack,
    ("POST", "/api/v1/predictions/{prediction_id}/feedback"): P.alerts_ack,
    ("GET", "/api/v1/feedback"): P.read,
    ("GET", "/api/v1/models"): P.read,
    ("POST", "/api/v1/models/train"): P.models_write,
    ("GET", "/api/v1/models/jobs/{job_id}"): P.read,
    ("POST", "/api/v1/models/{version_id}/promote"): P.models_write,
    ("POST", "/api/v1/models/rollback"): P.models_write,
    ("GET", "/api/v1/assets/{asset_id}/prediction"): P.read,
    ("GET", "/api/v1/assets/{asset_id}/predictions"): P.read,
    ("POST", "/api/v1/predictions"): P.read,
    ("POST", "/api/v1/predict"): P.read,
    ("POST", "/api/v1/predict/batch"): P.read,
    ("GET", "/api/v1/fleet/health"): P.read,
}
# Token refresh changes nothing stored; every other successful non-GET request is audited.
# Readings are data, not configuration: points are not audited (sensors they create are).
# Scoring stores a prediction, which is derived data (what the champion said, any viewer may ask
# for it); what decides predictions (train, promote, rollback) is audited.
NOT_AUDITED = {
    "/api/v1/auth/refresh",
    "/api/v1/readings",
    "/api/v1/predictions",
    "/api/v1/predict",
    "/api/v1/predict/batch",
}
OPS_ROUTES = {("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics")}
CALLERS = ["anonymous", "api_key", *[r.value for r in Role]]


@dataclass
class World:
    """One tenant with a user of every role, a device key and an admin to build objects."""

    client: TestClient
    users: dict[Role, TestUser]
    api_key: str
    db: Any = None

    @property
    def admin(self) -> dict[str, str]:
        return self.users[Role.admin].headers

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post(path, json=body, headers=self.admin)
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()
        return data

    def asset(self) -> str:
        tag = f"A-{uuid.uuid4().hex[:8]}"
        return str(self.post("/api/v1/assets", {"tag": tag, "name": tag})["id"])

    def asset_tag(self) -> str:
        tag = f"A-{uuid.uuid4().hex[:8]}"
        self.post("/api/v1/assets", {"tag": tag, "name": tag})
        return tag

    def sensor(self, asset_id: str) -> str:
        key = f"s_{uuid.uuid4().hex[:8]}"
        return str(self.post(f"/api/v1/assets/{asset_id}/sensors", {"key": key})["id"])

    def channel(self) -> str:
        # Nothing listens on port 9: a test message fails fast (and is still a 200).
        body = {
            "name": f"c-{uuid.uuid4().hex[:8]}",
            "kind": "webhook",
            "config": {"url": "http://127.0.0.1:9/hook"},
        }
        return str(self.post("/api/v1/notification-channels", body)["id"])

    def record(self, asset_id: str) -> str:
        body = {"kind": "inspection", "scheduled_for": "2030-01-01T00:00:00Z"}
        return str(self.post(f"/api/v1/assets/{asset_id}/maintenance", body)["id"])

    def user(self) -> str:
        body = {"email": f"x-{uuid.uuid4().hex[:8]}@example.com", "password": "long-password"}
        return str(self.post("/api/v1/users", body)["id"])

    def key(self) -> str:
        return str(self.post("/api/v1/api-keys", {"label": "k"})["id"])

    def watched_tag(self) -> str:
        """An asset with a temperature sensor (what a rule can watch)."""
        tag = self.asset_tag()
        asset = self.client.get("/api/v1/assets", params={"q": tag}, headers=self.admin)
        asset_id = asset.json()["items"][0]["id"]
        self.post(f"/api/v1/assets/{asset_id}/sensors", {"key": "temperature"})
        return tag

    def rule_body(self) -> dict[str, Any]:
        return {
            "name": f"r-{uuid.uuid4().hex[:8]}",
            "severity": "warning",
            "scope": {"asset_tag": self.watched_tag()},
            "conditions": [{"sensor": "temperature", "op": ">", "threshold": 80}],
        }

    def rule(self) -> str:
        return str(self.post("/api/v1/alert-rules", self.rule_body())["id"])

    def alert(self) -> str:
        """An open alert (as detection opens them)."""
        from foresight.detection import alerts
        from foresight.kit.time import utcnow
        from foresight.models import Severity

        tenant_id = self.users[Role.admin].tenant_id
        asset_id = uuid.UUID(self.asset())
        trigger = alerts.Trigger(
            tenant_id, asset_id, f"rule:{uuid.uuid4()}", Severity.warning, "t", "m", utcnow(), 1.0
        )
        with self.db.transaction() as session:
            alert, _ = alerts.fire(session, trigger)
            return str(alert.id)

    def prediction(self) -> str:
        """A stored prediction (as scoring stores them)."""
        from foresight.kit.time import utcnow
        from foresight.models import Prediction

        tenant_id = self.users[Role.admin].tenant_id
        with self.db.transaction() as session:
            row = Prediction(
                tenant_id=tenant_id, asset_id=uuid.UUID(self.asset()), computed_at=utcnow()
            )
            session.add(row)
            session.flush()
            return str(row.id)

    @property
    def tenant_id(self) -> uuid.UUID:
        return self.users[Role.admin].tenant_id

    def model_version(self) -> ModelVersion:
        """A registered challenger (its artifact is never loaded by promote or rollback)."""
        from foresight.prediction import registry

        with self.db.transaction() as session:
            version = ModelVersion(
                tenant_id=self.tenant_id,
                version=registry.next_number(session, self.tenant_id),
                status=ModelStatus.challenger,
                max_rul_days=180.0,
                artifact=b"not a model",
            )
            session.add(version)
            session.flush()
            return version

    def promoted_pair(self) -> None:
        """A champion that replaced an earlier one (what a rollback needs)."""
        from foresight.prediction import registry

        first, second = self.model_version(), self.model_version()
        with self.db.transaction() as session:
            for version in (first, second):
                row = session.get(ModelVersion, version.id)
                assert row is not None
                registry.promote(session, row, by="test")

    def no_champion(self) -> None:
        """Retire the stand-in models above, so scoring uses the rule-based fallback."""
        with self.db.transaction() as session:
            session.execute(
                update(ModelVersion)
                .where(ModelVersion.tenant_id == self.tenant_id)
                .values(status=ModelStatus.retired)
            )

    def training_job(self) -> str:
        from foresight.prediction import service

        with self.db.transaction() as session:
            job = service.create_job(session, self.tenant_id, requested_by="test", params={})
            return str(job.id)

    def idle_trainer(self) -> None:
        """One training request at a time per tenant: wait for the previous caller's."""
        assert self.client.app.state.training.wait_idle(600)  # type: ignore[attr-defined]

    def scorable(self) -> str:
        self.no_champion()
        return self.asset()


Request = tuple[str, dict[str, Any] | None]


def _requests(w: World) -> dict[tuple[str, str], Callable[[], Request]]:
    def with_asset(fmt: str, body: dict[str, Any] | None = None) -> Callable[[], Request]:
        return lambda: (fmt.format(a=w.asset()), body)

    def with_sensor(fmt: str, body: dict[str, Any] | None = None) -> Callable[[], Request]:
        def build() -> Request:
            asset = w.asset()
            return fmt.format(a=asset, s=w.sensor(asset)), body

        return build

    def with_record(fmt: str, body: dict[str, Any] | None = None) -> Callable[[], Request]:
        return lambda: (fmt.format(r=w.record(w.asset())), body)

    def train() -> Request:
        w.idle_trainer()
        return "/api/v1/models/train", {"max_rul_days": 90}

    def rollback() -> Request:
        w.promoted_pair()
        return "/api/v1/models/rollback", None

    def seed_predict() -> Request:
        w.no_champion()
        return "/api/v1/predict", {"equipment_id": w.asset_tag()}

    def seed_batch() -> Request:
        w.no_champion()
        return "/api/v1/predict/batch", {"equipment_ids": [w.asset_tag(), w.asset_tag()]}

    admin = w.users[Role.admin]
    return {
        ("POST", "/api/v1/auth/token"): lambda: (
            "/api/v1/auth/token",
            {"email": admin.email, "password": PASSWORD},
        ),
        ("POST", "/api/v1/auth/refresh"): lambda: (
            "/api/v1/auth/refresh",
            {"refresh_token": _refresh_token(w)},
        ),
        ("GET", "/api/v1/auth/me"): lambda: ("/api/v1/auth/me", None),
        ("GET", "/api/v1/users"): lambda: ("/api/v1/users", None),
        ("POST", "/api/v1/users"): lambda: (
            "/api/v1/users",
            {"email": f"n-{uuid.uuid4().hex[:8]}@example.com", "password": "long-password"},
        ),
        ("GET", "/api/v1/users/{user_id}"): lambda: (f"/api/v1/users/{w.user()}", None),
        ("PATCH", "/api/v1/users/{user_id}"): lambda: (
            f"/api/v1/users/{w.user()}",
            {"full_name": "Renamed"},
        ),
        ("DELETE", "/api/v1/users/{user_id}"): lambda: (f"/api/v1/users/{w.user()}", None),
        ("GET", "/api/v1/api-keys"): lambda: ("/api/v1/api-keys", None),
        ("POST", "/api/v1/api-keys"): lambda: ("/api/v1/api-keys", {"label": "new"}),
        ("DELETE", "/api/v1/api-keys/{key_id}"): lambda: (f"/api/v1/api-keys/{w.key()}", None),
        ("GET", "/api/v1/tenant"): lambda: ("/api/v1/tenant", None),
        ("PATCH", "/api/v1/tenant"): lambda: ("/api/v1/tenant", {"settings": {"units": "SI"}}),
        ("GET", "/api/v1/assets"): lambda: ("/api/v1/assets", None),
        ("POST", "/api/v1/assets"): lambda: (
            "/api/v1/assets",
            {"tag": f"N-{uuid.uuid4().hex[:8]}", "name": "New"},
        ),
        ("GET", "/api/v1/assets/{asset_id}"): with_asset("/api/v1/assets/{a}"),
        ("PATCH", "/api/v1/assets/{asset_id}"): with_asset("/api/v1/assets/{a}", {"name": "R"}),
        ("DELETE", "/api/v1/assets/{asset_id}"): with_asset("/api/v1/assets/{a}"),
        ("GET", "/api/v1/assets/{asset_id}/children"): with_asset("/api/v1/assets/{a}/children"),
        ("GET", "/api/v1/assets/{asset_id}/ancestors"): with_asset("/api/v1/assets/{a}/ancestors"),
        ("GET", "/api/v1/assets/{asset_id}/sensors"): with_asset("/api/v1/assets/{a}/sensors"),
        ("POST", "/api/v1/assets/{asset_id}/sensors"): with_asset(
            "/api/v1/assets/{a}/sensors", {"key": "temperature", "unit": "degC"}
        ),
        ("GET", "/api/v1/assets/{asset_id}/sensors/{sensor_id}"): with_sensor(
            "/api/v1/assets/{a}/sensors/{s}"
        ),
        ("PATCH", "/api/v1/assets/{asset_id}/sensors/{sensor_id}"): with_sensor(
            "/api/v1/assets/{a}/sensors/{s}", {"unit": "bar"}
        ),
        ("DELETE", "/api/v1/assets/{asset_id}/sensors/{sensor_id}"): with_sensor(
            "/api/v1/assets/{a}/sensors/{s}"
        ),
        ("GET", "/api/v1/assets/{asset_id}/maintenance"): with_asset(
            "/api/v1/assets/{a}/maintenance"
        ),
        ("POST", "/api/v1/assets/{asset_id}/maintenance"): with_asset(
            "/api/v1/assets/{a}/maintenance",
            {"kind": "failure", "started_at": "2026-01-01T00:00:00Z", "failure_mode": "seal"},
        ),
        ("GET", "/api/v1/maintenance"): lambda: ("/api/v1/maintenance", None),
        ("GET", "/api/v1/maintenance/upcoming"): lambda: ("/api/v1/maintenance/upcoming", None),
        ("GET", "/api/v1/maintenance/{record_id}"): with_record("/api/v1/maintenance/{r}"),
        ("PATCH", "/api/v1/maintenance/{record_id}"): with_record(
            "/api/v1/maintenance/{r}", {"notes": "checked"}
        ),
        ("DELETE", "/api/v1/maintenance/{record_id}"): with_record("/api/v1/maintenance/{r}"),
        ("GET", "/api/v1/notification-channels"): lambda: ("/api/v1/notification-channels", None),
        ("POST", "/api/v1/notification-channels"): lambda: (
            "/api/v1/notification-channels",
            {
                "name": f"n-{uuid.uuid4().hex[:8]}",
                "kind": "webhook",
                "config": {"url": "http://127.0.0.1:9/hook"},
            },
        ),
        ("GET", "/api/v1/notification-channels/{channel_id}"): lambda: (
            f"/api/v1/notification-channels/{w.channel()}",
            None,
        ),
        ("PATCH", "/api/v1/notification-channels/{channel_id}"): lambda: (
            f"/api/v1/notification-channels/{w.channel()}",
            {"min_severity": "critical"},
        ),
        ("DELETE", "/api/v1/notification-channels/{channel_id}"): lambda: (
            f"/api/v1/notification-channels/{w.channel()}",
            None,
        ),
        ("POST", "/api/v1/notification-channels/{channel_id}/test"): lambda: (
            f"/api/v1/notification-channels/{w.channel()}/test",
            None,
        ),
        ("GET", "/api/v1/notification-channels/{channel_id}/deliveries"): lambda: (
            f"/api/v1/notification-channels/{w.channel()}/deliveries",
            None,
        ),
        ("GET", "/api/v1/assets/{asset_id}/readings"): with_asset("/api/v1/assets/{a}/readings"),
        ("GET", "/api/v1/assets/{asset_id}/readings/latest"): with_asset(
            "/api/v1/assets/{a}/readings/latest"
        ),
        ("POST", "/api/v1/readings"): lambda: (
            "/api/v1/readings",
            {"equipment_id": w.asset_tag(), "temperature": 65.2, "vibration": 2.1},
        ),
        ("GET", "/api/v1/audit"): lambda: ("/api/v1/audit", None),
        ("GET", "/api/v1/audit/verify"): lambda: ("/api/v1/audit/verify", None),
        ("GET", "/api/v1/alert-rules"): lambda: ("/api/v1/alert-rules", None),
        ("POST", "/api/v1/alert-rules"): lambda: ("/api/v1/alert-rules", w.rule_body()),
        ("GET", "/api/v1/alert-rules/export"): lambda: ("/api/v1/alert-rules/export", None),
        ("POST", "/api/v1/alert-rules/import"): lambda: (
            "/api/v1/alert-rules/import",
            {"rules": [w.rule_body()]},
        ),
        ("GET", "/api/v1/alert-rules/{rule_id}"): lambda: (f"/api/v1/alert-rules/{w.rule()}", None),
        ("PATCH", "/api/v1/alert-rules/{rule_id}"): lambda: (
            f"/api/v1/alert-rules/{w.rule()}",
            {"severity": "critical"},
        ),
        ("DELETE", "/api/v1/alert-rules/{rule_id}"): lambda: (
            f"/api/v1/alert-rules/{w.rule()}",
            None,
        ),
        ("GET", "/api/v1/alerts"): lambda: ("/api/v1/alerts", None),
        ("GET", "/api/v1/assets/{asset_id}/anomalies"): with_asset("/api/v1/assets/{a}/anomalies"),
        ("GET", "/api/v1/alerts/stats"): lambda: ("/api/v1/alerts/stats", None),
        ("GET", "/api/v1/alerts/{alert_id}"): lambda: (f"/api/v1/alerts/{w.alert()}", None),
        ("POST", "/api/v1/alerts/{alert_id}/acknowledge"): lambda: (
            f"/api/v1/alerts/{w.alert()}/acknowledge",
            {"note": "on it"},
        ),
        ("POST", "/api/v1/alerts/{alert_id}/resolve"): lambda: (
            f"/api/v1/alerts/{w.alert()}/resolve",
            {"note": "fixed"},
        ),
        ("POST", "/api/v1/alerts/{alert_id}/feedback"): lambda: (
            f"/api/v1/alerts/{w.alert()}/feedback",
            {"verdict": "false_alarm", "note": "nothing wrong"},
        ),
        ("POST", "/api/v1/predictions/{prediction_id}/feedback"): lambda: (
            f"/api/v1/predictions/{w.prediction()}/feedback",
            {"verdict": "confirmed"},
        ),
        ("GET", "/api/v1/feedback"): lambda: ("/api/v1/feedback?verdict=confirmed", None),
        ("GET", "/api/v1/models"): lambda: ("/api/v1/models", None),
        ("POST", "/api/v1/models/train"): train,
        ("GET", "/api/v1/models/jobs/{job_id}"): lambda: (
            f"/api/v1/models/jobs/{w.training_job()}",
            None,
        ),
        ("POST", "/api/v1/models/{version_id}/promote"): lambda: (
            f"/api/v1/models/{w.model_version().id}/promote",
            None,
        ),
        ("POST", "/api/v1/models/rollback"): rollback,
        ("GET", "/api/v1/assets/{asset_id}/prediction"): lambda: (
            f"/api/v1/assets/{w.scorable()}/prediction",
            None,
        ),
        ("GET", "/api/v1/assets/{asset_id}/predictions"): with_asset(
            "/api/v1/assets/{a}/predictions"
        ),
        ("POST", "/api/v1/predictions"): lambda: (
            "/api/v1/predictions",
            {"asset_ids": [w.scorable()]},
        ),
        ("POST", "/api/v1/predict"): seed_predict,
        ("POST", "/api/v1/predict/batch"): seed_batch,
        ("GET", "/api/v1/fleet/health"): lambda: ("/api/v1/fleet/health", None),
    }


def _refresh_token(w: World) -> str:
    admin = w.users[Role.admin]
    response = w.client.post(
        "/api/v1/auth/token", json={"email": admin.email, "password": PASSWORD}
    )
    return str(response.json()["refresh_token"])


@pytest.fixture
def world(client: TestClient, factory: Factory) -> World:
    tenant, users = factory.tenant_with_users()
    w = World(client, users, "", factory.db)
    response = client.post("/api/v1/api-keys", json={"label": "device"}, headers=w.admin)
    w.api_key = response.json()["key"]
    return w


def _headers(w: World, caller: str) -> dict[str, str]:
    if caller == "anonymous":
        return {}
    if caller == "api_key":
        return {"X-API-Key": w.api_key}
    return w.users[Role(caller)].headers


def _audit_count(factory: Factory) -> int:
    with factory.db.transaction(write=False) as session:
        return int(session.scalar(select(func.count()).select_from(AuditEntry)) or 0)


def test_every_route_is_classified(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    routes = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert routes - OPS_ROUTES == set(EXPECTED), (
        f"unclassified: {sorted(routes - OPS_ROUTES - set(EXPECTED))}; "
        f"stale: {sorted(set(EXPECTED) - routes)}"
    )


def _allowed(caller: str, permission: Permission | None) -> bool:
    if permission is None:
        return True
    if caller == "anonymous":
        return False
    if caller == "api_key":
        return permission is Permission.ingest
    from foresight.auth.rbac import role_has

    return role_has(Role(caller), permission)


def test_rbac_matrix(world: World, factory: Factory) -> None:
    requests = _requests(world)
    assert set(requests) == set(EXPECTED)
    failures: list[str] = []
    for (method, template), permission in EXPECTED.items():
        for caller in CALLERS:
            path, body = requests[(method, template)]()
            before = _audit_count(factory)
            response = world.client.request(
                method, path, json=body, headers=_headers(world, caller)
            )
            allowed = _allowed(caller, permission)
            label = f"{caller:>9} {method:6} {template}"
            if allowed and not 200 <= response.status_code < 300:
                failures.append(
                    f"{label}: expected 2xx, got {response.status_code} {response.text}"
                )
            audited = method != "GET" and template not in NOT_AUDITED
            if allowed and audited and _audit_count(factory) <= before:
                failures.append(f"{label}: a successful mutation left no audit entry")
            if not allowed:
                expected = 401 if caller == "anonymous" else 403
                if response.status_code != expected:
                    failures.append(f"{label}: expected {expected}, got {response.status_code}")
                elif response.headers["content-type"] != "application/problem+json":
                    failures.append(f"{label}: error is not problem+json")
                if _audit_count(factory) != before:
                    failures.append(f"{label}: a refused request wrote to the audit log")
    assert not failures, "\n".join(failures)
