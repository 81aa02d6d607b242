"""The request hot path, made cheaper (P1 profiling), answers exactly as before.

- ``MMR`` works on integer codes of categories and title keys: same order as the
  string-based version (kept here as the reference) on random SYNTHETIC catalogs;
- ``BuyAgainSource`` computes cycles without numpy: same scores as ``np.median``;
- ``explain`` asks a co-visitation model for contributors only when a slot of its
  source is there (``bought_together`` is not asked on the home scene), and not at
  all when the source gave them with its candidates (one pass over the context);
- ``CatalogIndex.category_mask`` comes from an index of items by category level
  (built once per catalog change), not from a pass over the catalog per category.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from shopcast.config import RecommendSettings, Settings
from shopcast.domain import Event, Item
from shopcast.models._base import Context, Vocabulary
from shopcast.serving.catalog import CatalogIndex
from shopcast.serving.engine import Engine
from shopcast.serving.pipeline import RecommendRequest
from shopcast.serving.rerank import MMR, OWN_SOURCES, title_key
from shopcast.serving.rules import Ranked
from shopcast.serving.sources import BuyAgainSource, Candidates, Shopper
from shopcast.storage import open_store
from shopcast.training.bundle import save_bundle, train_bundle

T0 = 1_767_225_600.0


def _reference_mmr(catalog: CatalogIndex, lam: float, ranked: Ranked, k: int) -> np.ndarray:
    """The string-based MMR this change replaced, verbatim in substance."""
    pool = np.argsort(-ranked.scores, kind="stable")[: max(4 * k, k + 20)]
    s = ranked.scores[pool]
    rel = (s - s.min()) / (s.max() - s.min()) if s.max() > s.min() else np.ones_like(s)
    leaf_l, top_l, dup = [], [], []
    for idx in ranked.items[pool].tolist():
        path = catalog.category_of(idx)
        leaf_l.append("/".join(path))
        top_l.append(path[0] if path else "")
        item = catalog.get(idx)
        dup.append(title_key(item.title) if item is not None else None)
    leaf, top = np.asarray(leaf_l), np.asarray(top_l)
    own = np.asarray([ranked.sources[p] in OWN_SOURCES for p in pool.tolist()], dtype=bool)
    chosen: list[int] = []
    max_sim = np.zeros(pool.shape[0])
    available = np.ones(pool.shape[0], dtype=bool)
    while len(chosen) < min(k, pool.shape[0]):
        gain = (1 - lam) * rel - lam * np.where(own, 0.0, max_sim)
        gain[~available] = -np.inf
        if chosen and dup[chosen[-1]] is not None:
            twins = np.array([d == dup[chosen[-1]] for d in dup]) & available
            if (available & ~twins).any():
                gain[twins] = -np.inf
        pick = int(np.argmax(gain))
        chosen.append(pick)
        available[pick] = False
        sim = np.where(leaf == leaf[pick], 1.0, np.where(top == top[pick], 0.5, 0.0))
        sim[leaf == ""] = 0.0
        if dup[pick] is not None:
            sim[[i for i, d in enumerate(dup) if d == dup[pick]]] = 1.0
        max_sim = np.maximum(max_sim, sim)
    return pool[np.asarray(chosen, dtype=np.int64)]


@pytest.mark.parametrize("seed", range(6))
def test_mmr_matches_the_string_based_reference(seed: int) -> None:
    rng = random.Random(seed)
    n = 120
    vocab = Vocabulary(f"i{j}" for j in range(n))
    catalog = CatalogIndex(vocab)
    tops, leaves, titles = ["A", "B", "C"], ["x", "y"], ["Mug", "MUG!", "Tent", "Lamp", None]
    catalog.upsert(
        Item(
            item_id=f"i{j}",
            title=rng.choice(titles),
            category=rng.choice([[], [rng.choice(tops)], [rng.choice(tops), rng.choice(leaves)]]),
        )
        for j in range(n - 10)  # the last 10 items have no catalog record
    )
    for lam in (0.0, 0.3, 0.7, 1.0):
        for k in (1, 5, 10, 20):
            items = np.asarray(rng.sample(range(n), rng.randint(1, n)), dtype=np.int64)
            scores = np.asarray([rng.choice([0.1, 0.5, rng.random()]) for _ in items])
            sources = [
                rng.choice(["covisit", "popular", "recently_viewed", "buy_again"])
                for _ in range(items.shape[0])
            ]
            ranked = Ranked(items, scores, sources)
            got = MMR(catalog, lam)(ranked, k)
            np.testing.assert_array_equal(got, _reference_mmr(catalog, lam, ranked, k))


def test_buy_again_scores_match_numpy_median() -> None:
    rng = np.random.default_rng(0)
    now = T0 + 400 * 86_400
    purchases = {
        i: sorted((T0 + rng.uniform(0, 300 * 86_400, size=int(rng.integers(1, 9)))).tolist())
        for i in range(50)
    }
    purchases[50] = [T0, T0]  # a zero cycle is not proposed
    shopper = Shopper(
        context=Context(now=now, recent_items=np.empty(0, np.int64)), purchases=purchases
    )
    got = BuyAgainSource()(shopper, RecommendRequest(), 100)
    expected: dict[int, float] = {}
    for idx, times in purchases.items():
        if len(times) >= 2 and (cycle := float(np.median(np.diff(times)))) > 0:
            expected[idx] = float(np.exp(-((((now - times[-1]) / cycle - 1.0) / 0.5) ** 2)))
    assert sorted(got.items.tolist()) == sorted(expected)
    for idx, score in zip(got.items.tolist(), got.scores.tolist(), strict=True):
        assert score == pytest.approx(expected[idx], rel=1e-12)
    assert list(got.scores) == sorted(got.scores, reverse=True)


def test_explain_asks_only_the_models_of_the_slots_shown(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        model_dir=tmp_path / "models",
        # the test swaps a source under the pipeline: every request must compute
        recommend=RecommendSettings(log_impressions=False, result_cache=False),
    )
    store = open_store(settings.database_url)
    history = []
    for u in range(4):  # viewed a then b; bought a with c
        history += [
            Event(type="view", user_id=f"p{u}", item_id="a", timestamp=T0 + u),
            Event(type="view", user_id=f"p{u}", item_id="b", timestamp=T0 + u + 0.5),
            Event(type="purchase", user_id=f"p{u}", item_id="a", timestamp=T0 + u + 0.6),
            Event(type="purchase", user_id=f"p{u}", item_id="c", timestamp=T0 + u + 0.7),
        ]
    store.events.append(history)
    save_bundle(train_bundle(store, settings.recommend), settings.model_dir)
    engine = Engine.open(store, settings)
    together = engine.bundle.bought_together
    assert together is not None
    calls: list[int] = []
    original = together.contributors

    def counting(context: Context, candidates: np.ndarray) -> np.ndarray:
        calls.append(int(candidates.shape[0]))
        return original(context, candidates)

    together.contributors = counting  # type: ignore[method-assign]
    viewed = Event(type="view", user_id="x", item_id="a", timestamp=T0 + 100)
    engine.observe([viewed] if store.events.append([viewed]).accepted else [])
    home = {i.item_id: i for i in engine.recommend(RecommendRequest(user_id="x", k=3)).items}
    assert home["b"].source == "covisit"
    assert home["b"].reason == "because you viewed a"
    assert calls == []  # no bought_together slot on the home scene
    cart = engine.recommend(RecommendRequest(user_id="x", k=3, scene="cart", items=("a",)))
    reasons = {i.item_id: (i.source, i.reason) for i in cart.items}
    assert reasons["c"] == ("bought_together", "goes with a in your cart")
    assert calls == []  # the bought_together source gave its contributors
    # without them (a source that does not give any), explain asks the model once,
    # for the bought_together slots only, and the reasons are the same
    source = engine.pipeline.sources["bought_together"]
    plain = source.__call__

    def without_because(*args: object) -> Candidates:
        found = plain(*args)  # type: ignore[arg-type]
        return Candidates(found.items, found.scores)

    engine.pipeline.sources["bought_together"] = without_because  # type: ignore[assignment]
    again = engine.recommend(RecommendRequest(user_id="x", k=3, scene="cart", items=("a",)))
    assert {i.item_id: (i.source, i.reason) for i in again.items} == reasons
    shown = sum(i.source == "bought_together" for i in again.items)
    assert calls == [shown]


def _reference_mask(catalog: CatalogIndex, category: str) -> np.ndarray:
    """The category mask as a pass over the whole catalog (the previous way)."""
    key = category.strip().lower()
    mask = np.zeros(len(catalog.vocab), dtype=bool)
    for idx in range(len(catalog.vocab)):
        item = catalog.get(idx)
        if item is not None and any(level.lower() == key for level in item.category):
            mask[idx] = True
    return mask


def test_category_masks_follow_upserts_deletes_and_vocabulary_growth() -> None:
    rng = random.Random(0)
    vocab = Vocabulary()
    catalog = CatalogIndex(vocab)
    paths = [["Home", "Kitchen"], ["home", "Garden"], ["Outdoor", "Camping"], ["Kitchen"], []]
    catalog.upsert(Item(item_id=f"i{j}", category=rng.choice(paths)) for j in range(200))
    queries = ["home", " Kitchen ", "GARDEN", "camping", "outdoor", "nothing"]

    def check() -> None:
        for q in queries:
            np.testing.assert_array_equal(catalog.category_mask(q), _reference_mask(catalog, q))

    check()
    vocab.indices(["new-1", "new-2"], add=True)  # items seen in events, not in the catalog
    check()
    catalog.upsert([Item(item_id="new-1", category=["Home", "Kitchen"])])
    catalog.upsert([Item(item_id="i0", category=["Outdoor"])])  # an item changes category
    check()
    catalog.delete("i1")
    check()
    assert catalog.category_mask("kitchen")[vocab.index("new-1")]
    assert not catalog.category_mask("home")[vocab.index("new-2")]


def test_reasons_from_the_sources_contributors_match_the_models(tmp_path: Path) -> None:
    """On a SYNTHETIC log: every answer (items, sources, reasons) is the same whether
    explain takes the co-visitation contributors from the sources or asks the models."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        model_dir=tmp_path / "models",
        recommend=RecommendSettings(log_impressions=False),
    )
    store = open_store(settings.database_url)
    rng = random.Random(3)
    store.events.append(
        [
            Event(
                type=rng.choice(["view", "view", "add_to_cart", "purchase"]),
                user_id=f"s{rng.randrange(30)}",
                item_id=f"i{rng.randrange(40)}",
                timestamp=T0 + n,
            )
            for n in range(1500)
        ]
    )
    save_bundle(train_bundle(store, settings.recommend), settings.model_dir)
    engine = Engine.open(store, settings)
    requests = [
        RecommendRequest(user_id=f"s{u}", k=10, scene=scene, items=items)
        for u in range(30)
        for scene, items in (("home", ()), ("product_page", ("i3",)), ("cart", ("i5", "i7")))
    ]

    def answers() -> list[list[tuple[str, str, str]]]:
        return [
            [(i.item_id, i.source, i.reason) for i in engine.recommend(r).items] for r in requests
        ]

    with_because = answers()
    for name in ("covisit", "bought_together"):
        plain = engine.pipeline.sources[name].__call__

        def stripped(*args: object, plain: object = plain) -> Candidates:
            found = plain(*args)  # type: ignore[operator]
            return Candidates(found.items, found.scores)

        engine.pipeline.sources[name] = stripped  # type: ignore[assignment]
    assert answers() == with_because
    assert any("because you" in reason for answer in with_because for _, _, reason in answer)
    engine.close()
    store.close()


def test_mmr_codes_follow_catalog_changes() -> None:
    """One MMR kept across catalog upserts (its per-item codes are cached) orders as
    the reference does after every change (SYNTHETIC catalog)."""
    rng = random.Random(7)
    vocab = Vocabulary(f"i{j}" for j in range(60))
    catalog = CatalogIndex(vocab)
    paths = [[], ["A"], ["A", "x"], ["B", "x"], ["B", "y"]]
    titles = ["Mug", "mug", "Tent", None]

    def upsert(j: int) -> None:
        catalog.upsert(
            [Item(item_id=f"i{j}", title=rng.choice(titles), category=rng.choice(paths))]
        )

    for j in range(50):
        upsert(j)
    mmr = MMR(catalog, 0.5)
    for _ in range(30):
        items = np.asarray(rng.sample(range(60), 40), dtype=np.int64)
        ranked = Ranked(items, np.asarray([rng.random() for _ in items]), ["covisit"] * 40)
        np.testing.assert_array_equal(mmr(ranked, 10), _reference_mmr(catalog, 0.5, ranked, 10))
        for j in rng.sample(range(60), 5):  # change some records, add new ones
            upsert(j)


def test_covisit_scores_with_repeated_session_items_are_bit_identical(tmp_path: Path) -> None:
    """Rows of items repeated in the session are read once; the scores and contributors
    equal, to the last bit, the row-per-position computation (SYNTHETIC log)."""
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    rng = random.Random(5)
    store.events.append(
        [
            Event(
                type="view",
                user_id=f"v{rng.randrange(20)}",
                item_id=f"i{rng.randrange(30)}",
                timestamp=T0 + n,
            )
            for n in range(800)
        ]
    )
    model = train_bundle(store, RecommendSettings()).covisit

    def reference(context: Context, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        recent = np.asarray(context.recent_items, dtype=np.int64)[::-1]
        unique, inverse = np.unique(candidates, return_inverse=True)
        parts = np.zeros((recent.shape[0], unique.shape[0]))
        norm = 0.0
        for k, r in enumerate(recent.tolist()):
            cols, vals = model._row(r)
            if not cols.size:
                continue
            weight = model.session_decay**k
            norm += weight
            pos = np.minimum(np.searchsorted(unique, cols), unique.shape[0] - 1)
            hit = unique[pos] == cols
            parts[k, pos[hit]] = weight * vals[hit] / vals.max()
        total = parts.sum(axis=0) / norm if norm else parts.sum(axis=0)
        best = np.where(parts.max(axis=0) > 0, recent[parts.argmax(axis=0)], -1)
        return total[inverse.reshape(-1)], best[inverse.reshape(-1)]

    for _ in range(50):
        recent = np.asarray([rng.randrange(33) for _ in range(rng.randint(1, 20))], np.int64)
        candidates = np.asarray(rng.sample(range(30), 25), np.int64)
        context = Context(now=T0, recent_items=recent)
        scores, because = model.score_and_contributors(context, candidates)
        want_scores, want_because = reference(context, candidates)
        assert scores.tobytes() == want_scores.tobytes()
        np.testing.assert_array_equal(because, want_because)
        assert model.score(context, candidates).tobytes() == want_scores.tobytes()
    store.close()
