"""PostgreSQL stopped and restarted under `foresight serve` while clients stream batches.

While the database is down, every request (and /ready) answers 503 with Retry-After, as
problem+json; nothing answers 500 and the server keeps running. Once PostgreSQL is back, ingest
succeeds again without restarting Foresight (the pool reconnects, the writer thread lives on),
no acknowledged point is lost, and the clients' retries of refused batches store nothing twice.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
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

TAGS = [f"P-{i}" for i in range(4)]
WORKLOAD = Workload(tags=TAGS, sensors=["s0", "s1", "s2", "s3", "s4"], steps=25, batches=300)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_down_answers_503_and_ingest_recovers_by_itself(
    mode: str, tmp_path: Path, procs: Processes, pg_cluster: PostgresCluster
) -> None:
    url = pg_cluster.create_database()
    tenant = prepare(url, TAGS)
    with explained(procs, pg_cluster.log_tail):
        server = Server(procs, foresight_env(url, tmp_path), tmp_path)
        load = Load(server.base, tenant, WORKLOAD, list(range(WORKLOAD.batches)), threads=3)
        with load:
            wait_for(lambda: len(load.acked) >= 20, timeout_s=120, what="20 acknowledged batches")
            pg_cluster.stop(mode)  # `pg_ctl stop -w`: returns once PostgreSQL is down
            down_since = time.monotonic()
            n_answers = len(load.answers)
            wait_for(
                lambda: sum(1 for a in load.answers[n_answers:] if a.started > down_since) >= 20,
                timeout_s=60,
                what="20 requests answered while PostgreSQL is down",
            )
            # Down for a while, not a blip: every pooled connection is dead by now.
            time.sleep(max(0.0, 2.0 - (time.monotonic() - down_since)))
            ready = httpx.get(f"{server.base}/ready", timeout=30)
            assert ready.status_code == 503, ready.text
            acked_before_restart = len(load.acked)
            down_until = time.monotonic()
            pg_cluster.start()
            wait_for(lambda: len(load.acked) >= acked_before_restart + 20, timeout_s=120,
                     what="20 more acknowledged batches after PostgreSQL is back")  # fmt: skip
            load.join(timeout_s=180)
        assert server.proc.alive(), "foresight serve died"
        assert not load.failures, load.failures[:5]

        # While it was down: 503 with Retry-After, problem+json; never a 500 or no answer.
        down = [a for a in load.answers if a.started > down_since and a.finished < down_until]
        assert len(down) >= 20
        wrong = [(a.status, a.body[:300]) for a in down if a.status != 503]
        assert not wrong, f"answers while PostgreSQL was down: {wrong[:5]}"
        for answer in down:
            assert int(answer.headers["retry-after"]) >= 1, answer.headers
            assert answer.headers["content-type"].startswith("application/problem+json")
        assert set(load.statuses()) <= {200, 503}, load.statuses()
        assert httpx.get(f"{server.base}/ready", timeout=30).status_code == 200

        # Nothing acknowledged is lost; every batch refused meanwhile was retried until stored,
        # and the retries (of batches that may have been committed) stored nothing twice.
        assert load.acked == set(range(WORKLOAD.batches))
        final = stored(url, tenant.id)
        final.check_exactly(WORKLOAD.expected(load.acked))
        final.check_consistent()
