"""`foresight import readings`: layouts, formats, validation, --create-assets, idempotency."""

from __future__ import annotations

import gzip
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from foresight.kit.db import Database
from foresight.models import Tenant
from tests.ingest_import.helpers import (
    T0_MS,
    T0_S,
    count_readings,
    invoke,
    make_tenant,
    readings,
    rollups,
    tenant_id,
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _summary_number(out: str, label: str) -> int:
    match = re.search(rf"^\s*{label}\s+([\d,]+)", out, re.MULTILINE)
    assert match, f"no {label!r} in:\n{out}"
    return int(match.group(1).replace(",", ""))


def test_wide_csv_with_iso_and_epoch_timestamps(
    cli: CliRunner, db: Database, tmp_path: Path
) -> None:
    make_tenant(cli)
    path = _write(
        tmp_path / "wide.csv",
        "asset,ts,temperature,pressure\n"
        "PUMP-1,2026-01-01T00:00:00Z,20.5,1.5\n"
        f"PUMP-1,{T0_S + 60},21,\n"  # epoch seconds; an empty cell is no reading
        "PUMP-2,2026-01-01T01:00:00+01:00,19.25,1.25\n"  # the same instant as T0
        "PUMP-2,2026-01-01 00:01:00.5,18,2\n",  # zone-less: UTC
    )
    code, out, err = invoke(
        cli, "import", "readings", str(path), "--tenant", "acme", "--create-assets"
    )
    assert code == 0, out + err
    assert readings(db) == {
        ("PUMP-1", "temperature", T0_MS): 20.5,
        ("PUMP-1", "pressure", T0_MS): 1.5,
        ("PUMP-1", "temperature", T0_MS + 60_000): 21.0,
        ("PUMP-2", "temperature", T0_MS): 19.25,
        ("PUMP-2", "pressure", T0_MS): 1.25,
        ("PUMP-2", "temperature", T0_MS + 60_500): 18.0,
        ("PUMP-2", "pressure", T0_MS + 60_500): 2.0,
    }
    assert "wide layout, 2 sensor column(s)" in out
    assert _summary_number(out, "rows read") == 4
    assert _summary_number(out, "points accepted") == 7
    assert "7 new, 0 already present" in out
    assert _summary_number(out, "rejected") == 0
    assert "2 asset(s), 4 sensor(s)" in out
    assert "points/s" in out
    assert invoke(cli, "audit", "verify", "--tenant", "acme")[0] == 0  # creations audited


def test_long_csv_and_gzipped_csv(cli: CliRunner, db: Database, tmp_path: Path) -> None:
    make_tenant(cli)
    text = (
        "asset,sensor,ts,value\n"
        "MOTOR-1,current,2026-01-01T00:00:00Z,4.5\n"
        f"MOTOR-1,current,{T0_S + 1}.250,4.75\n"
        "MOTOR-1,rpm,2026-01-01T00:00:00Z,1480\n"
    )
    code, out, err = invoke(
        cli,
        "import",
        "readings",
        str(_write(tmp_path / "long.csv", text)),
        "--tenant",
        "acme",
        "--create-assets",
    )
    assert code == 0, out + err
    assert "long layout" in out
    assert readings(db) == {
        ("MOTOR-1", "current", T0_MS): 4.5,
        ("MOTOR-1", "current", T0_MS + 1250): 4.75,
        ("MOTOR-1", "rpm", T0_MS): 1480.0,
    }
    gz = tmp_path / "more.csv.gz"
    gz.write_bytes(gzip.compress((text + "MOTOR-1,rpm,2026-01-01T00:00:10Z,1490\n").encode()))
    code, out, err = invoke(cli, "import", "readings", str(gz), "--tenant", "acme")
    assert code == 0, out + err
    assert "1 new, 3 already present" in out
    assert readings(db)[("MOTOR-1", "rpm", T0_MS + 10_000)] == 1490.0


def test_parquet_wide_and_long_with_typed_columns(
    cli: CliRunner, db: Database, tmp_path: Path
) -> None:
    make_tenant(cli)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    wide = pl.DataFrame(
        {
            "asset": ["FAN-1", "FAN-1", "FAN-2"],
            "ts": [t0, t0 + timedelta(minutes=1), t0],  # a Parquet timestamp column
            "speed": [1.5, None, 3.0],
            "hot": [True, False, None],  # booleans are 1 and 0, as in JSON
            "count": [1, 2, 3],
        }
    )
    wide.write_parquet(tmp_path / "wide.parquet")
    long = pl.DataFrame(
        {
            "asset": ["FAN-1", "FAN-2"],
            "sensor": ["speed", "speed"],
            "ts": [T0_S + 120, T0_S + 120],  # epoch seconds as integers
            "value": [2.5, float("nan")],
        }
    )
    long.write_parquet(tmp_path / "long.parquet")
    code, out, err = invoke(
        cli,
        "import",
        "readings",
        str(tmp_path / "wide.parquet"),
        "--tenant",
        "acme",
        "--create-assets",
    )
    assert code == 0, out + err
    code, out, err = invoke(
        cli, "import", "readings", str(tmp_path / "long.parquet"), "--tenant", "acme"
    )
    assert code == 0, out + err
    assert _summary_number(out, "rejected") == 1
    assert "row 2: value must be finite" in out  # Parquet rows are numbered from 1
    assert readings(db) == {
        ("FAN-1", "speed", T0_MS): 1.5,
        ("FAN-1", "hot", T0_MS): 1.0,
        ("FAN-1", "count", T0_MS): 1.0,
        ("FAN-1", "hot", T0_MS + 60_000): 0.0,
        ("FAN-1", "count", T0_MS + 60_000): 2.0,
        ("FAN-2", "speed", T0_MS): 3.0,
        ("FAN-2", "count", T0_MS): 3.0,
        ("FAN-1", "speed", T0_MS + 120_000): 2.5,
    }


def test_unknown_assets_are_refused_unless_create_assets(
    cli: CliRunner, db: Database, tmp_path: Path
) -> None:
    make_tenant(cli)
    first = _write(tmp_path / "a.csv", "asset,ts,temp\nKNOWN-1,2026-01-01T00:00:00Z,1\n")
    assert (
        invoke(cli, "import", "readings", str(first), "--tenant", "acme", "--create-assets")[0] == 0
    )
    path = _write(
        tmp_path / "b.csv",
        "asset,ts,temp,rpm\n"
        "KNOWN-1,2026-01-01T00:01:00Z,2,100\n"
        "NEW-1,2026-01-01T00:01:00Z,3,\n"
        "NEW-1,2026-01-01T00:02:00Z,4,200\n",
    )
    code, out, err = invoke(cli, "import", "readings", str(path), "--tenant", "acme")
    assert code == 0, out + err
    # One refusal per row (not per value), with its line.
    assert _summary_number(out, "rejected") == 2
    assert "line 3: unknown asset (--create-assets registers it): 'NEW-1'" in out
    assert "line 4: unknown asset" in out
    assert {k for k in readings(db) if k[0] == "NEW-1"} == set()
    assert readings(db)[("KNOWN-1", "rpm", T0_MS + 60_000)] == 100.0  # a new sensor: created

    code, out, err = invoke(
        cli, "import", "readings", str(path), "--tenant", "acme", "--create-assets"
    )
    assert code == 0, out + err
    assert "3 new, 2 already present" in out
    assert readings(db)[("NEW-1", "rpm", T0_MS + 120_000)] == 200.0

    only_unknown = _write(tmp_path / "c.csv", "asset,ts,temp\nOTHER-9,1767225600,1\n")
    code, out, err = invoke(cli, "import", "readings", str(only_unknown), "--tenant", "acme")
    assert code == 1 and "nothing could be imported" in err


def test_sensors_are_not_created_when_the_tenant_turned_that_off(
    cli: CliRunner, db: Database, tmp_path: Path
) -> None:
    make_tenant(cli)
    path = _write(tmp_path / "a.csv", "asset,ts,temp\nP-1,2026-01-01T00:00:00Z,1\n")
    assert (
        invoke(cli, "import", "readings", str(path), "--tenant", "acme", "--create-assets")[0] == 0
    )
    with db.transaction() as session:
        session.execute(
            update(Tenant)
            .where(Tenant.id == tenant_id(db))
            .values(settings={"auto_create_sensors": False})
        )
    path = _write(tmp_path / "b.csv", "asset,ts,temp,vib\nP-1,2026-01-01T00:01:00Z,2,3\n")
    code, out, err = invoke(cli, "import", "readings", str(path), "--tenant", "acme")
    assert code == 0, out + err
    assert "line 2: unknown sensor (auto_create_sensors is off for the tenant)" in out
    assert ("P-1", "temp", T0_MS + 60_000) in readings(db)


def test_bad_rows_are_reported_with_their_line_and_do_not_block_good_rows(
    cli: CliRunner, db: Database, tmp_path: Path
) -> None:
    make_tenant(cli)
    path = _write(
        tmp_path / "bad.csv",
        "asset,ts,temp,Bad Key\n"
        "P-1,2026-01-01T00:00:00Z,1,\n"  # line 2: good
        "P-1,yesterday,2,\n"  # 3: unreadable timestamp
        ",2026-01-01T00:00:00Z,3,\n"  # 4: missing asset
        "P-1,2026-01-01T00:00:03Z,abc,\n"  # 5: not a number
        "P-1,2026-01-01T00:00:04Z,inf,\n"  # 6: not finite
        "P-1,2026-01-01T00:00:05Z,1,2,3\n"  # 7: too many fields
        "P-1,2999-01-01T00:00:00Z,1,\n"  # 8: far future
        "P-1,1960-01-01T00:00:00Z,1,\n"  # 9: before 1970
        "\n"  # 10: blank: skipped, not an error
        "P-1,2026-01-01T00:00:06Z,6,7\n"  # 11: 6 is good, 7 is under a bad column name
        '"P-1","2026-01-01T00:00:07Z"," 7 ",\n'  # 12: good (quotes, spaces)
        "P 1,2026-01-01T00:00:08Z,8,\n",  # 13: no asset can have this tag
    )
    code, out, err = invoke(
        cli, "import", "readings", str(path), "--tenant", "acme", "--create-assets"
    )
    assert code == 0, out + err
    assert readings(db) == {
        ("P-1", "temp", T0_MS): 1.0,
        ("P-1", "temp", T0_MS + 6000): 6.0,
        ("P-1", "temp", T0_MS + 7000): 7.0,
    }
    assert _summary_number(out, "rows read") == 11  # the blank line is no row
    assert _summary_number(out, "rejected") == 9
    for reason in (
        "unreadable timestamp",
        "missing asset",
        "not a number",
        "value must be finite",
        "wrong number of fields",
        "timestamp more than 300 s in the future",
        "timestamp before 1970-01-01",
        "invalid sensor key",
        "invalid asset tag",
    ):
        assert re.search(rf"^\s+1\s+{re.escape(reason)}$", out, re.MULTILINE), reason
    # The first five problems, with their line numbers.
    assert "line 3: unreadable timestamp: 'yesterday'" in out
    assert "line 4: missing asset" in out
    assert "line 5: not a number: 'abc'" in out
    assert "line 6: value must be finite: 'inf'" in out
    assert "line 7: wrong number of fields: expected 4, found 5" in out
    assert "and 4 more" in out
    assert "'Bad Key' is not a valid sensor key" in err


def test_rerun_is_idempotent_and_an_interrupted_import_can_be_finished(
    cli: CliRunner, db: Database, tmp_path: Path
) -> None:
    make_tenant(cli, "whole")
    make_tenant(cli, "halves")
    rows = [
        f"A-{i % 3},{T0_S + (i // 3) * 7},{(i * 37) % 101 / 7:.4f},{i % 13}" for i in range(3000)
    ]
    header = "asset,ts,temp,count\n"
    full = _write(tmp_path / "full.csv", header + "\n".join(rows) + "\n")
    head = _write(tmp_path / "head.csv", header + "\n".join(rows[:1234]) + "\n")

    code, out, err = invoke(
        cli, "import", "readings", str(full), "--tenant", "whole", "--create-assets"
    )
    assert code == 0, out + err
    assert "6,000 new, 0 already present" in out
    stored, summary = readings(db, "whole"), rollups(db, "whole")
    code, out, err = invoke(cli, "import", "readings", str(full), "--tenant", "whole")
    assert code == 0, out + err
    assert "0 new, 6,000 already present" in out
    assert readings(db, "whole") == stored
    assert rollups(db, "whole") == summary

    # "Interrupted" after a third of the file, then rerun in full: the same end state.
    for path in (head, full):
        code, out, err = invoke(
            cli, "import", "readings", str(path), "--tenant", "halves", "--create-assets"
        )
        assert code == 0, out + err
    assert "3,532 new, 2,468 already present" in out
    assert readings(db, "halves") == stored
    resumed = rollups(db, "halves")
    assert resumed.keys() == summary.keys()
    for key, values in summary.items():
        assert resumed[key] == pytest.approx(values, rel=1e-9, abs=1e-9), key
    assert count_readings(db, "halves") == 6000


def test_unreadable_files_exit_non_zero_with_a_clear_message(
    cli: CliRunner, db: Database, tmp_path: Path
) -> None:
    make_tenant(cli)
    cases = {
        tmp_path / "missing.csv": "no such file",
        _write(tmp_path / "notes.txt", "asset,ts,x\n"): "unsupported file type",
        _write(tmp_path / "empty.csv", ""): "the file is empty",
        _write(tmp_path / "nots.csv", "asset,when,x\nP-1,1,2\n"): "'asset' and a 'ts' column",
        _write(tmp_path / "long5.csv", "asset,sensor,ts,value,x\n"): "exactly the columns",
        _write(tmp_path / "dup.csv", "asset,ts,x,x\n"): "column 'x' appears twice",
    }
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    cases[corrupt] = "not a readable Parquet file"
    bad_gz = tmp_path / "bad.csv.gz"
    bad_gz.write_bytes(b"not gzip at all")
    cases[bad_gz] = "cannot read"
    latin = tmp_path / "latin.csv"
    latin.write_bytes("asset,ts,x\nP-1,1767225600,1\nCAF\xc9,1767225600,2\n".encode("latin-1"))
    cases[latin] = "line 3 is not UTF-8"
    for path, message in cases.items():
        code, out, err = invoke(cli, "import", "readings", str(path), "--tenant", "acme")
        assert code == 1, (path, out, err)
        assert message in err, (path, err)
    code, _, err = invoke(cli, "import", "readings", str(latin), "--tenant", "nope")
    assert code == 1 and "No tenant named 'nope'" in err
    # A header alone reads fine, but imports nothing.
    header_only = _write(tmp_path / "header.csv", "asset,ts,x\n")
    code, _, err = invoke(cli, "import", "readings", str(header_only), "--tenant", "acme")
    assert code == 1 and "nothing could be imported" in err


def test_sensor_columns_may_bear_any_valid_key(
    cli: CliRunner, db: Database, tmp_path: Path
) -> None:
    make_tenant(cli)
    # Names the importer uses internally are ordinary sensor keys in a file.
    path = _write(
        tmp_path / "names.csv",
        "equipment_id,timestamp,ts_ms,reason,column,raw,sensor,missing,series_id\n"
        "P-1,2026-01-01T00:00:00Z,1,2,3,4,5,6,7\n",
    )
    code, out, err = invoke(
        cli, "import", "readings", str(path), "--tenant", "acme", "--create-assets"
    )
    assert code == 0, out + err
    assert readings(db) == {
        ("P-1", key, T0_MS): float(i)
        for i, key in enumerate(
            ["ts_ms", "reason", "column", "raw", "sensor", "missing", "series_id"], start=1
        )
    }
