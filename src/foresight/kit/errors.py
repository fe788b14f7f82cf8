"""Domain errors. The web layer renders each as RFC 9457 ``application/problem+json``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class FieldError:
    """One problem with one input field; ``loc`` is the path to it, e.g. ``["body", "tag"]``."""

    loc: list[str | int]
    msg: str
    type: str = "value_error"

    def as_dict(self) -> dict[str, Any]:
        return {"loc": self.loc, "msg": self.msg, "type": self.type}


@dataclass
class DomainError(Exception):
    detail: str
    errors: list[FieldError] = field(default_factory=list)

    status: ClassVar[int] = 400
    title: ClassVar[str] = "Bad request"
    slug: ClassVar[str] = "bad-request"

    def __str__(self) -> str:
        return self.detail

    def headers(self) -> dict[str, str]:
        """Extra response headers this error calls for (none by default)."""
        return {}


class NotFound(DomainError):
    status = 404
    title = "Not found"
    slug = "not-found"


class Conflict(DomainError):
    status = 409
    title = "Conflict"
    slug = "conflict"


class InvalidInput(DomainError):
    status = 422
    title = "Invalid input"
    slug = "validation-error"


class Unauthenticated(DomainError):
    status = 401
    title = "Unauthenticated"
    slug = "unauthenticated"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"
    slug = "forbidden"


class MalformedBody(DomainError):
    status = 400
    title = "Malformed JSON"
    slug = "malformed-json"


class UnsupportedMediaType(DomainError):
    status = 415
    title = "Unsupported media type"
    slug = "unsupported-media-type"


@dataclass
class ServiceUnavailable(DomainError):
    """Temporarily unable to serve (saturated, or storage down): retry after a pause."""

    retry_after_s: int = 5

    status: ClassVar[int] = 503
    title: ClassVar[str] = "Service unavailable"
    slug: ClassVar[str] = "ingest-unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}
