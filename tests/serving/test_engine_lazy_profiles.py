"""The engine with lazy profiles (``profiles.resident_users``): the same answers and
profiles as with every profile in memory, at most N users held (SYNTHETIC shop)."""

from __future__ import annotations

from pathlib import Path

from tests.features.test_profiles import _close

from shopcast.config import Settings
from shopcast.domain import Event
from shopcast.features.profiles import profile_of
from shopcast.ingest.importer import import_events, import_items, import_users
from shopcast.serving.engine import Engine
from shopcast.serving.pipeline import RecommendRequest
from shopcast.simulate import simulate_shop
from shopcast.storage import open_store
from shopcast.training.bundle import save_bundle, train_bundle

SHOP = simulate_shop(n_users=30, n_items=48, seed=3)  # SYNTHETIC
DECLINER = SHOP.users[5].model_copy(update={"consent": {"personalization": False}})


def _engine(tmp_path: Path, resident: int | None) -> Engine:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        model_dir=tmp_path / "models",
        profiles={"resident_users": resident, "reference_time": "log"},
    )
    store = open_store(settings.database_url)
    import_items(store, SHOP.items)
    import_users(store, [*SHOP.users[:5], DECLINER, *SHOP.users[6:]])
    import_events(store, SHOP.events)
    save_bundle(train_bundle(store, settings.recommend, ranker=False), settings.model_dir)
    return Engine.open(store, settings)


def test_lazy_engine_answers_like_the_eager_one(tmp_path: Path) -> None:
    eager = _engine(tmp_path / "eager", None)
    lazy = _engine(tmp_path / "lazy", 3)
    users = [u.user_id for u in SHOP.users[:10]]
    for uid in users:
        request = RecommendRequest(user_id=uid, k=5)
        got = [i.item_id for i in lazy.recommend(request).items]
        assert got == [i.item_id for i in eager.recommend(request).items], uid
        now = eager.profiles.now()  # RFM scores aside (fitted on other samples):
        mine = profile_of(uid, lazy.profiles.users.get(uid), lazy.profiles.states.get(uid),
                          now, lazy.profiles.params)  # fmt: skip
        theirs = profile_of(uid, eager.profiles.users.get(uid), eager.profiles.states.get(uid),
                            now, eager.profiles.params)  # fmt: skip
        _close(mine.model_dump(), theirs.model_dump(), uid)
        assert len(lazy.profiles.states) <= 3 and len(lazy.profiles.users) <= 3
    assert lazy.profiles.declined() == eager.profiles.declined() == {DECLINER.user_id}
    # a new event of a user no longer resident reaches the profile (read from the log)
    uid = users[0]
    event = Event(type="purchase", user_id=uid, item_id=SHOP.items[7].item_id,
                  timestamp=SHOP.events["timestamp"].max() + 60)  # fmt: skip
    for engine in (eager, lazy):
        stored = engine.store.events.append([event]).stored
        engine.observe([event] if stored else [])
    assert lazy.profiles.states[uid].events == eager.profiles.states[uid].events
    assert lazy.profiles.states[uid].purchases == eager.profiles.states[uid].purchases
