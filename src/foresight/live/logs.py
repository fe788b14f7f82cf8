"""Keep access tokens passed as ``?token=`` out of the server's log lines.

Browsers can only authenticate a WebSocket through the URL (or a subprotocol), and uvicorn logs
every handshake with its query string on ``uvicorn.error``; this filter masks the token there.
"""

from __future__ import annotations

import logging
import re

_TOKEN = re.compile(r"((?:^|[?&])token=)[^&\s\"']+")
LOGGERS = ("uvicorn.error", "uvicorn")


def redact(text: str) -> str:
    return _TOKEN.sub(r"\1***", text)


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = redact(record.msg)
        return True


def install() -> None:
    """Idempotent: attach the filter to uvicorn's loggers once."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
