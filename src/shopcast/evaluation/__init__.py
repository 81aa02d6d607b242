"""Offline evaluation: metrics, splits, the benchmark harness, peers and reports.

- ``metrics``: RMSE/MAE and ranking metrics (Precision/Recall/F1/NDCG/HR/MRR/MAP@K),
  coverage, novelty, intra-list diversity; vectorized, one value per user.
- ``splits``: MovieLens folds, leave-one-out, temporal cutoff, prequential replay.
- ``harness``: fit with time and memory, full ranking with history exclusion, tuning
  on validation.
- ``peers``: Surprise, implicit, LightFM and Shopcast's EASE behind the same protocols.
- ``benchmarks``: Q1, Q2 and Q3 of ``BENCHMARKS.md``; ``report``: JSON, Markdown, PNG.

``shopcast evaluate q1|q2|q3`` runs a benchmark from the command line.
"""

from __future__ import annotations

from shopcast.evaluation.metrics import (
    average_precision_at_k,
    catalog_coverage,
    f1_at_k,
    hit_rate_at_k,
    hits_matrix,
    intra_list_diversity,
    mae,
    mrr_at_k,
    ndcg_at_k,
    novelty,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
    rmse,
)
from shopcast.evaluation.splits import (
    LeaveOneOut,
    RatingFold,
    Replay,
    TemporalSplit,
    event_frame,
    holdout,
    leave_one_out,
    movielens_folds,
    prequential,
    random_rating_folds,
    temporal_split,
)

__all__ = [
    "LeaveOneOut",
    "RatingFold",
    "Replay",
    "TemporalSplit",
    "average_precision_at_k",
    "catalog_coverage",
    "event_frame",
    "f1_at_k",
    "hit_rate_at_k",
    "hits_matrix",
    "holdout",
    "intra_list_diversity",
    "leave_one_out",
    "mae",
    "movielens_folds",
    "mrr_at_k",
    "ndcg_at_k",
    "novelty",
    "precision_at_k",
    "prequential",
    "random_rating_folds",
    "ranking_metrics",
    "recall_at_k",
    "rmse",
    "temporal_split",
]
