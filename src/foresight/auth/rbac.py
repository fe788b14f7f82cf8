"""The RBAC matrix: each permission names the least role that holds it (roles are ordered)."""

from __future__ import annotations

from enum import StrEnum

from foresight.models.enums import Role


class Permission(StrEnum):
    read = "read"
    ingest = "ingest"
    alerts_ack = "alerts:ack"
    maintenance_write = "maintenance:write"
    assets_write = "assets:write"
    rules_write = "rules:write"
    models_write = "models:write"
    reports_write = "reports:write"
    users_manage = "users:manage"
    apikeys_manage = "apikeys:manage"
    settings_manage = "settings:manage"
    audit_read = "audit:read"


MINIMUM_ROLE: dict[Permission, Role] = {
    Permission.read: Role.viewer,
    Permission.ingest: Role.operator,
    Permission.alerts_ack: Role.operator,
    Permission.maintenance_write: Role.operator,
    Permission.assets_write: Role.analyst,
    Permission.rules_write: Role.analyst,
    Permission.models_write: Role.analyst,
    Permission.reports_write: Role.analyst,
    Permission.users_manage: Role.admin,
    Permission.apikeys_manage: Role.admin,
    Permission.settings_manage: Role.admin,
    Permission.audit_read: Role.admin,
}

# Device API keys hold exactly these, whatever the matrix says for users.
API_KEY_PERMISSIONS = frozenset({Permission.ingest})


def role_has(role: Role, permission: Permission) -> bool:
    return role.at_least(MINIMUM_ROLE[permission])
