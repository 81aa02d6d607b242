"""Tag rules on hand-made SYNTHETIC profiles: each rule at and just past its threshold."""

from __future__ import annotations

from typing import Any

from shopcast.features.profiles import (
    Activity,
    Affinity,
    Behaviour,
    Demographics,
    Funnel,
    PriceProfile,
    RecentItems,
    Rfm,
    RfmScorer,
    UserProfile,
)
from shopcast.features.tags import derive_tags


def profile(
    *,
    price: dict[str, Any] | None = None,
    rfm: dict[str, Any] | None = None,
    funnel: dict[str, Any] | None = None,
    activity: dict[str, Any] | None = None,
    **behaviour: Any,
) -> UserProfile:
    """A SYNTHETIC profile: nothing remarkable unless overridden."""
    b: dict[str, Any] = {
        "categories": [],
        "category_events": 0,
        "brands": [],
        "brand_events": 0,
        "price": PriceProfile(
            **{
                "median_price": None,
                "price_index": None,
                "band": None,
                "purchases": 0,
                "discounted_purchases": 0,
                "discount_share": None,
                **(price or {}),
            }
        ),
        "rfm": Rfm(**{"recency_days": None, "frequency": 0, "monetary": 0.0, **(rfm or {})}),
        "activity": Activity(
            **{
                "first_seen": 0.0,
                "last_seen": 0.0,
                "days_since_first_event": 60.0,
                "days_since_last_event": 1.0,
                "events": 3,
                "events_7d": 3,
                "events_30d": 3,
                "lifecycle": "active",
                **(activity or {}),
            }
        ),
        "funnel": Funnel(
            **{
                "views": 3,
                "carts": 0,
                "purchases": 0,
                "favorites": 0,
                "cart_rate": 0.0,
                "purchase_rate": 0.0,
                "cart_to_purchase": None,
                **(funnel or {}),
            }
        ),
        "hours": [0] * 12 + [3] + [0] * 11,
        "preferred_hours": [12],
        "timezone": "UTC",
        "devices": {},
        "recent": RecentItems(viewed=[], carted=[], bought=[]),
        **behaviour,
    }
    return UserProfile(
        user_id="u",
        as_of=0.0,
        demographics=Demographics(),
        personalization=True,
        behaviour=Behaviour(**b),
    )


def names(p: UserProfile, scorer: RfmScorer | None = None) -> list[str]:
    return [t.name for t in derive_tags(p, scorer)]


def aff(key: str, share: float, intents: int = 0) -> Affinity:
    return Affinity(key=key, level=key.count(" > "), weight=share, share=share, intents=intents)


def test_an_unremarkable_profile_has_no_tags() -> None:
    assert derive_tags(profile()) == []


def test_bargain_hunter() -> None:
    p = profile(price={"purchases": 6, "discounted_purchases": 4, "discount_share": 4 / 6})
    [tag] = derive_tags(p)
    assert (tag.name, tag.rule, tag.evidence) == (
        "bargain hunter",
        "bargain_hunter",
        "4 of 6 purchases discounted",
    )
    assert names(profile(price={"purchases": 4, "discounted_purchases": 2, "discount_share": 0.5}))
    few = profile(price={"purchases": 2, "discounted_purchases": 2, "discount_share": 1.0})
    assert names(few) == []  # fewer than 3 purchases
    under = profile(price={"purchases": 5, "discounted_purchases": 2, "discount_share": 0.4})
    assert names(under) == []


def test_brand_loyal() -> None:
    p = profile(brands=[aff("Nike", 0.6), aff("Puma", 0.4)], brand_events=5)
    [tag] = derive_tags(p)
    assert tag.name == "brand loyal: Nike"
    assert tag.evidence == "60% of brand interest on Nike over 5 events on branded items"
    assert names(profile(brands=[aff("Nike", 0.59), aff("Puma", 0.41)], brand_events=9)) == []
    assert names(profile(brands=[aff("Nike", 1.0)], brand_events=4)) == []


def test_category_fan_takes_the_deepest_category_over_half() -> None:
    cats = [aff("Sports", 0.9), aff("Sports > Running", 0.55), aff("Sports > Golf", 0.35)]
    [tag] = derive_tags(profile(categories=cats, category_events=20))
    assert tag.name == "category fan: Sports > Running"
    assert tag.evidence.startswith("55% of category interest in Sports > Running over 20 events")
    assert names(profile(categories=[aff("Drama", 0.49)], category_events=20)) == []
    assert names(profile(categories=cats, category_events=4)) == []


def test_big_spender_needs_the_fitted_top_decile() -> None:
    scorer = RfmScorer().fit([(1.0, 1.0, 10.0 * i) for i in range(1, 11)])  # p90 = 91
    rich = profile(rfm={"recency_days": 3.0, "frequency": 1, "monetary": 91.0})
    assert "big spender" not in names(rich)  # no scorer, no population to compare with
    [tag] = [t for t in derive_tags(rich, scorer) if t.rule == "big_spender"]
    assert tag.evidence == "spent 91.00; top 10% of buyers start at 91.00"
    poorer = profile(rfm={"recency_days": 3.0, "frequency": 1, "monetary": 90.99})
    assert "big spender" not in names(poorer, scorer)


def test_loyal_customer_from_rfm_scores() -> None:
    rfm = {"recency_days": 2.0, "frequency": 9, "monetary": 50.0, "r_score": 4, "f_score": 5}
    [tag] = derive_tags(profile(rfm=rfm))
    assert tag.name == "loyal customer"
    assert tag.evidence == "RFM recency score 4, frequency score 5 (9 orders, last 2 days ago)"
    assert names(profile(rfm={**rfm, "r_score": 3})) == []


def test_window_shopper() -> None:
    [tag] = derive_tags(profile(funnel={"views": 10, "carts": 2}))
    assert (tag.name, tag.evidence) == ("window shopper", "10 views, 2 add-to-carts, 0 purchases")
    assert names(profile(funnel={"views": 9})) == []
    assert names(profile(funnel={"views": 50, "purchases": 1})) == []


def test_night_owl() -> None:
    hours = [0] * 24
    hours[23], hours[2], hours[14] = 2, 2, 6  # 4 of 10 at night
    [tag] = derive_tags(profile(hours=hours, timezone="Asia/Tokyo"))
    assert tag.evidence == "4 of 10 events between 22:00 and 05:00 (Asia/Tokyo)"
    hours[5] = 1  # 05:00 is morning: 4 of 11 < 40 %
    assert names(profile(hours=hours)) == []


def test_new_parent_counts_each_path_once() -> None:
    cats = [
        aff("Baby", 0.2, intents=2),
        aff("Baby > Diapers", 0.1, intents=2),  # same events as "Baby": not counted twice
        aff("Toys > Kids", 0.1, intents=1),
        aff("Books > Children's", 0.3, intents=5),  # not a keyword: MovieLens-style genre
    ]
    [tag] = derive_tags(profile(categories=cats))
    assert tag.name == "new parent"
    assert tag.evidence == "3 add-to-cart/purchase events in Baby, Toys > Kids"
    assert names(profile(categories=[aff("Baby > Diapers", 0.1, intents=1)])) == []


def test_at_risk() -> None:
    p = profile(activity={"lifecycle": "at_risk", "days_since_last_event": 45.2})
    [tag] = derive_tags(p)
    assert (tag.name, tag.evidence) == ("at risk", "no activity for 45 days")


def test_no_behaviour_no_tags() -> None:
    p = profile().model_copy(update={"behaviour": None, "personalization": False})
    assert derive_tags(p) == []
