"""Readable tags derived from a user profile by fixed rules, each with its evidence.

``derive_tags(profile, scorer)`` is a pure function of the profile (and, for "big
spender", of the fitted ``RfmScorer``). Rules, in the order they are reported:

==================  =========================================================================
tag                 rule
==================  =========================================================================
bargain hunter      ≥ 3 purchases and ≥ 50 % of them discounted
brand loyal: B      ≥ 5 events on branded items and brand B holds ≥ 60 % of the brand share
category fan: C     ≥ 5 events on categorized items and C holds ≥ 50 % of the category
                    share (the deepest such category)
big spender         monetary ≥ the 90th percentile of buyers' monetary (top decile) and > 0
loyal customer      RFM recency and frequency scores both ≥ 4
window shopper      ≥ 10 views and no purchase
night owl           ≥ 10 events and ≥ 40 % of them between 22:00 and 04:59 local time
new parent          ≥ 2 add-to-cart / purchase events in categories named for babies or
                    kids (baby, infant, toddler, newborn, nursery, maternity, diaper, nappy,
                    kids, …)
at risk             lifecycle stage ``at_risk``
==================  =========================================================================

A profile without behaviour (no events, or no consent) has no tags.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from shopcast.features.profiles import NIGHT_HOURS, Affinity, RfmScorer, UserProfile

BARGAIN_MIN_PURCHASES, BARGAIN_MIN_SHARE = 3, 0.5
BRAND_MIN_EVENTS, BRAND_MIN_SHARE = 5, 0.6
CATEGORY_MIN_EVENTS, CATEGORY_MIN_SHARE = 5, 0.5
LOYAL_MIN_SCORE = 4
WINDOW_MIN_VIEWS = 10
NIGHT_MIN_EVENTS, NIGHT_MIN_SHARE = 10, 0.4
PARENT_MIN_INTENTS = 2
PARENT_WORDS = re.compile(
    r"\b(bab(y|ies)|infants?|toddlers?|newborns?|nursery|maternity|diapers?|napp(y|ies)|"
    r"kids?|pram|strollers?|prenatal)\b",
    re.IGNORECASE,
)


class Tag(BaseModel):
    name: str = Field(description="Readable tag, e.g. 'brand loyal: Nike'")
    rule: str = Field(description="Rule id: bargain_hunter, brand_loyal, …")
    evidence: str = Field(description="The figures the rule fired on")


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _parent(key: str) -> str | None:
    return key.rsplit(" > ", 1)[0] if " > " in key else None


def _parent_intents(categories: list[Affinity]) -> tuple[int, list[str]]:
    """Intents in baby/kids categories, counting each path once (its shallowest match)."""
    matching = {a.key for a in categories if PARENT_WORDS.search(a.key)}
    counted = [
        a for a in categories if a.key in matching and a.intents and _parent(a.key) not in matching
    ]
    return sum(a.intents for a in counted), [a.key for a in counted]


def derive_tags(profile: UserProfile, scorer: RfmScorer | None = None) -> list[Tag]:
    """The tags of ``profile`` by the rules of this module."""
    b = profile.behaviour
    if b is None:
        return []
    tags: list[Tag] = []
    price, rfm, funnel = b.price, b.rfm, b.funnel
    if (
        price.purchases >= BARGAIN_MIN_PURCHASES
        and price.discount_share is not None
        and price.discount_share >= BARGAIN_MIN_SHARE
    ):
        tags.append(
            Tag(
                name="bargain hunter",
                rule="bargain_hunter",
                evidence=f"{price.discounted_purchases} of {price.purchases} purchases discounted",
            )
        )
    if b.brands and b.brand_events >= BRAND_MIN_EVENTS and b.brands[0].share >= BRAND_MIN_SHARE:
        top = b.brands[0]
        tags.append(
            Tag(
                name=f"brand loyal: {top.key}",
                rule="brand_loyal",
                evidence=f"{_pct(top.share)} of brand interest on {top.key} "
                f"over {b.brand_events} events on branded items",
            )
        )
    fans = [a for a in b.categories if a.share >= CATEGORY_MIN_SHARE]
    if fans and b.category_events >= CATEGORY_MIN_EVENTS:
        fan = max(fans, key=lambda a: (a.level, a.share, a.key))
        tags.append(
            Tag(
                name=f"category fan: {fan.key}",
                rule="category_fan",
                evidence=f"{_pct(fan.share)} of category interest in {fan.key} "
                f"over {b.category_events} events on categorized items",
            )
        )
    p90 = scorer.monetary_p90_ if scorer is not None else None
    if p90 is not None and rfm.monetary > 0 and rfm.monetary >= p90:
        tags.append(
            Tag(
                name="big spender",
                rule="big_spender",
                evidence=f"spent {rfm.monetary:.2f}; top 10% of buyers start at {p90:.2f}",
            )
        )
    if (
        rfm.r_score is not None
        and rfm.f_score is not None
        and min(rfm.r_score, rfm.f_score) >= LOYAL_MIN_SCORE
    ):
        tags.append(
            Tag(
                name="loyal customer",
                rule="loyal_customer",
                evidence=f"RFM recency score {rfm.r_score}, frequency score {rfm.f_score} "
                f"({rfm.frequency} orders, last {rfm.recency_days:.0f} days ago)",
            )
        )
    if funnel.views >= WINDOW_MIN_VIEWS and funnel.purchases == 0:
        tags.append(
            Tag(
                name="window shopper",
                rule="window_shopper",
                evidence=f"{funnel.views} views, {funnel.carts} add-to-carts, 0 purchases",
            )
        )
    total = sum(b.hours)
    night = sum(b.hours[h] for h in NIGHT_HOURS)
    if total >= NIGHT_MIN_EVENTS and night / total >= NIGHT_MIN_SHARE:
        tags.append(
            Tag(
                name="night owl",
                rule="night_owl",
                evidence=f"{night} of {total} events between 22:00 and 05:00 ({b.timezone})",
            )
        )
    n_parent, keys = _parent_intents(b.categories)
    if n_parent >= PARENT_MIN_INTENTS:
        tags.append(
            Tag(
                name="new parent",
                rule="new_parent",
                evidence=f"{n_parent} add-to-cart/purchase events in {', '.join(sorted(keys))}",
            )
        )
    if b.activity.lifecycle == "at_risk":
        tags.append(
            Tag(
                name="at risk",
                rule="at_risk",
                evidence=f"no activity for {b.activity.days_since_last_event:.0f} days",
            )
        )
    return tags
