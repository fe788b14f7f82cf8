"""`foresight bench predict` runs end to end at tiny sizes and prints its figures (no timing
assertions: the figures are for people, the targets are checked by reading them)."""

from __future__ import annotations

from typer.testing import CliRunner

from foresight.cli import app


def test_bench_predict_runs_and_prints_the_figures() -> None:
    args = "bench predict --assets 12 --days 45 --sensors 2 --train-assets 20 --repeats 1"
    result = CliRunner().invoke(app, [*args.split(), "--no-http"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "model-based predictions" in out and "FALLBACK" not in out
    assert "service.predict, 12 assets, explanations" in out
    assert "service.predict, 12 assets, no explanations" in out
    assert "≤ 1 s for 1,000" in out
