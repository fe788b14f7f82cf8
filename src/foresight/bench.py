"""`foresight bench ingest`: end-to-end ingestion throughput, measured the way a user sees it.

For each backend it migrates a fresh database, starts `foresight serve` as its own process, and
drives it from separate load-generator processes with HTTP batches. Throughput counts a point
only once it is acknowledged (durable), queryable and reflected in the rollups (checked at the
end by counting). A plain PostgreSQL ``COPY`` of the same points into a bare table is measured in
the same run as the baseline.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

T0_S = 1_767_225_600  # 2026-01-01T00:00:00Z
SENSORS = [f"s{i:02d}" for i in range(10)]


@dataclass
class Result:
    backend: str
    points: int
    seconds: float
    p50_ms: float
    p99_ms: float
    peak_rss_mb: float
    rss_mb_samples: list[float]
    stored: int
    rollup_points: int

    @property
    def rate(self) -> float:
        return self.points / self.seconds


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _processes() -> dict[int, tuple[int, str, float]]:
    """Every process: pid → (parent pid, command name, CPU seconds used, user + system)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[int, str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        out[int(entry.name)] = (int(fields[1]), comm, (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_split(server_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the server process, by its descendants (the detection
    children, through the fork server) and by every ``postgres`` process (the local server's
    backends: shared, so meaningful while nothing else uses it). Linux only (``/proc``)."""
    procs = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    below, todo = 0.0, list(children.get(server_pid, []))
    while todo:
        pid = todo.pop()
        below += procs[pid][2]
        todo += children.get(pid, [])
    return {
        "server": procs[server_pid][2] if server_pid in procs else 0.0,
        "children": below,
        "postgres": sum(cpu for _, comm, cpu in procs.values() if comm == "postgres"),
    }


def batch_body(batch_index: int, assets: int, steps: int, first_asset: int = 0) -> bytes:
    """``assets × steps × len(SENSORS)`` points; every batch has distinct timestamps."""
    readings = []
    base = T0_S + batch_index * steps
    for a in range(first_asset, first_asset + assets):
        tag = f"B-{a:04d}"
        for step in range(steps):
            ts = base + step
            readings.append(
                {
                    "asset": tag,
                    "ts": ts,
                    "values": {k: (ts % 97) * 0.5 + i for i, k in enumerate(SENSORS)},
                }
            )
    return json.dumps({"readings": readings}, separators=(",", ":")).encode()


def _sender(url: str, token: str, batches: list[int], assets: int, steps: int, out: Any) -> None:
    import httpx

    latencies = []
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    bodies = [batch_body(i, assets, steps) for i in batches]  # built before the clock starts
    out.put(("ready", 0))
    with httpx.Client(base_url=url, timeout=120) as client:
        for body in bodies:
            while True:
                started = time.perf_counter()
                response = client.post("/api/v1/readings", content=body, headers=headers)
                if response.status_code == 503:
                    time.sleep(float(response.headers.get("Retry-After", "1")))
                    continue
                response.raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000)
                break
    out.put(("done", latencies))


def _prepare(url: str, env: dict[str, str], assets: int) -> str:
    """Migrate, create a tenant, an admin, the assets and their sensors; returns a token.

    Sensors are registered up front so the run measures sustained ingestion, not the one-off
    cost of creating 500 sensors on the first batch.
    """
    from foresight.assets import service as assets_service
    from foresight.assets.schemas import AssetCreate, SensorCreate
    from foresight.audit.schemas import Actor
    from foresight.auth import security
    from foresight.auth.schemas import Principal
    from foresight.config import Settings
    from foresight.kit import migrate
    from foresight.kit.db import Database
    from foresight.models import ActorType, Role, User
    from foresight.tenants import service as tenants_service

    migrate.upgrade(url)
    db = Database.from_url(url)
    settings = Settings(database_url=url, secret_key=env["FORESIGHT_SECRET_KEY"])
    with db.transaction() as session:
        tenant = tenants_service.create(session, name="bench", actor=Actor.system("bench"))
        user = User(
            tenant_id=tenant.id, email="bench@example.com", role=Role.admin,
            password_hash=security.hash_password("bench-password"),
        )  # fmt: skip
        session.add(user)
        session.flush()
        principal = Principal(tenant.id, ActorType.system, uuid.UUID(int=0), "bench", Role.admin)
        for a in range(assets):
            asset = assets_service.create_asset(
                session, principal=principal, data=AssetCreate(tag=f"B-{a:04d}", name=f"b{a}")
            )
            for key in SENSORS:
                assets_service.create_sensor(
                    session, principal=principal, asset_id=asset.id, data=SensorCreate(key=key)
                )
        token, _ = security.create_token(
            settings, user_id=user.id, tenant_id=tenant.id, version=0, kind="access"
        )
    db.dispose()
    return token


def _server_env(url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "FORESIGHT_DATABASE_URL": url,
        "FORESIGHT_LOG_LEVEL": "WARNING",
        "FORESIGHT_SECRET_KEY": "bench-secret-key-0123456789-0123456789",
        "FORESIGHT_MAX_BODY_BYTES": str(64 * 1024 * 1024),
        **extra,
    }


def _start_server(
    env: dict[str, str], log: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """`foresight serve` as its own process; returns it and its base URL once /health answers.

    Its stderr goes to ``log`` (or nowhere): never to an unread pipe, which would block the
    server once full.
    """
    import httpx

    port = _free_port()
    with open(log or os.devnull, "wb") as stderr:
        server = subprocess.Popen(
            [sys.executable, "-m", "foresight", "serve", "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    return server, base


def run_backend(
    backend: str, url: str, *, points: int, senders: int, assets: int, steps: int
) -> Result:
    env = _server_env(url)
    token = _prepare(url, env, assets)
    per_batch = assets * steps * len(SENSORS)
    n_batches = max(senders, points // per_batch)
    server, base = _start_server(env)
    try:
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        plan = [list(range(i, n_batches, senders)) for i in range(senders)]
        procs = [
            ctx.Process(target=_sender, args=(base, token, batches, assets, steps, out))
            for batches in plan
        ]
        for proc in procs:
            proc.start()
        for _ in procs:
            assert out.get()[0] == "ready"
        samples = []
        started = time.perf_counter()
        latencies: list[float] = []
        done = 0
        while done < len(procs):
            try:
                kind, payload = out.get(timeout=1)
                if kind == "done":
                    latencies += payload
                    done += 1
            except Exception:  # noqa: BLE001 - queue.Empty: take a memory sample
                samples.append(round(_rss_mb(server.pid), 1))
        seconds = time.perf_counter() - started
        for proc in procs:
            proc.join()
        peak = _rss_mb(server.pid, "VmHWM")
    finally:
        server.terminate()
        server.wait(timeout=60)
    engine = create_engine(url)
    with engine.connect() as conn:
        stored = int(conn.execute(text("SELECT COUNT(*) FROM readings")).scalar() or 0)
        rolled = int(
            conn.execute(
                text("SELECT SUM(count) FROM readings_rollup WHERE resolution_s = 300")
            ).scalar()
            or 0
        )
    engine.dispose()
    latencies.sort()
    sent = n_batches * per_batch
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return Result(
        backend, sent, seconds, latencies[len(latencies) // 2], p99, peak, samples, stored, rolled
    )


def copy_baseline(url: str, points: int) -> float:
    """Points/s of a plain binary COPY of the same shape into a bare keyed table."""
    import psycopg

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    rows = [(s, (T0_S + i) * 1000, float(i % 97)) for i in range(points // 10) for s in range(10)]
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "CREATE TEMP TABLE copy_bench (series_id BIGINT, ts_ms BIGINT, value DOUBLE PRECISION,"
            " PRIMARY KEY (series_id, ts_ms))"
        )
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY copy_bench (series_id, ts_ms, value) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["int8", "int8", "float8"])
            for row in rows:
                copy.write_row(row)
        conn.commit()
        return len(rows) / (time.perf_counter() - started)


def postgres_database(admin_url: str) -> tuple[str, Any]:
    name = f"foresight_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


def run(*, points: int, senders: int, postgres_url: str, backends: list[str]) -> list[str]:
    """Runs the benchmark and returns the lines of a Markdown table (also printed by the CLI)."""
    results: list[Result] = []
    copy_rate = None
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            if backend == "sqlite":
                url = f"sqlite:///{tmp}/bench.db"
                results.append(
                    run_backend("sqlite", url, points=points, senders=senders, assets=50, steps=20)
                )
            else:
                url, drop = postgres_database(postgres_url)
                try:
                    results.append(
                        run_backend(
                            "postgresql", url, points=points, senders=senders, assets=50, steps=20
                        )
                    )
                    copy_rate = copy_baseline(url, points)
                finally:
                    drop()
    lines = [
        "| backend | points | end-to-end points/s | p50 batch ms | p99 batch ms "
        "| server peak RSS MB | RSS samples MB (start → end) | stored / rolled up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        samples = r.rss_mb_samples
        trend = f"{samples[0]} → {samples[-1]}" if samples else "-"
        lines.append(
            f"| {r.backend} | {r.points:,} | {r.rate:,.0f} | {r.p50_ms:.0f} | {r.p99_ms:.0f} | "
            f"{r.peak_rss_mb:.0f} | {trend} | {r.stored:,} / {r.rollup_points:,} |"
        )
    if copy_rate is not None:
        pg = next(r for r in results if r.backend == "postgresql")
        lines.append("")
        lines.append(
            f"Plain PostgreSQL binary COPY of the same number of points: {copy_rate:,.0f} "
            f"points/s; Foresight end to end reaches {pg.rate / copy_rate:.0%} of it."
        )
    return lines


# --- foresight bench detect -------------------------------------------------------------------
# Detection latency under load, and the ingest throughput detection costs. Load generators send
# disjoint asset ranges, each in time order, so every point is new to the rules (no late points).

PROBE_TAG = "P-0001"
PROBE_SENSOR = "probe"
PROBE_HIGH, PROBE_LOW, PROBE_THRESHOLD = 1000.0, 0.0, 100.0
DETECT_STEPS = 20  # timestamps per asset per batch: 10,000 points with 50 assets of 10 sensors


def detection_rules(count: int, assets: int) -> list[dict[str, Any]]:
    """``count`` rules over ``assets`` × SENSORS: thresholds, windowed means, ranges, holds.

    Sensor ``sNN`` of the load generator moves between NN and NN + 48 (a 97 s cycle), so nearly
    every rule never fires; one in a hundred fires for a few seconds of each cycle and resolves.
    """
    out = []
    for k in range(count):
        tag, i = f"B-{k % assets:04d}", (k // assets) % len(SENSORS)
        sensor, kind = SENSORS[i], k % 100
        condition: dict[str, Any]
        if kind == 0:  # fires near the top of each cycle
            condition = {"sensor": sensor, "op": ">", "threshold": i + 47}
        elif kind < 50:
            condition = {"sensor": sensor, "op": ">", "threshold": i + 1000}
        elif kind < 70:
            condition = {
                "sensor": sensor, "op": ">", "threshold": i + 100, "aggregate": "mean",
                "window": "5m",
            }  # fmt: skip
        elif kind < 90:
            condition = {"sensor": sensor, "op": "outside", "min": i - 10, "max": i + 60}
        else:
            condition = {"sensor": sensor, "op": "<", "threshold": i - 50}
        rule: dict[str, Any] = {
            "name": f"bench rule {k}", "severity": "warning", "scope": {"asset_tag": tag},
            "conditions": [condition],
        }  # fmt: skip
        if kind >= 90:
            rule["for"] = "1m"
        out.append(rule)
    return out


def _prepare_detection(
    url: str, env: dict[str, str], *, assets: int, rules: int
) -> tuple[str, str, str]:
    """`_prepare`, plus the probe asset, its rule and ``rules`` rules: (token, asset, rule id)."""
    from foresight.assets import service as assets_service
    from foresight.assets.schemas import AssetCreate, SensorCreate
    from foresight.auth.schemas import Principal
    from foresight.detection import service as rules_service
    from foresight.detection.schemas import RuleCreate
    from foresight.kit.db import Database
    from foresight.models import ActorType, Role, Tenant

    token = _prepare(url, env, assets)
    db = Database.from_url(url)
    with db.transaction() as session:
        tenant_id = session.query(Tenant.id).filter(Tenant.name == "bench").one()[0]
        principal = Principal(tenant_id, ActorType.system, uuid.UUID(int=0), "bench", Role.admin)
        probe = assets_service.create_asset(
            session, principal=principal, data=AssetCreate(tag=PROBE_TAG, name="probe")
        )
        assets_service.create_sensor(
            session, principal=principal, asset_id=probe.id, data=SensorCreate(key=PROBE_SENSOR)
        )
        probe_rule = rules_service.create_rule(
            session,
            principal=principal,
            data=RuleCreate.model_validate(
                {
                    "name": "bench probe",
                    "severity": "critical",
                    "scope": {"asset_tag": PROBE_TAG},
                    "conditions": [
                        {"sensor": PROBE_SENSOR, "op": ">", "threshold": PROBE_THRESHOLD}
                    ],
                }  # fmt: skip
            ),
        )
        for rule in detection_rules(rules, assets):
            rules_service.create_rule(
                session, principal=principal, data=RuleCreate.model_validate(rule)
            )
        ids = str(probe.id), str(probe_rule.id)
    db.dispose()
    return token, *ids


def _paced_sender(
    url: str,
    token: str,
    first_asset: int,
    assets: int,
    n_batches: int,
    start: Any,
    interval_s: float,
    seconds: float | None,
    out: Any,
) -> None:
    """Sends ``n_batches`` batches, batch j at ``start + j × interval_s`` (0: back to back),
    none ``seconds`` or more after the start (set once every sender is ready); reports
    (acknowledged points, time of the last acknowledgement)."""
    import httpx

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    bodies = [batch_body(b, assets, DETECT_STEPS, first_asset) for b in range(n_batches)]
    per_batch = assets * DETECT_STEPS * len(SENSORS)
    out.put(("ready", 0))
    while not start.value:
        time.sleep(0.01)
    start_at = float(start.value)
    stop_at = None if seconds is None else start_at + seconds
    acked, last_ack = 0, start_at
    with httpx.Client(base_url=url, timeout=120) as client:
        time.sleep(max(0.0, start_at - time.time()))
        for j, body in enumerate(bodies):
            now = time.time()
            if stop_at is not None and now >= stop_at:
                break
            due = start_at + j * interval_s
            if due > now:
                time.sleep(due - now)
            while True:
                response = client.post("/api/v1/readings", content=body, headers=headers)
                if response.status_code == 503:
                    time.sleep(float(response.headers.get("Retry-After", "1")))
                    continue
                response.raise_for_status()
                break
            acked += per_batch
            last_ack = time.time()
    out.put(("done", (acked, last_ack)))


def _metrics(base: str) -> dict[str, float]:
    """The detection counters of the server's /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    text_ = httpx.get(f"{base}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text_):
        if not family.name.startswith("foresight_detection"):
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage")
            out[sample.name + (f"_{stage}" if stage else "")] = float(sample.value)
    return out


@dataclass
class Load:
    """A load generator run: points acknowledged over the seconds from start to last ack."""

    points: int
    seconds: float
    drain_s: float | None  # after the last ack until the detection backlog was empty
    backlog_at_end: float  # at the last acknowledgement
    backlog_max: float
    counters: dict[str, float]
    # CPU seconds used meanwhile (until the backlog drained): see cpu_split.
    cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.points / self.seconds if self.seconds > 0 else 0.0

    @property
    def detected_rate(self) -> float:
        """Points per second through detection (until the backlog drained)."""
        total = self.seconds + (self.drain_s or 0.0)
        return self.points / total if total > 0 else 0.0


def _load(
    base: str,
    token: str,
    *,
    assets: int,
    senders: int,
    rate: float | None,
    seconds: float | None,
    points: int | None,
    detection: bool,
    during: Any = None,
    server_pid: int | None = None,
) -> tuple[Load, Any]:
    """Run the load generators (paced at ``rate`` for ``seconds``, or ``points`` at full speed),
    running the async ``during(start_at, stop_at)`` meanwhile (its result is returned too)."""
    import asyncio

    per_sender_assets = assets // senders
    per_batch = per_sender_assets * DETECT_STEPS * len(SENSORS)
    if rate is not None and seconds is not None:
        interval = senders * per_batch / rate
        n_batches = max(1, round(seconds / interval))
    else:
        interval, n_batches = 0.0, max(1, (points or 0) // (per_batch * senders))
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start = ctx.Value("d", 0.0)
    # Paced: a batch not sent by the end of the window is not sent (the rate was not sustained).
    window = n_batches * interval if interval else None
    procs = [
        ctx.Process(
            target=_paced_sender,
            args=(
                base,
                token,
                i * per_sender_assets,
                per_sender_assets,
                n_batches,
                start,
                interval,
                window,
                out,
            ),
        )  # fmt: skip
        for i in range(senders)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        assert out.get(timeout=300)[0] == "ready"  # every sender has built its bodies
    start_at = time.time() + 0.2
    stop_at = None if window is None else start_at + window
    cpu_before = cpu_split(server_pid) if server_pid is not None else {}
    start.value = start_at
    # Detection backlog, sampled every 0.1 s from the start (detection on only).
    samples: list[tuple[float, float]] = []
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            with contextlib.suppress(Exception):
                backlog = _metrics(base).get("foresight_detection_backlog_points", 0.0)
                samples.append((time.time(), backlog))
            watching.wait(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    if detection:
        watcher.start()
    extra = None
    if during is not None:
        time.sleep(max(0.0, start_at - time.time()))
        extra = asyncio.run(during(start_at, stop_at or start_at))
    acked, last = 0, start_at
    for _ in procs:
        kind, (n, last_ack) = out.get(timeout=600)
        acked, last = acked + n, max(last, last_ack)
    for proc in procs:
        proc.join()
    # Detection must keep up: how long after the last acknowledgement until it evaluated all.
    drain_s: float | None = 0.0
    at_end = 0.0
    if detection:
        drain_s = None
        give_up = time.time() + 300
        while time.time() < give_up and drain_s is None:
            time.sleep(0.1)
            drained = [t for t, b in samples if t >= last and b == 0]
            drain_s = max(0.0, drained[0] - last) if drained else None
        watching.set()
        watcher.join()
        at_end = next((b for t, b in samples if t >= last), 0.0)
    cpu_after = cpu_split(server_pid) if server_pid is not None else {}
    counters = _metrics(base) if detection else {}
    seconds_ = max(last, stop_at or last) - start_at
    backlog_max = max((b for _, b in samples), default=0.0)
    cpu_s = {k: cpu_after[k] - cpu_before[k] for k in cpu_after}
    return Load(acked, seconds_, drain_s, at_end, backlog_max, counters, cpu_s), extra


@dataclass
class Probes:
    api_ms: list[float]
    ws_ms: list[float]
    missed: int
    notes: list[str]


def _probe_loop(
    base: str,
    token: str,
    asset_id: str,
    rule_id: str,
    *,
    max_probes: int,
    poll_s: float,
    warmup_s: float,
) -> Any:
    """An async callable for `_load`: probes from ``warmup_s`` after the load started until it
    stops (or ``max_probes``)."""
    import asyncio

    import httpx
    import websockets

    async def run(start_at: float, stop_at: float) -> Probes:
        headers = {"Authorization": f"Bearer {token}"}
        ws_url = base.replace("http://", "ws://") + (
            f"/api/v1/ws/assets/{asset_id}?types=alert&token={token}"
        )
        seen_open: dict[str, float] = {}  # alert id -> when alert.opened arrived
        seen_resolved: dict[str, float] = {}
        api_ms: list[float] = []
        ws_ms: list[float] = []
        missed = 0
        notes: list[str] = []
        arrived = asyncio.Event()

        async def listen(ws: Any) -> None:
            async for raw in ws:
                message = json.loads(raw)
                data = message.get("data") or {}
                if message.get("type") != "alert" or data.get("rule_id") != rule_id:
                    continue
                now = time.perf_counter()
                if message.get("event") == "alert.opened":
                    seen_open.setdefault(data["id"], now)
                elif message.get("event") == "alert.resolved":
                    seen_resolved.setdefault(data["id"], now)
                arrived.set()
            notes.append(f"WebSocket closed by the server: {ws.close_code} {ws.close_reason}")

        async def post(client: httpx.AsyncClient, ts: int, value: float) -> float:
            body = {"readings": [{"asset": PROBE_TAG, "ts": ts, "values": {PROBE_SENSOR: value}}]}
            while True:
                response = await client.post("/api/v1/readings", json=body, headers=headers)
                if response.status_code != 503:
                    response.raise_for_status()
                    return time.perf_counter()
                await asyncio.sleep(0.05)

        async def wait_for(seen: dict[str, float], exclude: set[str], timeout: float) -> str | None:
            deadline = time.perf_counter() + timeout
            while True:
                fresh = [k for k in seen if k not in exclude]
                if fresh:
                    return fresh[0]
                left = deadline - time.perf_counter()
                if left <= 0:
                    return None
                arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), left)

        async with (
            httpx.AsyncClient(base_url=base, timeout=60) as client,
            websockets.connect(ws_url, max_size=None) as ws,
        ):
            await ws.recv()  # hello
            listener = asyncio.create_task(listen(ws))
            ts, done_ids = T0_S, set[str]()
            # Warm-up: the first batch of each series loads its trailing history (cold start).
            await asyncio.sleep(max(0.0, start_at + warmup_s - time.time()))
            try:
                while time.time() < stop_at and len(api_ms) < max_probes:
                    ts += 1
                    t0 = await post(client, ts, PROBE_HIGH)
                    # (a) visible through the API
                    api_id = None
                    while time.perf_counter() - t0 < 30:
                        page = (
                            await client.get(
                                "/api/v1/alerts",
                                params={"asset_id": asset_id, "status": "open"},
                                headers=headers,
                            )
                        ).json()
                        api_id = next(
                            (
                                a["id"]
                                for a in page["items"]
                                if a["rule_id"] == rule_id and a["id"] not in done_ids
                            ),
                            None,
                        )
                        if api_id is not None:
                            api_ms.append((time.perf_counter() - t0) * 1000)
                            break
                        await asyncio.sleep(poll_s)
                    # (b) pushed on the WebSocket
                    ws_id = await wait_for(seen_open, done_ids, 30)
                    if api_id is None or ws_id is None:
                        notes.append(f"no alert after 30 s: API {api_id}, WebSocket {ws_id}")
                        missed += 1
                        break
                    ws_ms.append((seen_open[ws_id] - t0) * 1000)
                    done_ids.add(ws_id)
                    # back to normal: wait for the resolve before the next probe
                    ts += 1
                    await post(client, ts, PROBE_LOW)
                    if await wait_for(seen_resolved, set(), 30) is None:
                        notes.append("no alert.resolved on the WebSocket after 30 s")
                        missed += 1
                        break
                    seen_resolved.clear()
            finally:
                listener.cancel()
        return Probes(api_ms, ws_ms, missed, notes)

    return run


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


@dataclass
class DetectResult:
    backend: str
    target_rate: float
    load: Load
    probes: Probes
    # Phase B rounds: (detection on, detection off), run in alternating order.
    pairs: list[tuple[Load, Load]]

    @staticmethod
    def pair_ratio(on: Load, off: Load) -> float:
        return on.detected_rate / off.rate if off.rate else float("nan")

    @property
    def ratios(self) -> list[float]:
        return [self.pair_ratio(on, off) for on, off in self.pairs]

    @property
    def median_pair(self) -> tuple[Load, Load]:
        """The round whose ratio is the median (the lower of the middle two for an even count):
        one noisy round on a shared machine does not decide the figure."""
        order = sorted(range(len(self.pairs)), key=lambda i: self.ratios[i])
        return self.pairs[order[(len(order) - 1) // 2]]

    @property
    def on(self) -> Load:
        return self.median_pair[0]

    @property
    def off(self) -> Load:
        return self.median_pair[1]

    @property
    def ratio(self) -> float:
        return self.pair_ratio(self.on, self.off)


STAGES = ("rules", "anomaly", "alerts")


def _us_per_point(load: Load, stage: str) -> float:
    points = load.counters.get("foresight_detection_points_total", 0.0)
    seconds = load.counters.get(f"foresight_detection_seconds_total_{stage}", 0.0)
    return seconds / points * 1e6 if points else float("nan")


def _cpu_us_per_point(load: Load, key: str) -> float:
    return load.cpu_s.get(key, float("nan")) / load.points * 1e6 if load.points else float("nan")


def run_detect_backend(
    backend: str,
    make_database: Any,
    *,
    rate: float,
    seconds: float,
    rules: int,
    probes: int,
    points: int,
    senders: int,
    assets: int,
    poll_s: float,
    warmup_s: float,
    rounds: int = 1,
) -> DetectResult:
    """Phase A on one database; phase B ``rounds`` times with detection on and off, each run on
    a fresh database and server, in alternating order (on, off; off, on; …) so that a drift of
    the machine's speed does not favour one side."""

    def phase(detection: bool, paced: bool) -> tuple[Load, Any]:
        url, drop = make_database()
        env = _server_env(url, FORESIGHT_DETECTION_ENABLED=str(detection).lower())
        try:
            token, asset_id, rule_id = _prepare_detection(url, env, assets=assets, rules=rules)
            server, base = _start_server(env)
            try:
                during = (
                    _probe_loop(
                        base,
                        token,
                        asset_id,
                        rule_id,
                        max_probes=probes,
                        poll_s=poll_s,
                        warmup_s=warmup_s,
                    )  # fmt: skip
                    if paced
                    else None
                )
                return _load(
                    base, token, assets=assets, senders=senders,
                    rate=rate if paced else None, seconds=seconds if paced else None,
                    points=None if paced else points, detection=detection, during=during,
                    server_pid=server.pid,
                )  # fmt: skip
            finally:
                server.terminate()
                server.wait(timeout=60)
        finally:
            drop()

    load, found = phase(True, True)
    pairs = []
    for round_ in range(rounds):
        if round_ % 2 == 0:
            on, _ = phase(True, False)
            off, _ = phase(False, False)
        else:
            off, _ = phase(False, False)
            on, _ = phase(True, False)
        pairs.append((on, off))
    return DetectResult(backend, rate, load, found, pairs)


def run_detect(
    *,
    backends: list[str],
    postgres_url: str,
    rate: float = 50_000,
    seconds: float = 30,
    rules: int = 1000,
    probes: int = 1_000_000,
    points: int = 300_000,
    senders: int = 2,
    assets: int = 100,
    poll_s: float = 0.005,
    warmup_s: float = 5.0,
    rounds: int = 3,
) -> list[str]:
    """Runs `foresight bench detect` and returns the lines of its Markdown report."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            if backend == "sqlite":

                def make_database(tmp: str = tmp) -> tuple[str, Any]:
                    path = Path(tmp) / f"detect-{uuid.uuid4().hex[:8]}.db"
                    return f"sqlite:///{path}", lambda: None

            else:

                def make_database(tmp: str = tmp) -> tuple[str, Any]:
                    return postgres_database(postgres_url)

            results.append(
                run_detect_backend(
                    backend, make_database, rate=rate, seconds=seconds, rules=rules,
                    probes=probes, points=points, senders=senders, assets=assets, poll_s=poll_s,
                    warmup_s=min(warmup_s, seconds / 3), rounds=rounds,
                )
            )  # fmt: skip
    return detect_table(results, rules=rules)


def detect_table(results: list[DetectResult], *, rules: int) -> list[str]:
    lines = [
        f"Phase A: paced load for the target rate, {rules:,} active rules + a probe rule; a probe "
        "point's alert timed from its acknowledgement to `GET /api/v1/alerts` and to "
        "`alert.opened` on `/ws/assets/{id}` (probes start after a warm-up of a few seconds).",
        "",
        "| backend | target points/s | acknowledged points/s | probes | API p50 / p99 ms "
        "| WebSocket p50 / p99 ms | max backlog | backlog at end → drained after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        a, p = r.load, r.probes
        drained = f"{a.drain_s:.2f} s" if a.drain_s is not None else "not drained"
        sustained = "" if a.rate >= 0.95 * r.target_rate else " (target not sustained)"
        lines.append(
            f"| {r.backend} | {r.target_rate:,.0f} | {a.rate:,.0f}{sustained} | "
            f"{len(p.api_ms)}{f' ({p.missed} missed)' if p.missed else ''} | "
            f"{_pct(p.api_ms, 0.5):.0f} / {_pct(p.api_ms, 0.99):.0f} | "
            f"{_pct(p.ws_ms, 0.5):.0f} / {_pct(p.ws_ms, 0.99):.0f} | {a.backlog_max:,.0f} | "
            f"{a.backlog_at_end:,.0f} → {drained} |"
        )
    for r in results:
        lines += [f"{r.backend}: {note}" for note in r.probes.notes]
    lines += [
        "",
        "Phase B: full-speed ingest of the same points with detection on and off (fresh "
        "server and database each), in rounds of alternating order; the row is the round with "
        "the median ratio; 'through detection' counts until the backlog drained.",
        "",
        "| backend | points | detection on: acknowledged points/s | on: through detection "
        "points/s | detection off points/s | ratio (through detection / off) "
        "| rules / anomaly / alerts µs per point (phase A; phase B) "
        "| CPU µs per point: server / detection / PostgreSQL (on; off) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        costs = "; ".join(
            " / ".join(
                f"{_us_per_point(load, stage):.1f}" for stage in ("rules", "anomaly", "alerts")
            )
            for load in (r.load, r.on)
        )
        cpu = "; ".join(
            " / ".join(
                f"{_cpu_us_per_point(load, key):.1f}" for key in ("server", "children", "postgres")
            )
            for load in (r.on, r.off)
        )
        lines.append(
            f"| {r.backend} | {r.on.points:,} | {r.on.rate:,.0f} | {r.on.detected_rate:,.0f} | "
            f"{r.off.rate:,.0f} | {r.ratio:.0%} | {costs} | {cpu} |"
        )
    lines.append("")
    for r in results:
        rounds = ", ".join(
            f"{on.detected_rate:,.0f} / {off.rate:,.0f} = {ratio:.0%}"
            for (on, off), ratio in zip(r.pairs, r.ratios, strict=True)
        )
        lines.append(
            f"{r.backend}: phase B rounds (through detection / off points/s): {rounds}; "
            f"lowest {min(r.ratios):.0%}, median {r.ratio:.0%}"
        )
    return lines
