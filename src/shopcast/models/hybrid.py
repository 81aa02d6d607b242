"""Hybrid deep model: a user tower and an item tower over ids, side features and behaviour.

Each tower sums the embeddings of a sparse *feature bag* and passes the sum through an
MLP to ``dim`` factors plus one bias:

- user bag: the user's id (a last "unknown" row; ``id_dropout`` swaps it in during
  training so the feature path learns to stand alone), demographic tokens, normalized
  numeric features and the behaviour profile (the items the user rated, with their
  rating level, or interacted with, time-decayed);
- item bag: the item's id, category/brand/genre tokens, normalized numeric features
  (price, year), TF-IDF terms of its text (a linear projection) and, for ratings, the
  users who rated it with their level.

Two heads share the towers:

- ``HybridRating`` (``"hybrid_rating"``): ``r̂ = μ + b_u + b_i + <u, v>`` (tower biases
  plus id biases), MSE with decoupled weight decay. Each training rating is left out of
  the two behaviour bags it sits in, and a share ``edge_dropout`` of the other entries
  is dropped at every step.
- ``HybridRanker`` (``"hybrid"``): the softmax over items of ``<u, v> + b_i``, trained
  on every (subject, time) basket with the subject's earlier events as behaviour (a
  multinomial likelihood over the basket), with in-batch plus sampled negatives and the
  log-Q correction, or the full softmax.

Users and items unseen at fit are scored from their features (``SideFeatures``) alone;
a user of whom nothing is known gets the "unknown" row (the mean user). Side features
come from ``fit(side=…)``, the constructor (``side``, or the evaluation harness's
``item_tokens`` / ``user_tokens``) and ``add_features`` after fitting.

Training is deterministic under ``seed`` on ``threads`` threads. A share ``holdout`` of
the training data (random ratings, or the end of the time span) picks the epoch count
(early stopping with ``patience``); then, with ``refit``, the model is trained again on
everything for that many epochs. ``ensemble`` > 1 trains that many members (seeds
``seed``, ``seed + 1``, …; with ``refit`` they share the first member's epoch count)
and averages their ``<u, v> + b_u + b_i``: cached rows hold the members' factors side
by side, so scoring costs one inner product. The learning rate is multiplied by
``lr_decay`` after each epoch; with ``ema`` > 0 the weights kept (and validated) are an
exponential moving average of the trained ones, updated after every step.
``progress`` receives each epoch's ``EpochReport``; ``fit_seconds_`` and
``peak_rss_mb_`` record wall time and peak memory. Saved as ``meta.json`` +
``arrays.npz`` (no pickle).
"""

from __future__ import annotations

import importlib.util
import math
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

import numpy as np

from shopcast.errors import ConfigError, MissingDependencyError, ModelError
from shopcast.models._base import Context, FloatArray, IntArray, Interactions, Vocabulary
from shopcast.models._common import (
    SECONDS_PER_DAY,
    check_positive,
    load_model,
    require_fitted,
    resolve_event_weights,
    save_model,
    weight_array,
)
from shopcast.models._data import explicit_ratings, n_items_of, n_users_of
from shopcast.models._hybrid_side import FeatureBag, FeatureTable, SideFeatures, TableEncoder
from shopcast.privacy.dp import DPConfig, DPReport

if TYPE_CHECKING:
    import torch

    from shopcast.models._hybrid_net import HybridNet

__all__ = ["EpochReport", "FeatureTable", "HybridRanker", "HybridRating", "SideFeatures"]

USER_PREFIX = "u:"
SESSION_PREFIX = "s:"
#: Rows per forward pass at inference.
CHUNK = 4096
#: Below this many training examples one thread is faster than several.
SMALL_DATA = 20_000
#: Distinct rating values up to this many are behaviour levels of their own.
MAX_LEVELS = 10
#: Validation NDCG cut-off of the ranker.
VAL_K = 10


@dataclass(frozen=True, slots=True)
class EpochReport:
    """One epoch: mean training loss, validation metric (NaN without one: RMSE for the
    rating head, NDCG@10 for the ranker), seconds since ``fit`` started; ``refit``
    marks the epochs of the final fit on everything."""

    epoch: int
    loss: float
    val: float
    seconds: float
    refit: bool = False


Progress = Callable[[EpochReport], None]


class _Phase(Protocol):
    """The training data of one phase of ``fit`` (holdout run or final run)."""

    @property
    def size(self) -> int: ...

    def batches(self, rng: np.random.Generator, size: int) -> list[IntArray]: ...

    def loss(
        self,
        net: HybridNet,
        batch: IntArray,
        rng: np.random.Generator,
        part: IntArray | None = None,
    ) -> torch.Tensor:
        """The mean loss of ``batch``; with ``part`` (positions in ``batch``, data
        parallel) only those rows' share of it: the parts' losses sum to the batch's.
        Random draws are those of the whole batch either way."""
        ...

    def validate(self, nets: list[HybridNet]) -> float: ...

    def better(self, a: float, b: float) -> bool: ...


def _net() -> Any:
    if importlib.util.find_spec("torch") is None:
        raise MissingDependencyError("torch", "deep")
    import shopcast.models._hybrid_net as net

    return net


def _ranges(starts: IntArray, ends: IntArray) -> tuple[IntArray, IntArray]:
    """``(positions, offsets)`` of the concatenated ranges ``starts[r]:ends[r]``."""
    lengths = np.maximum(ends - starts, 0)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    pos = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
    return pos.astype(np.int64), offsets


def _rows_of(offsets: IntArray) -> IntArray:
    return np.repeat(np.arange(offsets.shape[0] - 1), np.diff(offsets)).astype(np.int64)


def _normalized(weight: FloatArray, offsets: IntArray) -> FloatArray:
    """``weight / sqrt(row sum)`` per row."""
    if not weight.size:
        return weight.astype(np.float64)
    rows = _rows_of(offsets)
    total = np.bincount(rows, weights=weight, minlength=offsets.shape[0] - 1)
    scale = 1.0 / np.sqrt(np.where(total > 0, total, 1.0))
    return np.asarray(weight * scale[rows], dtype=np.float64)


def _external(key: str) -> str:
    """The user id of a subject key (``u:<id>``); session keys have none."""
    return key[len(USER_PREFIX) :] if key.startswith(USER_PREFIX) else ""


def _id_columns(trained: Any, n_ids: int) -> IntArray:
    """Id column of each row: its own index when trained (and an id row), else unknown."""
    rows = np.arange(trained.shape[0])
    return np.where(trained & (rows < n_ids), rows, n_ids).astype(np.int64)


class _Hybrid:
    """What both heads share: side features, towers, training loop, persistence."""

    name: ClassVar[str]
    _extra_params: ClassVar[tuple[str, ...]] = ()
    _extra_arrays: ClassVar[tuple[str, ...]] = ()
    #: ``shopcast.training.distributed.fit_distributed`` (``--ddp``) trains it.
    supports_data_parallel: ClassVar[bool] = True

    nets_: list[HybridNet]  # the ensemble's members
    n_items_: int
    n_user_ids_: int
    user_keys_: list[str]
    item_extra_keys_: list[str]
    user_static_: FeatureBag
    item_static_: FeatureBag
    user_enc_: TableEncoder
    item_enc_: TableEncoder
    user_trained_: Any  # bool per user row: had training events (id row in use)
    item_trained_: Any
    n_beh_user_: int
    n_beh_item_: int
    best_epoch_: int
    best_val_: float
    history_: list[EpochReport]
    fit_seconds_: float
    peak_rss_mb_: float
    Zi_: FloatArray  # tower output of every item row

    def __init__(
        self,
        *,
        dim: int = 48,
        hidden: int = 128,
        layers: int = 1,
        dropout: float = 0.5,
        id_dropout: float = 0.1,
        init_std: float = 0.01,
        lr: float = 2e-3,
        lr_decay: float = 1.0,
        ema: float = 0.0,
        weight_decay: float = 1e-4,
        batch_size: int = 2048,
        epochs: int = 40,
        patience: int = 3,
        ensemble: int = 1,
        holdout: float = 0.05,
        refit: bool = True,
        min_token_count: int = 1,
        text_terms: int = 2000,
        seed: int = 0,
        threads: int = 2,
        side: SideFeatures | None = None,
        item_tokens: Mapping[str, Sequence[str]] | None = None,
        user_tokens: Mapping[str, Sequence[str]] | None = None,
        dp: DPConfig | Mapping[str, Any] | None = None,
    ) -> None:
        for label, count in (
            ("dim", dim),
            ("hidden", hidden),
            ("batch_size", batch_size),
            ("epochs", epochs),
            ("patience", patience),
            ("ensemble", ensemble),
            ("min_token_count", min_token_count),
            ("threads", threads),
        ):
            if count < 1:
                raise ConfigError(f"{label} must be >= 1, got {count}")
        for label, share in (
            ("dropout", dropout),
            ("id_dropout", id_dropout),
            ("holdout", holdout),
        ):
            if not 0 <= share < 1:
                raise ConfigError(f"{label} must be in [0, 1), got {share}")
        if text_terms < 0 or layers < 0:
            raise ConfigError(f"text_terms and layers must be >= 0, got {text_terms}, {layers}")
        if weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {weight_decay}")
        self.dim = dim
        self.hidden = hidden
        self.layers = layers
        self.dropout = dropout
        self.id_dropout = id_dropout
        self.init_std = check_positive("init_std", init_std)
        self.lr = check_positive("lr", lr)
        if not 0 < lr_decay <= 1 or not 0 <= ema < 1:
            raise ConfigError(f"lr_decay must be in (0, 1] and ema in [0, 1): {lr_decay}, {ema}")
        self.lr_decay = lr_decay
        self.ema = ema
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.ensemble = ensemble
        self.holdout = holdout
        self.refit = refit
        self.min_token_count = min_token_count
        self.text_terms = text_terms
        self.seed = seed
        self.threads = threads
        base = side or SideFeatures()
        if item_tokens or user_tokens:
            tokens = SideFeatures(
                users=FeatureTable(tokens=dict(user_tokens or {})),
                items=FeatureTable(tokens=dict(item_tokens or {})),
            )
            base = base.merged(tokens)
        self.side = base
        # Optional DP-SGD training (shopcast.privacy.dp_hybrid); its report is
        # ``dp_report_``.
        self.dp = DPConfig.from_json(dp) if isinstance(dp, Mapping) else dp
        self.dp_report_: DPReport | None = None

    def _params(self) -> dict[str, Any]:
        """Constructor arguments as JSON (side features are saved as learned state)."""
        names = (
            "dim", "hidden", "layers", "dropout", "id_dropout", "init_std", "lr", "lr_decay", "ema",
            "weight_decay", "batch_size", "epochs", "patience", "ensemble", "holdout", "refit",
            "min_token_count", "text_terms", "seed", "threads", *self._extra_params,
        )  # fmt: skip
        return {n: getattr(self, n) for n in names} | {
            "dp": None if self.dp is None else self.dp.to_json()
        }

    # -- side features -------------------------------------------------------------------

    def _prepare(
        self,
        data: Interactions,
        side: SideFeatures | None,
        trained_users: IntArray,
        trained_items: IntArray,
        n_beh_user: int,
        n_beh_item: int,
    ) -> None:
        """Fit the feature encoders on the training entities and encode every row.

        User rows: the subjects of ``data.users`` (``user_keys_``), then users known only
        by their features. Item rows: the fitted items, then items known only by their
        features (``item_extra_keys_``). Bag columns: ``[ids, unknown | features |
        behaviour]``.
        """
        full = self.side.merged(side) if side is not None else self.side
        self._items = data.items
        self.n_items_ = n_items_of(data)
        self.n_user_ids_ = n_users_of(data)
        keys = list(data.users.ids[: self.n_user_ids_])
        known = set(keys)
        self.user_keys_ = keys + [
            USER_PREFIX + u for u in full.users.ids if USER_PREFIX + u not in known
        ]
        item_ids = list(data.items.ids[: self.n_items_])
        known_items = set(item_ids)
        self.item_extra_keys_ = [i for i in full.items.ids if i not in known_items]
        self.n_beh_user_, self.n_beh_item_ = n_beh_user, n_beh_item
        params = {"min_count": self.min_token_count, "text_terms": self.text_terms}
        self.user_enc_ = TableEncoder(**params).fit(
            full.users, [_external(keys[u]) for u in np.unique(trained_users).tolist()]
        )
        self.item_enc_ = TableEncoder(**params).fit(
            full.items, [item_ids[i] for i in np.unique(trained_items).tolist()]
        )
        self.user_static_ = self._encode(
            self.user_enc_, full.users, [_external(k) for k in self.user_keys_], True
        )
        self.item_static_ = self._encode(
            self.item_enc_, full.items, item_ids + self.item_extra_keys_, False
        )
        self.user_trained_ = np.bincount(trained_users, minlength=len(self.user_keys_)) > 0
        self.item_trained_ = np.bincount(trained_items, minlength=self.item_static_.rows) > 0

    def _encode(
        self, enc: TableEncoder, table: FeatureTable, ids: list[str], users: bool
    ) -> FeatureBag:
        bag = enc.encode(table, ids)
        return FeatureBag(bag.index + self._feature_offset(users), bag.weight, bag.offsets)

    def _feature_offset(self, users: bool) -> int:
        return (self.n_user_ids_ if users else self.n_items_) + 1

    def _beh_offset(self, users: bool) -> int:
        enc = self.user_enc_ if users else self.item_enc_
        return self._feature_offset(users) + enc.width

    def _columns(self, users: bool) -> int:
        return self._beh_offset(users) + (self.n_beh_user_ if users else self.n_beh_item_)

    def add_features(self, side: SideFeatures) -> None:
        """Make users and items new to the model scorable from ``side``'s features
        (entities the model already has rows for keep theirs)."""
        require_fitted(self, "nets_")
        known_users = set(self.user_keys_)
        new_users = [u for u in side.users.ids if USER_PREFIX + u not in known_users]
        if new_users:
            bag = self._encode(self.user_enc_, side.users, new_users, True)
            self.user_static_ = self.user_static_.concat(bag)
            self.user_keys_ = self.user_keys_ + [USER_PREFIX + u for u in new_users]
            self.user_trained_ = np.concatenate(
                [self.user_trained_, np.zeros(len(new_users), dtype=np.bool_)]
            )
        known_items = set(self.item_extra_keys_)
        fitted = set(self._items.ids[: self.n_items_])
        new_items = [i for i in side.items.ids if i not in known_items and i not in fitted]
        if new_items:
            bag = self._encode(self.item_enc_, side.items, new_items, False)
            self.item_static_ = self.item_static_.concat(bag)
            self.item_extra_keys_ = self.item_extra_keys_ + new_items
            self.item_trained_ = np.concatenate(
                [self.item_trained_, np.zeros(len(new_items), dtype=np.bool_)]
            )
        self._refresh()

    # -- erasure -------------------------------------------------------------------------

    def forget(self, subjects: Sequence[str]) -> int:
        """Drop what the model holds of ``subjects`` (``u:<id>`` / ``s:<id>``) at once:
        their key (the stored id), their profile features, their id embedding (the id
        column goes unused) and their behaviour rows, so that they are scored as unknown
        shoppers from then on and a saved copy holds nothing of them. The tower weights
        keep their share of the training signal until the scheduled retrain.
        Returns how many rows were dropped (unknown subjects are ignored)."""
        require_fitted(self, "nets_")
        row_of = self._row_of
        rows = np.unique(np.asarray([row_of[s] for s in subjects if s in row_of], np.int64))
        if not rows.size:
            return 0
        keep = np.arange(self.user_static_.rows, dtype=np.int64)
        keep[rows] = -1  # take() leaves rows outside the bag empty
        self.user_static_ = self.user_static_.take(keep)
        trained = np.array(self.user_trained_, dtype=np.bool_, copy=True)
        trained[rows] = False
        self.user_trained_ = trained
        keys = list(self.user_keys_)
        for r in rows.tolist():
            keys[r] = f"forgotten:{r}"  # a tombstone: subject keys start with u: or s:
        self.user_keys_ = keys
        self._row_cache = {k: r for r, k in enumerate(keys)}
        self._forget_rows(rows)
        return int(rows.size)

    def _forget_rows(self, rows: IntArray) -> None:
        """Drop the head's own per-user state of user ``rows`` (behaviour, caches)."""
        raise NotImplementedError

    # -- bags and towers -----------------------------------------------------------------

    @staticmethod
    def _with_ids(static: FeatureBag, rows: IntArray, ids: IntArray) -> FeatureBag:
        """The id column (weight 1) followed by the static features of ``rows``."""
        n = ids.shape[0]
        id_bag = FeatureBag(ids.astype(np.int64), np.ones(n), np.arange(n + 1, dtype=np.int64))
        return id_bag.join(static.take(rows))

    def _drop_ids(self, ids: IntArray, unknown: int, rng: np.random.Generator) -> IntArray:
        if self.id_dropout <= 0:
            return ids
        return np.where(rng.random(ids.shape[0]) < self.id_dropout, unknown, ids)

    def _tower_rows(
        self, net: HybridNet, users: bool, bag: FeatureBag, ids: IntArray
    ) -> FloatArray:
        """Tower outputs (float64) of ``bag``'s rows, in chunks, without gradients."""
        out = np.zeros((bag.rows, self.dim + 1), dtype=np.float64)
        with _net().inference():
            for lo in range(0, bag.rows, CHUNK):
                rows = np.arange(lo, min(lo + CHUNK, bag.rows))
                part = bag.take(rows)
                z = net.users(part, ids[rows]) if users else net.items(part, ids[rows])
                out[rows] = z.numpy().astype(np.float64)
        return out

    def _member_rows(self, users: bool, bag: FeatureBag, ids: IntArray) -> FloatArray:
        """Tower outputs of every member, combined (see ``_combine``)."""
        return self._combine([self._tower_rows(n, users, bag, ids) for n in self.nets_], users)

    def _combine(self, parts: list[FloatArray], users: bool) -> FloatArray:
        """Member outputs as one row each: factors side by side (the user side divided by
        the member count) and the biases averaged, so that inner products of combined
        rows are the members' mean ``<u, v> + b_u + b_i``."""
        k = len(parts)
        if k == 1:
            return parts[0]
        factors = [p[:, :-1] / (k if users else 1) for p in parts]
        bias = np.mean([p[:, -1] for p in parts], axis=0)
        return np.hstack([*factors, bias[:, None]])

    def _item_ids(self, trained: Any) -> IntArray:
        return _id_columns(trained, self.n_items_)

    def _user_ids(self, trained: Any) -> IntArray:
        return _id_columns(trained, self.n_user_ids_)

    def _candidate_rows(self, candidates: IntArray) -> IntArray:
        """Item row of each candidate index; -1 for items the model cannot score."""
        idx = np.asarray(candidates, dtype=np.int64)
        rows = np.where((idx >= 0) & (idx < self.n_items_), idx, -1)
        beyond = np.flatnonzero((idx >= self.n_items_) & (idx < len(self._items)))
        if beyond.size and self.item_extra_keys_:
            extra = {k: self.n_items_ + j for j, k in enumerate(self.item_extra_keys_)}
            ids = self._items.ids
            rows[beyond] = [extra.get(ids[i], -1) for i in idx[beyond].tolist()]
        return rows

    def _subject_row(self, context: Context) -> int:
        """The user row of a context (user id first, then session), -1 when unknown."""
        for key in (
            USER_PREFIX + context.user_id if context.user_id else None,
            SESSION_PREFIX + context.session_id if context.session_id else None,
        ):
            if key is not None:
                row = self._row_of.get(key, -1)
                if row >= 0:
                    return row
        return -1

    # -- training loop -------------------------------------------------------------------

    def _build_net(self, tnet: Any) -> HybridNet:
        net: HybridNet = tnet.HybridNet(
            self._columns(True),
            self._columns(False),
            self.n_user_ids_,
            self.n_items_,
            hidden=self.hidden,
            dim=self.dim,
            layers=self.layers,
            dropout=self.dropout,
            init_std=self.init_std,
        )
        return net

    def _run(
        self,
        tnet: Any,
        phase: _Phase,
        epochs: int,
        progress: Progress | None,
        t0: float,
        *,
        validate: bool,
        seed: int,
    ) -> tuple[HybridNet, int, float]:
        """Train a fresh network for up to ``epochs``; with ``validate``, stop early and
        keep the best epoch's weights. Returns ``(net, best_epoch, best_val)``."""
        import torch

        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        net = self._build_net(tnet)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        # With ``ema``, an exponential moving average of the weights is what is validated
        # and kept (``net`` trains, ``kept`` follows it).
        kept = self._build_net(tnet) if self.ema > 0 else net
        if kept is not net:
            kept.load_state_dict(net.state_dict())
        best_val, best_epoch, waited = math.nan, epochs, 0
        best_state: dict[str, torch.Tensor] | None = None
        # Data parallel (shopcast.training.distributed): every rank draws the same
        # global batches and computes its rows' share of the loss; gradients are summed
        # across ranks, so every step is the single-process step.
        dist = getattr(self, "_data_parallel", None)
        for epoch in range(1, epochs + 1):
            for group in opt.param_groups:
                group["lr"] = self.lr * self.lr_decay ** (epoch - 1)
            net.train()
            total, count = 0.0, 0
            for batch in phase.batches(rng, self.batch_size):
                opt.zero_grad()
                if dist is None:
                    loss = phase.loss(net, batch, rng)
                    loss.backward()  # type: ignore[no-untyped-call]
                    value = float(loss.detach())
                else:  # this rank's rows of the global batch; gradients summed
                    loss = phase.loss(net, batch, rng, dist.shard(batch.shape[0]))
                    if loss.requires_grad:  # not when this rank has no row in the batch
                        loss.backward()  # type: ignore[no-untyped-call]
                    (value,) = dist.sum_gradients(net, float(loss.detach()))
                opt.step()
                if kept is not net:
                    with torch.no_grad():
                        for mine, theirs in zip(kept.parameters(), net.parameters(), strict=True):
                            mine.mul_(self.ema).add_(theirs, alpha=1.0 - self.ema)
                total += value * batch.shape[0]
                count += batch.shape[0]
            val = math.nan
            if validate:
                kept.eval()
                val = phase.validate([kept])
            seconds = time.perf_counter() - t0
            report = EpochReport(epoch, total / max(count, 1), val, seconds, not validate)
            self.history_.append(report)
            if progress is not None:
                progress(report)
            if validate and not math.isnan(val):
                if math.isnan(best_val) or phase.better(val, best_val):
                    best_val, best_epoch, waited = val, epoch, 0
                    best_state = {k: v.clone() for k, v in kept.state_dict().items()}
                else:
                    waited += 1
                    if waited >= self.patience:
                        break
        if best_state is not None:
            kept.load_state_dict(best_state)
        kept.eval()
        return kept, best_epoch, best_val

    def _train(
        self, holdout: _Phase | None, final: _Phase, progress: Progress | None, t0: float
    ) -> None:
        """Early stopping on ``holdout`` (when given), then the final run."""
        tnet = _net()
        self.history_ = []
        self.best_epoch_, self.best_val_ = self.epochs, math.nan
        threads = self.threads if final.size >= SMALL_DATA else 1
        nets: list[HybridNet] = []
        with tnet.seeded(self.seed, threads):
            for member in range(self.ensemble):
                seed = self.seed + member
                if holdout is not None and holdout.size and (member == 0 or not self.refit):
                    net, best_epoch, best_val = self._run(
                        tnet, holdout, self.epochs, progress, t0, validate=True, seed=seed
                    )
                    if member == 0:
                        self.best_epoch_, self.best_val_ = best_epoch, best_val
                if holdout is None or not holdout.size:
                    net, _, _ = self._run(
                        tnet, final, self.epochs, progress, t0, validate=False, seed=seed
                    )
                elif self.refit:
                    net, _, _ = self._run(
                        tnet, final, self.best_epoch_, progress, t0, validate=False, seed=seed
                    )
                nets.append(net)
            if len(nets) > 1 and not self.refit and holdout is not None and holdout.size:
                for net in nets:
                    net.eval()
                self.best_val_ = holdout.validate(nets)  # the ensemble's
            self.nets_ = nets
            self._refresh()
        self.fit_seconds_ = time.perf_counter() - t0
        self.peak_rss_mb_ = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    def _refresh(self) -> None:
        """Recompute the cached tower outputs."""
        raise NotImplementedError

    # -- persistence ---------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "n_items": self.n_items_,
            "n_user_ids": self.n_user_ids_,
            "n_beh_user": self.n_beh_user_,
            "n_beh_item": self.n_beh_item_,
            "best_epoch": self.best_epoch_,
            "best_val": None if math.isnan(self.best_val_) else self.best_val_,
            "fit_seconds": self.fit_seconds_,
            "peak_rss_mb": self.peak_rss_mb_,
            "history": [
                [r.epoch, r.loss, None if math.isnan(r.val) else r.val, r.seconds, r.refit]
                for r in self.history_
            ],
            "dp": None if self.dp_report_ is None else self.dp_report_.to_json(),
        }

    def _arrays(self) -> dict[str, np.ndarray[Any, Any]]:
        out: dict[str, np.ndarray[Any, Any]] = {
            "weights": np.stack([_net().state_vector(n) for n in self.nets_]),
            "user_keys": np.asarray(self.user_keys_, dtype=np.str_),
            "item_extra_keys": np.asarray(self.item_extra_keys_, dtype=np.str_),
            "user_trained": np.asarray(self.user_trained_, dtype=np.bool_),
            "item_trained": np.asarray(self.item_trained_, dtype=np.bool_),
        }
        for name, bag in (("user_static", self.user_static_), ("item_static", self.item_static_)):
            out |= {
                f"{name}_index": bag.index,
                f"{name}_weight": bag.weight,
                f"{name}_offsets": bag.offsets,
            }
        return out | self.user_enc_.arrays("user_enc_") | self.item_enc_.arrays("item_enc_")

    @classmethod
    def _array_names(cls) -> tuple[str, ...]:
        bags = tuple(
            f"{b}_{p}"
            for b in ("user_static", "item_static")
            for p in ("index", "weight", "offsets")
        )
        return (
            "weights",
            "user_keys",
            "item_extra_keys",
            "user_trained",
            "item_trained",
            *bags,
            *TableEncoder.array_names("user_enc_"),
            *TableEncoder.array_names("item_enc_"),
            *cls._extra_arrays,
        )

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _extra_arrays_out(self) -> dict[str, np.ndarray[Any, Any]]:
        return {}

    def _restore_extra(self, state: Mapping[str, Any], arrays: Mapping[str, Any]) -> None:
        """Read back ``_extra_state`` and ``_extra_arrays_out``."""

    def save(self, path: Path) -> None:
        require_fitted(self, "nets_")
        save_model(
            path,
            self,  # type: ignore[arg-type]
            params=self._params(),
            state=self._state() | self._extra_state(),
            arrays=self._arrays() | self._extra_arrays_out(),
        )

    @classmethod
    def load(cls, path: Path, items: Vocabulary) -> Self:
        tnet = _net()
        model, state, arrays = load_model(path, cls, items, cls._array_names())  # type: ignore[type-var]
        try:
            model._items = items
            model.n_items_ = int(state["n_items"])
            model.n_user_ids_ = int(state["n_user_ids"])
            model.n_beh_user_ = int(state["n_beh_user"])
            model.n_beh_item_ = int(state["n_beh_item"])
            model.best_epoch_ = int(state["best_epoch"])
            best = state["best_val"]
            model.best_val_ = math.nan if best is None else float(best)
            model.fit_seconds_ = float(state["fit_seconds"])
            model.peak_rss_mb_ = float(state["peak_rss_mb"])
            model.history_ = [
                EpochReport(
                    int(e), float(x), math.nan if v is None else float(v), float(s), bool(r)
                )
                for e, x, v, s, r in state["history"]
            ]
            model.user_keys_ = [str(k) for k in arrays["user_keys"].tolist()]
            model.item_extra_keys_ = [str(k) for k in arrays["item_extra_keys"].tolist()]
            model.user_trained_ = arrays["user_trained"].astype(np.bool_)
            model.item_trained_ = arrays["item_trained"].astype(np.bool_)
            model.user_static_, model.item_static_ = (
                FeatureBag(
                    arrays[f"{name}_index"].astype(np.int64),
                    arrays[f"{name}_weight"].astype(np.float64),
                    arrays[f"{name}_offsets"].astype(np.int64),
                )
                for name in ("user_static", "item_static")
            )
            params = {"min_count": model.min_token_count, "text_terms": model.text_terms}
            model.user_enc_ = TableEncoder.from_arrays(arrays, "user_enc_", **params)
            model.item_enc_ = TableEncoder.from_arrays(arrays, "item_enc_", **params)
            model._restore_extra(state, arrays)
            dp = state.get("dp")
            model.dp_report_ = None if dp is None else DPReport.from_json(dp)
            weights = arrays["weights"].astype(np.float32)
            if weights.ndim != 2 or weights.shape[0] != model.ensemble:
                raise ValueError(f"weights of shape {weights.shape} for {model.ensemble} members")
            nets = []
            for vector in weights:
                net = model._build_net(tnet)
                tnet.load_state_vector(net, vector)
                net.eval()
                nets.append(net)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelError(f"{path} has bad metadata: {exc}") from None
        model.nets_ = nets
        model._refresh()
        return model

    @property
    def _row_of(self) -> dict[str, int]:
        cached: dict[str, int] | None = getattr(self, "_row_cache", None)
        if cached is None or len(cached) != len(self.user_keys_):
            cached = {k: r for r, k in enumerate(self.user_keys_)}
            self._row_cache = cached
        return cached


# =====================================================================================
# Rating head
# =====================================================================================


@dataclass(frozen=True, slots=True)
class _Hist:
    """Behaviour of each row, CSR by ``offsets``: bag column, the entity on the other
    side (for leave-one-out) and weight."""

    col: IntArray
    other: IntArray
    weight: FloatArray
    offsets: IntArray

    @classmethod
    def build(
        cls, row: IntArray, col: IntArray, other: IntArray, weight: FloatArray, n_rows: int
    ) -> _Hist:
        order = np.lexsort((other, row))
        counts = np.bincount(row, minlength=n_rows)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(col[order], other[order], weight[order], offsets)

    def bag(
        self,
        rows: IntArray,
        col_offset: int,
        *,
        drop: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> tuple[FeatureBag, FloatArray, Any]:
        """``(bag, total weight per row, kept)``: the unnormalized behaviour of ``rows``
        (rows beyond are empty) without a random share ``drop`` of the entries; ``kept``
        marks which entries of the whole history stayed (None when nothing dropped)."""
        n_rows = self.offsets.shape[0] - 1
        inside = (rows >= 0) & (rows < n_rows)
        safe = np.where(inside, rows, 0)
        starts = np.where(inside, self.offsets[safe], 0)
        ends = np.where(inside, self.offsets[np.minimum(safe + 1, n_rows)], 0)
        pos, offsets = _ranges(starts, ends)
        kept = None
        if drop > 0 and rng is not None:
            kept = np.ones(self.col.shape[0], dtype=np.bool_)
            kept[pos] = rng.random(pos.shape[0]) >= drop
            keep = kept[pos]
            row_of = _rows_of(offsets)[keep]
            pos = pos[keep]
            counts = np.bincount(row_of, minlength=rows.shape[0])
            offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        weight = self.weight[pos]
        total: FloatArray = np.bincount(
            _rows_of(offsets), weights=weight, minlength=rows.shape[0]
        ).astype(np.float64)
        return FeatureBag(self.col[pos] + col_offset, weight, offsets), total, kept

    def find(self, rows: IntArray, others: IntArray) -> IntArray:
        """Position of the entry (row, other) of each pair; -1 when absent."""
        stride = int(self.other.max(initial=0)) + 2
        n_rows = self.offsets.shape[0] - 1
        keys = _rows_of(self.offsets) * stride + self.other
        want = rows * stride + others
        pos = np.minimum(np.searchsorted(keys, want), max(keys.shape[0] - 1, 0))
        ok = (rows >= 0) & (rows < n_rows) & (keys.shape[0] > 0)
        if keys.shape[0]:
            ok &= keys[pos] == want
        return np.where(ok, pos, -1).astype(np.int64)

    def without(self, rows: IntArray, others: IntArray) -> _Hist:
        """This history without the entries of ``rows`` nor those whose entity on the
        other side is one of ``others``."""
        n_rows = self.offsets.shape[0] - 1
        row_of = _rows_of(self.offsets)
        drop = np.isin(row_of, rows) | np.isin(self.other, others)
        keep = ~drop
        counts = np.bincount(row_of[keep], minlength=n_rows)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return _Hist(self.col[keep], self.other[keep], self.weight[keep], offsets)

    def arrays(self, prefix: str) -> dict[str, np.ndarray[Any, Any]]:
        return {
            f"{prefix}col": self.col,
            f"{prefix}other": self.other,
            f"{prefix}weight": self.weight,
            f"{prefix}offsets": self.offsets,
        }

    @staticmethod
    def names(prefix: str) -> tuple[str, ...]:
        return tuple(prefix + n for n in ("col", "other", "weight", "offsets"))

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any], prefix: str) -> _Hist:
        return cls(
            arrays[f"{prefix}col"].astype(np.int64),
            arrays[f"{prefix}other"].astype(np.int64),
            arrays[f"{prefix}weight"].astype(np.float64),
            arrays[f"{prefix}offsets"].astype(np.int64),
        )


@dataclass
class _RatingPhase:
    """Ratings of one phase of ``fit`` (with validation ratings for the holdout run)."""

    model: HybridRating
    user: IntArray
    item: IntArray
    value: FloatArray
    mu: float
    user_hist: _Hist
    item_hist: _Hist
    user_ids: IntArray  # id column of each user row in this phase
    item_ids: IntArray
    val: tuple[IntArray, IntArray, FloatArray] | None = None

    @property
    def size(self) -> int:
        return int(self.user.shape[0])

    def batches(self, rng: np.random.Generator, size: int) -> list[IntArray]:
        order = rng.permutation(self.size)
        return [order[i : i + size] for i in range(0, self.size, size)]

    def loss(
        self,
        net: HybridNet,
        batch: IntArray,
        rng: np.random.Generator,
        part: IntArray | None = None,
    ) -> torch.Tensor:
        import torch

        u, i = self.user[batch], self.item[batch]
        users = self._side_inputs(True, u, i, rng, part)
        items = self._side_inputs(False, i, u, rng, part)
        if part is not None and not part.size:
            return torch.zeros(())

        def mean(t: torch.Tensor) -> torch.Tensor:  # a part's share of the batch's mean
            return t.mean() if part is None else t.sum() / batch.shape[0]

        zu, zi = net.rating_side(True, *users), net.rating_side(False, *items)
        pred = self.mu + _net().pair_scores(zu, zi)
        value = self.value[batch] if part is None else self.value[batch[part]]
        target = torch.from_numpy(value.astype(np.float32))
        loss: torch.Tensor = mean((pred - target) ** 2)
        if self.model.l2 > 0:
            loss = loss + self.model.l2 * mean((zu**2).sum(1) + (zi**2).sum(1))
        return loss

    def _side_inputs(
        self,
        users: bool,
        rows: IntArray,
        others: IntArray,
        rng: np.random.Generator,
        part: IntArray | None,
    ) -> tuple[Any, ...]:
        """``HybridNet.rating_side``'s inputs (after ``users``) for the training pairs'
        users (or items): each pair's own rating is left out of the behaviour, ids and
        behaviour entries are dropped at random (drawn for all pairs); with ``part``,
        only those pairs'."""
        m = self.model
        hist = self.user_hist if users else self.item_hist
        static = m.user_static_ if users else m.item_static_
        unknown = m.n_user_ids_ if users else m.n_items_
        unique, inverse = np.unique(rows, return_inverse=True)
        offset = m._beh_offset(users)
        beh, total, kept = hist.bag(unique, offset, drop=m.edge_dropout, rng=rng)
        pos = hist.find(rows, others)
        found = pos >= 0
        own = np.where(found, pos, 0)
        out_weight = np.where(found, hist.weight[own], 0.0)
        if kept is not None:
            out_weight = np.where(kept[own], out_weight, 0.0)
        ids = m._drop_ids((self.user_ids if users else self.item_ids)[rows], unknown, rng)
        inverse, out_col = inverse.reshape(-1), hist.col[own] + offset
        if part is not None:
            inverse, ids, out_col, out_weight = (
                inverse[part],
                ids[part],
                out_col[part],
                out_weight[part],
            )
        return static.take(unique), beh, total, inverse, ids, out_col, out_weight

    def validate(self, nets: list[HybridNet]) -> float:
        """RMSE of the validation ratings (the members' mean prediction)."""
        assert self.val is not None
        m = self.model
        u, i, r = self.val
        zu = m._combine([m._all_rows(n, True, self.user_hist, self.user_ids) for n in nets], True)
        zi = m._combine([m._all_rows(n, False, self.item_hist, self.item_ids) for n in nets], False)
        pred = self.mu + (zu[u, :-1] * zi[i, :-1]).sum(1) + zu[u, -1] + zi[i, -1]
        pred = np.clip(pred, m.r_min_, m.r_max_)
        return float(np.sqrt(np.mean((pred - r) ** 2)))

    def better(self, a: float, b: float) -> bool:
        return a < b


class HybridRating(_Hybrid):
    """The hybrid model's rating head (Q1): ``r̂ = μ + b_u + b_i + <u, v>``.

    See the module docstring; ``edge_dropout`` is the share of behaviour entries dropped
    at each training step; ``l2`` penalizes the squared norm of both towers' outputs
    (factors and bias) per training rating, as biased MF penalizes its factors. The
    holdout takes ``holdout`` of the ratings from a random share ``holdout_users`` of the
    users (1: from everyone; less concentrates it, as
    test sets that hide much of some users' ratings do). ``predict`` clips to the
    training ratings' range; ``score`` gives the unclipped ``r̂`` of the context's user
    for each candidate (0 for unknown items). Learned state besides the shared one:
    ``mu_``, ``r_min_``, ``r_max_``, ``levels_`` (the rating values of the behaviour
    levels), ``user_hist_`` and ``item_hist_`` (the behaviour of every row).
    """

    name: ClassVar[str] = "hybrid_rating"
    _extra_params: ClassVar[tuple[str, ...]] = ("edge_dropout", "holdout_users", "l2")
    _extra_arrays: ClassVar[tuple[str, ...]] = (
        "levels",
        *_Hist.names("user_hist_"),
        *_Hist.names("item_hist_"),
    )

    mu_: float
    r_min_: float
    r_max_: float
    levels_: FloatArray
    user_hist_: _Hist
    item_hist_: _Hist

    def __init__(
        self,
        *,
        edge_dropout: float = 0.2,
        holdout_users: float = 1.0,
        l2: float = 0.0,
        dim: int = 48,
        hidden: int = 128,
        layers: int = 1,
        dropout: float = 0.5,
        id_dropout: float = 0.1,
        init_std: float = 0.01,
        lr: float = 2e-3,
        lr_decay: float = 1.0,
        ema: float = 0.0,
        weight_decay: float = 1e-4,
        batch_size: int = 2048,
        epochs: int = 40,
        patience: int = 3,
        ensemble: int = 1,
        holdout: float = 0.05,
        refit: bool = True,
        min_token_count: int = 1,
        text_terms: int = 2000,
        seed: int = 0,
        threads: int = 2,
        side: SideFeatures | None = None,
        item_tokens: Mapping[str, Sequence[str]] | None = None,
        user_tokens: Mapping[str, Sequence[str]] | None = None,
        dp: DPConfig | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            dim=dim,
            hidden=hidden,
            layers=layers,
            dropout=dropout,
            id_dropout=id_dropout,
            init_std=init_std,
            lr=lr,
            lr_decay=lr_decay,
            ema=ema,
            weight_decay=weight_decay,
            batch_size=batch_size,
            epochs=epochs,
            patience=patience,
            ensemble=ensemble,
            holdout=holdout,
            refit=refit,
            min_token_count=min_token_count,
            text_terms=text_terms,
            seed=seed,
            threads=threads,
            side=side,
            item_tokens=item_tokens,
            user_tokens=user_tokens,
            dp=dp,
        )
        if not 0 <= edge_dropout < 1:
            raise ConfigError(f"edge_dropout must be in [0, 1), got {edge_dropout}")
        if not 0 < holdout_users <= 1:
            raise ConfigError(f"holdout_users must be in (0, 1], got {holdout_users}")
        if l2 < 0:
            raise ConfigError(f"l2 must be >= 0, got {l2}")
        self.edge_dropout = edge_dropout
        self.holdout_users = holdout_users
        self.l2 = l2

    def fit(
        self,
        data: Interactions,
        *,
        side: SideFeatures | None = None,
        progress: Progress | None = None,
    ) -> Self:
        """Fit on the explicit ratings of ``data`` (``rate`` events with a value); with
        ``dp`` set, with DP-SGD (``shopcast.privacy.dp_hybrid``)."""
        if self.dp is not None:
            from shopcast.privacy.dp_hybrid import fit_private_rating

            fit_private_rating(self, data, side=side, progress=progress)
            return self
        t0 = time.perf_counter()
        user, item, level, value = self._setup(data, side)
        n_users = n_users_of(data)
        holdout = None
        if self.holdout > 0 and value.shape[0] >= 20:
            rng = np.random.default_rng(self.seed)
            share = min(self.holdout / self.holdout_users, 1.0)
            chosen = rng.random(n_users) < self.holdout_users
            is_val = chosen[user] & (rng.random(value.shape[0]) < share)
            fit = ~is_val
            holdout = self._phase(user[fit], item[fit], level[fit], value[fit])
            holdout.val = (user[is_val], item[is_val], value[is_val])
        final = self._phase(user, item, level, value)
        self.user_hist_, self.item_hist_, self.mu_ = final.user_hist, final.item_hist, final.mu
        self._train(holdout, final, progress, t0)
        return self

    def _setup(
        self, data: Interactions, side: SideFeatures | None, *, item_behaviour: bool = True
    ) -> tuple[IntArray, IntArray, IntArray, FloatArray]:
        """``(user, item, level, value)`` of the ratings; levels, encoders, bags and the
        rating range set. Without ``item_behaviour`` the item tower has no behaviour
        columns (the users who rated an item)."""
        user, item, value = explicit_ratings(data)
        self.levels_ = _levels(value)
        level = _level_of(value, self.levels_)
        n_levels = self.levels_.shape[0]
        n_users, n_items = n_users_of(data), n_items_of(data)
        n_beh_item = n_users * n_levels if item_behaviour else 0
        self._prepare(data, side, user, item, n_items * n_levels, n_beh_item)
        self.r_min_, self.r_max_ = float(value.min()), float(value.max())
        return user, item, level, value

    def _phase(
        self,
        user: IntArray,
        item: IntArray,
        level: IntArray,
        value: FloatArray,
        *,
        item_behaviour: bool = True,
    ) -> _RatingPhase:
        n_levels = self.levels_.shape[0]
        n_user_rows, n_item_rows = len(self.user_keys_), self.item_static_.rows
        ones = np.ones(user.shape[0])
        on = item_behaviour  # else an empty item behaviour
        return _RatingPhase(
            self,
            user,
            item,
            value,
            float(value.mean()),
            _Hist.build(user, item * n_levels + level, item, ones, self.n_user_ids_),
            _Hist.build(
                item[:0] if not on else item,
                (user * n_levels + level)[: None if on else 0],
                user[: None if on else 0],
                ones[: None if on else 0],
                self.n_items_,
            ),
            self._user_ids(np.bincount(user, minlength=n_user_rows) > 0),
            self._item_ids(np.bincount(item, minlength=n_item_rows) > 0),
        )

    def _all_rows(self, net: HybridNet, users: bool, hist: _Hist, ids: IntArray) -> FloatArray:
        """Tower outputs of every user (or item) row with the behaviour ``hist``."""
        static = self.user_static_ if users else self.item_static_
        n = static.rows
        out = np.zeros((n, self.dim + 1), dtype=np.float64)
        offset = self._beh_offset(users)
        with _net().inference():
            for lo in range(0, n, CHUNK):
                rows = np.arange(lo, min(lo + CHUNK, n))
                beh, total, _ = hist.bag(rows, offset)
                z = net.rating_side(
                    users,
                    static.take(rows),
                    beh,
                    total,
                    np.arange(rows.shape[0]),
                    ids[rows],
                    np.zeros(rows.shape[0], dtype=np.int64),
                    np.zeros(rows.shape[0]),
                )
                out[rows] = z.numpy().astype(np.float64)
        return out

    # -- inference ---------------------------------------------------------------------------

    def _refresh(self) -> None:
        user_ids = self._user_ids(self.user_trained_)
        item_ids = self._item_ids(self.item_trained_)
        members = self.nets_
        self.Zu_ = self._combine(
            [self._all_rows(n, True, self.user_hist_, user_ids) for n in members], True
        )
        self.Zi_ = self._combine(
            [self._all_rows(n, False, self.item_hist_, item_ids) for n in members], False
        )
        unknown = np.array([self.n_user_ids_])
        bag = FeatureBag(unknown, np.ones(1), np.array([0, 1]))
        self.z_unknown_ = self._member_rows(True, bag, unknown)[0]

    def _forget_rows(self, rows: IntArray) -> None:
        """The users' own ratings leave both sides' behaviour: their rows and the
        items' bags (items' cached tower outputs recomputed); their rows become the
        unknown user's."""
        self.user_hist_ = self.user_hist_.without(rows, np.empty(0, np.int64))
        self.item_hist_ = self.item_hist_.without(np.empty(0, np.int64), rows)
        self._refresh()

    def _user_rows(self, user: IntArray) -> FloatArray:
        u = np.asarray(user, dtype=np.int64)
        ok = (u >= 0) & (u < self.n_user_ids_)
        out = np.tile(self.z_unknown_, (u.shape[0], 1))
        out[ok] = self.Zu_[u[ok]]
        return out

    def predict(self, user: IntArray, item: IntArray) -> FloatArray:
        """Ratings of (user, item) index pairs, clipped to the training range; an
        unknown user is the unknown row, an unknown item adds nothing to ``μ + b_u``."""
        require_fitted(self, "nets_")
        zu = self._user_rows(user)
        rows = self._candidate_rows(np.asarray(item, dtype=np.int64))
        zi = np.zeros((rows.shape[0], self.Zi_.shape[1]))
        known = rows >= 0
        zi[known] = self.Zi_[rows[known]]
        pred = self.mu_ + (zu[:, :-1] * zi[:, :-1]).sum(1) + zu[:, -1] + zi[:, -1]
        return np.asarray(np.clip(pred, self.r_min_, self.r_max_), dtype=np.float64)

    def score(self, context: Context, candidates: IntArray) -> FloatArray:
        require_fitted(self, "nets_")
        row = self._subject_row(context)
        z = self.Zu_[row] if row >= 0 else self.z_unknown_
        rows = self._candidate_rows(np.asarray(candidates, dtype=np.int64))
        out = np.zeros(rows.shape[0], dtype=np.float64)
        ok = rows >= 0
        unique, inverse = np.unique(rows[ok], return_inverse=True)
        zi = self.Zi_[unique]
        values = self.mu_ + (zi[:, :-1] * z[:-1]).sum(1) + z[-1] + zi[:, -1]
        out[ok] = values[inverse.reshape(-1)]
        return out

    def score_all(self, contexts: Sequence[Context]) -> FloatArray:
        require_fitted(self, "nets_")
        everything = np.arange(self.n_items_, dtype=np.int64)
        if not contexts:
            return np.empty((0, self.n_items_), dtype=np.float64)
        return np.stack([self.score(c, everything) for c in contexts])

    # -- persistence -------------------------------------------------------------------------

    def _extra_state(self) -> dict[str, Any]:
        return {"mu": self.mu_, "r_min": self.r_min_, "r_max": self.r_max_}

    def _extra_arrays_out(self) -> dict[str, np.ndarray[Any, Any]]:
        return (
            {"levels": self.levels_}
            | self.user_hist_.arrays("user_hist_")
            | self.item_hist_.arrays("item_hist_")
        )

    def _restore_extra(self, state: Mapping[str, Any], arrays: Mapping[str, Any]) -> None:
        self.mu_ = float(state["mu"])
        self.r_min_, self.r_max_ = float(state["r_min"]), float(state["r_max"])
        self.levels_ = arrays["levels"].astype(np.float64)
        self.user_hist_ = _Hist.from_arrays(arrays, "user_hist_")
        self.item_hist_ = _Hist.from_arrays(arrays, "item_hist_")


def _levels(value: FloatArray) -> FloatArray:
    """Behaviour levels: the distinct rating values, or quintile edges when many."""
    distinct = np.unique(value)
    if distinct.shape[0] <= MAX_LEVELS:
        return distinct.astype(np.float64)
    return np.unique(np.quantile(value, np.linspace(0.0, 1.0, 6)[1:-1])).astype(np.float64)


def _level_of(value: FloatArray, levels: FloatArray) -> IntArray:
    """Level index of each rating (exact values, else the quintile bin)."""
    if np.isin(value, levels).all():
        return np.searchsorted(levels, value).astype(np.int64)
    return np.searchsorted(levels, value, side="right").astype(np.int64)


# =====================================================================================
# Ranking head
# =====================================================================================


@dataclass
class _Events:
    """Weighted events sorted by (subject, time, item), CSR by subject."""

    subject: IntArray
    item: IntArray
    ts: FloatArray
    weight: FloatArray
    offsets: IntArray

    @classmethod
    def of(cls, data: Interactions, weights: FloatArray, n_subjects: int) -> _Events:
        w = weights[data.type]
        keep = w > 0
        subj, item, ts, w = data.user[keep], data.item[keep], data.ts[keep], w[keep]
        order = np.lexsort((item, ts, subj))
        counts = np.bincount(subj, minlength=n_subjects)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(subj[order], item[order], ts[order], w[order], offsets)

    def first_seen(self) -> FloatArray:
        """For each event, the first time its subject had its item."""
        key = self.subject * (int(self.item.max(initial=0)) + 1) + self.item
        order = np.lexsort((self.ts, key))
        ordered = key[order]
        first = np.ones(order.shape[0], dtype=np.bool_)
        first[1:] = ordered[1:] != ordered[:-1]
        group = np.cumsum(first) - 1
        out = np.empty_like(self.ts)
        out[order] = self.ts[order][first][group]
        return out

    def until(self, positions: IntArray, times: FloatArray) -> IntArray:
        """For events at ``positions``, the position of their subject's first event at or
        after ``times`` (events of one subject are sorted by time)."""
        if not self.ts.size:
            return positions.copy()
        t0 = float(self.ts.min())
        span = float(self.ts.max()) - t0 + 1.0
        keys = self.subject * span + (self.ts - t0)
        want = self.subject[positions] * span + np.clip(times - t0, 0.0, span - 0.5)
        return np.searchsorted(keys, want, side="left").astype(np.int64)

    def before(self, subjects: IntArray, cut: float) -> IntArray:
        """Per subject, the position of its first event at or after ``cut``."""
        early = np.bincount(self.subject[self.ts < cut], minlength=self.offsets.shape[0] - 1)
        return (self.offsets[subjects] + early[subjects]).astype(np.int64)


@dataclass
class _RankPhase:
    """Baskets of one phase of ``fit``: rows of (subject, time) and their target items."""

    model: HybridRanker
    events: _Events
    subject: IntArray  # per row
    start: IntArray  # behaviour: events[start:end] of the row's subject
    end: IntArray
    now: FloatArray
    row_weight: FloatArray
    target_item: IntArray  # CSR by target_offsets
    target_offsets: IntArray
    user_ids: IntArray  # id column of each user row in this phase
    item_ids: IntArray
    log_q: FloatArray  # log frequency of each item as a target (smoothed)
    val: _RankPhase | None = None

    @property
    def size(self) -> int:
        return int(self.subject.shape[0])

    @classmethod
    def build(cls, model: HybridRanker, ev: _Events, cut: float) -> _RankPhase:
        """Training baskets before ``cut``, and validation rows from ``cut`` when finite."""
        n = ev.item.shape[0]
        before = ev.ts < cut
        new_group = np.ones(n, dtype=np.bool_)
        new_group[1:] = (ev.subject[1:] != ev.subject[:-1]) | (ev.ts[1:] != ev.ts[:-1])
        group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
        first_seen = ev.first_seen()
        is_target = before.copy()
        if model.new_items_only:
            is_target &= first_seen >= ev.ts
        repeat = np.zeros(n, dtype=np.bool_)
        repeat[1:] = (group_start[1:] == group_start[:-1]) & (ev.item[1:] == ev.item[:-1])
        is_target &= ~repeat
        t_pos = np.flatnonzero(is_target)
        groups, t_group = np.unique(group_start[t_pos], return_inverse=True)
        counts = np.bincount(t_group.reshape(-1), minlength=groups.shape[0])
        target_item = ev.item[t_pos]
        if model.horizon_days is not None:  # targets: everything new until the horizon
            groups = np.flatnonzero(new_group & before)
            until = np.minimum(ev.ts[groups] + model.horizon_days * SECONDS_PER_DAY, cut)
            pos, offsets = _ranges(groups, ev.until(groups, until))
            keep = is_target[pos]
            rows = _rows_of(offsets)[keep]
            target_item = ev.item[pos[keep]]
            if not model.new_items_only:  # each item once per row
                key = np.unique(rows * (model.n_items_ + 1) + target_item)
                rows, target_item = key // (model.n_items_ + 1), key % (model.n_items_ + 1)
            counts = np.bincount(rows, minlength=groups.shape[0])
            groups, counts = groups[counts > 0], counts[counts > 0]
        subject = ev.subject[groups]
        now = ev.ts[groups]
        row_weight = np.ones(groups.shape[0])
        if model.recency_half_life_days is not None and groups.size:
            age = float(now.max()) - now
            row_weight = np.exp2(-age / (model.recency_half_life_days * SECONDS_PER_DAY))
        n_user_rows, n_item_rows = len(model.user_keys_), model.item_static_.rows
        freq = np.bincount(ev.item[t_pos], minlength=model.n_items_)[: model.n_items_]
        q = (freq + 1.0) / (freq.sum() + model.n_items_)
        phase = cls(
            model,
            ev,
            subject,
            np.maximum(ev.offsets[subject], groups - model.max_history),
            groups,
            now,
            row_weight,
            target_item,
            np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            model._user_ids(np.bincount(ev.subject[before], minlength=n_user_rows) > 0),
            model._item_ids(np.bincount(ev.item[before], minlength=n_item_rows) > 0),
            np.log(q),
        )
        if math.isfinite(cut):
            phase.val = phase._validation(cut, first_seen)
        return phase

    def _validation(self, cut: float, first_seen: FloatArray) -> _RankPhase | None:
        """Subjects active before ``cut``; targets: their items from ``cut`` on (new
        ones only with ``new_items_only``); behaviour: everything before ``cut``."""
        m, ev = self.model, self.events
        is_target = ev.ts >= cut
        if m.new_items_only:
            is_target &= first_seen >= cut
        active = np.bincount(ev.subject[ev.ts < cut], minlength=ev.offsets.shape[0] - 1) > 0
        is_target &= active[ev.subject]
        pos = np.flatnonzero(is_target)
        if not pos.size:
            return None
        subjects = np.unique(ev.subject[pos])
        if subjects.shape[0] > m.val_users:
            rng = np.random.default_rng(m.seed)
            subjects = np.sort(rng.choice(subjects, m.val_users, replace=False))
            pos = pos[np.isin(ev.subject[pos], subjects)]
        width = m.n_items_ + 1
        pairs = np.unique(ev.subject[pos] * width + ev.item[pos])
        t_subject, t_item = pairs // width, pairs % width
        counts = np.bincount(np.searchsorted(subjects, t_subject), minlength=subjects.shape[0])
        end = ev.before(subjects, cut)
        return _RankPhase(
            m,
            ev,
            subjects,
            np.maximum(ev.offsets[subjects], end - m.max_history),
            end,
            np.full(subjects.shape[0], cut),
            np.ones(subjects.shape[0]),
            t_item.astype(np.int64),
            np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            self.user_ids,
            self.item_ids,
            self.log_q,
        )

    def batches(self, rng: np.random.Generator, size: int) -> list[IntArray]:
        order = rng.permutation(self.size)
        return [order[i : i + size] for i in range(0, self.size, size)]

    def user_bag(
        self, rows: IntArray, rng: np.random.Generator | None
    ) -> tuple[FeatureBag, IntArray]:
        m, ev = self.model, self.events
        subject = self.subject[rows]
        pos, offsets = _ranges(self.start[rows], self.end[rows])
        if rng is not None and m.edge_dropout > 0:
            keep = rng.random(pos.shape[0]) >= m.edge_dropout
            counts = np.bincount(_rows_of(offsets)[keep], minlength=rows.shape[0])
            pos, offsets = pos[keep], np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        beh = m._history_bag(ev.item[pos], ev.weight[pos], ev.ts[pos], offsets, self.now[rows])
        ids = self.user_ids[subject]
        if rng is not None:
            ids = m._drop_ids(ids, m.n_user_ids_, rng)
        return m._with_ids(m.user_static_, subject, ids).join(beh), ids

    def history_mask(self, rows: IntArray, column_of: IntArray) -> tuple[IntArray, IntArray]:
        """``(row, column)`` of every candidate already in a row's (whole) history."""
        if not self.model.new_items_only:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        pos, offsets = _ranges(self.events.offsets[self.subject[rows]], self.end[rows])
        col = column_of[self.events.item[pos]]
        ok = col >= 0
        return _rows_of(offsets)[ok], col[ok]

    def loss(
        self,
        net: HybridNet,
        batch: IntArray,
        rng: np.random.Generator,
        part: IntArray | None = None,
    ) -> torch.Tensor:
        """With ``part`` (data parallel) the candidates (the global batch's positives
        plus the sampled negatives) and every random draw are the whole batch's; only
        the user tower and the targets are the part's."""
        import torch

        m = self.model
        bag, ids = self.user_bag(batch, rng)
        rows = batch
        if part is not None:
            bag, ids, rows = bag.take(part), ids[part], batch[part]
        zu = net.users(bag, ids) if rows.size else None
        t_pos, t_off = _ranges(self.target_offsets[batch], self.target_offsets[batch + 1])
        t_item = self.target_item[t_pos]
        n = m.n_items_
        log_q: FloatArray | None = None
        if 0 < m.negatives < n:
            q = np.exp(self.log_q)
            drawn = rng.choice(n, m.negatives, p=q / q.sum())
            cands = np.unique(np.concatenate([t_item, drawn]))
            log_q = self.log_q[cands]
        else:
            cands = np.arange(n)
        column_of = np.full(n, -1, dtype=np.int64)
        column_of[cands] = np.arange(cands.shape[0])
        c_ids = m._drop_ids(self.item_ids[cands], n, rng)
        if zu is None:  # no row of this rank in the batch
            return torch.zeros(())
        zc = net.items(m._with_ids(m.item_static_, cands, c_ids), c_ids)
        logits = _net().all_logits(zu, zc)
        if log_q is not None:
            logits = logits - torch.from_numpy(log_q.astype(np.float32))[None, :]
        if part is not None:  # the part's targets
            t_pos, t_off = _ranges(self.target_offsets[rows], self.target_offsets[rows + 1])
            t_item = self.target_item[t_pos]
        t_row = _rows_of(t_off)
        mask_r, mask_c = self.history_mask(rows, column_of)
        if mask_r.size:
            logits = logits.index_put(
                (torch.from_numpy(mask_r), torch.from_numpy(mask_c)), torch.tensor(-math.inf)
            )
        logp = torch.log_softmax(logits, dim=1)
        picked = logp[torch.from_numpy(t_row), torch.from_numpy(column_of[t_item])]
        sizes = np.diff(t_off).astype(np.float64)
        w = self.row_weight[rows]
        per_target = torch.from_numpy((w[t_row] / sizes[t_row]).astype(np.float32))
        return -(picked * per_target).sum() / float(self.row_weight[batch].sum())

    def validate(self, nets: list[HybridNet]) -> float:
        """NDCG@10 of the validation rows (the members' mean logits), history excluded."""
        val = self.val
        assert val is not None
        m = self.model
        rows_i = np.arange(m.n_items_)
        ids_i = self.item_ids[rows_i]
        items = m._with_ids(m.item_static_, rows_i, ids_i)
        zi = m._combine([m._tower_rows(n, False, items, ids_i) for n in nets], False)
        discounts = 1.0 / np.log2(np.arange(2, VAL_K + 2))
        total = 0.0
        for lo in range(0, val.size, CHUNK):
            rows = np.arange(lo, min(lo + CHUNK, val.size))
            bag, ids = val.user_bag(rows, None)
            zu = m._combine([m._tower_rows(n, True, bag, ids) for n in nets], True)
            logits = zu[:, :-1] @ zi[:, :-1].T + zi[:, -1][None, :]
            mask_r, mask_c = val.history_mask(rows, rows_i)
            logits[mask_r, mask_c] = -np.inf
            k = min(VAL_K, m.n_items_)
            top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
            order = np.lexsort((top, -np.take_along_axis(logits, top, axis=1)), axis=1)
            top = np.take_along_axis(top, order, axis=1)
            for r, row in enumerate(rows.tolist()):
                rel = val.target_item[val.target_offsets[row] : val.target_offsets[row + 1]]
                hits = np.isin(top[r], rel)
                ideal = discounts[: min(rel.shape[0], k)].sum()
                total += float((hits * discounts[:k]).sum() / ideal)
        return total / max(val.size, 1)

    def better(self, a: float, b: float) -> bool:
        return a > b


class HybridRanker(_Hybrid):
    """The hybrid model's ranking head (Q3): softmax over items of ``<u, v> + b_i``.

    Training rows are (subject, time) baskets: the events of one subject at one time (an
    order; a single view) with weight > 0 under ``event_weights``; the behaviour bag
    holds the subject's earlier events (the last ``max_history``), each weighing its
    event weight times ``2^(-age / half_life_days)``, divided by the square root of the
    bag's total. With ``new_items_only`` a basket keeps only items its subject never had
    before and the subject's earlier items are excluded from the softmax (the Q3
    protocol ranks only new items). ``negatives`` > 0 trains a sampled softmax over the
    batch's positives plus ``negatives`` items drawn by target frequency ``q``, logits
    corrected by ``-log q``; 0 (or a catalog no larger) uses the full softmax.
    ``recency_half_life_days`` weighs recent baskets more; ``horizon_days`` makes every
    (new) item of the next that many days a target of a basket, not only its own items;
    ``edge_dropout`` drops that share of the behaviour events at each step (denoising).
    The holdout is the last ``holdout`` share of the time span: subjects active before it
    and their (new) items in it, NDCG@10.

    ``score`` gives each candidate's softmax probability among the fitted items (0 for
    unknown items); a context's behaviour is its subject's fitted history plus its
    recent events newer than that (all of them for a subject unknown to the model).
    Learned state besides the shared one: the last ``max_history`` events of every
    subject (``hist_*_``).
    """

    name: ClassVar[str] = "hybrid"
    _extra_params: ClassVar[tuple[str, ...]] = (
        "negatives",
        "edge_dropout",
        "max_history",
        "half_life_days",
        "recency_half_life_days",
        "horizon_days",
        "new_items_only",
        "event_weights",
        "val_users",
    )
    _extra_arrays: ClassVar[tuple[str, ...]] = (
        "hist_item",
        "hist_weight",
        "hist_ts",
        "hist_offsets",
    )

    hist_item_: IntArray
    hist_weight_: FloatArray
    hist_ts_: FloatArray
    hist_offsets_: IntArray

    def __init__(
        self,
        *,
        negatives: int = 0,
        edge_dropout: float = 0.0,
        max_history: int = 200,
        half_life_days: float | None = 90.0,
        recency_half_life_days: float | None = None,
        horizon_days: float | None = None,
        new_items_only: bool = True,
        event_weights: Mapping[str, float] | None = None,
        val_users: int = 5000,
        dim: int = 48,
        hidden: int = 128,
        layers: int = 1,
        dropout: float = 0.2,
        id_dropout: float = 0.1,
        init_std: float = 0.01,
        lr: float = 2e-3,
        lr_decay: float = 1.0,
        ema: float = 0.0,
        weight_decay: float = 1e-4,
        batch_size: int = 256,
        epochs: int = 40,
        patience: int = 3,
        ensemble: int = 1,
        holdout: float = 0.1,
        refit: bool = True,
        min_token_count: int = 1,
        text_terms: int = 2000,
        seed: int = 0,
        threads: int = 2,
        side: SideFeatures | None = None,
        item_tokens: Mapping[str, Sequence[str]] | None = None,
        user_tokens: Mapping[str, Sequence[str]] | None = None,
        dp: DPConfig | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            dim=dim,
            hidden=hidden,
            layers=layers,
            dropout=dropout,
            id_dropout=id_dropout,
            init_std=init_std,
            lr=lr,
            lr_decay=lr_decay,
            ema=ema,
            weight_decay=weight_decay,
            batch_size=batch_size,
            epochs=epochs,
            patience=patience,
            ensemble=ensemble,
            holdout=holdout,
            refit=refit,
            min_token_count=min_token_count,
            text_terms=text_terms,
            seed=seed,
            threads=threads,
            side=side,
            item_tokens=item_tokens,
            user_tokens=user_tokens,
            dp=dp,
        )
        if negatives < 0:
            raise ConfigError(f"negatives must be >= 0, got {negatives}")
        if not 0 <= edge_dropout < 1:
            raise ConfigError(f"edge_dropout must be in [0, 1), got {edge_dropout}")
        self.edge_dropout = edge_dropout
        if max_history < 1 or val_users < 1:
            raise ConfigError("max_history and val_users must be >= 1")
        for label, days in (
            ("half_life_days", half_life_days),
            ("recency_half_life_days", recency_half_life_days),
            ("horizon_days", horizon_days),
        ):
            if days is not None:
                check_positive(label, days)
        self.negatives = negatives
        self.max_history = max_history
        self.half_life_days = half_life_days
        self.recency_half_life_days = recency_half_life_days
        self.horizon_days = horizon_days
        self.new_items_only = new_items_only
        self.event_weights = resolve_event_weights(event_weights)
        self.val_users = val_users

    def fit(
        self,
        data: Interactions,
        *,
        side: SideFeatures | None = None,
        progress: Progress | None = None,
    ) -> Self:
        """Fit on the weighted events of ``data`` (see the class docstring); with ``dp``
        set, with DP-SGD (``shopcast.privacy.dp_hybrid``)."""
        if self.dp is not None:
            from shopcast.privacy.dp_hybrid import fit_private_ranker

            fit_private_ranker(self, data, side=side, progress=progress)
            return self
        t0 = time.perf_counter()
        ev = self._setup(data, side)
        holdout = None
        t_min, t_max = float(ev.ts.min()), float(ev.ts.max())
        if self.holdout > 0 and t_max > t_min:
            holdout = _RankPhase.build(self, ev, t_max - self.holdout * (t_max - t_min))
            if not holdout.size or holdout.val is None:
                holdout = None
        final = _RankPhase.build(self, ev, math.inf)
        if not final.size:
            raise ModelError("no baskets to learn from")
        self._train(holdout, final, progress, t0)
        return self

    def _setup(self, data: Interactions, side: SideFeatures | None) -> _Events:
        """The weighted events; encoders, bags and the stored histories set."""
        n_users = n_users_of(data)
        ev = _Events.of(data, weight_array(self.event_weights), n_users)
        if not ev.item.size:
            raise ModelError("no events with a positive weight to learn from")
        self._prepare(data, side, ev.subject, ev.item, n_items_of(data), 0)
        starts = np.maximum(ev.offsets[:-1], ev.offsets[1:] - self.max_history)
        pos, self.hist_offsets_ = _ranges(starts, ev.offsets[1:])
        self.hist_item_, self.hist_weight_, self.hist_ts_ = ev.item[pos], ev.weight[pos], ev.ts[pos]
        return ev

    def _forget_rows(self, rows: IntArray) -> None:
        """The users' histories (the behaviour part of their tower) are emptied."""
        n_hist = self.hist_offsets_.shape[0] - 1
        rows = rows[rows < n_hist]
        if not rows.size:
            return
        row_of = _rows_of(self.hist_offsets_)
        keep = ~np.isin(row_of, rows)
        counts = np.bincount(row_of[keep], minlength=n_hist)
        self.hist_offsets_ = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.hist_item_ = self.hist_item_[keep]
        self.hist_weight_ = self.hist_weight_[keep]
        self.hist_ts_ = self.hist_ts_[keep]

    def _history_bag(
        self, item: IntArray, weight: FloatArray, ts: FloatArray, offsets: IntArray, now: FloatArray
    ) -> FeatureBag:
        """Behaviour bags of concatenated per-row events (CSR by ``offsets``) at ``now``."""
        w = weight
        if self.half_life_days is not None:
            age = np.maximum(now[_rows_of(offsets)] - ts, 0.0)
            w = weight * np.exp2(-age / (self.half_life_days * SECONDS_PER_DAY))
        return FeatureBag(item + self._beh_offset(True), _normalized(w, offsets), offsets)

    # -- inference ---------------------------------------------------------------------------

    def _refresh(self) -> None:
        rows = np.arange(self.item_static_.rows)
        ids = self._item_ids(self.item_trained_)
        bag = self._with_ids(self.item_static_, rows, ids)
        self.Zi_ = self._member_rows(False, bag, ids)

    def _context_rows(self, contexts: Sequence[Context]) -> FloatArray:
        """User tower outputs of the contexts."""
        w_type = weight_array(self.event_weights)
        n_hist = self.hist_offsets_.shape[0] - 1
        rows = np.array([self._subject_row(c) for c in contexts], dtype=np.int64)
        items: list[IntArray] = []
        weights: list[FloatArray] = []
        stamps: list[FloatArray] = []
        for c, row in zip(contexts, rows.tolist(), strict=True):
            lo = hi = 0
            if 0 <= row < n_hist:
                lo, hi = int(self.hist_offsets_[row]), int(self.hist_offsets_[row + 1])
            it, wt, st = self.hist_item_[lo:hi], self.hist_weight_[lo:hi], self.hist_ts_[lo:hi]
            last = float(st.max()) if st.size else -math.inf
            recent = np.asarray(c.recent_items, dtype=np.int64)
            r_ts = np.asarray(c.recent_ts, dtype=np.float64)
            if r_ts.shape != recent.shape:
                r_ts = np.full(recent.shape, float(c.now))
            r_types = np.asarray(c.recent_types, dtype=np.int64)
            r_w = w_type[r_types] if r_types.shape == recent.shape else np.ones(recent.shape)
            new = (r_ts > last) & (recent >= 0) & (recent < self.n_items_) & (r_w > 0)
            items.append(np.concatenate([it, recent[new]])[-self.max_history :])
            weights.append(np.concatenate([wt, r_w[new]])[-self.max_history :])
            stamps.append(np.concatenate([st, r_ts[new]])[-self.max_history :])
        lengths = np.array([a.shape[0] for a in items], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        now = np.array([float(c.now) for c in contexts], dtype=np.float64)
        beh = self._history_bag(
            np.concatenate(items), np.concatenate(weights), np.concatenate(stamps), offsets, now
        )
        trained = np.zeros(rows.shape[0], dtype=np.bool_)
        ok = rows >= 0
        trained[ok] = self.user_trained_[rows[ok]]
        ids = np.where(trained & (rows < self.n_user_ids_), rows, self.n_user_ids_)
        bag = self._with_ids(self.user_static_, rows, ids).join(beh)
        return self._member_rows(True, bag, ids)

    def query_vectors(self, contexts: Sequence[Context]) -> FloatArray:
        """Vectors whose inner product with ``item_vectors()`` rows are the items' logits
        (for maximum-inner-product search in an ANN index)."""
        require_fitted(self, "nets_")
        zu = self._context_rows(contexts)
        return np.hstack([zu[:, :-1], np.ones((zu.shape[0], 1))]).astype(np.float64)

    def item_vectors(self) -> FloatArray:
        """One row per fitted item: the item tower output with the item bias last."""
        require_fitted(self, "nets_")
        return np.ascontiguousarray(self.Zi_[: self.n_items_], dtype=np.float64)

    def _log_probs(self, zu: FloatArray, rows: IntArray | None = None) -> FloatArray:
        """Log softmax over the fitted items of each user row ``zu``; with ``rows``, the
        log probabilities of those item rows (any row, same normalizer) instead."""
        zi = self.Zi_[: self.n_items_]
        logits = zu[:, :-1] @ zi[:, :-1].T + zi[:, -1][None, :]
        top = logits.max(axis=1, keepdims=True)
        norm = top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
        if rows is not None:
            zr = self.Zi_[rows]
            logits = zu[:, :-1] @ zr[:, :-1].T + zr[:, -1][None, :]
        return np.asarray(logits - norm, dtype=np.float64)

    def score(self, context: Context, candidates: IntArray) -> FloatArray:
        require_fitted(self, "nets_")
        cand = np.asarray(candidates, dtype=np.int64)
        out = np.zeros(cand.shape[0], dtype=np.float64)
        rows = self._candidate_rows(cand)
        ok = rows >= 0
        if ok.any():
            zu = self._context_rows([context])
            unique, inverse = np.unique(rows[ok], return_inverse=True)
            out[ok] = np.exp(self._log_probs(zu, unique)[0])[inverse.reshape(-1)]
        return out

    def score_all(self, contexts: Sequence[Context]) -> FloatArray:
        require_fitted(self, "nets_")
        if not contexts:
            return np.empty((0, self.n_items_), dtype=np.float64)
        parts = [
            np.exp(self._log_probs(self._context_rows(contexts[lo : lo + CHUNK])))
            for lo in range(0, len(contexts), CHUNK)
        ]
        return np.concatenate(parts)

    # -- persistence -------------------------------------------------------------------------

    def _extra_arrays_out(self) -> dict[str, np.ndarray[Any, Any]]:
        return {
            "hist_item": self.hist_item_,
            "hist_weight": self.hist_weight_,
            "hist_ts": self.hist_ts_,
            "hist_offsets": self.hist_offsets_,
        }

    def _restore_extra(self, state: Mapping[str, Any], arrays: Mapping[str, Any]) -> None:
        self.hist_item_ = arrays["hist_item"].astype(np.int64)
        self.hist_weight_ = arrays["hist_weight"].astype(np.float64)
        self.hist_ts_ = arrays["hist_ts"].astype(np.float64)
        self.hist_offsets_ = arrays["hist_offsets"].astype(np.int64)
