"""The per-shopper result cache (``serving/result_cache.py``): answers equal the ones
computed without it, and a kept list is never served after the shopper's event (local
or written by another process to the shared live session), a model swap, or a
catalog/stock change. The shop is the SYNTHETIC simulated shop.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from shopcast.config import RecommendSettings, Settings
from shopcast.domain import Event, Recommendation, RecommendedItem
from shopcast.ingest.importer import import_events, import_items, import_users
from shopcast.serving import result_cache
from shopcast.serving.engine import Engine
from shopcast.serving.pipeline import RecommendRequest
from shopcast.serving.result_cache import CachedRanking, ResultCache
from shopcast.serving.rules import Ranked
from shopcast.simulate import SimulatedShop
from shopcast.storage import Store, open_store
from shopcast.training.bundle import save_bundle, train_bundle

NOW = 1_800_000_000.0
#: The fields explain sets (the others keep their defaults, as unset).
BUILT = {"item_id", "score", "source", "reason", "sponsored", "title", "category", "price"}


def _settings(tmp_path: Path, cache: bool, **extra: Any) -> Settings:
    return Settings(
        environment="test",
        database_url=f"sqlite:///{tmp_path / 'shop.db'}",
        model_dir=tmp_path / "models",
        recommend=RecommendSettings(log_impressions=False, result_cache=cache),
        **extra,
    )


def _store(tmp_path: Path, shop: SimulatedShop) -> Store:
    settings = _settings(tmp_path, True)
    store = open_store(settings.database_url)
    import_items(store, shop.items)
    import_users(store, shop.users)
    import_events(store, shop.events)
    save_bundle(train_bundle(store, settings.recommend), settings.model_dir)
    return store


def _open(store: Store, tmp_path: Path, cache: bool, **extra: Any) -> Engine:
    from shopcast.training.bundle import load_current
    from shopcast.training.registry import open_registry

    settings = _settings(tmp_path, cache, **extra)
    bundle = load_current(settings.model_dir, open_registry(settings))
    assert bundle is not None
    return Engine(store, settings, bundle, clock=lambda: NOW)


def _answer(rec: Recommendation) -> list[tuple[Any, ...]]:
    return [(i.item_id, i.source, i.reason, i.score, i.sponsored) for i in rec.items]


def _cache(engine: Engine) -> ResultCache:
    cache = engine.pipeline.cache
    assert cache is not None
    return cache


@pytest.fixture
def store(tmp_path: Path, small_shop: SimulatedShop) -> Store:
    return _store(tmp_path, small_shop)


def test_cached_answers_equal_uncached_ones(
    store: Store, tmp_path: Path, small_shop: SimulatedShop
) -> None:
    cached, plain = _open(store, tmp_path, True), _open(store, tmp_path, False)
    assert plain.pipeline.cache is None
    users = [u.user_id for u in small_shop.users[:8]]
    category = small_shop.items[0].category[0]
    for user in users:
        first = plain.recommend(RecommendRequest(user_id=user, k=5))
        shown = tuple(i.item_id for i in first.items[:2])
        requests = [
            RecommendRequest(user_id=user, k=5),
            RecommendRequest(user_id=user, k=5),  # the same again: a hit
            RecommendRequest(user_id=user, k=5, page=2),
            RecommendRequest(user_id=user, k=5, page=3),
            RecommendRequest(user_id=user, k=5),  # a new listing
            RecommendRequest(user_id=user, k=5, exclude=shown),
            RecommendRequest(user_id=user, k=5, exclude=shown, page=2),
            RecommendRequest(user_id=user, k=5, category=category),
            RecommendRequest(user_id=user, k=5, category=category),
            RecommendRequest(user_id=user, k=5, scene="product_page", items=(shown[0],)),
            RecommendRequest(user_id=user, k=5, scene="product_page", items=(shown[0],)),
            RecommendRequest(user_id=user, k=7, scene="cart"),
            RecommendRequest(user_id=user, k=7, scene="cart"),
        ]
        plain.recommend(RecommendRequest(user_id=user, k=5))  # page 1 again: same listing
        for request in requests:
            want, got = plain.recommend(request), cached.recommend(request)
            assert got.degraded == want.degraded == []
            assert _answer(got) == _answer(want), request
            for item in got.items:  # built without validation: as validation builds it
                fields = {f: getattr(item, f) for f in BUILT}
                again = RecommendedItem(**fields)
                assert again.model_dump() == item.model_dump()
                assert again.model_fields_set == item.model_fields_set == BUILT
    assert _cache(cached).hits >= 4 * len(users)


def test_a_cached_answer_is_not_served_after_the_shoppers_event(
    store: Store, tmp_path: Path, small_shop: SimulatedShop
) -> None:
    cached, plain = _open(store, tmp_path, True), _open(store, tmp_path, False)
    user = small_shop.users[3].user_id
    request = RecommendRequest(user_id=user, k=6)
    before = cached.recommend(request)
    assert _answer(cached.recommend(request)) == _answer(before)
    cache = _cache(cached)
    hits = cache.hits
    assert hits == 1
    shown = {i.item_id for i in before.items}
    item = next(i.item_id for i in small_shop.items if i.item_id not in shown)
    event = Event(type="view", user_id=user, item_id=item, timestamp=NOW - 1, event_id="ev-1")
    assert store.events.append([event]).accepted
    for engine in (cached, plain):
        engine.observe([event])
    after = cached.recommend(request)
    assert cache.hits == hits  # computed afresh
    assert _answer(after) == _answer(plain.recommend(request))
    assert _answer(after) != _answer(before)
    assert item in {i.item_id for i in after.items}  # read-your-writes: recently viewed


def test_a_session_changed_by_another_process_is_not_served_from_the_cache(
    store: Store, tmp_path: Path, small_shop: SimulatedShop
) -> None:
    """Another API process writes the shared live session (Redis) and this process hears
    of it only later: the session's fingerprint in the key makes the next request miss."""
    engine = _open(store, tmp_path, True)
    user = small_shop.users[5].user_id
    request = RecommendRequest(user_id=user, k=6)
    before = engine.recommend(request)
    engine.recommend(request)
    cache = _cache(engine)
    assert cache.hits == 1
    item = small_shop.items[-1].item_id
    event = Event(type="add_to_cart", user_id=user, item_id=item, timestamp=NOW, event_id="x1")
    engine.sessions.observe([event])  # the session moved; the engine was not told
    after = engine.recommend(request)
    assert cache.hits == 1
    cache.clear()
    assert _answer(after) == _answer(engine.recommend(request))
    assert _answer(after) != _answer(before)


def test_two_engines_sharing_redis_sessions(
    redis_url: str, store: Store, tmp_path: Path, small_shop: SimulatedShop
) -> None:
    """Two processes' engines with the live state in Redis: an event applied by one is in
    the other's very next answer, though the other had the shopper's list cached."""
    one = _open(store, tmp_path, True, state={"url": redis_url})
    two = _open(store, tmp_path, True, state={"url": redis_url})
    try:
        user = small_shop.users[7].user_id
        request = RecommendRequest(user_id=user, k=6)
        before = two.recommend(request)
        two.recommend(request)
        assert _cache(two).hits == 1
        shown = {i.item_id for i in before.items}
        item = next(i.item_id for i in small_shop.items if i.item_id not in shown)
        event = Event(type="view", user_id=user, item_id=item, timestamp=NOW, event_id="r1")
        assert store.events.append([event]).accepted
        one.observe([event])  # ingested by the first process only
        after = two.recommend(request)
        assert _cache(two).hits == 1
        assert item in {i.item_id for i in after.items}
    finally:
        one.close()
        two.close()


def test_a_cached_answer_is_not_served_after_a_model_swap(
    store: Store, tmp_path: Path, small_shop: SimulatedShop
) -> None:
    engine = _open(store, tmp_path, True)
    user = small_shop.users[1].user_id
    request = RecommendRequest(user_id=user, k=6)
    engine.recommend(request)
    engine.recommend(request)
    old = _cache(engine)
    assert old.hits == 1
    settings = _settings(tmp_path, True)
    newer = train_bundle(store, settings.recommend)
    assert newer.version != engine.bundle.version
    engine.swap(newer)
    rec = engine.recommend(request)
    assert rec.model_version == newer.version
    assert _cache(engine) is not old and _cache(engine).hits == 0
    assert old.hits == 1


def test_a_cached_answer_is_not_served_after_a_stock_change(
    store: Store, tmp_path: Path, small_shop: SimulatedShop
) -> None:
    engine = _open(store, tmp_path, True)
    user = small_shop.users[2].user_id
    request = RecommendRequest(user_id=user, k=6)
    first = engine.recommend(request)
    engine.recommend(request)
    assert _cache(engine).hits == 1
    gone = first.items[0].item_id
    record = next(i for i in small_shop.items if i.item_id == gone)
    engine.upsert_items([record.model_copy(update={"stock": 0})])
    after = engine.recommend(request)
    assert _cache(engine).hits == 1
    assert gone not in {i.item_id for i in after.items}


def test_the_setting_turns_it_off(store: Store, tmp_path: Path) -> None:
    assert _open(store, tmp_path, False).pipeline.cache is None
    assert RecommendSettings().result_cache  # on by default


def _entry(made: float = 0.0) -> CachedRanking:
    import numpy as np

    items = np.arange(10, dtype=np.int64)
    return CachedRanking.of(Ranked(items, items[::-1].astype(float), ["popular"] * 10), {}, 5, made)


def test_lru_bound_ttl_and_invalidation(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(result_cache.time, "monotonic", lambda: clock[0])
    cache = ResultCache(capacity=2, ttl_s=10.0)
    cache.put(("a",), _entry(100.0), ["u:a"])
    cache.put(("b",), _entry(100.0), ["u:b", "s:x"])
    assert cache.get(("a",)) is not None  # a is now the most recent
    cache.put(("c",), _entry(100.0), ["u:c"])
    assert len(cache) == 2 and cache.get(("b",)) is None  # b was the least recent
    cache.invalidate(["u:c", "u:nobody"])
    assert cache.get(("c",)) is None and cache.get(("a",)) is not None
    clock[0] = 111.0
    assert cache.get(("a",)) is None and len(cache) == 0  # too old
    assert cache._by_subject == {}


def test_a_cut_list_recomputes_when_exclude_takes_too_much() -> None:
    import numpy as np

    entry = _entry()  # 10 items, 5 kept: best first
    assert not entry.complete
    assert entry.ranked.items.tolist() == [0, 1, 2, 3, 4]
    kept = entry.for_request(np.array([1], np.int64), k=1)  # MMR reads 21: too few kept
    assert kept is None
    whole = CachedRanking.of(entry.ranked, {}, 50, time.monotonic())
    found = whole.for_request(np.array([1], np.int64), k=1)
    assert found is not None and found.items.tolist() == [0, 2, 3, 4]


def test_answers_are_kept_per_k_and_diversity(
    store: Store, tmp_path: Path, small_shop: SimulatedShop
) -> None:
    """An experiment arm with another MMR strength shares the pipeline's cache (a copy
    of the pipeline): it gets its own answer, equal to the one computed afresh."""
    import copy

    from shopcast.serving.rerank import MMR

    cached, plain = _open(store, tmp_path, True), _open(store, tmp_path, False)
    strong, strong_plain = copy.copy(cached.pipeline), copy.copy(plain.pipeline)
    strong.rerank = MMR(cached.catalog, 0.9)
    strong_plain.rerank = MMR(plain.catalog, 0.9)
    assert strong.cache is cached.pipeline.cache
    for user in [u.user_id for u in small_shop.users[10:16]]:
        for k in (4, 6, 4):
            request = RecommendRequest(user_id=user, k=k)
            for mine, reference in ((cached.pipeline, plain.pipeline), (strong, strong_plain)):
                got = mine.run(request, NOW)
                assert _answer(got) == _answer(reference.run(request, NOW))
    kept = [entry for entry, _ in _cache(cached)._entries.values()]
    assert kept and all(set(e.slates) <= {(4, 0.3), (4, 0.9), (6, 0.3), (6, 0.9)} for e in kept)
    assert any(len(e.slates) == 2 for e in kept)  # both strengths on one list
