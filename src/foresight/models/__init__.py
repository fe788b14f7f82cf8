"""Every table of Foresight, on one metadata (the one Alembic migrates)."""

from foresight.kit.db import Base
from foresight.models.asset import Asset, Sensor
from foresight.models.audit import AuditChainHead, AuditEntry
from foresight.models.auth import ApiKey, Tenant, User
from foresight.models.detection import Alert, AlertRule, AnomalyScore
from foresight.models.enums import (
    ActorType,
    AlertStatus,
    AssetStatus,
    Criticality,
    MaintenanceKind,
    MaintenanceStatus,
    Role,
    SensorKind,
    Severity,
)
from foresight.models.maintenance import MaintenanceRecord
from foresight.models.notifications import (
    ChannelKind,
    DeliveryStatus,
    NotificationAttempt,
    NotificationChannel,
    NotificationOutbox,
)
from foresight.models.prediction import (
    FeedbackVerdict,
    HealthScoreDay,
    JobStatus,
    ModelStatus,
    ModelVersion,
    Prediction,
    PredictionFeedback,
    TrainingJob,
)
from foresight.models.timeseries import Reading, Rollup, SeriesLatest

__all__ = [
    "TrainingJob",
    "PredictionFeedback",
    "Prediction",
    "ModelVersion",
    "ModelStatus",
    "JobStatus",
    "FeedbackVerdict",
    "HealthScoreDay",
    "ActorType",
    "Alert",
    "AlertRule",
    "AnomalyScore",
    "AlertStatus",
    "ApiKey",
    "Asset",
    "AssetStatus",
    "AuditChainHead",
    "AuditEntry",
    "Base",
    "ChannelKind",
    "Criticality",
    "DeliveryStatus",
    "MaintenanceKind",
    "MaintenanceRecord",
    "MaintenanceStatus",
    "NotificationAttempt",
    "NotificationChannel",
    "NotificationOutbox",
    "Reading",
    "Role",
    "Rollup",
    "Sensor",
    "SensorKind",
    "Severity",
    "SeriesLatest",
    "Tenant",
    "User",
]
