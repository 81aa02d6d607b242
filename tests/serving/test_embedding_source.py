"""The hybrid model's towers served through an inner-product index (SYNTHETIC data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shopcast.config import Settings, TrainingSettings
from shopcast.domain import Event, Item
from shopcast.serving.ann import VectorIndex
from shopcast.serving.engine import Engine
from shopcast.serving.pipeline import RecommendRequest
from shopcast.serving.sources import Candidates
from shopcast.storage import open_store
from shopcast.training.bundle import save_bundle, train_bundle

T0 = 1_767_225_600.0


def test_exact_and_faiss_indexes_agree() -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 8))
    query = rng.normal(size=8)
    exact = VectorIndex(vectors, backend="exact")
    approx = VectorIndex(vectors, backend="faiss", ef_search=256)
    assert (exact.backend, approx.backend) == ("exact", "faiss-hnsw")
    e_items, e_scores = exact.search(query, 10)
    a_items, _ = approx.search(query, 10)
    assert e_items.tolist() == np.argsort(-(vectors @ query))[:10].tolist()
    assert np.all(np.diff(e_scores) <= 0)
    assert len(set(a_items.tolist()) & set(e_items.tolist())) >= 9  # HNSW recall@10


def test_small_catalogs_stay_exact_without_asking() -> None:
    index = VectorIndex(np.eye(3), ann_min_items=10)
    assert index.backend == "exact"
    assert index.search(np.array([0.0, 1.0, 0.0]), 5)[0].tolist()[0] == 1


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        model_dir=tmp_path / "models",
        training=TrainingSettings(embedding=True, embedding_dim=8, embedding_epochs=15),
    )
    store = open_store(settings.database_url)
    groups = {"a": ["a0", "a1", "a2", "a3"], "b": ["b0", "b1", "b2", "b3"]}
    store.items.upsert(
        [
            Item(item_id=i, title=f"{g} thing {i}", category=[g])
            for g, ids in groups.items()
            for i in ids
        ]
    )
    rng = np.random.default_rng(1)
    events = []
    for u in range(80):  # half the shoppers buy only a-items, half only b-items
        pool = groups["a" if u % 2 else "b"]
        for n, item in enumerate(rng.choice(pool, 3, replace=False)):
            events.append(
                Event(
                    type="purchase", user_id=f"u{u}", item_id=str(item), timestamp=T0 + 10 * u + n
                )
            )
    store.events.append(events)
    bundle = train_bundle(store, settings.recommend, training=settings.training)
    assert "embedding" in bundle.models
    save_bundle(bundle, settings.model_dir)
    return Engine.open(store, settings)


def test_embedding_source_follows_the_shoppers_taste(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    for role in ("covisit", "bought_together", "category_popular", "popular"):
        monkeypatch.setitem(engine.pipeline.sources, role, lambda *_: Candidates.empty())
    event = Event(type="purchase", user_id="new", item_id="a0", timestamp=T0 + 9e5)
    engine.store.events.append([event])
    engine.observe([event])
    rec = engine.recommend(RecommendRequest(user_id="new", k=3))
    assert rec.items and all(i.source == "embedding" for i in rec.items)
    assert rec.items[0].item_id.startswith("a"), [i.item_id for i in rec.items]
    assert rec.items[0].reason == "matches your taste"
    shopper = engine.pipeline.context(RecommendRequest(user_id="new"), T0 + 9e5)
    found = engine.pipeline.sources["embedding"](shopper, RecommendRequest(), 8)
    ids = [engine.bundle.items.id(int(i)) for i in found.items]
    score = dict(zip(ids, found.scores.tolist(), strict=True))
    a_side = np.mean([score[i] for i in ("a1", "a2", "a3")])
    b_side = np.mean([score[i] for i in ("b0", "b1", "b2", "b3")])
    assert a_side > b_side
