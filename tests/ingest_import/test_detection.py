"""`foresight import readings` runs detection on what it stores, as live ingestion does."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from foresight.detection import service as rules_service
from foresight.detection.schemas import RuleCreate
from foresight.kit.db import Database
from foresight.models import ActorType, Alert, AnomalyScore, Role
from tests.ingest_import.helpers import T0_S, invoke, make_tenant, tenant_id


def _rule(db: Database, tid: uuid.UUID) -> None:
    from foresight.auth.schemas import Principal

    principal = Principal(tid, ActorType.system, uuid.UUID(int=0), "test", Role.admin)
    data = RuleCreate.model_validate(
        {"name": "hot", "severity": "critical", "scope": {"asset_tag": "PUMP-1"},
         "conditions": [{"sensor": "temperature", "op": ">", "threshold": 80}]}
    )  # fmt: skip
    with db.transaction() as session:
        rules_service.create_rule(session, principal=principal, data=data)


def test_import_backtests_rules_and_anomalies(cli: CliRunner, db: Database, tmp_path: Path) -> None:
    make_tenant(cli)
    path = tmp_path / "history.csv"
    rows = ["asset,ts,temperature"]
    for i in range(400):
        value = 60.0 + (i % 7) * 0.3 + (30.0 if 300 <= i < 320 else 0.0)
        rows.append(f"PUMP-1,{T0_S + i * 60},{value}")
    path.write_text("\n".join(rows) + "\n")
    code, out, err = invoke(
        cli, "import", "readings", str(path), "--tenant", "acme", "--create-assets", "--detect"
    )
    assert code == 0, out + err
    tid = tenant_id(db)
    _rule(db, tid)  # rules made after the first import: the first import fired nothing
    with db.transaction(write=False) as session:
        [anomaly] = session.scalars(select(Alert)).all()  # the shift, found with no rule at all
        assert anomaly.source == "detector:sensor" and anomaly.sensor == "temperature"
        flagged = session.scalars(select(AnomalyScore).where(AnomalyScore.flag.is_(True))).all()
    assert flagged and min(s.minute_ms for s in flagged) >= (T0_S + 300 * 60) * 1000
    # Backtest the rule on last year's data: the same points a year earlier, in another file.
    year = 365 * 86400
    earlier = ["asset,ts,temperature"] + [
        f"PUMP-1,{int(line.split(',')[1]) - year},{line.split(',')[2]}" for line in rows[1:]
    ]
    path.write_text("\n".join(earlier) + "\n")
    code, out, err = invoke(cli, "import", "readings", str(path), "--tenant", "acme", "--detect")
    assert code == 0, out + err
    with db.transaction(write=False) as session:
        [alert] = session.scalars(select(Alert).where(Alert.rule_id.is_not(None))).all()
    assert alert.triggered_at.timestamp() == T0_S - year + 300 * 60  # data time
    assert alert.resolved_at is not None and alert.resolved_by == "auto"
    # Without --detect (the default) nothing is evaluated.
    later = ["asset,ts,temperature", f"PUMP-1,{T0_S + 500 * 60},99.0"]
    path.write_text("\n".join(later) + "\n")
    code, out, err = invoke(cli, "import", "readings", str(path), "--tenant", "acme")
    assert code == 0, out + err
    with db.transaction(write=False) as session:
        assert len(session.scalars(select(Alert).where(Alert.rule_id.is_not(None))).all()) == 1
