from __future__ import annotations

from pydantic import Field

from foresight.kit.schemas import OutputModel

MAX_ERRORS_RETURNED = 1000


class RowErrorRead(OutputModel):
    row: int = Field(description="Index of the row in the request (0-based; NDJSON/CSV: line)")
    asset: str | None
    sensor: str | None
    reason: str


class IngestResult(OutputModel):
    accepted: int = Field(description="Points stored (or already stored: resending is harmless)")
    rejected: int = Field(description="Points refused; see errors")
    errors: list[RowErrorRead] = Field(
        description=f"One entry per refused point (the first {MAX_ERRORS_RETURNED})"
    )
    errors_truncated: bool = False


# Documented request bodies (the endpoint reads the raw body to support several formats).
_SINGLE = {
    "type": "object",
    "description": "The FleetVision single reading: equipment_id (or asset), optional timestamp "
    "(ISO 8601 or epoch seconds; default now), and one number per sensor key.",
    "properties": {
        "equipment_id": {"type": "string", "maxLength": 64},
        "timestamp": {"type": ["string", "number"]},
    },
    "required": ["equipment_id"],
    "additionalProperties": {"type": "number"},
}
_ITEM = {
    "type": "object",
    "properties": {
        "asset": {"type": "string", "maxLength": 64},
        "ts": {"type": ["string", "number"], "description": "ISO 8601 or epoch seconds"},
        "values": {"type": "object", "additionalProperties": {"type": "number"}},
    },
    "required": ["asset", "ts", "values"],
    "additionalProperties": False,
}
READINGS_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    _SINGLE,
                    {
                        "type": "object",
                        "properties": {"readings": {"type": "array", "items": _ITEM}},
                        "required": ["readings"],
                        "additionalProperties": False,
                    },
                ]
            }
        },
        "application/x-ndjson": {
            "schema": {"type": "string", "description": "One reading object per line"}
        },
        "text/csv": {
            "schema": {
                "type": "string",
                "description": "Wide: asset,ts,<sensor>…  or long: asset,sensor,ts,value",
            }
        },
    },
}
