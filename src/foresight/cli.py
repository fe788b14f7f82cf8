"""The `foresight` command line. Every command honours FORESIGHT_DATABASE_URL (and .env)."""

from __future__ import annotations

import getpass
import json
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from foresight.audit import service as audit_service
from foresight.audit.schemas import Actor
from foresight.auth import service as auth_service
from foresight.auth.schemas import ApiKeyCreate, UserCreate
from foresight.config import Settings, get_settings
from foresight.kit import migrate
from foresight.kit.db import Database
from foresight.kit.errors import DomainError
from foresight.models import Role
from foresight.tenants import service as tenants_service

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
    from foresight.kit.logging import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, json=settings.log_json)
    if not settings.nats_url:
        err.print(
            "[red]error:[/red] FORESIGHT_NATS_URL is not set; the embedded shape needs no worker"
        )
        raise typer.Exit(2)
    database = Database.from_url(settings.effective_database_url)
    consumer = Worker(
        database,
        url=settings.nats_url,
        stream=settings.nats_stream,
        subject_prefix=settings.nats_subject_prefix,
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, consumer.stop)  # finish the fetch in hand, then exit
        await consumer.run()

    try:
        asyncio.run(run())
    finally:
        database.dispose()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
