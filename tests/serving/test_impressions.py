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
    engine.impressions.flush()  # the background flusher may have written some already
    rows = engine.store.events.scan(subject="u:sim-user-00005")
    assert sum(e.type is EventType.IMPRESSION for _, e in rows) == 5  # they are in the log
    engine.sessions.forget("u:sim-user-00005")  # reload from the log, impressions included
    assert list(engine.sessions.get("u:sim-user-00005").items) == before


def test_flush_waits_for_a_background_flush_in_flight() -> None:
    """Erasure flushes and then deletes: impressions the background thread had already
    taken must be written before that flush returns, or they would land after the
    deletion."""
    import threading
    import time

    from shopcast.domain import Recommendation, RecommendedItem
    from shopcast.serving.impressions import ImpressionLog
    from shopcast.storage import open_store

    store = open_store("memory://")
    entered, release = threading.Event(), threading.Event()
    append = store.events.append

    def slow_append(events):  # type: ignore[no-untyped-def]
        entered.set()
        release.wait(5)
        return append(events)

    store.events.append = slow_append  # type: ignore[method-assign]
    log = ImpressionLog(store.events, flush_interval=0.01)
    rec = Recommendation(
        recommendation_id="r1",
        user_id="eve",
        items=[RecommendedItem(item_id="i1", score=1.0, source="popular", reason="popular")],
        model_version="v1",
        scene="home",
    )
    log.record(rec, at=1.0)
    assert entered.wait(5)  # the background thread holds eve's impression, mid-append
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (log.flush(), done.set()))
    waiter.start()
    time.sleep(0.2)
    assert not done.is_set()  # flush() waits for the write in flight
    release.set()
    waiter.join(5)
    assert done.is_set()
    assert [e.type for _, e in store.events.scan(subject="u:eve")] == [EventType.IMPRESSION]
    log.close()


def test_impression_events_equal_the_ones_model_construct_builds() -> None:
    from shopcast.domain import Event, Recommendation, RecommendedItem
    from shopcast.serving.impressions import _built, impressions_of

    items = [
        RecommendedItem(item_id="a", score=0.5, source="covisit", reason="r"),
        RecommendedItem(
            item_id="b", score=0.1, source="popular", reason="r", explored=True, propensity=0.2
        ),
    ]
    rec = Recommendation(
        recommendation_id="rid",
        user_id="u1",
        session_id="s1",
        scene="cart",
        model_version="v9",
        items=items,
        experiment="exp",
        variant="B",
    )
    got = impressions_of(rec, 12.5)
    for pos, (event, item) in enumerate(zip(got, items, strict=True), start=1):
        context: dict[str, object] = {
            "position": pos,
            "scene": "cart",
            "source": item.source,
            "model_version": "v9",
            "sponsored": False,
            "experiment": "exp",
            "variant": "B",
        }
        if item.explored:
            context.update(explored=True, propensity=0.2)
        want = Event.model_construct(
            event_id=f"imp:rid:{pos}",
            type=EventType.IMPRESSION,
            user_id="u1",
            session_id="s1",
            item_id=item.item_id,
            timestamp=12.5,
            value=None,
            quantity=None,
            price=None,
            query=None,
            recommendation_id="rid",
            context=context,
        )
        assert event == want
        assert event.model_fields_set == want.model_fields_set
        assert event.model_dump() == want.model_dump() and event.subject == "u:u1"
        assert Event.model_validate(event.model_dump()) == event  # a valid event
    # a field set that is not complete still goes through model_construct (defaults)
    partial = _built({"type": EventType.VIEW, "item_id": "x", "timestamp": 1.0})
    assert partial.user_id is None and partial.context == {}
