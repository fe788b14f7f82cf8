"""Test fixtures: every test runs against SQLite and against PostgreSQL.

SQLite: a copy of a database migrated once per session (so migrations are tested too).
PostgreSQL: one database per xdist worker, migrated once, truncated after each test.
With CI=true an unreachable PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from foresight.config import Settings
from foresight.kit import migrate
from foresight.kit.db import Database
from foresight.models import Base
from foresight.web.app import create_app
from tests.factories import Factory

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_URL = os.environ.get(
    "FORESIGHT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = ["sqlite", "postgresql"]


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("FORESIGHT_ENV", "test")


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


def _pg_unavailable(reason: str) -> None:
    message = f"PostgreSQL at {PG_URL} is unreachable: {reason}"
    if IN_CI:
        pytest.fail(message + " (CI=true: PostgreSQL is required)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, migrated database for this xdist worker on the shared server."""
    admin_url = make_url(PG_URL)
    name = f"foresight_test_{_worker()}_{uuid.uuid4().hex[:8]}"
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server counts
        _pg_unavailable(str(exc).splitlines()[0])
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> str:
    if backend == "sqlite":
        path = tmp_path / "foresight.db"
        shutil.copyfile(sqlite_template, path)
        return f"sqlite:///{path}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database.from_url(database_url, pool_size=5)
    try:
        yield database
    finally:
        if database.engine.dialect.name == "postgresql":
            tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            # TRUNCATE fires no row triggers, so the append-only audit log empties too.
            with database.engine.begin() as conn:
                conn.execute(text(f"TRUNCATE {tables} CASCADE"))
        database.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        database_url=database_url,
        data_dir=tmp_path,
        secret_key="test-secret-key-that-is-long-enough-0123456789",
        max_body_bytes=64 * 1024,
        log_json=False,
        # Detection in a thread, so tests can reach the engine; tests/detection/test_processes.py
        # covers the default (child processes).
        detection_processes=0,
        # No scoring or training behind the tests' backs; tests/prediction/test_schedule.py
        # turns the schedules on where it means to.
        schedule_embedded=False,
    )


@pytest.fixture
def client(settings: Settings, db: Database) -> Iterator[TestClient]:
    app = create_app(settings, db)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def factory(db: Database, settings: Settings) -> Factory:
    return Factory(db, settings)
