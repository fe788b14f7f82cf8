"""Opaque keyset cursors: stable under inserts, no OFFSET scans."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Any

from foresight.kit.errors import FieldError, InvalidInput
from foresight.kit.time import as_utc


def encode_cursor(values: list[Any]) -> str:
    raw = json.dumps(values, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *, length: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad_cursor() from exc
    if not isinstance(values, list) or len(values) != length:
        raise _bad_cursor()
    return values


def decode_time_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """A (time, id) keyset cursor, the time as UTC (422 problem when it is not one)."""
    at_raw, id_raw = decode_cursor(cursor, length=2)
    try:
        return as_utc(datetime.fromisoformat(str(at_raw))), uuid.UUID(str(id_raw))
    except ValueError as exc:
        raise _bad_cursor() from exc


def _bad_cursor() -> InvalidInput:
    return InvalidInput(
        "The pagination cursor is malformed; pass back the next_cursor of a previous page.",
        errors=[FieldError(["query", "cursor"], "malformed cursor", "cursor_invalid")],
    )
