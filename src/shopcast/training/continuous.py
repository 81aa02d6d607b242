"""Continuous learning: background retraining behind a quality gate, and rollback.

``ContinuousLearner.run_once`` (every ``continuous.check_interval_s`` on a background
thread of one API process, with ``continuous.enabled``; a file lock in ``model_dir``
keeps other processes out) does two things:

1. **Guard** the latest promotion (by anyone: this loop, an experiment, the CLI). Once
   the promoted version ``V`` has ``guard_min_impressions`` impressions outside
   experiments, its CTR (attributed, ``feedback``) is compared with the previous
   version's over the ``guard_s`` before the promotion, per shopper with the delta
   method (``experiments.stats``). If it fell by more than ``max_ctr_drop`` and the
   drop is significant (two-sided p < ``experiments.alpha``), the registry rolls back.
   After ``guard_s`` without such a drop ``V`` is kept. Verdicts are written to
   ``<model_dir>/guard.json`` (one per version).
2. **Retrain** when due: the model in service is older than ``retrain_interval_s``, or
   the item distribution drifted (Jensen–Shannon divergence, base 2, between the item
   events since training and as many events before it, above ``drift_threshold``),
   and at least ``min_new_events`` item events arrived.

The **gate**: let ``B`` be the later of the incumbent's ``trained_until`` and the
first event of the last ``holdout_s``. The holdout is the item events after ``B``
(views, clicks, carts, purchases; at most ``holdout_events`` sampled, seeded). The
candidate is trained on the events up to ``B`` — warm (``warm_start``: the incumbent
as trained plus the events since, learned incrementally) or full (``train_bundle``)
— and the incumbent is caught up to ``B`` the same way it is served (online
learning). Both answer each holdout event's request as of its time
(``experiments.replay``: the serving pipeline, history strictly before) and score a
hit when the event's item is in the top 10. The candidate is promoted only if its
hit rate is not below the incumbent's by more than ``tolerance`` (relative); it first
learns the holdout events, so it is current. Every outcome is a line in
``<model_dir>/continuous.jsonl``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from shopcast.config import Settings
from shopcast.experiments.replay import ReplayPolicy
from shopcast.experiments.stats import compare, ratio
from shopcast.models import Interactions
from shopcast.privacy.consent import personal_data
from shopcast.storage import Store
from shopcast.training.bundle import (
    ModelBundle,
    load_bundle,
    new_version,
    save_bundle,
    train_bundle,
)
from shopcast.training.registry import open_registry

if TYPE_CHECKING:
    from shopcast.feedback.tracker import FeedbackTracker

log = logging.getLogger(__name__)

#: Event types the gate predicts (the next thing a shopper engages with).
HOLDOUT_TYPES = ("view", "click", "add_to_cart", "purchase")
GATE_K = 10

#: ``trainer(store_up_to_B, settings, incumbent_or_None) -> candidate bundle``.
Trainer = Callable[[Store, Settings, ModelBundle | None], ModelBundle]


@dataclass
class Outcome:
    action: str  # promoted | rejected | skipped | rolled_back | kept | waiting
    reason: str
    version: str | None = None
    incumbent: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


class _UpTo:
    """A read-only view of a store whose event log ends at sequence ``seq``."""

    def __init__(self, store: Store, seq: int) -> None:
        self._store = store
        self._seq = seq
        self.events = self
        self.items = store.items
        self.users = store.users
        self.url = store.url

    def frame(self, *, after_seq: int = 0) -> pl.DataFrame:
        return self._store.events.frame(after_seq=after_seq).filter(pl.col("seq") <= self._seq)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store.events, name)


def declined_users(store: Store) -> list[str]:
    return [u.user_id for u in store.users.scan() if u.consent.get("personalization") is False]


def learn_frame(bundle: ModelBundle, frame: pl.DataFrame, declined: list[str]) -> None:
    """``bundle`` learns ``frame``'s events as the engine's catch-up does (consent kept)."""
    frame = frame.filter(pl.col("type") != "impression")
    if frame.height == 0:
        return
    data = Interactions.from_frame(frame, items=bundle.items)
    if len(data):
        bundle.learn(data, personal_data(frame, data, declined))
    bundle.trained_until = max(bundle.trained_until, int(frame["seq"].max()))  # type: ignore[arg-type]


def default_trainer(store: Store, settings: Settings, incumbent: ModelBundle | None) -> ModelBundle:
    """Warm: the incumbent plus the new events; full: ``train_bundle`` on the view."""
    compatible = (
        incumbent is not None
        and incumbent.config == settings.recommend.model_dump(mode="json")
        and not (settings.training.embedding or settings.training.sequence)
    )
    if settings.continuous.warm_start and compatible and incumbent is not None:
        started = time.perf_counter()
        frame = store.events.frame(after_seq=incumbent.trained_until)
        learn_frame(incumbent, frame, declined_users(store))
        incumbent.version = new_version()
        incumbent.created_at = time.time()
        incumbent.stats = {
            **incumbent.stats,
            "warm_start": True,
            "warm_events": frame.height,
            "train_s": round(time.perf_counter() - started, 3),
        }
        return incumbent
    return train_bundle(store, settings.recommend, training=settings.training, settings=settings)


def js_divergence(a: pl.Series, b: pl.Series) -> float:
    """Jensen–Shannon divergence (base 2, in [0, 1]) of two samples' value frequencies."""
    if a.len() == 0 or b.len() == 0:
        return 0.0
    ca = a.value_counts(name="n").rename({a.name: "k"})
    cb = b.value_counts(name="n").rename({b.name: "k"})
    joined = ca.join(cb, on="k", how="full", coalesce=True).fill_null(0)
    p = joined["n"].to_numpy() / a.len()
    q = joined["n_right"].to_numpy() / b.len()
    m = (p + q) / 2

    def kl(x: np.ndarray, y: np.ndarray) -> float:
        nz = x > 0
        return float((x[nz] * np.log2(x[nz] / y[nz])).sum())

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


class ContinuousLearner:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        trainer: Trainer = default_trainer,
        tracker: FeedbackTracker | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self.cfg = settings.continuous
        self.trainer = trainer
        self.clock = clock
        if tracker is None:
            from shopcast.feedback.tracker import tracker_for

            tracker = tracker_for(store, settings)
        self.tracker = tracker
        self.registry = open_registry(settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- bookkeeping ------------------------------------------------------------------

    @property
    def _log_file(self) -> Path:
        return self.settings.model_dir / "continuous.jsonl"

    @property
    def _guard_file(self) -> Path:
        return self.settings.model_dir / "guard.json"

    def _record(self, outcome: Outcome) -> Outcome:
        self.settings.model_dir.mkdir(parents=True, exist_ok=True)
        with self._log_file.open("a") as fh:
            fh.write(json.dumps(asdict(outcome)) + "\n")
        log.info("continuous learning: %s (%s) %s", outcome.action, outcome.reason, outcome.version)
        return outcome

    def outcomes(self) -> list[dict[str, Any]]:
        if not self._log_file.is_file():
            return []
        return [json.loads(line) for line in self._log_file.read_text().splitlines() if line]

    def _verdicts(self) -> dict[str, str]:
        try:
            return dict(json.loads(self._guard_file.read_text()))
        except (OSError, ValueError):
            return {}

    def _verdict(self, version: str, verdict: str) -> None:
        verdicts = {**self._verdicts(), version: verdict}
        tmp = self._guard_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(verdicts))
        tmp.replace(self._guard_file)

    def _incumbent(self) -> ModelBundle | None:
        version = self.registry.current()
        return None if version is None else load_bundle(self.registry.path(version))

    # -- drift and schedule -------------------------------------------------------------

    def drift(self, incumbent: ModelBundle | None = None) -> dict[str, Any]:
        """New item events since training and their drift from as many before."""
        incumbent = incumbent or self._incumbent()
        until = incumbent.trained_until if incumbent is not None else 0
        new = self._item_events(self.store.events.frame(after_seq=until))
        if new.height == 0 or until == 0:
            return {"new_events": new.height, "js_divergence": 0.0, "unseen_item_share": 0.0}
        before = self._item_events(
            self.store.events.frame(after_seq=max(0, until - 4 * new.height))
        ).filter(pl.col("seq") <= until)
        before = before.tail(new.height)
        known = set(incumbent.items.ids) if incumbent is not None else set()
        unseen = float(np.mean([i not in known for i in new["item_id"].to_list()]))
        return {
            "new_events": new.height,
            "js_divergence": round(js_divergence(new["item_id"], before["item_id"]), 6),
            "unseen_item_share": round(unseen, 6),
        }

    @staticmethod
    def _item_events(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter(pl.col("type").is_in(HOLDOUT_TYPES) & pl.col("item_id").is_not_null())

    def due(self) -> str | None:
        """Why a retrain is due now (``schedule`` / ``drift``), or None."""
        incumbent = self._incumbent()
        if incumbent is None:
            return "no model"
        d = self.drift(incumbent)
        if d["new_events"] < self.cfg.min_new_events:
            return None
        if self.clock() - incumbent.created_at >= self.cfg.retrain_interval_s:
            return "schedule"
        if d["js_divergence"] > self.cfg.drift_threshold:
            return "drift"
        return None

    # -- retrain with the gate ----------------------------------------------------------

    def retrain(self, reason: str = "manual") -> Outcome:
        started = time.perf_counter()
        incumbent = self._incumbent()
        frame = self.store.events.frame()
        if frame.height == 0:
            return self._record(Outcome("skipped", "empty log"))
        last_seq = int(frame["seq"].max())  # type: ignore[arg-type]
        if incumbent is None:  # nothing to compare with: the first model is trained
            bundle = train_bundle(
                self.store, self.settings.recommend, training=self.settings.training,
                settings=self.settings,
            )  # fmt: skip
            save_bundle(bundle, self.settings.model_dir, registry=self.registry)
            return self._record(Outcome("promoted", "first model", bundle.version))
        items = self._item_events(frame)
        last_ts = float(items["ts"].max()) if items.height else 0.0  # type: ignore[arg-type]
        recent = items.filter(pl.col("ts") >= last_ts - self.cfg.holdout_s)
        first = int(recent["seq"].min()) - 1 if recent.height else last_seq  # type: ignore[arg-type]
        boundary = max(incumbent.trained_until, first)
        holdout = items.filter(pl.col("seq") > boundary)
        if holdout.height < 20:
            return self._record(
                Outcome("skipped", f"{reason}: holdout too small ({holdout.height} events)",
                        incumbent=incumbent.version)
            )  # fmt: skip
        view = _UpTo(self.store, boundary)
        fresh = load_bundle(self.registry.path(incumbent.version))  # the trainer may mutate
        candidate = self.trainer(view, self.settings, fresh)  # type: ignore[arg-type]
        train_s = time.perf_counter() - started
        declined = declined_users(self.store)
        learn_frame(incumbent, view.frame(after_seq=incumbent.trained_until), declined)
        sample = holdout.sample(
            min(self.cfg.holdout_events, holdout.height), seed=0, shuffle=False
        ).sort("seq")
        inc_hr = self._hit_rate(incumbent, sample)
        cand_hr = self._hit_rate(candidate, sample)
        details = {
            "reason": reason,
            "boundary_seq": boundary,
            "holdout_events": sample.height,
            f"incumbent_hr@{GATE_K}": round(inc_hr, 6),
            f"candidate_hr@{GATE_K}": round(cand_hr, 6),
            "train_s": round(train_s, 3),
            "warm_start": bool(candidate.stats.get("warm_start", False)),
        }
        if cand_hr < inc_hr * (1 - self.cfg.tolerance):
            return self._record(
                Outcome("rejected", "worse than the incumbent on the recent holdout",
                        candidate.version, incumbent.version, details)
            )  # fmt: skip
        learn_frame(candidate, frame.filter(pl.col("seq") > boundary), declined)
        candidate.trained_until = last_seq
        save_bundle(candidate, self.settings.model_dir, registry=self.registry)
        details["total_s"] = round(time.perf_counter() - started, 3)
        return self._record(
            Outcome("promoted", reason, candidate.version, incumbent.version, details)
        )

    def _hit_rate(self, bundle: ModelBundle, sample: pl.DataFrame) -> float:
        policy = ReplayPolicy(self.store, self.settings, bundle, k=GATE_K)
        hits = 0
        for user, session, item, ts in sample.select(
            "user_id", "session_id", "item_id", "ts"
        ).iter_rows():
            hits += item in policy(user, session, "home", float(ts))
        return hits / max(1, sample.height)

    # -- guard ----------------------------------------------------------------------------

    def guard(self) -> Outcome | None:
        """Roll back the latest promotion if the online CTR dropped (see the module)."""
        history = [h for h in self.registry.history() if h.get("action") != "register"]
        if not history or history[-1].get("action") == "rollback":
            return None
        last = history[-1]
        version, previous, at = last["version"], last.get("previous"), float(last["at"])
        if previous is None or previous == version or version in self._verdicts():
            return None
        imps = self.tracker.attributed(fresh=True).filter(pl.col("experiment").is_null())
        after = imps.filter((pl.col("model_version") == version) & (pl.col("ts") >= at))
        before = imps.filter(
            (pl.col("model_version") == previous)
            & (pl.col("ts") < at)
            & (pl.col("ts") >= at - self.cfg.guard_s)
        )
        now = self.clock()
        if (
            after.height < self.cfg.guard_min_impressions
            or before.height < self.cfg.guard_min_impressions
        ):
            if now - at >= self.cfg.guard_s:
                self._verdict(version, "kept")
                return self._record(
                    Outcome("kept", "guard window over (too few impressions to judge)",
                            version, previous)
                )  # fmt: skip
            return None
        a, b = _ctr(after), _ctr(before)
        c = compare(a, b, self.settings.experiments.alpha)
        details = {
            "ctr_after": a.value,
            "ctr_before": b.value,
            "impressions_after": after.height,
            "impressions_before": before.height,
            "p_value": c.p_value,
        }
        drop = None if not b.value or a.value is None else 1 - a.value / b.value
        details["drop"] = drop
        if (
            drop is not None
            and drop > self.cfg.max_ctr_drop
            and c.p_value is not None
            and c.p_value < self.settings.experiments.alpha
        ):
            target = self.registry.rollback()
            self._verdict(version, "rolled_back")
            return self._record(
                Outcome("rolled_back", f"CTR fell {drop:.1%} after the promotion",
                        version, target, details)
            )  # fmt: skip
        if now - at >= self.cfg.guard_s:
            self._verdict(version, "kept")
            return self._record(
                Outcome("kept", "no significant CTR drop", version, previous, details)
            )
        return None

    # -- loop -----------------------------------------------------------------------------

    def run_once(self) -> list[Outcome]:
        out: list[Outcome] = []
        with self._exclusive() as mine:
            if not mine:
                return out
            guarded = self.guard()
            if guarded is not None:
                out.append(guarded)
            reason = self.due()
            if reason is not None:
                out.append(self.retrain(reason))
        return out

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[bool]:
        self.settings.model_dir.mkdir(parents=True, exist_ok=True)
        with (self.settings.model_dir / ".continuous.lock").open("w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def start(self) -> ContinuousLearner:
        def loop() -> None:
            while not self._stop.wait(self.cfg.check_interval_s):
                try:
                    self.run_once()
                except Exception:  # keep the loop alive; the next round retries
                    log.exception("continuous learning round failed")

        self._thread = threading.Thread(target=loop, name="continuous", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _ctr(imps: pl.DataFrame) -> Any:
    per = imps.group_by("subject").agg(pl.len().alias("n"), pl.col("clicked").sum().alias("c"))
    return ratio(per["c"].to_numpy().astype(float), per["n"].to_numpy().astype(float))


def start_continuous(store: Store, settings: Settings) -> ContinuousLearner | None:
    """The background learner of an API process (None unless ``continuous.enabled``)."""
    if not settings.continuous.enabled:
        return None
    return ContinuousLearner(store, settings).start()
