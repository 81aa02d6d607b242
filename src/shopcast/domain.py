"""The shared vocabulary: events, items, users, recommendations.

These pydantic models *are* the validation and cleaning rules for single records
(API payloads, JSONL lines). The bulk importer applies the same rules column-wise
(``shopcast.ingest.bulk``) and a test checks both paths agree.

Cleaning rules (nothing is clamped silently; a value out of range is an error):

- ids and text are trimmed and NFC-normalized; an empty id is an error; ids are at
  most 256 characters and hold no control characters;
- event types are lower-cased; a few well-known aliases are accepted
  (``pv``→view, ``cart``→add_to_cart, ``buy``→purchase, ``fav``→favorite, …);
- timestamps are ISO 8601 strings (a missing zone means UTC) or epoch numbers;
  numbers above 10^11 are read as milliseconds, else as seconds; they are stored
  as float epoch seconds (UTC). A missing timestamp means "now".
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import unicodedata
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

MAX_ID_LENGTH = 256
MS_THRESHOLD = 1e11  # epoch numbers above this are milliseconds
# Earliest and latest accepted timestamps: 1970-01-01 .. 2100-01-01.
MIN_TS = 0.0
MAX_TS = 4102444800.0


class EventType(StrEnum):
    VIEW = "view"
    SEARCH = "search"
    ADD_TO_CART = "add_to_cart"
    REMOVE_FROM_CART = "remove_from_cart"
    PURCHASE = "purchase"
    RATE = "rate"
    FAVORITE = "favorite"
    IMPRESSION = "impression"
    CLICK = "click"


EVENT_TYPE_ALIASES: dict[str, EventType] = {
    "pv": EventType.VIEW,
    "page_view": EventType.VIEW,
    "detail_view": EventType.VIEW,
    "cart": EventType.ADD_TO_CART,
    "add-to-cart": EventType.ADD_TO_CART,
    "addtocart": EventType.ADD_TO_CART,
    "remove-from-cart": EventType.REMOVE_FROM_CART,
    "buy": EventType.PURCHASE,
    "order": EventType.PURCHASE,
    "transaction": EventType.PURCHASE,
    "fav": EventType.FAVORITE,
    "favourite": EventType.FAVORITE,
    "wishlist": EventType.FAVORITE,
    "rating": EventType.RATE,
}

#: Event types that must name an item.
ITEM_EVENT_TYPES = frozenset(
    {
        EventType.VIEW,
        EventType.ADD_TO_CART,
        EventType.REMOVE_FROM_CART,
        EventType.PURCHASE,
        EventType.RATE,
        EventType.FAVORITE,
        EventType.IMPRESSION,
        EventType.CLICK,
    }
)


def parse_event_type(value: object) -> EventType:
    """Canonical event type from a string or alias; ValueError names the allowed ones."""
    if isinstance(value, EventType):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a string")
    key = value.strip().lower()
    try:
        return EventType(key)
    except ValueError:
        pass
    if key in EVENT_TYPE_ALIASES:
        return EVENT_TYPE_ALIASES[key]
    allowed = ", ".join(t.value for t in EventType)
    raise ValueError(f"unknown event type {value!r}; expected one of: {allowed}")


def clean_text(value: object) -> str | None:
    """Trim and NFC-normalize; empty becomes None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string")
    out = unicodedata.normalize("NFC", value).strip()
    return out or None


def clean_id(value: object) -> str | None:
    """Normalize an identifier: ints are accepted and turned into strings."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("must be a string or an integer, not a boolean")
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError("must be a string or an integer")
    out = unicodedata.normalize("NFC", value).strip()
    if not out:
        raise ValueError("must not be empty")
    if len(out) > MAX_ID_LENGTH:
        raise ValueError(f"is {len(out)} characters long; at most {MAX_ID_LENGTH}")
    if _CONTROL.search(out):
        raise ValueError("must not contain control characters")
    return out


#: Unicode category Cc (control characters): exactly U+0000-U+001F and U+007F-U+009F.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def parse_timestamp(value: object) -> float:
    """Epoch seconds (UTC) from ISO 8601 text, epoch seconds or epoch milliseconds."""
    if isinstance(value, bool):
        raise ValueError("must be an ISO 8601 string or an epoch number, not a boolean")
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        ts = dt.timestamp()
    elif isinstance(value, int | float):
        ts = float(value)
        if not math.isfinite(ts):
            raise ValueError("must be a finite number")
        if abs(ts) > MS_THRESHOLD:
            ts /= 1000.0
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("must not be empty")
        try:
            num = float(text)
        except ValueError:
            num = None
        if num is not None:
            return parse_timestamp(num)
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" UTC", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 date-time or an epoch number") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ts = dt.timestamp()
    else:
        raise ValueError("must be an ISO 8601 string or an epoch number")
    if not MIN_TS <= ts <= MAX_TS:
        raise ValueError("is outside 1970-01-01 .. 2100-01-01")
    return ts


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


Id = Annotated[str, BeforeValidator(clean_id)]
OptId = Annotated[str | None, BeforeValidator(clean_id)]
OptText = Annotated[str | None, BeforeValidator(clean_text)]
ContextValue = str | int | float | bool | None


def derive_event_id(fields: dict[str, Any]) -> str:
    """A content hash used as idempotency key when the client sends no event_id.

    A retried POST of the same event therefore deduplicates even without an id.
    """
    payload = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return "h:" + hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


class Event(BaseModel):
    """One thing a shopper did (or one thing we showed them)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    event_id: OptId = Field(None, description="Idempotency key; derived from content if absent")
    type: EventType
    user_id: OptId = None
    session_id: OptId = None
    item_id: OptId = None
    timestamp: float = Field(
        default_factory=time.time,
        description="ISO 8601, epoch seconds or epoch ms; stored as epoch seconds UTC",
    )
    value: float | None = Field(None, description="Rating value for `rate`, else free")
    quantity: float | None = Field(None, gt=0)
    price: float | None = Field(None, ge=0)
    query: OptText = None
    recommendation_id: OptId = None
    context: dict[str, ContextValue] = Field(
        default_factory=dict, description="page, scene, device, position, …"
    )

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, v: object) -> EventType:
        return parse_event_type(v)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, v: object) -> float:
        return parse_timestamp(v)

    @field_validator("value", "quantity", "price")
    @classmethod
    def _finite_numbers(cls, v: float | None) -> float | None:
        return _finite(v)

    @model_validator(mode="after")
    def _rules(self) -> Event:
        if self.user_id is None and self.session_id is None:
            raise ValueError("user_id: one of user_id or session_id is required")
        if self.type in ITEM_EVENT_TYPES and self.item_id is None:
            raise ValueError(f"item_id: is required for a {self.type.value} event")
        if self.type is EventType.SEARCH and self.query is None and self.item_id is None:
            raise ValueError("query: is required for a search event")
        if self.type is EventType.RATE and self.value is None:
            raise ValueError("value: is required for a rate event (the rating)")
        if self.event_id is None:
            object.__setattr__(self, "event_id", derive_event_id(self.model_dump(mode="json")))
        return self

    @property
    def subject(self) -> str:
        """The key of the live session: ``u:<user_id>`` or ``s:<session_id>``."""
        return f"u:{self.user_id}" if self.user_id is not None else f"s:{self.session_id}"


def split_category(value: object) -> list[str]:
    """A category path from a list or from text split on '>', '/' or '|'."""
    if value is None:
        return []
    if isinstance(value, str):
        for sep in (">", "/", "|"):
            if sep in value:
                parts = value.split(sep)
                break
        else:
            parts = [value]
    elif isinstance(value, list | tuple):
        parts = [str(p) for p in value]
    else:
        raise ValueError("must be a string path ('A > B') or a list of levels")
    return [p for p in (clean_text(x) for x in parts) if p]


class Item(BaseModel):
    """A product in the catalog."""

    model_config = ConfigDict(extra="forbid")

    item_id: Id
    title: OptText = None
    description: OptText = None
    category: list[str] = Field(default_factory=list, description="Category path, top first")
    brand: OptText = None
    price: float | None = Field(None, ge=0)
    original_price: float | None = Field(None, ge=0)
    stock: int | None = Field(None, ge=0, description="Units in stock; None = not tracked")
    created_at: float | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("category", mode="before")
    @classmethod
    def _category(cls, v: object) -> list[str]:
        return split_category(v)

    @field_validator("created_at", mode="before")
    @classmethod
    def _created(cls, v: object) -> float | None:
        return None if v is None else parse_timestamp(v)

    @field_validator("price", "original_price")
    @classmethod
    def _finite_price(cls, v: float | None) -> float | None:
        return _finite(v)

    @property
    def discount(self) -> float | None:
        """Fraction off the original price (0.25 = 25 % off), when both are known."""
        if self.price is None or not self.original_price:
            return None
        return max(0.0, 1.0 - self.price / self.original_price)

    @property
    def in_stock(self) -> bool:
        return self.stock is None or self.stock > 0


class User(BaseModel):
    """A shopper's declared attributes (behaviour lives in the event log)."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id
    age: int | None = Field(None, ge=0, le=130)
    gender: OptText = None
    occupation: OptText = None
    region: OptText = None
    timezone: OptText = None
    consent: dict[str, bool] = Field(
        default_factory=dict, description="Per purpose: personalization, email, push, …"
    )
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not an IANA time zone (e.g. 'Europe/London')") from None
        return v


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    source: str = Field(description="Candidate source that proposed the item")
    reason: str = Field(description="Human-readable explanation")
    sponsored: bool = Field(False, description="A paid placement (ad slot)")
    title: str | None = None
    category: list[str] = Field(default_factory=list)
    price: float | None = None
    explored: bool = Field(False, description="Chosen by exploration, not by the ranking")
    propensity: float | None = Field(
        None, description="Probability the explorer picked this item for this slot"
    )


class Recommendation(BaseModel):
    recommendation_id: str
    user_id: str | None = None
    session_id: str | None = None
    scene: str = "home"
    page: int = 1
    model_version: str
    items: list[RecommendedItem]
    sources: dict[str, int] = Field(default_factory=dict, description="Items per source")
    degraded: list[str] = Field(
        default_factory=list, description="Sources that failed and were skipped"
    )
    experiment: str | None = Field(None, description="Experiment the shopper is in")
    variant: str | None = Field(None, description="The experiment's variant served")
