from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    viewer = "viewer"
    operator = "operator"
    analyst = "analyst"
    admin = "admin"

    @property
    def rank(self) -> int:
        return _ROLE_RANK[self]

    def at_least(self, other: Role) -> bool:
        return self.rank >= other.rank


_ROLE_RANK = {Role.viewer: 0, Role.operator: 1, Role.analyst: 2, Role.admin: 3}


class Criticality(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


class AssetStatus(StrEnum):
    operational = "operational"
    warning = "warning"
    critical = "critical"
    maintenance = "maintenance"
    offline = "offline"
    decommissioned = "decommissioned"


class SensorKind(StrEnum):
    gauge = "gauge"
    counter = "counter"
    boolean = "boolean"
    state = "state"


class MaintenanceKind(StrEnum):
    failure = "failure"
    corrective = "corrective"
    preventive = "preventive"
    inspection = "inspection"


class MaintenanceStatus(StrEnum):
    scheduled = "scheduled"
    in_progress = "in_progress"
    completed = "completed"
    cancelled = "cancelled"


class ActorType(StrEnum):
    user = "user"
    api_key = "api_key"
    system = "system"


class Severity(StrEnum):
    info = "info"
    warning = "warning"
    critical = "critical"
    emergency = "emergency"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {
    Severity.info: 0,
    Severity.warning: 1,
    Severity.critical: 2,
    Severity.emergency: 3,
}


class AlertStatus(StrEnum):
    open = "open"
    acknowledged = "acknowledged"
    resolved = "resolved"
