"""The documented CLI forms, run against the test database through FORESIGHT_DATABASE_URL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from foresight.cli import app
from foresight.config import get_settings
from foresight.kit.db import Database
from foresight.models import ApiKey, Tenant, User


@pytest.fixture
def cli(database_url: str, db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("FORESIGHT_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def invoke(runner: CliRunner, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_documented_forms_work_end_to_end(cli: CliRunner, db: Database) -> None:
    assert invoke(cli, "db", "upgrade")[0] == 0  # idempotent on a migrated database
    code, out, _ = invoke(cli, "tenant", "create", "acme")
    assert code == 0, out
    code, out, err = invoke(
        cli,
        "user",
        "create",
        "--tenant",
        "acme",
        "--email",
        "Ops@Acme.example.com",
        "--password",
        "s3cret-pass",
        "--role",
        "operator",
    )
    assert code == 0, out + err
    code, out, err = invoke(cli, "apikey", "create", "--tenant", "acme", "--label", "plc-7")
    assert code == 0, err
    key = out.strip()
    assert key.startswith("fsk_") and "\n" not in key  # only the key on stdout
    with db.transaction(write=False) as session:
        tenant = session.scalars(select(Tenant).where(Tenant.name == "acme")).one()
        user = session.scalars(select(User).where(User.tenant_id == tenant.id)).one()
        assert user.email == "ops@acme.example.com" and user.role == "operator"
        stored = session.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant.id)).one()
        assert stored.label == "plc-7" and key not in (stored.key_hash, stored.prefix)
    code, out, _ = invoke(cli, "audit", "verify", "--tenant", "acme")
    assert code == 0 and "audit OK" in out
    assert invoke(cli, "audit", "verify")[0] == 0


def test_errors_are_clear_and_exit_non_zero(cli: CliRunner) -> None:
    assert invoke(cli, "tenant", "create", "acme")[0] == 0
    code, _, err = invoke(cli, "tenant", "create", "acme")
    assert code == 1 and "already exists" in err
    code, _, err = invoke(
        cli,
        "user",
        "create",
        "--tenant",
        "nope",
        "--email",
        "a@b.example.com",
        "--password",
        "12345678",
        "--role",
        "viewer",
    )
    assert code == 1 and "No tenant named 'nope'" in err
    code, _, err = invoke(
        cli,
        "user",
        "create",
        "--tenant",
        "acme",
        "--email",
        "not-an-email",
        "--password",
        "12345678",
        "--role",
        "viewer",
    )
    assert code == 2 and "email" in err
    code, _, _ = invoke(
        cli,
        "user",
        "create",
        "--tenant",
        "acme",
        "--email",
        "a@b.example.com",
        "--password",
        "12345678",
        "--role",
        "superuser",
    )
    assert code == 2
    assert invoke(cli, "apikey", "create", "--tenant", "nope")[0] == 1
    code, _, err = invoke(cli, "tenant", "create", "bad/name")
    assert code == 1 and "Invalid tenant name" in err


def test_audit_verify_names_the_first_tampered_entry(cli: CliRunner, db: Database) -> None:
    assert invoke(cli, "tenant", "create", "acme")[0] == 0
    for i in range(3):
        invoke(
            cli,
            "user",
            "create",
            "--tenant",
            "acme",
            "--email",
            f"u{i}@acme.example.com",
            "--password",
            "12345678",
            "--role",
            "viewer",
        )
    with db.engine.begin() as conn:
        tenant_id = conn.execute(text("SELECT id FROM tenants WHERE name = 'acme'")).scalar_one()
        chain = str(uuid.UUID(str(tenant_id)))  # SQLite returns the raw hex string
        if db.engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
        conn.execute(
            text("UPDATE audit_log SET actor_label = 'someone-else' WHERE chain = :c AND seq = 3"),
            {"c": chain},
        )
        if db.engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
    code, _, err = invoke(cli, "audit", "verify", "--tenant", "acme")
    assert code == 1
    assert "seq 3" in err and "edited" in err
    assert invoke(cli, "audit", "verify")[0] == 1


def test_production_mode_refuses_default_secret(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORESIGHT_ENV", "production")
    get_settings.cache_clear()
    code, _, err = invoke(cli, "serve")
    assert code == 2 and "FORESIGHT_SECRET_KEY" in err
