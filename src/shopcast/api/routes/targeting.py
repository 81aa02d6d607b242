"""Targeting: ``POST /v1/targeting`` — the users most likely to respond to an item, a
category and/or brand, or a promotion text (``shopcast.features.targeting``)."""

from __future__ import annotations

from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from shopcast.api.routes._common import engine_of, json_body
from shopcast.domain import OptId, OptText
from shopcast.errors import FieldError, ValidationError
from shopcast.features.profiles import Lifecycle
from shopcast.features.targeting import TargetFilters, TargetingQuery, TargetingResult
from shopcast.ingest.validate import field_errors

router = APIRouter(tags=["targeting"])

MAX_LIMIT = 10_000


def _listed(value: object) -> object:
    """A single string is a list of one."""
    return [value] if isinstance(value, str) else value


Listed = Annotated[list[str], BeforeValidator(_listed)]


class TargetingFilterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    segment: int | None = Field(None, ge=0, description="Only members of this segment")
    lifecycle: Annotated[list[Lifecycle], BeforeValidator(_listed)] = Field(
        default_factory=list, description="Only these stages: new, active, at_risk, churned"
    )
    region: Listed = Field(default_factory=list, description="Only these regions")
    min_price_sensitivity: float | None = Field(
        None, ge=0, le=1, description="Share of purchases that were discounted, at least"
    )
    max_price_sensitivity: float | None = Field(None, ge=0, le=1)
    consent: Listed = Field(
        default_factory=list,
        description="Purposes the user must have granted explicitly (e.g. 'push', 'email')",
    )


class TargetingBody(BaseModel):
    """One of ``item_id`` / ``text``, or ``category`` and/or ``brand``."""

    model_config = ConfigDict(extra="forbid")

    item_id: OptId = None
    category: OptText = Field(None, description="A category path 'A > B' or a level name")
    brand: OptText = None
    text: OptText = Field(None, max_length=2000, description="A promotion description")
    limit: int = Field(100, ge=1, le=MAX_LIMIT)
    exclude_buyers: bool = Field(True, description="Leave out who bought the item")
    filters: TargetingFilterBody = Field(default_factory=TargetingFilterBody)

    @model_validator(mode="after")
    def _one_target(self) -> TargetingBody:
        if all(v is None for v in (self.item_id, self.category, self.brand, self.text)):
            raise ValueError("item_id: one of item_id, category, brand or text is required")
        if self.item_id is not None and (self.category or self.brand or self.text):
            raise ValueError("item_id: cannot be combined with category, brand or text")
        if self.text is not None and (self.category or self.brand):
            raise ValueError("text: cannot be combined with category or brand")
        low, high = self.filters.min_price_sensitivity, self.filters.max_price_sensitivity
        if low is not None and high is not None and low > high:
            raise ValueError(f"filters.min_price_sensitivity: {low} > max_price_sensitivity {high}")
        return self

    def query(self) -> TargetingQuery:
        f = self.filters
        return TargetingQuery(
            item_id=self.item_id,
            category=self.category,
            brand=self.brand,
            text=self.text,
            limit=self.limit,
            exclude_buyers=self.exclude_buyers,
            filters=TargetFilters(
                lifecycle=tuple(f.lifecycle),
                regions=tuple(f.region),
                min_price_sensitivity=f.min_price_sensitivity,
                max_price_sensitivity=f.max_price_sensitivity,
                consent=tuple(f.consent),
            ),
        )


@router.post(
    "/v1/targeting",
    response_model=TargetingResult,
    responses={
        404: {"description": "Unknown item or segment, or no item matches the target"},
        422: {"description": "No target, conflicting targets or a bad filter"},
    },
)
async def targeting(request: Request) -> Any:
    """Rank the users most likely to respond to a target, each with a score, a reason and
    the weighted signals that add up to the score (consent is always respected)."""
    raw = await json_body(request)
    if not isinstance(raw, dict):
        got = FieldError("body", f"got JSON {type(raw).__name__}; expected an object")
        raise ValidationError("the body must be a JSON object", [got])
    try:
        body = TargetingBody.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ValidationError("invalid targeting request", field_errors(exc)) from None
    engine = engine_of(request)
    return await run_in_threadpool(engine.target, body.query(), body.filters.segment)
