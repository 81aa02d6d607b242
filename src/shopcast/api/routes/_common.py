"""Helpers shared by the routers."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from shopcast.config import Settings
from shopcast.errors import MalformedInputError
from shopcast.serving.engine import Engine
from shopcast.storage import Store


async def json_body(request: Request) -> Any:
    """The parsed JSON body; a 400 naming the position of the syntax error otherwise."""
    raw = await request.body()
    if not raw.strip():
        raise MalformedInputError("the request body is empty; expected JSON")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedInputError(f"the request body is not valid JSON: {exc}") from None


def store_of(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def engine_of(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings
