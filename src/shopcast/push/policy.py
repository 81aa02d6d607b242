"""The policy: which candidate pushes go out, in which order, on which channels.

Candidates of one user are taken by priority (highest first, then earliest); each goes
through the rules in this order, and the first that refuses names the suppression:

1. ``consent``: a user who declined personalization gets no push; ``consent["push"] =
   False`` is a global opt-out (``opt_out``); a channel is dropped when
   ``consent["push_<channel>"]`` is False, or when ``push.consent_required[channel]``
   and neither it nor ``consent["push"]`` is True. No channel left: ``consent``.
2. ``quiet_hours`` in the user's time zone (exempt triggers pass): ``defer`` makes it a
   deferred decision, re-decided when they end; ``drop`` suppresses it.
3. ``daily_cap`` / ``weekly_cap``: pushes to the user in the rolling 24 h / 7 days.
4. ``trigger_cap``: the trigger's own ``max_per_day`` for the user.
5. ``min_gap`` since the user's last push; when that push was decided in the same
   round (a competing message of higher priority) the rule is ``priority``.
6. ``no_repeat``: an item of the message's subject (the carted item, the item whose
   price dropped, …) was pushed to the user within ``no_repeat_days``; other items
   pushed then are dropped from the message (``no_items`` when none is left).
7. ``holdout``: a deterministic hash of (salt, trigger, user) puts the user in the
   trigger's holdout share: decided but not sent (the control group of the lift).

Holdout decisions count for rules 3–6 exactly like sent ones, so the two groups see
the same policy. All times are arguments (the injectable clock).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shopcast.config import PushSettings
from shopcast.domain import User
from shopcast.push.attribution import DEFERRED, HOLDOUT, SENT, SUPPRESSED, Decision
from shopcast.push.messages import PushItem, stable_id

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Candidate:
    """A push a trigger wants to send. ``subject`` items are the reason for it (never
    repeated within ``no_repeat_days``); ``extra`` items fill the message."""

    user_id: str
    trigger: str
    key: str  # what makes it unique for the trigger (the cart, the item and price, …)
    fire_at: float
    title: str
    body: str
    subject: tuple[PushItem, ...] = ()
    extra: tuple[PushItem, ...] = ()
    priority: int = 50
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def decision_id(self) -> str:
        """Derived, so a trigger that fires twice for the same reason (a retried timer,
        a restart) makes the same decision, which the outbox and journal ignore."""
        return stable_id(self.user_id, self.trigger, self.key, f"{self.fire_at:.3f}", prefix="p_")


@dataclass(frozen=True, slots=True)
class Verdict:
    candidate: Candidate
    outcome: str  # sent | holdout | suppressed | deferred
    rule: str | None = None
    channels: tuple[str, ...] = ()
    items: tuple[PushItem, ...] = ()
    defer_until: float | None = None

    def decision(self) -> Decision:
        c = self.candidate
        return Decision(
            decision_id=c.decision_id,
            user_id=c.user_id,
            trigger=c.trigger,
            outcome=self.outcome,
            items=tuple(i.item_id for i in self.items),
            created_at=c.fire_at,
            rule=self.rule,
            channels=self.channels,
        )


def in_holdout(salt: str, trigger: str, user_id: str, share: float) -> bool:
    """Deterministic: the same user stays in (or out of) a trigger's holdout."""
    if share <= 0:
        return False
    digest = hashlib.blake2b(f"{salt}\x1f{trigger}\x1f{user_id}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2**64 < share


def _minutes(text: str) -> int:
    h, m = text.split(":")
    return int(h) * 60 + int(m)


def quiet_until(settings: PushSettings, user: User | None, now: float) -> float | None:
    """The end of the quiet hours (epoch seconds) when ``now`` is inside them, else None."""
    q = settings.quiet_hours
    if not q.enabled or q.start == q.end:
        return None
    name = (user.timezone if user is not None else None) or q.default_timezone
    try:
        tz = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("UTC")
    local = datetime.fromtimestamp(now, tz)
    minute = local.hour * 60 + local.minute
    start, end = _minutes(q.start), _minutes(q.end)
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if not inside:
        return None
    day = local.date() if minute < end else local.date() + timedelta(days=1)
    wake = datetime(day.year, day.month, day.day, end // 60, end % 60, tzinfo=tz)
    return wake.timestamp()


def _consent_channels(
    settings: PushSettings, user: User | None, channels: Sequence[str]
) -> tuple[str | None, tuple[str, ...]]:
    # privacy.consent.personalizes (inlined: that module pulls in the model stack)
    if user is not None and user.consent.get("personalization", True) is False:
        return "consent", ()
    consent = user.consent if user is not None else {}
    if consent.get("push") is False:
        return "opt_out", ()
    allowed = []
    for ch in channels:
        flag = consent.get(f"push_{ch}")
        if flag is False:
            continue
        if settings.consent_required.get(ch, True) and not (
            flag is True or consent.get("push") is True
        ):
            continue
        allowed.append(ch)
    return (None if allowed else "consent"), tuple(allowed)


class Policy:
    """Decides the candidates of one user against their recent pushes."""

    def __init__(self, settings: PushSettings) -> None:
        self.settings = settings

    def window(self) -> float:
        """How far back ``decide`` needs the user's decisions."""
        return max(7 * DAY, self.settings.no_repeat_days * DAY, self.settings.min_gap)

    def decide(
        self,
        candidates: Sequence[Candidate],
        user: User | None,
        recent: Sequence[Decision],
        now: float,
    ) -> list[Verdict]:
        s = self.settings
        history = [d for d in recent if d.outcome in (SENT, HOLDOUT)]
        round_ids: set[str] = set()
        out: list[Verdict] = []
        for c in sorted(candidates, key=lambda c: (-c.priority, c.fire_at, c.trigger)):
            cfg = s.triggers[c.trigger]
            rule, channels = _consent_channels(s, user, cfg.channels)
            if rule is not None:
                out.append(Verdict(c, SUPPRESSED, rule))
                continue
            if c.trigger not in s.quiet_hours.exempt_triggers:
                wake = quiet_until(s, user, now)
                if wake is not None:
                    if s.quiet_hours.mode == "defer":
                        out.append(Verdict(c, DEFERRED, "quiet_hours", channels, defer_until=wake))
                    else:
                        out.append(Verdict(c, SUPPRESSED, "quiet_hours"))
                    continue
            day = [d for d in history if d.created_at > now - DAY]
            week = [d for d in history if d.created_at > now - 7 * DAY]
            if len(day) >= s.daily_cap:
                out.append(Verdict(c, SUPPRESSED, "daily_cap"))
                continue
            if len(week) >= s.weekly_cap:
                out.append(Verdict(c, SUPPRESSED, "weekly_cap"))
                continue
            if cfg.max_per_day is not None and (
                sum(d.trigger == c.trigger for d in day) >= cfg.max_per_day
            ):
                out.append(Verdict(c, SUPPRESSED, "trigger_cap"))
                continue
            gap = [d for d in history if d.created_at > now - s.min_gap]
            if s.min_gap > 0 and gap:
                rule = "priority" if any(d.decision_id in round_ids for d in gap) else "min_gap"
                out.append(Verdict(c, SUPPRESSED, rule))
                continue
            pushed = {
                i for d in history if d.created_at > now - s.no_repeat_days * DAY for i in d.items
            }
            if any(i.item_id in pushed for i in c.subject):
                out.append(Verdict(c, SUPPRESSED, "no_repeat"))
                continue
            items = tuple(
                dict.fromkeys(i for i in (*c.subject, *c.extra) if i.item_id not in pushed)
            )[: cfg.items]
            if not items:
                out.append(Verdict(c, SUPPRESSED, "no_items"))
                continue
            held = in_holdout(s.holdout_salt, c.trigger, c.user_id, cfg.holdout)
            verdict = Verdict(c, HOLDOUT if held else SENT, None, channels, items)
            out.append(verdict)
            history.append(replace(verdict.decision(), created_at=now))
            round_ids.add(c.decision_id)
        return out
