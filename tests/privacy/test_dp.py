"""DP-SGD training of SASRec (shopcast.privacy.dp). All data here is SYNTHETIC."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("opacus")

import torch
from tests.models.synthetic import T0, ev, interactions

from shopcast.errors import ConfigError
from shopcast.models import Context, Interactions, Vocabulary
from shopcast.models.sasrec import SASRec
from shopcast.privacy import _dp_net
from shopcast.privacy.dp import DPConfig, make_private

CYCLE = "ABCDEFGH"
TINY: dict[str, Any] = {
    "max_len": 8,
    "hidden": 16,
    "blocks": 1,
    "dropout": 0.0,
    "attn_dropout": 0.0,
    "lr": 1e-2,
    "batch_size": 16,
    "holdout": False,
}


def cycle_shop(n_subjects: int = 64, length: int = 6) -> Interactions:
    """Every synthetic shopper walks the cycle A→B→…→H→A from its own starting point."""
    rows = []
    for s in range(n_subjects):
        for k in range(length):
            rows.append(ev(f"u{s}", CYCLE[(s + k) % len(CYCLE)], ts=T0 + 60 * k + s))
    return interactions(rows, Vocabulary(), Vocabulary(CYCLE))


def tiny_net(seed: int = 0) -> _dp_net.DPNet:
    torch.manual_seed(seed)
    net = _dp_net.DPNet(
        n_items=len(CYCLE),
        n_attributes=0,
        attr_index=np.empty(0, np.int64),
        attr_offsets=np.zeros(len(CYCLE), np.int64),
        hidden=8,
        max_len=6,
        blocks=1,
        heads=1,
        dropout=0.0,
        attn_dropout=0.0,
        ffn=2,
    )
    net.reset()
    return net


def batch(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` synthetic rows of 5 tokens (the cycle from row-dependent starts)."""
    seq = np.array([[(s + k) % len(CYCLE) + 1 for k in range(6)] for s in range(n)])
    tokens = torch.from_numpy(seq[:, :-1].astype(np.int64))
    positions = torch.arange(5).expand(n, 5).clone()
    return tokens, positions, torch.from_numpy(seq[:, 1:].astype(np.int64))


def test_dp_model_fits_and_scores_with_the_right_shapes() -> None:
    model = SASRec(**TINY, dp=DPConfig(epsilon=8.0, epochs=3)).fit(cycle_shop())
    scores = model.score_all([Context(now=T0, recent_items=np.array([0, 1])), Context(now=T0)])
    assert scores.shape == (2, len(CYCLE))
    assert np.allclose(scores.sum(axis=1), 1.0)
    assert np.allclose(scores[1], 1.0 / len(CYCLE))  # empty context: uniform prior, not data
    s = model.score(Context(now=T0, recent_items=np.array([2])), np.array([0, 5, 99]))
    assert s.shape == (3,) and s[2] == 0.0
    report = model.dp_report_
    assert report is not None and report.n_users == 64 and report.noise_multiplier > 0
    assert report.delta == pytest.approx(1 / 64)


@pytest.mark.parametrize("target", [1.0, 4.0])
def test_spent_epsilon_is_within_the_target_and_grows_with_epochs(target: float) -> None:
    model = SASRec(**TINY, dp=DPConfig(epsilon=target, epochs=3)).fit(cycle_shop())
    report = model.dp_report_
    assert report is not None and report.epsilon is not None
    assert report.epsilon <= target * 1.02
    assert report.epsilon > 0.5 * target  # the noise is not grossly overestimated
    eps = report.epsilon_by_epoch
    assert len(eps) == 3 and eps[0] < eps[1] < eps[2]


def test_without_dp_the_same_network_learns_the_cycle() -> None:
    model = SASRec(**TINY, dp=DPConfig(epsilon=math.inf, epochs=30)).fit(cycle_shop())
    assert model.dp_report_ is not None and model.dp_report_.epsilon is None
    s = model.score(Context(now=T0, recent_items=np.array([2, 3])), np.arange(len(CYCLE)))
    assert int(np.argmax(s)) == 4


def test_per_sample_gradients_match_one_example_at_a_time() -> None:
    """The tied item table's per-user gradients (lookup + output layer) are exact."""
    tokens, positions, targets = batch(4)
    ref = tiny_net()
    expected = []
    for i in range(4):
        ref.zero_grad()
        loss = _dp_net.per_user_loss(
            ref(tokens[i : i + 1], positions[i : i + 1]), targets[i : i + 1]
        )
        loss.backward()
        expected.append({k: p.grad.clone() for k, p in ref.named_parameters()})  # type: ignore[union-attr]
    from opacus import GradSampleModule

    gsm = GradSampleModule(tiny_net())
    _dp_net.per_user_loss(gsm(tokens, positions), targets).backward()
    for name, p in gsm.named_parameters():
        key = name.removeprefix("_module.")
        got = p.grad_sample
        assert got.shape == (4, *p.shape)
        for i in range(4):
            # loss_reduction="mean": grad_sample is each user's own gradient
            torch.testing.assert_close(got[i], expected[i][key], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("clip", [1e-3, 1e-1])
def test_per_sample_clipping_bounds_the_update(clip: float) -> None:
    """With no noise and SGD(lr=1) the update is the mean of clipped per-user gradients,
    so its norm is at most ``max_grad_norm``; unclipped it is far larger."""
    n = 32
    tokens, positions, targets = batch(n)
    net = tiny_net()
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    cfg = DPConfig(max_grad_norm=clip, noise_multiplier=0.0, sample_rate=1.0, epochs=1)
    module, opt, _, _, _ = make_private(net, opt, n, n, cfg, seed=0)
    _dp_net.per_user_loss(module(tokens, positions), targets).backward()
    opt.step()
    update = torch.cat(
        [(p.detach() - b).reshape(-1) for p, b in zip(net.parameters(), before, strict=True)]
    )
    assert 0 < float(update.norm()) <= clip * (1 + 1e-4)

    plain = tiny_net()
    _dp_net.per_user_loss(plain(tokens, positions), targets).backward()
    grad = torch.cat([p.grad.reshape(-1) for p in plain.parameters()])  # type: ignore[union-attr]
    assert float(grad.norm()) > 5 * clip


def test_save_load_keeps_the_spent_epsilon(tmp_path: Path) -> None:
    data = cycle_shop()
    model = SASRec(**TINY, dp=DPConfig(epsilon=4.0, epochs=2, accountant="prv")).fit(data)
    model.save(tmp_path / "m")
    loaded = SASRec.load(tmp_path / "m", data.items)
    assert loaded.dp_report_ == model.dp_report_
    assert loaded.dp == model.dp
    ctx = Context(now=T0, recent_items=np.array([1, 2]))
    np.testing.assert_allclose(loaded.score_all([ctx]), model.score_all([ctx]), rtol=1e-6)


def test_dp_config_is_validated_and_attributes_are_refused() -> None:
    with pytest.raises(ConfigError):
        DPConfig(epsilon=0.0)
    with pytest.raises(ConfigError):
        DPConfig(accountant="gdp-typo")
    from shopcast.models.sasrec import ItemAttributes

    attrs = ItemAttributes({c: ["x"] for c in CYCLE})
    with pytest.raises(ConfigError):
        SASRec(**TINY, dp=DPConfig(epochs=1)).fit(cycle_shop(), attributes=attrs)
