"""All configuration in one place: environment variables prefixed ``FORESIGHT_`` and ``.env``."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET = "change-me-in-production-this-is-not-a-secret"


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FORESIGHT_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    env: Environment = Environment.development
    data_dir: Path = Path("./var")
    # Empty means the embedded SQLite database ``<data_dir>/foresight.db``.
    database_url: str = ""
    database_echo: bool = False
    database_pool_size: Annotated[int, Field(ge=1, le=200)] = 10

    secret_key: SecretStr = SecretStr(DEFAULT_SECRET)
    jwt_algorithm: str = "HS256"
    jwt_issuer: str = "foresight"
    access_token_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 30
    refresh_token_days: Annotated[int, Field(ge=1, le=365)] = 14

    max_body_bytes: Annotated[int, Field(ge=1024)] = 10 * 1024 * 1024
    # A gzip body may expand to at most this many bytes (decompression bombs are refused).
    max_decompressed_bytes: Annotated[int, Field(ge=1024)] = 100 * 1024 * 1024

    # Ingestion: points stamped further ahead than this are refused.
    ingest_max_future_s: Annotated[float, Field(ge=0)] = 300.0
    # Points accepted but not yet committed; beyond this the API answers 503 + Retry-After.
    ingest_max_pending_points: Annotated[int, Field(ge=1000)] = 1_000_000
    # Points the writer commits together at most (group commit).
    ingest_group_points: Annotated[int, Field(ge=100)] = 50_000
    # readings/latest is served from memory; an entry is re-checked against the database after
    # this many seconds (bounds staleness for points written by other processes).
    latest_cache_ttl_s: Annotated[float, Field(ge=0)] = 2.0

    # Detection (alert rules, anomaly detection) on every new point, after it is stored.
    detection_enabled: bool = True
    # Rule changes take effect within this many seconds, on every process.
    detection_reload_interval_s: Annotated[float, Field(gt=0)] = 2.0
    # New points waiting for detection; beyond this the writer waits (backpressure).
    detection_max_pending_points: Annotated[int, Field(ge=1000)] = 2_000_000
    # Detection runs in this many child processes, each asset always in the same one (its own
    # interpreter lock, off the ingest path); 0 runs it in a thread of the ingesting process.
    detection_processes: Annotated[int, Field(ge=0, le=64)] = 1
    # The API process and the detection children keep up to this much freed memory for reuse
    # (glibc malloc; kit/memory.py): numpy's megabyte temporaries then reuse warm pages instead
    # of faulting in fresh ones. 0 leaves the allocator's defaults.
    malloc_keep_mb: Annotated[int, Field(ge=0, le=4096)] = 64
    # Unsupervised anomaly detection on every series (tenants may turn it off or tune it).
    anomaly_enabled: bool = True

    # Retention: the in-process job applies tenants' retention this often (0: never; run
    # `foresight retention run` from cron instead), deleting at most this many rows per statement.
    retention_interval_s: Annotated[float, Field(ge=0)] = 3600.0
    retention_chunk_rows: Annotated[int, Field(ge=1)] = 50_000

    # Predictive engine schedules (prediction/schedule.py): every tenant with assets is scored
    # every scoring_interval_s, every tenant with failure records retrained every
    # retrain_interval_s (0: never). When each was last done is read from the database. They
    # run in the API process unless schedule_embedded is false: then run `foresight schedule
    # run` (or cron / Airflow, see the README) with the same intervals.
    scoring_interval_s: Annotated[float, Field(ge=0)] = 3600.0
    retrain_interval_s: Annotated[float, Field(ge=0)] = 604800.0
    schedule_embedded: bool = True
    # Threads LightGBM may use for one batch of at least 64 assets (scores and TreeSHAP
    # explanations: about half the explanation time on two cores); 0: one per core, at most 4.
    # A single asset is always scored on one thread (more would only add their start-up).
    predict_threads: Annotated[int, Field(ge=0, le=64)] = 0
    # Sealed rollup buckets a scoring read, kept in memory for the next scoring of the same
    # assets (prediction/rollup_cache.py: exact, invalidated by the store's series revisions);
    # this much per database, least recently scored fleets dropped first; 0 turns it off.
    scoring_cache_mb: Annotated[float, Field(ge=0)] = 128.0
    # MLflow tracking (off when empty; needs the `mlflow` extra): each training run logs its
    # parameters, metrics, tags and model artifact to this tracking URI (http(s)://…, sqlite:///…,
    # databricks), in the experiment "<mlflow_experiment>/<tenant name>". A tracking failure is
    # logged and never fails the training run.
    mlflow_uri: str = ""
    mlflow_experiment: str = "foresight"

    # Notifications: the outbox dispatcher runs in the API process (else `foresight notify run`),
    # polls this often (new deliveries also wake it), sends with this timeout, retries with
    # exponential backoff (base, cap; with jitter) and dead-letters after max attempts. A claimed
    # delivery whose result is not recorded within the lease (a crashed dispatcher) is resent.
    notify_embedded: bool = True
    notify_poll_interval_s: Annotated[float, Field(gt=0)] = 2.0
    notify_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    notify_max_attempts: Annotated[int, Field(ge=1, le=100)] = 8
    notify_backoff_base_s: Annotated[float, Field(ge=0)] = 10.0
    notify_backoff_max_s: Annotated[float, Field(ge=0)] = 3600.0
    notify_lease_s: Annotated[float, Field(gt=0)] = 120.0
    notify_batch_size: Annotated[int, Field(ge=1, le=1000)] = 50
    notify_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    # Slack Web API (chat.postMessage) base URL; change it only for a proxy or a test server.
    slack_api_base_url: str = "https://slack.com/api/"

    # Scale-out: with a NATS URL, API nodes publish to JetStream and `foresight worker` persists.
    nats_url: str = ""
    nats_stream: str = "FORESIGHT_INGEST"
    nats_subject_prefix: str = "foresight.ingest"
    # Asset partitions on the stream: each is consumed by one worker at a time (so an asset's
    # points are evaluated in order by one worker). Fixed for the life of a stream: the first
    # process records it, later ones use the recorded count.
    nats_partitions: Annotated[int, Field(ge=1, le=1024)] = 16
    # A worker that stops renewing loses its partitions after this many seconds.
    nats_lease_ttl_s: Annotated[float, Field(ge=1)] = 10.0
    # A message a worker took and did not acknowledge goes again after this many seconds.
    nats_ack_wait_s: Annotated[float, Field(ge=1)] = 30.0

    # Live updates (WebSockets /api/v1/ws/…): readings go out at most once per interval per
    # asset; a client with more than ws_client_queue messages waiting, or whose one send takes
    # longer than ws_send_timeout_s, is dropped; tokens are re-checked every ws_auth_recheck_s.
    # With NATS, events travel on core subjects <ws_nats_subject_prefix>.<tenant id>.
    ws_readings_interval_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    ws_client_queue: Annotated[int, Field(ge=1, le=100_000)] = 256
    ws_send_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    ws_auth_recheck_s: Annotated[float, Field(gt=0)] = 60.0
    ws_nats_subject_prefix: str = "foresight.live"

    # MQTT ingestion (off when empty): mqtt://user:password@host:1883 or mqtts://… for TLS.
    mqtt_url: str = ""
    mqtt_topic_prefix: str = "foresight"
    mqtt_share_group: str = "foresight"
    # Stable per node: the broker keeps unacknowledged messages for it across reconnects.
    mqtt_client_id: str = ""
    mqtt_tls_ca_file: str = ""
    mqtt_tls_cert_file: str = ""
    mqtt_tls_key_file: str = ""
    log_level: str = "INFO"
    log_json: bool = True
    cors_origins: list[str] = Field(default_factory=list)

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000

    demo_tenant: str = "demo"
    demo_email: str = "admin@example.com"
    demo_password: SecretStr = SecretStr("foresight-demo")

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.env is Environment.production:
            secret = self.secret_key.get_secret_value()
            if secret == DEFAULT_SECRET:
                raise ValueError(
                    "FORESIGHT_SECRET_KEY must be set to a private value in production "
                    "(the built-in default is public)"
                )
            if len(secret) < 32:
                raise ValueError(
                    "FORESIGHT_SECRET_KEY must be at least 32 characters in production"
                )
        return self

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'foresight.db').as_posix()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
