"""``PushEngine``: triggers → policy → durable outbox → channels, for one tenant.

The entry points, the same in the API process and in a separate worker:

- ``observe(events)``: committed events (the API calls it before answering
  ``POST /v1/events``); immediate triggers decide at once and live pushes are handed
  to the streams before it returns;
- ``observe_items(items)``: catalog upserts (price drop, back in stock, new arrivals);
- ``tick(now)``: timers that came due (abandonment, post-purchase, replenishment,
  scheduled promotions, pushes deferred by quiet hours);
- ``deliver(now)``: claims due deliveries from the outbox and sends them.

Every decision is committed to the outbox (messages + deliveries) before any channel
sees it. Times come from ``clock`` (injectable) unless passed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pydantic

from shopcast.config import PushSettings, PushTriggerSettings, Settings
from shopcast.domain import Event, EventType, Item, User
from shopcast.errors import FieldError, NotFoundError, ValidationError
from shopcast.push.attribution import DEFERRED, SENT, Attribution
from shopcast.push.channels import (
    NO_STREAM,
    Channel,
    Dead,
    LiveChannel,
    Outcome,
    Retry,
    Sent,
    WebhookChannel,
)
from shopcast.push.dispatch import Dispatcher
from shopcast.push.items import EngineItems, ItemInfo, ItemSource
from shopcast.push.messages import (
    LIVE,
    WEBHOOK,
    Claim,
    Delivery,
    DeliveryStatus,
    PushItem,
    PushMessage,
    delivery_for,
    stable_id,
)
from shopcast.push.outbox import Outbox, open_outbox
from shopcast.push.policy import Candidate, Policy, Verdict
from shopcast.push.state import ItemSnapshot, PushState, Timer
from shopcast.push.streams import StreamHub
from shopcast.push.triggers import TRIGGERS, ItemChange, Promotion, TriggerContext, ViewTracker
from shopcast.storage._sqlite import sqlite_path

if TYPE_CHECKING:
    import httpx

    from shopcast.push.fanout import LiveFanout
    from shopcast.serving.engine import Engine
    from shopcast.storage import Store

log = logging.getLogger(__name__)
DEFERRED_PREFIX = "deferred:"


def push_urls(store_url: str, settings: PushSettings) -> tuple[str, str]:
    """(outbox URL, state URL) unless ``push.outbox_url``: the store's PostgreSQL
    database, or a SQLite file beside the store's (``shop.db`` -> ``shop.push.db``); both
    hold the outbox, the trigger state and the journal (a ``memory://`` store keeps the
    state in an in-memory SQLite).

    Not the store's own SQLite file: a decision round holds its write lock while it picks
    the items, and SQLite has one writer per file, so under load the event log's commits
    waited out the busy timeout (500 "database is locked" on POST /v1/events)."""
    url = settings.outbox_url or _beside(store_url)
    if url.startswith(("sqlite", "postgresql://", "postgres://")):
        return url, url
    return "memory://", "sqlite://:memory:"


def _beside(store_url: str) -> str:
    if not store_url.startswith("sqlite"):
        return store_url
    path = sqlite_path(store_url)
    if path == ":memory:":
        return "sqlite://:memory:"
    stem, dot, ext = path.rpartition(".")
    name = f"{stem}.push.{ext}" if dot and "/" not in ext else f"{path}.push"
    return f"sqlite:///{name}"


def open_storage(outbox_url: str, state_url: str) -> tuple[Outbox, PushState, Attribution]:
    """Outbox, trigger state and journal; on one SQLite file (or PostgreSQL database)
    they share one connection per decision round, so each ``observe`` / ``tick``
    commits once (decisions with their outbox rows)."""
    if outbox_url == state_url and outbox_url.startswith(("postgresql://", "postgres://")):
        from shopcast.push._outbox_sql import PostgresOutbox
        from shopcast.push._pg import PgPushDatabase

        pg = PgPushDatabase(state_url)
        return PostgresOutbox(state_url, pg), PushState(state_url, pg), Attribution(state_url, pg)
    if outbox_url == state_url and outbox_url.startswith("sqlite"):
        from shopcast.push._outbox_sql import SqliteOutbox
        from shopcast.push._sqlite import PushDatabase

        db = PushDatabase(state_url)
        return SqliteOutbox(state_url, db), PushState(state_url, db), Attribution(state_url, db)
    return open_outbox(outbox_url), PushState(state_url), Attribution(state_url)


@dataclass
class DeliveryReport:
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    errors: list[str] = field(default_factory=list)


class PushEngine:
    def __init__(
        self,
        settings: Settings,
        *,
        outbox: Outbox,
        state: PushState,
        journal: Attribution,
        items: ItemSource,
        users: Callable[[str], User | None],
        clock: Callable[[], float] = time.time,
        hub: StreamHub | None = None,
        webhook: Channel | None = None,
        fanout: LiveFanout | None = None,
    ) -> None:
        self.outbox = outbox
        self.state = state
        self.journal = journal
        self.items = items
        self.users = users
        self.clock = clock
        self.hub = hub
        self.fanout = fanout  # Redis wake-ups of the process holding a user's stream
        self.views = ViewTracker()
        self._lock = threading.RLock()
        self.config = self._with_overrides(settings.push)
        self.policy = Policy(self.config)
        self.channels: dict[str, Channel] = {}
        if hub is not None:
            self.channels[LIVE] = LiveChannel(hub, self.config)
        if webhook is not None:
            self.channels[WEBHOOK] = webhook
        elif self.config.webhooks:
            self.channels[WEBHOOK] = WebhookChannel(self.config)
        self.dispatcher = Dispatcher(
            self.config.webhook_concurrency, self.config.webhook_per_endpoint
        )
        self._arm_promotions()

    @classmethod
    def open(
        cls,
        store: Store,
        settings: Settings,
        engine: Engine,
        *,
        clock: Callable[[], float] | None = None,
        hub: StreamHub | None = None,
        webhook_client: httpx.Client | None = None,
    ) -> PushEngine:
        """The push engine over a store and the serving engine in service."""
        outbox_url, state_url = push_urls(store.url, settings.push)

        def user(user_id: str) -> User | None:
            record = engine.profiles.users.get(user_id)
            return record if record is not None else store.users.get(user_id)

        webhook = WebhookChannel(settings.push, webhook_client) if settings.push.webhooks else None
        outbox, state, journal = open_storage(outbox_url, state_url)
        push = cls(
            settings,
            outbox=outbox,
            state=state,
            journal=journal,
            items=EngineItems(engine),
            users=user,
            clock=clock or engine.clock,
            hub=hub,
            webhook=webhook,
            fanout=cls._fanout_of(engine),
        )
        if push.fanout is not None:  # shared state: view counts shared by every process
            from shopcast.push.views import RedisViews

            counted = ("session_nudge", "browse_abandonment")  # the triggers that count views
            window = max(push.config.triggers[n].window for n in counted)
            push.views = RedisViews(push.fanout.conn, ttl_s=window)
        push.seed_items(list(store.items.scan()))
        return push

    @staticmethod
    def _fanout_of(engine: Engine) -> LiveFanout | None:
        """The live fan-out over the engine's shared state (``state.url = redis://``)."""
        conn = getattr(getattr(engine, "online", None), "conn", None)
        if conn is None:
            return None
        from shopcast.push.fanout import LiveFanout

        return LiveFanout(conn)

    # -- configuration ------------------------------------------------------------------

    def _with_overrides(self, base: PushSettings) -> PushSettings:
        overrides = self.state.trigger_overrides()
        if not overrides:
            return base
        triggers = dict(base.triggers)
        for name, doc in overrides.items():
            if name in triggers:
                triggers[name] = PushTriggerSettings.model_validate(doc)
        return base.model_copy(update={"triggers": triggers})

    def configure_trigger(self, name: str, patch: dict[str, Any]) -> PushTriggerSettings:
        """Change a trigger's settings at runtime (kept across restarts)."""
        if name not in self.config.triggers:
            raise NotFoundError(f"no push trigger {name!r}; known: {', '.join(TRIGGERS)}")
        doc = {**self.config.triggers[name].model_dump(), **patch}
        try:
            cfg = PushTriggerSettings.model_validate(doc)
        except pydantic.ValidationError as exc:
            raise ValidationError(
                f"invalid settings for trigger {name!r}",
                [
                    FieldError(".".join(str(p) for p in e["loc"]) or "body", e["msg"])
                    for e in exc.errors()
                ],
            ) from None
        with self._lock:
            self.state.put_trigger_override(name, cfg.model_dump())
            triggers = {**self.config.triggers, name: cfg}
            self.config = self.config.model_copy(update={"triggers": triggers})
            self.policy = Policy(self.config)
            for ch in self.channels.values():
                if hasattr(ch, "settings"):
                    ch.settings = self.config
        return cfg

    def _arm_promotions(self) -> None:
        timers = [
            Timer("*", "promotion", p.promotion_id, p.starts_at)
            for p in self.config.promotions
            if p.starts_at is not None
            and self.state.timer("*", "promotion", p.promotion_id) is None
        ]
        if timers:
            self.state.arm(timers)

    def _batch(self) -> AbstractContextManager[None]:
        """One transaction per decision round when outbox, state and journal share a
        connection (``open_storage``); else each write commits on its own."""
        if self.state.shares(self.outbox) and self.state.shares(self.journal):
            return self.state.batch()
        return nullcontext()

    def _context(self, now: float) -> TriggerContext:
        return TriggerContext(self.config, self.state, self.items, self.views, now)

    def _enabled(self) -> list[str]:
        return [n for n, cfg in self.config.triggers.items() if cfg.enabled and n in TRIGGERS]

    # -- inputs -------------------------------------------------------------------------

    def observe(self, events: Sequence[Event], now: float | None = None) -> list[Verdict]:
        """Committed events: triggers react, immediate pushes are decided and sent live."""
        events = [e for e in events if e.type is not EventType.IMPRESSION]
        if not events:
            return []
        now = self.clock() if now is None else now
        with self._lock, self._batch():
            ctx = self._context(now)
            viewed = [e.item_id for e in events if e.type is EventType.VIEW and e.item_id]
            info = self.items.describe(viewed) if viewed else {}
            enabled = self._enabled()
            candidates: list[Candidate] = []
            for event in events:
                if event.user_id is None:
                    continue  # anonymous sessions have no stream or consent to reach
                if event.type is EventType.VIEW and event.item_id is not None:
                    item = info.get(event.item_id)
                    self.views.add(
                        event.user_id,
                        now,
                        event.item_id,
                        item.leaf if item else None,
                        event_id=event.event_id,
                    )
                for name in enabled:
                    candidates += _safely(name, TRIGGERS[name].on_events, ctx, [event])
                if event.type is EventType.PURCHASE and event.item_id is not None:
                    self.journal.purchase(
                        event.user_id, event.item_id, now, self.config.attribution_window
                    )
            verdicts = self._decide(candidates, now)
        self._deliver_live(verdicts, now)
        return verdicts

    def seed_items(self, items: Sequence[Item]) -> int:
        """Record items never seen before without firing (at start); returns how many."""
        with self._lock, self._batch():
            known = self.state.snapshot([i.item_id for i in items])
            new = [(i.item_id, _snap(i)) for i in items if i.item_id not in known]
            if new:
                self.state.put_snapshot(new)
            return len(new)

    def observe_items(self, items: Sequence[Item], now: float | None = None) -> list[Verdict]:
        """Catalog upserts: price drops, discounts, restocks, new arrivals."""
        if not items:
            return []
        now = self.clock() if now is None else now
        with self._lock, self._batch():
            before = self.state.snapshot([i.item_id for i in items])
            changes = [ItemChange(ItemInfo.of(i), before.get(i.item_id)) for i in items]
            self.state.put_snapshot([(i.item_id, _snap(i)) for i in items])
            ctx = self._context(now)
            candidates: list[Candidate] = []
            for name in self._enabled():
                candidates += _safely(name, TRIGGERS[name].on_items, ctx, changes)
            verdicts = self._decide(candidates, now)
        self._deliver_live(verdicts, now)
        return verdicts

    def tick(self, now: float | None = None, *, limit: int = 500) -> list[Verdict]:
        """Handle the timers due at ``now`` (the scheduler calls this periodically)."""
        now = self.clock() if now is None else now
        verdicts: list[Verdict] = []
        while True:
            with self._lock, self._batch():
                timers = self.state.due(now, limit=limit, lease_s=max(60.0, self.config.lease_s))
                if not timers:
                    break
                ctx = self._context(now)
                candidates: list[Candidate] = []
                for timer in timers:
                    candidates += self._fire(ctx, timer)
                verdicts += self._decide(candidates, now)
                for timer in timers:
                    self.state.done(timer)
            if len(timers) < limit:
                break
        self._deliver_live(verdicts, now)
        return verdicts

    def _fire(self, ctx: TriggerContext, timer: Timer) -> list[Candidate]:
        cfg = self.config.triggers.get(timer.trigger)
        if cfg is None or not cfg.enabled:
            return []
        if timer.key.startswith(DEFERRED_PREFIX):  # quiet hours ended: decide again
            return [_candidate_from(timer.payload, ctx.now)]
        return _safely(timer.trigger, TRIGGERS[timer.trigger].on_timer, ctx, timer)

    def run_promotion(self, promotion_id: str, now: float | None = None) -> list[Verdict]:
        """Push a configured promotion to its best-matching users now."""
        promo = next((p for p in self.config.promotions if p.promotion_id == promotion_id), None)
        if promo is None:
            raise NotFoundError(f"no promotion {promotion_id!r} in push.promotions")
        now = self.clock() if now is None else now
        with self._lock, self._batch():
            candidates = Promotion().run(self._context(now), promo)
            verdicts = self._decide(candidates, now)
        self._deliver_live(verdicts, now)
        return verdicts

    # -- decisions ------------------------------------------------------------------------

    def _decide(self, candidates: list[Candidate], now: float) -> list[Verdict]:
        if not candidates:
            return []
        known = self.journal.known([c.decision_id for c in candidates])
        by_user: dict[str, list[Candidate]] = {}
        for c in candidates:
            if c.decision_id not in known:
                by_user.setdefault(c.user_id, []).append(c)
        verdicts: list[Verdict] = []
        self.journal.lock_users(sorted(by_user))  # other processes deciding for them wait
        for user_id, mine in by_user.items():
            recent = self.journal.recent(user_id, now - self.policy.window())
            verdicts += self.policy.decide(mine, self.users(user_id), recent, now)
        messages: list[PushMessage] = []
        deliveries: list[Delivery] = []
        sent_rows = []
        deferred = []
        for v in verdicts:
            c = v.candidate
            if v.outcome == DEFERRED and v.defer_until is not None:
                payload = _candidate_payload(c)
                key = f"{DEFERRED_PREFIX}{c.key}"
                deferred.append(Timer(c.user_id, c.trigger, key, v.defer_until, payload))
            if v.outcome != SENT:
                continue
            for channel in v.channels:
                targets = self._targets(channel, c.trigger)
                if not targets:
                    continue
                m = PushMessage(
                    message_id=stable_id(c.decision_id, channel, prefix="m_"),
                    decision_id=c.decision_id,
                    user_id=c.user_id,
                    trigger=c.trigger,
                    channel=channel,
                    title=c.title,
                    body=c.body,
                    items=v.items,
                    created_at=now,
                    priority=c.priority,
                    data=c.data,
                )
                messages.append(m)
                deliveries += [delivery_for(m, t) for t in targets]
                sent_rows.append((m.message_id, c.decision_id, c.user_id, c.trigger, channel, now))
        # Durable first: the outbox commits before anything is delivered or counted.
        self.outbox.enqueue(messages, deliveries)
        self.journal.record([v.decision() for v in verdicts])
        self.journal.sent(sent_rows)
        if deferred:
            self.state.arm(deferred)
        return verdicts

    def _targets(self, channel: str, trigger: str) -> list[str]:
        if channel == LIVE:
            return [""]
        return [e.name for e in self.config.webhooks if not e.triggers or trigger in e.triggers]

    # -- delivery ------------------------------------------------------------------------

    def _deliver_live(self, verdicts: Sequence[Verdict], now: float) -> None:
        users = {v.candidate.user_id for v in verdicts if v.outcome == SENT and LIVE in v.channels}
        if not users:
            return
        if LIVE not in self.channels:  # a worker: the API process holding the stream sends
            if self.fanout is not None:
                self.fanout.notify(users)
            return
        for user_id in sorted(users):
            self.deliver(now, channel=LIVE, user_id=user_id)

    def deliver(
        self,
        now: float | None = None,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        limit: int = 200,
        due_by: float | None = None,
    ) -> DeliveryReport:
        """Send the due deliveries of the channels this process has (all, or one);
        ``due_by`` (default ``now``) also takes those due until then."""
        now = self.clock() if now is None else now
        report = DeliveryReport()
        names = [channel] if channel is not None else list(self.channels)
        elsewhere: set[str] = set()  # live pushes whose user has no stream here
        for name in names:
            ch = self.channels.get(name)
            if ch is None:
                continue
            claims = self.outbox.claim(
                now if due_by is None else due_by,
                limit=limit,
                lease_s=self.config.lease_s,
                channel=name,
                user_id=user_id,
            )
            for claim, outcome in self._send(name, ch, claims, now):
                if outcome is None:  # its lease ran out before its turn: left to the next claim
                    continue
                d = claim.delivery
                if isinstance(outcome, Sent):
                    if self.outbox.ack(d.delivery_id, now=now):
                        self.journal.delivered(d.message_id, now)
                        report.delivered += 1
                elif isinstance(outcome, Retry):
                    self.outbox.fail(
                        d.delivery_id, now=now, error=outcome.error, retry_at=outcome.at
                    )
                    if outcome.error == NO_STREAM and d.attempts <= 1:  # first try only:
                        elsewhere.add(claim.message.user_id)  # the pollers retry the rest
                    report.retried += 1
                    report.errors.append(outcome.error)
                elif isinstance(outcome, Dead):
                    self.outbox.fail(d.delivery_id, now=now, error=outcome.error, retry_at=None)
                    report.dead += 1
                    report.errors.append(outcome.error)
        if elsewhere and self.fanout is not None:  # leases released: another process may
            self.fanout.notify(elsewhere)  # hold the stream (push.fanout)
        return report

    def _send(
        self, name: str, ch: Channel, claims: Sequence[Claim], now: float
    ) -> Iterable[tuple[Claim, Outcome | None]]:
        """Each claim with its outcome, as the sends finish: webhooks concurrently
        (``push.dispatch``: bounded, per endpoint lanes), other channels in order.
        None: the claim's lease ran out before it was sent (nothing was sent)."""
        started = time.monotonic()

        def one(claim: Claim) -> Outcome | None:
            if now + (time.monotonic() - started) >= claim.lease_until:
                return None  # another deliverer may hold it now: never send it twice
            try:
                return ch.deliver(claim, now)
            except Exception as exc:  # a channel bug: retry later, never lose it
                log.exception("push channel %s failed", name)
                return Retry(now + self.config.retry_base_s, f"{type(exc).__name__}")

        if name == WEBHOOK and len(claims) > 1:
            return self.dispatcher.run(claims, one, key=lambda c: c.delivery.target)
        return ((c, one(c)) for c in claims)

    def connected(self, user_id: str) -> DeliveryReport:
        """A live stream of the user opened: send its pending live pushes now (those
        waiting for a stream are retried every ``live_retry_s``; this looks that far
        ahead, plus a second of clock skew between hosts, so none waits for its next
        retry)."""
        if LIVE not in self.channels:
            return DeliveryReport()
        now = self.clock()
        return self.deliver(
            now, channel=LIVE, user_id=user_id, due_by=now + self.config.live_retry_s + 1.0
        )

    def wake(self, user_id: str) -> DeliveryReport:
        """A wake-up from another process (``push.fanout``): when this process holds a
        stream of the user, claim and send the user's pending live pushes now."""
        if self.hub is None or not self.hub.subscribers(user_id):
            return DeliveryReport()
        return self.connected(user_id)

    # -- feedback and reads -------------------------------------------------------------------

    def feedback(self, message_id: str, kind: str, now: float | None = None) -> bool:
        """An open or a click of a message; False when it was already recorded."""
        if kind not in ("open", "click"):
            raise ValidationError("kind", [FieldError("kind", "must be 'open' or 'click'")])
        now = self.clock() if now is None else now
        recorded = self.journal.feedback(message_id, kind, now)
        if recorded is None:
            raise NotFoundError(f"no push message {message_id!r}")
        return recorded

    def history(self, user_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """A user's messages, newest first, with their deliveries and feedback."""
        out = []
        for m in self.outbox.history(user_id, limit=limit):
            row = m.to_json()
            row["decision_id"] = m.decision_id
            row["deliveries"] = [
                d.to_json() for d in self.outbox.deliveries(message_id=m.message_id)
            ]
            row["feedback"] = self.journal.feedback_of(m.message_id)
            out.append(row)
        return out

    def metrics(self, since: float | None = None) -> dict[str, Any]:
        out = self.journal.metrics(since)
        dead = self.outbox.deliveries(status=DeliveryStatus.DEAD, limit=10_000)
        out["dead_letters"] = len(dead)
        out["dead_letter_reasons"] = dict(Counter((d.last_error or "").split(":")[0] for d in dead))
        return out

    def prune(self, now: float | None = None) -> dict[str, int]:
        """Retention (``push.retention_days``): finished outbox messages, the journal,
        interest and purchases older than that; pending deliveries and timers stay."""
        now = self.clock() if now is None else now
        before = now - self.config.retention_days * 86_400
        with self._lock, self._batch():
            return {
                "push_outbox": self.outbox.prune(before),
                "push_history": self.journal.prune(before) + self.state.prune(before),
            }

    # -- erasure and lifecycle ---------------------------------------------------------------

    def delete_user(self, user_id: str) -> dict[str, int]:
        with self._lock, self._batch():
            self.views.forget(user_id)
            return {
                "push_outbox": self.outbox.delete_user(user_id),
                "push_history": self.journal.delete_user(user_id) + self.state.delete_user(user_id),
            }

    def close(self) -> None:
        self.dispatcher.close()
        for ch in self.channels.values():
            close = getattr(ch, "close", None)
            if close is not None:
                close()
        self.outbox.close()
        self.state.close()
        self.journal.close()


def _safely(
    name: str, call: Callable[[TriggerContext, Any], list[Candidate]], ctx: TriggerContext, arg: Any
) -> list[Candidate]:
    """One trigger's candidates; a trigger that raises is logged and skipped, so the
    others (and the state they wrote in the round's transaction) still go through."""
    try:
        return call(ctx, arg)
    except Exception:
        log.exception("push trigger %s failed", name)
        return []


def _snap(item: Item) -> ItemSnapshot:
    return ItemSnapshot(item.price, item.original_price, item.stock)


def _candidate_payload(c: Candidate) -> dict[str, Any]:
    return {
        "user_id": c.user_id,
        "trigger": c.trigger,
        "key": c.key,
        "title": c.title,
        "body": c.body,
        "subject": [i.to_json() for i in c.subject],
        "extra": [i.to_json() for i in c.extra],
        "priority": c.priority,
        "data": c.data,
    }


def _candidate_from(payload: dict[str, Any], now: float) -> Candidate:
    return Candidate(
        user_id=payload["user_id"],
        trigger=payload["trigger"],
        key=f"{payload['key']}:after-quiet",
        fire_at=now,
        title=payload["title"],
        body=payload["body"],
        subject=tuple(PushItem.from_json(x) for x in payload["subject"]),
        extra=tuple(PushItem.from_json(x) for x in payload["extra"]),
        priority=int(payload["priority"]),
        data=dict(payload["data"]),
    )
