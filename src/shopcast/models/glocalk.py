"""GLocal-K (Han et al., CIKM 2021): an item autoencoder with local and global kernels.

Each item's row of the rating matrix (one entry per user, 0 where unrated) goes through
``n_layers`` sigmoid layers of ``n_hidden`` units and a linear output layer back to one
value per user. Every weight matrix is reparameterized by a *local kernel*:
``W_eff = W ⊙ max(0, 1 - ‖u_a - v_b‖²)`` with learned ``kernel_dim``-dimensional vectors
``u`` (inputs) and ``v`` (outputs), which switches weights off (sparsifies) where the
two are far apart. Phase 1 (pre-training) fits the autoencoder on the rating matrix.
Phase 2 (fine-tuning) derives a ``conv_size`` × ``conv_size`` *global kernel* from the
pre-trained reconstruction (its per-item averages times a learned matrix), convolves the
rating matrix with it (ReLU) and fits the same autoencoder on that input. Loss: half the
squared error on observed ratings + ``reg_weights``/2 ‖W‖² + ``reg_kernel``/2 ‖kernel‖²;
full-batch L-BFGS, ``lbfgs_steps`` iterations per epoch.

Epochs: with ``holdout`` > 0, a seeded fraction of the training ratings is held out and
both phases run up to their caps (``pre_epochs``, ``fine_epochs``), each keeping the
epoch of the lowest held-out RMSE (stopping after ``holdout_patience`` epochs without a
new best; pre-training's best state is restored before fine-tuning, and 0 fine-tuning
epochs are kept when it never helps); the model is then refitted on all ratings for
exactly those epochs. With ``holdout`` 0 the phases run to their caps, or, with
``pre_tol`` / ``fine_tol`` > 0, until the training RMSE improved by less than that for
``patience`` epochs in a row (the rule of public PyTorch ports of the model; with
caps of 500 + 1000 it overfits on MovieLens 100K).

The fitted state is the effective weights, the global kernel and the training ratings;
predictions for every (item, user) are recomputed from them (numpy) after ``fit`` and
``load`` alike. Subjects without ratings get the item's average prediction; items
without ratings the mean rating. The model is dense in items × users: it is meant for
rating matrices of MovieLens size (``MAX_CELLS``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
from scipy.special import expit

from shopcast.errors import ConfigError, ModelError
from shopcast.models._base import Context, FloatArray, IntArray, Interactions, Vocabulary
from shopcast.models._common import (
    check_positive,
    gather,
    load_model,
    require_fitted,
    save_model,
)
from shopcast.models._data import SubjectIndex, explicit_ratings, n_items_of, n_users_of
from shopcast.models.blend import Blend

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: ``progress(epoch, max_epochs, train_rmse)`` after each epoch of either phase.
Progress = Callable[[int, int, float], None]

#: Largest items × users matrix the model accepts (dense float32 copies of it are held).
MAX_CELLS = 50_000_000

_F32 = np.float32

DEVICES = ("auto", "cpu", "cuda")

#: Components of ``blend_glk``: ``(registry name, hyperparameters)``.
BLEND_COMPONENTS: tuple[tuple[str, dict[str, Any]], ...] = (("glocal_k", {}), ("mf_bayes", {}))


class GLocalK:
    """Item autoencoder with local (RBF-like) and global (convolution) kernels.

    Defaults are the paper's MovieLens 100K settings (500 hidden units, at most one per
    user, 2 layers, kernel dimension 5, ``reg_weights`` 20, ``reg_kernel`` 0.006, 3 × 3
    global kernel, 5 L-BFGS iterations per epoch, 30 + 60 epochs at most). Unlike the
    paper's notebook, which reports the best *test* RMSE over fine-tuning epochs, the
    epoch counts are chosen on a holdout of the training ratings. ``device="auto"`` trains
    on a GPU when torch sees one.

    Learned state: ``weights_`` / ``biases_`` (effective, per layer), ``global_kernel_``,
    the training ratings, ``pred_`` (items × users, float32), ``mu_``, ``r_min_``,
    ``r_max_``, ``subjects_``, ``epochs_`` (pre-training, fine-tuning).
    """

    name: ClassVar[str] = "glocal_k"
    #: Benchmarks run it only when named (an hour a fit on a 2-core CPU).
    named_only: ClassVar[bool] = True
    _params: ClassVar[tuple[str, ...]] = (
        "n_hidden",
        "n_layers",
        "kernel_dim",
        "reg_weights",
        "reg_kernel",
        "conv_size",
        "dot_scale",
        "pre_epochs",
        "fine_epochs",
        "lbfgs_steps",
        "pre_tol",
        "fine_tol",
        "patience",
        "holdout",
        "holdout_patience",
        "device",
        "threads",
        "seed",
    )

    weights_: list[FloatArray]
    biases_: list[FloatArray]
    global_kernel_: FloatArray
    pred_: FloatArray
    mu_: float
    r_min_: float
    r_max_: float
    subjects_: SubjectIndex
    epochs_: tuple[int, int]

    def __init__(
        self,
        n_hidden: int = 500,
        n_layers: int = 2,
        kernel_dim: int = 5,
        reg_weights: float = 20.0,
        reg_kernel: float = 0.006,
        conv_size: int = 3,
        dot_scale: float = 1.0,
        pre_epochs: int = 30,
        fine_epochs: int = 60,
        lbfgs_steps: int = 5,
        pre_tol: float = 0.0,
        fine_tol: float = 0.0,
        patience: int = 5,
        holdout: float = 0.05,
        holdout_patience: int = 10,
        device: str = "auto",
        threads: int = 1,
        seed: int = 0,
        progress: Progress | None = None,
    ) -> None:
        for label, value in (
            ("n_hidden", n_hidden),
            ("n_layers", n_layers),
            ("kernel_dim", kernel_dim),
            ("lbfgs_steps", lbfgs_steps),
            ("patience", patience),
            ("holdout_patience", holdout_patience),
            ("threads", threads),
        ):
            if value < 1:
                raise ConfigError(f"{label} must be >= 1, got {value}")
        for label, value in (("pre_epochs", pre_epochs), ("fine_epochs", fine_epochs)):
            if value < 0:
                raise ConfigError(f"{label} must be >= 0, got {value}")
        if not 0 <= holdout < 1:
            raise ConfigError(f"holdout must be in [0, 1), got {holdout}")
        if device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        if conv_size < 1 or conv_size % 2 == 0:
            raise ConfigError(f"conv_size must be an odd number >= 1, got {conv_size}")
        for label, reg in (
            ("reg_weights", reg_weights),
            ("reg_kernel", reg_kernel),
            ("pre_tol", pre_tol),
            ("fine_tol", fine_tol),
        ):
            if not reg >= 0:
                raise ConfigError(f"{label} must be >= 0, got {reg}")
        self.n_hidden = n_hidden
        self.n_layers = n_layers
        self.kernel_dim = kernel_dim
        self.reg_weights = float(reg_weights)
        self.reg_kernel = float(reg_kernel)
        self.conv_size = conv_size
        self.dot_scale = check_positive("dot_scale", float(dot_scale))
        self.pre_epochs = pre_epochs
        self.fine_epochs = fine_epochs
        self.lbfgs_steps = lbfgs_steps
        self.pre_tol = float(pre_tol)
        self.fine_tol = float(fine_tol)
        self.patience = patience
        self.holdout = float(holdout)
        self.holdout_patience = holdout_patience
        self.device = device
        self.threads = threads
        self.seed = seed
        self.progress = progress

    # -- fitting -----------------------------------------------------------------------

    def fit(self, data: Interactions) -> Self:
        import torch

        user, item, r = explicit_ratings(data)
        n_users, n_items = n_users_of(data), n_items_of(data)
        if n_users * n_items > MAX_CELLS:
            raise ModelError(
                f"glocal_k holds a dense items x users matrix; {n_items:,} x {n_users:,} "
                f"exceeds {MAX_CELLS:,} cells"
            )
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' asked for, but torch sees no GPU")
        use_cuda = self.device != "cpu" and torch.cuda.is_available()
        dev = torch.device("cuda" if use_cuda else "cpu")
        self.mu_ = float(r.mean())
        self.r_min_, self.r_max_ = float(r.min()), float(r.max())
        self.subjects_ = SubjectIndex(data.users.ids[:n_users])
        self._ratings = (item.astype(np.int64), user.astype(np.int64), r.astype(_F32))
        self._shape = (n_items, n_users)
        rated = _Ratings(item, user, r)
        plan: tuple[int, int] | None = None  # fixed epoch counts, else the paper's rule
        held = np.random.default_rng(self.seed).random(r.shape[0]) < self.holdout
        if 0 < int(np.count_nonzero(held)) < r.shape[0]:
            with _seeded(self.seed, self.threads):
                _, plan = self._train(rated.subset(~held), rated.subset(held), None, dev)
            log.debug("%s: epochs chosen on the holdout %s", self.name, plan)
        with _seeded(self.seed, self.threads):
            net, done = self._train(rated, None, plan, dev)
            with torch.no_grad():
                weights, biases = net.effective()
                if done[1] > 0:
                    kernel = net.global_kernel(net.matrix(rated)).cpu().numpy()
                else:  # not fine-tuned: the identity kernel feeds the ratings unchanged
                    kernel = np.zeros((self.conv_size, self.conv_size))
                    kernel[self.conv_size // 2, self.conv_size // 2] = 1.0
        self.epochs_ = done
        self.weights_ = [w.detach().cpu().numpy().astype(_F32) for w in weights]
        self.biases_ = [b.detach().cpu().numpy().astype(_F32) for b in biases]
        self.global_kernel_ = np.asarray(kernel, dtype=_F32)
        self._predict_all()
        return self

    def _train(
        self,
        rated: _Ratings,
        monitor: _Ratings | None,
        plan: tuple[int, int] | None,
        dev: torch.device,
    ) -> tuple[_Net, tuple[int, int]]:
        """Both phases on ``rated``; returns the net and the epochs (pre, fine) to keep.

        With ``plan`` the phases run exactly that many epochs. Otherwise each runs up to
        its cap (or the tolerance rule); with ``monitor`` each keeps the epoch of the
        lowest RMSE on the monitored ratings (pre-training's best state is restored
        before fine-tuning; 0 fine-tuning epochs when it never helps) and stops after
        ``holdout_patience`` epochs without a new best.
        """
        net = _Net(self, *self._shape, dev)
        rating = net.matrix(rated)
        mask = (rating != 0).to(rating.dtype)
        pre_cap, fine_cap = plan if plan is not None else (self.pre_epochs, self.fine_epochs)
        pre = self._phase(net, rating, mask, False, pre_cap, plan is None, monitor, 0)
        fine = self._phase(net, rating, mask, True, fine_cap, plan is None, monitor, pre)
        return net, (pre, fine)

    def _phase(
        self,
        net: _Net,
        rating: torch.Tensor,
        mask: torch.Tensor,
        fine: bool,
        cap: int,
        by_rule: bool,
        monitor: _Ratings | None,
        offset: int,
    ) -> int:
        """Run one phase for up to ``cap`` epochs; returns the epochs to keep."""
        import torch

        tol = self.fine_tol if fine else self.pre_tol
        total = self.pre_epochs + self.fine_epochs
        params = net.params + ([net.conv] if fine else [])
        opt = torch.optim.LBFGS(
            params,
            lr=1.0,
            max_iter=self.lbfgs_steps,
            history_size=10,
            line_search_fn="strong_wolfe",
        )
        n_obs = float(mask.sum())

        def closure() -> torch.Tensor:
            opt.zero_grad()
            pred, reg = net.forward(rating, fine=fine)
            loss = 0.5 * ((mask * (rating - pred)) ** 2).sum() + reg
            loss.backward()  # type: ignore[no-untyped-call]
            return loss

        def held_rmse(pred: torch.Tensor) -> float:
            assert monitor is not None
            p = pred[monitor.item_t(pred), monitor.user_t(pred)].clamp(self.r_min_, self.r_max_)
            return float(torch.sqrt(((p - monitor.value_t(pred)) ** 2).mean()))

        best, best_epoch = math.inf, 0
        snapshot: list[torch.Tensor] = []
        if monitor is not None and fine:  # the pre-trained model is epoch 0
            with torch.no_grad():
                best = held_rmse(net.forward(rating, fine=False)[0])
        last, calm = math.inf, 0
        for epoch in range(1, cap + 1):
            opt.step(closure)  # type: ignore[no-untyped-call]
            with torch.no_grad():
                pred, _ = net.forward(rating, fine=fine)
                err = mask * (pred.clamp(self.r_min_, self.r_max_) - rating)
                rmse = float(torch.sqrt((err**2).sum() / n_obs))
                if monitor is not None:
                    held = held_rmse(pred)
                    if held < best:
                        best, best_epoch = held, epoch
                        if not fine:
                            snapshot = [t.detach().clone() for t in net.params]
            self._epoch_end(fine, epoch, net, rating)
            log.debug("%s fine=%s epoch %d: train RMSE %.4f", self.name, fine, epoch, rmse)
            if self.progress is not None:
                self.progress(offset + epoch, total, rmse)
            if not math.isfinite(rmse):
                raise ModelError(f"{self.name} diverged (training RMSE {rmse})")
            if not by_rule:
                continue
            if monitor is not None and epoch - best_epoch >= self.holdout_patience:
                break
            calm = calm + 1 if last - rmse < tol else 0
            last = rmse
            if tol > 0 and calm >= self.patience:
                if monitor is None:
                    return epoch
                break
        else:
            if monitor is None:
                return cap
        if snapshot:  # back to the best pre-trained state before fine-tuning
            with torch.no_grad():
                for t, saved in zip(net.params, snapshot, strict=True):
                    t.copy_(saved)
        return best_epoch

    def _epoch_end(self, fine: bool, epoch: int, net: _Net, rating: torch.Tensor) -> None:
        """Hook after each epoch (for experiments); nothing by default."""

    # -- prediction --------------------------------------------------------------------

    def _predict_all(self) -> None:
        """``pred_`` (items × users) from the effective weights, and the fallbacks."""
        n_items, n_users = self._shape
        item, user, r = self._ratings
        rating = np.zeros((n_items, n_users), dtype=_F32)
        rating[item, user] = r
        x = np.maximum(_conv2d(rating, self.global_kernel_), 0.0).astype(_F32)
        for k, (w, b) in enumerate(zip(self.weights_, self.biases_, strict=True)):
            x = x @ w + b
            if k < len(self.weights_) - 1:
                x = expit(x)
        rated_u = np.bincount(user, minlength=n_users) > 0
        rated_i = np.bincount(item, minlength=n_items) > 0
        prior = x[:, rated_u].mean(axis=1) if rated_u.any() else np.full(n_items, self.mu_)
        prior = np.where(rated_i, prior, self.mu_).astype(_F32)
        x[:, ~rated_u] = prior[:, None]
        x[~rated_i, :] = _F32(self.mu_)
        self.item_prior_ = prior.astype(np.float64)
        self.pred_ = x.astype(_F32)

    def predict(self, user: IntArray, item: IntArray) -> FloatArray:
        """Clipped predicted ratings; unknown users get the item's average, unknown items μ."""
        require_fitted(self, "pred_")
        u = np.asarray(user, dtype=np.int64)
        i = np.asarray(item, dtype=np.int64)
        n_items, n_users = self.pred_.shape
        ku = (u >= 0) & (u < n_users)
        ki = (i >= 0) & (i < n_items)
        uu, ii = np.where(ku, u, 0), np.where(ki, i, 0)
        out = np.where(
            ki, np.where(ku, self.pred_[ii, uu].astype(np.float64), self.item_prior_[ii]), self.mu_
        )
        return np.asarray(np.clip(out, self.r_min_, self.r_max_), dtype=np.float64)

    def score(self, context: Context, candidates: IntArray) -> FloatArray:
        return gather(self.score_all([context])[0], candidates)

    def score_all(self, contexts: Sequence[Context]) -> FloatArray:
        """Predicted (unclipped) rating of every fitted item for each context's subject."""
        require_fitted(self, "pred_")
        out = np.empty((len(contexts), self.pred_.shape[0]), dtype=np.float64)
        for row, c in enumerate(contexts):
            u = self.subjects_.of(c)
            out[row] = self.pred_[:, u] if 0 <= u < self.pred_.shape[1] else self.item_prior_
        return out

    # -- persistence -------------------------------------------------------------------

    def save(self, path: Path) -> None:
        require_fitted(self, "pred_")
        item, user, r = self._ratings
        arrays: dict[str, np.ndarray[Any, Any]] = {
            "global_kernel": self.global_kernel_,
            "r_item": item,
            "r_user": user,
            "r_value": r,
            "subjects": self.subjects_.keys,
        }
        for k, (w, b) in enumerate(zip(self.weights_, self.biases_, strict=True)):
            arrays[f"w{k}"], arrays[f"b{k}"] = w, b
        save_model(
            path,
            self,
            params={n: getattr(self, n) for n in self._params},
            state={
                "n_items": self._shape[0],
                "n_users": self._shape[1],
                "mu": self.mu_,
                "r_min": self.r_min_,
                "r_max": self.r_max_,
                "epochs": list(self.epochs_),
            },
            arrays=arrays,
        )

    @classmethod
    def load(cls, path: Path, items: Vocabulary) -> Self:
        names = ["global_kernel", "r_item", "r_user", "r_value", "subjects"]
        try:
            import json

            layers = int(json.loads((Path(path) / "meta.json").read_text())["params"]["n_layers"])
        except (OSError, ValueError, KeyError, TypeError):
            layers = 0  # load_model reports what is wrong
        names += [f"{p}{k}" for k in range(layers + 1) for p in ("w", "b")]
        model, state, arrays = load_model(path, cls, items, tuple(names))
        model.mu_ = float(state["mu"])
        model.r_min_, model.r_max_ = float(state["r_min"]), float(state["r_max"])
        model.epochs_ = (int(state["epochs"][0]), int(state["epochs"][1]))
        model._shape = (int(state["n_items"]), int(state["n_users"]))
        model._ratings = (arrays["r_item"], arrays["r_user"], arrays["r_value"])
        model.global_kernel_ = arrays["global_kernel"]
        model.weights_ = [arrays[f"w{k}"] for k in range(layers + 1)]
        model.biases_ = [arrays[f"b{k}"] for k in range(layers + 1)]
        model.subjects_ = SubjectIndex(arrays["subjects"].tolist())
        model._predict_all()
        return model


class _Net:
    """The torch parameters and forward passes of ``GLocalK`` (built under a seed)."""

    def __init__(self, cfg: GLocalK, n_items: int, n_users: int, dev: torch.device) -> None:
        import torch

        self.cfg = cfg
        self.torch = torch
        self.dev = dev
        self.shape = (n_items, n_users)
        hidden = min(cfg.n_hidden, n_users)  # never wider than the input
        sizes = [n_users] + [hidden] * cfg.n_layers + [n_users]
        self.layers: list[dict[str, torch.Tensor]] = []
        for n_in, n_out in itertools.pairwise(sizes):
            limit = math.sqrt(6.0 / (n_in + n_out))  # Glorot uniform, as TensorFlow's default
            self.layers.append(
                {
                    "W": torch.empty(n_in, n_out).uniform_(-limit, limit).requires_grad_(),
                    "u": _trunc_normal(torch, (n_in, 1, cfg.kernel_dim), 1e-3),
                    "v": _trunc_normal(torch, (1, n_out, cfg.kernel_dim), 1e-3),
                    "b": torch.zeros(n_out).requires_grad_(),
                }
            )
        self.conv = _trunc_normal(torch, (n_items, cfg.conv_size**2), 0.1)
        if dev.type != "cpu":  # drawn on the CPU: the same start on every device
            for layer in self.layers:
                for key, t in layer.items():
                    layer[key] = t.detach().to(dev).requires_grad_()
            self.conv = self.conv.detach().to(dev).requires_grad_()
        self.params = [t for layer in self.layers for t in layer.values()]

    def matrix(self, rated: _Ratings) -> torch.Tensor:
        """The dense items × users rating matrix (0 = unrated) on the net's device."""
        import torch

        m = torch.zeros(self.shape, dtype=torch.float32)
        m[torch.from_numpy(rated.item), torch.from_numpy(rated.user)] = torch.from_numpy(
            rated.value
        )
        return m.to(self.dev)

    def effective(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        weights: list[torch.Tensor] = []
        for layer in self.layers:
            dist2 = ((layer["u"] - layer["v"]) ** 2).sum(dim=2)
            weights.append(layer["W"] * (1.0 - dist2).clamp(min=0.0))
        return weights, [layer["b"] for layer in self.layers]

    def _autoencode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(output, penalty, last hidden state)``."""
        torch = self.torch
        cfg = self.cfg
        reg = torch.zeros((), device=x.device)
        last = len(self.layers) - 1
        hidden = x
        for k, layer in enumerate(self.layers):
            dist2 = ((layer["u"] - layer["v"]) ** 2).sum(dim=2)
            kernel = (1.0 - dist2).clamp(min=0.0)
            reg = reg + 0.5 * cfg.reg_kernel * (kernel**2).sum()
            reg = reg + 0.5 * cfg.reg_weights * (layer["W"] ** 2).sum()
            if k == last:
                hidden = x
            x = x @ (layer["W"] * kernel) + layer["b"]
            if k < last:
                x = torch.sigmoid(x)
        return x, reg, hidden

    def global_kernel(self, rating: torch.Tensor) -> torch.Tensor:
        """The ``conv_size`` × ``conv_size`` kernel from the pre-training reconstruction."""
        _, _, hidden = self._autoencode(rating)
        out = self.layers[-1]
        w_last = out["W"] * (1.0 - ((out["u"] - out["v"]) ** 2).sum(dim=2)).clamp(min=0.0)
        # Mean over users of the linear output = hidden · mean column + mean bias.
        average = hidden @ w_last.mean(dim=1) + out["b"].mean()
        size = self.cfg.conv_size
        return (average @ self.conv).reshape(size, size) * self.cfg.dot_scale

    def forward(self, rating: torch.Tensor, *, fine: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if not fine:
            pred, reg, _ = self._autoencode(rating)
            return pred, reg
        torch = self.torch
        kernel = self.global_kernel(rating)
        size = self.cfg.conv_size
        x = torch.nn.functional.conv2d(rating[None, None], kernel[None, None], padding=size // 2)
        pred, reg, _ = self._autoencode(torch.relu(x[0, 0]))
        return pred, reg


@contextlib.contextmanager
def _seeded(seed: int, threads: int) -> Iterator[None]:
    """Torch seeded (CPU generator: parameters are drawn there) on ``threads`` threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(before)


class _Ratings:
    """Observed ratings as (item, user, value) arrays."""

    def __init__(self, item: IntArray, user: IntArray, value: FloatArray) -> None:
        self.item = np.ascontiguousarray(item, dtype=np.int64)
        self.user = np.ascontiguousarray(user, dtype=np.int64)
        self.value = np.ascontiguousarray(value, dtype=_F32)

    def subset(self, keep: Any) -> _Ratings:
        return _Ratings(self.item[keep], self.user[keep], self.value[keep])

    def item_t(self, like: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.item).to(like.device)

    def user_t(self, like: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.user).to(like.device)

    def value_t(self, like: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.value).to(like.device)


def _trunc_normal(torch: Any, shape: tuple[int, ...], std: float) -> torch.Tensor:
    t = torch.empty(*shape)
    torch.nn.init.trunc_normal_(t, 0.0, std, -2.0 * std, 2.0 * std)
    return t.requires_grad_()  # type: ignore[no-any-return]


def _conv2d(x: np.ndarray[Any, Any], kernel: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """'Same' 2-D cross-correlation (as torch's conv2d), zero padding."""
    size = kernel.shape[0]
    pad = size // 2
    padded = np.pad(x, pad)
    out = np.zeros_like(x)
    rows, cols = x.shape
    for a in range(size):
        for b in range(size):
            out += kernel[a, b] * padded[a : a + rows, b : b + cols]
    return out


class GLocalKBlend(Blend):
    """``Blend`` of GLocal-K and Bayesian MF (an autoencoder and a factor model err apart).

    Same fitting as ``Blend``: weights by ridge on a seeded holdout of the training
    ratings, then every component refitted on all of them.
    """

    name: ClassVar[str] = "blend_glk"
    named_only: ClassVar[bool] = True

    def __init__(
        self,
        components: Sequence[Sequence[Any]] = BLEND_COMPONENTS,
        holdout: float = 0.1,
        reg: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(components=components, holdout=holdout, reg=reg, seed=seed)
