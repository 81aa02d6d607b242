"""EASE: a closed-form shallow item-item autoencoder (Steck, WWW 2019)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import scipy.linalg as sla

from shopcast.errors import ConfigError, ModelError
from shopcast.models._base import Context, FloatArray, IntArray, Interactions, Vocabulary
from shopcast.models._common import (
    check_positive,
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

#: Up to this many items the Gram matrix is inverted in float64, above in float32.
FLOAT64_MAX_ITEMS = 16_384


class EASE:
    """``B = I - P·diag(1/diag(P))`` with ``P = (XᵀX + λI)⁻¹``; scores are ``x·B``.

    ``X`` holds one row per subject: 1 where the subject interacted with the item
    (``binary``) or the summed event weights. ``score`` builds ``x`` from the fitted
    row of the context's subject (when known) plus its recent items. ``B`` is dense,
    ``n_items²`` float32: fitting refuses more than ``max_items`` items (use item-kNN).

    Learned state: ``B_`` (float32), ``history_`` (CSR, the fitted ``X``), ``subjects_``.
    """

    name: ClassVar[str] = "ease"

    B_: FloatArray
    history_: Any
    subjects_: SubjectIndex

    def __init__(
        self,
        reg: float = 250.0,
        binary: bool = True,
        event_weights: Mapping[str, float] | None = None,
        max_items: int = 40_000,
    ) -> None:
        if max_items < 1:
            raise ConfigError(f"max_items must be >= 1, got {max_items}")
        self.reg = check_positive("reg", reg)
        self.binary = binary
        self.event_weights = resolve_event_weights(event_weights)
        self.max_items = max_items

    def fit(self, data: Interactions) -> Self:
        n = n_items_of(data)
        if n > self.max_items:
            raise ModelError(
                f"EASE needs a dense {n}x{n} matrix ({4 * n * n / 2**30:.1f} GiB); "
                f"the limit is max_items={self.max_items}: use 'itemknn' for large catalogs "
                "or raise max_items"
            )
        x = user_item_matrix(data, self.event_weights, binary=self.binary, n_items=n)
        dtype = np.float64 if n <= FLOAT64_MAX_ITEMS else np.float32
        xt = x.T.tocsr().astype(dtype)
        g: npt.NDArray[np.floating[Any]] = np.asarray((xt @ xt.T).toarray(), dtype=dtype)
        g[np.diag_indices(n)] += self.reg
        b = _spd_inverse(g)
        b /= -np.diag(b).copy()
        b[np.diag_indices(n)] = 0.0
        self.B_ = b.astype(np.float32, copy=False)
        self.history_ = x.astype(np.float32)
        self.subjects_ = SubjectIndex(data.users.ids[: x.shape[0]])
        return self

    def score(self, context: Context, candidates: IntArray) -> FloatArray:
        return gather(self.score_all([context])[0], candidates)

    def score_all(self, contexts: Sequence[Context]) -> FloatArray:
        require_fitted(self, "B_")
        x = context_matrix(
            contexts, self.history_, self.subjects_, self.event_weights, binary=self.binary
        )
        return np.asarray(x.astype(np.float32) @ self.B_, dtype=np.float64)

    def save(self, path: Path) -> None:
        require_fitted(self, "B_")
        save_model(
            path,
            self,
            params={
                "reg": self.reg,
                "binary": self.binary,
                "event_weights": self.event_weights,
                "max_items": self.max_items,
            },
            state={"n_items": int(self.B_.shape[0])},
            arrays={"B": self.B_, **history_arrays(self.history_, self.subjects_)},
        )

    @classmethod
    def load(cls, path: Path, items: Vocabulary) -> Self:
        model, state, arrays = load_model(path, cls, items, ("B", *HISTORY_ARRAYS))
        model.B_ = arrays["B"]
        model.history_, model.subjects_ = load_history(arrays, int(state["n_items"]))
        return model


def _spd_inverse(a: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.floating[Any]]:
    """Inverse of a symmetric positive definite matrix via Cholesky (overwrites ``a``)."""
    c, low = sla.cho_factor(a, lower=True, overwrite_a=True, check_finite=False)
    inv = sla.cho_solve((c, low), np.eye(a.shape[0], dtype=a.dtype), check_finite=False)
    return np.asarray(inv, dtype=a.dtype)
