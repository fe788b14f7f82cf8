"""The simulator's HTTP side: against the real app in-process (both backends), and retries."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from foresight.models import Role
from foresight.simulator import (
    ApiClient,
    ApiError,
    Plant,
    SimulationError,
    Simulator,
)
from tests.factories import PASSWORD, Factory

Answer = tuple[int, dict[str, str], bytes]


class AppTransport:
    """Send the simulator's requests to the app through a TestClient."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.calls: list[tuple[str, str]] = []

    def __call__(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float
    ) -> Answer:
        self.calls.append((method, url))
        r = self.client.request(method, url, content=body, headers=headers)
        return r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content


class ScriptedTransport:
    """Answers from a script: each entry is an answer, an exception to raise, or a callable."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.calls: list[tuple[str, str, Any]] = []

    def __call__(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float
    ) -> Answer:
        self.calls.append((method, url, json.loads(body) if body else None))
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            answer: Answer = step(body)
            return answer
        return step  # type: ignore[no-any-return]


def ok(doc: Any, status: int = 200) -> Answer:
    return status, {"content-type": "application/json"}, json.dumps(doc).encode()


ACCEPTED = ok({"accepted": 5, "rejected": 0, "errors": [], "errors_truncated": False})


@pytest.fixture
def admin(client: TestClient, factory: Factory) -> tuple[str, dict[str, str]]:
    """A tenant with a site and line LINE-1; its admin's e-mail and auth headers."""
    tenant = factory.tenant()
    user = factory.user(tenant, Role.admin)
    site = client.post(
        "/api/v1/assets", json={"tag": "SITE-A", "name": "Plant A"}, headers=user.headers
    ).json()
    r = client.post(
        "/api/v1/assets",
        json={"tag": "LINE-1", "name": "Line 1", "parent_id": site["id"]},
        headers=user.headers,
    )
    assert r.status_code == 201, r.text
    return user.email, user.headers


def test_backfill_registers_assets_streams_readings_and_records_failures(
    client: TestClient, admin: tuple[str, dict[str, str]]
) -> None:
    email, headers = admin
    lines: list[str] = []
    api = ApiClient(
        "http://testserver", email=email, password=PASSWORD, transport=AppTransport(client)
    )
    # wear=50 and a plant already worn: failures and restarts within the 12 h of history.
    plant = Plant(4, seed=5, wear=50.0, initial_wear=(0.3, 0.9))
    stats = Simulator(
        api,
        plant,
        backfill_hours=12,
        backfill_step_s=300,
        duration_s=0,
        batch=100,  # the test app refuses bodies over 64 KiB
        echo=lines.append,
    ).run()

    assets = {
        a["tag"]: a for a in client.get("/api/v1/assets?limit=100", headers=headers).json()["items"]
    }
    line_id = assets["LINE-1"]["id"]
    for tag, kind in (("PUMP-101", "pump"), ("MOTOR-101", "motor"), ("CONV-101", "conveyor")):
        assert assets[tag]["type"] == kind and assets[tag]["parent_id"] == line_id
    sensors = client.get(f"/api/v1/assets/{assets['PUMP-101']['id']}/sensors", headers=headers)
    by_key = {s["key"]: s for s in sensors.json()["items"]}
    assert set(by_key) == {
        "temperature", "vibration", "pressure", "power_consumption", "operating_hours",
    }  # fmt: skip
    assert by_key["vibration"]["unit"] == "mm/s" and by_key["vibration"]["expected_max"] == 7.1
    assert by_key["operating_hours"]["kind"] == "counter"

    assert stats.readings == 4 * (12 * 12 + 1)  # every 5 minutes, both ends included
    assert stats.points == 5 * stats.readings and stats.rejected == 0
    latest = client.get(
        f"/api/v1/assets/{assets['MOTOR-101']['id']}/readings/latest", headers=headers
    ).json()
    assert {s["sensor"] for s in latest["sensors"] if s["value"] is not None} >= {
        "temperature", "vibration", "current", "power_consumption", "operating_hours",
    }  # fmt: skip

    failures = client.get("/api/v1/maintenance?kind=failure&limit=500", headers=headers).json()
    correctives = client.get(
        "/api/v1/maintenance?kind=corrective&limit=500", headers=headers
    ).json()
    assert stats.failures >= 1 and stats.restarts >= 1
    assert len(failures["items"]) == stats.failures
    assert len(correctives["items"]) == stats.restarts
    completed = {
        (f["asset_id"], f["started_at"], f["ended_at"]): f
        for f in failures["items"]
        if f["status"] == "completed"
    }
    assert len(completed) == stats.restarts
    for fix in correctives["items"]:
        failure = completed[(fix["asset_id"], fix["started_at"], fix["ended_at"])]
        assert fix["status"] == "completed" and fix["failure_mode"] == failure["failure_mode"]
        assert fix["cost"] > 0 and failure["cost"] > 0 and failure["downtime_hours"] > 0
    for failure in failures["items"]:
        assert failure["failure_mode"] and failure["status"] in {"completed", "in_progress"}
    assert sum(f["status"] == "in_progress" for f in failures["items"]) == plant.down
    assert any("FAILED" in line for line in lines) and "backfill done" in lines[-2]
    assert lines[-1].startswith("simulate: stopped:")


def test_a_second_run_reuses_the_assets_and_backfills_only_the_gap(
    client: TestClient, admin: tuple[str, dict[str, str]]
) -> None:
    email, headers = admin

    def run(hours: float) -> Any:
        api = ApiClient(
            "http://testserver", email=email, password=PASSWORD, transport=AppTransport(client)
        )
        return Simulator(
            api, Plant(2, seed=1), backfill_hours=hours, duration_s=0, batch=100, echo=print
        ).run()

    first = run(2)
    second = run(2)
    assert first.readings >= 2 * 120
    assert second.readings <= 2 * 2  # at most the minute that began since
    tags = [a["tag"] for a in client.get("/api/v1/assets", headers=headers).json()["items"]]
    assert tags.count("PUMP-101") == 1


def test_live_streaming_until_the_duration_elapses(
    client: TestClient, admin: tuple[str, dict[str, str]]
) -> None:
    email, _ = admin
    api = ApiClient(
        "http://testserver", email=email, password=PASSWORD, transport=AppTransport(client)
    )
    elapsed = [0.0]  # a fake clock: sleeping advances it at once
    t0 = time.time() - 3600  # streamed timestamps an hour ago: never in the future
    plant = Plant(3, seed=2)
    stats = Simulator(
        api,
        plant,
        interval_s=1.0,
        speed=60.0,
        duration_s=4.5,
        echo=lambda _: None,
        clock=lambda: t0 + elapsed[0],
        monotonic=lambda: elapsed[0],
        sleep=lambda s: elapsed.__setitem__(0, elapsed[0] + s),
    ).run()
    assert stats.readings == 3 * 5  # ticks at 0, 1, 2, 3 and 4 s
    assert stats.points == 5 * stats.readings
    assert plant.last_ts == pytest.approx(t0 + 4, abs=0.01)
    # The first tick starts the simulated clock, the next four run at 60x.
    assert plant.sim_s == pytest.approx(t0 + 4 * 60, abs=0.01)


def test_503_is_retried_after_retry_after_and_401_signs_in_again() -> None:
    slept: list[float] = []
    transport = ScriptedTransport(
        [
            ok({"access_token": "t1", "refresh_token": "r", "expires_in": 1800}),
            (503, {"retry-after": "3"}, b'{"status": 503}'),
            (401, {}, b'{"status": 401, "detail": "expired"}'),
            ok({"access_token": "t2", "refresh_token": "r", "expires_in": 1800}),
            ACCEPTED,
        ]
    )
    api = ApiClient(
        "http://x", email="a@example.com", password="pw", transport=transport, sleep=slept.append
    )
    api.sign_in()
    assert api.request("POST", "/api/v1/readings", {"readings": []})["accepted"] == 5
    assert slept == [3.0]
    assert [c[1] for c in transport.calls] == [
        "http://x/api/v1/auth/token",
        "http://x/api/v1/readings",
        "http://x/api/v1/readings",
        "http://x/api/v1/auth/token",
        "http://x/api/v1/readings",
    ]
    assert api.token == "t2" and api.retries == 1


def test_an_unreachable_server_is_retried_then_given_up() -> None:
    slept: list[float] = []
    transport = ScriptedTransport([ConnectionRefusedError("refused")] * 2 + [ACCEPTED])
    api = ApiClient("http://x", api_key="fsk_x", transport=transport, sleep=slept.append)
    assert api.request("POST", "/api/v1/readings", {"readings": []})["accepted"] == 5
    assert slept == [0.5, 1.0]
    assert all(c[1] == "http://x/api/v1/readings" for c in transport.calls)

    gone = ApiClient(
        "http://x",
        api_key="fsk_x",
        transport=ScriptedTransport([ConnectionRefusedError("refused")] * 2),
        sleep=lambda _: None,
        give_up_after_s=0,
    )
    with pytest.raises(SimulationError, match="unreachable"):
        gone.request("GET", "/health")


def test_a_refused_request_raises_with_the_problem_detail() -> None:
    problem = {"status": 403, "detail": "Missing permission", "errors": [{"msg": "no"}]}
    api = ApiClient("http://x", api_key="k", transport=ScriptedTransport([ok(problem, 403)]))
    with pytest.raises(ApiError) as info:
        api.request("GET", "/api/v1/assets")
    assert info.value.status == 403 and "Missing permission" in str(info.value)


def test_too_large_bodies_are_split() -> None:
    def answer(limit: int) -> Callable[[bytes], Answer]:
        def respond(body: bytes) -> Answer:
            n = len(json.loads(body)["readings"])
            if n > limit:
                return 413, {}, b'{"status": 413, "detail": "too large"}'
            return ok({"accepted": 5 * n, "rejected": 0, "errors": []})

        return respond

    transport = ScriptedTransport([answer(3)] * 20)
    runner = Simulator(ApiClient("http://x", api_key="k", transport=transport), Plant(1), batch=10)
    runner.send({"readings": [{"asset": "A", "ts": 0, "values": {"v": 1}}] * 10})
    sizes = [len(c[2]["readings"]) for c in transport.calls]
    assert sizes == [10, 5, 3, 2, 3, 2]  # 10 → 5 (too large) → 3 + 2, then batches of 3
    assert runner.stats.readings == 10 and runner.batch == 3
    assert runner.stats.points == 50


def test_device_key_mode_sends_readings_but_records_no_maintenance() -> None:
    transport = ScriptedTransport([ACCEPTED] * 200)
    lines: list[str] = []
    plant = Plant(1, seed=4, wear=500.0, initial_wear=(0.9, 0.95))
    stats = Simulator(
        ApiClient("http://x", api_key="fsk_k", transport=transport),
        plant,
        backfill_hours=3,
        duration_s=0,
        batch=10,
        echo=lines.append,
    ).run()
    assert stats.failures >= 1
    assert {c[1] for c in transport.calls} == {"http://x/api/v1/readings"}
    assert "device key" in lines[0]
