"""Consent per purpose (``User.consent``): what a user who declined personalization
gets and what their events feed.

- ``consent["personalization"] = False``: recommendations are not personalized (the
  request is answered as for an unknown shopper: popular items, new arrivals, the
  scene's own context items), no behavioural profile is kept, and the user's events
  feed only the aggregate models (``AGGREGATE_ROLES``: popularity/trending), never
  co-visitation, bought-together or any per-user model. Withdrawing consent takes the
  user's events out of those models at once and schedules a retrain.
- Other purposes (``email``, ``push``, …) are explicit opt-ins read by the channels
  that use them (``allows``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import polars as pl

from shopcast.domain import Event, User
from shopcast.models._base import Interactions


def personalizes(user: User | None) -> bool:
    """False only when the user declared ``consent["personalization"] = False``."""
    return user is None or user.consent.get("personalization", True) is not False


def allows(user: User | None, purpose: str) -> bool:
    """An explicit opt-in to ``purpose`` (push channels): True only when declared."""
    return user is not None and user.consent.get(purpose) is True


def declined(users: Mapping[str, User]) -> frozenset[str]:
    """The ids of users who declined personalization."""
    return frozenset(uid for uid, u in users.items() if not personalizes(u))


def personal_events(events: Collection[Event], users: Mapping[str, User]) -> list[Event] | None:
    """``events`` without those of declining users; None when nothing is left out."""
    keep = [e for e in events if e.user_id is None or personalizes(users.get(e.user_id))]
    return None if len(keep) == len(events) else keep


def personal_data(
    frame: pl.DataFrame, data: Interactions, excluded: Collection[str]
) -> Interactions | None:
    """``data`` (built from ``frame``) without the events of ``excluded`` users."""
    if not excluded:
        return None
    keep = frame.filter(pl.col("user_id").is_null() | ~pl.col("user_id").is_in(list(excluded)))
    if keep.height == frame.height:
        return None
    return Interactions.from_frame(keep, users=data.users, items=data.items)
