"""The application factory."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CollectorRegistry

from foresight import __version__
from foresight.assets import endpoints as assets_endpoints
from foresight.audit import endpoints as audit_endpoints
from foresight.auth import endpoints as auth_endpoints
from foresight.config import Settings, get_settings
from foresight.detection import endpoints as detection_endpoints
from foresight.detection.process import Detection, EventMakers, detection_from_settings
from foresight.ingest import endpoints as ingest_endpoints
from foresight.ingest.bus import InProcessBus
from foresight.ingest.mqtt import MqttConfig, MqttSubscriber
from foresight.ingest.nats_bus import NatsBus
from foresight.ingest.pipeline import Pipeline
from foresight.kit.db import Database
from foresight.kit.logging import configure_logging, get_logger
from foresight.kit.memory import keep_freed_memory
from foresight.live import endpoints as live_endpoints
from foresight.live.events import alert_event
from foresight.live.service import LiveUpdates, anomaly_from_score
from foresight.maintenance import endpoints as maintenance_endpoints
from foresight.notifications import endpoints as notifications_endpoints
from foresight.notifications import outbox as notifications_outbox
from foresight.notifications.dispatcher import Dispatcher as NotificationDispatcher
from foresight.prediction import endpoints as prediction_endpoints
from foresight.prediction import feedback_endpoints as prediction_feedback_endpoints
from foresight.prediction import rollup_cache
from foresight.prediction.jobs import TrainingRunner
from foresight.prediction.schedule import Scheduler as PredictionScheduler
from foresight.tenants import endpoints as tenants_endpoints
from foresight.timeseries import endpoints as timeseries_endpoints
from foresight.timeseries.latest import LatestCache
from foresight.timeseries.retention import RetentionJob
from foresight.web import ops, problems
from foresight.web.middleware import Metrics, RequestContextMiddleware

log = get_logger("foresight")


API_MODULES = (
    auth_endpoints,
    tenants_endpoints,
    assets_endpoints,
    maintenance_endpoints,
    timeseries_endpoints,
    ingest_endpoints,
    detection_endpoints,
    notifications_endpoints,
    audit_endpoints,
    live_endpoints,
    prediction_endpoints,
    prediction_feedback_endpoints,
)


def include_api(app: FastAPI) -> None:
    """Every domain's routes under ``/api/v1``, each domain's router included in the app itself:
    FastAPI matches a request router by router, so a level of nesting more is a level of
    matching more on every request."""
    for module in API_MODULES:
        app.include_router(module.router, prefix="/api/v1", responses=problems.PROBLEM_RESPONSES)


def create_app(settings: Settings | None = None, database: Database | None = None) -> FastAPI:
    settings = settings or get_settings()
    owns_db = database is None
    db = database or Database.from_url(
        settings.effective_database_url,
        echo=settings.database_echo,
        pool_size=settings.database_pool_size,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        log.info("startup", env=settings.env.value, database=db.engine.url.render_as_string())
        keep_freed_memory(settings.malloc_keep_mb)  # numpy's temporaries reuse warm pages
        await live.start()  # before anything can produce events (NATS: subscribed first)
        if detection is not None:
            await asyncio.to_thread(detection.start)  # child processes: ready before ingest
        if isinstance(bus, NatsBus):
            await bus.start()
        else:
            bus.start()
        subscriber_task = None
        if settings.mqtt_url:
            subscriber = MqttSubscriber(mqtt_config(settings), db, bus)
            app.state.mqtt_subscriber = subscriber
            subscriber_task = asyncio.create_task(subscriber.run(), name="mqtt-subscriber")
        # Tenants' retention, applied every FORESIGHT_RETENTION_INTERVAL_S (0: off).
        retention_job = RetentionJob(
            db, settings.retention_interval_s, chunk_rows=settings.retention_chunk_rows
        )
        app.state.retention_job = retention_job
        retention_job.start()
        # Notification outbox dispatcher (FORESIGHT_NOTIFY_EMBEDDED; or `foresight notify run`).
        notifier = NotificationDispatcher.from_settings(db, settings)
        if settings.notify_embedded:
            notifier.start()
        # Scoring and retraining on their intervals (FORESIGHT_SCHEDULE_EMBEDDED; or
        # `foresight schedule run`, cron, Airflow). Threads: training never blocks the loop.
        if settings.schedule_embedded:
            prediction_schedule.start()
        # What startup made (modules, routes, models: hundreds of thousands of objects) lives
        # as long as the process: out of the collector's sight, a full collection no longer
        # walks it, and requests are not held up by pauses of tens of milliseconds. Thawed at
        # shutdown: an app stopped in a process that lives on (tests) leaves nothing frozen.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            # A training in hand stops at its next step (its job marked interrupted).
            await asyncio.to_thread(prediction_schedule.stop)
            await asyncio.to_thread(notifier.stop)  # finishes the sends in hand
            await asyncio.to_thread(training.stop)  # fails unstarted jobs, stops the current one
            await retention_job.stop()  # ends after its current chunk, before the db closes
            if subscriber_task is not None:
                app.state.mqtt_subscriber.stop()
                await subscriber_task
            # Drains what was accepted before closing the database.
            if isinstance(bus, NatsBus):
                await bus.stop()
            else:
                bus.stop()
            if detection is not None:
                # After the writer: evaluates what it committed last.
                await asyncio.to_thread(detection.stop)
            await live.stop()
            if owns_db:
                db.dispose()

    app = FastAPI(
        title="Foresight",
        version=__version__,
        description="Predictive maintenance: assets, sensors, maintenance history and more.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.metrics = Metrics(CollectorRegistry())
    # Latest values in memory: fed by this process's writer (embedded), checked against the
    # database every FORESIGHT_LATEST_CACHE_TTL_S for other writers' points.
    latest_cache = LatestCache(ttl_s=settings.latest_cache_ttl_s)
    app.state.latest_cache = latest_cache
    rollup_cache.set_budget_mb(settings.scoring_cache_mb)
    # Training jobs (POST /models/train) run in a thread of this process, one at a time.
    training = TrainingRunner(db)
    app.state.training = training
    # Live updates (WebSockets): fed by the writer, detection and the alert endpoints; with NATS
    # the events of every process reach every node's clients.
    live = LiveUpdates.from_settings(settings, db, registry=app.state.metrics.registry)
    app.state.live = live
    # Scoring (health changes pushed live) and retraining on their intervals.
    prediction_schedule = PredictionScheduler(
        db,
        scoring_interval_s=settings.scoring_interval_s,
        retrain_interval_s=settings.retrain_interval_s,
        registry=app.state.metrics.registry,
        publish=live.publish,
    )
    app.state.prediction_schedule = prediction_schedule
    # Listeners run after an alert change committed (the alert endpoints run them too).
    app.state.alert_listeners = [live.alert_listener]
    # Hooks run inside the transaction that changes an alert (the notification outbox).
    app.state.alert_hooks = []
    # Alert changes write their notifications to the outbox, in the changing transaction.
    app.state.alert_hooks.append(notifications_outbox.enqueue)
    # Detection runs where points are persisted: here in the embedded shape, in `foresight
    # worker` with NATS.
    detection: Detection | None = None
    if settings.detection_enabled and not settings.nats_url:
        detection = detection_from_settings(
            db,
            settings,
            hooks=app.state.alert_hooks,
            publish=live.publish,
            events=EventMakers(alert_event, anomaly_from_score),
            registry=app.state.metrics.registry,
        )
    app.state.detection = detection
    bus: InProcessBus | NatsBus
    if settings.nats_url:
        bus = NatsBus(
            db,
            url=settings.nats_url,
            stream=settings.nats_stream,
            subject_prefix=settings.nats_subject_prefix,
            partitions=settings.nats_partitions,
        )
    else:
        bus = InProcessBus(
            db,
            Pipeline(latest=latest_cache, observers=[detection.observe] if detection else []),
            max_pending_points=settings.ingest_max_pending_points,
            max_group_points=settings.ingest_group_points,
        )
        bus.pipeline.observers.append(live.observe)  # downsampled readings for live updates
    app.state.ingest_bus = bus
    problems.install(app)
    app.include_router(ops.router)
    include_api(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(
        RequestContextMiddleware,
        metrics=app.state.metrics,
        max_body_bytes=settings.max_body_bytes,
    )
    return app


def mqtt_config(settings: Settings) -> MqttConfig:
    return MqttConfig(
        url=settings.mqtt_url,
        topic_prefix=settings.mqtt_topic_prefix,
        share_group=settings.mqtt_share_group,
        client_id=settings.mqtt_client_id,
        tls_ca_file=settings.mqtt_tls_ca_file,
        tls_cert_file=settings.mqtt_tls_cert_file,
        tls_key_file=settings.mqtt_tls_key_file,
        max_future_s=settings.ingest_max_future_s,
    )


def app_factory() -> FastAPI:
    """Entry point for `uvicorn --factory foresight.web.app:app_factory`."""
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    return create_app(settings)
