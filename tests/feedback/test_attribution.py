"""Attribution and online metrics on hand-built logs (SYNTHETIC events)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from shopcast.feedback.attribution import attribute, feedback_rows
from shopcast.feedback.metrics import window_metrics

T0 = 1_700_000_000.0


def _log(rows: list[dict[str, object]]) -> pl.DataFrame:
    base = {
        "event_id": None, "type": None, "user_id": None, "session_id": None, "item_id": None,
        "ts": None, "value": None, "quantity": None, "price": None, "query": None,
        "recommendation_id": None, "context": None,
    }  # fmt: skip
    out = []
    for seq, row in enumerate(rows, start=1):
        r = {**base, **row, "seq": seq, "event_id": f"e{seq}"}
        if isinstance(r["context"], dict):
            r["context"] = json.dumps(r["context"])
        out.append(r)
    schema = {
        "seq": pl.Int64, "event_id": pl.Utf8, "type": pl.Utf8, "user_id": pl.Utf8,
        "session_id": pl.Utf8, "item_id": pl.Utf8, "ts": pl.Float64, "value": pl.Float64,
        "quantity": pl.Float64, "price": pl.Float64, "query": pl.Utf8,
        "recommendation_id": pl.Utf8, "context": pl.Utf8,
    }  # fmt: skip
    return pl.DataFrame(out, schema=schema)


def _imp(rec: str, item: str, pos: int, ts: float, user: str = "u1", **ctx: object) -> dict:
    context = {"position": pos, "scene": "home", "source": "covisit", "model_version": "v1"}
    return {
        "type": "impression", "user_id": user, "item_id": item, "ts": ts,
        "recommendation_id": rec, "context": {**context, **ctx},
    }  # fmt: skip


def test_clicks_carts_and_purchases_are_attributed() -> None:
    log = _log(
        [
            _imp("r1", "a", 1, T0),
            _imp("r1", "b", 2, T0),
            _imp("r1", "c", 3, T0, source="popular"),
            # click on b with the rec id, then a purchase without one (last click)
            {"type": "click", "user_id": "u1", "item_id": "b", "ts": T0 + 10,
             "recommendation_id": "r1"},
            {"type": "add_to_cart", "user_id": "u1", "item_id": "b", "ts": T0 + 20,
             "recommendation_id": "r1"},
            {"type": "purchase", "user_id": "u1", "item_id": "b", "ts": T0 + 600,
             "price": 12.5, "quantity": 2},
            # a click on c far too late: not attributed
            {"type": "click", "user_id": "u1", "item_id": "c", "ts": T0 + 7200,
             "recommendation_id": "r1"},
            # a purchase of a by another user: not attributed
            {"type": "purchase", "user_id": "u2", "item_id": "a", "ts": T0 + 30, "price": 5.0},
        ]
    )  # fmt: skip
    out = attribute(feedback_rows(log), click_window_s=3600, purchase_window_s=86400)
    by = {r["item_id"]: r for r in out.iter_rows(named=True)}
    assert by["a"]["clicked"] is False and by["a"]["purchased"] is False
    assert by["b"]["clicked"] and by["b"]["carted"] and by["b"]["purchased"]
    assert by["b"]["revenue"] == pytest.approx(25.0)
    assert by["b"]["position"] == 2 and by["b"]["model_version"] == "v1"
    assert by["c"]["clicked"] is False and by["c"]["source"] == "popular"


def test_purchase_window_and_single_attribution() -> None:
    log = _log(
        [
            _imp("r1", "a", 1, T0),
            _imp("r2", "a", 1, T0 + 100),
            {"type": "click", "user_id": "u1", "item_id": "a", "ts": T0 + 5,
             "recommendation_id": "r1"},
            {"type": "click", "user_id": "u1", "item_id": "a", "ts": T0 + 105,
             "recommendation_id": "r2"},
            # one purchase: credited to the latest click only (r2)
            {"type": "purchase", "user_id": "u1", "item_id": "a", "ts": T0 + 200, "price": 3.0},
            # a purchase two days later: outside the window
            {"type": "purchase", "user_id": "u1", "item_id": "a", "ts": T0 + 3 * 86400,
             "price": 3.0},
        ]
    )  # fmt: skip
    out = attribute(feedback_rows(log), purchase_window_s=86400)
    by = {r["recommendation_id"]: r for r in out.iter_rows(named=True)}
    assert by["r1"]["clicked"] and not by["r1"]["purchased"]
    assert by["r2"]["purchased"] and by["r2"]["revenue"] == pytest.approx(3.0)


def test_views_with_a_rec_id_count_as_clicks_and_sessions_attribute() -> None:
    log = _log(
        [
            {**_imp("r1", "a", 1, T0), "user_id": None, "session_id": "s1"},
            {"type": "view", "session_id": "s1", "item_id": "a", "ts": T0 + 3,
             "recommendation_id": "r1"},
            {"type": "purchase", "session_id": "s1", "item_id": "a", "ts": T0 + 50,
             "price": 9.0},
            {"type": "view", "session_id": "s1", "item_id": "zzz", "ts": T0 + 3},
        ]
    )  # fmt: skip
    rows = feedback_rows(log)
    assert rows.height == 3  # the view without a rec id is not feedback
    out = attribute(rows)
    assert out.height == 1 and out["clicked"][0] and out["purchased"][0]
    assert out["subject"][0] == "s:s1"


def test_window_metrics() -> None:
    log = _log(
        [
            _imp("r1", "a", 1, T0, variant="A", experiment="x"),
            _imp("r1", "b", 2, T0, variant="A", experiment="x"),
            _imp("r2", "a", 1, T0 + 10, user="u2", variant="B", experiment="x"),
            _imp("r2", "c", 2, T0 + 10, user="u2", variant="B", experiment="x"),
            _imp("r0", "d", 1, T0 - 7200),  # outside a one-hour window
            {"type": "click", "user_id": "u1", "item_id": "b", "ts": T0 + 1,
             "recommendation_id": "r1"},
            {"type": "click", "user_id": "u2", "item_id": "c", "ts": T0 + 11,
             "recommendation_id": "r2"},
            {"type": "purchase", "user_id": "u2", "item_id": "c", "ts": T0 + 20, "price": 10.0},
        ]
    )  # fmt: skip
    imps = attribute(feedback_rows(log))
    cats = {"a": "X", "b": "X", "c": "Y", "d": "Y"}
    m = window_metrics(imps, now=T0 + 60, window_s=3600, catalog_size=10, categories=cats)
    o = m["overall"]
    assert o["impressions"] == 4 and o["clicks"] == 2 and o["ctr"] == 0.5
    assert o["purchases"] == 1 and o["conversion_rate"] == 0.5
    assert o["rpm"] == pytest.approx(2500.0)
    assert o["avg_click_position"] == 2.0
    assert o["coverage"] == pytest.approx(0.3)  # a, b, c of 10
    assert o["intra_list_diversity"] == pytest.approx(0.5)  # r1 same category, r2 differs
    assert o["exposure_gini"] == pytest.approx(1 / 6, abs=1e-6)  # a twice, b and c once
    assert {r["variant"]: r["ctr"] for r in m["by_variant"]} == {"A": 0.5, "B": 0.5}
    assert [r["position"] for r in m["by_position"]] == [1, 2]
    empty = window_metrics(imps.clear(), now=T0, window_s=60)
    assert empty["overall"]["impressions"] == 0 and empty["overall"]["ctr"] is None
