"""Features: item features (cleaning, text, content similarity) and user profiles.

Item features: ``ItemFeatures`` (``items``), ``TfidfText`` / ``make_text_encoder``
(``text``), ``ContentSimilarity`` (``similarity``), ``LiveItemFeatures`` (``live``,
the catalog's features in service).

User profiles: ``UserProfile`` / ``RfmScorer`` (``profiles``), ``derive_tags``
(``tags``), ``FeatureSpace`` / ``Segmenter`` (``segments``), ``ProfileIndex``
(``profile_index``, the profiles in service).

Targeting (users-to-item): ``Targeter`` (``targeting``).
"""

from __future__ import annotations

from shopcast.features.items import ItemFeatures, duplicate_groups, items_frame
from shopcast.features.live import LiveItemFeatures
from shopcast.features.profile_index import ProfileCard, ProfileIndex, SegmentSummary
from shopcast.features.profiles import RfmScorer, UserProfile, UserState, profile_of
from shopcast.features.segments import FeatureSpace, Segmenter
from shopcast.features.similarity import ContentSimilarity
from shopcast.features.tags import Tag, derive_tags
from shopcast.features.targeting import Targeter, TargetingQuery, TargetingWeights
from shopcast.features.text import TfidfText, make_text_encoder

__all__ = [
    "ContentSimilarity",
    "FeatureSpace",
    "ItemFeatures",
    "LiveItemFeatures",
    "ProfileCard",
    "ProfileIndex",
    "RfmScorer",
    "SegmentSummary",
    "Segmenter",
    "Tag",
    "Targeter",
    "TargetingQuery",
    "TargetingWeights",
    "TfidfText",
    "UserProfile",
    "UserState",
    "derive_tags",
    "duplicate_groups",
    "items_frame",
    "make_text_encoder",
    "profile_of",
]
