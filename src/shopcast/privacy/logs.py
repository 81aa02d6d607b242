"""Logs without raw user ids: the access log's paths and query strings are redacted.

``/v1/users/<id>/…`` becomes ``/v1/users/<redacted>/…`` and ``user_id=<id>`` in a query
string ``user_id=<redacted>``. ``shopcast serve`` installs ``RedactUserIds`` on
uvicorn's access log when ``privacy.pseudonymize`` is on (``log_config``). Shopcast's
own log lines never carry user ids or personal attributes (a test checks it).
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from shopcast.config import Settings

REDACTED = "<redacted>"
_USER_PATH = re.compile(r"(/v1/users/)[^/?#\s]+")
_USER_QUERY = re.compile(r"(\buser_id=)[^&#\s]*")


def redact(text: str) -> str:
    """``text`` with user ids in API paths and query strings replaced."""
    return _USER_QUERY.sub(r"\1" + REDACTED, _USER_PATH.sub(r"\1" + REDACTED, text))


class RedactUserIds(logging.Filter):
    """Rewrites a record's arguments (uvicorn access: client, method, path, …) and
    message so they hold no user id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def log_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's logging configuration, with ``RedactUserIds`` on the access log when
    user ids are pseudonymized."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    if settings.privacy.pseudonymize:
        config.setdefault("filters", {})["redact_user_ids"] = {"()": RedactUserIds}
        config["handlers"]["access"]["filters"] = ["redact_user_ids"]
    return config
