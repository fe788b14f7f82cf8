"""`foresight bench detect`, tiny: it runs end to end and reports sane figures (none are timed)."""

from __future__ import annotations

import math
from pathlib import Path

from foresight import bench


def test_detect_bench_measures_latency_and_the_throughput_ratio(tmp_path: Path) -> None:
    def make_database() -> tuple[str, object]:
        path = tmp_path / f"detect-{len(list(tmp_path.iterdir()))}.db"
        return f"sqlite:///{path}", lambda: None

    result = bench.run_detect_backend(
        "sqlite", make_database, rate=4000, seconds=4, rules=20, probes=3, points=8000,
        senders=1, assets=10, poll_s=0.005, warmup_s=0.5, rounds=2,
    )  # fmt: skip
    probes = result.probes
    assert probes.missed == 0
    assert 1 <= len(probes.api_ms) <= 3 and len(probes.ws_ms) == len(probes.api_ms)
    assert all(math.isfinite(ms) for ms in probes.api_ms + probes.ws_ms)
    assert len(result.pairs) == 2  # phase B: two rounds, each on and off
    ons = [on for on, _ in result.pairs]
    offs = [off for _, off in result.pairs]
    for load in [result.load, *ons, *offs]:
        assert load.points > 0 and load.rate > 0
    assert result.ratio == min(result.ratios)  # the median of two: the lower
    assert result.on in ons and result.off in offs
    for load in [result.load, *ons]:  # detection on: it kept up, and its cost is counted
        assert load.drain_s is not None
        assert load.counters["foresight_detection_points_total"] >= load.points
        assert all(math.isfinite(bench._us_per_point(load, s)) for s in bench.STAGES)
    assert all(off.counters == {} for off in offs)  # detection off: no detection metrics
    for load in [*ons, *offs]:  # CPU measured: the server ingested, on its own CPU
        assert load.cpu_s["server"] > 0
    assert result.on.cpu_s["children"] > 0  # detection ran in its child process
    assert math.isfinite(result.ratio) and result.ratio > 0

    lines = bench.detect_table([result], rules=20)
    rows = [line for line in lines if line.startswith("| sqlite |")]
    assert len(rows) == 2 and "nan" not in " ".join(rows)
    [rounds] = [line for line in lines if line.startswith("sqlite: phase B rounds")]
    assert rounds.count("%") == 4 and f"median {result.ratio:.0%}" in rounds


def test_cpu_split_counts_a_process_and_its_descendants() -> None:
    """A grandchild's CPU is counted as a descendant's, not as the process's own."""
    import os
    import signal
    import subprocess
    import sys
    import time

    burn = (
        "import time\nt = time.process_time()\n"
        "while time.process_time() - t < 0.4: pass\ntime.sleep(30)"
    )
    spawn = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])"
    outer = subprocess.Popen([sys.executable, "-c", spawn], start_new_session=True)
    try:
        before = bench.cpu_split(outer.pid)
        deadline = time.monotonic() + 30
        after = before
        while time.monotonic() < deadline and after["children"] - before["children"] < 0.35:
            time.sleep(0.05)
            after = bench.cpu_split(outer.pid)
        assert after["children"] - before["children"] >= 0.35
        assert after["server"] - before["server"] < 0.3  # the waiting parent burns nothing
        assert set(after) == {"server", "children", "postgres"}
    finally:
        os.killpg(outer.pid, signal.SIGKILL)
        outer.wait()


def test_detection_rules_are_a_valid_mix() -> None:
    from foresight.detection.schemas import RuleCreate

    rules = bench.detection_rules(1000, 100)
    assert len({r["name"] for r in rules}) == 1000
    ops = {r["conditions"][0]["op"] for r in rules}
    assert ops == {">", "<", "outside"}
    assert any(r["conditions"][0].get("aggregate") == "mean" for r in rules)
    for r in rules:
        RuleCreate.model_validate(r)
