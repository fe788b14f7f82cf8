"""Database sessions and pooled connections.

Snapshot readers (``Database.transaction(snapshot=True)``): every statement sees the state of
the first one, on both backends; a plain reader on PostgreSQL sees each statement's own."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from foresight.kit import db as kit_db
from foresight.kit.db import Database
from foresight.models import Tenant
from tests.factories import Factory


def _rename_elsewhere(db: Database, tenant_id: object, name: str) -> None:
    with db.transaction() as writer:
        writer.execute(update(Tenant).where(Tenant.id == tenant_id).values(name=name))


def test_snapshot_reader_sees_one_state(db: Database, factory: Factory) -> None:
    tenant = factory.tenant("before")
    with db.transaction(write=False, snapshot=True) as reader:
        first = reader.scalar(select(Tenant.name).where(Tenant.id == tenant.id))
        # (SQLite in WAL mode: the writer commits beside the reader, which keeps its state.)
        _rename_elsewhere(db, tenant.id, "after")
        again = reader.scalar(select(Tenant.name).where(Tenant.id == tenant.id))
    assert (first, again) == ("before", "before")
    with db.transaction(write=False) as later:
        assert later.scalar(select(Tenant.name).where(Tenant.id == tenant.id)) == "after"


def test_plain_reader_on_postgresql_sees_each_commit(db: Database, factory: Factory) -> None:
    """The contrast that makes the test above mean something: READ COMMITTED moves on."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's read transactions are snapshots already")
    tenant = factory.tenant("before")
    with db.transaction(write=False) as reader:
        first = reader.scalar(select(Tenant.name).where(Tenant.id == tenant.id))
        _rename_elsewhere(db, tenant.id, "after")
        again = reader.scalar(select(Tenant.name).where(Tenant.id == tenant.id))
    assert (first, again) == ("before", "after")


def test_snapshot_is_for_readers_only(db: Database) -> None:
    with pytest.raises(ValueError, match="only reads"):
        db.new_session(write=True, snapshot=True)


def test_snapshot_level_does_not_stick_to_pooled_connections(db: Database) -> None:
    """A connection that served a snapshot goes back to the pool at the default level."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL isolation levels")
    with db.transaction(write=False, snapshot=True) as reader:
        level = reader.connection().get_isolation_level()
        assert level == "REPEATABLE READ"
    for _ in range(3):  # whichever pooled connection comes back
        with db.transaction(write=False) as plain:
            assert plain.connection().get_isolation_level() == "READ COMMITTED"


# --- pooled connections: pinged after a pause, not on every checkout ------------------------


def _backend_pid(db: Database) -> int:
    with db.transaction(write=False) as session:
        return int(session.scalar(text("SELECT pg_backend_pid()")))


def _terminate(pid: int, db: Database) -> None:
    admin = create_engine(db.engine.url, poolclass=NullPool)
    with admin.begin() as conn:
        assert conn.scalar(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    admin.dispose()


@pytest.fixture
def pg_db(db: Database) -> Database:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL connections")
    return db


def test_connection_dropped_while_idle_is_replaced_before_use(
    pg_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = _backend_pid(pg_db)
    _terminate(pid, pg_db)
    monkeypatch.setattr(kit_db, "PING_AFTER_IDLE_S", 0.0)  # every checkout counts as after a pause
    assert _backend_pid(pg_db) != pid  # pinged, discarded, a new connection: no error


def test_busy_pool_is_not_pinged_and_recovers_from_a_drop_by_itself(
    pg_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings: list[object] = []
    real_ping = pg_db.engine.dialect.do_ping
    monkeypatch.setattr(pg_db.engine.dialect, "do_ping", lambda c: pings.append(c) or real_ping(c))
    monkeypatch.setattr(kit_db, "PING_AFTER_IDLE_S", 3600.0)
    pid = _backend_pid(pg_db)
    for _ in range(5):
        _backend_pid(pg_db)
    assert pings == []  # used a moment ago: handed out as is
    _terminate(pid, pg_db)
    with pytest.raises(OperationalError):  # the one statement on the dead connection fails...
        for _ in range(5):  # (whichever pooled connection is handed out first)
            _backend_pid(pg_db)
    assert _backend_pid(pg_db) != pid  # ...and the pool reconnects by itself


# --- SQLite's write lock --------------------------------------------------------------------


def _hold_write_lock_repeatedly(path: str, stop: Any, commits: Any, gap_s: float) -> None:
    """Another process's writer: takes the lock, holds it 30 ms, commits, and soon again."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=30000")
    while not stop.is_set():
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO held (x) VALUES (1)")
        until = time.perf_counter() + 0.030
        while time.perf_counter() < until:
            pass
        conn.execute("COMMIT")
        with commits.get_lock():
            commits.value += 1
        time.sleep(gap_s)


def test_a_writer_gets_the_sqlite_lock_between_another_writers_transactions(
    tmp_path: Path,
) -> None:
    """SQLite's own busy handler backs off to 100 ms sleeps and keeps missing the few
    milliseconds between a busy writer's transactions (the ingest writer's, say); a writer here
    takes the lock in one of the first gaps, and its transaction commits."""
    import multiprocessing

    path = tmp_path / "lock.db"
    database = Database.from_url(f"sqlite:///{path}")
    try:
        with database.engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE held (x INTEGER)")
        ctx = multiprocessing.get_context("spawn")
        stop, commits = ctx.Event(), ctx.Value("i", 0)
        holder = ctx.Process(
            target=_hold_write_lock_repeatedly, args=(str(path), stop, commits, 0.004)
        )
        holder.start()
        try:
            while commits.value < 3:  # the other writer is in its loop
                time.sleep(0.01)
            waited = []
            pause = random.Random(4)
            for _ in range(10):
                before = commits.value
                with database.transaction() as session:
                    session.execute(text("INSERT INTO held (x) VALUES (2)"))
                waited.append(commits.value - before)
                while commits.value < before + 2:  # the other writer is back in its loop
                    time.sleep(0.005)
                time.sleep(pause.uniform(0.0, 0.03))  # and somewhere in a transaction
            # Behind a transaction or so of the other writer each time (SQLite's own handler:
            # 18-21 of them, in a few of the ten), whatever the machine's speed.
            assert max(waited) <= 4, waited
        finally:
            stop.set()
            holder.join(timeout=30)
        with database.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM held WHERE x = 2").scalar() == 10
            # The usual busy timeout is back for every other statement.
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    finally:
        database.dispose()


def test_a_held_sqlite_lock_fails_the_writer_after_the_timeout(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "lock.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA journal_mode=WAL")
    other.execute("BEGIN IMMEDIATE")
    mine = sqlite3.connect(path, isolation_level=None)
    mine.execute("PRAGMA busy_timeout=30000")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        kit_db.begin_immediate(mine, timeout_s=0.2)
    assert mine.execute("PRAGMA busy_timeout").fetchone() == (30_000,)
    other.execute("COMMIT")
    kit_db.begin_immediate(mine, timeout_s=0.2)  # free: taken at once
    mine.execute("COMMIT")
    other.close()
    mine.close()
