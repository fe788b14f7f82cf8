"""Real data: NASA C-MAPSS FD001 (turbofan run-to-failure), converted to a wide CSV and imported.

The data set is not part of the repository: the test reads it from ../shared/data/cmapss next to
the checkout and skips if it is absent (fails instead when CI=true). Nothing of it is written
anywhere but the test's temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from foresight.kit.db import Database
from tests.ingest_import.helpers import count_readings, invoke, make_tenant, readings

REPO = Path(__file__).resolve().parents[2]
FD001 = REPO.parent / "shared" / "data" / "cmapss" / "train_FD001.txt"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
ROWS = 20_631
BASE_S = 1_577_836_800  # 2020-01-01T00:00:00Z; cycle n is n hours later
SETTINGS = [f"setting{i}" for i in range(1, 4)]
SENSORS = [f"s{i}" for i in range(1, 22)]


@pytest.fixture
def fd001() -> Path:
    if not FD001.is_file():
        if IN_CI:
            pytest.fail(f"{FD001} is missing (CI=true: the real-data test must run)")
        pytest.skip(f"{FD001} is not available")
    return FD001


@pytest.mark.slow
def test_cmapss_fd001_imports_every_point(
    cli: CliRunner, db: Database, tmp_path: Path, fd001: Path
) -> None:
    raw = pl.read_csv(fd001, separator=" ", has_header=False, infer_schema_length=0)
    raw = raw.select(raw.columns[:26])  # lines end with spaces: empty trailing columns
    names = ["unit", "cycle", *SETTINGS, *SENSORS]
    frame = raw.rename(dict(zip(raw.columns, names, strict=True))).select(
        pl.format("ENGINE-{}", pl.col("unit")).alias("asset"),
        (BASE_S + pl.col("cycle").cast(pl.Int64) * 3600).alias("ts"),
        *[pl.col(c).cast(pl.Float64) for c in (*SETTINGS, *SENSORS)],
    )
    assert frame.height == ROWS
    path = tmp_path / "fd001_wide.csv"
    frame.write_csv(path)

    make_tenant(cli)
    code, out, err = invoke(
        cli, "import", "readings", str(path), "--tenant", "acme", "--create-assets"
    )
    assert code == 0, out + err
    points = ROWS * (len(SETTINGS) + len(SENSORS))
    assert f"{points:,} new" in out
    assert "100 asset(s), 2,400 sensor(s)" in out
    assert count_readings(db) == points
    # Engine 1, cycle 1: "1 1 -0.0007 -0.0004 100.0 518.67 641.82 …"
    t1 = (BASE_S + 3600) * 1000
    stored = readings(db, tag="ENGINE-1", ts_ms=t1)
    assert len(stored) == 24
    assert stored[("ENGINE-1", "setting1", t1)] == pytest.approx(-0.0007)
    assert stored[("ENGINE-1", "s1", t1)] == pytest.approx(518.67)
    assert stored[("ENGINE-1", "s2", t1)] == pytest.approx(641.82)

    code, out, err = invoke(cli, "import", "readings", str(path), "--tenant", "acme")
    assert code == 0, out + err
    assert f"0 new, {points:,} already present" in out
    assert count_readings(db) == points
