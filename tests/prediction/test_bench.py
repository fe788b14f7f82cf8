"""`foresight bench predict` runs end to end at tiny sizes and prints its figures (no timing
assertions: the figures are for people, the targets are checked by reading them)."""

from __future__ import annotations

import re

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
    assert re.search(r"\d+ trees, \d+ in the explained classifier, \d+ in the RUL model", out)


def test_the_table_shows_single_requests_cold_and_warm_and_the_batches() -> None:
    from foresight.prediction.bench import _predict_table

    http = {
        "fallback": False,
        "single": {"cold": [10.0, 12.0, 30.0], "warm": [5.0, 6.0, 7.0]},
        "batch": {"explain": [1.5, 0.9, 0.8], "plain": [0.7, 0.6, 0.65]},
        "batch_assets": 1000,
    }
    lines = list(_predict_table("sqlite", [], http, 3, 3))
    cold = next(line for line in lines if "fresh server, nothing kept" in line)
    warm = next(line for line in lines if "after the fleet's scoring" in line)
    assert cold.endswith("FAIL |") and warm.endswith("pass |")  # p99 30 vs 7 ms against 20
    batch = next(line for line in lines if "1000 assets, explanations" in line)
    assert "0.900 (0.800–1.500)" in batch and batch.endswith("pass |")
