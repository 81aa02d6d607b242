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

Lazy mode (``profiles.resident_users`` set, for shops whose users do not all fit in a
server's memory): ``states`` and ``users`` hold at most that many users each, the least
recently used leave first; a user's state is rebuilt from the store on first use (their
events replayed through ``UserState.observe``, one indexed query), a record read with
``Profiles.get``. ``observe`` moves only resident states (the log already holds the
event a later load reads); ``declined()`` is kept from one streaming pass over the
user records at start. RFM quintiles and segments are fitted on a sample of recently
active users at start and at every ``refit`` on the resident ones; ``user_ids()``,
``segments()`` and ``segment_users()`` then speak of resident users only.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Literal, TypeVar
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
from shopcast.privacy.consent import declined as declined_of
from shopcast.storage import Store

USERS_PER_SEGMENT = 5
History = Callable[[str], Iterable[Event]]
#: Lazy mode: users whose profiles are loaded at start to fit RFM and segments on.
WARM_USERS = 5000
#: Lazy mode: the newest events whose users make the warm sample.
WARM_EVENTS = 100_000
#: Lazy mode: event ids a freshly loaded state already counts are remembered this long
#: (an event committed before the load but observed after it is not counted twice).
FRESH_S = 60.0

V = TypeVar("V")


class LruCache(OrderedDict[str, V]):
    """A dict of at most ``capacity`` entries, filled by ``load`` on a miss (``get``,
    ``[]``, ``in``); ``load`` returning None is a miss remembered (as a negative entry,
    also bounded) until the key is set. Iteration and ``len`` see loaded entries only.
    Thread-safe; ``load`` runs outside the lock (two threads may load one key)."""

    def __init__(self, capacity: int, load: Callable[[str], V | None]) -> None:
        super().__init__()
        self.capacity = capacity
        self._load = load
        self._absent: OrderedDict[str, None] = OrderedDict()
        self._guard = threading.RLock()

    def _fetch(self, key: str) -> V | None:
        with self._guard:
            if OrderedDict.__contains__(self, key):
                self.move_to_end(key)
                return OrderedDict.__getitem__(self, key)
            if key in self._absent:
                return None
        value = self._load(key)
        with self._guard:
            if value is None:
                self._absent[key] = None
                if len(self._absent) > self.capacity:
                    self._absent.popitem(last=False)
                return None
            self[key] = value
        return value

    def get(self, key: str, default: V | None = None) -> V | None:  # type: ignore[override]
        value = self._fetch(key)
        return default if value is None else value

    def __getitem__(self, key: str) -> V:
        value = self._fetch(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._fetch(key) is not None

    def __setitem__(self, key: str, value: V) -> None:
        with self._guard:
            OrderedDict.__setitem__(self, key, value)
            self.move_to_end(key)
            self._absent.pop(key, None)
            while len(self) > self.capacity:
                self.popitem(last=False)

    def pop(self, key: str, default: V | None = None) -> V | None:  # type: ignore[override]
        with self._guard:
            return OrderedDict.pop(self, key, default)

    def resident(self, key: str) -> bool:
        """Loaded now (no load attempted)."""
        with self._guard:
            return OrderedDict.__contains__(self, key)

    def forget_absent(self, key: str) -> None:
        """Try ``load`` again on the next read of ``key``."""
        with self._guard:
            self._absent.pop(key, None)

    def __iter__(self) -> Iterator[str]:
        with self._guard:
            return iter(list(OrderedDict.keys(self)))


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
        #: Eager ``from_store``: the last sequence number of the log it read (the engine's
        #: models catch up to the same point, ``Engine.opened_seq``); None otherwise.
        self.loaded_seq: int | None = None
        self.scorer = RfmScorer()
        self.space: FeatureSpace | None = None
        self.segmenter: Segmenter | None = None
        self.fitted_at: float | None = None
        self._segment_of: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._zones: dict[str, ZoneInfo] = {}
        self.resident = settings.profiles.resident_users
        self._records: Callable[[str], User | None] | None = None
        self._declined: set[str] = set()  # lazy mode: ids of users who declined
        self._fresh: dict[str, tuple[float, frozenset[str]]] = {}  # lazy: uid -> loaded ids

    @property
    def lazy(self) -> bool:
        """States load on first use (``open_lazy``), not batch-built."""
        return isinstance(self.states, LruCache)

    # -- building -------------------------------------------------------------------

    @classmethod
    def from_store(
        cls, store: Store, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> ProfileIndex:
        """Batch build from the whole event log, the catalog and the user records."""

        def history(user_id: str) -> list[Event]:
            return [e for _, e in store.events.scan(subject=f"u:{user_id}")]

        index = cls(settings, clock=clock, history=history)
        if index.resident is not None:
            index.open_lazy(store)
        else:
            frame = store.events.frame()
            index.load(frame, store.items.scan(), store.users.scan())
            index.loaded_seq = int(frame.select(pl.col("seq").max()).item() or 0)
        return index

    def open_lazy(self, store: Store) -> None:
        """Lazy mode on ``store``: the catalog's item facts, the decliners' ids (one
        streaming pass over the user records), and RFM and segments fitted on up to
        ``WARM_USERS`` users of the newest ``WARM_EVENTS`` events, loaded one by one."""
        assert self.resident is not None
        with self._lock:
            self.items = ItemTable(store.items.scan())
            self._records = store.users.get
            self._declined = set(declined_of({u.user_id: u for u in _decliners(store)}))
            self.users = LruCache(self.resident, self._load_user)
            self.states = LruCache(self.resident, self._load_state)
            recent = store.events.frame(after_seq=max(0, store.events.count() - WARM_EVENTS))
            if recent.height:
                self.last_event_ts = float(recent.select(pl.col("ts").max()).item())
            warm = recent["user_id"].drop_nulls().unique(maintain_order=True).to_list()
            for uid in warm[-min(WARM_USERS, self.resident) :]:
                self.states.get(uid)
            self.refit()

    def _load_user(self, user_id: str) -> User | None:
        return None if self._records is None else self._records(user_id)

    def _load_state(self, user_id: str) -> UserState | None:
        """A user's state replayed from the log (None: no event, or declined)."""
        if self._history is None:
            return None
        user = self.users.get(user_id)
        if not consents(user):
            return None
        events = [e for e in self._history(user_id) if e.type is not EventType.IMPRESSION]
        if not events:
            return None
        state, zone = UserState(), self._zone(user)
        for event in events:
            info = UNKNOWN_ITEM if event.item_id is None else self.items.info(event.item_id)
            state.observe(event, info, zone, self.params)
            if self.last_event_ts is None or event.timestamp > self.last_event_ts:
                self.last_event_ts = event.timestamp
        now = time.monotonic()
        self._fresh = {u: f for u, f in self._fresh.items() if now - f[0] < FRESH_S}
        self._fresh[user_id] = (now, frozenset(e.event_id for e in events if e.event_id))
        return state

    def declined(self) -> frozenset[str]:
        """Ids of the users who declined personalization."""
        with self._lock:
            return frozenset(self._declined) if self.lazy else declined_of(self.users)

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
                if self.lazy and not self._resident_state(uid, event):
                    continue  # read from the log (event included) on first use
                user = self.users.get(uid)
                if user is not None and not consents(user):
                    continue
                state = self.states.get(uid)
                if state is None:
                    state = self.states[uid] = UserState()
                info = UNKNOWN_ITEM if event.item_id is None else self.items.info(event.item_id)
                state.observe(event, info, self._zone(user), self.params)
                self._dirty.add(uid)

    def _resident_state(self, uid: str, event: Event) -> bool:
        """Lazy mode: whether ``observe`` applies ``event`` to a resident state (not
        resident: the next read loads it from the log; loaded with it: counted)."""
        states = self.states
        assert isinstance(states, LruCache)
        if not states.resident(uid):
            states.forget_absent(uid)
            return False
        fresh = self._fresh.get(uid)
        return fresh is None or event.event_id not in fresh[1]

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
                    self._declined.add(uid)
                    self._drop(uid)
                    continue
                self._declined.discard(uid)
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
            if self.lazy:
                self.states.get(user_id)  # loaded from the log again
                return
            self.observe(self._history(user_id))

    def _drop(self, uid: str) -> None:
        self.states.pop(uid, None)
        if isinstance(self.states, LruCache):
            self.states.forget_absent(uid)  # loaded again (or not) on the next read
        self._segment_of.pop(uid, None)
        self._dirty.discard(uid)

    def forget(self, user_id: str) -> None:
        """Forget a user entirely (record and state)."""
        with self._lock:
            self.users.pop(user_id, None)
            self._declined.discard(user_id)
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


def _decliners(store: Store) -> Iterator[User]:
    """User records that decline personalization, streamed (never all in memory)."""
    for user in store.users.scan():
        if not consents(user):
            yield user
