"""Group commit of event posts: concurrent ``POST /v1/events`` share one transaction.

Every post used to commit (and fsync) its own transaction from its own thread-pool
thread. ``GroupCommit`` queues the batches of concurrent posts on the event loop; one
writer takes everything queued (waiting up to ``api.group_commit_wait_s`` for more,
unless ``api.group_commit_max_events`` are already waiting), appends it in ONE
transaction (``storage.append_batches``: one commit, one fsync), applies the stored
events to the engine, and only then answers each post. So:

- nothing is acknowledged before it is durable: a post's future is resolved after the
  group's commit returned (a failed commit fails every post of the group: none is
  acknowledged, each client retries);
- duplicates are counted as before: the batches are appended in arrival order as if
  one after the other (an event id stored by an earlier post of the group is a
  duplicate in a later one);
- read-your-writes holds: the engine learns the group's events before any 202;
- a group that fails for another reason than an unreachable store (one bad batch) is
  retried batch by batch, so one post cannot fail the others.

While a group is being committed the next posts queue up and form the next group:
under load the groups grow by themselves, at low load a post waits at most the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from fastapi.concurrency import run_in_threadpool

from shopcast.domain import Event
from shopcast.errors import StorageUnavailableError

R = TypeVar("R")


@dataclass
class _Waiting(Generic[R]):
    events: list[Event]
    future: asyncio.Future[R]


@dataclass
class GroupStats:
    """What the writer did (for tests and ``/metrics``-style checks)."""

    groups: int = 0
    posts: int = 0
    largest: int = 0
    retried_alone: int = 0
    sizes: list[int] = field(default_factory=list)  # the last 1000 groups' post counts


class GroupCommit(Generic[R]):
    """Batches of concurrent posts committed together (in a thread, off the loop).

    ``append(batches) -> results`` must append every batch in one transaction and
    return one result per batch, in order (nothing stored when it raises: the group is
    then retried batch by batch). ``apply(batches, results)`` runs right after, in the
    same thread (the engine learns the stored events); when it raises, the posts of
    the group fail with its error (their events are stored, as a retry will find).
    """

    def __init__(
        self,
        append: Callable[[list[list[Event]]], Sequence[R]],
        apply: Callable[[list[list[Event]], Sequence[R]], object] | None = None,
        *,
        wait_s: float = 0.001,
        max_events: int = 5000,
    ) -> None:
        self.append = append
        self.apply = apply
        self.wait_s = wait_s
        self.max_events = max_events
        self.stats = GroupStats()
        self._queue: list[_Waiting[R]] = []
        self._queued_events = 0
        self._writer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._full: asyncio.Event | None = None

    async def submit(self, events: list[Event]) -> R:
        """Queue one post's events; returns its result once the group is committed."""
        loop = asyncio.get_running_loop()
        if self._writer is not None and self._loop is not loop:  # another loop (tests)
            return (await run_in_threadpool(self._append_apply, [events]))[0]
        waiting = _Waiting[R](events, loop.create_future())
        self._queue.append(waiting)
        self._queued_events += len(events)
        if self._writer is None:
            self._loop = loop
            self._full = asyncio.Event()
            self._writer = loop.create_task(self._write())
        elif self._queued_events >= self.max_events and self._full is not None:
            self._full.set()
        return await waiting.future

    async def _write(self) -> None:
        try:
            while self._queue:
                if self.wait_s > 0 and self._queued_events < self.max_events:
                    assert self._full is not None
                    self._full.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), self.wait_s)
                group, self._queue, self._queued_events = self._queue, [], 0
                await self._commit(group)
        finally:
            self._writer = None
            self._loop = None
            for waiting in self._queue:  # cancelled while queued (shutdown)
                if not waiting.future.done():
                    waiting.future.cancel()
            self._queue, self._queued_events = [], 0

    async def _commit(self, group: list[_Waiting[R]]) -> None:
        stats = self.stats
        stats.groups += 1
        stats.posts += len(group)
        stats.largest = max(stats.largest, len(group))
        stats.sizes = [*stats.sizes[-999:], len(group)]
        try:
            results = await run_in_threadpool(self._append_apply, [w.events for w in group])
        except _NotApplied as failed:  # stored, but the engine could not learn them
            _fail(group, failed.error)
        except StorageUnavailableError as exc:  # the store is down: every post fails
            _fail(group, exc)
        except Exception as exc:
            if len(group) == 1:
                _fail(group, exc)
                return
            stats.retried_alone += len(group)  # one bad batch must not fail the others
            for waiting in group:
                try:
                    alone = await run_in_threadpool(self._append_apply, [waiting.events])
                except _NotApplied as failed:
                    _fail([waiting], failed.error)
                except Exception as one_exc:
                    _fail([waiting], one_exc)
                else:
                    _resolve(waiting, alone[0])
        except BaseException:  # cancelled (shutdown): nobody is answered a success
            for waiting in group:
                waiting.future.cancel()
            raise
        else:
            for waiting, result in zip(group, results, strict=True):
                _resolve(waiting, result)

    def _append_apply(self, batches: list[list[Event]]) -> Sequence[R]:
        results = self.append(batches)
        if self.apply is not None:
            try:
                self.apply(batches, results)
            except Exception as exc:
                raise _NotApplied(exc) from exc
        return results


class _NotApplied(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _resolve(waiting: _Waiting[R], result: R) -> None:
    if not waiting.future.done():  # the client may have gone (cancelled)
        waiting.future.set_result(result)


def _fail(group: list[_Waiting[R]], exc: BaseException) -> None:
    for waiting in group:
        if not waiting.future.done():
            waiting.future.set_exception(exc)
