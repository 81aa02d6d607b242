"""Retraining behind the quality gate, drift and schedule triggers, rollback on an
online CTR drop (SIMULATED shop, synthetic impressions)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from shopcast.config import Settings
from shopcast.domain import Event, EventType
from shopcast.ingest.importer import import_events, import_items, import_users
from shopcast.simulate import SimulatedShop, simulate_shop
from shopcast.storage import Store, open_store
from shopcast.training.bundle import ModelBundle, save_bundle, train_bundle
from shopcast.training.continuous import ContinuousLearner, js_divergence
from shopcast.training.registry import ModelRegistry


@pytest.fixture(scope="module")
def shop() -> SimulatedShop:
    return simulate_shop(n_users=200, n_items=120, sessions_per_user=6, seed=5)


def _settings(tmp_path: Path, **continuous: object) -> Settings:
    return Settings(
        environment="test",
        database_url=f"sqlite:///{tmp_path / 'shop.db'}",
        model_dir=tmp_path / "models",
        auth={"enabled": False},
        feedback={"cache_s": 0},
        continuous={"min_new_events": 50, "holdout_s": 10 * 86400, "holdout_events": 300,
                    **continuous},
    )  # fmt: skip


def _store(settings: Settings, shop: SimulatedShop, share: float = 0.8) -> Store:
    """The shop's first ``share`` of events, a model trained on them (CURRENT), then the rest."""
    store = open_store(settings.database_url)
    import_items(store, shop.items)
    import_users(store, shop.users)
    events = shop.events.sort("timestamp")
    cut = int(events.height * share)
    import_events(store, events.head(cut))
    save_bundle(train_bundle(store, settings.recommend, ranker=False), settings.model_dir)
    import_events(store, events.tail(events.height - cut))
    return store


def _shuffled_trainer(
    store: Store, settings: Settings, _incumbent: ModelBundle | None
) -> ModelBundle:
    """A broken training run: item ids scrambled in the data it learns from."""
    frame = store.events.frame()
    ids = frame["item_id"].drop_nulls().unique().sort().to_list()
    perm = dict(zip(ids, np.random.default_rng(0).permutation(ids).tolist(), strict=True))
    scrambled = frame.with_columns(pl.col("item_id").replace(perm))

    class View:
        def __init__(self) -> None:
            self.events, self.items, self.users, self.url = self, store.items, store.users, "x"

        def frame(self, *, after_seq: int = 0) -> pl.DataFrame:
            return scrambled.filter(pl.col("seq") > after_seq)

    return train_bundle(View(), settings.recommend, ranker=False)  # type: ignore[arg-type]


def test_warm_retrain_passes_the_gate_and_is_promoted(tmp_path: Path, shop: SimulatedShop) -> None:
    settings = _settings(tmp_path)
    store = _store(settings, shop)
    registry = ModelRegistry(settings.model_dir)
    before = registry.current()
    learner = ContinuousLearner(store, settings)
    out = learner.retrain("test")
    assert out.action == "promoted", out
    assert out.details["warm_start"] is True
    assert out.details["candidate_hr@10"] >= out.details["incumbent_hr@10"] > 0
    assert out.details["holdout_events"] > 50
    after = registry.current()
    assert after != before and after == out.version
    manifest = json.loads((settings.model_dir / str(after) / "manifest.json").read_text())
    assert manifest["trained_until"] == store.events.count()  # current up to the last event
    assert learner.outcomes()[-1]["action"] == "promoted"
    store.close()


def test_a_worse_candidate_is_rejected(tmp_path: Path, shop: SimulatedShop) -> None:
    settings = _settings(tmp_path)
    store = _store(settings, shop)
    registry = ModelRegistry(settings.model_dir)
    before = registry.current()
    out = ContinuousLearner(store, settings, trainer=_shuffled_trainer).retrain("test")
    assert out.action == "rejected", out
    assert out.details["candidate_hr@10"] < out.details["incumbent_hr@10"]
    assert registry.current() == before
    store.close()


def test_full_retrain_is_gated_too(tmp_path: Path, shop: SimulatedShop) -> None:
    settings = _settings(tmp_path, warm_start=False, tolerance=0.2)
    store = _store(settings, shop)
    out = ContinuousLearner(store, settings).retrain("test")
    assert out.action == "promoted", out
    assert out.details["warm_start"] is False
    store.close()


def test_schedule_and_drift_triggers(tmp_path: Path, shop: SimulatedShop) -> None:
    settings = _settings(tmp_path, retrain_interval_s=3600, drift_threshold=0.25)
    store = _store(settings, shop)
    now = time.time()
    learner = ContinuousLearner(store, settings, clock=lambda: now)
    drift = learner.drift()
    assert drift["new_events"] > 50 and drift["js_divergence"] < 0.25
    assert learner.due() is None  # young model, no drift
    assert ContinuousLearner(store, settings, clock=lambda: now + 7200).due() == "schedule"
    # a flash sale: everybody views the same three items
    hot = [shop.items[k].item_id for k in (1, 2, 3)]
    store.events.append(
        [
            Event(type=EventType.VIEW, user_id=f"sim-user-{u:05d}", item_id=hot[u % 3],
                  timestamp=now + u)
            for u in range(2000)
        ]
    )  # fmt: skip
    assert learner.drift()["js_divergence"] > 0.25
    assert learner.due() == "drift"
    store.close()


def test_js_divergence() -> None:
    a = pl.Series("item_id", ["a", "b"] * 50)
    assert js_divergence(a, a) == pytest.approx(0.0)
    assert js_divergence(a, pl.Series("item_id", ["c", "d"] * 50)) == pytest.approx(1.0)


def _traffic(store: Store, version: str, ctr: float, start: float, n: int, seed: int) -> None:
    """Synthetic impressions of ``version`` and clicks on a share ``ctr`` of them."""
    rng = np.random.default_rng(seed)
    events = []
    for k in range(n):
        rec, user, item, ts = (
            f"{version}-{seed}-{k}",
            f"sim-user-{k % 150:05d}",
            f"sim-{k % 90:05d}",
            start + k * 0.01,
        )
        ctx = {"position": 1, "scene": "home", "source": "covisit", "model_version": version}
        events.append(Event(type=EventType.IMPRESSION, user_id=user, item_id=item,
                            timestamp=ts, recommendation_id=rec, context=ctx))  # fmt: skip
        if rng.random() < ctr:
            events.append(Event(type=EventType.CLICK, user_id=user, item_id=item,
                                timestamp=ts + 1, recommendation_id=rec))  # fmt: skip
    store.events.append(events)


def _promoted_pair(settings: Settings, store: Store) -> tuple[str, str, float]:
    registry = ModelRegistry(settings.model_dir)
    old = str(registry.current())
    new = train_bundle(store, settings.recommend, ranker=False)
    save_bundle(new, settings.model_dir)
    at = float(registry.history()[-1]["at"])
    return old, new.version, at


def test_rollback_when_ctr_drops_after_a_promotion(tmp_path: Path, shop: SimulatedShop) -> None:
    settings = _settings(tmp_path, guard_min_impressions=500, guard_s=3600, max_ctr_drop=0.1)
    store = _store(settings, shop)
    old, new, at = _promoted_pair(settings, store)
    _traffic(store, old, 0.20, at - 1800, 1500, seed=1)
    _traffic(store, new, 0.08, at + 1, 400, seed=2)
    learner = ContinuousLearner(store, settings, clock=lambda: at + 60)
    assert learner.guard() is None  # too few impressions yet: wait
    _traffic(store, new, 0.08, at + 100, 1100, seed=3)
    out = learner.guard()
    assert out is not None and out.action == "rolled_back", out
    assert out.details["drop"] > 0.5 and out.details["p_value"] < 0.001
    assert ModelRegistry(settings.model_dir).current() == old
    assert learner.guard() is None  # judged once
    store.close()


def test_no_rollback_without_a_drop(tmp_path: Path, shop: SimulatedShop) -> None:
    settings = _settings(tmp_path, guard_min_impressions=500, guard_s=3600, max_ctr_drop=0.1)
    store = _store(settings, shop)
    old, new, at = _promoted_pair(settings, store)
    _traffic(store, old, 0.15, at - 1800, 1500, seed=4)
    _traffic(store, new, 0.16, at + 1, 1500, seed=5)
    assert ContinuousLearner(store, settings, clock=lambda: at + 60).guard() is None
    out = ContinuousLearner(store, settings, clock=lambda: at + 4000).guard()
    assert out is not None and out.action == "kept"
    assert ModelRegistry(settings.model_dir).current() == new
    store.close()


def test_run_once_is_exclusive(tmp_path: Path, shop: SimulatedShop) -> None:
    settings = _settings(tmp_path, retrain_interval_s=1)
    store = _store(settings, shop)
    learner = ContinuousLearner(store, settings, clock=lambda: time.time() + 10)
    with learner._exclusive() as mine:
        assert mine
        assert ContinuousLearner(store, settings).run_once() == []  # another holds the lock
    outcomes = learner.run_once()
    assert [o.action for o in outcomes] == ["promoted"]
    store.close()


def test_start_continuous_only_when_enabled(tmp_path: Path, shop: SimulatedShop) -> None:
    from shopcast.training.continuous import start_continuous

    settings = _settings(tmp_path)
    store = open_store(settings.database_url)
    assert start_continuous(store, settings) is None
    enabled = settings.model_copy(
        update={"continuous": settings.continuous.model_copy(update={"enabled": True})}
    )
    learner = start_continuous(store, enabled)
    assert learner is not None and learner._thread is not None and learner._thread.is_alive()
    learner.stop()
    assert not learner._thread.is_alive()
    store.close()
