"""The plant simulator: pumps, motors and conveyors streamed through the real ingest HTTP API.

The model is pure Python and deterministic given a seed (each asset draws from its own
``random.Random`` seeded by the plant seed and its tag, so adding assets changes no other asset):

* every asset runs a daily load cycle (peak mid-afternoon, trough at night) with a little jitter,
  and each sensor adds Gaussian noise to a value driven by the load;
* wear grows at a random per-asset rate (a new asset would fail after 4 to 14 days at average
  load), faster under load; it shows as ``wear²`` in vibration and temperature (bearing wear),
  in pressure (pumps), power draw and current;
* when wear reaches 1 the asset fails: it stops (its sensors read "stopped": no load, no power,
  near-zero vibration, ambient temperature) for a random downtime, then restarts healthy.
  Each failure yields a :class:`Failure` event and each restart a :class:`Restart` event, which
  :class:`Simulator` turns into a ``failure`` maintenance record (completed at the restart, with
  its downtime) and a completed ``corrective`` record.

Two clocks: readings are stamped ``ts`` (epoch seconds); wear and the daily cycle run on
simulated time, which advances ``speed`` times faster than ``ts`` (``foresight simulate --speed``
applies it to live streaming, so a demo sees days of wear in minutes while every timestamp stays
real). Backfilled history always runs at speed 1.

:func:`generate_batches` yields ready-to-send ``{"readings": [...]}`` bodies quickly (a load
generator for benchmarks); :class:`Simulator` drives a :class:`Plant` against a server through
:class:`ApiClient`, which uses only the standard library (no runtime dependency).
"""

from __future__ import annotations

import http.client
import json
import math
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from statistics import NormalDist
from typing import Any, Protocol

Reading = dict[str, Any]
Body = dict[str, list[Reading]]
# (key, unit, kind, expected_min, expected_max)
SensorSpec = tuple[str, str, str, float | None, float | None]

SENSORS: dict[str, tuple[SensorSpec, ...]] = {
    "pump": (
        ("temperature", "degC", "gauge", 20.0, 80.0),
        ("vibration", "mm/s", "gauge", 0.0, 7.1),
        ("pressure", "bar", "gauge", 6.0, 10.0),
        ("power_consumption", "kW", "gauge", 5.0, 20.0),
        ("operating_hours", "h", "counter", None, None),
    ),
    "motor": (
        ("temperature", "degC", "gauge", 20.0, 95.0),
        ("vibration", "mm/s", "gauge", 0.0, 4.5),
        ("power_consumption", "kW", "gauge", 5.0, 40.0),
        ("operating_hours", "h", "counter", None, None),
        ("current", "A", "gauge", 10.0, 60.0),
    ),
    "conveyor": (
        ("belt_speed", "m/s", "gauge", 1.0, 3.0),
        ("load", "t/h", "gauge", 0.0, 400.0),
        ("motor_temperature", "degC", "gauge", 20.0, 90.0),
        ("vibration", "mm/s", "gauge", 0.0, 4.5),
        ("operating_hours", "h", "counter", None, None),
    ),
}
# Asset i of the plant has kind KIND_CYCLE[i % 4]: half pumps, a quarter motors and conveyors.
KIND_CYCLE = ("pump", "motor", "pump", "conveyor")
TAG_PREFIX = {"pump": "PUMP", "motor": "MOTOR", "conveyor": "CONV"}
FIRST_NUMBER = 101  # PUMP-101, …: clear of the demo seed's PUMP-001
DEMO_LINE = "LINE-1"
MTTF_DAYS = (4.0, 14.0)  # a new asset's life at average load, drawn per asset


@dataclass(frozen=True)
class KindProfile:
    name: str
    criticality: str
    # (failure mode, corrective action), the first (wear-related) ones more likely
    modes: tuple[tuple[str, str], ...]
    downtime_h: tuple[float, float]
    repair_cost: tuple[float, float]
    lost_production_per_h: float


PROFILES: dict[str, KindProfile] = {
    "pump": KindProfile(
        "Simulated pump",
        "high",
        (
            ("bearing wear", "Replace pump bearings"),
            ("bearing wear", "Replace pump bearings"),
            ("mechanical seal leak", "Replace mechanical seal"),
            ("impeller wear", "Replace impeller"),
            ("cavitation damage", "Repair impeller, clear suction strainer"),
        ),
        (2.0, 8.0),
        (800.0, 6000.0),
        400.0,
    ),
    "motor": KindProfile(
        "Simulated drive motor",
        "critical",
        (
            ("bearing failure", "Replace motor bearings"),
            ("bearing failure", "Replace motor bearings"),
            ("winding insulation breakdown", "Rewind stator"),
            ("overheating", "Clean cooling fan, replace bearings"),
        ),
        (4.0, 16.0),
        (1500.0, 12000.0),
        900.0,
    ),
    "conveyor": KindProfile(
        "Simulated belt conveyor",
        "medium",
        (
            ("gearbox bearing wear", "Replace gearbox bearings"),
            ("gearbox bearing wear", "Replace gearbox bearings"),
            ("belt misalignment", "Realign and retension belt"),
            ("idler roller seizure", "Replace idler rollers"),
        ),
        (1.0, 6.0),
        (500.0, 4000.0),
        600.0,
    ),
}

_TWO_PI_PER_DAY = 2.0 * math.pi / 24.0
# Gaussian noise from a table of N(0, 1) quantiles indexed by rng.random() (a C call): several
# times cheaper than random.gauss; 4096 levels (tails at ±3.7 σ) are invisible in sensor noise.
_ZN = 4096
_Z = tuple(NormalDist().inv_cdf((i + 0.5) / _ZN) for i in range(_ZN))


# --- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """An asset failed at ``ts`` and stops until its :class:`Restart`."""

    tag: str
    kind: str
    ts: float  # epoch seconds
    failure_mode: str
    cost: float  # lost production over the (simulated) downtime


@dataclass(frozen=True)
class Restart:
    """An asset is back in service at ``ts`` after the repair of the failure at ``failed_ts``."""

    tag: str
    kind: str
    ts: float
    failed_ts: float
    failure_mode: str
    action: str
    cost: float  # parts and labour

    @property
    def downtime_hours(self) -> float:
        return round((self.ts - self.failed_ts) / 3600.0, 3)


Event = Failure | Restart


class SimAsset:
    """One simulated asset: its parameters (drawn once from its own RNG) and its state."""

    __slots__ = (
        "tag",
        "kind",
        "profile",
        "rng",
        "base_rate",
        "rate",
        "wear",
        "hours",
        "phase_h",
        "offset",
        "down_until",
        "failed_ts",
        "failure_mode",
        "action",
        "failures",
    )

    def __init__(
        self, tag: str, kind: str, *, seed: int, wear: float, initial_wear: tuple[float, float]
    ) -> None:
        self.tag = tag
        self.kind = kind
        self.profile = PROFILES[kind]
        self.rng = rng = random.Random(f"foresight-simulator:{seed}:{tag}")
        # Wear per hour at load 0.5 (the load factor is 0.5 + load, about 1.1 on average).
        self.base_rate = wear / (rng.uniform(*MTTF_DAYS) * 24.0)
        self.rate = self.base_rate
        self.wear = rng.uniform(*initial_wear)
        self.hours = float(rng.randint(2_000, 30_000))
        self.phase_h = rng.uniform(-1.5, 1.5)  # shifts share the cycle, not to the minute
        self.offset = rng.uniform(-2.0, 2.0)  # installation-specific temperature offset
        self.down_until: float | None = None  # simulated time the repair ends, while failed
        self.failed_ts = 0.0
        self.failure_mode = ""
        self.action = ""
        self.failures = 0

    @property
    def down(self) -> bool:
        return self.down_until is not None


def _pump(a: SimAsset, load: float, w: float) -> dict[str, float]:
    r, z = a.rng.random, _Z
    return {
        "temperature": round(28.0 + a.offset + 32.0 * load + 22.0 * w + 0.4 * z[int(r() * _ZN)], 2),
        "vibration": round(max(0.05, 1.2 + 1.3 * load + 5.5 * w + 0.12 * z[int(r() * _ZN)]), 3),
        "pressure": round(7.2 + 2.0 * load - 1.4 * w + 0.08 * z[int(r() * _ZN)], 3),
        "power_consumption": round(6.0 + 11.0 * load + 3.0 * w + 0.25 * z[int(r() * _ZN)], 3),
        "operating_hours": round(a.hours, 2),
    }


def _motor(a: SimAsset, load: float, w: float) -> dict[str, float]:
    r, z = a.rng.random, _Z
    current = 12.0 + 38.0 * load + 6.0 * w + 0.4 * z[int(r() * _ZN)]
    return {
        "temperature": round(35.0 + a.offset + 38.0 * load + 25.0 * w + 0.5 * z[int(r() * _ZN)], 2),
        "vibration": round(max(0.05, 0.8 + 0.9 * load + 3.6 * w + 0.08 * z[int(r() * _ZN)]), 3),
        # Three-phase 400 V at power factor 0.85: P ≈ 0.59 kW per ampere.
        "power_consumption": round(0.59 * current * (1.0 + 0.05 * w) + 0.2 * z[int(r() * _ZN)], 3),
        "operating_hours": round(a.hours, 2),
        "current": round(current, 2),
    }


def _conveyor(a: SimAsset, load: float, w: float) -> dict[str, float]:
    r, z = a.rng.random, _Z
    return {
        "belt_speed": round(
            2.5 * (1.0 - 0.06 * w) - 0.1 * (load - 0.6) + 0.02 * z[int(r() * _ZN)], 3
        ),
        "load": round(max(0.0, 380.0 * load + 8.0 * z[int(r() * _ZN)]), 1),
        "motor_temperature": round(
            30.0 + a.offset + 35.0 * load + 22.0 * w + 0.5 * z[int(r() * _ZN)], 2
        ),
        "vibration": round(max(0.05, 0.9 + 0.8 * load + 3.8 * w + 0.1 * z[int(r() * _ZN)]), 3),
        "operating_hours": round(a.hours, 2),
    }


def _stopped(a: SimAsset) -> dict[str, float]:
    """What the sensors of a stopped asset read: ambient temperature, no load, no power."""
    r, z = a.rng.random, _Z
    ambient = round(22.0 + a.offset + 0.3 * z[int(r() * _ZN)], 2)
    still = round(abs(0.02 * z[int(r() * _ZN)]), 3)
    if a.kind == "pump":
        return {
            "temperature": ambient,
            "vibration": still,
            "pressure": round(abs(0.3 + 0.05 * z[int(r() * _ZN)]), 3),
            "power_consumption": 0.0,
            "operating_hours": round(a.hours, 2),
        }
    if a.kind == "motor":
        return {
            "temperature": ambient,
            "vibration": still,
            "power_consumption": 0.0,
            "operating_hours": round(a.hours, 2),
            "current": 0.0,
        }
    return {
        "belt_speed": 0.0,
        "load": 0.0,
        "motor_temperature": ambient,
        "vibration": still,
        "operating_hours": round(a.hours, 2),
    }


_RUNNING: dict[str, Callable[[SimAsset, float, float], dict[str, float]]] = {
    "pump": _pump,
    "motor": _motor,
    "conveyor": _conveyor,
}


class Plant:
    """``assets`` simulated assets (tags PUMP-101, MOTOR-101, PUMP-102, CONV-101, …).

    ``wear`` multiplies every asset's wear rate (50 makes days of wear pass in an hour);
    ``initial_wear`` is the range each asset's wear starts in (0 = new, 1 = failing).
    """

    def __init__(
        self,
        assets: int = 8,
        *,
        seed: int = 0,
        wear: float = 1.0,
        initial_wear: tuple[float, float] = (0.0, 0.85),
        kinds: Sequence[str] = KIND_CYCLE,
    ) -> None:
        if assets < 1:
            raise ValueError("a plant needs at least one asset")
        if not wear > 0:
            raise ValueError("wear must be positive")
        self.seed = seed
        self.assets: list[SimAsset] = []
        numbers = dict.fromkeys(TAG_PREFIX, FIRST_NUMBER)
        for i in range(assets):
            kind = kinds[i % len(kinds)]
            tag = f"{TAG_PREFIX[kind]}-{numbers[kind]}"
            numbers[kind] += 1
            self.assets.append(SimAsset(tag, kind, seed=seed, wear=wear, initial_wear=initial_wear))
        self.events: list[Event] = []
        self.sim_s: float | None = None  # simulated epoch seconds (drives cycle and wear)
        self.last_ts: float | None = None
        self.failures = 0

    @property
    def down(self) -> int:
        """How many assets are stopped by a failure right now."""
        return sum(1 for a in self.assets if a.down_until is not None)

    def drain_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    def tick(self, ts: float, out: list[Reading], speed: float = 1.0) -> None:
        """Advance to ``ts`` (epoch seconds; simulated time moves ``speed`` × as far as ``ts``
        did since the last tick) and append one reading per asset, stamped ``ts``, to ``out``."""
        ts = round(ts, 3)
        if self.sim_s is None or self.last_ts is None:
            self.sim_s, dt_s = ts, 0.0
        else:
            if ts < self.last_ts:
                raise ValueError("ticks must not go back in time")
            dt_s = (ts - self.last_ts) * speed
            self.sim_s += dt_s
        self.last_ts = ts
        sim_s = self.sim_s
        dt_h = dt_s / 3600.0
        hour = sim_s / 3600.0
        append = out.append
        for a in self.assets:
            if a.down_until is not None:
                if sim_s < a.down_until:
                    append({"asset": a.tag, "ts": ts, "values": _stopped(a)})
                    continue
                self._restart(a, ts)
            rng = a.rng
            load = 0.62 + 0.28 * math.sin((hour + a.phase_h - 9.0) * _TWO_PI_PER_DAY)
            load += 0.02 * _Z[int(rng.random() * _ZN)]
            load = 0.05 if load < 0.05 else (1.0 if load > 1.0 else load)
            a.wear += a.rate * dt_h * (0.5 + load)
            a.hours += dt_h
            if a.wear >= 1.0:
                self._fail(a, ts, sim_s)
                append({"asset": a.tag, "ts": ts, "values": _stopped(a)})
                continue
            append({"asset": a.tag, "ts": ts, "values": _RUNNING[a.kind](a, load, a.wear**2)})

    def _fail(self, a: SimAsset, ts: float, sim_s: float) -> None:
        rng, profile = a.rng, a.profile
        a.failure_mode, a.action = rng.choice(profile.modes)
        downtime_h = rng.uniform(*profile.downtime_h)
        a.down_until = sim_s + downtime_h * 3600.0
        a.failed_ts = ts
        a.failures += 1
        self.failures += 1
        lost = downtime_h * profile.lost_production_per_h * rng.uniform(0.8, 1.2)
        self.events.append(Failure(a.tag, a.kind, ts, a.failure_mode, round(lost, 2)))

    def _restart(self, a: SimAsset, ts: float) -> None:
        rng = a.rng
        repair = round(rng.uniform(*a.profile.repair_cost), 2)
        self.events.append(
            Restart(a.tag, a.kind, ts, a.failed_ts, a.failure_mode, a.action, repair)
        )
        # Repaired: healthy again, and the new parts wear at a slightly different rate.
        a.down_until = None
        a.wear = rng.uniform(0.0, 0.05)
        a.rate = a.base_rate * rng.uniform(0.8, 1.25)


def generate_batches(
    plant: Plant,
    *,
    start: float,
    step_s: float,
    ticks: int,
    batch: int = 500,
    speed: float = 1.0,
) -> Iterator[Body]:
    """POST /api/v1/readings bodies for ``ticks`` ticks at ``start``, ``start + step_s``, …

    Each body holds ``batch`` readings (one asset at one time, several sensor values; the last
    body may hold fewer). Failures and restarts accumulate in ``plant.events``.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    buffer: list[Reading] = []
    tick = plant.tick
    for i in range(ticks):
        tick(start + i * step_s, buffer, speed)
        while len(buffer) >= batch:
            yield {"readings": buffer[:batch]}
            del buffer[:batch]
    if buffer:
        yield {"readings": buffer}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- HTTP (standard library only) -----------------------------------------------------------------


class Transport(Protocol):
    """Send one request; return (status, lower-cased headers, body). Raise OSError when the
    server cannot be reached."""

    def __call__(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float
    ) -> tuple[int, dict[str, str], bytes]: ...


class UrllibTransport:
    """urllib.request, without proxies for a server on this machine."""

    def __init__(self, base_url: str) -> None:
        host = urllib.parse.urlsplit(base_url).hostname or ""
        local = host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")
        handlers = [urllib.request.ProxyHandler({})] if local else []
        self.opener = urllib.request.build_opener(*handlers)

    def __call__(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with self.opener.open(request, timeout=timeout) as response:
                status = int(response.status)
                return status, _lower(response.headers.items()), response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, _lower(exc.headers.items()), exc.read()
        except http.client.HTTPException as exc:  # e.g. a connection cut mid-response
            raise ConnectionError(str(exc) or type(exc).__name__) from exc


def _lower(items: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in items}


class SimulationError(Exception):
    """The simulation cannot go on (server unreachable, sign-in refused, readings refused)."""


class ApiError(SimulationError):
    def __init__(self, status: int, method: str, path: str, detail: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


def _problem_detail(content: bytes) -> str:
    try:
        doc = json.loads(content)
    except ValueError:
        return content[:300].decode("utf-8", "replace")
    if not isinstance(doc, dict):
        return str(doc)[:300]
    detail = str(doc.get("detail") or doc.get("title") or doc)
    errors = doc.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        detail += f" (first: {errors[0].get('msg', errors[0])})"
    return detail[:500]


RETRY_STATUSES = frozenset({429, 502, 503, 504})


class ApiClient:
    """A small JSON client for the Foresight API: signs in with e-mail and password (again when
    the access token expires) or sends a device key; retries 429/502/503/504 honouring
    Retry-After, and rides out the server being unreachable for up to ``give_up_after_s``."""

    def __init__(
        self,
        base_url: str,
        *,
        email: str | None = None,
        password: str | None = None,
        api_key: str | None = None,
        transport: Transport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout_s: float = 60.0,
        give_up_after_s: float = 60.0,
        max_retries: int = 50,
        max_retry_after_s: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.email = email
        self.password = password
        self.api_key = api_key
        self.transport: Transport = transport or UrllibTransport(self.base_url)
        self.sleep = sleep
        self.timeout_s = timeout_s
        self.give_up_after_s = give_up_after_s
        self.max_retries = max_retries
        self.max_retry_after_s = max_retry_after_s
        self.token: str | None = None
        self.retries = 0  # 429/5xx answers retried (a sign of saturation)

    @property
    def can_sign_in(self) -> bool:
        return self.email is not None and self.password is not None

    def wait_until_up(self, timeout_s: float, on_wait: Callable[[], None] | None = None) -> None:
        """Poll GET /health until it answers 200."""
        deadline = time.monotonic() + timeout_s
        waited = False
        while True:
            try:
                status, _, _ = self.transport(
                    "GET", f"{self.base_url}/health", None, {}, min(5.0, self.timeout_s)
                )
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise SimulationError(
                    f"the API at {self.base_url} did not answer /health within {timeout_s:g} s"
                )
            if not waited and on_wait is not None:
                on_wait()
            waited = True
            self.sleep(0.5)

    def sign_in(self) -> None:
        if not self.can_sign_in:
            return
        try:
            tokens = self.request(
                "POST",
                "/api/v1/auth/token",
                {"email": self.email, "password": self.password},
                auth=False,
            )
        except ApiError as exc:
            raise SimulationError(f"sign-in as {self.email} failed: {exc.detail}") from exc
        self.token = str(tokens["access_token"])

    def _headers(self, has_body: bool, auth: bool) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "foresight-simulator"}
        if has_body:
            headers["Content-Type"] = "application/json"
        if auth:
            if self.api_key:
                headers["X-API-Key"] = self.api_key
            elif self.token:
                headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        """Send JSON, return the decoded JSON answer (None when empty); raise ApiError on an
        error answer that retrying cannot fix."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        url = f"{self.base_url}{path}"
        unreachable_since: float | None = None
        backoff = 0.5
        retries = 0
        signed_in_again = False
        while True:
            headers = self._headers(data is not None, auth)
            try:
                status, answer_headers, content = self.transport(
                    method, url, data, headers, self.timeout_s
                )
            except OSError as exc:
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since >= self.give_up_after_s:
                    raise SimulationError(
                        f"the API at {self.base_url} has been unreachable for "
                        f"{self.give_up_after_s:g} s: {exc}"
                    ) from exc
                self.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            unreachable_since = None
            if status in RETRY_STATUSES and retries < self.max_retries:
                retries += 1
                self.retries += 1
                self.sleep(self._retry_after(answer_headers.get("retry-after")))
                continue
            if status == 401 and auth and self.can_sign_in and not signed_in_again:
                signed_in_again = True  # the access token expired: sign in once more
                self.sign_in()
                continue
            if 200 <= status < 300:
                return json.loads(content) if content else None
            raise ApiError(status, method, path, _problem_detail(content))

    def _retry_after(self, value: str | None) -> float:
        try:
            seconds = float(value) if value is not None else 1.0
        except ValueError:
            seconds = 1.0  # an HTTP date: not worth parsing for a simulator
        return min(max(seconds, 0.1), self.max_retry_after_s)

    def list_assets(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = {"limit": "500", **({"cursor": cursor} if cursor else {})}
            page = self.request("GET", "/api/v1/assets?" + urllib.parse.urlencode(query))
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items


# --- the driver ---------------------------------------------------------------------------------


@dataclass
class Stats:
    requests: int = 0
    readings: int = 0
    points: int = 0  # accepted by the server
    rejected: int = 0
    failures: int = 0
    restarts: int = 0
    records: int = 0  # maintenance records written


class Simulator:
    """Register the plant's assets, backfill history, then stream live readings.

    ``duration_s`` counts live streaming (None: until interrupted; 0: stop after the backfill).
    """

    def __init__(
        self,
        client: ApiClient,
        plant: Plant,
        *,
        interval_s: float = 5.0,
        speed: float = 1.0,
        backfill_hours: float = 0.0,
        backfill_step_s: float = 60.0,
        duration_s: float | None = None,
        batch: int = 500,
        status_every_s: float = 30.0,
        echo: Callable[[str], None] = print,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0 or backfill_step_s <= 0 or speed <= 0 or batch < 1:
            raise ValueError("interval, backfill step, speed and batch must be positive")
        self.client = client
        self.plant = plant
        self.interval_s = interval_s
        self.speed = speed
        self.backfill_hours = backfill_hours
        self.backfill_step_s = backfill_step_s
        self.duration_s = duration_s
        self.batch = batch
        self.status_every_s = status_every_s
        self.echo = echo
        self.clock = clock
        self.sleep = sleep
        self.monotonic = monotonic
        self.stats = Stats()
        self.asset_ids: dict[str, str] = {}  # tag → id, when the credential may read assets
        self.open_failures: dict[str, str] = {}  # tag → id of its failure record in progress
        self._last_status = monotonic()
        self._rejection_reported = False

    @property
    def records_maintenance(self) -> bool:
        return not self.client.api_key

    def run(self) -> Stats:
        """Run until the duration elapses or Ctrl-C; print a last status line either way."""
        try:
            self.client.sign_in()
            self.register()
            self.backfill()
            self.stream()
        except KeyboardInterrupt:
            self.echo("simulate: interrupted")
        finally:
            self.status("stopped")
        return self.stats

    # --- set-up ---

    def register(self) -> None:
        """Create the simulated assets that do not exist yet (with their sensors), under the demo
        line if there is one."""
        if self.client.api_key:
            self.echo(
                "simulate: with a device key the assets must already exist (or the tenant must "
                "auto-register them); failures are simulated but no maintenance is recorded"
            )
            return
        existing = {a["tag"]: a for a in self.client.list_assets()}
        line = existing.get(DEMO_LINE)
        created = 0
        for asset in self.plant.assets:
            found = existing.get(asset.tag)
            if found is None:
                found = self._create(asset, line)
                created += 1
            self.asset_ids[asset.tag] = str(found["id"])
        where = f" under {DEMO_LINE}" if line else ""
        self.echo(
            f"simulate: {len(self.plant.assets)} simulated assets{where} ({created} registered now)"
        )

    def _create(self, asset: SimAsset, line: dict[str, Any] | None) -> dict[str, Any]:
        profile = asset.profile
        number = asset.tag.rsplit("-", 1)[-1]
        body: dict[str, Any] = {
            "tag": asset.tag,
            "name": f"{profile.name} {number}",
            "type": asset.kind,
            "criticality": profile.criticality,
            "location": "Plant A / Line 1" if line else "Simulated plant",
            "description": f"Simulated by `foresight simulate` (seed {self.plant.seed}).",
        }
        if line:
            body["parent_id"] = line["id"]
        try:
            created: dict[str, Any] = self.client.request("POST", "/api/v1/assets", body)
        except ApiError as exc:
            if exc.status == 403:
                raise SimulationError(
                    f"cannot register {asset.tag}: this account may not create assets (an "
                    "analyst or admin may); register the assets first or use another account"
                ) from exc
            raise
        for key, unit, kind, low, high in SENSORS[asset.kind]:
            self.client.request(
                "POST",
                f"/api/v1/assets/{created['id']}/sensors",
                {
                    "key": key,
                    "unit": unit,
                    "kind": kind,
                    "expected_min": low,
                    "expected_max": high,
                    "sampling_interval_s": self.interval_s,
                },
            )
        return created

    # --- history ---

    def _newest_stored_ts(self) -> float | None:
        """The newest point of the simulated assets already stored (a previous run)."""
        newest: float | None = None
        for asset_id in list(self.asset_ids.values())[:20]:
            latest = self.client.request("GET", f"/api/v1/assets/{asset_id}/readings/latest")
            for sensor in latest["sensors"]:
                if sensor["ts"]:
                    ts = datetime.fromisoformat(sensor["ts"].replace("Z", "+00:00")).timestamp()
                    newest = ts if newest is None else max(newest, ts)
        return newest

    def backfill(self) -> None:
        """Send ``backfill_hours`` of history, one reading per asset every ``backfill_step_s``,
        resuming after the newest stored point of an earlier run."""
        if self.backfill_hours <= 0:
            return
        step = self.backfill_step_s
        now = self.clock()
        start = math.floor((now - self.backfill_hours * 3600.0) / step) * step
        newest = self._newest_stored_ts() if self.asset_ids else None
        if newest is not None and newest >= start:
            start = (math.floor(newest / step) + 1) * step
        ticks = int((now - start) // step) + 1 if start <= now else 0
        if ticks <= 0:
            self.echo("simulate: history already stored, nothing to backfill")
            return
        self.echo(
            f"simulate: backfilling {ticks * step / 3600:.1f} h of history from {iso(start)} "
            f"({ticks * len(self.plant.assets):,} readings)"
        )
        for body in generate_batches(
            self.plant, start=start, step_s=step, ticks=ticks, batch=self.batch
        ):
            self.send(body)
            self.handle_events()
            self._maybe_status()
        self.status("backfill done")

    # --- live ---

    def stream(self) -> None:
        if self.duration_s is not None and self.duration_s <= 0:
            return
        started = self.monotonic()
        last = self.plant.last_ts
        next_ts = self.clock() if last is None else max(last + self.interval_s, self.clock())
        speed = 1.0  # the gap since the backfill is real time; later ticks run at ``speed``
        self.echo(
            f"simulate: streaming every {self.interval_s:g} s"
            + (f" at {self.speed:g}x simulated speed" if self.speed != 1 else "")
            + (f" for {self.duration_s:g} s" if self.duration_s is not None else " (Ctrl-C stops)")
        )
        while True:
            elapsed = self.monotonic() - started
            if self.duration_s is not None and elapsed >= self.duration_s:
                return
            now = self.clock()
            if next_ts > now:
                wait = next_ts - now
                if self.duration_s is not None:
                    wait = min(wait, self.duration_s - elapsed)
                self.sleep(max(wait, 0.0))
                continue
            if now - next_ts > 60.0:  # far behind (a suspended laptop): skip ahead
                next_ts = now
            readings: list[Reading] = []
            self.plant.tick(next_ts, readings, speed)
            speed = self.speed
            self.send({"readings": readings})
            self.handle_events()
            self._maybe_status()
            next_ts += self.interval_s

    # --- sending ---

    def send(self, body: Body) -> None:
        """POST readings, in requests of at most ``batch`` readings."""
        readings = body["readings"]
        size = self.batch
        if len(readings) > size:
            for i in range(0, len(readings), size):
                self.send({"readings": readings[i : i + size]})
            return
        try:
            result = self.client.request("POST", "/api/v1/readings", body)
        except ApiError as exc:
            if exc.status == 413 and len(readings) > 1:
                # Over the server's body limit: halve the batch from now on, and resend.
                self.batch = (len(readings) + 1) // 2
                self.echo(f"simulate: body too large for the server: batches of {self.batch}")
                self.send(body)
                return
            if exc.status == 422:
                raise SimulationError(f"the server refused every reading: {exc.detail}") from exc
            raise
        self.stats.requests += 1
        self.stats.readings += len(readings)
        self.stats.points += int(result["accepted"])
        rejected = int(result["rejected"])
        if rejected:
            self.stats.rejected += rejected
            if not self._rejection_reported:
                self._rejection_reported = True
                first = result["errors"][0] if result["errors"] else {}
                self.echo(
                    f"simulate: the server rejected {rejected} point(s), e.g. "
                    f"{first.get('asset')}/{first.get('sensor')}: {first.get('reason')}"
                )

    def handle_events(self) -> None:
        for event in self.plant.drain_events():
            if isinstance(event, Failure):
                self.stats.failures += 1
                self.echo(f"simulate: {event.tag} FAILED at {iso(event.ts)}: {event.failure_mode}")
                self._record_failure(event)
            else:
                self.stats.restarts += 1
                self.echo(
                    f"simulate: {event.tag} back in service at {iso(event.ts)} after "
                    f"{event.downtime_hours:.1f} h ({event.action})"
                )
                self._record_restart(event)

    def _record(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            answer: dict[str, Any] = self.client.request(method, path, body)
        except ApiError as exc:
            self.echo(f"simulate: warning: could not record maintenance: {exc}")
            return None
        self.stats.records += 1
        return answer

    def _record_failure(self, event: Failure) -> None:
        asset_id = self.asset_ids.get(event.tag)
        if not self.records_maintenance or asset_id is None:
            return
        record = self._record(
            "POST",
            f"/api/v1/assets/{asset_id}/maintenance",
            {
                "kind": "failure",
                "title": f"{event.tag}: {event.failure_mode}",
                "started_at": iso(event.ts),
                "failure_mode": event.failure_mode,
                "cost": event.cost,
                "notes": "Simulated by foresight simulate; cost is the lost production.",
            },
        )
        if record is not None:
            self.open_failures[event.tag] = str(record["id"])

    def _record_restart(self, event: Restart) -> None:
        asset_id = self.asset_ids.get(event.tag)
        if not self.records_maintenance or asset_id is None:
            return
        failure_id = self.open_failures.pop(event.tag, None)
        if failure_id is not None:
            self._record(
                "PATCH",
                f"/api/v1/maintenance/{failure_id}",
                {
                    "status": "completed",
                    "ended_at": iso(event.ts),
                    "downtime_hours": event.downtime_hours,
                },
            )
        self._record(
            "POST",
            f"/api/v1/assets/{asset_id}/maintenance",
            {
                "kind": "corrective",
                "title": event.action,
                "started_at": iso(event.failed_ts),
                "ended_at": iso(event.ts),
                "failure_mode": event.failure_mode,
                "cost": event.cost,
                "notes": "Simulated by foresight simulate; cost is parts and labour.",
            },
        )

    # --- status ---

    def _maybe_status(self) -> None:
        if self.monotonic() - self._last_status >= self.status_every_s:
            self.status("running")

    def status(self, state: str) -> None:
        self._last_status = self.monotonic()
        s = self.plant
        when = f", last reading {iso(s.last_ts)}" if s.last_ts is not None else ""
        retried = f", {self.client.retries} retried" if self.client.retries else ""
        self.echo(
            f"simulate: {state}: {self.stats.points:,} points sent in {self.stats.requests:,} "
            f"requests{retried}, {self.stats.failures} failures simulated "
            f"({s.down} down now){when}"
        )
