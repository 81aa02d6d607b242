"""``POST /v1/targeting`` over a small SYNTHETIC shop (the one of
``tests/features/test_targeting.py``, sent through the API)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shopcast.config import Settings

DAY = 86_400
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z

ITEMS = [
    {"item_id": "TENT", "title": "Trail tent", "category": "Outdoor > Camping", "brand": "Acme",
     "price": 100},
    {"item_id": "BAG", "title": "Sleeping bag", "category": "Outdoor > Camping", "brand": "Acme",
     "price": 60},
    {"item_id": "MUG", "title": "Enamel mug", "category": "Outdoor > Camping",
     "brand": "Globex", "price": 10},
    {"item_id": "KNIFE", "title": "Kitchen knife", "category": "Home > Kitchen",
     "brand": "Globex", "price": 20},
    {"item_id": "PAN", "title": "Frying pan", "category": "Home > Kitchen", "brand": "Chefco",
     "price": 30, "original_price": 40},
]  # fmt: skip
USERS = [
    {"user_id": "ann", "region": "UK", "consent": {"push": True}},
    {"user_id": "eve", "consent": {"personalization": False}},
]


def _event(
    kind: str, item: str, day: float, user: str | None = None, **more: Any
) -> dict[str, Any]:
    return {
        "type": kind,
        "item_id": item,
        "timestamp": T0 + day * DAY,
        "user_id": user,
        **more,
    }


def _events() -> list[dict[str, Any]]:
    out = []
    for k in range(3):
        for item in ("TENT", "BAG"):
            out.append(_event("purchase", item, 45 + k, session_id=f"o{k}"))
    out += [_event("view", "BAG", 49 + k / 10, "ann") for k in range(3)]
    out += [_event("purchase", "TENT", d, "bob") for d in (0, 0.5)]
    out += [_event("purchase", i, 40 + k, "cat") for k in range(2) for i in ("KNIFE", "PAN")]
    out += [_event("purchase", "MUG", 30 + k, "dan") for k in range(4)]
    out += [_event("view", "BAG", 49 + k / 10, "eve") for k in range(5)]
    return out


@pytest.fixture
def shop(settings: Settings) -> Iterator[TestClient]:
    from shopcast.api import create_app

    profiles = settings.profiles.model_copy(update={"reference_time": "log"})
    with TestClient(create_app(settings.model_copy(update={"profiles": profiles}))) as c:
        assert c.put("/v1/items", json=ITEMS).status_code == 200
        assert c.put("/v1/users", json=USERS).status_code == 200
        assert c.post("/v1/events", json=_events()).status_code == 202
        yield c


def _target(client: TestClient, **body: Any) -> dict[str, Any]:
    r = client.post("/v1/targeting", json=body)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _ids(body: dict[str, Any]) -> list[str]:
    return [u["user_id"] for u in body["users"]]


def test_item_target_ranks_explains_and_excludes_buyers(shop: TestClient) -> None:
    body = _target(shop, item_id="TENT")
    first = body["users"][0]
    assert first["user_id"] == "ann"
    assert first["reason"] == "viewed Sleeping bag, often bought with Trail tent"
    assert first["score"] == pytest.approx(sum(first["signals"].values()), abs=1e-5)
    assert first["lifecycle"] == "new" and first["region"] == "UK"  # first seen 0.4 days ago
    assert "bob" not in _ids(body) and body["excluded_buyers"] == 1
    assert "eve" not in _ids(body)  # declined personalization
    assert body["target"]["kind"] == "item" and body["target"]["items"][0]["item_id"] == "TENT"
    assert body["weights"]["item"] > 0 and body["as_of"] == T0 + 49.4 * DAY
    kept = _target(shop, item_id="TENT", exclude_buyers=False)
    assert kept["users"][0]["user_id"] == "bob"
    assert kept["users"][0]["reason"] == "bought Trail tent 2 times"


def test_category_brand_and_text_targets(shop: TestClient) -> None:
    kitchen = _target(shop, category="Kitchen")
    assert (
        _ids(kitchen)[0] == "cat"
        and kitchen["users"][0]["reason"] == "bought Kitchen items 4 times"
    )
    globex = _target(shop, brand="Globex", limit=2)
    assert _ids(globex) == ["dan", "cat"]
    text = _target(shop, text="trail tent sale")
    assert text["target"]["kind"] == "text"
    assert text["target"]["items"][0]["item_id"] == "TENT"
    assert _ids(text)[0] == "bob"


def test_filters(shop: TestClient) -> None:
    assert _ids(_target(shop, item_id="PAN", filters={"region": "uk"})) == ["ann"]
    assert _ids(_target(shop, item_id="PAN", filters={"consent": ["push"]})) == ["ann"]
    at_risk = _target(shop, item_id="PAN", filters={"lifecycle": ["at_risk"]})
    assert _ids(at_risk) == ["bob"]
    sensitive = _target(shop, item_id="MUG", filters={"min_price_sensitivity": 0.5})
    assert _ids(sensitive) == ["cat"]  # 2 of 4 purchases discounted (the pan)


def test_new_events_and_consent_changes_apply_at_once(shop: TestClient) -> None:
    assert _ids(_target(shop, item_id="TENT"))[0] == "ann"
    views = [_event("view", "BAG", 49.5 + k / 100, "gus") for k in range(8)]
    assert shop.post("/v1/events", json=views).status_code == 202
    assert _ids(_target(shop, item_id="TENT"))[0] == "gus"
    r = shop.put("/v1/users/gus", json={"consent": {"personalization": False}})
    assert r.status_code == 200
    after = _ids(_target(shop, item_id="TENT"))
    assert "gus" not in after and after[0] == "ann"


INVALID: list[tuple[Any, str]] = [
    ({}, "item_id"),
    ({"limit": 5}, "item_id"),
    ({"item_id": "  "}, "item_id"),
    ({"item_id": "TENT", "text": "tent"}, "item_id"),
    ({"text": "tent", "brand": "Acme"}, "text"),
    ({"item_id": "TENT", "limit": 0}, "limit"),
    ({"item_id": "TENT", "limit": 10_001}, "limit"),
    ({"item_id": "TENT", "item": "x"}, "item"),
    ({"item_id": "TENT", "filters": {"lifecycle": ["sleepy"]}}, "filters.lifecycle.0"),
    ({"item_id": "TENT", "filters": {"min_price_sensitivity": 2}},
     "filters.min_price_sensitivity"),
    ({"item_id": "TENT", "filters": {"min_price_sensitivity": 0.6,
                                     "max_price_sensitivity": 0.2}},
     "filters.min_price_sensitivity"),
    ({"item_id": "TENT", "exclude_buyers": "maybe"}, "exclude_buyers"),
    ([{"item_id": "TENT"}], "body"),
]  # fmt: skip


def test_invalid_requests_are_422_naming_the_field(shop: TestClient) -> None:
    for body, field in INVALID:
        r = shop.post("/v1/targeting", json=body)
        assert r.status_code == 422, (body, r.text)
        payload = r.json()
        assert payload["error"] == "validation_error"
        assert field in [e["field"] for e in payload["errors"]], (body, payload)


def test_malformed_json_is_400(shop: TestClient) -> None:
    r = shop.post("/v1/targeting", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400


UNKNOWN: list[tuple[dict[str, Any], str]] = [
    ({"item_id": "GHOST"}, "GHOST"),
    ({"category": "Garden"}, "Garden"),
    ({"brand": "Nobody"}, "Nobody"),
    ({"text": "quantum zeppelin"}, "matches"),
    ({"item_id": "TENT", "filters": {"segment": 7}}, "segment"),
]


def test_unknown_targets_are_404(shop: TestClient) -> None:
    for body, words in UNKNOWN:
        r = shop.post("/v1/targeting", json=body)
        assert r.status_code == 404, (body, r.text)
        assert r.json()["error"] == "not_found" and words in r.json()["message"]


def test_a_shop_without_events_answers_with_nobody(client: TestClient) -> None:
    assert client.put("/v1/items/X", json={"title": "Lonely lamp"}).status_code == 200
    body = _target(client, item_id="X")
    assert body["users"] == [] and body["eligible"] == 0
    assert _target(client, text="lonely lamp")["target"]["items"][0]["item_id"] == "X"
