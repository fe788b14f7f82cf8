"""SQLAlchemy base, portable column types and engine/session factories for SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, MetaData, create_engine, event, exc
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

from foresight.kit.time import as_utc, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


class IdMixin:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


def _same_as_created(context: Any) -> Any:
    # A new row's updated_at equals its created_at exactly (not a second clock reading).
    return context.get_current_parameters()["created_at"]


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=_same_as_created, onupdate=utcnow)


#: Ids per ``IN (…)`` list: one statement's parameters stay well inside every driver's limits.
IN_LIST_MAX = 500


def uuid_literal(dialect: str, value: uuid.UUID) -> str:
    """``value`` as an SQL literal of the backend's UUID column (PostgreSQL: a cast; SQLite:
    the stored hex), for statements that inline many ids rather than bind one parameter each.
    Only a :class:`uuid.UUID` is accepted, so nothing but hex digits and dashes is inlined."""
    if not isinstance(value, uuid.UUID):
        raise TypeError(f"not a UUID: {value!r}")
    return f"CAST('{value}' AS UUID)" if dialect == "postgresql" else f"'{value.hex}'"


def chunks(items: Sequence[Any], size: int = IN_LIST_MAX) -> Iterable[Sequence[Any]]:
    """``items`` in consecutive slices of at most ``size`` (for ``IN`` lists of bounded length)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _sqlite_on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy, not pysqlite, decide where transactions begin (see _sqlite_on_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


#: How long a statement (or a writer, for the write lock) waits for a lock before it fails.
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: The write lock is polled at most this far apart (the first retries sooner).
SQLITE_LOCK_POLL_S = 0.002


def _sqlite_on_begin(conn: Any) -> None:
    # Writers take the write lock up front (BEGIN IMMEDIATE): a deferred transaction that reads
    # and then writes fails with SQLITE_BUSY under concurrency instead of waiting its turn.
    mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
    if mode == "IMMEDIATE":
        begin_immediate(conn.connection.dbapi_connection)
    else:
        conn.exec_driver_sql(f"BEGIN {mode}")


def begin_immediate(raw: Any, timeout_s: float = SQLITE_BUSY_TIMEOUT_MS / 1000) -> None:
    """``BEGIN IMMEDIATE``, retried every millisecond or two while another writer holds the lock.

    SQLite's own busy handler sleeps ever longer between tries (up to 100 ms at a time), so a
    writer that waits behind another that writes again at once can miss every gap between its
    transactions: with a writer committing every 40 ms, waits of 0.1–0.5 s at the median and
    seconds at worst, against at most one transaction's length polled like this (the detection
    child's alert writes behind the ingest writer, an API write behind either). ``raw`` is the
    sqlite3 connection."""
    raw.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + timeout_s
        delay = 0.0002
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 1.5, SQLITE_LOCK_POLL_S)
    finally:
        raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


#: A pooled PostgreSQL connection idle for longer than this is pinged before it is handed out
#: (one round trip); one back in the pool more recently is handed out as is. A server restart
#: or a dropped connection is thus caught before use after any pause, while a busy pool pays
#: nothing a request (``pool_pre_ping`` would cost every transaction a round trip: two of a
#: scored prediction's 25). A connection that breaks within this window fails the statement
#: it runs; SQLAlchemy then invalidates the pool, and the next checkouts connect afresh.
PING_AFTER_IDLE_S = 2.0


def _stamp_idle(_dbapi_connection: Any, record: ConnectionPoolEntry, *_: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(engine: Engine) -> Any:
    def checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is not None and time.monotonic() - since <= PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            # The pool discards this connection and checks out (or opens) another.
            raise exc.DisconnectionError(f"pooled connection failed its ping: {error}") from error

    return checkout


def create_db_engine(url: str, *, echo: bool = False, pool_size: int = 10) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30}
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    engine = create_engine(url, echo=echo, pool_size=pool_size, max_overflow=pool_size)
    event.listen(engine, "connect", _stamp_idle)  # new: no ping needed
    event.listen(engine, "checkin", _stamp_idle)
    event.listen(engine, "checkout", _ping_if_idle(engine))
    return engine


class Database:
    """An engine plus session factories; readers and writers differ only on SQLite.

    A *snapshot* reader sees the whole database as of its first statement, for work that reads
    in many statements and must not mix two states (scoring reads features, events and health
    signals in a dozen): on PostgreSQL a REPEATABLE READ transaction (read-only work cannot
    fail to serialize there), on SQLite any read transaction already is one.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._read = sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)
        self._snapshot = (
            sessionmaker(
                bind=engine.execution_options(isolation_level="REPEATABLE READ"),
                expire_on_commit=False,
                autoflush=False,
            )
            if engine.dialect.name == "postgresql"
            else self._read
        )
        # Writers take SQLite's write lock at BEGIN; PostgreSQL needs no such thing.
        write_bind = (
            engine.execution_options(sqlite_begin="IMMEDIATE")
            if engine.dialect.name == "sqlite"
            else engine
        )
        self._write = sessionmaker(bind=write_bind, expire_on_commit=False, autoflush=False)

    @classmethod
    def from_url(cls, url: str, *, echo: bool = False, pool_size: int = 10) -> Database:
        return cls(create_db_engine(url, echo=echo, pool_size=pool_size))

    def new_session(self, *, write: bool, snapshot: bool = False) -> Session:
        if write and snapshot:
            raise ValueError("a snapshot transaction only reads")
        if snapshot:
            return self._snapshot()
        return (self._write if write else self._read)()

    @contextmanager
    def transaction(self, *, write: bool = True, snapshot: bool = False) -> Iterator[Session]:
        """A unit of work: commit on success, roll back on any error (the edge commits).
        ``snapshot`` (readers only): every statement sees the same state of the database."""
        session = self.new_session(write=write, snapshot=snapshot)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
