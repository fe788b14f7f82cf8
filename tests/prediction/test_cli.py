"""`foresight train`, `foresight predict --format json|csv` and `foresight models …` on a
simulated fleet."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from foresight.cli import app
from foresight.config import get_settings
from foresight.kit.db import Database
from foresight.prediction import service
from tests.factories import Factory
from tests.prediction.fleet_sim import FEATURES, TRAINING, simulate

COLUMNS = [
    "asset",
    "as_of",
    "failure_probability_7d",
    "failure_probability_14d",
    "failure_probability_30d",
    "rul_days",
    "rul_low",
    "rul_high",
    "health_score",
    "status",
    "top_factors",
]


@pytest.fixture
def cli(database_url: str, db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("FORESIGHT_DATABASE_URL", database_url)
    monkeypatch.setattr(service, "DEFAULT_FEATURE_CONFIG", FEATURES)
    monkeypatch.setattr(service, "DEFAULT_TRAIN_CONFIG", TRAINING)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def invoke(runner: CliRunner, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_columns_are_the_documented_ones() -> None:
    assert list(service.CLI_COLUMNS) == COLUMNS


def test_predict_falls_back_before_training_and_train_refuses_without_failures(
    cli: CliRunner, db: Database, factory: Factory
) -> None:
    tenant = factory.tenant()
    simulate(db, tenant.id, assets=2, days=10)  # failures too few to train
    code, _, stderr = invoke(cli, "train", "--tenant", tenant.name)
    assert code == 1 and "not enough data" in stderr
    code, stdout, _ = invoke(cli, "predict", "--tenant", tenant.name, "--format", "json")
    assert code == 0
    rows = json.loads(stdout)
    assert [r["asset"] for r in rows] == ["P-01", "P-02"]
    assert all(list(r) == COLUMNS for r in rows)
    assert rows[0]["top_factors"][0]["feature"] == "fallback"
    assert "no champion" in rows[0]["top_factors"][0]["text"]
    code, _, stderr = invoke(cli, "predict", "--tenant", tenant.name, "--asset", "NOPE")
    assert code == 1 and "NOPE" in stderr
    code, _, _ = invoke(cli, "predict", "--tenant", tenant.name, "--format", "xml")
    assert code == 2


def test_train_predict_and_models(cli: CliRunner, db: Database, factory: Factory) -> None:
    tenant = factory.tenant()
    simulate(db, tenant.id)
    code, stdout, stderr = invoke(cli, "train", "--tenant", tenant.name, "--max-rul-days", "60")
    assert code == 0, stderr
    assert "model version 1: champion" in stdout and "rul:" in stdout and "rmse" in stdout
    code, stdout, stderr = invoke(cli, "train", "--tenant", tenant.name)
    assert code == 0, stderr
    assert "model version 2:" in stdout
    assert ("champion" in stdout) or ("challenger" in stdout)

    args = ("predict", "--tenant", tenant.name, "--asset", "P-02", "--asset", "P-01")
    code, stdout, stderr = invoke(cli, *args, "--format", "csv")
    assert code == 0, stderr
    reader = csv.DictReader(io.StringIO(stdout))
    assert reader.fieldnames == COLUMNS
    rows = list(reader)
    assert [r["asset"] for r in rows] == ["P-02", "P-01"]
    for r in rows:
        assert r["as_of"].startswith("2026-04-10T23:00:00")
        assert 0 <= float(r["failure_probability_7d"]) <= float(r["failure_probability_30d"]) <= 1
        assert float(r["rul_low"]) <= float(r["rul_days"]) <= float(r["rul_high"])
        assert r["top_factors"] and "__" not in r["top_factors"]
    code, stdout, _ = invoke(cli, *args, "--format", "json")
    assert code == 0 and [list(r) for r in json.loads(stdout)] == [COLUMNS, COLUMNS]

    code, stdout, _ = invoke(cli, "models", "list", "--tenant", tenant.name)
    assert code == 0 and "champion" in stdout
    code, stdout, stderr = invoke(cli, "models", "promote", "2", "--tenant", tenant.name)
    assert code == 0, stderr
    assert "model version 2 is champion" in stdout
    code, stdout, stderr = invoke(cli, "models", "rollback", "--tenant", tenant.name)
    assert code == 0, stderr
    assert "model version 1 is champion again" in stdout
    code, _, stderr = invoke(cli, "models", "rollback", "--tenant", tenant.name)
    assert code == 1 and "nothing to roll back" in stderr
    code, _, stderr = invoke(cli, "models", "promote", "9", "--tenant", tenant.name)
    assert code == 1 and "not found" in stderr
