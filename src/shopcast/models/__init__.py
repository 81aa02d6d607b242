"""Recommendation models behind one protocol, and a registry of their names.

Every model passes ``tests/models/test_contract.py``; register a new one in ``MODELS``.
"""

from __future__ import annotations

from shopcast.errors import ModelError
from shopcast.models._base import Context, Interactions, OnlineLearner, Recommender, Vocabulary
from shopcast.models.blend import Blend
from shopcast.models.bpmf import BayesianMF
from shopcast.models.covisit import CoVisitation
from shopcast.models.ease import EASE
from shopcast.models.glocalk import GLocalK, GLocalKBlend
from shopcast.models.hybrid import HybridRanker, HybridRating
from shopcast.models.ials import ImplicitALS
from shopcast.models.knn import ItemKNN
from shopcast.models.knn_baseline import KNNBaseline, KNNBlend
from shopcast.models.mf import BiasedMF, BiasedMFALS, SVDpp
from shopcast.models.popularity import Popularity
from shopcast.models.rerank import TwoStageRanker
from shopcast.models.sasrec import SASRec
from shopcast.models.seqrank import SequenceRanker
from shopcast.models.time_knn import Baselines, TimeBlend, TimeKNN

#: Every model by its ``name``.
MODELS: dict[str, type[Recommender]] = {
    cls.name: cls
    for cls in (
        Popularity,
        CoVisitation,
        EASE,
        ItemKNN,
        BiasedMF,
        BiasedMFALS,
        SVDpp,
        ImplicitALS,
        BayesianMF,
        Blend,
        SASRec,
        HybridRanker,
        HybridRating,
        GLocalK,
        GLocalKBlend,
        KNNBaseline,
        KNNBlend,
        Baselines,
        TimeKNN,
        TimeBlend,
        TwoStageRanker,
        SequenceRanker,
    )
}


def model_class(name: str) -> type[Recommender]:
    """The model class registered as ``name``; ``ModelError`` lists the known names."""
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ModelError(f"unknown model {name!r}; known models: {known}") from None


__all__ = [
    "EASE",
    "MODELS",
    "Baselines",
    "BayesianMF",
    "BiasedMF",
    "BiasedMFALS",
    "Blend",
    "CoVisitation",
    "Context",
    "GLocalK",
    "GLocalKBlend",
    "HybridRanker",
    "HybridRating",
    "ImplicitALS",
    "Interactions",
    "ItemKNN",
    "KNNBaseline",
    "KNNBlend",
    "OnlineLearner",
    "Popularity",
    "Recommender",
    "SASRec",
    "SVDpp",
    "SequenceRanker",
    "TimeBlend",
    "TimeKNN",
    "TwoStageRanker",
    "Vocabulary",
    "model_class",
]
