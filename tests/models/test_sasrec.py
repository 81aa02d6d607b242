"""SASRec beyond the model contract, on SYNTHETIC sequences."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from shopcast.errors import ConfigError, ModelError  # noqa: E402
from shopcast.models import Context, Interactions, Vocabulary  # noqa: E402
from shopcast.models import _sasrec_net as tnet  # noqa: E402
from shopcast.models._base import EVENT_CODES  # noqa: E402
from shopcast.models.sasrec import EpochReport, ItemAttributes, SASRec  # noqa: E402

from .synthetic import T0, ev, interactions  # noqa: E402

CYCLE = "ABCDEFGH"
TINY: dict[str, Any] = {
    "max_len": 5,
    "hidden": 16,
    "blocks": 1,
    "dropout": 0.0,
    "attn_dropout": 0.0,
    "lr": 1e-2,
    "epochs": 40,
    "batch_size": 16,
    "holdout": False,
}


def cycle_shop(n_subjects: int = 32, length: int = 6) -> Interactions:
    """Every shopper walks the cycle A→B→…→H→A from its own starting point."""
    rows = []
    for s in range(n_subjects):
        for k in range(length):
            item = CYCLE[(s + k) % len(CYCLE)]
            rows.append(ev(f"u{s}", item, ts=T0 + 60 * k + s))
    return interactions(rows, Vocabulary(), Vocabulary(CYCLE))


def idx(items: str) -> np.ndarray:
    return np.array([CYCLE.index(i) for i in items], dtype=np.int64)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"positions": "end"},
        {"loss": "sampled", "negatives": 4},
        {"mask_seen": True},
        {"ema": 0.9, "lr_decay": "linear", "epochs": 60},
    ],
    ids=["full-softmax", "positions-end", "sampled-softmax", "mask-seen", "ema-decay"],
)
def test_learns_the_next_item_of_a_cycle(params: dict[str, Any]) -> None:
    model = SASRec(**(TINY | params)).fit(cycle_shop())
    all_items = np.arange(len(CYCLE))
    for recent in ("AB", "CDE", "H", "FGHA", "DEFGH"):
        s = model.score(Context(now=T0, recent_items=idx(recent)), all_items)
        expected = CYCLE[(CYCLE.index(recent[-1]) + 1) % len(CYCLE)]
        assert CYCLE[int(np.argmax(s))] == expected, (recent, s.round(3))
        assert s.sum() == pytest.approx(1.0)
        if model.mask_seen:
            assert np.all(s[idx(recent)] == 0) and np.all(np.delete(s, idx(recent)) > 0)


def test_seen_pairs_leave_out_each_position_s_target() -> None:
    rows = [np.array([1, 2, 1]), np.array([4])]
    targets = [np.array([2, 1, 3]), np.array([4])]
    flat, items = tnet.seen_pairs(rows, targets)
    # Row 0: position 0 saw 1; position 1 saw 1, 2 but its target is 1, so only 2;
    # position 2 saw 1, 2, 1. Row 1 (flat index 3) saw only its own target.
    pairs = list(zip(flat.tolist(), (items + 1).tolist(), strict=True))
    assert pairs == [(0, 1), (1, 2), (2, 1), (2, 2), (2, 1)]


@pytest.mark.parametrize("chunk", [128, 2])
def test_masked_softmax_matches_cross_entropy_without_the_masked_items(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tnet, "CE_CHUNK", chunk)  # 2: rows in blocks of two, masks split
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(3, 4, generator=gen, requires_grad=True)
    table = torch.randn(6, 4, generator=gen, requires_grad=True)
    target = torch.tensor([0, 5, 2])
    masked = (torch.tensor([2, 0, 1, 1]), torch.tensor([1, 3, 0, 4]))
    loss = tnet.full_softmax_ce(h, table, target, 0.0, tnet.Workspace(), masked)
    ours = torch.autograd.grad(loss, (h, table))
    logits = (h @ table.T).index_put(masked, torch.tensor(float("-inf")))
    ref_loss = torch.nn.functional.cross_entropy(logits, target)
    torch.testing.assert_close(loss, ref_loss)
    for a, b in zip(ours, torch.autograd.grad(ref_loss, (h, table)), strict=True):
        torch.testing.assert_close(a, b)


def test_attention_is_causal() -> None:
    model = SASRec(**TINY).fit(cycle_shop())
    net = model.net_
    table = net.item_table().detach()
    tokens = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 8]])
    positions = torch.arange(4).expand(2, 4)
    with torch.inference_mode():
        h = net.encode(tokens, positions, table)
    torch.testing.assert_close(h[0, :3], h[1, :3], rtol=0, atol=0)
    assert not torch.allclose(h[0, 3], h[1, 3])


def test_padding_does_not_change_outputs() -> None:
    model = SASRec(**TINY).fit(cycle_shop())
    net, table = model.net_, model.net_.item_table().detach()
    short, long = np.array([3, 4]), np.array([1, 2, 3, 4, 5])
    for end in (False, True):
        with torch.inference_mode():
            alone = tnet.last_hidden(net, [short], table, end)
            padded = tnet.last_hidden(net, [short, long], table, end)
        torch.testing.assert_close(alone[0], padded[0], rtol=1e-5, atol=1e-6)


def test_context_keeps_weighted_events_and_collapses_repeats() -> None:
    model = SASRec(**TINY).fit(cycle_shop())
    plain = Context(now=T0, recent_items=idx("BC"))
    view, impression = EVENT_CODES_OF("view"), EVENT_CODES_OF("impression")
    noisy = Context(
        now=T0,
        recent_items=idx("BBGC"),
        recent_types=np.array([view, view, impression, view]),
    )
    everything = np.arange(len(CYCLE))
    np.testing.assert_array_equal(model.score(plain, everything), model.score(noisy, everything))
    # Unknown or out-of-range items are ignored; without any item the prior is used.
    empty = model.score(Context(now=T0, recent_items=np.array([-1, 99])), everything)
    np.testing.assert_allclose(empty, model.prior_)


def EVENT_CODES_OF(name: str) -> int:
    return next(code for t, code in EVENT_CODES.items() if t.value == name)


@pytest.mark.parametrize("chunk", [128, 3])
def test_full_softmax_matches_cross_entropy(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tnet, "CE_CHUNK", chunk)  # 3: blocks of 3, 3 and 1 rows
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(7, 5, generator=gen, requires_grad=True)
    table = torch.randn(11, 5, generator=gen, requires_grad=True)
    target = torch.tensor([0, 3, 10, 3, 5, 1, 2])
    for smoothing in (0.0, 0.2):
        loss = tnet.full_softmax_ce(h, table, target, smoothing, tnet.Workspace())
        ours = torch.autograd.grad(loss, (h, table))
        ref_loss = torch.nn.functional.cross_entropy(h @ table.T, target, label_smoothing=smoothing)
        ref = torch.autograd.grad(ref_loss, (h, table))
        torch.testing.assert_close(loss, ref_loss)
        for a, b in zip(ours, ref, strict=True):
            torch.testing.assert_close(a, b)


def test_attributes_are_learned_saved_and_loaded(tmp_path: Path) -> None:
    data = cycle_shop()
    attrs = ItemAttributes({"A": [1, 2], "B": [2], "C": ["x"], "Z": [7]})
    model = SASRec(**TINY).fit(data, attributes=attrs)
    assert model.n_attributes_ == 3  # 1, 2, x (Z is not an item of the data)
    assert model.attr_offsets_.tolist() == [0, 2, 3, 4, 4, 4, 4, 4]
    plain = SASRec(**TINY).fit(data)
    ctx = Context(now=T0, recent_items=idx("AB"))
    everything = np.arange(len(CYCLE))
    assert not np.allclose(model.score(ctx, everything), plain.score(ctx, everything))
    model.save(tmp_path / "m")
    loaded = SASRec.load(tmp_path / "m", data.items)
    assert loaded.n_attributes_ == 3
    contexts = [ctx, Context(now=T0), Context(now=T0, recent_items=idx("HAB"))]
    np.testing.assert_array_equal(model.score_all(contexts), loaded.score_all(contexts))
    assert [r.epoch for r in loaded.history_] == [r.epoch for r in model.history_]


def test_from_items_reads_attribute_ids_or_category_and_brand() -> None:
    from shopcast.domain import Item

    items = [
        Item(item_id="a", attributes={"attribute_ids": [3, 4]}),
        Item(item_id="b", category=["Beauty", "Skin"], brand="Acme"),
        Item(item_id="c"),
    ]
    assert ItemAttributes.from_items(items).of == {
        "a": [3, 4],
        "b": ["c:Beauty", "c:Skin", "b:Acme"],
        "c": [],
    }


def test_holdout_early_stopping_keeps_the_best_epoch() -> None:
    reports: list[EpochReport] = []
    model = SASRec(**(TINY | {"holdout": True, "refit": False, "epochs": 60, "patience": 3}))
    model.fit(cycle_shop(length=7), progress=reports.append)
    assert reports == model.history_
    vals = [r.val_ndcg for r in reports]
    assert all(0 <= v <= 1 for v in vals) and not any(r.refit for r in reports)
    assert model.best_val_ == max(vals) and vals[model.best_epoch_ - 1] == max(vals)
    assert len(reports) == model.best_epoch_ + 3 or len(reports) == 60
    # The cycle is learned: the held-out next items rank first.
    assert model.best_val_ == pytest.approx(1.0)


@pytest.mark.parametrize("extra", [{}, {"ema": 0.8, "lr_decay": "linear"}], ids=["plain", "ema"])
def test_refit_trains_the_best_epoch_count_on_every_item(extra: dict[str, Any]) -> None:
    data = cycle_shop(length=7)
    chosen = TINY | {"holdout": True, "epochs": 30, "patience": 2, "lr": 3e-3} | extra
    refit = SASRec(**chosen).fit(data)
    selection = SASRec(**(chosen | {"refit": False})).fit(data)
    assert refit.best_epoch_ == selection.best_epoch_ >= 1
    assert refit.best_val_ == selection.best_val_
    flags = [r.refit for r in refit.history_]
    assert flags == [False] * len(selection.history_) + [True] * refit.best_epoch_
    # The refit is a plain fit on every item for the chosen number of epochs.
    plain = SASRec(
        **(chosen | {"holdout": False, "epochs": refit.best_epoch_, "decay_epochs": 30})
    ).fit(data)
    contexts = [Context(now=T0, recent_items=idx(r)) for r in ("A", "CDE", "GH")]
    np.testing.assert_array_equal(refit.score_all(contexts), plain.score_all(contexts))
    assert not np.array_equal(refit.score_all(contexts), selection.score_all(contexts))


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_time_budget_stops_before_an_epoch_that_would_not_fit(clock: str, tmp_path: Path) -> None:
    # A budget smaller than one epoch: the first epoch runs, no second one starts
    # (selection and refit alike), whichever clock measures it.
    budget = {"epochs": 50, "patience": 50, "max_seconds": 1e-6, "clock": clock}
    data = cycle_shop(length=7)
    model = SASRec(**(TINY | {"holdout": True} | budget)).fit(data)
    assert [(r.epoch, r.refit) for r in model.history_] == [(1, False), (1, True)]
    assert model.fit_cpu_seconds_ > 0 and model.fit_seconds_ > 0
    unbounded = SASRec(**(TINY | {"holdout": True, "epochs": 3, "patience": 50}))
    assert len(unbounded.fit(data).history_) == 3 + unbounded.best_epoch_
    model.save(tmp_path)
    again = SASRec.load(tmp_path, Vocabulary(CYCLE))
    assert again.clock == clock and again.fit_cpu_seconds_ == model.fit_cpu_seconds_


def test_validate_callback_drives_early_stopping() -> None:
    calls: list[int] = []

    def validate(m: SASRec) -> float:
        calls.append(len(calls))
        return 1.0 if len(calls) == 2 else 0.5

    model = SASRec(**(TINY | {"epochs": 50, "patience": 2})).fit(cycle_shop(), validate=validate)
    assert len(calls) == 4 and model.best_epoch_ == 2 and model.best_val_ == 1.0


def test_score_all_of_many_contexts_matches_score() -> None:
    model = SASRec(**TINY).fit(cycle_shop())
    rng = np.random.default_rng(1)
    contexts = [
        Context(now=T0, recent_items=rng.integers(0, len(CYCLE), rng.integers(0, 9)))
        for _ in range(40)
    ]
    batch = model.score_all(contexts)
    assert batch.shape == (40, len(CYCLE))
    for row, c in zip(batch, contexts, strict=True):
        np.testing.assert_allclose(row, model.score(c, np.arange(len(CYCLE))), rtol=1e-6)


@pytest.mark.parametrize(
    "bad",
    [
        {"hidden": 10, "heads": 3},
        {"dropout": 1.0},
        {"loss": "bpr"},
        {"positions": "middle"},
        {"max_len": 0},
        {"lr": 0.0},
        {"val_subjects": 0},
        {"mask_seen": True, "label_smoothing": 0.1},
        {"ema": 1.0},
        {"lr_decay": "cosine"},
        {"decay_epochs": 0},
        {"mask_seen": True, "loss": "sampled"},
        {"clock": "gpu"},
    ],
)
def test_bad_hyperparameters_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SASRec(**bad)


def test_nothing_to_learn_from_is_an_error() -> None:
    data = interactions([ev("u1", "A"), ev("u2", "B")], Vocabulary(), Vocabulary("AB"))
    with pytest.raises(ModelError, match="two or more items"):
        SASRec(**TINY).fit(data)
