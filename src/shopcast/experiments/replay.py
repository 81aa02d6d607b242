"""A candidate model replayed on logged requests, as it would have answered then.

Off-policy evaluation needs the candidate's answer to each logged request *as of the
time it was logged*: a policy that saw the later clicks (a live session holding the
clicked item, models that learned from them) would be correlated with the rewards it
is scored on, and the estimate would be biased (upwards: the clicked items come back).
``ReplayPolicy`` therefore runs the serving pipeline with

- the candidate bundle as trained (loaded from the registry, no online catch-up), and
- a live session rebuilt from the shopper's events strictly before the request.

Unknown candidates raise ``NotFoundError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from shopcast.config import Settings
from shopcast.domain import Event, EventType
from shopcast.serving.catalog import CatalogIndex
from shopcast.serving.pipeline import RecommendPipeline, RecommendRequest
from shopcast.serving.state import MemorySessions
from shopcast.storage import Store
from shopcast.training.bundle import ModelBundle, load_bundle
from shopcast.training.registry import open_registry

if TYPE_CHECKING:
    from shopcast.serving.sources import ContentNeighbours

#: Generous: a replay is offline, a skipped heavy source would change the answer.
REPLAY_SOURCE_TIMEOUT_S = 5.0


class ReplayPolicy:
    """``policy(user, session, scene, ts) -> item ids`` of a candidate bundle."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        bundle: ModelBundle,
        *,
        k: int = 10,
        content: ContentNeighbours | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.k = k
        self.bundle = bundle
        self._asof = 0.0
        self._events: dict[str, list[Event]] = {}
        catalog = CatalogIndex(bundle.items)
        catalog.upsert(store.items.scan())
        self.pipeline = RecommendPipeline(
            bundle,
            catalog,
            self._sessions(),
            settings.merchandising,
            content=content,
            new_arrival_days=settings.recommend.new_arrival_days,
            source_timeout_s=REPLAY_SOURCE_TIMEOUT_S,
        )

    @classmethod
    def of_version(
        cls, store: Store, settings: Settings, version: str, **kwargs: object
    ) -> ReplayPolicy:
        bundle = load_bundle(open_registry(settings).path(version))
        return cls(store, settings, bundle, **kwargs)  # type: ignore[arg-type]

    def _sessions(self) -> MemorySessions:
        return MemorySessions(self._history, length=self.settings.recommend.session_length)

    def _history(self, subject: str, limit: int) -> list[Event]:
        events = self._events.get(subject)
        if events is None:
            rows = self.store.events.scan(subject=subject)
            events = self._events[subject] = [
                e for _, e in rows if e.type is not EventType.IMPRESSION
            ]
        before = [e for e in events if e.timestamp < self._asof]
        return before[-limit:]

    def __call__(
        self, user: str | None, session: str | None, scene: str, ts: float
    ) -> Sequence[str]:
        self._asof = ts
        self.pipeline.sessions = self._sessions()  # nothing carried over between requests
        request = RecommendRequest(user_id=user, session_id=session, scene=scene, k=self.k)
        rec = self.pipeline.run(request, ts)
        return [i.item_id for i in rec.items]
