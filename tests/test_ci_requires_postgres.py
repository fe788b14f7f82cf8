"""With CI=true an unreachable PostgreSQL fails the run; locally its half of the suite skips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# A port nothing listens on: the connection is refused at once.
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:9/test?connect_timeout=2"


def _run_smoke(ci: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FORESIGHT_TEST_POSTGRES_URL": UNREACHABLE, "CI": ci}
    env.pop("PYTEST_XDIST_WORKER", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "tests/test_smoke.py::test_login_and_me", "-rs"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("ci", ["true", ""])
def test_unreachable_postgres(ci: str) -> None:
    result = _run_smoke(ci)
    output = result.stdout + result.stderr
    if ci:
        assert result.returncode != 0, output
        assert "CI=true: PostgreSQL is required" in output
    else:
        assert result.returncode == 0, output
        assert "1 passed, 1 skipped" in output
