"""The user profiles in service: built in batch from the log, moved on by every event.

``ProfileIndex`` holds every user's ``UserState`` (plus the ``User`` records and the
item facts profiles read) in memory. ``from_store`` builds it from the event log and
catalog in batch and fits the population models (``refit``: RFM quintiles, the
feature space and the k-means segments, at most one segment per
``USERS_PER_SEGMENT`` users); ``observe`` then applies each committed event.

Segment of a user: fitted at ``refit``; users with new events since are re-assigned to
the nearest centroid when next read. Consent: a ``User`` with
``consent["personalization"] = False`` keeps no state (it is dropped when the record
says so); when consent comes back, or the time zone changes, the user's history is
replayed from the log. ``now`` is the wall clock, or with
``profiles.reference_time = "log"`` the last event time seen (for historical logs).

A targeting scorer reads ``affinities(user_id, kind)`` (category or brand shares) and
``user_ids()``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Literal
from zoneinfo import ZoneInfo

import polars as pl
from pydantic import BaseModel, Field

from shopcast.config import Settings
from shopcast.domain import Event, EventType, Item, User
from shopcast.errors import NotFoundError
from shopcast.features._batch import build_states
from shopcast.features._itemref import UNKNOWN_ITEM, ItemTable
from shopcast.features.profiles import (
    ProfileParams,
    RfmScorer,
    UserProfile,
    UserState,
    consents,
    profile_of,
)
from shopcast.features.segments import FeatureSpace, Segmenter
from shopcast.features.tags import Tag, derive_tags
from shopcast.storage import Store

USERS_PER_SEGMENT = 5
History = Callable[[str], Iterable[Event]]


class SegmentRef(BaseModel):
    id: int
    name: str


class SegmentSummary(BaseModel):
    id: int
    name: str
    description: str
    size: int = Field(description="Users in the segment now")


class ProfileCard(UserProfile):
    """A profile with its tags and segment (what ``GET /v1/users/{id}/profile`` shows)."""

    tags: list[Tag] = Field(default_factory=list)
    segment: SegmentRef | None = None


class ProfileIndex:
    """Every user's profile state, kept current event by event."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        history: History | None = None,
    ) -> None:
        self.config = settings.profiles
        self.params = ProfileParams.from_settings(settings.profiles, settings.recommend)
        self.clock = clock
        self._history = history
        self._lock = threading.RLock()
        self.items = ItemTable()
        self.users: dict[str, User] = {}
        self.states: dict[str, UserState] = {}
        self.last_event_ts: float | None = None
        self.scorer = RfmScorer()
        self.space: FeatureSpace | None = None
        self.segmenter: Segmenter | None = None
        self.fitted_at: float | None = None
        self._segment_of: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._zones: dict[str, ZoneInfo] = {}

    # -- building -------------------------------------------------------------------

    @classmethod
    def from_store(
        cls, store: Store, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> ProfileIndex:
        """Batch build from the whole event log, the catalog and the user records."""

        def history(user_id: str) -> list[Event]:
            return [e for _, e in store.events.scan(subject=f"u:{user_id}")]

        index = cls(settings, clock=clock, history=history)
        index.load(store.events.frame(), store.items.scan(), store.users.scan())
        return index

    def load(
        self,
        frame: pl.DataFrame,
        items: Iterable[Item],
        users: Iterable[User],
        *,
        refit: bool = True,
    ) -> None:
        """Replace everything by the batch recompute of ``frame``, then ``refit``."""
        with self._lock:
            self.items = ItemTable(items)
            self.users = {u.user_id: u for u in users}
            self.states = build_states(frame, self.items, self.users, self.params)
            last = frame.select(pl.col("ts").max()).item() if frame.height else None
            self.last_event_ts = None if last is None else float(last)
            if refit:
                self.refit()

    def refit(self, now: float | None = None) -> None:
        """Fit RFM quintiles, the feature space and the segments on the current profiles."""
        with self._lock:
            now = self.now() if now is None else now
            ids, profiles = self._profiles(sorted(self.states), now)
            self.scorer = RfmScorer().fit(
                [
                    (b.rfm.recency_days, b.rfm.frequency, b.rfm.monetary)
                    for p in profiles
                    if (b := p.behaviour) is not None and b.rfm.recency_days is not None
                ]
            )
            self.space, self.segmenter, self._segment_of = None, None, {}
            if len(profiles) >= 2:
                space = FeatureSpace()
                rows = space.fit_transform(profiles)
                k = min(self.config.segments, max(1, len(profiles) // USERS_PER_SEGMENT))
                segmenter = Segmenter(k=k, seed=self.config.segment_seed).fit(rows, space.columns)
                labels = segmenter.assign(rows).tolist()
                self.space, self.segmenter = space, segmenter
                self._segment_of = dict(zip(ids, labels, strict=True))
            self._dirty.clear()
            self.fitted_at = now

    def _profiles(self, ids: Iterable[str], now: float) -> tuple[list[str], list[UserProfile]]:
        """Profiles (without RFM scores) of the consenting users among ``ids`` with events."""
        kept, out = [], []
        for uid in ids:
            state, user = self.states.get(uid), self.users.get(uid)
            if state is not None and state.events and consents(user):
                kept.append(uid)
                out.append(profile_of(uid, user, state, now, self.params))
        return kept, out

    # -- updates --------------------------------------------------------------------

    def observe(self, events: Iterable[Event]) -> None:
        """Apply committed events (incremental path; each a few µs)."""
        with self._lock:
            for event in events:
                if self.last_event_ts is None or event.timestamp > self.last_event_ts:
                    self.last_event_ts = event.timestamp
                uid = event.user_id
                if uid is None or event.type is EventType.IMPRESSION:
                    continue
                user = self.users.get(uid)
                if user is not None and not consents(user):
                    continue
                state = self.states.get(uid)
                if state is None:
                    state = self.states[uid] = UserState()
                info = UNKNOWN_ITEM if event.item_id is None else self.items.info(event.item_id)
                state.observe(event, info, self._zone(user), self.params)
                self._dirty.add(uid)

    def _zone(self, user: User | None) -> ZoneInfo | None:
        if user is None or user.timezone is None:
            return None
        zone = self._zones.get(user.timezone)
        if zone is None:
            zone = self._zones[user.timezone] = ZoneInfo(user.timezone)
        return zone

    def upsert_items(self, items: Iterable[Item]) -> None:
        """Item facts for later events (category medians wait for the next ``load``)."""
        with self._lock:
            self.items.upsert(items)

    def delete_item(self, item_id: str) -> None:
        """Later events on the item read it as unknown (as the next batch would)."""
        with self._lock:
            self.items.delete(item_id)

    def upsert_users(self, users: Iterable[User]) -> None:
        """New demographics; drops the state of users who decline personalization."""
        with self._lock:
            for user in users:
                uid = user.user_id
                old = self.users.get(uid)
                self.users[uid] = user
                if not consents(user):
                    self._drop(uid)
                    continue
                regained = old is not None and not consents(old)
                moved = (old.timezone if old else None) != user.timezone and uid in self.states
                if regained or moved:
                    self.replay(uid)

    def replay(self, user_id: str) -> None:
        """Rebuild one user's state from the log (consent back, time zone changed, an
        anonymous session merged into the user); no-op without a history loader."""
        with self._lock:
            if self._history is None or not consents(self.users.get(user_id)):
                return
            self._drop(user_id)
            self.observe(self._history(user_id))

    def _drop(self, uid: str) -> None:
        self.states.pop(uid, None)
        self._segment_of.pop(uid, None)
        self._dirty.discard(uid)

    def forget(self, user_id: str) -> None:
        """Forget a user entirely (record and state)."""
        with self._lock:
            self.users.pop(user_id, None)
            self._drop(user_id)

    # -- reads ----------------------------------------------------------------------

    def now(self) -> float:
        if self.config.reference_time == "log" and self.last_event_ts is not None:
            return self.last_event_ts
        return self.clock()

    def profile(self, user_id: str, now: float | None = None) -> UserProfile:
        """The full profile (every affinity); ``NotFoundError`` for an unknown user."""
        with self._lock:
            user, state = self.users.get(user_id), self.states.get(user_id)
            if user is None and state is None:
                raise NotFoundError(
                    f"user {user_id!r} is unknown: no user record and no event with this user_id"
                )
            now = self.now() if now is None else now
            return profile_of(user_id, user, state, now, self.params, self.scorer)

    def card(self, user_id: str, now: float | None = None) -> ProfileCard:
        """Profile (top-N affinities), tags with evidence and segment."""
        with self._lock:
            profile = self.profile(user_id, now)
            segment = self._segment(user_id, profile)
            ref = None
            if segment is not None and self.segmenter is not None:
                ref = SegmentRef(id=segment, name=self.segmenter.names_[segment])
            top = profile.truncated(self.config.top_n)
            return ProfileCard(
                **dict(top),
                tags=derive_tags(profile, self.scorer),
                segment=ref,
            )

    def _segment(self, user_id: str, profile: UserProfile) -> int | None:
        if self.space is None or self.segmenter is None or profile.behaviour is None:
            return None
        if user_id in self._dirty or user_id not in self._segment_of:
            label = int(self.segmenter.assign(self.space.transform([profile]))[0])
            self._segment_of[user_id] = label
            self._dirty.discard(user_id)
        return self._segment_of[user_id]

    def _flush(self) -> None:
        """Assign the users with new events to their nearest segment."""
        if self.space is None or self.segmenter is None or not self._dirty:
            return
        ids, profiles = self._profiles(sorted(self._dirty), self.now())
        labels = self.segmenter.assign(self.space.transform(profiles)).tolist() if ids else []
        self._segment_of.update(zip(ids, labels, strict=True))
        self._dirty.clear()

    def segments(self) -> list[SegmentSummary]:
        """Every segment with its current size (empty before the first fit)."""
        with self._lock:
            if self.segmenter is None:
                return []
            self._flush()
            sizes = [0] * len(self.segmenter.names_)
            for label in self._segment_of.values():
                sizes[label] += 1
            return [
                SegmentSummary(id=i, name=name, description=desc, size=sizes[i])
                for i, (name, desc) in enumerate(
                    zip(self.segmenter.names_, self.segmenter.descriptions_, strict=True)
                )
            ]

    def segment_users(self, segment_id: int, limit: int, offset: int = 0) -> tuple[int, list[str]]:
        """``(size, user ids)`` of one segment, ids sorted; ``NotFoundError`` if unknown."""
        with self._lock:
            n = 0 if self.segmenter is None else len(self.segmenter.names_)
            if not 0 <= segment_id < n:
                raise NotFoundError(
                    f"segment {segment_id} does not exist"
                    + (f"; segments are 0..{n - 1}" if n else "; no segments are fitted yet")
                )
            self._flush()
            members = sorted(u for u, s in self._segment_of.items() if s == segment_id)
            return len(members), members[offset : offset + limit]

    def user_ids(self) -> list[str]:
        """Users with a behavioural profile (consenting, at least one event)."""
        with self._lock:
            return sorted(
                u for u, s in self.states.items() if s.events and consents(self.users.get(u))
            )

    def affinities(
        self, user_id: str, kind: Literal["category", "brand"] = "category"
    ) -> dict[str, float]:
        """Share of each category key (or brand) in the user's decayed interest."""
        with self._lock:
            state = self.states.get(user_id)
            if state is None:
                return {}
            table, total = (
                (state.categories, state.category_total)
                if kind == "category"
                else (state.brands, state.brand_total)
            )
            return {k: v / total for k, v in table.items()} if total > 0 else {}
