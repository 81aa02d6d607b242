"""Every returned item is logged as an impression carrying what attribution needs."""

from __future__ import annotations

from fastapi.testclient import TestClient

from shopcast.domain import EventType


def test_impressions_are_logged_with_their_recommendation(shop_client: TestClient) -> None:
    r = shop_client.get("/v1/users/sim-user-00004/recommendations?k=4&scene=home").json()
    engine = shop_client.app.state.engine  # type: ignore[attr-defined]
    engine.impressions.flush()
    rows = engine.store.events.scan(subject="u:sim-user-00004")
    shown = [e for _, e in rows if e.type is EventType.IMPRESSION]
    assert [e.item_id for e in shown] == [i["item_id"] for i in r["items"]]
    assert {e.recommendation_id for e in shown} == {r["recommendation_id"]}
    first = shown[0]
    assert first.event_id == f"imp:{r['recommendation_id']}:1"
    assert first.context["position"] == 1 and first.context["scene"] == "home"
    assert first.context["source"] == r["items"][0]["source"]
    assert first.context["model_version"] == r["model_version"]


def test_impressions_do_not_enter_the_live_session(shop_client: TestClient) -> None:
    engine = shop_client.app.state.engine  # type: ignore[attr-defined]
    session = engine.sessions.get("u:sim-user-00005")
    before = list(session.items)
    shop_client.get("/v1/users/sim-user-00005/recommendations?k=5")
    assert engine.impressions.flush() == 5
    engine.sessions.forget("u:sim-user-00005")  # reload from the log, impressions included
    assert list(engine.sessions.get("u:sim-user-00005").items) == before
