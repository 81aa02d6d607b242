"""Attribution: push -> open/click -> purchase per trigger and channel, and lift versus
the holdout group with a 95 % interval (SYNTHETIC events)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from tests.push.conftest import Harness, consenting, ev

from shopcast.push.attribution import lift

Make = Callable[..., Harness]


def test_lift_interval_matches_the_wald_formula() -> None:
    out = lift(sent=400, sent_conv=60, held=100, held_conv=10)
    p1, p0 = 0.15, 0.10
    se = math.sqrt(p1 * (1 - p1) / 400 + p0 * (1 - p0) / 100)
    assert out["lift"] == pytest.approx(0.05)
    assert out["ci95"] == pytest.approx([0.05 - 1.959964 * se, 0.05 + 1.959964 * se], rel=1e-6)
    assert out["relative_lift"] == pytest.approx(0.5)
    assert lift(10, 1, 0, 0)["lift"] is None  # no holdout: no lift


def test_purchase_after_click_is_attributed_to_trigger_and_channel(harness: Make) -> None:
    h = harness(
        webhooks=[{"name": "crm", "url": "http://127.0.0.1:9/", "secret": "s" * 32}],
        triggers={"cart_abandonment": {"delay": 60}},
        attribution_window="1d",
    )
    h.observe(ev("add_to_cart", "s1", "u1"), ev("add_to_cart", "t1", "u2"))
    h.tick(60)
    by_user = {m.user_id: m for m in h.live.messages}
    h.clock.advance(10)
    assert h.engine.feedback(by_user["u1"].message_id, "click") is True
    h.clock.advance(10)
    h.observe(ev("purchase", "s1", "u1"))  # clicked, then bought the pushed item
    h.observe(ev("purchase", "c5", "u2"))  # bought something not pushed: no conversion
    h.clock.advance(2 * 86400)
    h.observe(ev("purchase", "t1", "u2"))  # outside the one-day window
    m = h.engine.metrics()["triggers"]["cart_abandonment"]
    assert m["sent"] == 2
    assert m["lift"]["sent_conversions"] == 1
    live = m["channels"]["live"]
    assert (live["messages"], live["delivered"], live["opened"], live["clicked"]) == (2, 2, 1, 1)
    assert (live["purchases"], live["click_purchases"]) == (1, 1)
    hook = m["channels"]["webhook"]  # the same decision on the webhook: bought, not clicked
    assert (hook["messages"], hook["purchases"], hook["click_purchases"]) == (2, 1, 0)


def test_lift_against_the_holdout_group(harness: Make) -> None:
    ids = [f"u{i}" for i in range(200)]
    h = harness(
        users=consenting(*ids), triggers={"cart_abandonment": {"delay": 60, "holdout": 0.3}}
    )
    for u in ids:
        h.observe(ev("add_to_cart", "s1", u))
    verdicts = h.tick(60)
    held = [v.candidate.user_id for v in verdicts if v.outcome == "holdout"]
    sent = [v.candidate.user_id for v in verdicts if v.outcome == "sent"]
    # every pushed user buys, one holdout user in four does
    for u in sent + held[::4]:
        h.observe(ev("purchase", "s1", u))
    out = h.engine.metrics()["triggers"]["cart_abandonment"]["lift"]
    assert out["sent"] == len(sent) and out["holdout"] == len(held)
    assert out["sent_rate"] == 1.0
    assert out["holdout_rate"] == pytest.approx(len(held[::4]) / len(held))
    lo, hi = out["ci95"]
    assert lo < out["lift"] < hi and lo > 0  # clearly positive


def test_feedback_validation(harness: Make) -> None:
    from shopcast.errors import NotFoundError, ValidationError

    h = harness()
    with pytest.raises(ValidationError):
        h.engine.feedback("x", "like")
    with pytest.raises(NotFoundError):
        h.engine.feedback("x", "open")
