"""Cleaning and validation rules of single records."""

from __future__ import annotations

import pydantic
import pytest

from shopcast.domain import Event, EventType, Item, parse_timestamp


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1767323045, 1767323045.0),
        (1767323045123, 1767323045.123),
        ("1767323045", 1767323045.0),
        ("2026-01-02T03:04:05Z", 1767323045.0),
        ("2026-01-02T04:04:05+01:00", 1767323045.0),
        ("2026-01-02 03:04:05 UTC", 1767323045.0),
    ],
)
def test_timestamps(raw: object, expected: float) -> None:
    assert parse_timestamp(raw) == pytest.approx(expected)


@pytest.mark.parametrize("raw", ["yesterday", True, float("nan"), 5e12 * 1000, -5])
def test_bad_timestamps(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(raw)


def test_event_cleaning_and_aliases() -> None:
    e = Event.model_validate({"type": " PV ", "user_id": 42, "item_id": "  sku-1\t"})
    assert (e.type, e.user_id, e.item_id) == (EventType.VIEW, "42", "sku-1")
    assert e.subject == "u:42"
    assert Event(type="buy", session_id="s", item_id="x").subject == "s:s"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"type": "view", "user_id": "", "item_id": "x"}, "user_id"),
        ({"type": "view", "user_id": "u\x00", "item_id": "x"}, "user_id"),
        ({"type": "view", "user_id": "u" * 300, "item_id": "x"}, "user_id"),
        ({"type": "purchase", "user_id": "u", "item_id": "x", "quantity": 0}, "quantity"),
        ({"type": "rate", "user_id": "u", "item_id": "x", "value": float("inf")}, "value"),
        ({"type": "search", "user_id": "u"}, "query"),
    ],
)
def test_event_errors(payload: dict[str, object], field: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        Event.model_validate(payload)
    assert field in str(info.value)


def test_item_category_and_discount() -> None:
    item = Item(item_id="x", category="Home / Kitchen / Mugs", price=7.5, original_price=10)
    assert item.category == ["Home", "Kitchen", "Mugs"]
    assert item.discount == pytest.approx(0.25)
    assert Item(item_id="y", stock=0).in_stock is False
    assert Item(item_id="z").in_stock is True
