"""Pydantic bases: inputs refuse unknown fields; outputs read from ORM objects."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

T = TypeVar("T")


class InputModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)


class OutputModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(OutputModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` to get the next page; null on the last page."
    )


def _iso_only(value: object) -> object:
    # Pydantic would read numbers (and numeric strings) as epoch seconds; the documented format
    # is ISO 8601, so a stray number is an error rather than a date in 1970.
    if isinstance(value, int | float) or (
        isinstance(value, str) and value.strip().lstrip("+-").replace(".", "", 1).isdigit()
    ):
        raise ValueError("expected an ISO 8601 date-time such as 2026-01-31T08:00:00Z")
    return value


IsoDatetime = Annotated[datetime, BeforeValidator(_iso_only)]
