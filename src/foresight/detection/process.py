"""Detection in its own processes, partitioned by asset.

Ingest and detection each cost a few microseconds of interpreter time per point; in one process
they share one interpreter lock, so detection halves ingest and bursts queue up behind it. Here
the ingest process hands each committed write's new points to ``processes`` child processes
(``FORESIGHT_DETECTION_PROCESSES``), every asset always to the same child, so each child holds
whole series: rule windows, hold timers and anomaly baselines see every point of an asset, in
order. Each child runs the ordinary :class:`~foresight.detection.worker.DetectionWorker` on its
own database connection: alerts and anomaly scores are written there, with the notification
outbox in the same transaction; alert and anomaly events come back to the parent, which pushes
them to live updates.

* **Transport**: a pipe per child; points travel as raw numpy columns (24 bytes a point), events
  come back pickled. Children are forked from a preloaded fork server, so a start costs tens of
  milliseconds, and none inherits the parent's threads or connections.
* **Backpressure**: a child evaluating more than ``max_pending_points`` behind makes the writer
  wait, as in the threaded worker (the API answers 503 + Retry-After).
* **Crash**: a child that dies is started again and is sent every batch it had not confirmed, so
  a crash costs a re-evaluation, never a point (the engine rebuilds windows from the store; the
  one-active-alert-per-source index keeps a repeat from opening a second alert).
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import multiprocessing.connection
import signal
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from foresight.config import Settings
from foresight.detection.anomaly import MinuteScore
from foresight.detection.engine import AlertHook, AlertListener
from foresight.detection.worker import DetectionCollector
from foresight.kit.db import Database
from foresight.kit.logging import get_logger
from foresight.kit.memory import keep_freed_memory
from foresight.models import Alert, Sensor
from foresight.timeseries.store import Columns, WriteResult

log = get_logger("foresight.detection")

Publish = Callable[[uuid.UUID, uuid.UUID | None, Mapping[str, Any]], None]

_POINTS = b"P"
_RELOAD = b"R"
_RESET = b"X"
_STOP = b"S"
_STAGES = ("rules", "anomaly", "alerts")


@dataclass(frozen=True)
class EventMakers:
    """How alert changes and anomaly minutes become live-update events. The layer above
    (which owns the event format) gives module-level functions, so a child can receive them."""

    alert: Callable[[str, Alert], Mapping[str, Any]]
    anomaly: Callable[[MinuteScore], Mapping[str, Any]]


@dataclass(frozen=True)
class ChildConfig:
    """What a child needs to build its engine (sent to it pickled)."""

    database_url: str
    reload_interval_s: float
    anomaly_enabled: bool
    hooks: tuple[AlertHook, ...] = ()
    events: EventMakers | None = None
    log_level: str = "INFO"
    log_json: bool = True
    malloc_keep_mb: int = 0


def encode(new: Columns) -> bytes:
    n = len(new)
    return b"".join(
        (
            _POINTS,
            n.to_bytes(8, "little"),
            np.ascontiguousarray(new.series_id, np.int64).tobytes(),
            np.ascontiguousarray(new.ts_ms, np.int64).tobytes(),
            np.ascontiguousarray(new.value, np.float64).tobytes(),
        )
    )


def decode(data: bytes) -> Columns:
    n = int.from_bytes(data[1:9], "little")
    buf = memoryview(data)[9:]
    return Columns(
        np.frombuffer(buf, np.int64, n, 0).copy(),
        np.frombuffer(buf, np.int64, n, 8 * n).copy(),
        np.frombuffer(buf, np.float64, n, 16 * n).copy(),
    )


def child_main(
    conn_in: multiprocessing.connection.Connection,
    conn_out: multiprocessing.connection.Connection,
    config: ChildConfig,
) -> None:
    """A detection child: evaluates what arrives on ``conn_in`` until told to stop (or EOF)."""
    # Imported here: the fork server preloads this module, not the whole engine's state.
    from foresight.detection.anomaly_stage import AnomalyStage
    from foresight.detection.engine import RuleEngine
    from foresight.detection.worker import DetectionWorker
    from foresight.kit.logging import configure_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us (after its last write)
    keep_freed_memory(config.malloc_keep_mb)
    configure_logging(config.log_level, json=config.log_json)
    db = Database.from_url(config.database_url)
    lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with lock:
            conn_out.send(message)

    events = config.events

    def on_alert(kind: str, alert: Alert) -> None:
        if events is not None:
            send(("event", alert.tenant_id, alert.asset_id, events.alert(kind, alert)))

    def on_anomaly(score: MinuteScore) -> None:
        if events is not None:
            send(("event", score.tenant_id, score.asset_id, events.anomaly(score)))

    engine = RuleEngine(
        db,
        reload_interval_s=config.reload_interval_s,
        hooks=list(config.hooks),
        listeners=[on_alert],
        anomaly=AnomalyStage() if config.anomaly_enabled else None,
    )
    engine.anomaly_listeners.append(on_anomaly)
    reported = {"points": 0, **dict.fromkeys(_STAGES, 0.0)}

    def on_processed(points: int) -> None:
        # Counters as deltas, so the parent's totals survive a child being replaced.
        stages = {k: engine.stage_seconds[k] - reported[k] for k in _STAGES}
        evaluated = engine.points_total - int(reported["points"])
        reported.update(engine.stage_seconds, points=engine.points_total)
        send(("done", points, evaluated, stages))

    # The parent bounds what is in flight; the child queues whatever it was sent.
    worker = DetectionWorker(engine, max_pending_points=1 << 62, on_processed=on_processed)
    worker.start()
    # The imports' objects live as long as the child: kept out of full collections, whose
    # pauses (over 100 ms on the whole engine) would land on an alert's latency.
    gc.collect()
    gc.freeze()
    send(("ready",))
    try:
        while True:
            try:
                data = conn_in.recv_bytes()
            except (EOFError, OSError):
                break  # the parent is gone: finish what is queued and exit
            tag = data[:1]
            if tag == _POINTS:
                worker.submit(decode(data))
            elif tag == _RELOAD:
                engine.invalidate()
            elif tag == _RESET:
                engine.request_reset()
            elif tag == _STOP:
                break
    finally:
        worker.stop()
        db.dispose()
        send(("stopped",))


@dataclass
class _Child:
    index: int
    process: Any = None
    conn: multiprocessing.connection.Connection | None = None
    # Batches sent and not confirmed yet, oldest first (resent to a replacement child).
    unacked: deque[tuple[int, bytes]] = field(default_factory=deque)
    pending_points: int = 0
    acked_partial: int = 0
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    ready: threading.Event = field(default_factory=threading.Event)
    restarts: int = 0


_context: Any = None


def _mp_context() -> Any:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(["foresight.detection.process"])
    return _context


class DetectionProcesses:
    """Detection in ``processes`` children; the same interface as the threaded worker."""

    @classmethod
    def from_settings(
        cls,
        db: Database,
        settings: Settings,
        *,
        hooks: list[AlertHook] | None = None,
        publish: Publish | None = None,
        events: EventMakers | None = None,
        registry: CollectorRegistry | None = None,
    ) -> DetectionProcesses:
        config = ChildConfig(
            database_url=str(db.engine.url.render_as_string(hide_password=False)),
            reload_interval_s=settings.detection_reload_interval_s,
            anomaly_enabled=settings.anomaly_enabled,
            hooks=tuple(hooks or ()),
            events=events if publish is not None else None,
            log_level=settings.log_level,
            log_json=settings.log_json,
            malloc_keep_mb=settings.malloc_keep_mb,
        )
        return cls(
            db,
            config,
            processes=settings.detection_processes,
            max_pending_points=settings.detection_max_pending_points,
            publish=publish,
            registry=registry,
        )

    def __init__(
        self,
        db: Database,
        config: ChildConfig,
        *,
        processes: int = 1,
        max_pending_points: int = 2_000_000,
        publish: Publish | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.db = db
        self.config = config
        self.max_pending_points = max_pending_points
        self.publish = publish
        self._children = [_Child(i) for i in range(processes)]
        self._cond = threading.Condition()
        self._stopping = False
        self._started = False
        self._asset_of: dict[int, int] = {}  # series id → partition
        self.points_total = 0
        self.stage_seconds = dict.fromkeys(_STAGES, 0.0)
        if registry is not None:
            registry.register(DetectionCollector(self, restarts=lambda: self.restarts))

    @property
    def processes(self) -> int:
        return len(self._children)

    @property
    def backlog_points(self) -> int:
        return sum(child.pending_points for child in self._children)

    @property
    def restarts(self) -> int:
        return sum(child.restarts for child in self._children)

    def pids(self) -> list[int | None]:
        return [c.process.pid if c.process is not None else None for c in self._children]

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        if self._started:
            return
        self._stopping = False
        self._started = True
        for child in self._children:
            self._spawn(child)
        deadline = time.monotonic() + timeout
        for child in self._children:
            if not child.ready.wait(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"detection process {child.index} did not start")

    def _spawn(self, child: _Child) -> None:
        ctx = _mp_context()
        parent_in, child_out = ctx.Pipe(duplex=False)
        child_in, parent_out = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=child_main,
            args=(child_in, child_out, self.config),
            name=f"foresight-detection-{child.index}",
            daemon=True,
        )
        child.ready.clear()
        process.start()
        child_in.close()
        child_out.close()
        with child.send_lock:
            child.process, child.conn = process, parent_out
            # Whatever the last incarnation did not confirm goes again, in order.
            for _points, data in list(child.unacked):
                parent_out.send_bytes(data)
        threading.Thread(
            target=self._read, args=(child, process, parent_in), name="detection-read", daemon=True
        ).start()

    def _read(
        self, child: _Child, process: Any, conn: multiprocessing.connection.Connection
    ) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "done":
                self._acknowledge(child, int(message[1]), int(message[2]), message[3])
            elif kind == "event":
                if self.publish is not None:
                    try:
                        self.publish(message[1], message[2], message[3])
                    except Exception:  # noqa: BLE001 - live updates never stop detection
                        log.exception("detection_event_publish_failed")
            elif kind == "ready":
                child.ready.set()
            elif kind == "stopped":
                break
        conn.close()
        process.join(timeout=5)
        if self._stopping or child.process is not process:
            return
        log.error(
            "detection_process_died",
            index=child.index,
            exitcode=process.exitcode,
            unconfirmed_points=child.pending_points,
        )
        child.restarts += 1
        time.sleep(min(5.0, 0.2 * child.restarts))  # do not spin if it dies at once every time
        if not self._stopping:
            self._spawn(child)

    def _acknowledge(
        self, child: _Child, points: int, evaluated: int, stages: Mapping[str, float]
    ) -> None:
        with self._cond:
            child.acked_partial += points
            while child.unacked and child.unacked[0][0] <= child.acked_partial:
                n, _data = child.unacked.popleft()
                child.acked_partial -= n
                child.pending_points -= n
            self.points_total += evaluated
            for stage in _STAGES:
                self.stage_seconds[stage] += float(stages.get(stage, 0.0))
            self._cond.notify_all()

    def stop(self, timeout: float = 60.0) -> None:
        if not self._started:
            return
        self.drain(timeout)
        self._stopping = True
        for child in self._children:
            with child.send_lock:
                if child.conn is not None:
                    with contextlib.suppress(OSError):
                        child.conn.send_bytes(_STOP)
        for child in self._children:
            if child.process is not None:
                child.process.join(timeout)
                if child.process.is_alive():
                    child.process.kill()
                    child.process.join(5)
            if child.conn is not None:
                child.conn.close()
            child.process, child.conn = None, None
        self._started = False

    # --- points ---------------------------------------------------------------------------------

    def observe(self, write: WriteResult) -> None:
        """Pipeline observer: hand a committed write's new points to the children."""
        if write.new is not None and len(write.new):
            self.submit(write.new)

    def submit(self, new: Columns) -> None:
        if len(self._children) == 1:
            self._send(self._children[0], new)
            return
        partition = self._partitions(new.series_id)
        for index in np.unique(partition).tolist():
            mask = partition == index
            part = Columns(new.series_id[mask], new.ts_ms[mask], new.value[mask])
            self._send(self._children[int(index)], part)

    def _send(self, child: _Child, new: Columns) -> None:
        data = encode(new)
        n = len(new)
        with self._cond:
            while child.pending_points >= self.max_pending_points and not self._stopping:
                self._cond.wait(0.5)
            child.pending_points += n
        with child.send_lock:
            child.unacked.append((n, data))
            if child.conn is not None:
                # If the child died, its replacement gets this batch from `unacked`.
                with contextlib.suppress(OSError):
                    child.conn.send_bytes(data)

    def _partitions(self, series_id: np.ndarray[Any, np.dtype[np.int64]]) -> Any:
        unique, inverse = np.unique(series_id, return_inverse=True)
        missing = [int(s) for s in unique.tolist() if int(s) not in self._asset_of]
        if missing:
            with self.db.transaction(write=False) as session:
                rows = session.execute(
                    select(Sensor.series_id, Sensor.asset_id).where(Sensor.series_id.in_(missing))
                ).all()
            n = len(self._children)
            for series, asset in rows:
                self._asset_of[int(series)] = zlib.crc32(asset.bytes) % n
        parts = np.array([self._asset_of.get(int(s), 0) for s in unique.tolist()], np.int64)
        return parts[inverse]

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until the children have evaluated everything submitted (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while any(child.pending_points for child in self._children):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def reload(self) -> None:
        """Have every child re-read the rules before its next evaluation."""
        self._tell(_RELOAD)

    def reset(self) -> None:
        """Have every child forget per-series state before its next evaluation."""
        self._tell(_RESET)

    def _tell(self, message: bytes) -> None:
        for child in self._children:
            with child.send_lock:
                if child.conn is not None:
                    with contextlib.suppress(OSError):
                        child.conn.send_bytes(message)


class Detection(Protocol):
    """What the pipeline, the API and the CLI need of detection, threaded or in processes."""

    @property
    def backlog_points(self) -> int: ...

    def observe(self, write: WriteResult) -> None: ...

    def submit(self, new: Columns) -> None: ...

    def drain(self, timeout: float = 30.0) -> bool: ...

    def reload(self) -> None: ...

    def reset(self) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


def detection_from_settings(
    db: Database,
    settings: Settings,
    *,
    hooks: list[AlertHook] | None = None,
    publish: Publish | None = None,
    events: EventMakers | None = None,
    registry: CollectorRegistry | None = None,
) -> Detection:
    """Detection as the settings say: in child processes (default) or in a thread. Alert
    changes and anomaly minutes go to ``publish`` as the events ``events`` makes of them."""
    if settings.detection_processes >= 1:
        return DetectionProcesses.from_settings(
            db, settings, hooks=hooks, publish=publish, events=events, registry=registry
        )
    from foresight.detection.worker import DetectionWorker

    listeners: list[AlertListener] = []
    anomaly_listeners: list[Callable[[MinuteScore], None]] = []
    if publish is not None and events is not None:
        tell, make = publish, events

        def on_alert(kind: str, alert: Alert) -> None:
            tell(alert.tenant_id, alert.asset_id, make.alert(kind, alert))

        def on_anomaly(score: MinuteScore) -> None:
            tell(score.tenant_id, score.asset_id, make.anomaly(score))

        listeners.append(on_alert)
        anomaly_listeners.append(on_anomaly)
    return DetectionWorker.from_settings(
        db,
        settings,
        hooks=hooks,
        listeners=listeners,
        anomaly_listeners=anomaly_listeners,
        registry=registry,
    )
