"""Differentially private training of the hybrid two-tower model with DP-SGD (Opacus).

``HybridRanker(dp=DPConfig(...))`` and ``HybridRating(dp=...)`` train here instead of
the usual loop (same ``DPConfig`` / ``DPReport`` as SASRec, ``shopcast.privacy.dp``).

Unit of privacy: one user (a subject of the training data). Each Opacus example is one
user, and everything its loss reads is that user's own data or public data:

- ranking head: per step, each sampled user draws ``dp.per_user`` (basket, target item)
  pairs uniformly among their own training targets (with replacement). A slot's user bag
  is the user's id, profile features and their own events before that basket (as in the
  ordinary fit); its candidates are the positive plus ``negatives`` items drawn
  uniformly from the catalog *for that slot* (``negatives`` 0 → 64), each through the
  item tower with its id and catalog features. Negatives the user already had (with
  ``new_items_only``) or that are among the basket's targets are masked. No in-batch
  negatives (they would be other users' positives) and no frequency-based sampling
  (the item frequencies are data): with uniform negatives the log-Q correction is a
  constant. The user id bias is frozen (it cancels in the softmax).
- rating head: each sampled user draws ``dp.per_user`` of their ratings; the user bag
  holds their own other ratings (the pair's own rating left out, as in the ordinary
  fit); the item side is the item's id and catalog features only — the item behaviour
  bag (the users who rated the item) is switched off, since it would put other users'
  ratings into this user's loss. ``μ`` is the middle of the rating scale, not the data
  mean (which would be a non-private release).

Each example's gradient is clipped to ``max_grad_norm`` (all parameters together),
examples are Poisson-sampled at rate ``sample_rate`` (default ``batch_size / users``),
Gaussian noise is calibrated by ``make_private_with_epsilon`` for ``epochs``, and AdamW
steps on the noisy mean. δ defaults to 1 / users. The towers' per-sample gradients go
through ``nn.Embedding`` / ``nn.Linear`` rules of Opacus (``_dp_hybrid_net``): the
leading axis of every input is the user, so an item tower applied to a slot's positive
and negatives together still yields each user's own gradient.

Covered: the network weights. Not covered (assumed public or kept, as for SASRec): the
item and user vocabularies, the feature encoders' vocabularies and numeric scaling
(fitted on the entities' records), which items have an id row, the rating scale. Not
a release either: the stored per-user histories that score each user (their own data,
dropped by ``forget``). No early stopping, ``holdout``/``refit``/``ensemble`` > 1 are not
used (exactly ``dp.epochs`` epochs, one member). Id and edge dropout are per-example
randomness (the rating head does not apply ``edge_dropout``).
``epsilon=inf`` runs the same per-user training without clipping or noise.

Cost: Opacus keeps one dense gradient per sampled user for every parameter, the tower
tables (ids, features, behaviour columns) included: about 4 · expected batch ·
parameters bytes a step. A DP fit above ``MAX_GRAD_SAMPLE_BYTES`` is refused up front.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from shopcast.errors import ConfigError, ModelError
from shopcast.models._base import IntArray, Interactions
from shopcast.models._hybrid_side import FeatureBag, SideFeatures
from shopcast.privacy.dp import DPConfig, DPReport, _require_opacus, training_loop_parts

if TYPE_CHECKING:
    import torch

    from shopcast.models.hybrid import (
        EpochReport,
        HybridRanker,
        HybridRating,
        Progress,
        _RankPhase,
        _RatingPhase,
    )

#: Negatives per slot when the ranker's ``negatives`` is 0 (the full softmax).
DEFAULT_NEGATIVES = 64
#: Refuse a DP fit whose per-sample gradients would hold more than this many bytes.
MAX_GRAD_SAMPLE_BYTES = 8 * 2**30

Batch = tuple[Any, ...]


def padded(bag: FeatureBag) -> tuple[IntArray, Any]:
    """``(index, weight)`` (int64, float32) of shape ``(rows, width)``: each row's
    entries left-aligned, padding index 0 with weight 0 (contributes nothing, gets no
    gradient)."""
    rows = bag.rows
    lengths = np.diff(bag.offsets)
    width = max(int(lengths.max(initial=0)), 1)
    index = np.zeros((rows, width), dtype=np.int64)
    weight = np.zeros((rows, width), dtype=np.float32)
    row = np.repeat(np.arange(rows), lengths)
    col = np.arange(bag.index.shape[0]) - bag.offsets[:-1][row]
    index[row, col] = bag.index
    weight[row, col] = bag.weight
    return index.astype(np.int64), weight


def _side(bag: FeatureBag, ids: IntArray, shape: tuple[int, ...]) -> tuple[Any, Any, Any]:
    """Torch ``(index, weight, ids)`` of ``bag``'s rows reshaped to ``shape + (width,)``."""
    import torch

    index, weight = padded(bag)
    width = index.shape[1]
    return (
        torch.from_numpy(index.reshape(*shape, width)),
        torch.from_numpy(weight.reshape(*shape, width)),
        torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64).reshape(shape)),
    )


def _check(model: HybridRanker | HybridRating) -> DPConfig:
    cfg = model.dp
    assert cfg is not None
    if model.ensemble != 1:
        raise ConfigError(f"ensemble must be 1 for DP training, got {model.ensemble}")
    return cfg


# -- ranking head ------------------------------------------------------------------------


class _RankExamples:
    """One example per user with training targets; ``batch`` builds the padded inputs
    of sampled users (their slots, candidates and masks)."""

    def __init__(self, model: HybridRanker, phase: _RankPhase, slots: int) -> None:
        from shopcast.models.hybrid import _rows_of

        self.model, self.phase, self.slots = model, phase, slots
        self.n_items = model.n_items_
        self.negatives = model.negatives if model.negatives > 0 else DEFAULT_NEGATIVES
        # Rows are in subject order: each user's targets are one contiguous range.
        t_row = _rows_of(phase.target_offsets)
        self.t_row = t_row
        subjects, first_row = np.unique(phase.subject, return_index=True)
        last_row = np.append(first_row[1:], phase.size)
        self.t_lo = phase.target_offsets[first_row]
        self.t_count = phase.target_offsets[last_row] - self.t_lo
        self.users = subjects
        width = self.n_items + 1
        self.width = width
        self.target_keys = np.sort(t_row * width + phase.target_item)
        ev = phase.events
        self.hist_keys, self.hist_first = np.unique(ev.subject * width + ev.item, return_index=True)

    @property
    def size(self) -> int:
        return int(self.users.shape[0])

    def batch(self, idx: IntArray, rng: np.random.Generator) -> Batch:
        import torch

        m, ph, s = self.model, self.phase, self.slots
        b = idx.shape[0]
        t = self.t_lo[idx, None] + np.floor(rng.random((b, s)) * self.t_count[idx, None]).astype(
            np.int64
        )
        rows = self.t_row[t]  # (b, s)
        positive = ph.target_item[t]
        bag, ids = ph.user_bag(rows.reshape(-1), rng)
        user = _side(bag, ids, (b, s))
        neg = rng.integers(0, self.n_items, (b, s, self.negatives))
        cands = np.concatenate([positive[..., None], neg], axis=-1)  # (b, s, c)
        valid = np.ones(cands.shape, dtype=np.bool_)
        r3 = np.broadcast_to(rows[..., None], neg.shape)
        bad = (neg == positive[..., None]) | _member(self.target_keys, r3 * self.width + neg)
        if m.new_items_only:
            key = ph.subject[r3] * self.width + neg
            pos = np.minimum(np.searchsorted(self.hist_keys, key), self.hist_keys.shape[0] - 1)
            bad |= (self.hist_keys[pos] == key) & (self.hist_first[pos] < ph.end[r3])
        valid[..., 1:] = ~bad
        flat = cands.reshape(-1)
        c_ids = m._drop_ids(ph.item_ids[flat], self.n_items, rng)
        item = _side(m._with_ids(m.item_static_, flat, c_ids), c_ids, cands.shape)
        w = ph.row_weight[rows]
        w = w / w.sum(axis=1, keepdims=True)
        return user, item, torch.from_numpy(valid), torch.from_numpy(w.astype(np.float32))

    def loss(self, module: Any, batch: Batch) -> torch.Tensor:
        from shopcast.privacy import _dp_hybrid_net as dn

        user, item, valid, weight = batch
        zu, zi = module(*user, *item)
        return dn.ranking_scores_loss(zu, zi, valid, weight)


def _member(sorted_keys: IntArray, keys: IntArray) -> Any:
    if not sorted_keys.size:
        return np.zeros(keys.shape, dtype=np.bool_)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.shape[0] - 1)
    return sorted_keys[pos] == keys


def fit_private_ranker(
    model: HybridRanker,
    data: Interactions,
    *,
    side: SideFeatures | None = None,
    progress: Progress | None = None,
) -> HybridRanker:
    """Fit the ranking head with DP-SGD (see the module docstring)."""
    import shopcast.models.hybrid as hy

    cfg = _check(model)
    t0 = time.perf_counter()
    ev = model._setup(data, side)
    phase = hy._RankPhase.build(model, ev, math.inf)
    if not phase.size:
        raise ModelError("no baskets to learn from")
    examples = _RankExamples(model, phase, cfg.per_user)
    _fit(model, examples, cfg, progress, t0, frozen=("user_bias.weight",))
    return model


# -- rating head -------------------------------------------------------------------------


class _RatingExamples:
    """One example per user with ratings; each draws ``slots`` of its ratings."""

    def __init__(self, model: HybridRating, phase: _RatingPhase, slots: int) -> None:
        self.model, self.phase, self.slots = model, phase, slots
        order = np.argsort(phase.user, kind="stable")
        self.order = order
        users, first = np.unique(phase.user[order], return_index=True)
        self.users = users
        self.lo = first
        self.count = np.diff(np.append(first, order.shape[0]))

    @property
    def size(self) -> int:
        return int(self.users.shape[0])

    def batch(self, idx: IntArray, rng: np.random.Generator) -> Batch:
        import torch

        m, ph, s = self.model, self.phase, self.slots
        b = idx.shape[0]
        pick = self.order[
            self.lo[idx, None] + np.floor(rng.random((b, s)) * self.count[idx, None]).astype(int)
        ].reshape(-1)
        u, i = ph.user[pick], ph.item[pick]
        hist = ph.user_hist
        offset = m._beh_offset(True)
        beh, total, _ = hist.bag(u, offset)
        b_index, b_weight = padded(beh)
        own = hist.find(u, i)
        found = own >= 0
        rows = np.arange(u.shape[0])
        col = np.where(found, own - hist.offsets[u], 0)
        b_weight[rows[found], col[found]] = 0.0  # the pair's own rating left out
        norm = np.sqrt(np.maximum(total - found, 1.0)).astype(np.float32)
        b_weight /= norm[:, None]
        u_ids = m._drop_ids(ph.user_ids[u], m.n_user_ids_, rng)
        s_index, s_weight = padded(m._with_ids(m.user_static_, u, u_ids))
        index = np.concatenate([s_index, b_index], axis=1)
        weight = np.concatenate([s_weight, b_weight], axis=1)
        width = index.shape[1]
        user = (
            torch.from_numpy(index.reshape(b, s, width)),
            torch.from_numpy(weight.reshape(b, s, width)),
            torch.from_numpy(u_ids.reshape(b, s)),
        )
        i_ids = m._drop_ids(ph.item_ids[i], m.n_items_, rng)
        item = _side(m._with_ids(m.item_static_, i, i_ids), i_ids, (b, s))
        target = torch.from_numpy(ph.value[pick].astype(np.float32).reshape(b, s))
        weight_s = torch.full((b, s), 1.0 / s)
        return user, item, target, weight_s

    def loss(self, module: Any, batch: Batch) -> torch.Tensor:
        from shopcast.privacy import _dp_hybrid_net as dn

        user, item, target, weight = batch
        zu, zi = module(*user, *item)
        m = self.model
        return dn.rating_scores_loss(zu, zi, target, weight, m.mu_, m.l2)


def fit_private_rating(
    model: HybridRating,
    data: Interactions,
    *,
    side: SideFeatures | None = None,
    progress: Progress | None = None,
) -> HybridRating:
    """Fit the rating head with DP-SGD (see the module docstring)."""
    cfg = _check(model)
    t0 = time.perf_counter()
    user, item, level, value = model._setup(data, side, item_behaviour=False)
    model.mu_ = 0.5 * (model.r_min_ + model.r_max_)
    phase = model._phase(user, item, level, value, item_behaviour=False)
    phase.mu = model.mu_
    model.user_hist_, model.item_hist_ = phase.user_hist, phase.item_hist
    examples = _RatingExamples(model, phase, cfg.per_user)
    _fit(model, examples, cfg, progress, t0, frozen=())
    return model


# -- the DP-SGD loop ---------------------------------------------------------------------


def _check_memory(params: list[Any], n: int, batch_size: int, cfg: DPConfig) -> None:
    """Opacus holds one gradient per sampled user for every parameter (the tower tables
    included, dense): refuse a fit that would need more than ``MAX_GRAD_SAMPLE_BYTES``."""
    q = cfg.sample_rate if cfg.sample_rate is not None else min(1.0, batch_size / n)
    expected = max(1.0, q * n)
    size = sum(int(p.numel()) for p in params)
    need = 4 * expected * size
    if need > MAX_GRAD_SAMPLE_BYTES:
        raise ConfigError(
            f"DP training would hold ~{need / 2**30:.1f} GiB of per-user gradients "
            f"({expected:.0f} users a step x {size:,} parameters); lower batch_size "
            "(or dp sample_rate), hidden or the number of feature columns"
        )


def _fit(
    model: HybridRanker | HybridRating,
    examples: _RankExamples | _RatingExamples,
    cfg: DPConfig,
    progress: Callable[[EpochReport], None] | None,
    t0: float,
    *,
    frozen: tuple[str, ...],
) -> None:
    """Train one network on ``examples`` with DP-SGD (or without DP at ε = ∞), load the
    weights into a plain ``HybridNet`` and fill the model's fitted state."""
    _require_opacus()
    import torch

    import shopcast.models.hybrid as hy
    from shopcast.privacy import _dp_hybrid_net as dn

    tnet = hy._net()
    n = examples.size
    if not n:
        raise ModelError("no user to learn from")
    threads = model.threads if n >= 256 else 1
    model.history_ = []
    with tnet.seeded(model.seed, threads):
        rng = np.random.default_rng(model.seed)
        plain = model._build_net(tnet)
        net = dn.DPHybridNet(plain)
        for name, p in net.named_parameters():
            p.requires_grad_(name not in frozen)
        params = [p for p in net.parameters() if p.requires_grad]
        if cfg.private:
            _check_memory(params, n, model.batch_size, cfg)
        opt: Any = torch.optim.AdamW(params, lr=model.lr, weight_decay=model.weight_decay)
        module, opt, loader, engine, q, delta = training_loop_parts(
            net, opt, n, model.batch_size, cfg, model.seed
        )
        by_epoch: list[float] = []
        steps = 0
        for epoch in range(1, cfg.epochs + 1):
            for group in opt.param_groups:
                group["lr"] = model.lr * model.lr_decay ** (epoch - 1)
            module.train()
            total, count = 0.0, 0
            for (idx,) in loader:
                if idx.shape[0] == 0:  # Poisson sampling drew nobody
                    continue
                batch = examples.batch(idx.numpy(), rng)
                loss: Any = examples.loss(module, batch).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
                total += float(loss.detach()) * idx.shape[0]
                count += idx.shape[0]
            if engine is not None:
                by_epoch.append(float(engine.get_epsilon(delta)))
            report = hy.EpochReport(
                epoch, total / max(count, 1), math.nan, time.perf_counter() - t0, True
            )
            model.history_.append(report)
            if progress is not None:
                progress(report)
        state = {k.removeprefix("_module."): v for k, v in module.state_dict().items()}
        plain.load_state_dict(state)
        plain.eval()
        model.nets_ = [plain]
        model.best_epoch_, model.best_val_ = cfg.epochs, math.nan
        model._refresh()
    model.dp_report_ = DPReport.of_run(
        f"user ({cfg.per_user} draws of their own data per step)",
        n,
        cfg,
        optimizer=opt,
        private=engine is not None,
        sample_rate=q,
        delta=delta,
        steps=steps,
        epsilon_by_epoch=by_epoch,
    )
    model.fit_seconds_ = time.perf_counter() - t0
    model.peak_rss_mb_ = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
