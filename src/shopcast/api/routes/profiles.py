"""User profiles and segments: ``GET /v1/users/{id}/profile``, ``GET /v1/segments``,
``GET /v1/segments/{id}/users``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from shopcast.api.routes._common import engine_of, pseudonyms_of
from shopcast.errors import NotFoundError
from shopcast.features.profile_index import ProfileCard, SegmentSummary

router = APIRouter(tags=["profiles"])


class SegmentList(BaseModel):
    fitted_at: float | None = Field(description="The `now` of the last fit (epoch seconds)")
    segments: list[SegmentSummary]


class SegmentMembers(BaseModel):
    segment: SegmentSummary
    total: int
    limit: int
    offset: int
    users: list[str] = Field(
        description="User ids, sorted (pseudonyms when privacy.pseudonymize is on)"
    )


@router.get(
    "/v1/users/{user_id}/profile",
    response_model=ProfileCard,
    responses={404: {"description": "No user record and no event with this user id"}},
)
def user_profile(request: Request, user_id: str) -> ProfileCard:
    """Demographics, affinities, price, RFM, lifecycle, tags with evidence and segment.

    A user who declined personalization gets demographics only (``behaviour`` null).
    """
    raw = user_id.strip()
    try:
        card = engine_of(request).profiles.card(pseudonyms_of(request).lookup(raw))
    except NotFoundError:
        raise NotFoundError(f"user {raw!r} is unknown: no user record and no event") from None
    return card.model_copy(update={"user_id": raw})


@router.get("/v1/segments", response_model=SegmentList)
def segments(request: Request) -> SegmentList:
    """The k-means segments with a generated name, description and current size."""
    profiles = engine_of(request).profiles
    return SegmentList(fitted_at=profiles.fitted_at, segments=profiles.segments())


@router.get(
    "/v1/segments/{segment_id}/users",
    response_model=SegmentMembers,
    responses={404: {"description": "Unknown segment"}},
)
def segment_users(
    request: Request,
    segment_id: int,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> SegmentMembers:
    """The users of one segment, sorted by id, a page at a time."""
    profiles = engine_of(request).profiles
    total, users = profiles.segment_users(segment_id, limit, offset)
    summary = profiles.segments()[segment_id]
    return SegmentMembers(segment=summary, total=total, limit=limit, offset=offset, users=users)
