"""The scale-out shape under faults: `foresight serve` publishing to a second nats-server of the
test's own, `foresight worker` processes persisting into a throwaway PostgreSQL.

- A worker killed (SIGKILL) while it holds unacknowledged messages: the remaining workers get
  them redelivered and finish; nothing is lost or doubled.
- The same batches sent twice, concurrently, with two workers persisting in parallel (so the
  copies of a point race each other in PostgreSQL): every point once, rollups exact; sending them
  all a third time changes no rollup.
- nats-server restarted mid-stream: the API answers 503 meanwhile, API node and workers reconnect
  by themselves, and everything acknowledged is persisted once.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.faults.harness import (
    Load,
    NatsServer,
    PostgresCluster,
    Processes,
    Server,
    Stored,
    Tenant,
    Workload,
    count_points,
    explained,
    foresight_env,
    nats_settings,
    prepare,
    start_worker,
    stored,
    wait_for,
)

pytestmark = [pytest.mark.faults]

TAGS = [f"N-{i}" for i in range(4)]
WORKLOAD = Workload(tags=TAGS, sensors=["s0", "s1", "s2", "s3", "s4"], steps=25, batches=300)
ACK_WAIT_S = 3.0
LEASE_TTL_S = 3.0


class Setup:
    def __init__(self, tmp_path: Path, procs: Processes, cluster: PostgresCluster) -> None:
        self.tmp_path, self.procs, self.cluster = tmp_path, procs, cluster
        self.url = cluster.create_database()
        self.tenant: Tenant = prepare(self.url, TAGS)
        self.nats = NatsServer(procs, tmp_path).start()
        self.nats.create_stream()
        # Short ack wait and leases, so a dead worker's partitions and messages come back
        # within seconds, not 30.
        self.env = foresight_env(
            self.url, tmp_path, **nats_settings(self.nats),
            nats_ack_wait_s=str(ACK_WAIT_S), nats_lease_ttl_s=str(LEASE_TTL_S),
        )  # fmt: skip
        self.server = Server(procs, self.env, tmp_path)

    def worker(self) -> object:
        return start_worker(self.procs, self.env, self.tmp_path)

    def wait_persisted(self, points: int, timeout_s: float = 120) -> None:
        def done() -> bool:
            return count_points(self.url) >= points and self.nats.drained()

        wait_for(done, timeout_s=timeout_s, what=f"the workers to persist {points} points "
                 f"(now {count_points(self.url)}; consumer {self.nats.consumer()})")  # fmt: skip

    def explained(self) -> object:
        return explained(self.procs, self.cluster.log_tail)

    def stored(self) -> Stored:
        return stored(self.url, self.tenant.id)


@pytest.fixture
def setup(tmp_path: Path, procs: Processes, pg_cluster: PostgresCluster) -> Setup:
    return Setup(tmp_path, procs, pg_cluster)


def test_a_worker_killed_mid_stream_loses_and_doubles_nothing(setup: Setup) -> None:
    with explained(setup.procs, setup.cluster.log_tail):
        victim = start_worker(setup.procs, setup.env, setup.tmp_path)
        everything = list(range(WORKLOAD.batches))
        with Load(setup.server.base, setup.tenant, WORKLOAD, everything, threads=3) as load:
            wait_for(lambda: count_points(setup.url) > 0, timeout_s=60,
                     what="the first worker's first commit")  # fmt: skip

            # Freeze the only worker and look: does it hold delivered, unacknowledged messages?
            # (Else let it run a moment and look again.) Then kill it, frozen, mid-stream.
            def holding() -> bool:
                victim.signal(signal.SIGSTOP)
                if setup.nats.consumer().num_ack_pending > 0:
                    return True
                victim.signal(signal.SIGCONT)
                time.sleep(0.05)
                return False

            wait_for(holding, timeout_s=60, what="the worker to hold unacknowledged messages")
            survivors = [start_worker(setup.procs, setup.env, setup.tmp_path) for _ in range(2)]
            victim.kill9()
            load.join(timeout_s=120)
        assert load.acked == set(everything) and not load.failures, load.failures[:5]
        setup.wait_persisted(WORKLOAD.batches * WORKLOAD.points_per_batch)
        assert all(w.alive() for w in survivors), "a surviving worker died"
        # The dead worker's messages were delivered again (to the survivors): the consumers
        # count more deliveries than the stream has messages.
        consumers = setup.nats.consumer()
        assert consumers.delivered_total > setup.nats.messages(), consumers
        final = setup.stored()
        final.check_exactly(WORKLOAD.expected(set(everything)))
        final.check_consistent()


def test_the_same_batches_twice_with_parallel_workers_store_each_point_once(
    setup: Setup,
) -> None:
    with explained(setup.procs, setup.cluster.log_tail):
        workers = [start_worker(setup.procs, setup.env, setup.tmp_path) for _ in range(2)]
        batches = list(range(80))
        twice = [i for i in batches for _ in range(2)]  # each batch twice, back to back
        with Load(setup.server.base, setup.tenant, WORKLOAD, twice, threads=4) as load:
            load.join(timeout_s=120)
        assert load.acked == set(batches) and not load.failures, load.failures[:5]
        assert sum(1 for a in load.answers if a.status == 200) == len(twice)
        expected = WORKLOAD.expected(set(batches))
        setup.wait_persisted(len(expected))
        first = setup.stored()
        first.check_exactly(expected)
        first.check_consistent()

        # A third time: no point and no rollup changes.
        with Load(setup.server.base, setup.tenant, WORKLOAD, batches, threads=4) as again:
            again.join(timeout_s=120)
        assert again.acked == set(batches) and not again.failures, again.failures[:5]
        setup.wait_persisted(len(expected))
        last = setup.stored()
        assert (last.values, last.rollups) == (first.values, first.rollups)
        assert all(w.alive() for w in workers)


def test_nats_restarted_mid_stream_api_and_workers_reconnect(setup: Setup) -> None:
    with explained(setup.procs, setup.cluster.log_tail):
        workers = [start_worker(setup.procs, setup.env, setup.tmp_path) for _ in range(2)]
        everything = list(range(WORKLOAD.batches))
        with Load(setup.server.base, setup.tenant, WORKLOAD, everything, threads=3) as load:
            wait_for(lambda: len(load.acked) >= 20, timeout_s=60, what="20 acknowledged batches")
            setup.nats.stop()
            down_since = time.monotonic()
            wait_for(
                lambda: sum(1 for a in load.answers if a.started > down_since) >= 5,
                timeout_s=120,
                what="5 requests answered while nats-server is down",
            )
            down_until = time.monotonic()
            setup.nats.start()
            load.join(timeout_s=180)
        assert setup.server.proc.alive(), "foresight serve died"
        assert load.acked == set(everything) and not load.failures, load.failures[:5]
        down = [a for a in load.answers if a.started > down_since and a.finished < down_until]
        assert down and all(a.status == 503 and "retry-after" in a.headers for a in down), [
            (a.status, a.body[:200]) for a in down
        ][:5]
        setup.wait_persisted(WORKLOAD.batches * WORKLOAD.points_per_batch)
        assert all(w.alive() for w in workers), "a worker died with the NATS connection"
        final = setup.stored()
        final.check_exactly(WORKLOAD.expected(set(everything)))
        final.check_consistent()


def test_postgres_restarted_under_the_workers_they_recover_by_themselves(setup: Setup) -> None:
    with explained(setup.procs, setup.cluster.log_tail):
        workers = [start_worker(setup.procs, setup.env, setup.tmp_path) for _ in range(2)]
        backlog, during = list(range(200)), list(range(200, WORKLOAD.batches))
        with Load(setup.server.base, setup.tenant, WORKLOAD, backlog, threads=3) as first:
            first.join(timeout_s=120)
        wait_for(lambda: count_points(setup.url) > 0, timeout_s=60, what="a first commit")
        setup.cluster.stop("immediate")  # the workers lose their connections mid-transaction
        down_since = time.monotonic()
        assert not setup.nats.drained(), "the workers were done before PostgreSQL went down"
        with Load(setup.server.base, setup.tenant, WORKLOAD, during, threads=3) as load:
            wait_for(
                lambda: sum(1 for a in load.answers if a.started > down_since) >= 10,
                timeout_s=60,
                what="10 requests answered while PostgreSQL is down",
            )
            time.sleep(max(0.0, 2.0 - (time.monotonic() - down_since)))
            down_until = time.monotonic()
            setup.cluster.start()
            load.join(timeout_s=180)
        assert first.acked | load.acked == set(range(WORKLOAD.batches)), "batches not acked"
        assert not first.failures and not load.failures, (first.failures + load.failures)[:5]
        down = [a for a in load.answers if a.finished < down_until]
        assert down and all(a.status == 503 and "retry-after" in a.headers for a in down), [
            (a.status, a.body[:200]) for a in down
        ][:5]
        setup.wait_persisted(WORKLOAD.batches * WORKLOAD.points_per_batch)
        assert all(w.alive() for w in workers), "a worker died with the database"
        final = setup.stored()
        final.check_exactly(WORKLOAD.expected(set(range(WORKLOAD.batches))))
        final.check_consistent()
