"""Tampering with the audit log directly in the database is caught by verification.

Each test plays an attacker with database access: it switches off the append-only triggers
(see ``attacker``) and edits, deletes or forges rows. Verification, both the service and
GET /audit/verify, must then report ok=false naming the first bad entry.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from foresight.audit import service as audit_service
from foresight.kit.db import Database
from foresight.kit.time import utcnow
from foresight.models import ActorType, AuditEntry, Role
from tests.audit.helpers import attacker
from tests.auth.helpers import audit_entries
from tests.factories import Factory, TestUser

VERIFY = "/api/v1/audit/verify"
LENGTH = 5  # entries in the victim's chain

_COLUMNS = (
    "chain, occurred_at, tenant_id, actor_type, actor_id, actor_label, action, object_type, "
    "object_id, changes, request_id, prev_hash, hash"
)


@pytest.fixture(autouse=True)
def _guard_restored(db: Database) -> Iterator[None]:
    """PostgreSQL's database outlives the test: the attacker must leave the triggers enabled."""
    yield
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect() as conn:
            states = conn.execute(
                text(
                    "SELECT tgname, tgenabled FROM pg_trigger "
                    "WHERE tgrelid = 'audit_log'::regclass AND NOT tgisinternal ORDER BY tgname"
                )
            ).all()
        assert [tuple(s) for s in states] == [
            ("audit_log_no_delete", "O"),
            ("audit_log_no_update", "O"),
        ]


@dataclass
class Scene:
    victim: TestUser  # an admin of the tenant whose chain is tampered with
    bystander: TestUser  # an admin of another tenant, whose chain stays intact

    @property
    def chain(self) -> str:
        return str(self.victim.tenant_id)


@pytest.fixture
def scene(client: TestClient, factory: Factory, db: Database) -> Scene:
    victim = factory.user(factory.tenant(), Role.admin)
    bystander = factory.user(factory.tenant(), Role.admin)
    for admin in (victim, bystander):
        # seq 1 is tenant.create; then two updates, a key creation and its revocation.
        for n in range(2):
            r = client.patch("/api/v1/tenant", json={"settings": {"n": n}}, headers=admin.headers)
            assert r.status_code == 200, r.text
        key = client.post("/api/v1/api-keys", json={"label": "plc"}, headers=admin.headers)
        assert key.status_code == 201, key.text
        r = client.delete(f"/api/v1/api-keys/{key.json()['id']}", headers=admin.headers)
        assert r.status_code == 200, r.text
    assert [e.seq for e in audit_entries(db, victim.tenant_id)] == list(range(1, LENGTH + 1))
    _assert_intact(client, db, victim)
    return Scene(victim, bystander)


def _assert_intact(client: TestClient, db: Database, admin: TestUser) -> None:
    with db.transaction(write=False) as session:
        report = audit_service.verify(session, tenant_id=admin.tenant_id)
    assert report.ok, report
    assert client.get(VERIFY, headers=admin.headers).json()["ok"] is True


def _assert_tampered(
    client: TestClient, db: Database, scene: Scene, *, seq: int | None, reason: str
) -> dict[str, Any]:
    """Both the service and the endpoint report exactly one problem, at ``seq``."""
    with db.transaction(write=False) as session:
        report = audit_service.verify(session, tenant_id=scene.victim.tenant_id)
        everything = audit_service.verify(session)
    assert report.ok is False
    assert len(report.problems) == 1, report.problems
    problem = report.problems[0]
    assert problem.chain == scene.chain
    assert problem.seq == seq, problem
    assert reason in problem.reason, problem
    # The whole-database verification names the same single problem.
    assert everything.ok is False
    assert everything.problems == report.problems

    r = client.get(VERIFY, headers=scene.victim.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["ok"] is False
    assert body["problems"] == [problem.model_dump(mode="json")]
    # The other tenant's chain is untouched and still verifies.
    _assert_intact(client, db, scene.bystander)
    return body


def _update(db: Database, scene: Scene, seq: int, assignment: str, **params: Any) -> None:
    with attacker(db) as conn:
        result = conn.execute(
            text(f"UPDATE audit_log SET {assignment} WHERE chain = :chain AND seq = :seq"),
            {"chain": scene.chain, "seq": seq, **params},
        )
        assert result.rowcount == 1


def _delete(db: Database, scene: Scene, seq: int) -> None:
    with attacker(db) as conn:
        result = conn.execute(
            text("DELETE FROM audit_log WHERE chain = :chain AND seq = :seq"),
            {"chain": scene.chain, "seq": seq},
        )
        assert result.rowcount == 1


def _entry(db: Database, scene: Scene, seq: int) -> AuditEntry:
    with db.transaction(write=False) as session:
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.chain == scene.chain, AuditEntry.seq == seq)
        ).one()
        session.expunge(entry)
        return entry


def _forge(db: Database, scene: Scene, *, seq: int, prev_hash: str, **content: Any) -> None:
    """Insert a self-consistent entry (its hash matches its content), bypassing record()."""
    fields: dict[str, Any] = {
        "chain": scene.chain,
        "seq": seq,
        "occurred_at": utcnow(),
        "tenant_id": scene.victim.tenant_id,
        "actor_type": ActorType.user,
        "actor_id": str(scene.victim.id),
        "actor_label": scene.victim.email,
        "action": "user.delete",
        "object_type": "user",
        "object_id": str(uuid.uuid4()),
        "changes": audit_service.canonical_json({"email": "evidence@example.com"}),
        "request_id": None,
        "prev_hash": prev_hash,
    }
    fields.update(content)
    entry = AuditEntry(**fields)
    entry.hash = audit_service.compute_hash(entry)
    with db.transaction() as session:
        session.add(entry)


# --- the database itself refuses UPDATE and DELETE ------------------------------------------


def test_append_only_guard_refuses_update_and_delete(
    client: TestClient, db: Database, scene: Scene
) -> None:
    before = audit_entries(db, scene.victim.tenant_id)
    statements = [
        ("UPDATE audit_log SET actor_label = 'someone else' WHERE chain = :chain", "UPDATE"),
        ("UPDATE audit_log SET changes = '{}' WHERE chain = :chain AND seq = 2", "UPDATE"),
        ("DELETE FROM audit_log WHERE chain = :chain AND seq = 3", "DELETE"),
        ("DELETE FROM audit_log", "DELETE"),
    ]
    for sql, operation in statements:
        with (
            pytest.raises(DBAPIError, match=f"append-only.*{operation}"),
            db.engine.begin() as conn,
        ):
            conn.execute(text(sql), {"chain": scene.chain})
    assert audit_entries(db, scene.victim.tenant_id) == before
    _assert_intact(client, db, scene.victim)


def test_append_only_guard_survives_an_orm_attempt(db: Database, scene: Scene) -> None:
    with pytest.raises(DBAPIError, match="append-only"), db.transaction() as session:
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.chain == scene.chain, AuditEntry.seq == 2)
        ).one()
        entry.changes = "{}"
    with pytest.raises(DBAPIError, match="append-only"), db.transaction() as session:
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.chain == scene.chain, AuditEntry.seq == 2)
        ).one()
        session.delete(entry)
    assert len(audit_entries(db, scene.victim.tenant_id)) == LENGTH


# --- (a) edited entries ----------------------------------------------------------------------


def test_edited_changes_are_detected(client: TestClient, db: Database, scene: Scene) -> None:
    _update(db, scene, 3, "changes = :changes", changes='{"settings":[{},{"n":42}]}')
    _assert_tampered(client, db, scene, seq=3, reason="content does not match its hash")


def test_edited_actor_label_is_detected(client: TestClient, db: Database, scene: Scene) -> None:
    _update(db, scene, 2, "actor_label = :label", label="innocent@example.com")
    _assert_tampered(client, db, scene, seq=2, reason="content does not match its hash")


def test_edited_action_of_the_first_entry_is_detected(
    client: TestClient, db: Database, scene: Scene
) -> None:
    _update(db, scene, 1, "action = 'tenant.nothing'")
    _assert_tampered(client, db, scene, seq=1, reason="content does not match its hash")


def test_edited_and_rehashed_last_entry_is_detected(
    client: TestClient, db: Database, scene: Scene
) -> None:
    # An attacker who knows the hashing scheme re-hashes the edited row; with no later entry to
    # link to it, only the chain head gives it away.
    entry = _entry(db, scene, LENGTH)
    entry.actor_label = "innocent@example.com"
    _update(
        db,
        scene,
        LENGTH,
        "actor_label = :label, hash = :hash",
        label=entry.actor_label,
        hash=audit_service.compute_hash(entry),
    )
    _assert_tampered(client, db, scene, seq=LENGTH, reason="does not match the hash its chain head")


# --- (b), (c) deleted entries ----------------------------------------------------------------


def test_deleted_middle_entry_is_detected(client: TestClient, db: Database, scene: Scene) -> None:
    _delete(db, scene, 3)
    body = _assert_tampered(client, db, scene, seq=3, reason="seq 3 is missing")
    assert body["problems"][0]["entry_id"] is None


def test_deleted_first_entry_is_detected(client: TestClient, db: Database, scene: Scene) -> None:
    _delete(db, scene, 1)
    _assert_tampered(client, db, scene, seq=1, reason="seq 1 is missing")


def test_deleted_last_entry_is_detected(client: TestClient, db: Database, scene: Scene) -> None:
    _delete(db, scene, LENGTH)
    _assert_tampered(client, db, scene, seq=LENGTH, reason=f"head records seq {LENGTH}")


def test_deleted_whole_chain_is_detected(client: TestClient, db: Database, scene: Scene) -> None:
    with attacker(db) as conn:
        conn.execute(text("DELETE FROM audit_log WHERE chain = :chain"), {"chain": scene.chain})
    _assert_tampered(client, db, scene, seq=1, reason="chain ends at seq 0")


# --- (d) forged entries ----------------------------------------------------------------------


def test_copied_row_appended_after_the_head_is_detected(
    client: TestClient, db: Database, scene: Scene
) -> None:
    # No triggers stand in the way of INSERT: replay entry 2 as a new entry after the head.
    with db.engine.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO audit_log (seq, {_COLUMNS}) SELECT :new_seq, {_COLUMNS} "
                "FROM audit_log WHERE chain = :chain AND seq = 2"
            ),
            {"chain": scene.chain, "new_seq": LENGTH + 1},
        )
    _assert_tampered(client, db, scene, seq=LENGTH + 1, reason="prev_hash does not match")


def test_forged_entry_with_fabricated_prev_hash_is_detected(
    client: TestClient, db: Database, scene: Scene
) -> None:
    _forge(db, scene, seq=LENGTH + 1, prev_hash="f" * 64)
    _assert_tampered(client, db, scene, seq=LENGTH + 1, reason="prev_hash does not match")


def test_well_forged_entry_appended_outside_foresight_is_detected(
    client: TestClient, db: Database, scene: Scene
) -> None:
    # Correct seq, prev_hash and hash: only the chain head (not advanced) betrays it.
    _forge(db, scene, seq=LENGTH + 1, prev_hash=_entry(db, scene, LENGTH).hash)
    _assert_tampered(client, db, scene, seq=LENGTH + 1, reason="head records seq 5")


def test_replaced_last_entry_is_detected(client: TestClient, db: Database, scene: Scene) -> None:
    # Delete the last entry and put a well-formed substitute in its place.
    original = _entry(db, scene, LENGTH)
    _delete(db, scene, LENGTH)
    _forge(db, scene, seq=LENGTH, prev_hash=original.prev_hash)
    _assert_tampered(client, db, scene, seq=LENGTH, reason="does not match the hash its chain head")


def test_replaced_middle_entry_is_detected(client: TestClient, db: Database, scene: Scene) -> None:
    original = _entry(db, scene, 3)
    _delete(db, scene, 3)
    _forge(db, scene, seq=3, prev_hash=original.prev_hash, occurred_at=original.occurred_at)
    # Entry 3 is self-consistent, so the break shows where entry 4 links to the original 3.
    _assert_tampered(client, db, scene, seq=4, reason="prev_hash does not match")


# --- (e) the chain head row ------------------------------------------------------------------


def _delete_head(db: Database, scene: Scene) -> None:
    with db.engine.begin() as conn:
        result = conn.execute(
            text("DELETE FROM audit_chain_heads WHERE chain = :chain"), {"chain": scene.chain}
        )
        assert result.rowcount == 1


def test_deleted_chain_head_is_detected(client: TestClient, db: Database, scene: Scene) -> None:
    _delete_head(db, scene)
    body = _assert_tampered(client, db, scene, seq=None, reason="chain head row missing")
    # The entries are still walked and counted.
    assert (body["chains_checked"], body["entries_checked"]) == (1, LENGTH)


def test_deleted_chain_head_does_not_hide_edits(
    client: TestClient, db: Database, scene: Scene
) -> None:
    _delete_head(db, scene)
    _update(db, scene, 2, "changes = '{}'")
    _assert_tampered(client, db, scene, seq=2, reason="content does not match its hash")


def test_deleted_chain_head_cannot_restart_the_chain(
    client: TestClient, db: Database, scene: Scene
) -> None:
    _delete_head(db, scene)
    before = audit_entries(db, scene.victim.tenant_id)
    # An audited change would need a new seq 1; the unique (chain, seq) refuses it.
    r = client.patch("/api/v1/tenant", json={"settings": {"n": 99}}, headers=scene.victim.headers)
    assert r.status_code == 409, r.text
    assert audit_entries(db, scene.victim.tenant_id) == before
    assert client.get("/api/v1/tenant", headers=scene.victim.headers).json()["settings"] != {
        "n": 99
    }
    _assert_tampered(client, db, scene, seq=None, reason="chain head row missing")
