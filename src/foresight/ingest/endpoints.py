"""POST /api/v1/readings: JSON (single or batch), NDJSON and CSV bodies, optionally gzip'd."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from foresight.ingest import parse
from foresight.ingest.batch import Batch, Limits
from foresight.ingest.bus import IngestBus, Saturated, Unavailable
from foresight.ingest.schemas import (
    MAX_ERRORS_RETURNED,
    READINGS_REQUEST_BODY,
    IngestResult,
    RowErrorRead,
)
from foresight.kit.errors import (
    FieldError,
    InvalidInput,
    MalformedBody,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from foresight.web.deps import Ingestor, SettingsDep

router = APIRouter(tags=["ingest"])

Parser = Callable[[bytes, Any, Limits], Batch]
PARSERS: dict[str, Parser] = {
    "application/json": parse.parse_json,
    "application/x-ndjson": parse.parse_ndjson,
    "application/ndjson": parse.parse_ndjson,
    "application/jsonl": parse.parse_ndjson,
    "application/json-seq": parse.parse_ndjson,
    "text/csv": parse.parse_csv,
}


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported (use gzip).")
    wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
    out = bytearray()
    rest = body
    while True:  # a gzip stream may hold several members (`cat a.gz b.gz`): read them all
        inflater = zlib.decompressobj(wbits)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise InvalidInput(f"The {encoding} body is corrupt: {exc}.") from exc
        if len(out) > limit or inflater.unconsumed_tail:
            raise InvalidInput(f"The decompressed body exceeds {limit} bytes.")
        if not inflater.eof:
            raise InvalidInput(f"The {encoding} body is truncated.")
        rest = inflater.unused_data
        if not rest:
            return bytes(out)
        if encoding == "deflate":
            raise InvalidInput(f"The {encoding} body has trailing data.")


def _parser_for(content_type: str) -> Parser:
    media = (content_type or "application/json").split(";")[0].strip().lower()
    parser = PARSERS.get(media)
    if parser is None:
        raise UnsupportedMediaType(
            f"Content-Type {media!r} is not supported: use application/json, "
            "application/x-ndjson or text/csv."
        )
    return parser


@router.post(
    "/readings",
    response_model=IngestResult,
    openapi_extra={"requestBody": READINGS_REQUEST_BODY},
    responses={
        415: {"description": "Unsupported Content-Type or Content-Encoding"},
        503: {"description": "Ingestion saturated or storage unavailable; see Retry-After"},
    },
)
async def ingest_readings(
    request: Request, principal: Ingestor, settings: SettingsDep
) -> IngestResult | JSONResponse:
    """Store sensor readings. A 2xx means every accepted point is durably stored.

    Accepts the FleetVision single reading, `{"readings": [{"asset", "ts", "values"}]}`, NDJSON
    (one reading per line) and CSV (wide `asset,ts,<sensor>…` or long `asset,sensor,ts,value`),
    optionally gzip-compressed. Bad rows are refused one by one; good rows are never blocked.
    """
    parser = _parser_for(request.headers.get("content-type", ""))
    raw = await request.body()
    body = _decompress(
        raw, request.headers.get("content-encoding", "").lower(), settings.max_decompressed_bytes
    )
    limits = Limits(max_future_s=settings.ingest_max_future_s)
    try:
        batch = await anyio.to_thread.run_sync(parser, body, principal.tenant_id, limits)
    except parse.MalformedJSON as exc:
        raise MalformedBody(
            str(exc), errors=[FieldError(["body"], str(exc), "json_invalid")]
        ) from exc
    except parse.BodyError as exc:
        raise InvalidInput(
            str(exc), errors=[FieldError(["body"], str(exc), "body_invalid")]
        ) from exc
    batch.actor_label = principal.label
    bus: IngestBus = request.app.state.ingest_bus
    try:
        outcome = await bus.submit(batch)
    except Saturated as exc:
        raise ServiceUnavailable(exc.detail, retry_after_s=exc.retry_after_s) from exc
    except Unavailable as exc:
        raise ServiceUnavailable(
            f"{exc}; nothing was stored, retry shortly.", retry_after_s=5
        ) from exc
    errors = [RowErrorRead(**e.as_dict()) for e in outcome.errors[:MAX_ERRORS_RETURNED]]
    result = IngestResult(
        accepted=outcome.accepted,
        rejected=outcome.rejected,
        errors=errors,
        errors_truncated=outcome.rejected > MAX_ERRORS_RETURNED,
    )
    if outcome.accepted == 0 and outcome.rejected > 0:
        # Nothing usable: a 422 problem that still carries the per-row report.
        body_json = {
            "type": "urn:foresight:problem:readings-rejected",
            "title": "Every reading was rejected",
            "status": 422,
            "detail": f"{outcome.rejected} point(s) rejected; see errors.",
            "instance": request.url.path,
            "accepted": 0,
            "rejected": outcome.rejected,
            "errors": [
                {
                    "loc": ["body", e.row] + ([e.sensor] if e.sensor else []),
                    "msg": f"{e.asset}: {e.reason}" if e.asset else e.reason,
                    "type": "row_rejected",
                }
                for e in outcome.errors[:MAX_ERRORS_RETURNED]
            ],
        }
        return JSONResponse(body_json, status_code=422, media_type="application/problem+json")
    return result
