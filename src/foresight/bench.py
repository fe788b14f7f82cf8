"""`foresight bench ingest`: end-to-end ingestion throughput, measured the way a user sees it.

For each backend it migrates a fresh database, starts `foresight serve` as its own process, and
drives it from separate load-generator processes with HTTP batches. Throughput counts a point
only once it is acknowledged (durable), queryable and reflected in the rollups (checked at the
end by counting). A plain PostgreSQL ``COPY`` of the same points into a bare table is measured in
the same run as the baseline.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
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


def batch_body(batch_index: int, assets: int, steps: int) -> bytes:
    """``assets × steps × len(SENSORS)`` points; every batch has distinct timestamps."""
    readings = []
    base = T0_S + batch_index * steps
    for a in range(assets):
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


def run_backend(
    backend: str, url: str, *, points: int, senders: int, assets: int, steps: int
) -> Result:
    env = {
        **os.environ,
        "FORESIGHT_DATABASE_URL": url,
        "FORESIGHT_LOG_LEVEL": "WARNING",
        "FORESIGHT_SECRET_KEY": "bench-secret-key-0123456789-0123456789",
        "FORESIGHT_MAX_BODY_BYTES": str(64 * 1024 * 1024),
    }
    token = _prepare(url, env, assets)
    per_batch = assets * steps * len(SENSORS)
    n_batches = max(senders, points // per_batch)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "foresight", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
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
