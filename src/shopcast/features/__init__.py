"""Features: item features (cleaning, text, content similarity) and user profiles.

Item features: ``ItemFeatures`` (``items``), ``TfidfText`` / ``make_text_encoder``
(``text``), ``ContentSimilarity`` (``similarity``), ``LiveItemFeatures`` (``live``,
the catalog's features in service).
"""

from __future__ import annotations

from shopcast.features.items import ItemFeatures, duplicate_groups, items_frame
from shopcast.features.live import LiveItemFeatures
from shopcast.features.similarity import ContentSimilarity
from shopcast.features.text import TfidfText, make_text_encoder

__all__ = [
    "ContentSimilarity",
    "ItemFeatures",
    "LiveItemFeatures",
    "TfidfText",
    "duplicate_groups",
    "items_frame",
    "make_text_encoder",
]
