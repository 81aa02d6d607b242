"""Item-kNN: shrunk cosine similarity between item columns, top-k neighbours, sparse."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from shopcast.errors import ConfigError
from shopcast.models._base import Context, FloatArray, IntArray, Interactions, Vocabulary
from shopcast.models._common import (
    gather,
    load_model,
    require_fitted,
    resolve_event_weights,
    save_model,
)
from shopcast.models._data import (
    HISTORY_ARRAYS,
    SubjectIndex,
    context_matrix,
    history_arrays,
    load_history,
    n_items_of,
    user_item_matrix,
)
from shopcast.models.covisit import _prune


class ItemKNN:
    """``s_ij = x_i·x_j / (‖x_i‖‖x_j‖ + shrink)`` over item columns of ``X``, ``i ≠ j``.

    Each item keeps its ``k`` most similar items (ties: lower index); a subject's score
    for item ``j`` is ``Σ_i x_i s_ij`` over its fitted row plus recent items (as in
    ``EASE``). Memory is sparse: at most ``k`` entries per item.

    Learned state: ``S_`` (CSR float32), ``history_`` (CSR, the fitted ``X``), ``subjects_``.
    """

    name: ClassVar[str] = "itemknn"

    S_: Any
    history_: Any
    subjects_: SubjectIndex

    def __init__(
        self,
        k: int = 100,
        shrink: float = 10.0,
        binary: bool = True,
        event_weights: Mapping[str, float] | None = None,
    ) -> None:
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        if not shrink >= 0:
            raise ConfigError(f"shrink must be >= 0, got {shrink}")
        self.k = k
        self.shrink = float(shrink)
        self.binary = binary
        self.event_weights = resolve_event_weights(event_weights)

    def fit(self, data: Interactions) -> Self:
        n = n_items_of(data)
        x = user_item_matrix(data, self.event_weights, binary=self.binary, n_items=n)
        xt = x.T.tocsr()
        co = (xt @ xt.T).tocsr()
        co.setdiag(0)
        co.eliminate_zeros()
        norms = np.sqrt(np.asarray(xt.multiply(xt).sum(axis=1)).ravel())
        coo = co.tocoo()
        sim = coo.data / (norms[coo.row] * norms[coo.col] + self.shrink)
        s = sp.csr_array((sim, (coo.row, coo.col)), shape=(n, n))
        s.sort_indices()
        self.S_ = _prune(s, self.k).astype(np.float32)
        self.history_ = x.astype(np.float32)
        self.subjects_ = SubjectIndex(data.users.ids[: x.shape[0]])
        return self

    def score(self, context: Context, candidates: IntArray) -> FloatArray:
        return gather(self.score_all([context])[0], candidates)

    def score_all(self, contexts: Sequence[Context]) -> FloatArray:
        require_fitted(self, "S_")
        x = context_matrix(
            contexts, self.history_, self.subjects_, self.event_weights, binary=self.binary
        )
        return np.asarray((x.astype(np.float32) @ self.S_).toarray(), dtype=np.float64)

    def save(self, path: Path) -> None:
        require_fitted(self, "S_")
        s = self.S_
        save_model(
            path,
            self,
            params={
                "k": self.k,
                "shrink": self.shrink,
                "binary": self.binary,
                "event_weights": self.event_weights,
            },
            state={"n_items": int(s.shape[0])},
            arrays={
                "s_data": s.data,
                "s_indices": s.indices,
                "s_indptr": s.indptr,
                **history_arrays(self.history_, self.subjects_),
            },
        )

    @classmethod
    def load(cls, path: Path, items: Vocabulary) -> Self:
        names = ("s_data", "s_indices", "s_indptr", *HISTORY_ARRAYS)
        model, state, arrays = load_model(path, cls, items, names)
        n = int(state["n_items"])
        model.S_ = sp.csr_array(
            (arrays["s_data"], arrays["s_indices"], arrays["s_indptr"]), shape=(n, n)
        )
        model.history_, model.subjects_ = load_history(arrays, n)
        return model
