"""`foresight simulate` as a process against a running `foresight serve` (make run's path)."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

BIN = Path(sys.executable).parent / "foresight"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    """A migrated, demo-seeded server; its URL, the environment and the database file."""
    env = {
        **os.environ,
        "FORESIGHT_DATA_DIR": str(tmp_path / "var"),
        "FORESIGHT_DATABASE_URL": "",
        "FORESIGHT_ENV": "development",
    }
    for args in (["db", "upgrade"], ["demo", "seed"]):
        subprocess.run([str(BIN), *args], env=env, check=True, capture_output=True, timeout=120)
    port = _free_port()
    log = tmp_path / "serve.log"  # a file, not a pipe: every request logs a line
    with log.open("wb") as log_file:  # the server keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [str(BIN), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        proc.kill()
        proc.wait(timeout=30)
        pytest.fail(f"server did not start: {log.read_text()[-2000:]}")
    try:
        yield base, env, tmp_path / "var" / "foresight.db"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_simulate_streams_into_a_running_server(
    server: tuple[str, dict[str, str], Path],
) -> None:
    base, env, db_file = server
    # --wear 1000: every asset wears out within the hour of history (see test_model).
    done = subprocess.run(
        [
            str(BIN), "simulate", "--url", base, "--duration", "3", "--backfill-hours", "1",
            "--interval", "0.5", "--seed", "1", "--wear", "1000", "--speed", "3600",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any("8 simulated assets under LINE-1 (8 registered now)" in line for line in lines)
    assert any("backfill done" in line for line in lines)
    assert lines[-1].startswith("simulate: stopped:"), lines[-5:]

    token = httpx.post(
        f"{base}/api/v1/auth/token",
        json={"email": "admin@example.com", "password": "foresight-demo"},
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assets = {
        a["tag"]: a
        for a in httpx.get(f"{base}/api/v1/assets?limit=100", headers=headers).json()["items"]
    }
    simulated = {tag for tag in assets if tag.endswith(("-101", "-102", "-103", "-104"))}
    assert simulated == {
        "PUMP-101", "PUMP-102", "PUMP-103", "PUMP-104",
        "MOTOR-101", "MOTOR-102", "CONV-101", "CONV-102",
    }  # fmt: skip
    assert {assets[tag]["parent_id"] for tag in simulated} == {assets["LINE-1"]["id"]}
    conveyor = assets["CONV-101"]["id"]
    keys = {
        s["key"]
        for s in httpx.get(f"{base}/api/v1/assets/{conveyor}/sensors", headers=headers).json()[
            "items"
        ]
    }
    assert keys == {"belt_speed", "load", "motor_temperature", "vibration", "operating_hours"}

    with sqlite3.connect(db_file) as conn:
        per_sensor = dict(
            conn.execute(
                "SELECT s.key, count(*) FROM readings r "
                "JOIN sensors s ON s.series_id = r.series_id "
                "JOIN assets a ON a.id = s.asset_id WHERE a.tag = 'PUMP-101' GROUP BY s.key"
            ).fetchall()
        )
    # An hour of history at one a minute, plus the live ticks.
    assert set(per_sensor) == {
        "temperature", "vibration", "pressure", "power_consumption", "operating_hours",
    }  # fmt: skip
    assert min(per_sensor.values()) >= 61

    failures = httpx.get(
        f"{base}/api/v1/maintenance?kind=failure&limit=500", headers=headers
    ).json()["items"]
    correctives = httpx.get(
        f"{base}/api/v1/maintenance?kind=corrective&limit=500", headers=headers
    ).json()["items"]
    assert {f["asset_id"] for f in failures} == {assets[tag]["id"] for tag in simulated}
    assert all(f["failure_mode"] for f in failures)
    completed = {(f["asset_id"], f["started_at"]) for f in failures if f["status"] == "completed"}
    assert len(completed) == len(correctives)
    assert all((c["asset_id"], c["started_at"]) in completed for c in correctives)
