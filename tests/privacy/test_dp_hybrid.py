"""DP-SGD training of the hybrid two-tower model (shopcast.privacy.dp_hybrid).

All data here is SYNTHETIC (the taste shops of tests/models/test_hybrid.py: women buy and
like books, men games)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("opacus")

import torch
from tests.models.test_hybrid import DAY, N_ITEMS, T0, side, taste_purchases, taste_ratings

from shopcast.errors import ConfigError
from shopcast.models import Context
from shopcast.models.hybrid import HybridRanker, HybridRating
from shopcast.privacy import _dp_hybrid_net as dn
from shopcast.privacy import dp_hybrid
from shopcast.privacy.dp import DPConfig, make_private

ALL = np.arange(N_ITEMS)
TINY: dict[str, Any] = {
    "hidden": 16,
    "dim": 8,
    "batch_size": 32,
    "lr": 1e-2,
    "dropout": 0.0,
    "seed": 0,
    "threads": 1,
}
RANK = TINY | {"negatives": 6}


def _ctx(user: str) -> Context:
    return Context(now=T0 + 9 * DAY, user_id=user)


def rank_examples(n_users: int = 24, slots: int = 3) -> tuple[Any, Any]:
    """A ranker prepared as ``fit`` would (no training) and its per-user examples."""
    import shopcast.models.hybrid as hy

    data, genders = taste_purchases(n_users)
    model = HybridRanker(**RANK, id_dropout=0.0, dp=DPConfig(epochs=1))
    ev = model._setup(data, side(genders))
    phase = hy._RankPhase.build(model, ev, math.inf)
    return model, dp_hybrid._RankExamples(model, phase, slots)


def rating_examples(n_users: int = 24, slots: int = 3) -> tuple[Any, Any]:
    data, genders, _ = taste_ratings(n_users)
    model = HybridRating(**TINY, id_dropout=0.0, dp=DPConfig(epochs=1))
    user, item, level, value = model._setup(data, side(genders), item_behaviour=False)
    model.mu_ = 3.0
    phase = model._phase(user, item, level, value, item_behaviour=False)
    return model, dp_hybrid._RatingExamples(model, phase, slots)


def fresh_net(model: Any, seed: int = 0) -> dn.DPHybridNet:
    import shopcast.models.hybrid as hy

    torch.manual_seed(seed)
    net = dn.DPHybridNet(model._build_net(hy._net()))
    with torch.no_grad():  # non-zero biases and id rows, so every gradient is non-trivial
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def per_example_grads(net: dn.DPHybridNet, examples: Any, batch: Any) -> list[dict[str, Any]]:
    """Each example's gradient, by plain autograd on that example alone."""
    out = []
    b = batch[0][0].shape[0]
    for i in range(b):
        one = tuple(
            tuple(t[i : i + 1] for t in part) if isinstance(part, tuple) else part[i : i + 1]
            for part in batch
        )
        net.zero_grad()
        examples.loss(net, one).sum().backward()
        out.append({k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None})
    return out


@pytest.mark.parametrize("head", ["ranker", "rating"])
def test_opacus_per_sample_gradients_match_per_example_autograd(head: str) -> None:
    """The item tower sees each slot's positive and negatives in one call, the user tower
    several slots per example; Opacus' grad samples must still be each user's own
    gradient (also for items drawn by several users in the batch)."""
    from opacus import GradSampleModule

    model, examples = rank_examples() if head == "ranker" else rating_examples()
    idx = np.arange(6)
    batch = examples.batch(idx, np.random.default_rng(1))
    net = fresh_net(model)
    expected = per_example_grads(net, examples, batch)
    gsm = GradSampleModule(fresh_net(model))
    examples.loss(gsm, batch).mean().backward()
    checked = 0
    for name, p in gsm.named_parameters():
        key = name.removeprefix("_module.")
        got = p.grad_sample
        assert got.shape == (6, *p.shape), key
        for i in range(6):
            want = expected[i].get(key, torch.zeros_like(p))
            torch.testing.assert_close(got[i], want, atol=1e-6, rtol=1e-4)
        checked += 1
    assert checked == len(list(gsm.parameters()))
    # Candidates are shared across users (a small catalog): the check covered that case.
    if head == "ranker":
        items = batch[1][2].reshape(6, -1)
        assert len(set(items[0].tolist()) & set(items[1].tolist())) > 0


def one_step(
    model: Any, examples: Any, batch: Any, noise: float, seed: int, clip: float
) -> torch.Tensor:
    """The parameter update of one DP-SGD step (SGD, lr 1, every user sampled)."""
    net = fresh_net(model)
    before = torch.cat([p.detach().reshape(-1).clone() for p in net.parameters()])
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    n = batch[0][0].shape[0]
    cfg = DPConfig(max_grad_norm=clip, noise_multiplier=noise, sample_rate=1.0, epochs=1)
    module, opt, _, _, _ = make_private(net, opt, n, n, cfg, seed=seed)
    examples.loss(module, batch).mean().backward()
    opt.step()
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]) - before


def test_noise_free_step_is_the_mean_of_clipped_per_user_gradients_and_noise_is_added() -> None:
    model, examples = rank_examples()
    n, clip = 8, 0.05
    batch = examples.batch(np.arange(n), np.random.default_rng(2))
    grads = per_example_grads(fresh_net(model), examples, batch)
    names = [k for k, _ in fresh_net(model).named_parameters()]
    flat = torch.stack([torch.cat([g[k].reshape(-1) for k in names]) for g in grads])  # (n, params)
    norms = flat.norm(dim=1)
    assert (norms > clip).all()  # every user is clipped at this bound
    expected = -(flat * (clip / norms).clamp(max=1.0)[:, None]).sum(0) / n
    quiet = one_step(model, examples, batch, noise=0.0, seed=0, clip=clip)
    torch.testing.assert_close(quiet, expected, atol=1e-6, rtol=1e-4)
    assert float(quiet.norm()) <= clip * (1 + 1e-4)
    # With noise sigma the update moves by N(0, (sigma * C / n)^2) per coordinate, and
    # the draw depends on the seed.
    sigma = 2.0
    a = one_step(model, examples, batch, noise=sigma, seed=0, clip=clip)
    b = one_step(model, examples, batch, noise=sigma, seed=1, clip=clip)
    assert not torch.allclose(a, b)
    spread = float((a - quiet).std())
    assert spread == pytest.approx(sigma * clip / n, rel=0.1)


def test_ranker_trains_under_dp_within_the_target_epsilon() -> None:
    data, genders = taste_purchases(60)
    model = HybridRanker(**RANK, dp=DPConfig(epsilon=4.0, epochs=3)).fit(data, side=side(genders))
    report = model.dp_report_
    assert report is not None and report.epsilon is not None
    assert report.n_users == 60 and report.delta == pytest.approx(1 / 60)
    assert report.epsilon <= 4.0 * 1.02 and report.epsilon > 0.5 * 4.0
    eps = report.epsilon_by_epoch
    assert len(eps) == 3 and eps[0] < eps[1] < eps[2]
    assert report.noise_multiplier > 0 and report.max_grad_norm == 1.0
    assert report.steps > 0 and len(model.history_) == 3
    assert report.sample_rate == 0.5  # Opacus' rate: 1 / (60 users in batches of 32)
    scores = model.score(_ctx("p0"), ALL)
    assert np.isfinite(scores).all() and scores.sum() == pytest.approx(1.0)


def test_without_noise_the_same_per_user_training_learns_the_tastes() -> None:
    """ε = ∞ runs the DP code path without clipping or noise: it must learn (else the DP
    figures would measure a broken trainer, not the cost of privacy)."""
    data, genders = taste_purchases(60)
    model = HybridRanker(**RANK, dp=DPConfig(epsilon=math.inf, epochs=15)).fit(
        data, side=side(genders)
    )
    assert model.dp_report_ is not None and model.dp_report_.epsilon is None
    books, games = ALL[: N_ITEMS // 2], ALL[N_ITEMS // 2 :]
    woman, man = model.score(_ctx("p0"), ALL), model.score(_ctx("p1"), ALL)
    assert woman[books].sum() > 0.8 and man[games].sum() > 0.8


def test_dp_rating_head_scores_cold_start_users_from_their_features(tmp_path: Path) -> None:
    data, genders, _ = taste_ratings(80)
    genders |= {"newF": "F", "newM": "M"}  # known only by their features
    books, games = ALL[: N_ITEMS // 2], ALL[N_ITEMS // 2 :]
    learned = HybridRating(**TINY, dp=DPConfig(epsilon=math.inf, epochs=25, per_user=4))
    learned.fit(data, side=side(genders))
    assert learned.item_hist_.col.size == 0  # no other users' ratings in the item tower
    woman = learned.score(Context(now=T0, user_id="newF"), ALL)
    man = learned.score(Context(now=T0, user_id="newM"), ALL)
    assert woman[books].mean() > woman[games].mean() + 0.5
    assert man[games].mean() > man[books].mean() + 0.5
    private = HybridRating(**TINY, dp=DPConfig(epsilon=8.0, epochs=2, noise_multiplier=1.0))
    private.fit(data, side=side(genders))
    cold = private.score(Context(now=T0, user_id="newF"), ALL)
    assert np.isfinite(cold).all() and not np.allclose(cold, cold[0])
    private.save(tmp_path / "m")
    loaded = HybridRating.load(tmp_path / "m", data.items)
    assert loaded.dp == private.dp and loaded.dp_report_ == private.dp_report_
    np.testing.assert_allclose(loaded.score(Context(now=T0, user_id="newF"), ALL), cold)


def test_forget_and_save_load_of_a_dp_ranker(tmp_path: Path) -> None:
    data, genders = taste_purchases(40)
    cfg = DPConfig(epsilon=8.0, epochs=2, noise_multiplier=1.0, delta=1e-3)
    model = HybridRanker(**RANK, dp=cfg).fit(data, side=side(genders))
    model.save(tmp_path / "m")
    loaded = HybridRanker.load(tmp_path / "m", data.items)
    assert loaded.dp == cfg and loaded.dp_report_ == model.dp_report_
    assert loaded.dp_report_ is not None and loaded.dp_report_.delta == 1e-3
    np.testing.assert_allclose(loaded.score(_ctx("p0"), ALL), model.score(_ctx("p0"), ALL))
    before = model.score(_ctx("p0"), ALL)
    assert model.forget(["u:p0"]) == 1
    after = model.score(_ctx("p0"), ALL)
    assert not np.allclose(after, before)
    np.testing.assert_allclose(after, model.score(_ctx("never-seen"), ALL))


@pytest.mark.parametrize(
    ("dp", "field"),
    [
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": -1.0}, "epsilon"),
        ({"delta": 1.0}, "delta"),
        ({"delta": 0.0}, "delta"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"per_user": 0}, "per_user"),
        ({"epsilon": 1.0, "epslion": 2.0}, "epslion"),
    ],
)
def test_bad_dp_settings_name_the_field(dp: dict[str, Any], field: str) -> None:
    for cls in (HybridRanker, HybridRating):
        with pytest.raises(ConfigError, match=field):
            cls(**TINY, dp=dp)


def test_dp_refuses_an_ensemble() -> None:
    data, genders = taste_purchases(10)
    with pytest.raises(ConfigError, match="ensemble"):
        HybridRanker(**RANK, ensemble=2, dp=DPConfig(epochs=1)).fit(data, side=side(genders))


def test_shopcast_train_with_embedding_dp_records_the_spent_budget(tmp_path: Path) -> None:
    """``[training] embedding_dp_epsilon`` trains the embedding role with DP-SGD; the
    bundle manifest and the model's meta.json hold ε, δ, σ and the clipping norm."""
    import json

    from shopcast.config import Settings, TrainingSettings
    from shopcast.domain import Event, Item
    from shopcast.storage import open_store
    from shopcast.training.bundle import load_bundle, save_bundle, train_bundle

    training = TrainingSettings(
        embedding=True,
        embedding_dim=8,
        embedding_epochs=2,
        embedding_dp_epsilon=8.0,
        embedding_dp_max_grad_norm=0.5,
    )
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        model_dir=tmp_path / "models",
        training=training,
    )
    store = open_store(settings.database_url)
    store.items.upsert([Item(item_id=f"i{k}", title=f"thing {k}") for k in range(6)])
    store.events.append(
        [
            Event(type="purchase", user_id=f"u{u}", item_id=f"i{(u + n) % 6}", timestamp=T0 + n)
            for u in range(30)
            for n in range(3)
        ]
    )
    bundle = train_bundle(store, settings.recommend, training=settings.training, ranker=False)
    path = save_bundle(bundle, settings.model_dir)
    manifest = json.loads((path / "manifest.json").read_text())
    report = manifest["dp"]["embedding"]
    assert report["target_epsilon"] == 8.0 and 0 < report["epsilon"] <= 8.0 * 1.02
    assert report["delta"] == pytest.approx(1 / 30) and report["max_grad_norm"] == 0.5
    assert report["noise_multiplier"] > 0
    meta = json.loads((path / "embedding" / "meta.json").read_text())
    assert meta["state"]["dp"] == report and meta["params"]["dp"]["epsilon"] == 8.0
    loaded = load_bundle(path).models["embedding"]
    assert isinstance(loaded, HybridRanker) and loaded.dp_report_ is not None
    with pytest.raises(ValueError, match="embedding_dp_epsilon"):
        TrainingSettings(embedding_dp_epsilon=0.0)


def test_a_dp_fit_too_large_for_memory_is_refused_before_training(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, genders = taste_purchases(40)
    monkeypatch.setattr(dp_hybrid, "MAX_GRAD_SAMPLE_BYTES", 1000)
    with pytest.raises(ConfigError, match="batch_size"):
        HybridRanker(**RANK, dp=DPConfig(epochs=1, noise_multiplier=1.0)).fit(
            data, side=side(genders)
        )
