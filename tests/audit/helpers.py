"""Raw database access for the tampering tests: what an attacker with DB credentials can do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, text

from foresight.kit.db import Database


@contextmanager
def attacker(db: Database) -> Iterator[Connection]:
    """A raw connection with the append-only triggers on audit_log switched off.

    PostgreSQL: disabled and re-enabled inside one transaction (the database is shared with later
    tests; if the block fails, the rollback undoes the DISABLE too). SQLite: the triggers are
    dropped (each test has its own database file).
    """
    with db.engine.begin() as conn:
        if db.engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
            yield conn
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
            conn.execute(text("DROP TRIGGER audit_log_no_delete"))
            yield conn
