"""Per-shopper cache of the ranked candidate list (the expensive part of a request).

The pipeline's candidates → rank → rules stages cost most of a recommendation's CPU
and, for a shopper whose live session did not change, give the same list again. The
cache keeps that list, after the rules that do not depend on the page or the
request's ``exclude`` (purchased items, scene items, cart, stock, category/brand/price
filters, boosts), sorted by score, keyed by:

- the request's user, session, scene, ``k``, candidate count and filters, anchor items;
- the model bundle (the cache belongs to one pipeline, built per bundle in service, so
  a model swap or promote starts with an empty cache) and the catalog's revision (any
  item upsert or delete: stock, price, category changes);
- a fingerprint of the shopper's live session as the context stage read it (recent
  items, types, times, purchases, cart, anchors). With the session in Redis, every
  process reads the same session, so an event ingested by another process changes the
  key of the very next request here: read-your-writes holds across processes without
  any message between them.

Per request, on a hit or a miss alike, the page's already-shown items and ``exclude``
are dropped from the cached list, then rerank, placements and explain run; when a
request drops nothing, their result (a function of the key's parts, the k and the MMR
strength) is kept with the entry (``CachedRanking.slates``) and rebuilt as fresh items.
The recommendation id, the shown pages and the impression log are always per request.
The answer is the one the pipeline gives without the cache (tested), except for
what changed since the entry was made and is not in the key: what other shoppers'
events taught the online models (co-visitation, popularity) and the passing of time;
``ttl_s`` bounds that. Events of the shopper (``invalidate``, called by the engine for
every event it applies, local or remote) and profile changes drop the shopper's entries at once.

Bounded: at most ``capacity`` entries (LRU), each holding only the top of the list
(what rerank reads, plus room for shown items and ``exclude``).
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shopcast.models._base import IntArray
from shopcast.serving.rules import Ranked
from shopcast.serving.sources import RecommendRequest, Shopper

__all__ = ["CachedRanking", "ResultCache", "session_fingerprint"]

#: Items kept beyond what rerank reads, for a request's ``exclude`` and shown items.
EXCLUDE_MARGIN = 64


def rerank_depth(k: int) -> int:
    """How many of the best items MMR looks at (``rerank.MMR``)."""
    return max(4 * k, k + 20)


@dataclass(slots=True)
class CachedRanking:
    """The ranked list after the request-independent rules, best first (ties in the
    pool's order), and the co-visitation contributors of its items."""

    ranked: Ranked
    because: dict[str, tuple[IntArray, IntArray]]
    #: False when items beyond ``ranked`` were cut (a request excluding many of the
    #: kept ones then recomputes).
    complete: bool
    made: float
    #: The answer's items (rerank → placements → explain) by (k, MMR diversity), as
    #: field tuples, for requests that drop nothing from ``ranked`` (all a function of
    #: the key's parts).
    slates: dict[tuple[int, float], list[tuple[Any, ...]]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        ranked: Ranked,
        because: dict[str, tuple[IntArray, IntArray]],
        keep: int,
        made: float,
    ) -> CachedRanking:
        order = np.argsort(-ranked.scores, kind="stable")
        complete = order.shape[0] <= keep
        order = order[:keep]
        sources = ranked.sources
        top = Ranked(
            ranked.items[order], ranked.scores[order], [sources[i] for i in order.tolist()]
        )
        wanted = np.sort(top.items)
        kept: dict[str, tuple[IntArray, IntArray]] = {}
        for name, (items, contributors) in because.items():  # items sorted (pipeline)
            if not items.size:
                continue
            at = np.minimum(np.searchsorted(items, wanted), items.shape[0] - 1)
            hit = items[at] == wanted
            if hit.any():
                kept[name] = (wanted[hit], contributors[at[hit]])
        return cls(top, kept, complete, made)

    def for_request(self, drop: IntArray, k: int) -> Ranked | None:
        """The list without ``drop`` (shown items, ``exclude``); None when the cut
        list no longer holds enough items for rerank."""
        ranked = self.ranked
        if drop.size:
            ranked = ranked.keep(~np.isin(ranked.items, drop))
        if not self.complete and ranked.items.shape[0] < rerank_depth(k):
            return None
        return ranked


def session_fingerprint(shopper: Shopper) -> bytes:
    """A digest of everything the context stage read for the shopper (shown items
    aside): two requests with the same digest see the same live session."""
    ctx = shopper.context
    h = hashlib.blake2b(digest_size=16)
    for array in (ctx.recent_items, ctx.recent_types, ctx.recent_ts, shopper.cart):
        h.update(np.ascontiguousarray(array).tobytes())
        h.update(b"|")
    h.update(np.ascontiguousarray(shopper.anchors).tobytes())
    h.update(b"|")
    purchases = shopper.purchases  # in the session's order: same session, same order
    h.update(np.fromiter(purchases, np.int64, len(purchases)).tobytes())
    h.update(np.fromiter(map(len, purchases.values()), np.int64, len(purchases)).tobytes())
    h.update(np.fromiter(itertools.chain.from_iterable(purchases.values()), np.float64).tobytes())
    return h.digest()


def cache_key(
    request: RecommendRequest, shopper: Shopper, n: int, version: str, revision: int
) -> tuple[Hashable, ...]:
    return (
        request.user_id,
        request.session_id,
        request.scene,
        request.k,
        n,
        request.category,
        request.brand,
        request.price_min,
        request.price_max,
        request.items,
        version,
        revision,
        session_fingerprint(shopper),
    )


def subjects_of(request: RecommendRequest) -> list[str]:
    out = []
    if request.user_id is not None:
        out.append(f"u:{request.user_id}")
    if request.session_id is not None:
        out.append(f"s:{request.session_id}")
    return out


class ResultCache:
    """LRU of ``CachedRanking`` by key, at most ``capacity`` entries younger than
    ``ttl_s``; entries are also indexed by shopper (``u:<id>``, ``s:<id>``) so that
    ``invalidate`` drops a shopper's entries at once."""

    def __init__(self, capacity: int = 10_000, ttl_s: float = 30.0) -> None:
        if capacity < 1 or ttl_s <= 0:
            raise ValueError("capacity must be >= 1 and ttl_s > 0")
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._entries: OrderedDict[tuple[Hashable, ...], tuple[CachedRanking, list[str]]] = (
            OrderedDict()
        )
        self._by_subject: dict[str, set[tuple[Hashable, ...]]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[Hashable, ...]) -> CachedRanking | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            if time.monotonic() - found[0].made > self.ttl_s:
                self._drop(key)
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found[0]

    def put(self, key: tuple[Hashable, ...], entry: CachedRanking, subjects: list[str]) -> None:
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = (entry, subjects)
            for subject in subjects:
                self._by_subject.setdefault(subject, set()).add(key)
            while len(self._entries) > self.capacity:
                self._drop(next(iter(self._entries)))

    def invalidate(self, subjects: Iterable[str]) -> None:
        """Drop every entry of these shoppers (``u:<id>`` / ``s:<id>``)."""
        with self._lock:
            for subject in subjects:
                for key in list(self._by_subject.get(subject, ())):
                    self._drop(key)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._by_subject.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: tuple[Hashable, ...]) -> None:
        found = self._entries.pop(key, None)
        if found is None:
            return
        for subject in found[1]:
            keys = self._by_subject.get(subject)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_subject[subject]
