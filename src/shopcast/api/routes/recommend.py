"""Recommendation endpoints.

Unknown users and sessions are not errors: a shopper we know nothing about gets
popular items (cold start). Unknown *items* named in a path are 404.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, TypeVar

import pydantic
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from shopcast.api.routes._common import (
    engine_of,
    json_body,
    session_key,
    settings_of,
    tenant_of,
    user_key,
)
from shopcast.domain import Recommendation, clean_id
from shopcast.errors import FieldError, NotFoundError, ValidationError
from shopcast.ingest.validate import field_errors
from shopcast.serving.pipeline import PUBLIC_SCENES, RecommendRequest

router = APIRouter(tags=["recommendations"])


class Filters(BaseModel):
    """Query parameters shared by the listing endpoints."""

    k: int | None = None
    scene: str = "home"
    category: str | None = None
    brand: str | None = None
    price_min: float | None = None
    price_max: float | None = None
    exclude: tuple[str, ...] = ()
    page: int = 1
    item_ids: tuple[str, ...] = ()


def _documented_filters(
    k: Annotated[int | None, Query(ge=1, description="How many items (default 10)")] = None,
    scene: Annotated[str, Query(description=f"One of: {', '.join(PUBLIC_SCENES)}")] = "home",
    category: Annotated[str | None, Query(description="Only this category (any level)")] = None,
    brand: Annotated[str | None, Query(description="Only this brand")] = None,
    price_min: Annotated[float | None, Query(ge=0)] = None,
    price_max: Annotated[float | None, Query(ge=0)] = None,
    exclude: Annotated[
        list[str] | None, Query(description="Item ids to leave out; repeat or comma-separate")
    ] = None,
    page: Annotated[int, Query(ge=1, le=100, description="Later pages never repeat items")] = 1,
    item: Annotated[
        list[str] | None,
        Query(description="The scene's items: the product on a product page, the cart"),
    ] = None,
) -> None:
    """The listing endpoints' query parameters as documented (OpenAPI only: ``filters``
    parses them; see ``_FILTER_DOCS``)."""


def _filter_docs() -> dict[str, Any]:
    """The OpenAPI parameters of ``_documented_filters``, as FastAPI describes them."""
    from fastapi import FastAPI

    docs = FastAPI()
    docs.get("/filters")(_documented_filters)
    operation = docs.openapi()["paths"]["/filters"]["get"]
    return {
        "parameters": operation["parameters"],
        "responses": {"422": operation["responses"]["422"]},
    }


#: Added to each listing route's OpenAPI operation (``openapi_extra``).
_FILTER_DOCS = _filter_docs()
_INT = re.compile(r"^\s*[+-]?\d+(_\d+)*\s*$")  # what pydantic's lax int accepts


def _int(
    raw: str | None, name: str, problems: list[FieldError], lo: int, hi: int | None
) -> int | None:
    if raw is None:
        return None
    if not _INT.match(raw):
        problems.append(FieldError(name, "Input should be a valid integer"))
        return None
    value = int(raw)
    if value < lo:
        problems.append(FieldError(name, f"Input should be greater than or equal to {lo}"))
    elif hi is not None and value > hi:
        problems.append(FieldError(name, f"Input should be less than or equal to {hi}"))
    return value


def _price(raw: str | None, name: str, problems: list[FieldError]) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        problems.append(FieldError(name, "Input should be a valid number"))
        return None
    if not value >= 0:  # NaN too
        problems.append(FieldError(name, "Input should be greater than or equal to 0"))
    return value


async def filters(request: Request) -> Filters:
    """The listing query parameters (documented by ``_documented_filters``), parsed here
    from the query string: FastAPI solving nine declared parameters took about 0.3 ms
    of the event loop per request (``docs/benchmarks.md``, P1), this a few µs. Same
    rules and the same 422 (``errors`` naming each bad field)."""
    query = request.query_params
    cfg = settings_of(request).recommend
    problems: list[FieldError] = []
    k = _int(query.get("k"), "k", problems, 1, None)
    page = _int(query.get("page"), "page", problems, 1, 100)
    price_min = _price(query.get("price_min"), "price_min", problems)
    price_max = _price(query.get("price_max"), "price_max", problems)
    if problems:  # malformed values first, as FastAPI's own validation answered them
        raise ValidationError("invalid request", problems)
    scene = query.get("scene", "home")
    if k is not None and k > cfg.max_k:
        problems.append(FieldError("k", f"{k} > max_k {cfg.max_k}"))
    if scene not in PUBLIC_SCENES:
        problems.append(FieldError("scene", f"unknown scene {scene!r}; one of {PUBLIC_SCENES}"))
    if price_min is not None and price_max is not None and price_min > price_max:
        problems.append(FieldError("price_min", f"{price_min} > price_max {price_max}"))
    if problems:
        raise ValidationError("invalid query parameters", problems)
    return Filters(
        k=k or cfg.default_k,
        scene=scene,
        category=query.get("category"),
        brand=query.get("brand"),
        price_min=price_min,
        price_max=price_max,
        exclude=_split(query.getlist("exclude")),
        page=page or 1,
        item_ids=_split(query.getlist("item")),
    )


def _split(values: list[str] | None) -> tuple[str, ...]:
    return tuple(p.strip() for v in values or [] for p in v.split(",") if p.strip())


def _request(f: Filters, **who: Any) -> RecommendRequest:
    return RecommendRequest(
        k=f.k or 10,
        scene=f.scene,
        category=f.category,
        brand=f.brand,
        price_min=f.price_min,
        price_max=f.price_max,
        exclude=f.exclude,
        items=f.item_ids,
        page=f.page,
        **who,
    )


Listing = Annotated[Filters, Depends(filters)]


T = TypeVar("T")


async def _off_loop(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on FastAPI's shared thread pool, or with ``api.recommend_threads``
    > 0 on the tenant's own threads.

    The engine lock runs one pipeline at a time: with 32 clients on the shared pool,
    31 threads wake only to wait on it. One own thread cut a recommendation's server
    CPU by ~1 ms with recommendations alone, but the 80/20 mix with event posts cost
    0.4-1.4 ms more per request (docs/benchmarks.md, P1), so the default stays 0."""
    tenant = tenant_of(request)
    pool = tenant.recommender
    if pool is None:
        threads = tenant.settings.api.recommend_threads
        if threads <= 0:
            return await run_in_threadpool(fn, *args)
        pool = tenant.recommender = ThreadPoolExecutor(
            threads, thread_name_prefix=f"shopcast-recommend-{tenant.name}"
        )
    context = contextvars.copy_context()  # as run_in_threadpool does
    return await asyncio.get_running_loop().run_in_executor(pool, context.run, fn, *args)


def _answer(rec: Recommendation) -> Response:
    """The answer as JSON straight from pydantic's serializer: the same document the
    route's ``response_model`` describes, without FastAPI validating and re-encoding
    the model it just got (a good part of a recommendation's CPU time)."""
    return Response(rec.model_dump_json(), media_type="application/json")


@router.get(
    "/v1/users/{user_id}/recommendations", response_model=Recommendation, openapi_extra=_FILTER_DOCS
)
async def for_user(
    request: Request,
    user_id: str,
    f: Listing,
    session_id: Annotated[
        str | None, Query(description="Also use this anonymous session's events")
    ] = None,
) -> Response:
    """Top-k items for a user, reflecting the events ingested a moment ago."""
    who = {"user_id": user_key(request, user_id), "session_id": session_key(session_id)}
    rec = await _off_loop(request, engine_of(request).recommend, _request(f, **who))
    return _answer(rec.model_copy(update={"user_id": user_id.strip()}))  # the caller's own id


@router.get(
    "/v1/sessions/{session_id}/recommendations",
    response_model=Recommendation,
    openapi_extra=_FILTER_DOCS,
)
async def for_session(request: Request, session_id: str, f: Listing) -> Response:
    """Top-k items for an anonymous shopper known only by ``session_id``."""
    req = _request(f, session_id=session_key(session_id))
    return _answer(await _off_loop(request, engine_of(request).recommend, req))


@router.get("/v1/trending", response_model=Recommendation, openapi_extra=_FILTER_DOCS)
async def trending(request: Request, f: Listing) -> Recommendation:
    """What is popular right now (time-decayed), optionally within a category or brand."""
    req = _request(f.model_copy(update={"scene": "trending"}))
    return await _off_loop(request, engine_of(request).recommend, req)


def _known_item(request: Request, item_id: str) -> str:
    item_id = item_id.strip()
    if engine_of(request).bundle.items.index(item_id) < 0:
        raise NotFoundError(f"item {item_id!r} is unknown (not in the catalog or events)")
    return item_id


@router.get(
    "/v1/items/{item_id}/similar", response_model=Recommendation, openapi_extra=_FILTER_DOCS
)
async def similar(request: Request, item_id: str, f: Listing) -> Recommendation:
    """Items often viewed together with this one (content-similar items fill the rest)."""
    return await _off_loop(request, engine_of(request).similar, item_id.strip(), f.k or 10)


@router.get(
    "/v1/items/{item_id}/bought-together", response_model=Recommendation, openapi_extra=_FILTER_DOCS
)
async def bought_together(
    request: Request,
    item_id: str,
    f: Listing,
    user_id: str | None = None,
    session_id: str | None = None,
) -> Recommendation:
    """Items bought (or carted) together with this one; the shopper's purchases excluded."""
    req = _request(
        f.model_copy(update={"scene": "bought_together", "item_ids": (item_id,)}),
        user_id=None if user_id is None else user_key(request, user_id),
        session_id=session_key(session_id),
    )
    _known_item(request, item_id)
    rec = await _off_loop(request, engine_of(request).recommend, req)
    return rec.model_copy(update={"user_id": user_id.strip() if user_id else None})


class CartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str | None = None
    session_id: str | None = None
    items: list[str] = Field(min_length=1, max_length=500, description="Item ids in the cart")
    k: int = Field(10, ge=1)
    exclude: list[str] = Field(default_factory=list)


@router.post("/v1/cart/recommendations", response_model=Recommendation)
async def complete_the_cart(request: Request) -> Recommendation:
    """Complete the cart: items bought together with what is in it."""
    raw = await json_body(request)
    try:
        body = CartRequest.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ValidationError("invalid cart request", field_errors(exc)) from None
    max_k = settings_of(request).recommend.max_k
    if body.k > max_k:
        raise ValidationError("k too large", [FieldError("k", f"{body.k} > max_k {max_k}")])
    req = RecommendRequest(
        user_id=None if body.user_id is None else user_key(request, body.user_id),
        session_id=_clean(body.session_id, "session_id"),
        k=body.k,
        scene="cart",
        items=tuple(i for i in (_clean(x, "items") for x in body.items) if i),
        exclude=tuple(body.exclude),
    )
    rec = await _off_loop(request, engine_of(request).recommend, req)
    return rec.model_copy(update={"user_id": _clean(body.user_id, "user_id")})


class MergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: str


@router.post("/v1/users/{user_id}/merge", tags=["users"])
async def merge(request: Request, user_id: str) -> dict[str, Any]:
    """At login: the anonymous session's history joins the user (log and live state)."""
    raw = await json_body(request)
    try:
        body = MergeRequest.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ValidationError("invalid merge request", field_errors(exc)) from None
    session_id = _required(body.session_id, "session_id")
    uid = _required(user_id, "user_id")
    stored = user_key(request, uid)
    moved = await run_in_threadpool(engine_of(request).merge_session, stored, session_id)
    return {"user_id": uid, "session_id": session_id, "events_moved": moved}


def _required(value: str, field: str) -> str:
    cleaned = _clean(value, field)
    if cleaned is None:
        raise ValidationError(f"invalid {field}", [FieldError(field, "must not be empty")])
    return cleaned


def _clean(value: str | None, field: str) -> str | None:
    try:
        return clean_id(value)
    except ValueError as exc:
        raise ValidationError(f"invalid {field}", [FieldError(field, str(exc))]) from None
