"""One pure-ASGI middleware: request id, body-size limit, Prometheus metrics and access log."""

from __future__ import annotations

import re
import time
import uuid

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from foresight.kit.context import request_id_var
from foresight.kit.logging import get_logger

_REQUEST_ID_OK = re.compile(r"[A-Za-z0-9._\-]{1,64}")
_CONVERTOR = re.compile(r":[a-z]+\}")
log = get_logger("foresight.access")


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "foresight_http_requests_total",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "foresight_http_request_duration_seconds",
            "HTTP request latency by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID_OK.fullmatch(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        log_ctx = structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        limit = self.max_body_bytes

        declared = headers.get(b"content-length")
        too_large = False
        if declared is not None:
            try:
                too_large = int(declared) > limit
            except ValueError:
                too_large = False

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"The request body exceeds {limit} bytes.")
            return message

        status_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, status_started
            if message["type"] == "http.response.start":
                status, status_started = message["status"], True
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            if too_large:
                await self._reject_too_large(scope, send_wrapper, limit)
            else:
                await self.app(scope, limited_receive, send_wrapper)
        except Exception:
            # Rendered here, inside the request context, so the 500 carries the request id.
            log.exception("unhandled_error", path=scope.get("path"))
            if status_started:
                raise
            from foresight.web.problems import problem_response

            response = problem_response(
                None,
                status=500,
                slug="internal-error",
                detail="An unexpected error occurred.",
                instance=scope.get("path"),
            )
            await response(scope, _empty_receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = scope.get("method", "")
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route, str(status)).observe(elapsed)
            log.info(
                "request",
                method=method,
                path=scope.get("path"),
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
            structlog.contextvars.reset_contextvars(**log_ctx)
            request_id_var.reset(token)

    async def _reject_too_large(self, scope: Scope, send: Send, limit: int) -> None:
        from foresight.web.problems import problem_response

        response = problem_response(
            None,
            status=413,
            slug="payload-too-large",
            detail=f"The request body exceeds {limit} bytes.",
            instance=scope.get("path"),
        )
        await response(scope, _empty_receive, send)


async def _empty_receive() -> Message:
    return {"type": "http.disconnect"}


def _route_template(scope: Scope) -> str:
    # The matched route's template keeps label cardinality bounded (no ids in labels).
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not path:
        return "unmatched"
    # FastAPI keeps included routers nested: the route's path lacks the include prefix.
    included = (scope.get("fastapi") or {}).get("included_router")
    prefix = getattr(getattr(included, "include_context", None), "prefix", "") or ""
    template = f"{prefix}{path}" if not str(path).startswith(prefix) else str(path)
    return _CONVERTOR.sub("}", template)  # {record_id:uuid} -> {record_id}
