"""Throwaway services, real Foresight processes, a load generator and the checks of the fault tests.

Every service a fault test stops, kills or breaks is its own instance here (a PostgreSQL cluster
made with initdb in a temporary directory, a second nats-server, a second mosquitto), on a free
port, never the shared ones. Foresight itself runs as real processes (`python -m foresight serve`,
`python -m foresight worker`), each in its own process group so a test can `kill -9` it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pwd
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import create_engine, select

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_BIN = Path(os.environ.get("FORESIGHT_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
SECRET_KEY = "fault-test-secret-key-0123456789-0123456789"
T0_S = 1_767_225_600  # 2026-01-01T00:00:00Z: in the past, so never "too far in the future"
RESOLUTIONS_S = (300, 3600, 86400)

T = TypeVar("T")


# --- small things -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unavailable(message: str) -> None:
    """A missing binary or OS user: fails the test with CI=true, skips it otherwise."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: fault tests must run)", pytrace=False)
    pytest.skip(message)


def binary(name: str, *candidates: Path) -> str:
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")
    if found is None:
        unavailable(f"{name} is not installed")
    assert found is not None
    return found


def wait_for(predicate: Callable[[], T], *, timeout_s: float, what: str, every_s: float = 0.1) -> T:
    """Poll until ``predicate`` returns something truthy; fail naming ``what`` if it never does."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}", pytrace=False)
        time.sleep(every_s)


class Proc:
    """A child process in its own process group, its output in a log file."""

    def __init__(self, name: str, args: list[str], log: Path, **kwargs: Any) -> None:
        self.name, self.args, self.log = name, args, log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.popen.wait(timeout=30)

    def stop(self, timeout_s: float = 20) -> None:
        """SIGTERM, then SIGKILL to the whole group if it does not exit in time."""
        if self.alive():
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout_s)
        self.signal(signal.SIGKILL)  # anything left in the group
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, chars: int = 3000) -> str:
        return (
            f"--- {self.name} ({' '.join(self.args[:4])} …) log tail ---\n" + self.output()[-chars:]
        )


class Processes:
    """Every process a test starts, stopped at teardown (latest first)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Proc] = []

    def start(self, name: str, args: list[str], **kwargs: Any) -> Proc:
        log = self.log_dir / f"{name}-{len(self.procs)}.log"
        proc = Proc(name, args, log, **kwargs)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        """Foresight's processes first (newest first), then the services they use."""
        ours = [p for p in self.procs if p.name in ("serve", "worker")]
        for proc in [*reversed(ours), *(p for p in reversed(self.procs) if p not in ours)]:
            proc.stop(timeout_s=10)

    def tails(self) -> str:
        return "\n".join(p.tail() for p in self.procs)


# --- PostgreSQL: a throwaway cluster --------------------------------------------------------------


class PostgresCluster:
    """initdb + pg_ctl in a temporary directory, on a free port, listening on 127.0.0.1 only.

    PostgreSQL refuses to run as root; tests run as root here, so the cluster then belongs to the
    ``postgres`` OS user (commands through ``runuser``) in a directory under /tmp it owns.
    """

    def __init__(self) -> None:
        self.initdb = binary("initdb", PG_BIN / "initdb")
        self.pg_ctl = binary("pg_ctl", PG_BIN / "pg_ctl")
        self.as_user: list[str] = []
        owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                unavailable("running as root and there is no 'postgres' OS user for initdb")
            self.as_user = [binary("runuser"), "-u", "postgres", "--"]
        self.root = Path(tempfile.mkdtemp(prefix="foresight-fault-pg-"))
        if owner is not None:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.port = free_port()

    def _run(self, *args: str, timeout_s: float = 120) -> None:
        result = subprocess.run(
            [*self.as_user, *args], capture_output=True, text=True, timeout=timeout_s
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({result.returncode}):\n{result.stdout}\n"
                f"{result.stderr}\n{self.log_tail()}"
            )

    def init(self) -> PostgresCluster:
        self._run(
            self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--locale=C", "-N", "--no-instructions",
        )  # fmt: skip
        return self

    def start(self) -> None:
        # fsync off: the tests kill Foresight and stop PostgreSQL, never the machine.
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c synchronous_commit=on -c max_connections=200"
        )
        self._run(self.pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.logfile),
                  "-w", "-t", "60", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str = "foresight") -> str:
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            engine.dispose()
        return self.url(name)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return "--- postgres log tail ---\n" + self.logfile.read_text()[-chars:]
        except OSError:
            return ""


# --- Foresight: schema, a tenant, and its processes -------------------------------------------


@dataclass
class Tenant:
    name: str
    id: uuid.UUID
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}


def prepare(url: str, tags: list[str]) -> Tenant:
    """Migrate ``url``, create a tenant, an operator and the assets; returns the operator."""
    from foresight.assets import service as assets_service
    from foresight.assets.schemas import AssetCreate
    from foresight.audit.schemas import Actor
    from foresight.auth import security
    from foresight.auth.schemas import Principal
    from foresight.config import Settings
    from foresight.kit import migrate
    from foresight.kit.db import Database
    from foresight.models import ActorType, Role, User
    from foresight.tenants import service as tenants_service

    migrate.upgrade(url)
    db = Database.from_url(url, pool_size=1)
    settings = Settings(_env_file=None, database_url=url, secret_key=SECRET_KEY)
    name = f"faults-{uuid.uuid4().hex[:8]}"
    try:
        with db.transaction() as session:
            tenant = tenants_service.create(session, name=name, actor=Actor.system("faults"))
            user = User(
                tenant_id=tenant.id, email=f"op-{uuid.uuid4().hex[:6]}@example.com",
                role=Role.operator, password_hash="!",
            )  # fmt: skip
            session.add(user)
            session.flush()
            admin = Principal(tenant.id, ActorType.system, uuid.UUID(int=0), "faults", Role.admin)
            for tag in tags:
                assets_service.create_asset(
                    session, principal=admin, data=AssetCreate(tag=tag, name=tag)
                )
            token, _ = security.create_token(
                settings, user_id=user.id, tenant_id=tenant.id, version=0, kind="access"
            )
            return Tenant(name, tenant.id, token)
    finally:
        db.dispose()


def foresight_env(database_url: str, workdir: Path, **settings: str) -> dict[str, str]:
    """The environment of a Foresight process: nothing FORESIGHT_* leaks in from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORESIGHT_")}
    env.update(
        FORESIGHT_ENV="test",
        FORESIGHT_DATABASE_URL=database_url,
        FORESIGHT_DATA_DIR=str(workdir / "var"),
        FORESIGHT_SECRET_KEY=SECRET_KEY,
        FORESIGHT_LOG_LEVEL="INFO",
        FORESIGHT_LOG_JSON="true",
        FORESIGHT_MAX_BODY_BYTES=str(16 * 1024 * 1024),
    )
    env.update({f"FORESIGHT_{k.upper()}": v for k, v in settings.items()})
    return env


class Server:
    """`python -m foresight serve` on a free port."""

    def __init__(self, procs: Processes, env: dict[str, str], workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "foresight", "serve", "--host", "127.0.0.1"]
        self.proc = procs.start("serve", [*args, "--port", str(self.port)], env=env, cwd=workdir)

        def healthy() -> bool:
            if not self.proc.alive():
                pytest.fail(f"foresight serve exited at start\n{self.proc.tail()}", pytrace=False)
            try:
                return httpx.get(f"{self.base}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, timeout_s=60, what=f"foresight serve on port {self.port}", every_s=0.2)


def start_worker(procs: Processes, env: dict[str, str], workdir: Path) -> Proc:
    return procs.start(
        "worker", [sys.executable, "-m", "foresight", "worker"], env=env, cwd=workdir
    )


# --- the load: batches of distinct points, and a client that records every answer -----------------

Key = tuple[str, str, int]  # asset tag, sensor key, ts_ms


@dataclass(frozen=True)
class Workload:
    """``batches`` request bodies; batch i holds its own timestamps for every asset and sensor.

    Consecutive batches share 5-minute, hour and day buckets, so rollups merge across commits.
    """

    tags: list[str]
    sensors: list[str]
    steps: int
    batches: int

    def value(self, tag: str, sensor: str, ts_s: int) -> float:
        return float((ts_s * 7 + self.tags.index(tag) * 13 + self.sensors.index(sensor)) % 101) / 4

    def keys(self, index: int) -> dict[Key, float]:
        out: dict[Key, float] = {}
        for step in range(self.steps):
            ts_s = T0_S + index * self.steps + step
            for tag in self.tags:
                for sensor in self.sensors:
                    out[(tag, sensor, ts_s * 1000)] = self.value(tag, sensor, ts_s)
        return out

    def body(self, index: int) -> bytes:
        readings = []
        for step in range(self.steps):
            ts_s = T0_S + index * self.steps + step
            for tag in self.tags:
                values = {s: self.value(tag, s, ts_s) for s in self.sensors}
                readings.append({"asset": tag, "ts": ts_s, "values": values})
        return json.dumps({"readings": readings}, separators=(",", ":")).encode()

    @property
    def points_per_batch(self) -> int:
        return self.steps * len(self.tags) * len(self.sensors)

    def expected(self, indices: set[int]) -> dict[Key, float]:
        out: dict[Key, float] = {}
        for index in indices:
            out.update(self.keys(index))
        return out


@dataclass
class Answer:
    batch: int
    started: float
    finished: float
    status: int | None  # None: no answer (connection refused or reset)
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""


class Load:
    """Client threads POSTing batches; remembers which got a 2xx and every answer.

    A batch answered 503 goes back into the queue (a client retrying later); with
    ``stop_on_no_answer`` a thread that gets no answer at all (the server is gone) stops.
    """

    def __init__(
        self,
        base: str,
        tenant: Tenant,
        workload: Workload,
        indices: list[int],
        *,
        threads: int = 3,
        stop_on_no_answer: bool = False,
        pause_on_503_s: float = 0.05,
    ) -> None:
        self.base, self.tenant, self.workload = base, tenant, workload
        self.stop_on_no_answer = stop_on_no_answer
        self.pause_on_503_s = pause_on_503_s
        self.todo: queue.Queue[int] = queue.Queue()
        for index in indices:
            self.todo.put(index)
        self.acked: set[int] = set()
        self.attempted: set[int] = set()
        self.answers: list[Answer] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            for i in range(threads)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def join(self, timeout_s: float) -> None:
        """Wait until every batch is acknowledged (or the threads stopped)."""
        wait_for(
            lambda: not any(t.is_alive() for t in self._threads),
            timeout_s=timeout_s,
            what=f"the load to finish ({len(self.acked)} batches acknowledged)",
            every_s=0.2,
        )

    @property
    def unacked(self) -> set[int]:
        with self._lock:
            return self.attempted - self.acked

    def statuses(self) -> Counter[int | None]:
        with self._lock:
            return Counter(a.status for a in self.answers)

    def _run(self) -> None:
        bodies: dict[int, bytes] = {}
        with httpx.Client(base_url=self.base, timeout=60) as client:
            while not self._stop.is_set():
                try:
                    index = self.todo.get_nowait()
                except queue.Empty:
                    return
                body = bodies.pop(index, None) or self.workload.body(index)
                with self._lock:
                    self.attempted.add(index)
                started = time.monotonic()
                try:
                    response = client.post(
                        "/api/v1/readings", content=body, headers=self.tenant.headers
                    )
                except httpx.TransportError:
                    with self._lock:
                        self.answers.append(Answer(index, started, time.monotonic(), None))
                    self.todo.put(index)
                    if self.stop_on_no_answer:
                        return
                    time.sleep(0.1)
                    continue
                answer = Answer(
                    index, started, time.monotonic(), response.status_code,
                    dict(response.headers), response.text[:2000],
                )  # fmt: skip
                with self._lock:
                    self.answers.append(answer)
                    if response.is_success:
                        accepted = response.json().get("accepted")
                        if accepted != self.workload.points_per_batch:
                            self.failures.append(f"batch {index}: {response.text[:500]}")
                        self.acked.add(index)
                        continue
                if response.status_code == 503:
                    self.todo.put(index)
                    time.sleep(self.pause_on_503_s)
                    continue
                with self._lock:
                    self.failures.append(f"batch {index}: {response.status_code} {answer.body}")
                self.todo.put(index)
                time.sleep(0.1)


# --- what the store holds ---------------------------------------------------------------------


@dataclass
class Stored:
    points: Counter[Key]
    values: dict[Key, float]
    series: dict[int, tuple[str, str]]
    rollups: dict[tuple[int, int, int], tuple[int, float, float, float]]  # count, mean, min, max

    def check_consistent(self) -> None:
        """No point twice; every rollup bucket counts exactly the raw points it covers."""
        doubled = [k for k, n in self.points.items() if n > 1]
        assert not doubled, f"{len(doubled)} points stored more than once, e.g. {doubled[:5]}"
        by_id = {v: k for k, v in self.series.items()}
        expected: dict[tuple[int, int, int], list[float]] = {}
        for (tag, sensor, ts_ms), value in self.values.items():
            sid = by_id[(tag, sensor)]
            for res in RESOLUTIONS_S:
                expected.setdefault((sid, res, ts_ms // (res * 1000) * res * 1000), []).append(
                    value
                )
        assert set(self.rollups) == set(expected), (
            f"rollup buckets differ from the raw points: "
            f"{len(set(self.rollups) - set(expected))} without points, "
            f"{len(set(expected) - set(self.rollups))} missing"
        )
        wrong = []
        for bucket, values in expected.items():
            count, mean, low, high = self.rollups[bucket]
            if (count, low, high) != (len(values), min(values), max(values)) or not math.isclose(
                mean, math.fsum(values) / len(values), rel_tol=1e-9, abs_tol=1e-9
            ):
                wrong.append((bucket, self.rollups[bucket], len(values)))
        assert not wrong, f"{len(wrong)} rollup buckets disagree with raw points: {wrong[:5]}"

    def check_has(self, expected: dict[Key, float], what: str) -> None:
        missing = [k for k in expected if k not in self.values]
        assert not missing, f"{len(missing)} {what} points are missing, e.g. {sorted(missing)[:5]}"
        differ = [k for k, v in expected.items() if self.values[k] != v]
        assert not differ, f"{len(differ)} {what} points have other values: {differ[:5]}"

    def check_exactly(self, expected: dict[Key, float]) -> None:
        self.check_has(expected, "expected")
        extra = set(self.values) - set(expected)
        assert not extra, f"{len(extra)} points were never sent: {sorted(extra)[:5]}"


def stored(url: str, tenant_id: uuid.UUID) -> Stored:
    from foresight.models import Asset, Reading, Rollup, Sensor

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            series = {
                int(sid): (tag, key)
                for sid, tag, key in conn.execute(
                    select(Sensor.series_id, Asset.tag, Sensor.key)
                    .join(Asset, Asset.id == Sensor.asset_id)
                    .where(Asset.tenant_id == tenant_id)
                )
            }
            points: Counter[Key] = Counter()
            values: dict[Key, float] = {}
            rows = conn.execute(
                select(Reading.series_id, Reading.ts_ms, Reading.value).where(
                    Reading.series_id.in_(list(series))
                )
            )
            for sid, ts_ms, value in rows:
                key = (*series[int(sid)], int(ts_ms))
                points[key] += 1
                values[key] = float(value)
            columns = (Rollup.series_id, Rollup.resolution_s, Rollup.bucket_ms, Rollup.count,
                       Rollup.mean, Rollup.min, Rollup.max)  # fmt: skip
            rollups = {
                (int(sid), int(res), int(bucket)): (int(n), float(mean), float(lo), float(hi))
                for sid, res, bucket, n, mean, lo, hi in conn.execute(
                    select(*columns).where(Rollup.series_id.in_(list(series)))
                )
            }
    finally:
        engine.dispose()
    return Stored(points, values, series, rollups)


def count_points(url: str) -> int:
    from sqlalchemy import func

    from foresight.models import Reading

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(Reading)).scalar() or 0)
    finally:
        engine.dispose()


@contextlib.contextmanager
def explained(procs: Processes, *extra: Callable[[], str]) -> Iterator[None]:
    """On a failure, append the processes' log tails to the report."""
    try:
        yield
    except BaseException:
        sys.stderr.write(procs.tails() + "\n" + "\n".join(f() for f in extra) + "\n")
        raise


# --- NATS: a second nats-server with JetStream ------------------------------------------------

NATS_STREAM = "FORESIGHT_INGEST"
NATS_PREFIX = "foresight.ingest"


class NatsServer:
    """`nats-server -js` on a free port with its own store directory (survives a restart)."""

    def __init__(self, procs: Processes, root: Path) -> None:
        self.bin = binary("nats-server", Path("/usr/sbin/nats-server"))
        self.procs = procs
        self.port = free_port()
        self.store = root / "nats-store"
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: Proc | None = None

    def start(self) -> NatsServer:
        args = [self.bin, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)]
        self.proc = self.procs.start("nats", args)

        def up() -> bool:
            assert self.proc is not None
            if not self.proc.alive():
                pytest.fail(f"nats-server exited\n{self.proc.tail()}", pytrace=False)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                return False
            return True

        wait_for(up, timeout_s=30, what=f"nats-server on port {self.port}")
        return self

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.stop()

    def call(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``await fn(jetstream)`` on a connection of its own."""
        import asyncio

        import nats

        async def run() -> Any:
            nc = await nats.connect(self.url, connect_timeout=5, max_reconnect_attempts=0)
            try:
                return await fn(nc.jetstream())
            finally:
                await nc.close()

        return asyncio.run(run())

    def create_stream(self) -> None:
        """The stream, as `foresight worker` would create it (the workers add the consumers)."""
        from foresight.ingest.nats_bus import ensure_stream

        async def create(js: Any) -> None:
            await ensure_stream(js, NATS_STREAM, NATS_PREFIX)

        self.call(create)

    def consumer(self) -> Any:
        """The workers' consumers (one per partition, and the legacy one) added up."""
        from types import SimpleNamespace

        async def info(js: Any) -> Any:
            return await js.consumers_info(NATS_STREAM)

        infos = self.call(info)
        return SimpleNamespace(
            consumers=len(infos),
            num_pending=sum(i.num_pending for i in infos),
            num_ack_pending=sum(i.num_ack_pending for i in infos),
            num_redelivered=sum(i.num_redelivered for i in infos),
            delivered_total=sum(i.delivered.consumer_seq for i in infos),
        )

    def messages(self) -> int:
        """Messages ever stored in the stream (its last sequence number)."""

        async def info(js: Any) -> Any:
            return await js.stream_info(NATS_STREAM)

        return int(self.call(info).state.last_seq)

    def drained(self) -> bool:
        info = self.consumer()
        return bool(info.consumers and info.num_pending == 0 and info.num_ack_pending == 0)


def nats_settings(nats: NatsServer) -> dict[str, str]:
    return {"nats_url": nats.url, "nats_stream": NATS_STREAM, "nats_subject_prefix": NATS_PREFIX}
