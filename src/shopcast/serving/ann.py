"""Maximum-inner-product search over item vectors, for embedding candidate sources.

``VectorIndex`` answers "the n items with the largest ``q · v_i``". Small catalogs use
an exact numpy product; from ``ann_min_items`` items on, faiss (the ``ann`` extra)
with an HNSW graph over inner products, so a request stays well under a millisecond
for catalogs of hundreds of thousands of items. ``backend="exact"`` forces numpy,
``backend="faiss"`` requires faiss (an error names the extra when it is missing).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from shopcast.errors import MissingDependencyError
from shopcast.models._base import FloatArray, IntArray

Backend = Literal["auto", "exact", "faiss"]


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


class VectorIndex:
    def __init__(
        self,
        vectors: FloatArray,
        *,
        backend: Backend = "auto",
        ann_min_items: int = 50_000,
        hnsw_neighbors: int = 32,
        ef_search: int = 128,
    ) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        faiss = _faiss()
        if backend == "faiss" and faiss is None:
            raise MissingDependencyError("faiss-cpu", "ann")
        use_faiss = backend == "faiss" or (
            backend == "auto" and faiss is not None and len(self.vectors) >= ann_min_items
        )
        self.backend: str = "exact"
        self._index: Any = None
        if use_faiss and len(self.vectors):
            index = faiss.IndexHNSWFlat(
                self.vectors.shape[1], hnsw_neighbors, faiss.METRIC_INNER_PRODUCT
            )
            index.hnsw.efSearch = ef_search
            index.add(self.vectors)
            self._index = index
            self.backend = "faiss-hnsw"

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def search(self, query: FloatArray, n: int) -> tuple[IntArray, FloatArray]:
        """The ``n`` best items for one query vector, best first, with their products."""
        n = min(n, len(self))
        if n <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        if self._index is not None:
            scores, items = self._index.search(q, n)
            keep = items[0] >= 0
            return items[0][keep].astype(np.int64), scores[0][keep].astype(np.float64)
        products = (self.vectors @ q[0]).astype(np.float64)
        top = np.argpartition(-products, n - 1)[:n]
        order = top[np.argsort(-products[top], kind="stable")]
        return order.astype(np.int64), products[order]
