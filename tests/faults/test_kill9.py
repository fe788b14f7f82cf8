"""`kill -9` of `foresight serve` during sustained ingest: every 2xx'd point survives the restart.

Three client threads stream batches; the server is killed with SIGKILL (its whole process group)
while requests are in flight. After a restart on the same database every point that was answered
2xx is stored exactly once, and the rollups count exactly the raw points. The clients then resend
the batches that got no answer (some of which were committed before the kill): the store ends up
holding every point once, rollups exact.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.harness import (
    Load,
    PostgresCluster,
    Processes,
    Server,
    Workload,
    explained,
    foresight_env,
    prepare,
    stored,
    wait_for,
)

pytestmark = [pytest.mark.faults]

TAGS = [f"K-{i}" for i in range(4)]
WORKLOAD = Workload(tags=TAGS, sensors=["s0", "s1", "s2", "s3", "s4"], steps=25, batches=2000)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_during_sustained_ingest_keeps_every_acknowledged_point(
    backend: str, tmp_path: Path, procs: Processes, request: pytest.FixtureRequest
) -> None:
    extra: tuple[Callable[[], str], ...] = ()
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'foresight.db'}"
    else:
        cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
        url = cluster.create_database()
        extra = (cluster.log_tail,)
    tenant = prepare(url, TAGS)
    env = foresight_env(url, tmp_path)
    with explained(procs, *extra):
        server = Server(procs, env, tmp_path)
        load = Load(server.base, tenant, WORKLOAD, list(range(WORKLOAD.batches)),
                    threads=3, stop_on_no_answer=True)  # fmt: skip
        with load:
            # Sustained: well into the run, with every client thread mid-request.
            wait_for(lambda: len(load.acked) >= 40, timeout_s=120, what="40 acknowledged batches")
            server.proc.kill9()
            load.join(timeout_s=90)  # each thread stops at its first unanswered request
        acked, unanswered = set(load.acked), load.unacked
        assert not load.failures, load.failures[:5]
        assert load.statuses()[None] >= 1, "the kill interrupted no request"
        assert acked and unanswered, (len(acked), len(unanswered))

        # Restarted on the same database: every acknowledged point is there, once.
        server = Server(procs, env, tmp_path)
        after_restart = stored(url, tenant.id)
        after_restart.check_has(WORKLOAD.expected(acked), "acknowledged")
        after_restart.check_consistent()
        # Unanswered batches may be stored, entirely or not at all, never partly or twice.
        for index in unanswered:
            keys = WORKLOAD.keys(index)
            present = sum(1 for k in keys if k in after_restart.values)
            assert present in (0, len(keys)), f"batch {index}: {present}/{len(keys)} points stored"
        assert set(after_restart.values) <= set(WORKLOAD.expected(acked | unanswered))

        # The clients resend what got no answer: now everything is there exactly once.
        with Load(server.base, tenant, WORKLOAD, sorted(unanswered), threads=2) as resend:
            resend.join(timeout_s=120)
        assert resend.acked == unanswered and not resend.failures, resend.failures[:5]
        final = stored(url, tenant.id)
        final.check_exactly(WORKLOAD.expected(acked | unanswered))
        final.check_consistent()
