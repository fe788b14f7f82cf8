"""`foresight import maintenance`: records through the service, bad rows reported, reruns safe."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from sqlalchemy import func, select
from typer.testing import CliRunner

from foresight.kit.db import Database
from foresight.models import AuditEntry
from tests.ingest_import.helpers import invoke, maintenance_rows, make_tenant


def _assets(cli: CliRunner, tmp_path: Path, *tags: str) -> None:
    path = tmp_path / "assets.csv"
    path.write_text("asset,ts,temp\n" + "".join(f"{t},1767225600,1\n" for t in tags))
    code, out, err = invoke(
        cli, "import", "readings", str(path), "--tenant", "acme", "--create-assets"
    )
    assert code == 0, out + err


HISTORY = (
    "asset,kind,started_at,ended_at,failure_mode,cost,downtime_hours,notes\n"
    "PUMP-1,failure,2025-03-01T08:00:00Z,2025-03-01T14:30:00Z,bearing wear,1200.5,6.5,"
    '"replaced bearing, realigned"\n'  # line 2
    "PUMP-1,preventive,2025-04-01 09:00,,,80,,\n"  # 3: in progress (no end), zone-less: UTC
    "PUMP-2,Corrective,2025-05-02T10:00:00+02:00,2025-05-02T12:00:00+02:00,seal leak,,2,\n"  # 4
    "PUMP-9,failure,2025-03-01T08:00:00Z,,,,,\n"  # 5: unknown asset
    "PUMP-1,explosion,2025-03-01T08:00:00Z,,,,,\n"  # 6: unknown kind
    "PUMP-1,failure,2025-06-01T08:00:00Z,2025-05-01T08:00:00Z,,,,\n"  # 7: ends before it starts
    "PUMP-1,preventive,2025-06-01T08:00:00Z,,bearing wear,,,\n"  # 8: failure mode not allowed
    "PUMP-1,inspection,,,,,,\n"  # 9: no started_at
    "PUMP-1,inspection,2025-07-01T08:00:00Z,,,-5,,\n"  # 10: negative cost
    "PUMP-1,inspection,1751356800,,,,,\n"  # 11: not ISO 8601
    "PUMP-2,inspection,2025-07-01T08:00:00Z,2025-07-01T09:00:00Z,,,,\n"  # 12: good
)


def test_maintenance_import_reports_bad_rows_and_reruns_without_duplicates(
    cli: CliRunner, db: Database, tmp_path: Path
) -> None:
    make_tenant(cli)
    _assets(cli, tmp_path, "PUMP-1", "PUMP-2")
    path = tmp_path / "history.csv"
    path.write_text(HISTORY)
    code, out, err = invoke(cli, "import", "maintenance", str(path), "--tenant", "acme")
    assert code == 0, out + err
    assert re.search(r"rows read\s+11\b", out)
    assert re.search(r"records created\s+4\b", out)
    assert re.search(r"rejected\s+7\b", out)
    for fragment in (
        "line 5: unknown asset: 'PUMP-9'",
        "line 6: invalid values: kind: Input should be",
        "line 7: refused by the maintenance rules: ended_at: must not be before started_at",
        "line 8: refused by the maintenance rules: failure_mode: only failure and corrective",
        "line 9: missing started_at",
        "line 10: invalid values: cost: Input should be greater than or equal to 0",
        "line 11: invalid values: started_at: Value error, expected an ISO 8601 date-time",
    ):
        assert fragment in out, fragment
    records = maintenance_rows(db)
    assert [(r[0], str(r[1]), r[2], str(r[4])) for r in records] == [
        ("PUMP-1", "failure", datetime(2025, 3, 1, 8, tzinfo=UTC), "completed"),
        ("PUMP-1", "preventive", datetime(2025, 4, 1, 9, tzinfo=UTC), "in_progress"),
        ("PUMP-2", "corrective", datetime(2025, 5, 2, 8, tzinfo=UTC), "completed"),
        ("PUMP-2", "inspection", datetime(2025, 7, 1, 8, tzinfo=UTC), "completed"),
    ]
    failure = records[0]
    assert failure[5:] == ("bearing wear", 1200.5, 6.5, "replaced bearing, realigned")
    with db.transaction(write=False) as session:
        audited = session.scalar(
            select(func.count()).where(AuditEntry.action == "maintenance.create")
        )
    assert audited == 4

    code, out, err = invoke(cli, "import", "maintenance", str(path), "--tenant", "acme")
    assert code == 0, out + err
    assert re.search(r"records created\s+0\b", out)
    assert re.search(r"already present\s+4\b", out)
    assert maintenance_rows(db) == records
    assert invoke(cli, "audit", "verify", "--tenant", "acme")[0] == 0


def test_maintenance_from_parquet(cli: CliRunner, db: Database, tmp_path: Path) -> None:
    make_tenant(cli)
    _assets(cli, tmp_path, "FAN-1")
    pl.DataFrame(
        {
            "asset": ["FAN-1", "FAN-1", "FAN-1"],
            "kind": ["failure", "corrective", "failure"],
            "started_at": [
                datetime(2025, 1, 5, 3, 0),
                datetime(2025, 1, 5, 4, 0),
                datetime(2025, 1, 5, 3, 0),  # the same record again: skipped
            ],
            "cost": [None, 250.0, None],
        }
    ).write_parquet(tmp_path / "history.parquet")
    code, out, err = invoke(
        cli, "import", "maintenance", str(tmp_path / "history.parquet"), "--tenant", "acme"
    )
    assert code == 0, out + err
    assert re.search(r"records created\s+2\b", out)
    assert re.search(r"already present\s+1\b", out)
    assert [(str(r[1]), r[2], r[6]) for r in maintenance_rows(db)] == [
        ("failure", datetime(2025, 1, 5, 3, tzinfo=UTC), None),
        ("corrective", datetime(2025, 1, 5, 4, tzinfo=UTC), 250.0),
    ]


def test_maintenance_file_problems_exit_non_zero(
    cli: CliRunner, db: Database, tmp_path: Path
) -> None:
    make_tenant(cli)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("asset,kind,start,colour\nP-1,failure,2025-01-01T00:00:00Z,red\n")
    code, _, err = invoke(cli, "import", "maintenance", str(wrong), "--tenant", "acme")
    assert code == 1
    assert "missing column(s) started_at" in err and "unknown column(s) start, colour" in err
    all_bad = tmp_path / "bad.csv"
    all_bad.write_text("asset,kind,started_at\nNOPE-1,failure,2025-01-01T00:00:00Z\n")
    code, out, err = invoke(cli, "import", "maintenance", str(all_bad), "--tenant", "acme")
    assert code == 1 and "nothing could be imported" in err
    assert "line 2: unknown asset: 'NOPE-1'" in out
    code, _, err = invoke(
        cli, "import", "maintenance", str(tmp_path / "none.csv"), "--tenant", "acme"
    )
    assert code == 1 and "no such file" in err
