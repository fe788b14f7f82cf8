"""Verdicts on predictions and alerts over the API (``POST …/feedback``, ``GET /feedback``).

::

    POST /api/v1/predictions/{id}/feedback   {"verdict": "false_alarm", "note": "inspected, fine"}
    201 {"id": "…", "kind": "prediction", "prediction_id": "…", "alert_id": null,
         "asset_id": "…", "verdict": "false_alarm", "note": "inspected, fine",
         "created_by": "ana@example.com", "created_at": "…", "threshold_scale": null}

For an anomaly alert, ``threshold_scale`` is the flag threshold of the detector that raised it
on that asset once the verdict counts (1 = the default; see ``detection.tuning``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from foresight.kit.schemas import InputModel, OutputModel, Page, check_text
from foresight.models import FeedbackVerdict

Note = Annotated[str, Field(max_length=5000), AfterValidator(check_text)]
FeedbackKind = Literal["prediction", "alert"]


class FeedbackCreate(InputModel):
    verdict: FeedbackVerdict = Field(
        description="confirmed (the warning was right) or false_alarm (nothing was wrong)"
    )
    note: Note = ""


class FeedbackRead(OutputModel):
    id: uuid.UUID
    kind: FeedbackKind
    prediction_id: uuid.UUID | None
    alert_id: uuid.UUID | None
    asset_id: uuid.UUID
    verdict: FeedbackVerdict
    note: str
    created_by: str
    created_at: datetime
    threshold_scale: float | None = Field(
        default=None,
        description="Anomaly alerts: the detector's flag threshold on this asset after the "
        "verdict, as a multiple of the default (only on the answer to a POST)",
    )


FeedbackPage = Page[FeedbackRead]
