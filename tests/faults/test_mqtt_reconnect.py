"""The MQTT subscriber of `foresight serve` when its broker (a mosquitto of the test's own) dies
and comes back: it retries with exponential backoff, subscribes again by itself, and ingests what
devices publish after that; nothing published before is lost or doubled.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import (
    T0_S,
    Proc,
    Processes,
    Server,
    binary,
    count_points,
    explained,
    foresight_env,
    free_port,
    prepare,
    stored,
    wait_for,
)

pytestmark = [pytest.mark.faults]

ASSET = "M-1"
SENSORS = ("temperature", "vibration")
PER_MESSAGE = 10  # readings per message, each with both sensors


class Mosquitto:
    def __init__(self, procs: Processes, root: Path) -> None:
        self.bin = binary("mosquitto", Path("/usr/sbin/mosquitto"))
        self.procs = procs
        self.port = free_port()
        self.config = root / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        )
        self.proc: Proc | None = None

    def start(self) -> Mosquitto:
        self.proc = self.procs.start("mosquitto", [self.bin, "-c", str(self.config)])
        wait_for(self._up, timeout_s=30, what=f"mosquitto on port {self.port}")
        return self

    def _up(self) -> bool:
        import socket

        assert self.proc is not None
        if not self.proc.alive():
            pytest.fail(f"mosquitto exited\n{self.proc.tail()}", pytrace=False)
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def publish(self, topic: str, payloads: list[bytes]) -> None:
        import aiomqtt

        async def run() -> None:
            ident = f"device-{uuid.uuid4().hex[:8]}"
            async with aiomqtt.Client("127.0.0.1", self.port, identifier=ident) as client:
                for payload in payloads:
                    await client.publish(topic, payload, qos=1)

        asyncio.run(run())


def _messages(first: int, count: int) -> list[bytes]:
    out = []
    for m in range(first, first + count):
        readings = [
            {"ts": T0_S + m * PER_MESSAGE + i, "values": {s: float(m * 10 + i) for s in SENSORS}}
            for i in range(PER_MESSAGE)
        ]
        out.append(json.dumps({"readings": readings}).encode())
    return out


def _expected(count: int) -> dict[tuple[str, str, int], float]:
    return {
        (ASSET, s, (T0_S + m * PER_MESSAGE + i) * 1000): float(m * 10 + i)
        for m in range(count)
        for i in range(PER_MESSAGE)
        for s in SENSORS
    }


def _events(server: Server, name: str) -> list[dict[str, Any]]:
    out = []
    for line in server.proc.output().splitlines():
        if f'"{name}"' in line:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == name:
                out.append(event)
    return out


def test_mqtt_subscriber_reconnects_with_backoff_after_the_broker_returns(
    tmp_path: Path, procs: Processes
) -> None:
    url = f"sqlite:///{tmp_path / 'foresight.db'}"
    tenant = prepare(url, [ASSET])
    broker = Mosquitto(procs, tmp_path).start()
    prefix = f"faults{uuid.uuid4().hex[:8]}"
    env = foresight_env(
        url, tmp_path,
        mqtt_url=f"mqtt://127.0.0.1:{broker.port}", mqtt_topic_prefix=prefix,
        mqtt_client_id=f"foresight-faults-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    topic = f"{prefix}/{tenant.name}/{ASSET}/readings"
    with explained(procs):
        server = Server(procs, env, tmp_path)
        wait_for(lambda: _events(server, "mqtt_subscribed"), timeout_s=30, what="a subscription")
        broker.publish(topic, _messages(0, 20))
        wait_for(lambda: count_points(url) == len(_expected(20)), timeout_s=60,
                 what="the first 20 messages to be stored")  # fmt: skip

        assert broker.proc is not None
        broker.proc.kill9()  # the broker goes away
        # Three failed attempts in a row, each after a longer pause than the one before.
        wait_for(lambda: len(_events(server, "mqtt_disconnected")) >= 3, timeout_s=60,
                 what="three reconnection attempts")  # fmt: skip
        broker.start()  # and comes back, on the same port
        wait_for(lambda: len(_events(server, "mqtt_subscribed")) >= 2, timeout_s=60,
                 what="the subscriber to subscribe again")  # fmt: skip
        broker.publish(topic, _messages(20, 20))
        wait_for(
            lambda: count_points(url) >= len(_expected(40)),
            timeout_s=60,
            what="the messages published after the broker came back to be stored",
        )

        assert server.proc.alive()
        delays = [e["retry_in_s"] for e in _events(server, "mqtt_disconnected")]
        assert delays[:3] == [1.0, 2.0, 4.0], delays
        final = stored(url, tenant.id)
        final.check_exactly(_expected(40))
        final.check_consistent()
