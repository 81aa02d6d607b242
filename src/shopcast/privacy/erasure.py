"""Erasure of one user (``DELETE /v1/users/{id}``, ``shopcast privacy erase``).

``erase_user`` removes, for the stored id (the pseudonym when pseudonymization is on):

1. the user's events, impressions included (pending impressions are flushed first);
2. the user record;
3. in the engine in service (API): the live session, the profile (population models
   refitted without it), the targeting rows, and the user's influence on the models at
   once (``unlearn``: popularity and co-visitation statistics decremented by the user's
   events, per-user state dropped);
4. in the model registry: ``CURRENT`` is replaced by an unlearned copy (so every other
   process and a restart serve it), and with ``privacy.erasure_prunes_models`` every
   older version, which still holds the user's statistics, is deleted;
5. what registered hooks hold (``register_hook``: push history, the push outbox, …);

and schedules a retrain without the user: a line in ``<model_dir>/RETRAIN`` (a row of
``model_retrain`` when the registry is in PostgreSQL, seen by every host), consumed
by ``shopcast train`` and, with ``privacy.auto_retrain``, by the API's maintenance task
(``retrain_pending``). The report counts what was removed per kind.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shopcast.config import Settings
from shopcast.domain import EventType
from shopcast.models._base import Vocabulary
from shopcast.privacy.consent import personalizes
from shopcast.privacy.unlearn import unlearn_bundle
from shopcast.storage import Store
from shopcast.training.bundle import AGGREGATE_ROLES, load_bundle, new_version, save_bundle
from shopcast.training.registry import RETRAIN_FILE as RETRAIN_FILE  # re-exported
from shopcast.training.registry import ModelRegistry, open_registry

if TYPE_CHECKING:
    from shopcast.serving.engine import Engine

#: ``hook(store, user_id, settings) -> removed count``, by kind (e.g. ``push_outbox``).
Hook = Callable[[Store, str, Settings], int]
_HOOKS: dict[str, Hook] = {}


def register_hook(kind: str, hook: Hook) -> None:
    """Erase what another subsystem keeps about a user (the push engine's history and
    outbox register here); the count it returns is reported under ``kind``."""
    _HOOKS[kind] = hook


def _load_hooks() -> None:
    """Import the subsystems that register hooks (also when the CLI erases)."""
    import shopcast.push.service  # noqa: F401  (push_outbox, push_history)


def erase_user(
    store: Store, user_id: str, settings: Settings, engine: Engine | None = None
) -> dict[str, Any]:
    """Erase everything about ``user_id`` (the stored id); returns the report."""
    if engine is not None and engine.impressions is not None:
        engine.impressions.flush()
    record = store.users.get(user_id)
    if engine is not None:
        record = engine.profiles.users.get(user_id, record)
    personal = personalizes(record)  # else only the aggregate models saw the events
    rows = store.events.scan(subject=f"u:{user_id}")
    removed: dict[str, int] = {
        "events": sum(e.type is not EventType.IMPRESSION for _, e in rows),
        "impressions": sum(e.type is EventType.IMPRESSION for _, e in rows),
    }
    deleted = store.events.delete_user(user_id)
    removed["events"] += max(0, deleted - len(rows))  # committed meanwhile
    removed["user_record"] = int(store.users.delete(user_id))
    roles = None if personal else AGGREGATE_ROLES
    report: dict[str, Any] = {"removed": removed, "models": {}}
    if engine is not None:
        in_service = engine.erase_user(user_id, rows, roles)
        removed["profile"] = in_service["profile"]
        removed["live_session"] = in_service["live_session"]
        report["models"] = in_service["models"]
    saved = persist_unlearned(settings, rows, roles)
    if saved is not None:
        report["model_version"] = saved["version"]
        report["models_pruned"] = saved["pruned"]
        report["models"] = report["models"] or saved["models"]
    _load_hooks()
    for kind, hook in _HOOKS.items():
        removed[kind] = hook(store, user_id, settings)
    schedule_retrain(settings.model_dir, "erasure", registry=open_registry(settings))
    report["retrain_scheduled"] = True
    return report


def persist_unlearned(
    settings: Settings, rows: list[Any], roles: frozenset[str] | None
) -> dict[str, Any] | None:
    """Save an unlearned copy of ``CURRENT`` and promote it (None without a model)."""
    registry = open_registry(settings)
    current = registry.current()
    if current is None:
        return None
    bundle = load_bundle(registry.path(current))
    models = unlearn_bundle(
        bundle, rows, Vocabulary(), fitted_until=bundle.trained_until, online=False, roles=roles
    )
    bundle.version = new_version()
    bundle.created_at = time.time()
    bundle.stats = {**bundle.stats, "unlearned_from": current}
    save_bundle(bundle, settings.model_dir, promote=True, registry=registry)
    pruned = []
    if settings.privacy.erasure_prunes_models:
        pruned = prune_versions(settings.model_dir, before=bundle.created_at, registry=registry)
    return {"version": bundle.version, "models": models, "pruned": pruned}


def prune_versions(
    model_dir: Path, *, before: float, registry: ModelRegistry | None = None
) -> list[str]:
    """Delete every version created before ``before`` except CURRENT; returns them."""
    registry = registry or ModelRegistry(model_dir)
    current = registry.current()
    gone = []
    for info in registry.versions():
        if info.version != current and float(info.manifest.get("created_at", 0)) < before:
            shutil.rmtree(info.path, ignore_errors=True)
            gone.append(info.version)
    return sorted(gone)


def schedule_retrain(
    model_dir: Path, reason: str, *, registry: ModelRegistry | None = None
) -> None:
    """Ask for a retrain on the log as it is now: a line in ``<model_dir>/RETRAIN``, or a
    row of the registry's database (``open_registry`` with a PostgreSQL URL)."""
    (registry or ModelRegistry(model_dir)).request_retrain(reason)


def pending_retrain(
    model_dir: Path, *, registry: ModelRegistry | None = None
) -> list[dict[str, Any]]:
    """The retrain requests not yet served (oldest first)."""
    return (registry or ModelRegistry(model_dir)).retrain_requests()


def retrained(
    model_dir: Path, started: float, *, prune: bool = True, registry: ModelRegistry | None = None
) -> int:
    """A training that read the log at ``started`` finished and is CURRENT: serve the
    requests made before it, and (``prune``, after an erasure) delete the versions
    older than it. Returns how many requests were served."""
    registry = registry or ModelRegistry(model_dir)
    served = registry.serve_retrains(started)
    if prune and any(r["reason"] == "erasure" for r in served):
        prune_versions(model_dir, before=started, registry=registry)
    return len(served)


def retrain_pending(store: Store, settings: Settings) -> str | None:
    """Train and promote a bundle when a retrain was requested; the new version or None."""
    from shopcast.training.bundle import train_bundle

    registry = open_registry(settings)
    if not pending_retrain(settings.model_dir, registry=registry):
        return None
    with registry.retrain_turn() as mine:  # one process or host trains for them
        if not mine or not pending_retrain(settings.model_dir, registry=registry):
            return None  # another one is training, or has served them meanwhile
        started = time.time()
        bundle = train_bundle(store, settings.recommend)
        save_bundle(bundle, settings.model_dir, promote=True, registry=registry)
        prune = settings.privacy.erasure_prunes_models
        retrained(settings.model_dir, started, prune=prune, registry=registry)
    return bundle.version
