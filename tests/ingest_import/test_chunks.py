"""Reading in blocks and chunks: results and line numbers do not depend on where blocks end."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest

from foresight.ingest import importer
from foresight.ingest.batch import Limits
from foresight.kit.db import Database
from tests.factories import Factory
from tests.ingest_import.helpers import T0_MS, T0_S

LIMITS = Limits(max_future_s=300)


def _file(rows: int) -> tuple[str, dict[tuple[str, str, int], float], dict[int, str]]:
    """A wide CSV with problems on known lines: (text, expected points, line → reason)."""
    lines = ["asset,ts,a,b"]
    expected: dict[tuple[str, str, int], float] = {}
    problems: dict[int, str] = {}
    for i in range(rows):
        line = sum(entry.count("\n") + 1 for entry in lines) + 1  # physical line, from 1
        tag, ts = f"M-{i % 4}", T0_S + i
        if i % 97 == 5:
            lines.append(f'{tag},{ts},"1\n2",{i}')  # a quoted newline: one record, two lines
            problems[line] = "not a number"
            expected[(tag, "b", ts * 1000)] = float(i)
        elif i % 89 == 7:
            lines.append(f"{tag},{ts},{i},{i},{i}")
            problems[line] = "wrong number of fields"
        elif i % 83 == 3:
            lines.append(f"{tag},not-a-time,{i},{i}")
            problems[line] = "unreadable timestamp"
        else:
            lines.append(f"{tag},{ts},{i},{i / 2}")
            expected[(tag, "a", ts * 1000)] = float(i)
            expected[(tag, "b", ts * 1000)] = i / 2
    return "\n".join(lines) + "\n", expected, problems


def _stored(db: Database, tenant_id: object) -> dict[tuple[str, str, int], float]:
    from sqlalchemy import select

    from foresight.models import Asset, Reading, Sensor

    stmt = (
        select(Asset.tag, Sensor.key, Reading.ts_ms, Reading.value)
        .join(Sensor, Sensor.series_id == Reading.series_id)
        .join(Asset, Asset.id == Sensor.asset_id)
        .where(Asset.tenant_id == tenant_id)
    )
    with db.transaction(write=False) as session:
        return {(t, k, ts): v for t, k, ts, v in session.execute(stmt)}


@pytest.mark.parametrize(("block_bytes", "chunk_points"), [(37, 16), (1000, 64), (1 << 20, 10_000)])
def test_blocks_and_chunks_of_any_size_give_the_same_result(
    db: Database, factory: Factory, tmp_path: Path, block_bytes: int, chunk_points: int
) -> None:
    text, expected, problems = _file(400)
    seen: list[tuple[int, int | None]] = []
    for name, data in (("f.csv", text.encode()), ("f.csv.gz", gzip.compress(text.encode()))):
        tenant = factory.tenant()
        path = tmp_path / name
        path.write_bytes(data)
        seen.clear()
        report = importer.import_readings(
            db,
            path,
            tenant_id=tenant.id,
            limits=LIMITS,
            create_assets=True,
            chunk_points=chunk_points,
            block_bytes=block_bytes,
            progress=lambda pos, total, rows, done: seen.append((pos, total)),
        )
        assert _stored(db, tenant.id) == expected
        assert report.points_accepted == report.points_new == len(expected)
        assert report.rows_read == 400
        assert report.rejections.total == len(problems)
        first = sorted(problems.items())[: importer.MAX_EXAMPLES]
        assert [(line, text.split(":")[0]) for line, text in report.rejections.examples] == first
        assert seen and seen[-1] == (path.stat().st_size, path.stat().st_size)


def test_parquet_in_small_slices(db: Database, factory: Factory, tmp_path: Path) -> None:
    tenant = factory.tenant()
    n = 1000
    pl.DataFrame(
        {
            "asset": [f"P-{i % 3}" for i in range(n)],
            "ts": [T0_S + i for i in range(n)],
            "v": [float(i) if i != 500 else float("inf") for i in range(n)],
        }
    ).write_parquet(tmp_path / "f.parquet", row_group_size=64)
    report = importer.import_readings(
        db,
        tmp_path / "f.parquet",
        tenant_id=tenant.id,
        limits=LIMITS,
        create_assets=True,
        chunk_points=70,
        block_cells=150,
    )
    assert report.points_new == n - 1
    assert report.rejections.examples == [(501, "value must be finite: 'inf'")]
    stored = _stored(db, tenant.id)
    assert len(stored) == n - 1 and stored[("P-1", "v", T0_MS + 1000)] == 1.0


@pytest.mark.parametrize(
    ("buf", "cut"),
    [
        (b"a,b\n", 4),
        (b"a,b\nc,d", 4),
        (b"no newline", 0),
        (b'a,"x\ny",b\nc', 10),  # the first newline is inside quotes
        (b'a,"x\ny', 0),  # an open quote: no whole record yet
        (b'a,"x""\n""y"\nb\n', 14),  # doubled quotes inside a quoted field
        (b'q\na,"x\ny', 2),
    ],
)
def test_blocks_end_on_record_boundaries(buf: bytes, cut: int) -> None:
    assert importer._record_boundary(buf) == cut
