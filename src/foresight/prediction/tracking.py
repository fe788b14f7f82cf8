"""MLflow tracking of training runs, when ``FORESIGHT_MLFLOW_URI`` is set.

Each registered model version becomes one MLflow run in the experiment
``<FORESIGHT_MLFLOW_EXPERIMENT>/<tenant name>`` (run name ``v<version>``):

- params: the training and feature configuration, LightGBM parameters, boosting iterations,
  calibration methods (flattened with dots: ``config.max_rul_days``, ``lightgbm.num_leaves``);
- metrics: every number of the version's metrics, flattened the same way
  (``holdout.failure_30d.roc_auc``, ``comparison.new.rul_rmse``, ``training.validation.rul.rmse``,
  ``counts.rows``, ``feedback.rows_weighted``, …);
- tags: ``foresight.tenant``, ``foresight.tenant_id``, ``foresight.version``,
  ``foresight.version_id``, ``foresight.status``, ``foresight.promoted``, ``foresight.reason``;
- artifacts: ``model/foresight-model.json.gz`` (the version's artifact, what ``load_bundle``
  reads), ``model/feature_specs.json`` and ``metrics.json``.

The run id is kept in the version's metrics (``metrics.mlflow``). The client is the official
``mlflow-skinny`` (``pip install 'foresight[mlflow]'``), imported only when a URI is set. Tracking
happens after the version is committed, and nothing in it can fail or undo the training run:
a missing package, an unreachable server or a refused write is logged as a warning. HTTP
requests are retried twice with a 15 s timeout unless ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` /
``MLFLOW_HTTP_REQUEST_TIMEOUT`` say otherwise, so a down server delays a training by seconds,
not minutes.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from foresight.config import get_settings
from foresight.kit.db import Database
from foresight.kit.logging import get_logger
from foresight.models import ModelStatus, ModelVersion, Tenant

log = get_logger("foresight.prediction.tracking")

INSTALL_HINT = "pip install 'foresight[mlflow]'"
BATCH = 100  # MLflow takes at most 100 params or tags and 1000 metrics per batch
MAX_PARAM_CHARS = 6000


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, value


def metric_items(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Every finite number in the metrics, keyed by its dotted path (booleans left out)."""
    out = {}
    for key, v in _flatten(metrics):
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[key] = float(v)
    return out


def param_items(params: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for key, v in _flatten(params):
        text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
        out[key[:250]] = text[:MAX_PARAM_CHARS]
    return out


def _client(uri: str) -> Any | None:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        log.warning(
            "mlflow_not_installed",
            detail=f"FORESIGHT_MLFLOW_URI is set but the mlflow package is missing: {INSTALL_HINT}",
        )
        return None
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    return MlflowClient(tracking_uri=uri)


def _experiment(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except Exception:  # another process created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def log_training(
    db: Database,
    version_id: uuid.UUID,
    *,
    uri: str | None = None,
    experiment: str | None = None,
) -> str | None:
    """Log the registered version's run to MLflow (``uri``: default ``FORESIGHT_MLFLOW_URI``;
    empty: off). Returns the MLflow run id, or None when off or when tracking failed (logged).
    Never raises."""
    settings = get_settings()
    uri = settings.mlflow_uri if uri is None else uri
    if not uri:
        return None
    try:
        return _log(db, version_id, uri, experiment or settings.mlflow_experiment)
    except Exception as exc:  # noqa: BLE001 - tracking must never fail a training run
        log.warning(
            "mlflow_tracking_failed",
            version_id=str(version_id),
            error=f"{type(exc).__name__}: {exc}"[:500],
        )
        return None


def _log(db: Database, version_id: uuid.UUID, uri: str, prefix: str) -> str | None:
    client = _client(uri)
    if client is None:
        return None
    with db.transaction(write=False) as session:
        v = session.get(ModelVersion, version_id)
        if v is None:
            return None
        tenant = session.get(Tenant, v.tenant_id)
        tenant_name = tenant.name if tenant is not None else str(v.tenant_id)
        version, status, note = v.version, v.status, v.note
        tenant_id, metrics, artifact = v.tenant_id, dict(v.metrics or {}), v.artifact
        params = {
            **dict(v.params or {}),
            "features": dict(v.feature_config or {}),
            "horizons": list(v.horizons or []),
            "max_rul_days": v.max_rul_days,
            "data_start": None if v.data_start is None else v.data_start.isoformat(),
            "data_end": None if v.data_end is None else v.data_end.isoformat(),
            "holdout_start": None if v.holdout_start is None else v.holdout_start.isoformat(),
            "features_count": len(v.feature_specs or []),
        }
        specs = list(v.feature_specs or [])
    from mlflow.entities import Metric, Param

    promoted = bool((metrics.get("comparison") or {}).get("promoted"))
    tags = {
        "foresight.tenant": tenant_name,
        "foresight.tenant_id": str(tenant_id),
        "foresight.version": str(version),
        "foresight.version_id": str(version_id),
        "foresight.status": status.value if isinstance(status, ModelStatus) else str(status),
        "foresight.promoted": "true" if promoted else "false",
        "foresight.reason": note[:5000],
    }
    experiment_id = _experiment(client, f"{prefix}/{tenant_name}")
    run = client.create_run(experiment_id, run_name=f"v{version}", tags=tags)
    run_id = str(run.info.run_id)
    ok = False
    try:
        now_ms = int(run.info.start_time or 0)
        p = [Param(k, v) for k, v in param_items(params).items()]
        m = [Metric(k, val, now_ms, 0) for k, val in metric_items(metrics).items()]
        for i in range(0, len(p), BATCH):
            client.log_batch(run_id, params=p[i : i + BATCH])
        for i in range(0, len(m), 10 * BATCH):
            client.log_batch(run_id, metrics=m[i : i + 10 * BATCH])
        with tempfile.TemporaryDirectory(prefix="foresight-mlflow-") as tmp:
            root = Path(tmp)
            (root / "model").mkdir()
            if artifact is not None:
                (root / "model" / "foresight-model.json.gz").write_bytes(artifact)
            (root / "model" / "feature_specs.json").write_text(json.dumps(specs, default=str))
            (root / "metrics.json").write_text(json.dumps(metrics, default=str, indent=1))
            client.log_artifacts(run_id, str(root))
        ok = True
    finally:
        client.set_terminated(run_id, status="FINISHED" if ok else "FAILED")
    with db.transaction() as session:
        v = session.get(ModelVersion, version_id)
        if v is not None:
            mlflow = {"run_id": run_id, "experiment_id": experiment_id}
            v.metrics = {**dict(v.metrics or {}), "mlflow": mlflow}
    log.info("mlflow_run_logged", version=version, run_id=run_id, experiment=experiment_id)
    return run_id
