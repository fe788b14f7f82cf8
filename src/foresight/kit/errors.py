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


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"
    slug = "forbidden"
