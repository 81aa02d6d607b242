"""Item features: ``GET /v1/items/{id}/features``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from shopcast.api.routes._common import engine_of
from shopcast.errors import NotFoundError

router = APIRouter(tags=["items"])


class TermWeight(BaseModel):
    term: str
    weight: float


class ItemFeaturesOut(BaseModel):
    """The cleaned features of one catalog item (see ``shopcast.features.items``)."""

    item_id: str
    title: str | None
    title_norm: str | None = Field(description="Lower case, punctuation and extra spaces removed")
    brand: str | None
    category: list[str]
    levels: list[str | None] = Field(description="Category levels 1..3 (null when absent)")
    category_depth: int
    price: float | None
    original_price: float | None
    discount_pct: float | None = Field(description="100 · (1 - price / original_price)")
    price_z: float | None = Field(description="z-score of the price within price_group")
    price_percentile: float | None = Field(description="Mid-rank percentile in [0, 1]")
    price_group: str | None = Field(
        description="Category path the price is compared within; '' = the whole catalog"
    )
    price_group_level: int | None = Field(description="Depth of price_group (0 = whole catalog)")
    price_group_size: int | None = Field(description="Priced items of price_group at fit")
    stock: int | None
    stock_flag: str = Field(description="in_stock | low_stock | out_of_stock | untracked")
    missing: dict[str, bool] = Field(description="Per field: true when it is missing")
    duplicate_group: list[str] = Field(
        description="Items sharing this one's normalized title + brand (empty when unique)"
    )
    top_terms: list[TermWeight] = Field(description="Heaviest TF-IDF terms of title + description")
    text_backend: str


@router.get("/v1/items/{item_id}/features", response_model=ItemFeaturesOut)
def item_features(request: Request, item_id: str) -> ItemFeaturesOut:
    """The item's cleaned and normalized features, as the models and content similarity see them."""
    key = item_id.strip()
    found = engine_of(request).item_features.describe(key)
    if found is None:
        raise NotFoundError(f"item {key!r} is not in the catalog; PUT /v1/items/{key} to add it")
    return ItemFeaturesOut.model_validate(found)
