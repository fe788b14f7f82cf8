"""MLflow tracking of training runs against a real tracking store (MLflow's SQLite backend in a
temporary directory), read back with the MLflow client; and that tracking can never fail a
training run (an unreachable server, the package missing)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from structlog.testing import capture_logs

from foresight.config import get_settings
from foresight.kit.db import Database
from foresight.models import ModelVersion, Tenant
from foresight.prediction import service, tracking
from tests.factories import Factory
from tests.prediction.fleet_sim import FEATURES, TRAINING, simulate


@pytest.fixture
def tenant(db: Database, factory: Factory) -> Tenant:
    tenant = factory.tenant()
    simulate(db, tenant.id, assets=6, days=100)
    return tenant


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def _version(db: Database, version_id: uuid.UUID) -> ModelVersion:
    with db.transaction(write=False) as session:
        v = session.get(ModelVersion, version_id)
        assert v is not None
        session.expunge(v)
        return v


def test_training_runs_are_tracked(
    db: Database, tenant: Tenant, tmp_path: Path, settings_env: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # A local store keeps artifacts in ./mlruns (MLflow's default artifact root).
    settings_env.chdir(tmp_path)
    settings_env.setenv("FORESIGHT_MLFLOW_URI", uri)
    settings_env.setenv("FORESIGHT_MLFLOW_EXPERIMENT", "plant")
    result = service.train(db, tenant.id, feature_config=FEATURES, train_config=TRAINING)
    version = _version(db, result.version_id)
    run_id = version.metrics["mlflow"]["run_id"]

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(f"plant/{tenant.name}")
    assert experiment is not None
    assert version.metrics["mlflow"]["experiment_id"] == experiment.experiment_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "v1"
    tags = run.data.tags
    assert tags["foresight.tenant"] == tenant.name
    assert tags["foresight.tenant_id"] == str(tenant.id)
    assert (tags["foresight.version"], tags["foresight.version_id"]) == ("1", str(version.id))
    assert (tags["foresight.status"], tags["foresight.promoted"]) == ("champion", "true")
    assert tags["foresight.reason"] == "first model of the tenant"
    params = run.data.params
    assert params["config.max_rul_days"] == "180.0"
    assert params["lightgbm.num_leaves"] == "15"
    assert params["features.windows_h"] == "[24, 168]"
    metrics = run.data.metrics
    # Every number of the registered metrics, by its dotted path (undefined ones left out).
    logged = {k: v for k, v in version.metrics.items() if k != "mlflow"}
    assert metrics == pytest.approx(tracking.metric_items(logged))
    assert metrics["holdout.rul.rmse"] == pytest.approx(version.metrics["holdout"]["rul"]["rmse"])
    assert metrics["comparison.new.rul_rmse"] == metrics["holdout.rul.rmse"]
    assert metrics["counts.rows"] == version.metrics["counts"]["rows"]
    assert metrics["feedback.rows_weighted"] == 0
    listed = {f.path for f in client.list_artifacts(run_id, "model")}
    assert listed == {"model/foresight-model.json.gz", "model/feature_specs.json"}
    local = client.download_artifacts(run_id, "model/foresight-model.json.gz", str(tmp_path))
    assert Path(local).read_bytes() == version.artifact  # the registered artifact, byte for byte

    # The next run goes into the same experiment.
    second = service.train(db, tenant.id, feature_config=FEATURES, train_config=TRAINING)
    runs = client.search_runs([experiment.experiment_id])
    assert {r.data.tags["foresight.version"] for r in runs} == {"1", "2"}
    assert _version(db, second.version_id).metrics["mlflow"]["run_id"] in {
        r.info.run_id for r in runs
    }


def test_tracking_failures_never_fail_training(
    db: Database, tenant: Tenant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with capture_logs() as logs:
        # Nothing listens on port 9: the server is unreachable.
        result = service.train(
            db,
            tenant.id,
            feature_config=FEATURES,
            train_config=TRAINING,
            mlflow_uri="http://127.0.0.1:9",
        )
    version = _version(db, result.version_id)
    assert version.artifact and "mlflow" not in version.metrics  # trained and registered
    assert [e for e in logs if e["event"] == "mlflow_tracking_failed"]

    # The package missing: a clear warning, nothing tracked.
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with capture_logs() as logs:
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        assert tracking.log_training(db, result.version_id, uri=uri) is None
    [warning] = [e for e in logs if e["event"] == "mlflow_not_installed"]
    assert "foresight[mlflow]" in warning["detail"]
    assert tracking.log_training(db, result.version_id, uri="") is None  # off
