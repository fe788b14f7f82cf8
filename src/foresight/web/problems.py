"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from foresight.kit.context import request_id_var
from foresight.kit.errors import DomainError
from foresight.kit.logging import get_logger

PROBLEM_JSON = "application/problem+json"
log = get_logger("foresight.web")


class FieldErrorModel(BaseModel):
    loc: list[str | int] = Field(description="Path to the offending input, e.g. ['body', 'tag']")
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldErrorModel] = Field(default_factory=list)


def problem_type(slug: str) -> str:
    return f"urn:foresight:problem:{slug}"


def problem_response(
    request: Request | None,
    *,
    status: int,
    slug: str,
    title: str | None = None,
    detail: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
) -> JSONResponse:
    body = {
        "type": problem_type(slug),
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path if request is not None else instance,
        "request_id": request_id_var.get(),
        "errors": errors or [],
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _jsonable_loc(loc: Any) -> list[str | int]:
    return [part if isinstance(part, int) else str(part) for part in loc]


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    headers = exc.headers()
    return problem_response(
        request,
        status=exc.status,
        slug=exc.slug,
        title=exc.title,
        detail=exc.detail,
        errors=[e.as_dict() for e in exc.errors],
        headers=headers or None,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": _jsonable_loc(e.get("loc", ())),
            "msg": str(e.get("msg", "")),
            "type": e.get("type", ""),
        }
        for e in exc.errors()
    ]
    if any(e["type"] == "json_invalid" for e in errors):
        return problem_response(
            request,
            status=400,
            slug="malformed-json",
            title="Malformed JSON",
            detail="The request body is not valid JSON.",
            errors=errors,
        )
    fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors[:5])
    return problem_response(
        request,
        status=422,
        slug="validation-error",
        title="Invalid input",
        detail=f"{len(errors)} invalid field(s): {fields}",
        errors=errors,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(
        exc.status_code, f"http-{exc.status_code}"
    )
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405:
        # Starlette lists only the first route that matched the path; list every method.
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return problem_response(
        request,
        status=exc.status_code,
        slug=slug,
        detail=str(exc.detail),
        headers=headers or None,
    )


def _allowed_methods(request: Request) -> list[str]:
    table: list[tuple[re.Pattern[str], list[str]]] | None = getattr(
        request.app.state, "allowed_methods", None
    )
    if table is None:
        table = []
        for template, operations in request.app.openapi().get("paths", {}).items():
            regex = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            table.append((re.compile(f"^{regex}$"), sorted(m.upper() for m in operations)))
        # Literal paths first: /maintenance/upcoming before /maintenance/{record_id}.
        table.sort(key=lambda entry: entry[0].pattern.count("[^/]+"))
        request.app.state.allowed_methods = table
    for compiled, methods in table:
        if compiled.match(request.url.path):
            return methods
    return []


async def _integrity_error(request: Request, exc: Exception) -> JSONResponse:
    # Services check uniqueness first; this catches the race where two requests collide.
    log.warning("integrity_error", error=str(exc).splitlines()[0])
    return problem_response(
        request,
        status=409,
        slug="conflict",
        title="Conflict",
        detail="The change conflicts with existing data (a concurrent request won the race).",
    )


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    # Schemas refuse what a database cannot store; this is the net under them.
    log.warning("data_error", error=str(exc).splitlines()[0])
    return problem_response(
        request,
        status=422,
        slug="validation-error",
        title="Invalid input",
        detail="A value cannot be stored (out of range, or characters the database refuses).",
    )


async def _operational_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("database_unavailable", error=str(exc).splitlines()[0])
    return problem_response(
        request,
        status=503,
        slug="database-unavailable",
        title="Service unavailable",
        detail="The database is unavailable; retry shortly.",
        headers={"Retry-After": "5"},
    )


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled_error", exc_info=exc)
    return problem_response(
        request, status=500, slug="internal-error", detail="An unexpected error occurred."
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(OperationalError, _operational_error)
    app.add_exception_handler(Exception, _unhandled)


# Declared on every route so the OpenAPI schema (and schemathesis) know error bodies.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": HTTPStatus(code).phrase}
    for code in (400, 401, 403, 404, 409, 413, 415, 422, 503)
}
