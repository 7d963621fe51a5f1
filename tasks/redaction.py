"""SAS URLs are credentials: their query strings are cut from SDK error text and from urllib3's debug log.

azure-core's own HTTP logging policy already redacts query values; urllib3 (under requests, under the
storage SDK) logs each request line with the full query at DEBUG, so a process that turns DEBUG on would
print the signature. The filter rewrites those records before any handler sees them.
"""

from __future__ import annotations

import logging
import re

_QUERY = re.compile(r"\?[^\s'\"]*")
URLLIB3_LOGGER = "urllib3.connectionpool"


def redact(text: str) -> str:
    """Drop query strings (a SAS signature is one) from anything that may quote a URL."""
    return _QUERY.sub("?<redacted>", text)


class _RedactQueries(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "?" in message:
            record.msg, record.args = redact(message), None
        return True


_FILTER = _RedactQueries()


def redact_http_debug_log() -> None:
    """Install the filter on urllib3's request logger (idempotent)."""
    logger = logging.getLogger(URLLIB3_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
