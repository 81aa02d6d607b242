"""SASRec: next-item prediction with causal self-attention over the shopper's sequence.

Each subject's (user or anonymous session) events, in time order and with weight > 0
under ``event_weights`` (impressions and searches are left out by default), form a
sequence of items; consecutive repeats of one item (view, cart, purchase) collapse
into one. A transformer reads the last ``max_len`` items and predicts the next one
with a softmax over every fitted item, trained with full cross-entropy at every
position (``loss="full"``) or a sampled softmax (``loss="sampled"``). An item's
embedding is its id embedding plus the mean embedding of its attributes (categories,
brand, … given as ``ItemAttributes``); the output layer is tied to it.

Validation: unless ``fit`` gets a ``validate`` callback, each subject with at least
three items holds out its last item; training stops after ``patience`` epochs without
a better NDCG@10 on those items (full ranking, the subject's earlier items excluded)
or when the next epoch would end past ``max_seconds`` (measured on ``clock``: ``"wall"``
time, or ``"cpu"`` seconds of the process, which a busy machine does not stretch), and
the best epoch is kept. With ``refit`` (the default) a
fresh network is then trained on every item, held-out ones included, for that many
epochs (bit-for-bit what ``holdout=False, epochs=best_epoch_, decay_epochs=epochs``
gives); ``max_seconds`` bounds both runs together. Options: ``lr_decay="linear"`` (to 0
at ``decay_epochs``, default ``epochs``) and ``ema`` (validate and keep an exponential
moving average of the weights, this decay per step).

Scores are next-item probabilities for ``context.recent_items`` (the live session:
only the context is read, not the subject's fitted history); an empty context gets
the item frequencies of the training sequences. Items not fitted score 0. With
``mask_seen`` the items a sequence already holds are left out of its softmax, in
training and in scoring (they score 0), as when recommendations exclude what the
shopper already has (Q2's protocol).

Not an ``OnlineLearner``: new events reach the model through the context at request
time; new items score 0 until the next ``fit``. Training is deterministic under
``seed`` (seeded torch RNG, deterministic algorithms, ``threads`` threads; one thread
when there are fewer than ``SMALL_DATA_TARGETS`` training targets).

Persistence: ``meta.json`` (hyperparameters, training report) and ``arrays.npz`` (one
float32 weight vector in ``state_dict`` order, the item → attribute table, the prior);
no pickle.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import resource
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np

from shopcast.errors import ConfigError, MissingDependencyError, ModelError
from shopcast.models._base import Context, FloatArray, IntArray, Interactions, Vocabulary
from shopcast.models._common import (
    check_positive,
    gather,
    load_model,
    require_fitted,
    resolve_event_weights,
    save_model,
    weight_array,
)
from shopcast.privacy.dp import DPConfig, DPReport

if TYPE_CHECKING:
    import torch

    from shopcast.models._sasrec_net import Net

#: Validation ranks the top 10.
VAL_K = 10
#: Sequences per forward pass when scoring.
SCORE_CHUNK = 512
#: Training batches drawn from one length-sorted run of shuffled rows.
BUCKET_BATCHES = 32
#: Below this many training targets one thread is faster than several.
SMALL_DATA_TARGETS = 20_000
_LOSSES = ("full", "sampled")
_LR_DECAYS = ("none", "linear")
_POSITIONS = ("start", "end")
_CLOCKS = ("wall", "cpu")


@dataclass(frozen=True, slots=True)
class ItemAttributes:
    """Attribute keys (category ids, brand, …) of items by external item id."""

    of: Mapping[str, Sequence[int | str]]

    @classmethod
    def from_items(cls, items: Iterable[Any], key: str = "attribute_ids") -> ItemAttributes:
        """From catalog ``Item`` records: ``attributes[key]``, else category and brand."""
        out: dict[str, list[int | str]] = {}
        for item in items:
            found = item.attributes.get(key)
            if found is None:
                found = [f"c:{c}" for c in item.category]
                found += [f"b:{item.brand}"] if item.brand else []
            out[item.item_id] = list(found)
        return cls(out)


@dataclass(frozen=True, slots=True)
class EpochReport:
    """One training epoch: mean loss, validation metric (NaN if none), seconds; ``refit``
    marks the epochs of the final fit on every item."""

    epoch: int
    loss: float
    val_ndcg: float
    seconds: float
    refit: bool = False


@dataclass(frozen=True, slots=True)
class _Rows:
    """Token rows (item index + 1) for training or validation."""

    inputs: list[IntArray]
    targets: list[IntArray]  # training: one per input token; validation: one per row
    exclude: list[IntArray]  # validation only: item indices excluded from the ranking


def _torch_net() -> Any:
    if importlib.util.find_spec("torch") is None:
        raise MissingDependencyError("torch", "deep")
    import shopcast.models._sasrec_net as net

    return net


class SASRec:
    """Self-attentive sequential recommender (Kang & McAuley 2018) with full-softmax
    cross-entropy and item attribute embeddings.

    Learned state: ``net_`` (torch module), ``n_items_``, ``prior_`` (item frequencies),
    ``attr_index_`` / ``attr_offsets_`` (item → attribute table), ``n_attributes_``,
    ``history_`` (per-epoch reports), ``best_epoch_``, ``best_val_``, ``fit_seconds_``
    (wall), ``fit_cpu_seconds_`` (CPU of the process), ``peak_rss_mb_``.
    """

    name: ClassVar[str] = "sasrec"
    #: ``shopcast.training.distributed.fit_distributed`` (``--ddp``) trains it.
    supports_data_parallel: ClassVar[bool] = True

    net_: Net
    n_items_: int
    prior_: FloatArray
    attr_index_: IntArray
    attr_offsets_: IntArray
    n_attributes_: int
    history_: list[EpochReport]
    best_epoch_: int
    best_val_: float
    fit_seconds_: float
    fit_cpu_seconds_: float
    peak_rss_mb_: float
    _net64: Net  # float64 copy of ``net_`` for scoring (batch-size independent results)
    _table64: torch.Tensor  # its item table, row 0 = padding

    def __init__(
        self,
        max_len: int = 50,
        hidden: int = 64,
        blocks: int = 2,
        heads: int = 1,
        ffn: int = 4,
        dropout: float = 0.5,
        attn_dropout: float = 0.5,
        lr: float = 1e-3,
        lr_decay: str = "none",
        decay_epochs: int | None = None,
        weight_decay: float = 0.0,
        ema: float = 0.0,
        batch_size: int = 128,
        epochs: int = 200,
        patience: int = 10,
        loss: str = "full",
        negatives: int = 1024,
        label_smoothing: float = 0.0,
        positions: str = "start",
        mask_seen: bool = False,
        holdout: bool = True,
        refit: bool = True,
        val_subjects: int | None = None,
        max_seconds: float | None = None,
        clock: str = "wall",
        event_weights: Mapping[str, float] | None = None,
        seed: int = 0,
        threads: int = 2,
        attributes: ItemAttributes | None = None,
        dp: DPConfig | Mapping[str, Any] | None = None,
    ) -> None:
        for label, value in (
            ("max_len", max_len),
            ("hidden", hidden),
            ("blocks", blocks),
            ("heads", heads),
            ("ffn", ffn),
            ("batch_size", batch_size),
            ("epochs", epochs),
            ("patience", patience),
            ("negatives", negatives),
            ("threads", threads),
        ):
            if value < 1:
                raise ConfigError(f"{label} must be >= 1, got {value}")
        if hidden % heads:
            raise ConfigError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
        for label, p in (
            ("dropout", dropout),
            ("attn_dropout", attn_dropout),
            ("label_smoothing", label_smoothing),
        ):
            if not 0 <= p < 1:
                raise ConfigError(f"{label} must be in [0, 1), got {p}")
        if mask_seen and (label_smoothing or loss != "full"):
            raise ConfigError("mask_seen needs loss='full' and no label_smoothing")
        if lr_decay not in _LR_DECAYS:
            raise ConfigError(f"lr_decay must be one of {', '.join(_LR_DECAYS)}, got {lr_decay!r}")
        if decay_epochs is not None and decay_epochs < 1:
            raise ConfigError(f"decay_epochs must be >= 1, got {decay_epochs}")
        if not 0 <= ema < 1:
            raise ConfigError(f"ema must be in [0, 1), got {ema}")
        if loss not in _LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(_LOSSES)}, got {loss!r}")
        if positions not in _POSITIONS:
            raise ConfigError(
                f"positions must be one of {', '.join(_POSITIONS)}, got {positions!r}"
            )
        if weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {weight_decay}")
        if val_subjects is not None and val_subjects < 1:
            raise ConfigError(f"val_subjects must be >= 1, got {val_subjects}")
        if max_seconds is not None:
            check_positive("max_seconds", max_seconds)
        if clock not in _CLOCKS:
            raise ConfigError(f"clock must be one of {', '.join(_CLOCKS)}, got {clock!r}")
        self.max_len = max_len
        self.hidden = hidden
        self.blocks = blocks
        self.heads = heads
        self.ffn = ffn
        self.dropout = dropout
        self.attn_dropout = attn_dropout
        self.lr = check_positive("lr", lr)
        self.weight_decay = weight_decay
        self.lr_decay = lr_decay
        self.decay_epochs = decay_epochs
        self.ema = ema
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.loss = loss
        self.negatives = negatives
        self.label_smoothing = label_smoothing
        self.positions = positions
        self.mask_seen = mask_seen
        self.holdout = holdout
        self.refit = refit
        self.val_subjects = val_subjects
        self.max_seconds = max_seconds
        self.clock = clock
        self.event_weights = resolve_event_weights(event_weights)
        self.seed = seed
        self.threads = threads
        self.attributes = attributes
        # Optional DP-SGD training (shopcast.privacy.dp); its report is ``dp_report_``.
        self.dp = DPConfig.from_json(dp) if isinstance(dp, Mapping) else dp
        self.dp_report_: DPReport | None = None

    def _params(self) -> dict[str, Any]:
        """Constructor arguments as JSON (``attributes`` are saved as learned state)."""
        return {
            "max_len": self.max_len,
            "hidden": self.hidden,
            "blocks": self.blocks,
            "heads": self.heads,
            "ffn": self.ffn,
            "dropout": self.dropout,
            "attn_dropout": self.attn_dropout,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "lr_decay": self.lr_decay,
            "decay_epochs": self.decay_epochs,
            "ema": self.ema,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "patience": self.patience,
            "loss": self.loss,
            "negatives": self.negatives,
            "label_smoothing": self.label_smoothing,
            "positions": self.positions,
            "mask_seen": self.mask_seen,
            "holdout": self.holdout,
            "refit": self.refit,
            "val_subjects": self.val_subjects,
            "max_seconds": self.max_seconds,
            "clock": self.clock,
            "event_weights": self.event_weights,
            "seed": self.seed,
            "threads": self.threads,
            "dp": None if self.dp is None else self.dp.to_json(),
        }

    # -- fitting ---------------------------------------------------------------------

    def fit(
        self,
        data: Interactions,
        *,
        attributes: ItemAttributes | None = None,
        validate: Callable[[SASRec], float] | None = None,
        progress: Callable[[EpochReport], None] | None = None,
    ) -> Self:
        """Train on ``data``'s sequences.

        ``attributes`` (else the constructor's) add attribute embeddings. ``validate``,
        called after each epoch with the model ready to score, returns the metric to
        maximize for early stopping (then nothing is held out). ``progress`` receives
        each epoch's report. With ``dp`` set, training is DP-SGD (``fit_private``).
        """
        if self.dp is not None:
            from shopcast.privacy.dp import fit_private

            fit_private(self, data, attributes=attributes, progress=progress)
            return self
        tnet = _torch_net()
        import torch

        t0, cpu0 = time.perf_counter(), time.process_time()
        budget0 = self._clock()
        n_items = max(len(data.items), int(data.item.max(initial=-1)) + 1)
        full = _sequences(data, weight_array(self.event_weights))
        seqs, val = full, None
        if validate is None and self.holdout:
            seqs, val = self._split_holdout(full)
        train = self._training_rows(seqs)
        if not train.inputs:
            raise ModelError("no subject has two or more items in a row to learn from")
        refit = self.refit and val is not None and bool(val.inputs)
        final = self._training_rows(full) if refit else train
        prior = np.bincount(np.concatenate(final.targets) - 1, minlength=n_items)
        self.prior_ = prior.astype(np.float64) / prior.sum()
        self.n_items_ = n_items
        chosen = attributes if attributes is not None else self.attributes
        self.attr_index_, self.attr_offsets_, self.n_attributes_ = _attribute_table(
            chosen, data.items, n_items
        )
        self.history_ = []
        self.best_epoch_, self.best_val_ = 0, math.nan
        n_targets = sum(t.shape[0] for t in train.targets)
        threads = self.threads if n_targets >= SMALL_DATA_TARGETS else 1
        with tnet.seeded(self.seed, threads):
            self._train(
                tnet, train, val, validate, progress, budget0, self.epochs, refit_next=refit
            )
            if refit:
                torch.manual_seed(self.seed)  # as a fresh fit without holdout would
                self._train(
                    tnet, final, None, None, progress, budget0, self.best_epoch_, is_refit=True
                )
            self._refresh()
        self.fit_seconds_ = time.perf_counter() - t0
        self.fit_cpu_seconds_ = time.process_time() - cpu0
        self.peak_rss_mb_ = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        return self

    def _train(
        self,
        tnet: Any,
        rows: _Rows,
        val: _Rows | None,
        validate: Callable[[SASRec], float] | None,
        progress: Callable[[EpochReport], None] | None,
        t0: float,
        epochs: int,
        *,
        is_refit: bool = False,
        refit_next: bool = False,
    ) -> None:
        """Train a fresh network on ``rows`` for up to ``epochs`` epochs, keeping the one
        with the best validation metric (``validate`` or NDCG@10 of ``val``) when there
        is one. ``refit_next`` keeps time for the refit under ``max_seconds``."""
        import torch

        rng = np.random.default_rng(self.seed)
        net = self._build(tnet)
        net.reset()
        # With ``ema`` the scored network is a moving average of the trained one.
        self.net_ = copy.deepcopy(net) if self.ema else net
        average: list[torch.Tensor] | None = list(self.net_.parameters()) if self.ema else None
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        best_state: dict[str, torch.Tensor] | None = None
        stale = 0
        train_seconds = 0.0
        for epoch in range(1, epochs + 1):
            start, clock_start = time.perf_counter(), self._clock()
            if self.lr_decay == "linear":  # the same horizon in the refit
                horizon = self.decay_epochs or self.epochs
                for group in opt.param_groups:
                    group["lr"] = self.lr * max(0.0, 1.0 - (epoch - 1) / horizon)
            loss = self._epoch(tnet, net, opt, rows, rng, average)
            train_seconds += self._clock() - clock_start
            self.net_.eval()
            metric = math.nan
            if validate is not None:
                self._refresh()
                metric = float(validate(self))
            elif val is not None and val.inputs:
                metric = self._validate(tnet, val)
            report = EpochReport(epoch, loss, metric, time.perf_counter() - start, is_refit)
            self.history_.append(report)
            if progress is not None:
                progress(report)
            if is_refit:
                pass
            elif math.isnan(metric):
                self.best_epoch_ = epoch
            elif math.isnan(self.best_val_) or metric > self.best_val_:
                self.best_epoch_, self.best_val_, stale = epoch, metric, 0
                best_state = {k: v.detach().clone() for k, v in self.net_.state_dict().items()}
            else:
                stale += 1
            if stale >= self.patience:
                break
            if self.max_seconds is not None:
                # Stop unless one more epoch (as long as the last one, validation
                # included) and the refit (``best_epoch_`` training epochs) still fit.
                reserve = self.best_epoch_ * train_seconds / epoch if refit_next else 0.0
                last = self._clock() - clock_start
                if self._clock() - t0 + last + reserve > self.max_seconds:
                    break
        if best_state is not None:
            self.net_.load_state_dict(best_state)
        self.net_.eval()

    def _clock(self) -> float:
        """Seconds on the budget's clock (``clock``)."""
        return time.process_time() if self.clock == "cpu" else time.perf_counter()

    def _build(self, tnet: Any) -> Net:
        net: Net = tnet.Net(
            n_items=self.n_items_,
            n_attributes=self.n_attributes_,
            attr_index=self.attr_index_,
            attr_offsets=self.attr_offsets_,
            hidden=self.hidden,
            max_len=self.max_len,
            blocks=self.blocks,
            heads=self.heads,
            dropout=self.dropout,
            attn_dropout=self.attn_dropout,
            ffn=self.ffn,
        )
        return net

    def _split_holdout(self, seqs: list[IntArray]) -> tuple[list[IntArray], _Rows]:
        """Hold out the last item of every sequence of 3+ items (a sample of
        ``val_subjects`` of them when set)."""
        long = [i for i, s in enumerate(seqs) if s.shape[0] >= 3]
        if self.val_subjects is not None and len(long) > self.val_subjects:
            pick = np.random.default_rng(self.seed).choice(len(long), self.val_subjects, False)
            long = [long[i] for i in np.sort(pick).tolist()]
        rows = _Rows([], [], [])
        out = list(seqs)
        for i in long:
            s = seqs[i]
            out[i] = s[:-1]
            rows.inputs.append(s[:-1][-self.max_len :] + 1)
            rows.targets.append(s[-1:] + 1)
            rows.exclude.append(np.unique(s[:-1]))
        return out, rows

    def _training_rows(self, seqs: list[IntArray]) -> _Rows:
        """Each sequence of 2+ items: its last ``max_len + 1`` items as (input, next)."""
        rows = _Rows([], [], [])
        for s in seqs:
            if s.shape[0] >= 2:
                w = s[-(self.max_len + 1) :] + 1
                rows.inputs.append(w[:-1])
                rows.targets.append(w[1:])
        return rows

    def _epoch(
        self,
        tnet: Any,
        net: Net,
        opt: Any,
        rows: _Rows,
        rng: np.random.Generator,
        average: list[torch.Tensor] | None,
    ) -> float:
        """One pass over ``rows`` in a random order; the mean loss per target. After
        each step ``average`` (parameters of the moving average) moves toward ``net``'s."""
        import torch

        net.train()
        end = self.positions == "end"
        workspace = tnet.Workspace()
        total, count = 0.0, 0
        # Data parallel (shopcast.training.distributed): each rank takes a slice of every
        # batch; its loss is weighted by its share of the batch's targets and gradients
        # are summed across ranks, so every step is the single-process step.
        dist = getattr(self, "_data_parallel", None)
        for batch in _batches(rows, self.batch_size, rng):
            idx = batch if dist is None else batch[dist.rank :: dist.world]
            if dist is not None and not idx:
                opt.zero_grad(set_to_none=True)
                dist.sum_gradients(net)
                opt.step()
                continue
            tokens, positions = tnet.layout([rows.inputs[i] for i in idx], self.max_len, end)
            targets, _ = tnet.layout([rows.targets[i] for i in idx], self.max_len, end)
            table = net.item_table()
            h = net.encode(torch.from_numpy(tokens), torch.from_numpy(positions), table)
            y = torch.from_numpy(targets)
            keep = y > 0
            hs, ys = h[keep], y[keep]
            if self.loss == "full":
                masked = None
                if self.mask_seen:
                    flat, seen = tnet.seen_pairs(
                        [rows.inputs[i] for i in idx], [rows.targets[i] for i in idx]
                    )
                    masked = (torch.from_numpy(flat), torch.from_numpy(seen))
                loss = tnet.full_softmax_ce(
                    hs, table[1:], ys - 1, self.label_smoothing, workspace, masked
                )
            else:
                loss = tnet.sampled_softmax_loss(hs, ys, table, self.negatives)
            opt.zero_grad(set_to_none=True)
            if dist is None:
                loss.backward()
            else:
                share = int(ys.shape[0]) / sum(rows.targets[i].shape[0] for i in batch)
                (loss * share).backward()
                dist.sum_gradients(net)
            opt.step()
            if average is not None:
                with torch.no_grad():
                    torch._foreach_lerp_(average, list(net.parameters()), 1.0 - self.ema)
            n = int(ys.shape[0])
            total += float(loss.detach()) * n
            count += n
        return total / max(count, 1)

    def _validate(self, tnet: Any, rows: _Rows) -> float:
        """NDCG@10 of the held-out items, full ranking, earlier items excluded."""
        import torch

        end = self.positions == "end"
        gains: list[float] = []
        with torch.inference_mode():
            table = self.net_.item_table()
            for b in range(0, len(rows.inputs), SCORE_CHUNK):
                batch = rows.inputs[b : b + SCORE_CHUNK]
                logits = tnet.last_hidden(self.net_, batch, table, end) @ table[1:].T
                ex = rows.exclude[b : b + SCORE_CHUNK]
                ex_rows = np.repeat(np.arange(len(ex)), [e.shape[0] for e in ex])
                logits[torch.from_numpy(ex_rows), torch.from_numpy(np.concatenate(ex))] = -math.inf
                target = torch.as_tensor(
                    np.concatenate(rows.targets[b : b + SCORE_CHUNK]) - 1, dtype=torch.int64
                )
                mine = logits[torch.arange(len(batch)), target]
                rank = (logits > mine[:, None]).sum(dim=1).numpy()
                gains.extend(np.where(rank < VAL_K, 1.0 / np.log2(rank + 2.0), 0.0).tolist())
        return float(np.mean(gains))

    def _refresh(self) -> None:
        """Cache a float64 copy of the network and its item table for scoring.

        In float64 a context scores the same (to ~1e-12) in batches of any size.
        """
        import torch

        with torch.inference_mode():
            self._net64 = copy.deepcopy(self.net_).to(torch.float64).eval()
            self._table64 = self._net64.item_table().detach()

    # -- scoring ---------------------------------------------------------------------

    def score(self, context: Context, candidates: IntArray) -> FloatArray:
        require_fitted(self, "net_")
        return gather(self._probabilities([context])[0], candidates)

    def score_all(self, contexts: Sequence[Context]) -> FloatArray:
        """``(len(contexts), n_items_)`` next-item probabilities."""
        require_fitted(self, "net_")
        return self._probabilities(contexts)

    def _context_tokens(self, context: Context) -> IntArray:
        items = np.asarray(context.recent_items, dtype=np.int64)
        types = np.asarray(context.recent_types, dtype=np.int64)
        keep = (items >= 0) & (items < self.n_items_)
        if types.shape == items.shape:
            keep &= weight_array(self.event_weights)[types] > 0
        items = items[keep]
        if items.shape[0] > 1:
            items = items[np.concatenate([[True], items[1:] != items[:-1]])]
        return items[-self.max_len :] + 1

    def _probabilities(self, contexts: Sequence[Context]) -> FloatArray:
        import torch

        tnet = _torch_net()
        out = np.empty((len(contexts), self.n_items_), dtype=np.float64)
        rows = [self._context_tokens(c) for c in contexts]
        lengths = np.array([r.shape[0] for r in rows], dtype=np.int64)
        out[lengths == 0] = self.prior_
        # Equal lengths share a batch: no padding, so a row scores the same in any batch.
        order = np.flatnonzero(lengths > 0)
        order = order[np.argsort(lengths[order], kind="stable")]
        end = self.positions == "end"
        with torch.inference_mode():
            for n in np.unique(lengths[order]).tolist():
                same = order[lengths[order] == n]
                for b in range(0, same.shape[0], SCORE_CHUNK):
                    idx = same[b : b + SCORE_CHUNK]
                    h = tnet.last_hidden(self._net64, [rows[i] for i in idx], self._table64, end)
                    logits = h @ self._table64[1:].T
                    if self.mask_seen:
                        seen = np.stack([rows[i] for i in idx]) - 1
                        logits.scatter_(1, torch.from_numpy(seen), -math.inf)
                    probs = torch.softmax(logits, dim=1).nan_to_num(0.0)  # all seen: 0
                    out[idx] = probs.numpy()
        return out

    # -- persistence -----------------------------------------------------------------

    def save(self, path: Path) -> None:
        require_fitted(self, "net_")
        tnet = _torch_net()
        save_model(
            path,
            self,
            params=self._params(),
            state={
                "n_items": self.n_items_,
                "n_attributes": self.n_attributes_,
                "best_epoch": self.best_epoch_,
                "best_val": None if math.isnan(self.best_val_) else self.best_val_,
                "fit_seconds": self.fit_seconds_,
                "fit_cpu_seconds": getattr(self, "fit_cpu_seconds_", None),  # None: DP fit
                "peak_rss_mb": self.peak_rss_mb_,
                "dp": None if self.dp_report_ is None else self.dp_report_.to_json(),
                "history": [
                    {
                        k: (None if isinstance(v, float) and math.isnan(v) else v)
                        for k, v in asdict(r).items()
                    }
                    for r in self.history_
                ],
            },
            arrays={
                "weights": tnet.state_vector(self.net_),
                "prior": self.prior_,
                "attr_index": self.attr_index_,
                "attr_offsets": self.attr_offsets_,
            },
        )

    @classmethod
    def load(cls, path: Path, items: Vocabulary) -> Self:
        tnet = _torch_net()
        model, state, arrays = load_model(
            path, cls, items, ("weights", "prior", "attr_index", "attr_offsets")
        )
        try:
            model.n_items_ = int(state["n_items"])
            model.n_attributes_ = int(state["n_attributes"])
            model.best_epoch_ = int(state["best_epoch"])
            best = state["best_val"]
            model.best_val_ = math.nan if best is None else float(best)
            model.fit_seconds_ = float(state["fit_seconds"])
            cpu = state.get("fit_cpu_seconds")
            model.fit_cpu_seconds_ = math.nan if cpu is None else float(cpu)
            model.peak_rss_mb_ = float(state["peak_rss_mb"])
            dp = state.get("dp")
            model.dp_report_ = None if dp is None else DPReport.from_json(dp)
            model.history_ = [
                EpochReport(
                    int(r["epoch"]),
                    float(r["loss"]),
                    math.nan if r["val_ndcg"] is None else float(r["val_ndcg"]),
                    float(r["seconds"]),
                    bool(r["refit"]),
                )
                for r in state["history"]
            ]
            model.prior_ = arrays["prior"].astype(np.float64)
            model.attr_index_ = arrays["attr_index"].astype(np.int64)
            model.attr_offsets_ = arrays["attr_offsets"].astype(np.int64)
            net = model._build(tnet)
            tnet.load_state_vector(net, arrays["weights"].astype(np.float32))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelError(f"{path} has bad metadata: {exc}") from None
        net.eval()
        model.net_ = net
        model._refresh()
        return model


def _batches(rows: _Rows, size: int, rng: np.random.Generator) -> list[list[int]]:
    """Row indices in batches of ``size``: rows are shuffled, then sorted by length within
    runs of ``BUCKET_BATCHES`` batches (less padding), and the batches shuffled."""
    order = rng.permutation(len(rows.inputs))
    lengths = np.array([r.shape[0] for r in rows.inputs], dtype=np.int64)
    run = size * BUCKET_BATCHES
    batches: list[list[int]] = []
    for start in range(0, order.shape[0], run):
        chunk = order[start : start + run]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[b : b + size].tolist() for b in range(0, chunk.shape[0], size)]
    return [batches[i] for i in rng.permutation(len(batches)).tolist()]


def _sequences(data: Interactions, weights: FloatArray) -> list[IntArray]:
    """Each subject's items in time order (ties: input order), weight > 0 only,
    consecutive repeats collapsed; subjects without such events are left out."""
    keep = weights[data.type] > 0
    user, item, ts = data.user[keep], data.item[keep], data.ts[keep]
    order = np.lexsort((ts, user))  # stable
    user, item = user[order], item[order]
    if not user.shape[0]:
        return []
    fresh = np.concatenate([[True], (user[1:] != user[:-1]) | (item[1:] != item[:-1])])
    user, item = user[fresh], item[fresh]
    starts = np.flatnonzero(np.concatenate([[True], user[1:] != user[:-1]]))
    return [s.astype(np.int64) for s in np.split(item, starts[1:])]


def _attribute_table(
    attributes: ItemAttributes | None, items: Vocabulary, n_items: int
) -> tuple[IntArray, IntArray, int]:
    """``(index, offsets, n_attributes)``: attribute indices of item ``i`` are
    ``index[offsets[i]:offsets[i + 1]]`` (an ``embedding_bag`` layout); keys are
    numbered in order of first appearance over items by index."""
    offsets = np.zeros(n_items, dtype=np.int64)
    if attributes is None:
        return np.empty(0, np.int64), offsets, 0
    keys: dict[str, int] = {}
    index: list[int] = []
    ids = items.ids
    for i in range(n_items):
        offsets[i] = len(index)
        found = attributes.of.get(ids[i], ()) if i < len(ids) else ()
        for k in dict.fromkeys(str(a) for a in found):
            index.append(keys.setdefault(k, len(keys)))
    return np.asarray(index, dtype=np.int64), offsets, len(keys)
