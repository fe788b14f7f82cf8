"""`make run`'s path for real: migrate, seed the demo, start `foresight serve`, sign in over TCP."""

from __future__ import annotations

import os
import socket
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
def server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    env = {
        **os.environ,
        "FORESIGHT_DATA_DIR": str(tmp_path / "var"),
        "FORESIGHT_DATABASE_URL": "",
        "FORESIGHT_ENV": "development",
    }
    for args in (["db", "upgrade"], ["demo", "seed"]):
        subprocess.run([str(BIN), *args], env=env, check=True, capture_output=True, timeout=120)
    port = _free_port()
    proc = subprocess.Popen(
        [str(BIN), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
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
        pytest.fail(f"server did not start: {proc.communicate()[1].decode()[-2000:]}")
    try:
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_demo_sign_in_against_a_running_server(
    server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    base, proc = server
    assert (tmp := httpx.get(f"{base}/ready")).status_code == 200, tmp.text
    token = httpx.post(
        f"{base}/api/v1/auth/token",
        json={"email": "admin@example.com", "password": "foresight-demo"},
    )
    assert token.status_code == 200, token.text
    me = httpx.get(
        f"{base}/api/v1/auth/me",
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
    )
    assert me.status_code == 200 and me.json()["tenant_name"] == "demo"
    assert me.json()["role"] == "admin"
    assets = httpx.get(
        f"{base}/api/v1/assets?limit=100",
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
    ).json()["items"]
    assert {"SITE-A", "LINE-1", "PUMP-001", "MOTOR-001", "CONV-001"} <= {a["tag"] for a in assets}
    proc.terminate()
    _, stderr = proc.communicate(timeout=30)
    # Structured JSON logs, with the request id on the access lines.
    lines = [line for line in stderr.decode().splitlines() if '"event": "request"' in line]
    assert lines and all('"request_id"' in line for line in lines)
