"""The replay arms: frozen batch model, + live sessions, + online learning (SYNTHETIC)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopcast.config import RecommendSettings, Settings
from shopcast.domain import Event
from shopcast.serving.engine import Engine
from shopcast.serving.pipeline import RecommendRequest
from shopcast.storage import open_store
from shopcast.training.bundle import save_bundle, train_bundle

T0 = 1_767_225_600.0


def _engine(tmp_path: Path, *, online: bool, live: bool) -> Engine:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        model_dir=tmp_path / "models",
        # "recently viewed" off: these answers read co-visitation alone (the source is
        # tested in test_recently_viewed.py)
        recommend=RecommendSettings(
            online_learning=online, live_sessions=live, recently_viewed_weight=0.0
        ),
    )
    store = open_store(settings.database_url)
    history = []
    for u in range(4):  # a, then b, co-visited; z is the most popular item
        history += [
            Event(type="view", user_id=f"p{u}", item_id="a", timestamp=T0 + u),
            Event(type="view", user_id=f"p{u}", item_id="b", timestamp=T0 + u + 0.5),
        ]
    history += [
        Event(type="purchase", user_id=f"q{u}", item_id="z", timestamp=T0) for u in range(9)
    ]
    store.events.append(history)
    save_bundle(train_bundle(store, settings.recommend), settings.model_dir)
    return Engine.open(store, settings)


def _after_new_events(engine: Engine) -> tuple[list[str], list[str]]:
    new = [
        Event(type="view", user_id="x", item_id="a", timestamp=T0 + 100),
        Event(type="view", user_id="y", item_id="c", timestamp=T0 + 101),
        Event(type="view", user_id="y", item_id="d", timestamp=T0 + 102),
    ]
    result = engine.store.events.append(new)
    engine.observe([new[i] for i in result.stored])
    x = engine.recommend(RecommendRequest(user_id="x", k=2))
    probe = Event(type="view", user_id="w", item_id="c", timestamp=T0 + 103)
    engine.observe([probe] if engine.store.events.append([probe]).accepted else [])
    w = engine.recommend(RecommendRequest(user_id="w", k=1))
    return [i.item_id for i in x.items], [i.item_id for i in w.items]


@pytest.mark.parametrize(
    ("online", "live", "x_top", "w_top"),
    [
        (False, False, "z", "z"),  # frozen: new events are invisible
        (False, True, "b", "z"),  # live session sees "a", but c-d was never learned
        (True, True, "b", "d"),  # online learning pairs c with d as they happen
    ],
)
def test_replay_arms(tmp_path: Path, online: bool, live: bool, x_top: str, w_top: str) -> None:
    x, w = _after_new_events(_engine(tmp_path, online=online, live=live))
    assert x[0] == x_top and w[0] == w_top
