"""The serving engine: the model bundle in service, live sessions, the catalog index.

``observe`` is called with every freshly committed batch of events (before the
API acknowledges it), so the very next request sees the shopper's latest action:
the live session feeds the co-visitation source and the models learn online.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import polars as pl

from shopcast.config import Settings
from shopcast.domain import Event, EventType, Item, Recommendation, RecommendedItem, User
from shopcast.errors import NotFoundError, StateUnavailableError
from shopcast.experiments.layer import ExperimentLayer
from shopcast.features.live import LiveItemFeatures
from shopcast.features.profile_index import ProfileIndex
from shopcast.features.targeting import (
    Targeter,
    TargetingQuery,
    TargetingResult,
    content_neighbours,
    model_neighbours,
)
from shopcast.models._base import EVENT_CODES, Interactions, Vocabulary
from shopcast.online import OnlineState, install_announcer, open_online
from shopcast.privacy.consent import personal_data, personal_events, personalizes
from shopcast.privacy.erasure import schedule_retrain
from shopcast.privacy.unlearn import unlearn_bundle
from shopcast.serving.catalog import CatalogIndex
from shopcast.serving.impressions import ImpressionLog
from shopcast.serving.pipeline import RecommendPipeline, RecommendRequest
from shopcast.serving.result_cache import ResultCache
from shopcast.storage import Store
from shopcast.training.bundle import (
    AGGREGATE_ROLES,
    ModelBundle,
    load_bundle,
    load_current,
    train_bundle,
)
from shopcast.training.registry import open_registry

log = logging.getLogger(__name__)


def _subjects(events: Sequence[Event]) -> set[str]:
    """The live-session keys an event batch touches (user and session alike)."""
    out: set[str] = set()
    for e in events:
        if e.user_id is not None:
            out.add(f"u:{e.user_id}")
        if e.session_id is not None:
            out.add(f"s:{e.session_id}")
    return out


def interactions_from_events(
    events: Sequence[Event], users: Vocabulary, items: Vocabulary
) -> Interactions:
    """A small ``Interactions`` batch from domain events (vocabularies grow in place)."""
    evs = [e for e in events if e.item_id is not None]
    return Interactions(
        users=users,
        items=items,
        user=users.indices([e.subject for e in evs], add=True),
        item=items.indices([e.item_id for e in evs if e.item_id is not None], add=True),
        type=np.fromiter((EVENT_CODES[e.type] for e in evs), np.int64, len(evs)),
        ts=np.fromiter((e.timestamp for e in evs), np.float64, len(evs)),
        value=np.fromiter(
            (np.nan if e.value is None else e.value for e in evs), np.float64, len(evs)
        ),
    )


@dataclass
class _Serving:
    """The bundle in service with what is built on its item vocabulary."""

    bundle: ModelBundle
    catalog: CatalogIndex
    subjects: Vocabulary
    pipeline: RecommendPipeline

    def catch_up(
        self,
        store: Store,
        *,
        learn: bool = True,
        declined: Collection[str] = (),
        until: int | None = None,
    ) -> int:
        """Learn the events committed after ``bundle.trained_until`` (up to sequence
        number ``until`` when given); returns how many.

        With ``learn`` False (online learning off) nothing is learned: the bundle stays
        as trained.
        """
        if not learn:
            return 0
        frame = store.events.frame(after_seq=self.bundle.trained_until)
        if until is not None:
            frame = frame.filter(pl.col("seq") <= until)
        if frame.height == 0:
            return 0
        data = Interactions.from_frame(frame, users=self.subjects, items=self.bundle.items)
        if len(data):  # declining users' events feed only the aggregate models
            self.bundle.learn(data, personal_data(frame, data, declined))
        self.bundle.trained_until = int(frame.select(pl.col("seq").max()).item() or 0)
        return frame.height


#: Event types a live session is built from (``LiveSession.add`` skips the others).
SESSION_EVENT_TYPES = frozenset(EventType) - {EventType.IMPRESSION, EventType.SEARCH}

#: The newest events of the log that warm the in-process live sessions at start-up
#: (``Engine._warm_sessions``); older shoppers are loaded from the log on a miss.
WARM_SESSION_EVENTS = 1_000_000

#: Events accepted while Redis was down, kept to be put on the stream once it is back.
UNPUBLISHED_MAX = 200_000


class EngineListener(Protocol):
    """Sees what the engine applied: the events ``observe`` committed (not remote ones)
    and upserted items. The push engine listens (``shopcast.push``)."""

    def observe(self, events: Sequence[Event]) -> Any: ...

    def observe_items(self, items: Sequence[Item]) -> Any: ...


class Engine:
    """Answers recommendation requests and learns from every event."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        bundle: ModelBundle,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self._lock = threading.RLock()
        # Live sessions and counters: in process, or in Redis shared by every process.
        self.online: OnlineState = open_online(
            settings.state, self._history, length=settings.recommend.session_length
        )
        self.sessions = self.online.sessions
        self.origin = uuid.uuid4().hex[:12]  # this process on the event bus
        # The stream's position before the log is read: OnlineSync follows from here,
        # so the events other processes commit while this engine opens are not missed.
        self.stream_start = self._stream_position()
        self._unpublished: list[Event] = []  # accepted while Redis was down
        self.unpublished_dropped = 0  # beyond UNPUBLISHED_MAX (in the log, not streamed)
        install_announcer(settings)
        # User profiles: batch-built from the whole log here, then updated by observe.
        self.profiles = ProfileIndex.from_store(store, settings, clock=clock)
        # Item features + content index: fitted here, from the catalog (not persisted).
        cfg = settings.item_features
        self.item_features = LiveItemFeatures(
            text_backend=cfg.text_backend,
            low_stock_threshold=cfg.low_stock_threshold,
            min_group_size=cfg.min_price_group,
            refit_growth=cfg.refit_growth,
        ).rebuild(list(store.items.scan()))
        # The models catch up as far as the eager profiles read the log: the stream
        # (followed from stream_start) then brings both the same later events.
        until = self.profiles.loaded_seq if self.stream_start is not None else None
        self._install(self._prepare(bundle, until=until))
        self.opened_seq = max(until or 0, self.bundle.trained_until)  # the log as read
        self._warm_sessions()
        self._targeter: Targeter | None = None  # built from the log on first use
        self.listeners: list[EngineListener] = []  # see EngineListener
        self.impressions = (
            ImpressionLog(store.events) if settings.recommend.log_impressions else None
        )
        # A/B experiments: other model versions served beside the bundle (by version).
        self._variants: dict[str, _Serving] = {}
        self._variant_lock = threading.Lock()
        self.experiments = ExperimentLayer(self)

    @classmethod
    def open(cls, store: Store, settings: Settings) -> Engine:
        """Load the CURRENT bundle (or fit one on the log), caught up on newer events."""
        bundle = load_current(settings.model_dir, open_registry(settings))
        if bundle is None:
            bundle = train_bundle(store, settings.recommend)
        return cls(store, settings, bundle)

    def _prepare(self, bundle: ModelBundle, until: int | None = None) -> _Serving:
        """Everything that depends on the bundle, caught up on the log (up to sequence
        number ``until`` when given; no lock needed)."""
        catalog = CatalogIndex(bundle.items)
        catalog.upsert(self.store.items.scan())
        cfg = self.settings.recommend
        pipeline = RecommendPipeline(
            bundle,
            catalog,
            self.sessions,
            self.settings.merchandising,
            content=self.item_features,
            new_arrival_days=self.settings.recommend.new_arrival_days,
            source_timeout_s=self.settings.recommend.source_timeout_ms / 1000,
            profiles=self.profiles,
            recently_viewed_weight=self.settings.recommend.recently_viewed_weight,
            cache=(
                ResultCache(cfg.result_cache_size, cfg.result_cache_ttl_s)
                if cfg.result_cache
                else None
            ),
        )
        serving = _Serving(bundle, catalog, Vocabulary(), pipeline)
        self.history_cutoff = bundle.trained_until
        serving.catch_up(
            self.store,
            learn=self.settings.recommend.online_learning,
            declined=self._declined(),
            until=until,
        )
        return serving

    def _install(self, serving: _Serving) -> None:
        self.bundle = serving.bundle
        self.catalog = serving.catalog
        self.subjects = serving.subjects
        self.pipeline = serving.pipeline
        self._serving = serving

    def swap(self, bundle: ModelBundle) -> None:
        """Put another bundle in service without failing or blocking requests for long.

        The new bundle is loaded and caught up on the log outside the lock; under the
        lock only the events committed meanwhile are replayed before it takes over.
        """
        serving = self._prepare(bundle)
        with self._lock:
            serving.catch_up(
                self.store,
                learn=self.settings.recommend.online_learning,
                declined=self._declined(),
            )
            self._install(serving)

    def reload_if_changed(self) -> bool:
        """Swap to the registry's CURRENT version if another one is in service."""
        registry = open_registry(self.settings)  # PostgreSQL's, with a postgresql:// URL
        version = registry.current()
        if version is None or version == self.bundle.version:
            return False
        self.swap(load_bundle(registry.path(version)))
        return True

    def catch_up(self) -> int:
        """Learn the events committed after the bundle was trained; returns how many."""
        with self._lock:
            self._invalidate(None)
            return self._serving.catch_up(
                self.store,
                learn=self.settings.recommend.online_learning,
                declined=self._declined(),
            )

    # -- writes -----------------------------------------------------------------

    def observe(self, events: Sequence[Event]) -> None:
        """Apply committed events: models learn online, live sessions move on."""
        if not events:
            return
        cfg = self.settings.recommend
        with self._lock:
            if cfg.online_learning:
                self._learn(events)
            if cfg.live_sessions:
                self.sessions.observe(list(events))
            self.profiles.observe(events)
            self._invalidate(_subjects(events))
        self._notify("observe", events)

    def publish(self, events: Sequence[Event], after_seq: int) -> None:
        """Put committed events on the bus (embedded: count their online aggregates in
        process, ``online.MemoryCounters``). Redis down: the events
        are safe in the log and kept here (up to ``UNPUBLISHED_MAX``) to be published
        once it is back (``recover_online``)."""
        bus = self.online.bus
        if bus is None:  # embedded: the online aggregates are counted here, no worker
            weights = self.settings.recommend.event_weights
            for e in events:
                w = weights.get(e.type.value, 0.0)
                if e.item_id is not None and e.event_id is not None and w > 0:
                    self.online.counters.apply_event(
                        e.event_id, e.subject, e.item_id, w, e.timestamp
                    )
            return
        if not events:
            return
        try:
            bus.publish(events, self.origin)
        except StateUnavailableError:
            with self._lock:
                room = UNPUBLISHED_MAX - len(self._unpublished)
                self._unpublished.extend(list(events)[: max(0, room)])
                self.unpublished_dropped += max(0, len(events) - max(0, room))

    def learn_remote(self, events: Sequence[Event]) -> None:
        """Events another API process ingested: models and profiles learn them (live
        sessions are shared already)."""
        if not events:
            return
        with self._lock:
            if self.settings.recommend.online_learning:
                self._learn(events)
            self.profiles.observe(events)
            self._invalidate(_subjects(events))

    def _invalidate(self, subjects: Collection[str] | None) -> None:
        """Drop the kept ranked lists of these shoppers (``u:<id>``, ``s:<id>``; None:
        of everyone) in every serving: their next request computes afresh."""
        for serving in (self._serving, *self._variants.values()):
            cache = serving.pipeline.cache
            if cache is None:
                continue
            if subjects is None:
                cache.clear()
            else:
                cache.invalidate(subjects)

    def _stream_position(self) -> str | None:
        """The newest event-stream id; None without a bus or while Redis is down."""
        if self.online.bus is None:
            return None
        try:
            return self.online.bus.last_id()
        except StateUnavailableError:
            return None

    def needs_recovery(self) -> bool:
        return bool(self._unpublished) or bool(getattr(self.sessions, "dirty", None))

    def recover_online(self) -> int:
        """After a Redis outage: stale live sessions dropped (they reload from the log),
        the events accepted meanwhile published; how many. Raises StateUnavailableError
        while Redis is still down."""
        recover = getattr(self.sessions, "recover", None)
        if recover is not None:
            recover()
        bus = self.online.bus
        done = 0
        while bus is not None:
            with self._lock:
                chunk = self._unpublished[:1000]
            if not chunk:
                break
            bus.publish(chunk, self.origin)
            with self._lock:
                del self._unpublished[: len(chunk)]
            done += len(chunk)
        return done

    def _learn(self, events: Sequence[Event]) -> None:
        for serving in (self._serving, *self._variants.values()):
            self._learn_into(serving, events)

    def _learn_into(self, serving: _Serving, events: Sequence[Event]) -> None:
        bundle, subjects = serving.bundle, serving.subjects
        data = interactions_from_events(events, subjects, bundle.items)
        if not len(data):
            return
        personal = personal_events(events, self.profiles.users)  # consent (privacy.consent)
        if personal is None:
            bundle.learn(data)
        else:
            bundle.learn(data, interactions_from_events(personal, subjects, bundle.items))

    # -- experiments (shopcast.experiments) ---------------------------------------

    def variant(self, version: str) -> _Serving:
        """The serving of another model version (an experiment variant), loaded from the
        registry and caught up on the log on first use, then learning online."""
        if version == self.bundle.version:
            return self._serving
        found = self._variants.get(version)
        if found is not None:
            return found
        with self._variant_lock:  # one load per version, outside the engine lock
            found = self._variants.get(version)
            if found is None:
                registry = open_registry(self.settings)
                cutoff = self.history_cutoff
                found = self._prepare(load_bundle(registry.path(version)))
                self.history_cutoff = cutoff  # _prepare set it for the bundle in service
                with self._lock:
                    found.catch_up(
                        self.store,
                        learn=self.settings.recommend.online_learning,
                        declined=self._declined(),
                    )
                    self._variants[version] = found
            return found

    def keep_variants(self, versions: Collection[str]) -> None:
        """Drop the variant servings no running experiment uses."""
        with self._lock:
            for version in [v for v in self._variants if v not in versions]:
                del self._variants[version]

    def upsert_items(self, items: Sequence[Item]) -> None:
        with self._lock:
            self.catalog.upsert(items)
            self.item_features.upsert(items)
            self.profiles.upsert_items(items)
            if self._targeter is not None:
                self._targeter.upsert_items(items)
        self._notify("observe_items", items)

    def _notify(self, method: str, records: Sequence[Any]) -> None:
        """Tell the listeners; a failing listener never fails a committed write."""
        for listener in self.listeners:
            try:
                getattr(listener, method)(records)
            except Exception:
                logging.getLogger(__name__).exception("engine listener %s failed", method)

    def delete_item(self, item_id: str) -> None:
        with self._lock:
            self.catalog.delete(item_id)
            self.item_features.delete(item_id)
            self.profiles.delete_item(item_id)

    def merge_session(self, user_id: str, session_id: str) -> int:
        """An anonymous session joins the user (login): in the log and in live state."""
        moved = self.store.events.assign_session(session_id, user_id)
        with self._lock:
            self.sessions.merge(f"s:{session_id}", f"u:{user_id}")
            self._invalidate([f"s:{session_id}", f"u:{user_id}"])
        if moved:
            self.profiles.replay(user_id)  # the session's events are now the user's
            self._targeter = None  # rows changed owner in place: rebuild on next use
        return moved

    def forget_user(self, user_id: str) -> None:
        self.sessions.forget(f"u:{user_id}")
        self.profiles.forget(user_id)
        with self._lock:
            self._invalidate([f"u:{user_id}"])
            if self._targeter is not None:
                self._targeter.forget(user_id)

    def upsert_users(self, users: Sequence[User]) -> None:
        """New user records: demographics, time zone and consent of the profiles."""
        self._withdraw_consent(users)
        self.profiles.upsert_users(users)
        with self._lock:
            self._invalidate([f"u:{u.user_id}" for u in users])
            if self._targeter is not None:
                self._targeter.upsert_users(users)

    # -- privacy (shopcast.privacy: consent, erasure) ----------------------------

    def _declined(self) -> frozenset[str]:
        return self.profiles.declined()

    def _withdraw_consent(self, users: Sequence[User]) -> None:
        """Users declining personalization now: their events leave the personal models."""
        for user in users:
            if not personalizes(user) and personalizes(self.profiles.users.get(user.user_id)):
                rows = self.store.events.scan(subject=f"u:{user.user_id}")
                if not rows:
                    continue
                personal = [r for r in self.bundle.models if r not in AGGREGATE_ROLES]
                with self._lock:
                    unlearn_bundle(
                        self.bundle,
                        rows,
                        self.subjects,
                        fitted_until=self.history_cutoff,
                        roles=personal,
                    )
                    self._invalidate(None)  # the models changed for everyone
                schedule_retrain(
                    self.settings.model_dir, "consent", registry=open_registry(self.settings)
                )

    def erase_user(
        self, user_id: str, rows: Sequence[tuple[int, Event]], roles: Collection[str] | None
    ) -> dict[str, Any]:
        """Take an erased user out of what is in service: model statistics (``roles``:
        all when None), live session, profile (population models refitted), targeting."""
        with self._lock:
            models = unlearn_bundle(
                self.bundle, rows, self.subjects, fitted_until=self.history_cutoff, roles=roles
            )
            profile = user_id in self.profiles.states or user_id in self.profiles.users
            self._variants.clear()  # experiment variants reload (from pruned versions)
            self._invalidate(None)  # the models changed for everyone
            sessions = len(self.sessions)
            self.forget_user(user_id)
            live = sessions - len(self.sessions)
        self.profiles.refit()  # RFM quintiles, feature space and segments without the user
        return {"models": models, "profile": int(profile), "live_session": live}

    def _impersonal(self, request: RecommendRequest) -> RecommendRequest:
        """The request as for an unknown shopper when the user declined personalization."""
        if request.user_id is None or personalizes(self.profiles.users.get(request.user_id)):
            return request
        return replace(request, user_id=None, session_id=None)

    # -- reads ------------------------------------------------------------------

    def recommend(self, request: RecommendRequest) -> Recommendation:
        """The answer to ``request``, from the experiment variant the shopper is in."""
        now = self.clock()
        plan = self.experiments.plan(request)
        serving, degraded = self._serving, False
        if plan.version is not None:
            try:
                serving = self.variant(plan.version)
            except Exception:  # serve the default, unlabelled: the report stays clean
                log.exception("cannot serve model version %s of an experiment", plan.version)
                plan, degraded = replace(plan, experiment=None, variant=None, version=None), True
        with self._lock:
            rec = self.experiments.pipeline(plan, serving).run(self._impersonal(request), now)
        if rec.user_id != request.user_id:  # not personalized, still attributed
            rec = rec.model_copy(
                update={"user_id": request.user_id, "session_id": request.session_id}
            )
        if degraded:
            rec = rec.model_copy(update={"degraded": [*rec.degraded, "experiment"]})
        rec = self.experiments.finish(rec, plan, serving)
        if self.impressions is not None:
            self.impressions.record(rec, now)
        return rec

    def target(self, query: TargetingQuery, segment: int | None = None) -> TargetingResult:
        """The users most likely to respond to the query's target (``features.targeting``);
        ``segment`` keeps that segment's members. Built from the log on first use, then
        caught up on newer events (by sequence number) at each call."""
        with self._lock:
            only = None
            if segment is not None:
                only = self.profiles.segment_users(segment, len(self.profiles.states) + 1)[1]
            targeter = self._targeter
            if targeter is None:
                targeter = self._targeter = Targeter.from_settings(self.settings).fit(
                    self.store.events.frame(), self.store.items.scan(), self.store.users.scan()
                )
            else:
                targeter.update(self.store.events.frame(after_seq=targeter.seq_))
            content = self.item_features.content
            relations = {
                "bought_together": model_neighbours(self.bundle.bought_together, self.bundle.items),
                "covisit": model_neighbours(self.bundle.covisit, self.bundle.items),
                "similar": content_neighbours(content),
            }
            return targeter.rank(
                query,
                now=self.profiles.now(),
                relations=relations,
                content=content,
                only_users=only,
            )

    def close(self) -> None:
        """Flush what is buffered (impressions)."""
        if self.impressions is not None:
            self.impressions.close()
        self.online.close()

    def similar(self, item_id: str, k: int) -> Recommendation:
        """Items co-visited with ``item_id``, then content neighbours (text + category, for
        new items too), then popular items of its category."""
        with self._lock:
            idx = self.bundle.items.index(item_id)
            if idx < 0:
                raise NotFoundError(f"item {item_id!r} is unknown (not in the catalog or events)")
            neighbours, weights = self.bundle.covisit.neighbors(idx, k + 1)
            keep = (neighbours != idx) & self.catalog.available(neighbours)
            neighbours, weights = neighbours[keep][:k], weights[keep][:k]
            title = self.catalog.title(idx)
            items = [
                self._item(int(n), float(w), "covisit", f"often together with {title}")
                for n, w in zip(neighbours, weights, strict=True)
            ]
            seen = {idx, *neighbours.tolist()}
            if len(items) < k:  # content neighbours (cold start: no event needed)
                exclude = [self.bundle.items.id(n) for n in seen]
                for other, score in self.item_features.neighbors(item_id, 2 * k, exclude=exclude):
                    n = self.bundle.items.index(other)
                    if len(items) < k and n >= 0 and self.catalog.available(np.array([n]))[0]:
                        items.append(self._item(n, score, "content", f"similar to {title}"))
                        seen.add(n)
            path = self.catalog.category_of(idx)
            if len(items) < k and path:
                mask = self.catalog.category_mask(path[-1])
                for n in self.bundle.popularity.top(k + len(seen), mask=mask).tolist():
                    if len(items) == k:
                        break
                    if n not in seen and self.catalog.available(np.array([n]))[0]:
                        items.append(
                            self._item(n, 0.0, "category_popular", f"popular in {path[-1]}")
                        )
            return Recommendation(
                recommendation_id=uuid.uuid4().hex,
                model_version=self.bundle.version,
                items=items,
                sources={s: sum(i.source == s for i in items) for s in {i.source for i in items}},
            )

    def _item(self, idx: int, score: float, source: str, reason: str) -> RecommendedItem:
        meta = self.catalog.get(idx)
        return RecommendedItem(
            item_id=self.bundle.items.id(idx),
            score=round(score, 6),
            source=source,
            reason=reason,
            title=meta.title if meta else None,
            category=meta.category if meta else [],
            price=meta.price if meta else None,
        )

    def _warm_sessions(self) -> None:
        """In-process live sessions: build those of the users of the newest
        ``WARM_SESSION_EVENTS`` events now, in one columnar pass, so requests do not
        load them from the log one shopper at a time (shared sessions in Redis are
        loaded on a miss, as before)."""
        warm = getattr(self.sessions, "warm", None)
        if warm is None or not self.settings.recommend.live_sessions:
            return
        started = time.perf_counter()
        count = self.store.events.count()
        frame = self.store.events.frame(after_seq=max(0, count - WARM_SESSION_EVENTS))
        added = warm(frame)
        log.info("warmed %d live sessions in %.1f s", added, time.perf_counter() - started)

    def _history(self, subject: str, limit: int) -> list[Event]:
        """A shopper's latest events of the types a live session keeps (impressions and
        searches are left out in the query: a shopper's impressions would otherwise
        fill the ``limit``); without live sessions, only those the bundle saw."""
        rows = self.store.events.scan(
            subject=subject, limit=limit, newest_first=True, types=SESSION_EVENT_TYPES
        )
        if not self.settings.recommend.live_sessions:
            rows = [(seq, e) for seq, e in rows if seq <= self.history_cutoff]
        return [event for _, event in reversed(rows)]
