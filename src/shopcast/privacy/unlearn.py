"""Taking events back out of a model bundle (erasure, consent withdrawal).

A model that can remove its events' contribution implements ``Unlearner.unlearn``
(``Popularity`` and ``CoVisitation`` do; ``unlearn`` also drops per-subject state such
as live rings or, for models with user embeddings, the user's row). Models without it
keep the user until the scheduled retrain (``privacy.erasure``).

Events the bundle was *fitted* on (sequence numbers up to the bundle's training cut) and
events it *learned online* afterwards are unlearned in two calls: online learning never
paired an online event with a fitted one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from shopcast.domain import Event
from shopcast.models._base import EVENT_CODES, Interactions, Vocabulary
from shopcast.training.bundle import ModelBundle


@runtime_checkable
class Unlearner(Protocol):
    def unlearn(self, data: Interactions) -> None: ...


@runtime_checkable
class Forgetter(Protocol):
    """A model with per-user state (embeddings) that can drop it for some subjects
    (``u:<id>``): they are then scored as unknown users until the retrain."""

    def forget(self, subjects: Sequence[str]) -> int: ...


def events_data(events: Sequence[Event], subjects: Vocabulary, items: Vocabulary) -> Interactions:
    """Interactions over existing vocabularies (unknown ids become -1; nothing is added)."""
    evs = [e for e in events if e.item_id is not None]
    return Interactions(
        users=subjects,
        items=items,
        user=subjects.indices([e.subject for e in evs]),
        item=items.indices([e.item_id for e in evs if e.item_id is not None]),
        type=np.fromiter((EVENT_CODES[e.type] for e in evs), np.int64, len(evs)),
        ts=np.fromiter((e.timestamp for e in evs), np.float64, len(evs)),
        value=np.fromiter(
            (np.nan if e.value is None else e.value for e in evs), np.float64, len(evs)
        ),
    )


def unlearn_bundle(
    bundle: ModelBundle,
    rows: Sequence[tuple[int, Event]],
    subjects: Vocabulary,
    *,
    fitted_until: int,
    online: bool = True,
    roles: Collection[str] | None = None,
) -> dict[str, str]:
    """Unlearn ``(seq, event)`` rows from every model; returns what happened per role.

    ``fitted_until``: the training cut (rows at or below it were fitted); ``online``
    False: the bundle learned nothing after it (a saved bundle). ``roles``: only these
    (e.g. the aggregate ones for a user who declined personalization: the others never
    saw the events). Outcomes: ``unlearned``; ``forgotten`` (a ``Forgetter``: the users'
    embeddings are dropped at once, the rest waits for the retrain); ``retrain`` (the
    model can do neither); ``not_learned`` (a role outside ``roles``).
    """
    fitted = [e for seq, e in rows if seq <= fitted_until]
    later = [e for seq, e in rows if seq > fitted_until] if online else []
    out: dict[str, str] = {}
    for role, model in bundle.models.items():
        if roles is not None and role not in roles:
            out[role] = "not_learned"
        elif isinstance(model, Unlearner):
            for part in (fitted, later):
                model.unlearn(events_data(part, subjects, bundle.items))
            out[role] = "unlearned"
        elif isinstance(model, Forgetter):
            model.forget(sorted({e.subject for _, e in rows if e.user_id is not None}))
            out[role] = "forgotten"
        else:
            out[role] = "retrain"
    return out
