"""Model compression: quality lost versus memory and latency saved, on REAL data
(UCI Online Retail, Q3 protocol).

An iALS model (``--factors``, default 32) is fitted on the Q3 training purchases; its item factors
are then stored and searched in compressed forms, and each customer's top items are
retrieved with their fitted user factors (inner product):

- ``float32`` (exact, the reference), ``float16`` and ``int8`` (symmetric, one scale
  per item row) item matrices, scored exhaustively with numpy;
- faiss indexes: ``Flat`` (exact), ``SQ8`` (8-bit scalar quantizer), ``HNSW32`` and
  ``HNSW32_SQ8`` (graph, efSearch 64), ``IVF-SQ8`` and ``IVF-PQ`` (one 8-bit
  sub-quantizer per 2 dimensions; min(4 sqrt(N), N/39) cells, ``nprobe`` searched).

Per arm: bytes of the item representation (faiss: the serialized index), query
latency of one customer (p50 / p95 ms, top 200 retrieved, history filtered, then the
top 20 kept), overlap@10 with the exact float32 top 10, and NDCG@10 / Recall@20 on
the Q3 test. ``--scale N`` repeats the real factors N times with small noise (a
SYNTHETIC larger catalog, latency and memory only, no quality).

Run (2 shared cores): ``OPENBLAS_NUM_THREADS=1 nice -n 10 .venv/bin/python
bench/bench_compression.py [--scale 30]``; writes ``bench/results/compression.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from _feedback_data import interactions, machine, online_retail

from shopcast.evaluation import metrics as M
from shopcast.models.ials import ImplicitALS

RESULTS = Path(__file__).parent / "results" / "compression.json"
RETRIEVE = 200


class Arm:
    """Top items by inner product over some representation of the item matrix."""

    def __init__(self, name: str, q: np.ndarray) -> None:
        self.name = name
        self.build(q.astype(np.float32))

    def build(self, q: np.ndarray) -> None:
        raise NotImplementedError

    def nbytes(self) -> int:
        raise NotImplementedError

    def search(self, u: np.ndarray, n: int) -> np.ndarray:
        raise NotImplementedError


class Dense(Arm):
    def __init__(self, name: str, q: np.ndarray, dtype: str) -> None:
        self.dtype = dtype
        super().__init__(name, q)

    def build(self, q: np.ndarray) -> None:
        if self.dtype == "int8":
            self.scale = np.abs(q).max(axis=1, keepdims=True) / 127.0 + 1e-12
            self.q = np.round(q / self.scale).astype(np.int8)
        else:
            self.q = q.astype(self.dtype)
            self.scale = None

    def nbytes(self) -> int:
        return int(
            self.q.nbytes + (0 if self.scale is None else self.scale.astype(np.float32).nbytes)
        )

    def search(self, u: np.ndarray, n: int) -> np.ndarray:
        if self.dtype == "int8":
            scores = (self.q.astype(np.float32) @ u) * self.scale[:, 0]
        else:
            scores = (self.q @ u.astype(self.q.dtype)).astype(np.float32)
        top = np.argpartition(-scores, n)[:n]
        return top[np.argsort(-scores[top])]


class Faiss(Arm):
    def __init__(
        self, name: str, q: np.ndarray, factory: str, nprobe: int = 0, ef: int = 0
    ) -> None:
        self.factory = factory
        self.nprobe = nprobe
        self.ef = ef
        super().__init__(name, q)

    def build(self, q: np.ndarray) -> None:
        self.index = faiss.index_factory(q.shape[1], self.factory, faiss.METRIC_INNER_PRODUCT)
        self.index.train(q)
        self.index.add(q)
        if self.nprobe:
            faiss.extract_index_ivf(self.index).nprobe = self.nprobe
        if self.ef:
            faiss.ParameterSpace().set_index_parameter(self.index, "efSearch", self.ef)

    def nbytes(self) -> int:
        return int(faiss.serialize_index(self.index).nbytes)

    def search(self, u: np.ndarray, n: int) -> np.ndarray:
        _, idx = self.index.search(u[None, :].astype(np.float32), n)
        return idx[0][idx[0] >= 0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--scale", type=int, default=0, help="also a SYNTHETIC N x catalog")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    q3 = online_retail()
    task = q3.task
    model = ImplicitALS(n_factors=args.factors, iterations=15, seed=0).fit(
        interactions(q3.train, task.train.items)
    )
    q = model.Q_.astype(np.float32)
    users = np.array([model.subjects_.of(c) for c in task.contexts])
    assert (users >= 0).all()
    uvec = model.P_[users].astype(np.float32)
    n_items = q.shape[0]
    m = args.factors // 2 if args.factors % 2 == 0 else args.factors  # 2-dim sub-vectors

    def arms(matrix: np.ndarray) -> list[Arm]:
        # 4 sqrt(N) cells, at most one per 39 items (faiss' minimum to train k-means)
        cells = max(4, min(int(4 * np.sqrt(matrix.shape[0])), matrix.shape[0] // 39))
        return [
            Dense("float32", matrix, "float32"),
            Dense("float16", matrix, "float16"),
            Dense("int8", matrix, "int8"),
            Faiss("faiss Flat", matrix, "Flat"),
            Faiss("faiss SQ8", matrix, "SQ8"),
            Faiss("faiss HNSW32", matrix, "HNSW32", ef=64),
            Faiss("faiss HNSW32-SQ8", matrix, "HNSW32_SQ8", ef=64),
            Faiss(f"faiss IVF{cells}-SQ8 np8", matrix, f"IVF{cells},SQ8", nprobe=8),
            Faiss(f"faiss IVF{cells}-SQ8 np32", matrix, f"IVF{cells},SQ8", nprobe=32),
            Faiss(f"faiss IVF{cells}-PQ{m} np32", matrix, f"IVF{cells},PQ{m}", nprobe=32),
        ]

    exclude = task.exclude.tocsr()
    rows: list[dict[str, Any]] = []
    reference: np.ndarray | None = None
    for arm in arms(q):
        top = np.zeros((len(users), 20), dtype=np.int64)
        lat = []
        for r in range(len(users)):
            seen = exclude.indices[exclude.indptr[r] : exclude.indptr[r + 1]]
            start = time.perf_counter()
            found = arm.search(uvec[r], min(RETRIEVE + seen.size, n_items - 1))
            found = found[~np.isin(found, seen)][:20]
            if r < args.queries:
                lat.append((time.perf_counter() - start) * 1000)
            top[r, : found.size] = found
            top[r, found.size :] = -1
        if reference is None:
            reference = top
        overlap = np.mean(
            [len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(top, reference, strict=True)]
        )
        met = M.ranking_metrics(
            np.where(top < 0, n_items, top), task.relevant, (10, 20), capped_recall=True,
            metrics=("NDCG", "Recall"),
        )  # fmt: skip
        row = {
            "arm": arm.name,
            "bytes": arm.nbytes(),
            "p50_ms": round(float(np.median(lat)), 4),
            "p95_ms": round(float(np.percentile(lat, 95)), 4),
            "overlap@10": round(float(overlap), 4),
            "NDCG@10": round(float(met["NDCG@10"]), 4),
            "Recall@20": round(float(met["Recall@20"]), 4),
        }
        rows.append(row)
        print(json.dumps(row))
    scaled: list[dict[str, Any]] = []
    if args.scale > 1:
        rng = np.random.default_rng(0)
        big = np.vstack(
            [q + rng.normal(0, 0.01, q.shape).astype(np.float32) for _ in range(args.scale)]
        )
        print(f"SYNTHETIC scale-up: {big.shape[0]} items")
        for arm in arms(big):
            lat = []
            for r in range(min(args.queries, len(users))):
                start = time.perf_counter()
                arm.search(uvec[r], RETRIEVE)
                lat.append((time.perf_counter() - start) * 1000)
            s = {
                "arm": arm.name,
                "items": big.shape[0],
                "bytes": arm.nbytes(),
                "p50_ms": round(float(np.median(lat)), 4),
                "p95_ms": round(float(np.percentile(lat, 95)), 4),
            }
            scaled.append(s)
            print(json.dumps(s))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "dataset": "UCI Online Retail (REAL), Q3; iALS item factors",
                "items": n_items,
                "factors": args.factors,
                "customers": len(users),
                "machine": machine(),
                "rows": rows,
                "synthetic_scale_up": scaled,
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
