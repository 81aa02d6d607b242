"""Helpers shared by the routers."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from shopcast.api.auth import Tenant, TenantPool, tenant_name
from shopcast.config import Settings
from shopcast.domain import clean_id
from shopcast.errors import FieldError, MalformedInputError, ValidationError
from shopcast.privacy.pseudonym import Pseudonymizer
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


def tenant_of(request: Request) -> Tenant:
    """The tenant of the request's API key (``default`` without auth)."""
    pool: TenantPool = request.app.state.tenants
    return pool.get(tenant_name(request.scope))


def store_of(request: Request) -> Store:
    return tenant_of(request).store


def engine_of(request: Request) -> Engine:
    return tenant_of(request).engine


def settings_of(request: Request) -> Settings:
    """The tenant's settings (its own database and model directory)."""
    return tenant_of(request).settings


def pseudonyms_of(request: Request) -> Pseudonymizer:
    """Raw user ids -> the ids stored (identity unless ``privacy.pseudonymize``)."""
    return tenant_of(request).pseudonyms


def user_key(request: Request, raw: str, field: str = "user_id") -> str:
    """The stored id of a raw user id from a path, query or body (422 when invalid)."""
    try:
        return pseudonyms_of(request).user(raw)
    except ValueError as exc:
        raise ValidationError(f"invalid {field}", [FieldError(field, str(exc))]) from None


def session_key(raw: str | None, field: str = "session_id") -> str | None:
    """A cleaned session id (422 when invalid); session ids are not pseudonymized."""
    try:
        return clean_id(raw)
    except ValueError as exc:
        raise ValidationError(f"invalid {field}", [FieldError(field, str(exc))]) from None
