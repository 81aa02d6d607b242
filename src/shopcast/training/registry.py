"""The model registry: versioned bundles on a shared path, promotion and rollback.

Layout of ``model_dir``::

    <version>/manifest.json   version, created_at, trained_until, data window, config, stats
    CURRENT                   the version in service (replaced atomically)
    history.jsonl             one line per promotion or rollback: version, previous, at, action
    RETRAIN                   pending retrain requests (erasures), one JSON line each

Every API process watches ``CURRENT`` and hot-swaps when it changes, so promoting
from the CLI or from one process reaches all of them. With a PostgreSQL ``database_url``
(``open_registry``) the versions, CURRENT and history are kept in the database too, and
the retrain requests only there (so every process and host's retrainer sees them).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shopcast.errors import NoRollbackError, NotFoundError

if TYPE_CHECKING:
    from shopcast.config import Settings

log = logging.getLogger(__name__)

#: What a version name may be (bundles are named by time and hash: well inside this).
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

#: Called as ``hook(model_dir, version)`` after every promotion or rollback (e.g. the
#: Redis announcement of ``shopcast.online``, so other processes swap at once).
PROMOTION_HOOKS: list[Callable[[Path, str], None]] = []
#: The file of pending retrain requests in ``model_dir`` (file registry only).
RETRAIN_FILE = "RETRAIN"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    version: str
    path: Path
    manifest: dict[str, Any]
    current: bool

    def as_dict(self) -> dict[str, Any]:
        return {**self.manifest, "version": self.version, "current": self.current}


class ModelRegistry:
    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir

    @property
    def _current_file(self) -> Path:
        return self.model_dir / "CURRENT"

    @property
    def _history_file(self) -> Path:
        return self.model_dir / "history.jsonl"

    def current(self) -> str | None:
        try:
            return self._current_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def current_stamp(self) -> tuple[str | None, float]:
        """The CURRENT version and the file's mtime (cheap to poll)."""
        try:
            return self.current(), self._current_file.stat().st_mtime
        except FileNotFoundError:
            return None, 0.0

    def path(self, version: str) -> Path:
        if not _VERSION.fullmatch(version):  # also keeps OSError (name too long) out
            raise NotFoundError(f"model version {version[:80]!r} not found")
        path = self.model_dir / version
        if not (path / "manifest.json").is_file() or path.name != version or "/" in version:
            raise NotFoundError(f"model version {version!r} not found")
        return path

    def versions(self) -> list[ModelInfo]:
        """Every complete bundle, newest first."""
        if not self.model_dir.is_dir():
            return []
        current = self.current()
        out = []
        for manifest_path in self.model_dir.glob("*/manifest.json"):
            try:
                manifest = json.loads(manifest_path.read_text())
            except (OSError, ValueError):
                continue  # a bundle being written or a damaged one is not listed
            version = manifest_path.parent.name
            out.append(ModelInfo(version, manifest_path.parent, manifest, version == current))
        return sorted(out, key=lambda m: float(m.manifest.get("created_at", 0)), reverse=True)

    def promote(self, version: str, *, action: str = "promote") -> str | None:
        """Make ``version`` CURRENT; returns the previous one."""
        self.path(version)
        # One promotion at a time across threads and processes sharing the directory, so
        # that CURRENT and the history form one chain (each entry's previous is the last).
        with (self.model_dir / ".registry.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            previous = self.current()
            tmp = self.model_dir / f".CURRENT.{os.getpid()}.{threading.get_ident()}"
            tmp.write_text(version)
            tmp.replace(self._current_file)
            entry = {"version": version, "previous": previous, "at": time.time(), "action": action}
            with self._history_file.open("a") as fh:
                fh.write(json.dumps(entry) + "\n")
        for hook in list(PROMOTION_HOOKS):
            try:
                hook(self.model_dir, version)
            except Exception:  # an announcement is a speed-up: polling still finds it
                log.exception("promotion hook failed for %s", version)
        return previous

    def register(self, version: str, manifest: dict[str, Any]) -> None:
        """Record a version just saved (a no-op here: the directory is the record)."""

    # -- retrain requests (an erasure's or a consent withdrawal's; ``privacy.erasure``) --

    @property
    def _retrain_file(self) -> Path:
        return self.model_dir / RETRAIN_FILE

    def request_retrain(self, reason: str) -> None:
        """Ask for a retrain on the log as it is now (a line in ``RETRAIN``)."""
        self.model_dir.mkdir(parents=True, exist_ok=True)
        with self._retrain_file.open("a") as fh:
            fh.write(json.dumps({"reason": reason, "at": time.time()}) + "\n")

    def retrain_requests(self) -> list[dict[str, Any]]:
        """The requests not yet served, oldest first."""
        try:
            text = self._retrain_file.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    @contextmanager
    def retrain_turn(self) -> Iterator[bool]:
        """True for one process at a time (the others get False at once): who trains for
        the pending requests (a ``flock`` on ``.retrain.lock``)."""
        self.model_dir.mkdir(parents=True, exist_ok=True)
        with (self.model_dir / ".retrain.lock").open("a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def serve_retrains(self, started: float) -> list[dict[str, Any]]:
        """Remove and return the requests made before ``started`` (a training that read
        the log then is CURRENT); later ones stay pending."""
        claimed = self.model_dir / f".{RETRAIN_FILE}.{os.getpid()}.{threading.get_ident()}"
        try:
            self._retrain_file.replace(claimed)
        except FileNotFoundError:
            return []
        requests = [json.loads(x) for x in claimed.read_text().splitlines() if x.strip()]
        later = [r for r in requests if float(r["at"]) >= started]
        if later:  # made while training: still to do
            with self._retrain_file.open("a") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in later)
        claimed.unlink()
        return [r for r in requests if float(r["at"]) < started]

    def history(self) -> list[dict[str, Any]]:
        if not self._history_file.is_file():
            return []
        return [json.loads(line) for line in self._history_file.read_text().splitlines() if line]

    def rollback(self) -> str:
        """Go back to the version served before the latest promotion still in effect.

        Promotions form a stack (a rollback pops one), so repeated rollbacks walk back
        through earlier versions rather than toggling between two.
        """
        stack: list[str] = []
        for entry in self.history():
            if entry["action"] == "rollback":
                if stack:
                    stack.pop()
            else:
                stack.append(str(entry["version"]))
        if len(stack) < 2:
            raise NoRollbackError("nothing to roll back to: no earlier version was promoted")
        target = stack[-2]
        self.promote(target, action="rollback")
        return target


def open_registry(settings: Settings) -> ModelRegistry:
    """The registry of ``settings.model_dir``; with a PostgreSQL ``database_url`` its
    metadata (versions, CURRENT, history) is kept in that database (``registry_pg``)."""
    if settings.database_url.split("://", 1)[0].lower() in ("postgresql", "postgres"):
        from shopcast.training.registry_pg import PgModelRegistry

        return PgModelRegistry(settings.model_dir, settings.database_url)
    return ModelRegistry(settings.model_dir)
