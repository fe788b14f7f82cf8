"""Fixtures of the fault tests: a process registry torn down after each test, own services."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import PostgresCluster, Processes


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """Processes the test starts; all of them (their process groups) are stopped at teardown."""
    registry = Processes(tmp_path)
    try:
        yield registry
    finally:
        registry.stop_all()


@pytest.fixture
def pg_cluster() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster of this test's own (initdb into a temporary directory)."""
    cluster = PostgresCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
