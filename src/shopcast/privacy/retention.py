"""Data retention: events older than ``privacy.retention_days`` are deleted.

Applied on a schedule by every API process (``maintenance``, every
``privacy.maintenance_interval_s``) and on demand by ``shopcast privacy retention
--apply`` (a dry run without ``--apply``). The models keep the aggregate statistics
those events fed until the next retrain; profiles built from the log drop them at the
next start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from fastapi.concurrency import run_in_threadpool

from shopcast.config import Settings
from shopcast.privacy.erasure import retrain_pending
from shopcast.storage import Store

if TYPE_CHECKING:
    from shopcast.api.auth import TenantPool

log = logging.getLogger(__name__)
DAY = 86_400.0


def cutoff(days: float, now: float | None = None) -> float:
    """The timestamp before which events are out of retention."""
    return (time.time() if now is None else now) - days * DAY


def expired(store: Store, days: float, now: float | None = None) -> int:
    """How many events are older than ``days`` (what ``apply_retention`` would delete)."""
    limit = cutoff(days, now)
    frame = store.events.frame()
    return int((frame["ts"] < limit).sum()) if frame.height else 0


def apply_retention(store: Store, days: float, now: float | None = None) -> int:
    """Delete the events older than ``days``; returns how many."""
    return store.events.delete_before(cutoff(days, now))


def maintain(store: Store, settings: Settings) -> dict[str, Any]:
    """One maintenance pass of one tenant: retention, then a pending retrain."""
    done: dict[str, Any] = {}
    days = settings.privacy.retention_days
    if days is not None:
        done["expired_events"] = apply_retention(store, days)
    if settings.privacy.auto_retrain:
        done["retrained"] = retrain_pending(store, settings)
    return done


async def maintenance(tenants: TenantPool, settings: Settings) -> None:
    """The API's background task: ``maintain`` every open tenant, forever."""
    while True:
        await asyncio.sleep(settings.privacy.maintenance_interval_s)
        for tenant in tenants.tenants():
            try:
                done = await run_in_threadpool(maintain, tenant.store, tenant.settings)
            except Exception:  # keep serving; try again next time
                log.exception("privacy maintenance failed for tenant %s", tenant.name)
                continue
            if done.get("expired_events") or done.get("retrained"):
                log.info("privacy maintenance of tenant %s: %s", tenant.name, done)
