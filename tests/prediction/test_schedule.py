"""The predictive engine's schedules: scoring and retraining when due (state from the database),
one runner at a time, failures kept to their tenant, prompt stop; the commands for external
schedulers and the example Airflow DAG. Time is an injected clock; nothing waits on the wall
clock except bounded waits for events."""

from __future__ import annotations

import ast
import itertools
import re
import shlex
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from foresight.cli import app as cli_app
from foresight.config import Settings, get_settings
from foresight.kit.db import Database
from foresight.kit.time import utcnow
from foresight.maintenance import service as maintenance_service
from foresight.maintenance.schemas import MaintenanceCreate
from foresight.models import JobStatus, MaintenanceKind, ModelVersion, Prediction, TrainingJob
from foresight.prediction import schedule, service
from foresight.prediction.schedule import RETRAINING, SCORING, Scheduler
from foresight.web.app import create_app
from tests.factories import Factory
from tests.prediction.fleet_sim import FEATURES, TRAINING, add_asset, at, principal, simulate

ROOT = Path(__file__).resolve().parents[2]
DAG = ROOT / "examples" / "airflow" / "foresight_dag.py"
HOUR = 3600.0
WEEK = 7 * 24 * HOUR
FAST = {"feature_config": FEATURES, "train_config": TRAINING}
EVENT_WAIT_S = 60.0  # a bound on waiting for an event, never a timing assertion


class Clock:
    """The scheduler's idea of now; tests move it."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The scheduler's clock, and the one predictions are stamped with (``computed_at``)."""
    clock = Clock()
    monkeypatch.setattr(service, "utcnow", clock)
    return clock


@pytest.fixture
def make(db: Database, clock: Clock) -> Iterator[Callable[..., Scheduler]]:
    made: list[Scheduler] = []

    def build(**kwargs: Any) -> Scheduler:
        options: dict[str, Any] = {
            "scoring_interval_s": HOUR,
            "retrain_interval_s": WEEK,
            "clock": clock,
            "train_kwargs": FAST,
        }
        options.update(kwargs)
        scheduler = Scheduler(db, **options)
        made.append(scheduler)
        return scheduler

    yield build
    for scheduler in made:  # no thread outlives its test
        scheduler.stop()
        scheduler.wait(EVENT_WAIT_S)


def predictions(db: Database, tenant_id: uuid.UUID | None = None) -> int:
    query = select(func.count()).select_from(Prediction)
    if tenant_id is not None:
        query = query.where(Prediction.tenant_id == tenant_id)
    with db.transaction(write=False) as session:
        return int(session.scalar(query) or 0)


def jobs(db: Database, tenant_id: uuid.UUID) -> list[TrainingJob]:
    with db.transaction(write=False) as session:
        return list(
            session.scalars(
                select(TrainingJob)
                .where(TrainingJob.tenant_id == tenant_id)
                .order_by(TrainingJob.created_at)
            )
        )


def add_failure(db: Database, tenant_id: uuid.UUID, asset_id: uuid.UUID) -> None:
    with db.transaction() as session:
        maintenance_service.create_record(
            session,
            principal=principal(tenant_id),
            asset_id=asset_id,
            data=MaintenanceCreate(kind=MaintenanceKind.failure, started_at=at(1_767_225_600_000)),
        )


# --- scoring ----------------------------------------------------------------------------------


def test_scoring_runs_when_due_and_not_before(
    db: Database, factory: Factory, clock: Clock, make: Callable[..., Scheduler]
) -> None:
    tenant = factory.tenant()
    factory.tenant()  # no assets: nothing to score
    add_asset(db, tenant.id, "P-01")
    add_asset(db, tenant.id, "P-02")
    registry = CollectorRegistry()
    published: list[tuple[uuid.UUID, uuid.UUID, dict[str, Any]]] = []
    scheduler = make(registry=registry, publish=lambda *event: published.append(event))

    first = scheduler.run(SCORING)
    assert [(o.tenant, o.ok, o.assets_scored) for o in first.outcomes] == [(tenant.name, True, 2)]
    assert predictions(db, tenant.id) == 2
    # Each asset's first score is a change: pushed live as a health event.
    assert sorted(e[2]["type"] for e in published) == ["health", "health"]
    assert {e[0] for e in published} == {tenant.id}
    assert registry.get_sample_value("foresight_schedule_assets_scored_total") == 2
    runs = {"job": "scoring", "outcome": "ok"}
    assert registry.get_sample_value("foresight_schedule_tenant_runs_total", runs) == 1
    last = registry.get_sample_value(
        "foresight_schedule_last_run_timestamp_seconds", {"job": "scoring"}
    )
    assert last == clock.now.timestamp()

    assert scheduler.run(SCORING).outcomes == []  # just done
    clock.advance(0.9 * HOUR)
    assert scheduler.run(SCORING).outcomes == []
    clock.advance(0.2 * HOUR)
    assert scheduler.run(SCORING).assets_scored == 2
    assert predictions(db, tenant.id) == 4


def test_last_run_comes_from_the_database_and_missed_runs_catch_up_once(
    db: Database, factory: Factory, clock: Clock, make: Callable[..., Scheduler]
) -> None:
    tenant = factory.tenant()
    add_asset(db, tenant.id, "P-01")
    assert make().run(SCORING).assets_scored == 1
    # A restart: a new scheduler (nothing in memory) finds it done.
    assert make().run(SCORING).outcomes == []
    # Down for five intervals: one run catches up, not five.
    clock.advance(5 * HOUR)
    restarted = make()
    assert restarted.run(SCORING).assets_scored == 1
    assert restarted.run(SCORING).outcomes == []
    assert predictions(db, tenant.id) == 2


def test_predictions_made_on_demand_count_and_new_assets_fall_into_step(
    db: Database, factory: Factory, clock: Clock, make: Callable[..., Scheduler]
) -> None:
    tenant = factory.tenant()
    first, _ = add_asset(db, tenant.id, "P-01")
    service.predict(db, tenant.id, [first])  # on demand (the API, or `foresight predict`)
    scheduler = make()
    assert scheduler.run(SCORING).outcomes == []
    clock.advance(0.3 * HOUR)
    add_asset(db, tenant.id, "P-02")  # never scored: due at once, alone (P-01 is recent)
    assert scheduler.run(SCORING).assets_scored == 1
    clock.advance(0.7 * HOUR)  # P-01 is due; P-02, over half an interval old, comes along
    assert scheduler.run(SCORING).assets_scored == 2
    clock.advance(0.6 * HOUR)
    assert scheduler.run(SCORING).outcomes == []
    clock.advance(0.4 * HOUR)
    assert scheduler.run(SCORING).assets_scored == 2  # in step from now on
    assert predictions(db, tenant.id) == 1 + 1 + 2 + 2


def test_a_tenant_whose_scoring_fails_does_not_stop_the_others(
    db: Database,
    factory: Factory,
    clock: Clock,
    make: Callable[..., Scheduler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad, good = factory.tenant("a-bad"), factory.tenant("b-good")
    add_asset(db, bad.id, "P-01")
    add_asset(db, good.id, "P-01")
    real = service.predict

    def predict(db_: Database, tenant_id: uuid.UUID, *args: Any, **kwargs: Any) -> Any:
        if tenant_id == bad.id:
            raise RuntimeError("feature store unreadable")
        return real(db_, tenant_id, *args, **kwargs)

    monkeypatch.setattr(service, "predict", predict)
    registry = CollectorRegistry()
    scheduler = make(registry=registry)
    round_ = scheduler.run(SCORING)
    assert [(o.tenant, o.ok) for o in round_.outcomes] == [("a-bad", False), ("b-good", True)]
    assert "feature store unreadable" in round_.outcomes[0].detail
    assert predictions(db, good.id) == 1 and predictions(db, bad.id) == 0
    failed = {"job": "scoring", "outcome": "failed"}
    assert registry.get_sample_value("foresight_schedule_tenant_runs_total", failed) == 1
    # Held back for a while rather than retried at every check.
    assert scheduler.run(SCORING).outcomes == []
    monkeypatch.setattr(service, "predict", real)
    clock.advance(schedule.SCORING_RETRY_S + 1)
    assert [(o.tenant, o.ok) for o in scheduler.run(SCORING).outcomes] == [("a-bad", True)]


# --- retraining -------------------------------------------------------------------------------


def test_retraining_records_jobs_keeps_failures_to_their_tenant_and_is_due_weekly(
    db: Database, factory: Factory, clock: Clock, make: Callable[..., Scheduler]
) -> None:
    bad, good = factory.tenant("a-bad"), factory.tenant("b-good")
    factory.tenant("c-no-failures")
    asset_id, _ = add_asset(db, bad.id, "P-01")
    add_failure(db, bad.id, asset_id)  # a failure, but no data to learn from
    simulate(db, good.id)
    scheduler = make()

    round_ = scheduler.run(RETRAINING)
    assert [(o.tenant, o.ok) for o in round_.outcomes] == [("a-bad", False), ("b-good", True)]
    (failed,) = jobs(db, bad.id)
    assert failed.status is JobStatus.failed and "insufficient data" in (failed.error or "")
    assert failed.requested_by == schedule.REQUESTED_BY
    (done,) = jobs(db, good.id)
    assert done.status is JobStatus.succeeded and done.progress == 1.0
    assert done.model_version_id is not None
    assert "model version 1: champion" in round_.outcomes[1].detail

    # A new scheduler, the same week: nothing is due (the failed job holds back for a day).
    assert make().run(RETRAINING).outcomes == []
    with db.transaction(write=False) as session:
        clock.advance(2 * 86_400)
        assert [d.tenant for d in schedule.retraining_due(session, clock(), WEEK)] == ["a-bad"]
        clock.advance(6 * 86_400)
        due = schedule.retraining_due(session, clock(), WEEK)
        assert [d.tenant for d in due] == ["a-bad", "b-good"]


def test_a_tenant_is_claimed_once(
    db: Database, factory: Factory, clock: Clock, make: Callable[..., Scheduler]
) -> None:
    tenant = factory.tenant()
    asset_id, _ = add_asset(db, tenant.id, "P-01")
    add_failure(db, tenant.id, asset_id)
    first, second = make(), make()
    assert first._claim(tenant.id, clock(), WEEK) is not None
    assert second._claim(tenant.id, clock(), WEEK) is None  # the queued job counts


def _blocking_train(
    entered: threading.Event, release: threading.Event, stopping: Callable[[], bool] | None
) -> Callable[..., Any]:
    def train(db: Database, tenant_id: uuid.UUID, **kwargs: Any) -> Any:
        progress = kwargs["progress"]
        progress(0.05, "building features")
        entered.set()
        while not release.wait(0.01):
            if stopping is not None and stopping():
                break
        progress(0.3, "training")  # where a stop takes effect
        raise AssertionError("a stopped training went on")

    return train


def test_stop_interrupts_a_training_at_its_next_step(
    db: Database,
    factory: Factory,
    make: Callable[..., Scheduler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant = factory.tenant()
    asset_id, _ = add_asset(db, tenant.id, "P-01")
    add_failure(db, tenant.id, asset_id)
    scheduler = make(scoring_interval_s=0, stop_grace_s=EVENT_WAIT_S)
    entered, release = threading.Event(), threading.Event()
    monkeypatch.setattr(
        service, "train", _blocking_train(entered, release, scheduler._stopping.is_set)
    )
    scheduler.start()
    assert entered.wait(EVENT_WAIT_S)
    # Meanwhile another runner skips the round (one process here, another there on PostgreSQL).
    assert make().run(RETRAINING).skipped
    scheduler.stop()
    assert not scheduler.running
    (job,) = jobs(db, tenant.id)
    assert job.status is JobStatus.failed and job.error == service.JOB_INTERRUPTED
    assert job.model_version_id is None and job.finished_at is not None
    round_ = scheduler.last_rounds[RETRAINING]
    assert round_.outcomes[0].interrupted
    # An interrupted run does not count as done: due again at once.
    with db.transaction(write=False) as session:
        assert [d.tenant_id for d in schedule.retraining_due(session, utcnow(), WEEK)] == [
            tenant.id
        ]


def test_stop_does_not_wait_for_a_training_that_is_busy(
    db: Database,
    factory: Factory,
    make: Callable[..., Scheduler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant = factory.tenant()
    asset_id, _ = add_asset(db, tenant.id, "P-01")
    add_failure(db, tenant.id, asset_id)
    entered, release = threading.Event(), threading.Event()
    monkeypatch.setattr(service, "train", _blocking_train(entered, release, None))
    scheduler = make(scoring_interval_s=0, stop_grace_s=0)
    scheduler.start()
    assert entered.wait(EVENT_WAIT_S)
    scheduler.stop()  # returns although the fit goes on
    assert scheduler.running and not release.is_set()
    (job,) = jobs(db, tenant.id)
    assert job.status is JobStatus.failed and job.error == service.JOB_INTERRUPTED
    assert job.stage == "interrupted"
    release.set()  # the abandoned thread ends at its next step, recording nothing
    assert scheduler.wait(EVENT_WAIT_S)
    (job,) = jobs(db, tenant.id)
    assert job.status is JobStatus.failed and job.error == service.JOB_INTERRUPTED
    with db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(ModelVersion)) == 0


# --- one runner at a time ---------------------------------------------------------------------


def test_a_runner_elsewhere_holding_the_lock_makes_the_round_skip(
    db: Database, factory: Factory, make: Callable[..., Scheduler]
) -> None:
    tenant = factory.tenant()
    add_asset(db, tenant.id, "P-01")
    scheduler = make()
    with _held_elsewhere(db, SCORING):
        round_ = scheduler.run(SCORING)
        assert round_.skipped and round_.outcomes == []
        assert predictions(db) == 0
        assert scheduler.run(RETRAINING).skipped is None  # each job has its own lock
    assert scheduler.run(SCORING).assets_scored == 1


class _held_elsewhere:  # noqa: N801 - used as a context manager
    """The job's lock held the way another process would hold it: a PostgreSQL session's
    advisory lock, or the lock file's flock on an open file of its own."""

    def __init__(self, db: Database, job: schedule.Job) -> None:
        self.db, self.job = db, job
        self._exit: Callable[[], None] = lambda: None

    def __enter__(self) -> None:
        if self.db.engine.dialect.name == "postgresql":
            conn = self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            key = {"k": schedule._LOCK_KEYS[self.job]}
            assert conn.execute(text("SELECT pg_try_advisory_lock(:k)"), key).scalar()

            def release() -> None:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), key)
                conn.close()

            self._exit = release
        else:
            import fcntl

            path = schedule.lock_path(self.db, self.job)
            assert path is not None
            handle = path.open("a+b")
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._exit = handle.close

    def __exit__(self, *exc: object) -> None:
        self._exit()


# --- in the API process ---------------------------------------------------------------------


def test_the_api_process_runs_the_schedules_and_stops_them(
    settings: Settings, db: Database, factory: Factory
) -> None:
    tenant = factory.tenant()
    add_asset(db, tenant.id, "P-01")
    embedded = settings.model_copy(update={"schedule_embedded": True, "retrain_interval_s": 0})
    app = create_app(embedded, db)
    scheduler: Scheduler = app.state.prediction_schedule
    with TestClient(app) as client:
        assert scheduler.running
        body = client.get("/metrics").text
        assert "foresight_schedule_assets_scored_total" in body
    assert scheduler.wait(EVENT_WAIT_S)  # stopped with the app (a bound, not a timing check)
    off = create_app(settings, db)  # FORESIGHT_SCHEDULE_EMBEDDED=false
    with TestClient(off):
        assert not off.state.prediction_schedule.running


# --- the commands -----------------------------------------------------------------------------


@pytest.fixture
def cli(database_url: str, db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("FORESIGHT_DATABASE_URL", database_url)
    monkeypatch.setenv("FORESIGHT_LOG_JSON", "false")
    monkeypatch.setattr(service, "DEFAULT_FEATURE_CONFIG", FEATURES)
    monkeypatch.setattr(service, "DEFAULT_TRAIN_CONFIG", TRAINING)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def invoke(runner: CliRunner, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(cli_app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_schedule_run_once(cli: CliRunner, db: Database, factory: Factory) -> None:
    tenant = factory.tenant("acme")
    asset_id, _ = add_asset(db, tenant.id, "P-01")
    add_asset(db, tenant.id, "P-02")
    code, stdout, stderr = invoke(cli, "schedule", "run", "--once", "--no-retraining")
    assert code == 0, stderr
    assert "scoring: 1 tenant(s) done, 0 failed, 2 asset(s) scored" in stdout
    assert "retraining" not in stdout
    code, stdout, _ = invoke(cli, "schedule", "run", "--once", "--no-retraining")
    assert code == 0 and "scoring: nothing due" in stdout
    add_failure(db, tenant.id, asset_id)  # too little data: the training fails, exit 1
    code, stdout, _ = invoke(cli, "schedule", "run", "--once")
    assert code == 1
    assert "scoring: nothing due" in stdout and "retraining: 0 tenant(s) done, 1 failed" in stdout
    assert "acme: failed: insufficient data" in stdout
    code, _, stderr = invoke(cli, "schedule", "run", "--once", "--no-scoring", "--no-retraining")
    assert code == 2 and "nothing to run" in stderr


def test_predict_and_train_all_tenants(cli: CliRunner, db: Database, factory: Factory) -> None:
    a, b = factory.tenant("a-plant"), factory.tenant("b-plant")
    factory.tenant("c-empty")
    simulate(db, a.id, assets=6)
    asset_id, _ = add_asset(db, b.id, "M-01")
    add_failure(db, b.id, asset_id)

    code, stdout, stderr = invoke(cli, "predict", "--all-tenants", "--format", "csv")
    assert code == 0, stderr
    header, *lines = stdout.strip().splitlines()
    assert header.split(",")[:2] == ["tenant", "asset"]
    assert [line.split(",")[0] for line in lines] == ["a-plant"] * 6 + ["b-plant"]
    assert predictions(db, a.id) == 6 and predictions(db, b.id) == 1
    code, _, stderr = invoke(cli, "predict", "--all-tenants", "--tenant", "a-plant")
    assert code == 2 and "excludes" in stderr

    code, stdout, stderr = invoke(cli, "train", "--all-tenants")
    assert code == 1  # b-plant has too little data
    assert "tenant a-plant: model version 1: champion" in stdout
    assert "tenant c-empty: skipped (no failure records)" in stdout
    assert "tenant b-plant: not enough data" in stderr
    with db.transaction(write=False) as session:  # a version trained by hand counts as done
        assert [d.tenant for d in schedule.retraining_due(session, utcnow(), WEEK)] == ["b-plant"]
    code, _, stderr = invoke(cli, "train", "--all-tenants", "--tenant", "a-plant")
    assert code == 2


# --- the example Airflow DAG ------------------------------------------------------------------


_SHELL_STOPS = ("|", "&&", "||", ";")


def _foresight_command(line: str) -> list[str] | None:
    """A shell line's `foresight …` arguments (after VAR=value prefixes, before any
    redirection or next command), or None when it runs something else."""
    words = shlex.split(line, comments=True)
    while words and "=" in words[0] and not words[0].startswith("-"):
        words = words[1:]
    if not words or words[0] != "foresight":
        return None
    args = []
    for word in words[1:]:
        if word in _SHELL_STOPS or word[:1] in "<>" or word[:2] in ("1>", "2>"):
            break
        args.append(word)
    return args


def _check(args: list[str]) -> None:
    """``args`` is a real command with options it takes: typer parses them (an unknown command
    or option, or an option without its value, is a usage error) with ``--help`` put right
    after the command's name, so that nothing runs."""
    path = list(itertools.takewhile(lambda word: not word.startswith("-"), args))
    result = CliRunner().invoke(cli_app, [*path, "--help", *args[len(path) :]])
    assert result.exit_code == 0, f"foresight {shlex.join(args)}: {result.output}"
    assert "Usage:" in result.output


def test_the_airflow_dag_runs_real_commands() -> None:
    source = DAG.read_text()
    tree = ast.parse(source)
    operators = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "BashOperator"
    ]
    assert len(operators) >= 2
    commands = []
    for call in operators:
        (bash,) = [kw.value for kw in call.keywords if kw.arg == "bash_command"]
        assert isinstance(bash, ast.Constant) and isinstance(bash.value, str)
        args = _foresight_command(bash.value)
        assert args is not None, bash.value
        commands.append(args)
    assert {c[0] for c in commands} == {"predict", "train"}
    for args in commands:
        _check(args)
    schedules = {
        kw.value.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        for kw in n.keywords
        if kw.arg == "schedule" and isinstance(kw.value, ast.Constant)
    }
    assert schedules == {"@hourly", "@weekly"}


def test_the_command_checker_refuses_what_the_cli_refuses() -> None:
    _check(["predict", "--all-tenants", "--format", "csv"])
    _check(["schedule", "run", "--once", "--no-retraining"])
    for wrong in (["predict", "--every-tenant"], ["forecast"], ["predict", "--format"]):
        with pytest.raises(AssertionError):
            _check(wrong)
    assert _foresight_command("FOO=1 foresight train --all-tenants > log 2>&1") == [
        "train",
        "--all-tenants",
    ]


def test_the_readme_cron_lines_run_real_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("# crontab (foresight schedules)", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.strip().splitlines():
        fields = line.removeprefix("# ").split(None, 5)  # five time fields, then the command
        if len(fields) == 6 and re.fullmatch(r"[\d*/,-]+", fields[0]):
            args = _foresight_command(fields[5])
            assert args is not None, line
            commands.append(args)
    assert [c[:2] for c in commands] == [
        ["predict", "--all-tenants"],
        ["train", "--all-tenants"],
        ["schedule", "run"],
    ]
    for args in commands:
        _check(args)
