"""Peer libraries behind Shopcast's model protocols, so the same metric code runs on them.

- ``surprise-svd`` / ``surprise-svdpp``: Surprise's SVD and SVD++ (``RatingPredictor``).
- ``implicit-als`` / ``implicit-bpr``: implicit's ALS and BPR (``BatchScorer``).
- ``lightfm``: LightFM (WARP) with item features (``BatchScorer``).
- ``ease``: Shopcast's own EASE (``shopcast.models``), run as the reference peer.

Libraries are imported only when a peer is built; ``unavailable(name)`` says why a
peer cannot run (the extra to install) so that evaluation reports it as skipped.
Peers are fitted on the same ``Interactions`` as Shopcast's models; users are mapped
through ``Context.user_id`` (unknown users score 0 everywhere). They are evaluated,
never saved.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from shopcast.errors import MissingDependencyError, ModelError, NotFittedError
from shopcast.models._base import Context, FloatArray, IntArray, Interactions

__all__ = [
    "PEERS",
    "ImplicitPeer",
    "LightFMPeer",
    "PeerSpec",
    "SurprisePeer",
    "unavailable",
]

BENCH_EXTRA = "bench"
LIGHTFM_HINT = (
    "lightfm is not installed; it has no wheels and its setup.py needs the legacy build: "
    "pip install 'pip<25' wheel && pip install --no-build-isolation --no-use-pep517 lightfm "
    "(see docs/benchmarks.md)"
)


def _user_matrix(data: Interactions) -> Any:
    """Users x items CSR of event counts (float32)."""
    n_users, n_items = len(data.users), len(data.items)
    m = sp.csr_matrix(
        (np.ones(len(data), dtype=np.float32), (data.user, data.item)), shape=(n_users, n_items)
    )
    m.sum_duplicates()
    return m


def _user_rows(data: Interactions, contexts: Sequence[Context]) -> IntArray:
    keys = ["u:" + c.user_id if c.user_id is not None else "" for c in contexts]
    return data.users.indices(keys)


class _FactorScorer:
    """Scores = user factors · item factors (+ item bias) for known users, 0 otherwise."""

    user_factors_: FloatArray
    item_factors_: FloatArray
    item_bias_: FloatArray
    data_: Interactions

    def score_all(self, contexts: Sequence[Context]) -> FloatArray:
        if not hasattr(self, "user_factors_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted")
        rows = _user_rows(self.data_, contexts)
        out = np.zeros((len(contexts), self.item_factors_.shape[0]), dtype=np.float64)
        known = rows >= 0
        if known.any():
            out[known] = self.user_factors_[rows[known]] @ self.item_factors_.T + self.item_bias_
        return out

    def score(self, context: Context, candidates: IntArray) -> FloatArray:
        row = self.score_all([context])[0]
        idx = np.asarray(candidates, dtype=np.int64)
        ok = (idx >= 0) & (idx < row.shape[0])
        out = np.zeros(idx.shape, dtype=np.float64)
        out[ok] = row[idx[ok]]
        return out


class ImplicitPeer(_FactorScorer):
    """implicit's ``AlternatingLeastSquares`` (``algorithm="als"``) or
    ``BayesianPersonalizedRanking`` (``"bpr"``) on the users x items count matrix."""

    name: ClassVar[str] = "implicit"

    def __init__(
        self,
        algorithm: str = "als",
        factors: int = 64,
        regularization: float = 0.01,
        iterations: int | None = None,
        alpha: float = 1.0,
        learning_rate: float = 0.01,
        seed: int = 0,
        threads: int = 2,
    ) -> None:
        if algorithm not in ("als", "bpr"):
            raise ModelError(f"implicit algorithm must be 'als' or 'bpr', got {algorithm!r}")
        self.algorithm = algorithm
        self.factors = factors
        self.regularization = regularization
        self.iterations = iterations
        self.alpha = alpha
        self.learning_rate = learning_rate
        self.seed = seed
        self.threads = threads

    def fit(self, data: Interactions) -> Self:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):  # implicit runs its own threads
            model = self._build()
            model.fit(_user_matrix(data), show_progress=False)
        self.user_factors_ = np.asarray(model.user_factors, dtype=np.float64)
        self.item_factors_ = np.asarray(model.item_factors, dtype=np.float64)
        self.item_bias_ = np.zeros(self.item_factors_.shape[0])
        self.data_ = data
        return self

    def _build(self) -> Any:
        if self.algorithm == "als":
            from implicit.cpu.als import AlternatingLeastSquares

            return AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations or 15,
                num_threads=self.threads,
                random_state=self.seed,
            )
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations or 100,
            num_threads=self.threads,
            random_state=self.seed,
        )


class LightFMPeer(_FactorScorer):
    """LightFM with item features: an identity feature per item plus the item's tokens
    (``item_tokens[item_id]``, e.g. category and brand ids), rows normalized to sum 1."""

    name: ClassVar[str] = "lightfm"

    def __init__(
        self,
        item_tokens: Mapping[str, Sequence[str]] | None = None,
        no_components: int = 64,
        loss: str = "warp",
        learning_rate: float = 0.05,
        item_alpha: float = 0.0,
        user_alpha: float = 0.0,
        epochs: int = 30,
        seed: int = 0,
        threads: int = 2,
    ) -> None:
        self.item_tokens = item_tokens or {}
        self.no_components = no_components
        self.loss = loss
        self.learning_rate = learning_rate
        self.item_alpha = item_alpha
        self.user_alpha = user_alpha
        self.epochs = epochs
        self.seed = seed
        self.threads = threads

    def item_features(self, data: Interactions) -> Any:
        """Identity + token features of every item of ``data.items`` (CSR, rows sum to 1)."""
        n = len(data.items)
        vocab: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        for i, item_id in enumerate(data.items.ids):
            for tok in self.item_tokens.get(item_id, ()):
                rows.append(i)
                cols.append(n + vocab.setdefault(tok, len(vocab)))
        rows += list(range(n))
        cols += list(range(n))
        m = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n + len(vocab))
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        sums = np.asarray(m.sum(axis=1)).reshape(-1)
        return sp.csr_matrix(sp.diags(1.0 / sums) @ m, dtype=np.float32)

    def fit(self, data: Interactions) -> Self:
        from lightfm import LightFM

        features = self.item_features(data)
        model = LightFM(
            no_components=self.no_components,
            loss=self.loss,
            learning_rate=self.learning_rate,
            item_alpha=self.item_alpha,
            user_alpha=self.user_alpha,
            random_state=np.random.RandomState(self.seed),
        )
        interactions = _user_matrix(data).tocoo()
        interactions.data[:] = 1.0
        model.fit(
            interactions, item_features=features, epochs=self.epochs, num_threads=self.threads
        )
        item_bias, item_emb = model.get_item_representations(features)
        _, user_emb = model.get_user_representations()
        self.user_factors_ = np.asarray(user_emb, dtype=np.float64)
        self.item_factors_ = np.asarray(item_emb, dtype=np.float64)
        self.item_bias_ = np.asarray(item_bias, dtype=np.float64)  # user bias: same per row
        self.data_ = data
        return self


class SurprisePeer:
    """Surprise's ``SVD`` (``algorithm="svd"``) or ``SVDpp`` on explicit ratings
    (``Interactions.value``); ``predict`` uses Surprise's own estimate for unknown
    users or items (its global mean and known biases)."""

    name: ClassVar[str] = "surprise"

    def __init__(self, algorithm: str = "svd", seed: int = 0, **params: Any) -> None:
        if algorithm not in ("svd", "svdpp"):
            raise ModelError(f"surprise algorithm must be 'svd' or 'svdpp', got {algorithm!r}")
        self.algorithm = algorithm
        self.seed = seed
        self.params = params

    def fit(self, data: Interactions) -> Self:
        import surprise

        ok = ~np.isnan(data.value)
        user, item, rating = data.user[ok], data.item[ok], data.value[ok]
        if not rating.size:
            raise ModelError("Surprise needs rated events (Interactions.value)")
        ur: dict[int, list[tuple[int, float]]] = {}
        ir: dict[int, list[tuple[int, float]]] = {}
        for u, i, r in zip(user.tolist(), item.tolist(), rating.tolist(), strict=True):
            ur.setdefault(u, []).append((i, r))
            ir.setdefault(i, []).append((u, r))
        # Inner ids are dense over the users/items that have ratings; raw ids are indices.
        u_inner = {u: k for k, u in enumerate(sorted(ur))}
        i_inner = {i: k for k, i in enumerate(sorted(ir))}
        trainset = surprise.Trainset(
            {u_inner[u]: [(i_inner[i], r) for i, r in v] for u, v in ur.items()},
            {i_inner[i]: [(u_inner[u], r) for u, r in v] for i, v in ir.items()},
            len(u_inner),
            len(i_inner),
            int(rating.size),
            (float(rating.min()), float(rating.max())),
            u_inner,
            i_inner,
        )
        cls = surprise.SVD if self.algorithm == "svd" else surprise.SVDpp
        extra = {"cache_ratings": True} if self.algorithm == "svdpp" else {}
        self.algo_ = cls(random_state=self.seed, **extra, **self.params)
        self.algo_.fit(trainset)
        return self

    def predict(self, user: IntArray, item: IntArray) -> FloatArray:
        if not hasattr(self, "algo_"):
            raise NotFittedError("SurprisePeer is not fitted")
        est = self.algo_.predict
        return np.fromiter(
            (
                est(u, i, clip=False).est
                for u, i in zip(np.asarray(user).tolist(), np.asarray(item).tolist(), strict=True)
            ),
            dtype=np.float64,
            count=len(user),
        )


# -- registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerSpec:
    """A peer: ``task`` is "rating" or "ranking"; ``builder()`` returns the callable that
    makes an unfitted instance from hyperparameters (resolved only when used)."""

    name: str
    task: str
    module: str  # importable module that must exist
    builder: Callable[[], Callable[..., Any]]
    missing: str  # message when ``module`` is absent


def _ease() -> Callable[..., Any]:
    from shopcast.models import MODELS

    return MODELS["ease"]


def _missing(package: str) -> str:
    return MissingDependencyError(package, BENCH_EXTRA).message


PEERS: dict[str, PeerSpec] = {
    spec.name: spec
    for spec in (
        PeerSpec(
            "surprise-svd",
            "rating",
            "surprise",
            lambda: functools.partial(SurprisePeer, "svd"),
            _missing("scikit-surprise"),
        ),
        PeerSpec(
            "surprise-svdpp",
            "rating",
            "surprise",
            lambda: functools.partial(SurprisePeer, "svdpp"),
            _missing("scikit-surprise"),
        ),
        PeerSpec(
            "implicit-als",
            "ranking",
            "implicit",
            lambda: functools.partial(ImplicitPeer, "als"),
            _missing("implicit"),
        ),
        PeerSpec(
            "implicit-bpr",
            "ranking",
            "implicit",
            lambda: functools.partial(ImplicitPeer, "bpr"),
            _missing("implicit"),
        ),
        PeerSpec("lightfm", "ranking", "lightfm", lambda: LightFMPeer, LIGHTFM_HINT),
        PeerSpec(
            "ease",
            "ranking",
            "shopcast.models",
            _ease,
            "Shopcast's EASE is not registered in shopcast.models.MODELS",
        ),
    )
}


def unavailable(name: str) -> str | None:
    """Why peer ``name`` cannot run here (None when it can)."""
    spec = PEERS[name]
    if spec.name == "ease":
        from shopcast.models import MODELS

        return None if "ease" in MODELS else spec.missing
    return None if importlib.util.find_spec(spec.module) is not None else spec.missing
