"""The ``mf`` role served: incremental MF in the bundle, fold-in on ingested events,
a new catalog item recommendable before any interaction (SIMULATED shop)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from shopcast.config import Settings
from shopcast.ingest.importer import import_events, import_items, import_users
from shopcast.serving.pipeline import RecommendRequest
from shopcast.simulate import CATEGORIES, simulate_shop
from shopcast.storage import open_store
from shopcast.training.bundle import load_bundle, save_bundle, train_bundle
from shopcast.training.foldin import OnlineALS
from shopcast.training.registry import ModelRegistry


def test_mf_role_serves_new_users_and_new_items(tmp_path: Path) -> None:
    from shopcast.api import create_app

    shop = simulate_shop(n_users=240, n_items=120, sessions_per_user=5, seed=9)
    settings = Settings(
        environment="test",
        database_url=f"sqlite:///{tmp_path / 'shop.db'}",
        model_dir=tmp_path / "models",
        auth={"enabled": False},
        training={"mf": True, "mf_factors": 16},
    )
    store = open_store(settings.database_url)
    import_items(store, shop.items)
    import_users(store, shop.users)
    import_events(store, shop.events)
    bundle = train_bundle(store, settings.recommend, training=settings.training, ranker=False)
    save_bundle(bundle, settings.model_dir)
    store.close()
    path = ModelRegistry(settings.model_dir).path(bundle.version)
    loaded = load_bundle(path)
    mf = loaded.models["mf"]
    assert isinstance(mf, OnlineALS) and hasattr(mf, "content_")  # content map persisted

    cat = 2
    new = {
        "item_id": "fresh-1",
        "title": f"{CATEGORIES[cat][1]} item fresh (simulated)",
        "category": list(CATEGORIES[cat]),
        "brand": "Acme",
        "price": 19.0,
        "stock": 10,
    }
    with TestClient(create_app(settings)) as c:
        assert c.put("/v1/items/fresh-1", json=new).status_code in (200, 201)
        engine = c.app.state.engine  # type: ignore[attr-defined]
        source = engine.pipeline.sources["mf"]
        idx = engine.bundle.items.index("fresh-1")

        def proposes(user: str) -> bool:
            request = RecommendRequest(user_id=user, k=10)
            shopper = engine.pipeline.context(request, 0.0)
            return idx in source(shopper, request, 20).items.tolist()

        fans = [u for u, f in shop.favourite.items() if f == cat]
        others = [u for u, f in shop.favourite.items() if f != cat][: len(fans)]
        fan_rate = np.mean([proposes(u) for u in fans])
        other_rate = np.mean([proposes(u) for u in others])
        assert fan_rate > 0.5 > other_rate * 2, (fan_rate, other_rate)

        # a brand-new shopper: folded in from the events it sends, served at once
        liked = [i.item_id for k, i in enumerate(shop.items) if k % len(CATEGORIES) == 5][:4]
        events = [{"type": "view", "user_id": "newcomer", "item_id": i} for i in liked]
        assert c.post("/v1/events", json=events).status_code == 202
        ctx = engine.pipeline.context(RecommendRequest(user_id="newcomer"), 0.0).context
        model = engine.bundle.models["mf"]
        row = model.subjects_.of(ctx)
        assert row >= 0 and np.abs(model.P_[row]).sum() > 0  # factors from its 4 views
        rec = c.get("/v1/users/newcomer/recommendations", params={"k": 10}).json()
        assert rec["items"] and "mf" not in rec["degraded"]
