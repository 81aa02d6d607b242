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


_SECRET_QUERY = re.compile(r"(\b(?:token|key)=)[^&#\s]*")


def redact_secrets(text: str) -> str:
    """``text`` with ``token=`` (stream tokens) and ``key=`` (API keys of WebSockets)
    query values replaced."""
    return _SECRET_QUERY.sub(r"\1" + REDACTED, text)


class RedactSecrets(logging.Filter):
    """Rewrites a record so no stream token or API key in a query string is logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_secrets(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact_secrets(record.msg)
        return True


def log_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's logging configuration: ``RedactSecrets`` on the access log always,
    ``RedactUserIds`` too when user ids are pseudonymized."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    filters = config.setdefault("filters", {})
    filters["redact_secrets"] = {"()": RedactSecrets}
    config["handlers"]["access"]["filters"] = ["redact_secrets"]
    if settings.privacy.pseudonymize:
        filters["redact_user_ids"] = {"()": RedactUserIds}
        config["handlers"]["access"]["filters"].append("redact_user_ids")
    return config
