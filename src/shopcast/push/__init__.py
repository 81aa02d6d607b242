"""The push engine: triggers → policy → durable outbox → channels (live streams, webhooks).

Entry points (also for a separate worker process): ``PushEngine.observe(events)``,
``PushEngine.observe_items(items)``, ``PushEngine.tick(now)`` and ``PushEngine.deliver(now)``;
storage behind the ``Outbox`` protocol (``open_outbox(url)``). ``worker_handler`` is what
``shopcast worker`` runs on the event stream (``push.worker``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shopcast.config import Settings
    from shopcast.domain import Event


def worker_handler(settings: Settings) -> Callable[[list[Event]], None] | None:
    """The push triggers for ``shopcast worker`` when ``push.in_process`` is off (the
    API processes run them otherwise); imported only when a worker starts."""
    from shopcast.push.worker import handler

    return handler(settings)
