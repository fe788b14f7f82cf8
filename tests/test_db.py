"""Database sessions and pooled connections.

Snapshot readers (``Database.transaction(snapshot=True)``): every statement sees the state of
the first one, on both backends; a plain reader on PostgreSQL sees each statement's own."""

from __future__ import annotations

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
