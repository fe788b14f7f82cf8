"""The `foresight` command line. Every command honours FORESIGHT_DATABASE_URL (and .env)."""

from __future__ import annotations

import getpass
import json
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from foresight.audit import service as audit_service
from foresight.audit.schemas import Actor
from foresight.auth import service as auth_service
from foresight.auth.schemas import ApiKeyCreate, UserCreate
from foresight.config import Settings, get_settings
from foresight.ingest import importer
from foresight.ingest.batch import Limits
from foresight.kit import migrate
from foresight.kit.db import Database
from foresight.kit.errors import DomainError
from foresight.models import Role
from foresight.tenants import service as tenants_service

if TYPE_CHECKING:
    from foresight.prediction.service import TrainResult

app = typer.Typer(help="Foresight: predictive maintenance.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants.", no_args_is_help=True)
user_app = typer.Typer(help="Users.", no_args_is_help=True)
apikey_app = typer.Typer(help="Device API keys (ingest only).", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit trail.", no_args_is_help=True)
demo_app = typer.Typer(help="The demo tenant used by `make run`.", no_args_is_help=True)
for sub, name in (
    (db_app, "db"),
    (tenant_app, "tenant"),
    (user_app, "user"),
    (apikey_app, "apikey"),
    (audit_app, "audit"),
    (demo_app, "demo"),
):
    app.add_typer(sub, name=name)
import_app = typer.Typer(help="Import files (CSV, CSV.gz or Parquet).", no_args_is_help=True)
# Every `foresight bench …` command registers on this one sub-app.
bench_app = typer.Typer(help="Benchmarks.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(bench_app, name="bench")
eval_app = typer.Typer(help="Accuracy evaluations.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")

out = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        for error in exc.errors():
            err.print(f"[red]configuration error:[/red] {error['msg']}")
        raise typer.Exit(2) from exc


def _actor(tenant_id: uuid.UUID | None = None) -> Actor:
    return Actor.system(f"cli:{getpass.getuser()}", tenant_id)


@contextmanager
def _unit_of_work() -> Iterator[Session]:
    settings = _settings()
    database = Database.from_url(settings.effective_database_url)
    try:
        with database.transaction() as session:
            yield session
    except DomainError as exc:
        err.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(1) from exc
    finally:
        database.dispose()


# --- serve ----------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes")] = 1,
) -> None:
    """Run the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    from foresight.kit.logging import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, json=settings.log_json)
    uvicorn.run(
        "foresight.web.app:app_factory",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        proxy_headers=True,
        log_config=None,
    )


# --- db -------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    settings = _settings()
    migrate.upgrade(settings.effective_database_url, revision)
    out.print(f"database at revision {revision}: {_safe_url(settings)}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument()]) -> None:
    """Revert migrations down to REVISION (e.g. base)."""
    settings = _settings()
    migrate.downgrade(settings.effective_database_url, revision)
    out.print(f"database at revision {revision}")


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.effective_database_url).render_as_string(hide_password=True)


# --- tenants --------------------------------------------------------------------------------


@tenant_app.command("create")
def tenant_create(name: Annotated[str, typer.Argument(help="Unique tenant name")]) -> None:
    """Create a tenant."""
    with _unit_of_work() as session:
        tenant = tenants_service.create(session, name=name, actor=_actor())
        out.print(f"created tenant {tenant.name!r} ({tenant.id})")


@tenant_app.command("list")
def tenant_list() -> None:
    """List tenants."""
    from foresight.tenants import repository as tenants_repository

    with _unit_of_work() as session:
        table = Table("name", "id", "created_at")
        for tenant in tenants_repository.list_all(session):
            table.add_row(tenant.name, str(tenant.id), tenant.created_at.isoformat())
        out.print(table)


# --- users ----------------------------------------------------------------------------------


@user_app.command("create")
def user_create(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant name")],
    email: Annotated[str, typer.Option("--email", help="Sign-in e-mail")],
    role: Annotated[Role, typer.Option("--role", help="admin, analyst, operator or viewer")],
    password: Annotated[
        str | None, typer.Option("--password", help="At least 8 characters (prompted if omitted)")
    ] = None,
    full_name: Annotated[str, typer.Option("--name", help="Display name")] = "",
) -> None:
    """Create a user in a tenant."""
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        data = UserCreate(email=email, password=password, role=role, full_name=full_name)
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            err.print(f"[red]error:[/red] {field}: {error['msg']}")
        raise typer.Exit(2) from exc
    with _unit_of_work() as session:
        tenant_obj = tenants_service.get_by_name(session, tenant)
        user = auth_service.create_user(
            session, tenant_id=tenant_obj.id, data=data, actor=_actor(tenant_obj.id)
        )
        out.print(f"created {user.role.value} {user.email} in tenant {tenant_obj.name!r}")


# --- API keys -------------------------------------------------------------------------------


@apikey_app.command("create")
def apikey_create(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant name")],
    label: Annotated[str, typer.Option("--label", help="What the key is for")] = "",
) -> None:
    """Create a device API key and print it (it is shown only this once)."""
    with _unit_of_work() as session:
        tenant_obj = tenants_service.get_by_name(session, tenant)
        created = auth_service.create_api_key(
            session,
            tenant_id=tenant_obj.id,
            data=ApiKeyCreate(label=label),
            actor=_actor(tenant_obj.id),
        )
    err.print(
        f"API key {created.prefix} for tenant {tenant!r}; store it now, it is not shown again:"
    )
    # The key alone on stdout, so scripts can capture it: KEY=$(foresight apikey create ...)
    sys.stdout.write(created.key + "\n")


@apikey_app.command("list")
def apikey_list(tenant: Annotated[str, typer.Option("--tenant", help="Tenant name")]) -> None:
    """List a tenant's API keys (never the keys themselves)."""
    from foresight.auth import repository as auth_repository

    with _unit_of_work() as session:
        tenant_obj = tenants_service.get_by_name(session, tenant)
        table = Table("id", "prefix", "label", "created_at", "revoked_at")
        for key in auth_repository.list_api_keys(
            session, tenant_id=tenant_obj.id, after=None, limit=10_000
        ):
            table.add_row(
                str(key.id),
                key.prefix,
                key.label,
                key.created_at.isoformat(),
                key.revoked_at.isoformat() if key.revoked_at else "",
            )
        out.print(table)


# --- audit ----------------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's chain")] = None,
) -> None:
    """Re-hash the audit chains; exit 1 and name the first bad entry if any was tampered with."""
    with _unit_of_work() as session:
        tenant_id = tenants_service.get_by_name(session, tenant).id if tenant else None
        report = audit_service.verify(session, tenant_id=tenant_id)
    if report.ok:
        out.print(
            f"audit OK: {report.entries_checked} entries in "
            f"{report.chains_checked} chain(s) verified"
        )
        return
    for problem in report.problems:
        where = f"seq {problem.seq}" if problem.seq is not None else "chain"
        row = f" (row id {problem.entry_id})" if problem.entry_id is not None else ""
        err.print(
            f"[red]TAMPERED[/red] chain {problem.chain}: first bad entry {where}{row}: "
            f"{problem.reason}"
        )
    raise typer.Exit(1)


# --- retention --------------------------------------------------------------------------------

retention_app = typer.Typer(help="Time-series retention (tenant settings retention_*_days).")
app.add_typer(retention_app, name="retention")


@retention_app.command("run")
def retention_run(
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", help="Only this tenant's data (drops no partition)"),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go; change nothing")
    ] = False,
) -> None:
    """Apply tenants' retention now: drop expired partitions, delete old rows in chunks."""
    from foresight.timeseries import retention

    settings = _settings()
    database = Database.from_url(settings.effective_database_url)
    try:
        report = retention.enforce(
            database, tenant=tenant, dry_run=dry_run, chunk_rows=settings.retention_chunk_rows
        )
    except DomainError as exc:
        err.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(1) from exc
    finally:
        database.dispose()
    for line in report.lines():
        out.print(line, highlight=False, soft_wrap=True)
    if report.skipped:
        raise typer.Exit(1)


# --- notifications --------------------------------------------------------------------------

notify_app = typer.Typer(help="Alert notifications (the outbox dispatcher).", no_args_is_help=True)
app.add_typer(notify_app, name="notify")


@notify_app.command("run")
def notify_run(
    once: Annotated[
        bool, typer.Option("--once", help="One round: deliver what is due now, then exit")
    ] = False,
) -> None:
    """Deliver the notification outbox (as many processes as you like, on PostgreSQL)."""
    import signal

    from foresight.kit.logging import configure_logging
    from foresight.notifications.dispatcher import Dispatcher

    settings = _settings()
    configure_logging(settings.log_level, json=settings.log_json)
    database = Database.from_url(settings.effective_database_url)
    dispatcher = Dispatcher.from_settings(database, settings)
    try:
        if once:
            counts = dispatcher.run_once()
            out.print(
                f"claimed {counts.claimed}, delivered {counts.delivered}, retrying "
                f"{counts.retried}, dead-lettered {counts.dead}, deferred {counts.deferred}",
                highlight=False,
            )
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: dispatcher.stop_soon())
        dispatcher.run_forever()
    finally:
        database.dispose()


# --- demo -----------------------------------------------------------------------------------


@demo_app.command("seed")
def demo_seed() -> None:
    """Create the demo tenant, its admin and a small plant if missing; print how to sign in."""
    from foresight import demo

    settings = _settings()
    with _unit_of_work() as session:
        tenant = demo.seed(session, settings, _actor())
    if tenant is not None:
        out.print(
            f"created demo tenant {tenant.name!r}: admin {settings.demo_email}, "
            "site SITE-A / line LINE-1 with pumps, a motor and a conveyor"
        )
    base = f"http://{settings.host}:{settings.port}"
    password = settings.demo_password.get_secret_value()
    body = json.dumps({"email": settings.demo_email, "password": password})
    out.print(
        "\n[bold]Foresight is starting[/bold]\n"
        f"  API docs:  {base}/docs\n"
        f"  Sign in:   {settings.demo_email} / {password}\n"
        f"  Token:     curl -s -X POST {base}/api/v1/auth/token "
        f"-H 'Content-Type: application/json' -d '{body}'\n",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def worker() -> None:
    """Persist batches from NATS JetStream (needs FORESIGHT_NATS_URL); run as many as you like."""
    import asyncio
    import signal

    from foresight.ingest.nats_bus import Worker
    from foresight.ingest.pipeline import Pipeline
    from foresight.kit.logging import configure_logging
    from foresight.live.service import LiveProducer

    settings = _settings()
    configure_logging(settings.log_level, json=settings.log_json)
    if not settings.nats_url:
        err.print(
            "[red]error:[/red] FORESIGHT_NATS_URL is not set; the embedded shape needs no worker"
        )
        raise typer.Exit(2)
    database = Database.from_url(settings.effective_database_url)
    # Live updates: what this worker persists reaches every API node's WebSocket clients.
    live = LiveProducer.from_settings(settings, database)
    pipeline = Pipeline(observers=[live.observe])
    # Detection runs where points are persisted: rules and anomaly detection on what this
    # worker commits; alert changes go to the notification outbox and to live updates.
    detection = None
    if settings.detection_enabled:
        from foresight.detection.process import EventMakers, detection_from_settings
        from foresight.live.events import alert_event
        from foresight.live.service import anomaly_from_score
        from foresight.notifications import outbox

        detection = detection_from_settings(
            database,
            settings,
            hooks=[outbox.enqueue],
            publish=live.publish,
            events=EventMakers(alert_event, anomaly_from_score),
        )
        pipeline.observers.append(detection.observe)
    consumer = Worker(
        database,
        url=settings.nats_url,
        stream=settings.nats_stream,
        subject_prefix=settings.nats_subject_prefix,
        pipeline=pipeline,
        partitions=settings.nats_partitions,
        lease_ttl_s=settings.nats_lease_ttl_s,
        ack_wait_s=settings.nats_ack_wait_s,
        # Partitions handed over: what detection holds about their assets is rebuilt.
        on_rebalance=detection.reset if detection is not None else None,
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, consumer.stop)  # finish the fetch in hand, then exit
        await live.start()
        if detection is not None:
            await asyncio.to_thread(detection.start)
        try:
            await consumer.run()
        finally:
            if detection is not None:
                await asyncio.to_thread(detection.stop)  # evaluates what was committed
            await live.stop()

    try:
        asyncio.run(run())
    finally:
        database.dispose()


# --- simulate -------------------------------------------------------------------------------


@app.command()
def simulate(
    url: Annotated[
        str | None, typer.Option(help="API base URL (default: http://HOST:PORT of the settings)")
    ] = None,
    email: Annotated[
        str | None, typer.Option(help="Sign in as this user (default: the demo admin)")
    ] = None,
    password: Annotated[
        str | None, typer.Option(help="Password of --email (prompted if omitted)")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(help="Send readings with a device key (assets must exist; no maintenance)"),
    ] = None,
    assets: Annotated[int, typer.Option(min=1, max=100_000, help="Simulated assets")] = 8,
    interval: Annotated[float, typer.Option(min=0.01, help="Seconds between live readings")] = 5.0,
    speed: Annotated[
        float, typer.Option(min=0.001, help="Simulated seconds per second while live")
    ] = 1.0,
    backfill_hours: Annotated[
        float, typer.Option(min=0, help="Hours of history to send first (quickly)")
    ] = 0.0,
    backfill_step: Annotated[
        float, typer.Option(min=1, help="Seconds between backfilled readings")
    ] = 60.0,
    duration: Annotated[
        float | None, typer.Option(min=0, help="Stop after S seconds live (default: at Ctrl-C)")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same plant)")] = 0,
    batch: Annotated[int, typer.Option(min=1, help="Readings per request")] = 500,
    wear: Annotated[
        float, typer.Option(min=0.001, help="Degradation speed multiplier (more failures)")
    ] = 1.0,
    wait: Annotated[float, typer.Option(min=0, help="Seconds to wait for the API to be up")] = 60,
) -> None:
    """Stream a simulated plant (pumps, motors, conveyors; wear and failures) through the API."""
    import signal

    from foresight import simulator

    settings = _settings()
    if url is None:
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        url = f"http://{host}:{settings.port}"
    if api_key is None and email is None:
        email = settings.demo_email
        password = password or settings.demo_password.get_secret_value()
    elif api_key is None and password is None:
        password = typer.prompt("Password", hide_input=True)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # `make run` stops the simulator with SIGTERM
    client = simulator.ApiClient(url, email=email, password=password, api_key=api_key)
    runner = simulator.Simulator(
        client,
        simulator.Plant(assets, seed=seed, wear=wear),
        interval_s=interval,
        speed=speed,
        backfill_hours=backfill_hours,
        backfill_step_s=backfill_step,
        duration_s=duration,
        batch=batch,
        echo=typer.echo,
    )
    try:
        client.wait_until_up(wait, lambda: typer.echo(f"simulate: waiting for the API at {url}"))
        runner.run()
    except KeyboardInterrupt:
        pass
    except simulator.SimulationError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc


# --- import -----------------------------------------------------------------------------------


def _tenant_id(database: Database, name: str) -> uuid.UUID:
    try:
        with database.transaction(write=False) as session:
            return tenants_service.get_by_name(session, name).id
    except DomainError as exc:
        err.print(f"[red]error:[/red] {escape(exc.detail)}", soft_wrap=True)
        raise typer.Exit(1) from exc


@contextmanager
def _progress() -> Iterator[importer.ProgressFn]:
    """A progress bar on stderr; yields the callback the importer reports to."""
    columns: list[Any] = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[counts]}"),
    ]
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("importing", total=None, counts="")

        def report(position: int, total: int | None, rows: int, done: int) -> None:
            progress.update(
                task, completed=position, total=total, counts=f"{rows:,} rows, {done:,} stored"
            )

        yield report


def _print_rejections(rejections: importer.Rejections, line_label: str) -> None:
    if not rejections.total:
        return
    for reason, count in sorted(rejections.counts.items(), key=lambda rc: (-rc[1], rc[0])):
        out.print(f"    {count:>12,}  {reason}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"  first problems ({line_label} numbers count from 1):", highlight=False)
    for line, text in rejections.examples:
        out.print(f"    {line_label} {line}: {text}", markup=False, highlight=False, soft_wrap=True)
    hidden = rejections.total - len(rejections.examples)
    if hidden > 0:
        out.print(f"    … and {hidden:,} more", highlight=False, soft_wrap=True)


def _print_readings_report(report: importer.ReadingsReport) -> None:
    layout = (
        f"wide layout, {report.sensor_columns} sensor column(s)"
        if report.layout == "wide"
        else "long layout"
    )
    rows = [
        ("rows read", f"{report.rows_read:,}"),
        (
            "points accepted",
            f"{report.points_accepted:,} ({report.points_new:,} new, "
            f"{report.points_present:,} already present or repeated)",
        ),
        ("rejected", f"{report.rejections.total:,}"),
    ]
    if report.assets_created or report.sensors_created:
        rows.append(
            ("created", f"{report.assets_created:,} asset(s), {report.sensors_created:,} sensor(s)")
        )
    rows.append(
        (
            "elapsed",
            f"{report.elapsed_s:.1f} s ({report.points_per_s:,.0f} points/s)",
        )
    )
    out.print(
        f"imported {report.path.name} ({layout})", markup=False, highlight=False, soft_wrap=True
    )
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)
    for label, value in rows:
        out.print(f"  {label:<16} {value}", markup=False, highlight=False, soft_wrap=True)
        if label == "rejected":
            _print_rejections(report.rejections, report.line_label)


def _import_failed(exc: Exception) -> NoReturn:
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    err.print(f"[red]error:[/red] the import stopped: {escape(detail)}", soft_wrap=True)
    err.print("what was stored before stays; running the import again is safe")
    raise typer.Exit(1) from exc


def _import_detection(database: Database, *, enabled: bool) -> Any:
    """Detection for an import: alert rules and anomaly detection on each stored chunk, beside
    the import (in child processes unless FORESIGHT_DETECTION_PROCESSES=0; no notifications:
    history is not news)."""
    if not enabled:
        return None
    from foresight.detection.process import detection_from_settings

    detection = detection_from_settings(database, _settings())
    detection.start()
    return detection


@import_app.command("readings")
def import_readings(
    file: Annotated[Path, typer.Argument(help="A .csv, .csv.gz or .parquet file")],
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant name")],
    create_assets: Annotated[
        bool,
        typer.Option(
            "--create-assets", help="Register unknown asset tags (else their rows are refused)"
        ),
    ] = False,
    detect: Annotated[
        bool,
        typer.Option(
            "--detect/--no-detect",
            help="Run alert rules and anomaly detection on the imported points, as on live data "
            "(alerts and anomaly scores; no notifications): a backtest",
        ),
    ] = False,
) -> None:
    """Import readings, wide (asset, ts, <sensor>…) or long (asset, sensor, ts, value).

    ts is ISO 8601 (UTC if zone-less) or epoch seconds. Unknown sensors are created. Points
    already stored are skipped, so an interrupted import can simply be run again.
    """
    settings = _settings()
    database = Database.from_url(settings.effective_database_url)
    importer.tune_for_bulk(database)
    detection = _import_detection(database, enabled=detect and settings.detection_enabled)

    try:
        tenant_id = _tenant_id(database, tenant)
        with _progress() as progress:
            report = importer.import_readings(
                database,
                file,
                tenant_id=tenant_id,
                limits=Limits(max_future_s=settings.ingest_max_future_s),
                create_assets=create_assets,
                actor_label=f"import:{_actor().label}",
                progress=progress,
                on_written=detection.observe if detection else None,
            )
        if detection is not None:
            detection.stop()  # evaluates what was stored before the summary is printed
    except importer.ImportFileError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        if exc.points_stored:
            err.print(
                f"{exc.points_stored:,} points were stored before the problem; they stay, and "
                "running the import again once the file is fixed is safe"
            )
        raise typer.Exit(1) from exc
    except (DomainError, SQLAlchemyError) as exc:
        _import_failed(exc)
    except KeyboardInterrupt as exc:
        err.print("interrupted: what was stored stays; run the same command again to finish")
        raise typer.Exit(130) from exc
    finally:
        database.dispose()
    _print_readings_report(report)
    if report.points_accepted == 0:
        err.print("[red]error:[/red] nothing could be imported")
        raise typer.Exit(1)


@import_app.command("maintenance")
def import_maintenance(
    file: Annotated[Path, typer.Argument(help="A .csv, .csv.gz or .parquet file")],
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant name")],
) -> None:
    """Import maintenance history: asset, kind, started_at, and optionally ended_at,
    failure_mode, cost, downtime_hours, notes (also title, status).

    Each row becomes a record (validated and audited); a bad row is reported and skipped; a row
    whose record (asset, kind, started_at) exists already is skipped, so reruns are safe.
    """
    settings = _settings()
    database = Database.from_url(settings.effective_database_url)
    try:
        tenant_id = _tenant_id(database, tenant)
        with _progress() as progress:
            report = importer.import_maintenance(
                database,
                file,
                tenant_id=tenant_id,
                actor_label=f"import:{_actor().label}",
                progress=progress,
            )
    except importer.ImportFileError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from exc
    except (DomainError, SQLAlchemyError) as exc:
        _import_failed(exc)
    finally:
        database.dispose()
    out.print(f"imported {report.path.name}", markup=False, highlight=False, soft_wrap=True)
    for label, value in (
        ("rows read", f"{report.rows_read:,}"),
        ("records created", f"{report.created:,}"),
        ("already present", f"{report.skipped:,} (same asset, kind and started_at)"),
        ("rejected", f"{report.rejections.total:,}"),
    ):
        out.print(f"  {label:<16} {value}", markup=False, highlight=False, soft_wrap=True)
    _print_rejections(report.rejections, report.line_label)
    out.print(f"  {'elapsed':<16} {report.elapsed_s:.1f} s", highlight=False)
    if report.created == 0 and report.skipped == 0:
        err.print("[red]error:[/red] nothing could be imported")
        raise typer.Exit(1)


# --- bench ----------------------------------------------------------------------------------


@bench_app.command("ingest")
def bench_ingest(
    points: Annotated[int, typer.Option(min=10_000, help="Points per backend")] = 1_000_000,
    senders: Annotated[int, typer.Option(min=1, help="Load-generator processes")] = 2,
    postgres_url: Annotated[
        str, typer.Option(help="Server for a throwaway PostgreSQL database")
    ] = "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    backend: Annotated[
        list[str] | None, typer.Option(help="sqlite and/or postgresql (default both)")
    ] = None,
) -> None:
    """End-to-end HTTP ingestion throughput (acknowledged, queryable, rolled up) vs plain COPY."""
    from foresight import bench

    for line in bench.run(
        points=points,
        senders=senders,
        postgres_url=postgres_url,
        backends=backend or ["sqlite", "postgresql"],
    ):
        out.print(line, highlight=False, soft_wrap=True)


@bench_app.command("detect")
def bench_detect(
    backend: Annotated[
        list[str] | None, typer.Option(help="sqlite and/or postgresql (default both)")
    ] = None,
    rate: Annotated[float, typer.Option(min=100, help="Phase A load, points/s")] = 50_000,
    seconds: Annotated[float, typer.Option(min=1, help="Phase A duration")] = 30,
    rules: Annotated[int, typer.Option(min=0, help="Active rules besides the probe's")] = 1000,
    probes: Annotated[
        int, typer.Option(min=1, help="At most this many probes (default: as many as fit)")
    ] = 1_000_000,
    points: Annotated[int, typer.Option(min=1000, help="Phase B points per run")] = 300_000,
    senders: Annotated[int, typer.Option(min=1, help="Load-generator processes")] = 2,
    postgres_url: Annotated[
        str, typer.Option(help="Server for throwaway PostgreSQL databases")
    ] = "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    rounds: Annotated[
        int,
        typer.Option(min=1, help="Phase B on/off pairs, alternating order (the median reported)"),
    ] = 3,
) -> None:
    """Alert latency (API and WebSocket) under load, and ingest throughput with detection on/off."""
    from foresight import bench

    for line in bench.run_detect(
        backends=backend or ["sqlite", "postgresql"],
        postgres_url=postgres_url,
        rate=rate,
        seconds=seconds,
        rules=rules,
        probes=probes,
        points=points,
        senders=senders,
        rounds=rounds,
    ):
        out.print(line, highlight=False, soft_wrap=True)


@bench_app.command("predict")
def bench_predict(
    assets: Annotated[int, typer.Option(min=1, help="Assets scored (the batch figure)")] = 1000,
    days: Annotated[int, typer.Option(min=10, help="Days of hourly history per asset")] = 60,
    sensors: Annotated[int, typer.Option(min=1, help="Sensors per asset")] = 10,
    requests: Annotated[int, typer.Option(min=1, help="Single-prediction HTTP requests")] = 200,
    repeats: Annotated[int, typer.Option(min=1, help="Batch measurements of each kind")] = 3,
    train_assets: Annotated[
        int, typer.Option(min=4, help="Assets of the fleet the model is trained on")
    ] = 100,
    http: Annotated[
        bool, typer.Option(help="Also measure through a real `foresight serve`")
    ] = True,
    database_url: Annotated[
        str | None,
        typer.Option(help="A PostgreSQL server for a throwaway database (default: SQLite file)"),
    ] = None,
) -> None:
    """Scoring speed: one prediction through HTTP (p50/p95/p99) and a batch of all the assets
    (features from the store included), against the targets."""
    from foresight.prediction import bench as prediction_bench

    for line in prediction_bench.run_predict_bench(
        database_url,
        assets=assets,
        sensors=sensors,
        days=days,
        train_assets=train_assets,
        requests=requests,
        repeats=repeats,
        http=http,
    ):
        out.print(line, highlight=False, soft_wrap=True)


@eval_app.command("anomaly")
def eval_anomaly(
    seed: Annotated[int, typer.Option(help="Seed of the plant and the fault positions")] = 7,
    cmapss: Annotated[
        Path, typer.Option(help="NASA C-MAPSS FD001 training file (skipped when missing)")
    ] = Path("../shared/data/cmapss/train_FD001.txt"),
) -> None:
    """Precision, recall and detection delay of anomaly detection, per injected fault kind."""
    from foresight import evaluate

    if not cmapss.exists():
        err.print(f"[yellow]note:[/yellow] {cmapss} not found: simulated plant only")
    results = evaluate.run(seed=seed, cmapss=cmapss)
    units = {
        "simulated plant (1 reading/min, 4 days)": "min",
        "NASA C-MAPSS FD001 (1 point/cycle)": "cycles",
    }
    for line in evaluate.table(results, minutes_per_point=units):
        out.print(line, highlight=False, soft_wrap=True)


@eval_app.command("cmapss")
def eval_cmapss(
    data: Annotated[Path, typer.Option(help="NASA C-MAPSS FD001 training file")] = Path(
        "../shared/data/cmapss/train_FD001.txt"
    ),
    folds: Annotated[int, typer.Option(min=2, help="Folds, engines split by unit")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the folds and the cut-offs")] = 0,
    max_rul_days: Annotated[int, typer.Option(min=1, help="RUL cap for train")] = 125,
    engines: Annotated[
        int | None, typer.Option(min=4, help="Only the first N engines (default: all)")
    ] = None,
) -> None:
    """RUL RMSE, PHM08 and ROC AUC (30 d) of C-MAPSS FD001 through the documented commands:
    per fold a tenant, import readings and failures, train --max-rul-days, predict."""
    from foresight.prediction import cmapss_e2e

    if not data.exists():
        err.print(f"[red]error:[/red] {data} not found")
        raise typer.Exit(2)

    def progress(done: int, total: int, rmse: float) -> None:
        err.print(f"fold {done}/{total}: RUL RMSE {rmse:.2f}")

    result = cmapss_e2e.run(
        data, folds=folds, seed=seed, max_rul_days=max_rul_days, engines=engines,
        progress=progress,
    )  # fmt: skip
    for line in cmapss_e2e.lines(result):
        out.print(line, highlight=False, soft_wrap=True)


@bench_app.command("import")
def bench_import(
    points: Annotated[int, typer.Option("--points", min=1, help="Points to import")] = 2_000_000,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="Target database (default: a fresh temporary SQLite)"),
    ] = None,
    detect: Annotated[
        bool, typer.Option("--detect/--no-detect", help="With detection, as `import --detect`")
    ] = False,
) -> None:
    """Import a synthetic wide CSV and print points/s and peak memory (RSS).

    With --database-url the points stay there, in a new tenant named bench-….
    """
    import resource
    import tempfile
    import time

    from sqlalchemy.engine import make_url

    with tempfile.TemporaryDirectory(prefix="foresight-bench-") as tmp:
        csv_path = Path(tmp) / "bench.csv"
        written = importer.write_synthetic_wide_csv(csv_path, points=points)
        size_mb = csv_path.stat().st_size / 1e6
        url = database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        migrate.upgrade(url)
        database = Database.from_url(url)
        importer.tune_for_bulk(database)
        try:
            with database.transaction() as session:
                tenant = tenants_service.create(
                    session, name=f"bench-{uuid.uuid4().hex[:8]}", actor=_actor()
                )
            detection = _import_detection(database, enabled=detect)
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            cpu = time.process_time()
            wall = time.perf_counter()
            report = importer.import_readings(
                database,
                csv_path,
                tenant_id=tenant.id,
                limits=Limits(max_future_s=300),
                create_assets=True,
                actor_label="bench",
                on_written=detection.observe if detection else None,
            )
            if detection is not None:
                detection.stop()  # the import is done when its points are evaluated too
            wall = time.perf_counter() - wall
            cpu = time.process_time() - cpu
        finally:
            database.dispose()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    backend = make_url(url).get_backend_name()
    out.print(
        f"bench import: {written:,} points ({size_mb:,.0f} MB wide CSV, 20 sensors x 50 assets) "
        f"into {backend}, detection {'on' if detect else 'off'}",
        highlight=False,
        soft_wrap=True,
    )
    out.print(
        f"  stored {report.points_new:,} points in {wall:.1f} s: "
        f"{report.points_new / wall:,.0f} points/s (CPU {cpu:.1f} s)",
        highlight=False,
    )
    out.print(
        f"  peak RSS {peak / 1024:,.0f} MiB (before the import: {rss_before / 1024:,.0f} MiB)",
        highlight=False,
    )


# --- predictive engine: train, predict, models ---------------------------------------------------

models_app = typer.Typer(help="The model registry: champion, challengers.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _prediction_tenant(database: Database, name: str | None) -> uuid.UUID:
    """The named tenant, or the only one when no name is given."""
    if name is not None:
        return _tenant_id(database, name)
    from sqlalchemy import select

    from foresight.models import Tenant

    with database.transaction(write=False) as session:
        ids = list(session.scalars(select(Tenant.id).limit(2)))
    if len(ids) != 1:
        err.print(
            "[red]error:[/red] "
            + ("no tenant exists" if not ids else "several tenants exist: pass --tenant NAME")
        )
        raise typer.Exit(1)
    return ids[0]


@app.command("train")
def train_command(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Tenant name (default: the only one)")
    ] = None,
    max_rul_days: Annotated[
        float | None,
        typer.Option(
            "--max-rul-days",
            min=1,
            help="Cap of the RUL target in days (default: tenant setting max_rul_days, or 180)",
        ),
    ] = None,
    all_tenants: Annotated[
        bool,
        typer.Option(
            "--all-tenants",
            help="Every tenant with failure records, one after the other (for cron); a "
            "tenant that fails is reported and the others go on (exit 1 if any failed)",
        ),
    ] = False,
) -> None:
    """Train failure-probability and RUL models on the tenant's stored history and register
    the version: champion if it beats the champion on the held-out window, else challenger."""
    from foresight.prediction import modeling
    from foresight.prediction import schedule as prediction_schedule
    from foresight.prediction import service as prediction_service

    if all_tenants and tenant is not None:
        err.print("[red]error:[/red] --all-tenants and --tenant exclude each other")
        raise typer.Exit(2)
    settings = _settings()
    database = Database.from_url(settings.effective_database_url)

    def train_one(tenant_id: uuid.UUID, label: str = "") -> prediction_service.TrainResult:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), console=err, transient=True
        ) as bar:
            task = bar.add_task(f"{label}training", total=1.0)
            return prediction_service.train(
                database,
                tenant_id,
                max_rul_days=max_rul_days,
                created_by=_actor().label,
                progress=lambda f, stage: bar.update(
                    task, completed=f, description=f"{label}{stage}"
                ),
            )

    try:
        if all_tenants:
            with database.transaction(write=False) as session:
                everyone = tenants_service.list_all(session)
                with_failures = dict(prediction_schedule.tenants_with_failures(session))
            failed = 0
            for t in everyone:
                if t.id not in with_failures:
                    out.print(f"tenant {escape(t.name)}: skipped (no failure records)")
                    continue
                try:
                    result = train_one(t.id, f"{t.name}: ")
                except modeling.InsufficientData as exc:
                    failed += 1
                    err.print(f"[red]error:[/red] tenant {escape(t.name)}: not enough data:")
                    for reason in exc.reasons:
                        err.print(f"  - {escape(reason)}", soft_wrap=True)
                    continue
                except Exception as exc:  # noqa: BLE001 - reported; the other tenants go on
                    failed += 1
                    detail = escape(str(exc) or type(exc).__name__)
                    err.print(f"[red]error:[/red] tenant {escape(t.name)}: {detail}")
                    continue
                _print_train_result(result, prefix=f"tenant {escape(t.name)}: ")
            if failed:
                raise typer.Exit(1)
            return
        tenant_id = _prediction_tenant(database, tenant)
        result = train_one(tenant_id)
    except modeling.InsufficientData as exc:
        err.print("[red]error:[/red] not enough data to train a model:")
        for reason in exc.reasons:
            err.print(f"  - {escape(reason)}", soft_wrap=True)
        raise typer.Exit(1) from exc
    except DomainError as exc:
        err.print(f"[red]error:[/red] {escape(exc.detail)}")
        raise typer.Exit(1) from exc
    finally:
        database.dispose()
    _print_train_result(result)


def _print_train_result(result: TrainResult, prefix: str = "") -> None:
    holdout = result.metrics.get("holdout") or {}
    window = result.metrics.get("holdout_window") or {}
    indent = "  " if prefix else ""
    out.print(
        f"{prefix}model version {result.version}: {result.status.value} ({escape(result.reason)})",
        highlight=False,
        soft_wrap=True,
    )
    out.print(
        f"{indent}held-out window from {window.get('start')} ({window.get('rows')} rows):",
        highlight=False,
    )
    for name, figures in holdout.items():
        shown = ", ".join(
            f"{k} {v:.4g}" for k, v in figures.items() if isinstance(v, float) and k != "threshold"
        )
        out.print(f"{indent}  {name}: {shown}", highlight=False, soft_wrap=True)


@app.command("predict")
def predict_command(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Tenant name (default: the only one)")
    ] = None,
    asset: Annotated[
        list[str] | None, typer.Option("--asset", help="Asset tag (repeatable; default: all)")
    ] = None,
    format: Annotated[str, typer.Option("--format", help="json or csv")] = "json",
    all_tenants: Annotated[
        bool,
        typer.Option(
            "--all-tenants",
            help="Every tenant with assets (for cron): each row gets a leading tenant column; "
            "a tenant that fails is reported and the others go on (exit 1 if any failed)",
        ),
    ] = False,
) -> None:
    """One prediction per asset as of its latest reading (stored, as the API does): asset,
    as_of, failure_probability_7d/14d/30d, rul_days, rul_low, rul_high, health_score, status,
    top_factors."""
    import csv

    from foresight.prediction import schedule as prediction_schedule
    from foresight.prediction import service as prediction_service

    if format not in ("json", "csv"):
        err.print("[red]error:[/red] --format must be json or csv")
        raise typer.Exit(2)
    if all_tenants and (tenant is not None or asset):
        err.print("[red]error:[/red] --all-tenants excludes --tenant and --asset")
        raise typer.Exit(2)
    settings = _settings()
    database = Database.from_url(settings.effective_database_url)
    records: list[dict[str, Any]] = []
    failed = 0
    try:
        if all_tenants:
            with database.transaction(write=False) as session:
                tenants = prediction_schedule.tenants_with_assets(session)
            for tenant_id, name in tenants:
                try:
                    rows = prediction_service.predict(database, tenant_id)
                except Exception as exc:  # noqa: BLE001 - reported; the other tenants go on
                    failed += 1
                    detail = escape(str(exc) or type(exc).__name__)
                    err.print(f"[red]error:[/red] tenant {escape(name)}: {detail}")
                    continue
                records += [{"tenant": name, **prediction_service.cli_row(r)} for r in rows]
        else:
            tenant_id = _prediction_tenant(database, tenant)
            asset_ids = None
            if asset:
                with database.transaction(write=False) as session:
                    asset_ids = prediction_service.assets_by_tag(session, tenant_id, asset)
            rows = prediction_service.predict(database, tenant_id, asset_ids)
            records = [prediction_service.cli_row(r) for r in rows]
    except DomainError as exc:
        err.print(f"[red]error:[/red] {escape(exc.detail)}")
        raise typer.Exit(1) from exc
    finally:
        database.dispose()
    columns = (["tenant"] if all_tenants else []) + list(prediction_service.CLI_COLUMNS)
    if format == "json":
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
    else:
        writer = csv.DictWriter(sys.stdout, fieldnames=columns)
        writer.writeheader()
        for record in records:
            record["top_factors"] = "; ".join(str(f["text"]) for f in record["top_factors"])
            writer.writerow({k: "" if v is None else v for k, v in record.items()})
    if failed:
        raise typer.Exit(1)


@models_app.command("list")
def models_list(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Tenant name (default: the only one)")
    ] = None,
) -> None:
    """The tenant's model versions, newest first, then how each did on the predictions it made
    as champion whose 30-day outcome is known (precision, recall, Brier, how many were judged,
    the verdicts on them)."""
    from foresight.prediction import realised, registry

    settings = _settings()
    database = Database.from_url(settings.effective_database_url)

    def fmt(value: float | None, digits: int = 3) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    try:
        tenant_id = _prediction_tenant(database, tenant)
        with database.transaction(write=False) as session:
            versions = registry.list_versions(session, tenant_id)
            done = realised.realised_for(session, tenant_id, versions)
            table = Table("version", "status", "created", "RUL RMSE", "ROC AUC 30 d", "note")
            real = Table(
                "version", "predictions", "judged 30 d", "precision", "recall", "Brier",
                "confirmed", "false alarm", title="realised on its own predictions (30 d)",
            )  # fmt: skip
            for v in versions:
                figures = registry.comparison_figures((v.metrics or {}).get("holdout"))
                rmse, auc = figures["rul_rmse"], figures["roc_auc_30d"]
                table.add_row(
                    str(v.version),
                    v.status.value,
                    v.created_at.isoformat(timespec="seconds"),
                    fmt(rmse, 2),
                    fmt(auc),
                    escape(v.note),
                )
                r = done[v.id]
                if r["predictions"]:
                    h30, verdicts = r["horizons"]["30d"], r["feedback"]
                    real.add_row(
                        str(v.version),
                        str(r["predictions"]),
                        str(h30["evaluated"]),
                        fmt(h30["precision"]),
                        fmt(h30["recall"]),
                        fmt(h30["brier"]),
                        str(verdicts["confirmed"]),
                        str(verdicts["false_alarm"]),
                    )
    finally:
        database.dispose()
    out.print(table)
    if real.row_count:
        out.print(real)


@models_app.command("promote")
def models_promote(
    version: Annotated[int, typer.Argument(help="Version number")],
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Tenant name (default: the only one)")
    ] = None,
) -> None:
    """Make a version champion (the champion it replaces is retired)."""
    from foresight.prediction import registry
    from foresight.prediction import service as prediction_service

    settings = _settings()
    database = Database.from_url(settings.effective_database_url)
    try:
        tenant_id = _prediction_tenant(database, tenant)
        with database.transaction() as session:
            row = registry.by_number(session, tenant_id, version)
            replaced = prediction_service.promote(session, tenant_id, row, actor=_actor(tenant_id))
            gone = "" if replaced is None else f" (version {replaced.version} retired)"
    except DomainError as exc:
        err.print(f"[red]error:[/red] {escape(exc.detail)}")
        raise typer.Exit(1) from exc
    finally:
        database.dispose()
    out.print(f"model version {version} is champion{gone}", highlight=False)


@models_app.command("rollback")
def models_rollback(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Tenant name (default: the only one)")
    ] = None,
) -> None:
    """Retire the champion and bring back the one it replaced."""
    from foresight.prediction import service as prediction_service

    settings = _settings()
    database = Database.from_url(settings.effective_database_url)
    try:
        tenant_id = _prediction_tenant(database, tenant)
        with database.transaction() as session:
            restored, retired = prediction_service.rollback(
                session, tenant_id, actor=_actor(tenant_id)
            )
            message = (
                f"model version {restored.version} is champion again "
                f"(version {retired.version} retired)"
            )
    except DomainError as exc:
        err.print(f"[red]error:[/red] {escape(exc.detail)}")
        raise typer.Exit(1) from exc
    finally:
        database.dispose()
    out.print(message, highlight=False)


# --- schedules of the predictive engine -------------------------------------------------------

schedule_app = typer.Typer(
    help="Scoring and retraining on their intervals (what the API process runs).",
    no_args_is_help=True,
)
app.add_typer(schedule_app, name="schedule")


@schedule_app.command("run")
def schedule_run(
    once: Annotated[
        bool, typer.Option("--once", help="One round: do what is due now, then exit")
    ] = False,
    scoring: Annotated[
        bool,
        typer.Option(
            "--scoring/--no-scoring", help="Score assets every FORESIGHT_SCORING_INTERVAL_S"
        ),
    ] = True,
    retraining: Annotated[
        bool,
        typer.Option(
            "--retraining/--no-retraining",
            help="Retrain tenants every FORESIGHT_RETRAIN_INTERVAL_S",
        ),
    ] = True,
) -> None:
    """Score every tenant's assets and retrain every tenant with failure records when due
    (when each was last done is read from the database), in the foreground until Ctrl-C or
    SIGTERM. Safe beside the API's own schedule and other runners: one works at a time."""
    import signal
    import threading

    from foresight.kit.logging import configure_logging
    from foresight.prediction import schedule as prediction_schedule

    settings = _settings()
    configure_logging(settings.log_level, json=settings.log_json)
    wanted: list[prediction_schedule.Job] = []
    intervals = {
        prediction_schedule.SCORING: settings.scoring_interval_s,
        prediction_schedule.RETRAINING: settings.retrain_interval_s,
    }
    for job, chosen, variable in (
        (prediction_schedule.SCORING, scoring, "FORESIGHT_SCORING_INTERVAL_S"),
        (prediction_schedule.RETRAINING, retraining, "FORESIGHT_RETRAIN_INTERVAL_S"),
    ):
        if not chosen:
            continue
        if intervals[job] > 0:
            wanted.append(job)
        else:
            err.print(f"{job}: off ({variable}=0)", highlight=False)
    if not wanted:
        err.print("[red]error:[/red] nothing to run")
        raise typer.Exit(2)
    database = Database.from_url(settings.effective_database_url)
    scheduler = prediction_schedule.Scheduler(
        database,
        scoring_interval_s=intervals[prediction_schedule.SCORING],
        retrain_interval_s=intervals[prediction_schedule.RETRAINING],
    )
    try:
        if once:
            rounds = scheduler.run_due(wanted)
            for round_ in rounds:
                for line in round_.lines():
                    out.print(escape(line), highlight=False, soft_wrap=True)
            if any(r.failed for r in rounds):
                raise typer.Exit(1)
            return
        stopping = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.set())
        scheduler.start(wanted)
        while not stopping.wait(1.0):
            if not scheduler.running:
                break
        scheduler.stop()
    finally:
        database.dispose()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
