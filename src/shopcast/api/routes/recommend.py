"""Recommendations for a user or anonymous session, and similar items."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from shopcast.api.routes._common import engine_of, settings_of
from shopcast.domain import Recommendation
from shopcast.errors import FieldError, ValidationError
from shopcast.serving.pipeline import RecommendRequest

router = APIRouter(tags=["recommendations"])

K = Annotated[int | None, Query(ge=1, description="How many items (default recommend.default_k)")]
Category = Annotated[str | None, Query(description="Only items under this category (any level)")]
Exclude = Annotated[
    list[str] | None, Query(description="Item ids to leave out; repeat or comma-separate")
]


def _k(request: Request, k: int | None) -> int:
    cfg = settings_of(request).recommend
    if k is None:
        return cfg.default_k
    if k > cfg.max_k:
        raise ValidationError("k too large", [FieldError("k", f"{k} > max_k {cfg.max_k}")])
    return k


def _exclude(values: list[str] | None) -> tuple[str, ...]:
    return tuple(p.strip() for v in values or [] for p in v.split(",") if p.strip())


@router.get("/v1/users/{user_id}/recommendations", response_model=Recommendation)
def for_user(
    request: Request,
    user_id: str,
    k: K = None,
    category: Category = None,
    exclude: Exclude = None,
    session_id: Annotated[
        str | None, Query(description="Also use this anonymous session's events")
    ] = None,
) -> Recommendation:
    """Top-k items for a user, reflecting the events ingested a moment ago."""
    req = RecommendRequest(
        user_id=user_id.strip(),
        session_id=session_id.strip() if session_id else None,
        k=_k(request, k),
        category=category,
        exclude=_exclude(exclude),
    )
    return engine_of(request).recommend(req)


@router.get("/v1/sessions/{session_id}/recommendations", response_model=Recommendation)
def for_session(
    request: Request,
    session_id: str,
    k: K = None,
    category: Category = None,
    exclude: Exclude = None,
) -> Recommendation:
    """Top-k items for an anonymous shopper known only by ``session_id``."""
    req = RecommendRequest(
        session_id=session_id.strip(),
        k=_k(request, k),
        category=category,
        exclude=_exclude(exclude),
    )
    return engine_of(request).recommend(req)


@router.get("/v1/items/{item_id}/similar", response_model=Recommendation)
def similar(request: Request, item_id: str, k: K = None) -> Recommendation:
    """Items often viewed or bought together with this one."""
    return engine_of(request).similar(item_id.strip(), _k(request, k))
