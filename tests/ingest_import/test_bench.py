"""`foresight bench import` runs end to end (its figures are reported, never asserted)."""

from __future__ import annotations

from typer.testing import CliRunner

from foresight.cli import app


def test_bench_import_prints_throughput_and_memory() -> None:
    result = CliRunner().invoke(app, ["bench", "import", "--points", "20000"])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "20,000 points" in result.stdout
    assert "stored 20,000 points" in result.stdout
    assert "points/s" in result.stdout and "peak RSS" in result.stdout
