"""The model registry with its metadata in PostgreSQL (``database_url = "postgresql://..."``).

Artifacts stay where ``ModelRegistry`` keeps them (``model_dir``, a path every API host
mounts); what says which version is served moves to the database, so every process and
host sees a promotion at once and two promotions never interleave:

* ``model_versions``: every version saved or promoted, with its manifest;
* ``model_current``: the version in service (one row, changed under a table lock);
* ``model_history``: one row per promotion or rollback;
* ``model_retrain``: pending retrain requests (erasures), instead of ``RETRAIN``.

``promote`` also mirrors ``CURRENT`` and ``history.jsonl`` into ``model_dir`` (while it
holds the lock, so the mirror follows commit order) and then runs the registry's
promotion hooks; tools that read the directory keep working, the database is the
authority. Connections are short-lived (one per call): the registry is
consulted every few seconds, not per request.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from shopcast.storage._pg_migrate import ensure_schema
from shopcast.storage._postgres import CONNECT_TIMEOUT_S, PgDatabase, split_url, url_schema
from shopcast.training.registry import PROMOTION_HOOKS, ModelInfo, ModelRegistry

log = logging.getLogger(__name__)
_migrated: set[str] = set()
_RETRAIN_KEY = "hashtext('shopcast-retrain:' || current_schema())"
_RETRAIN_LOCK = f"SELECT pg_try_advisory_lock({_RETRAIN_KEY})"
_RETRAIN_UNLOCK = f"SELECT pg_advisory_unlock({_RETRAIN_KEY})"
_migrated_lock = threading.Lock()


class PgModelRegistry(ModelRegistry):
    """``ModelRegistry`` whose CURRENT, history and version list live in PostgreSQL."""

    def __init__(self, model_dir: Path, database_url: str) -> None:
        super().__init__(model_dir)
        self.conninfo, _ = split_url(database_url)
        with _migrated_lock:
            if self.conninfo not in _migrated:
                with PgDatabase.errors_of(self.conninfo):
                    ensure_schema(self.conninfo, create=url_schema(database_url))
                _migrated.add(self.conninfo)

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        with (
            PgDatabase.errors_of(self.conninfo),
            psycopg.connect(self.conninfo, connect_timeout=CONNECT_TIMEOUT_S) as conn,
        ):
            yield conn  # committed when the block ends normally

    def _query(self, fn: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        with self._transaction() as conn:
            return fn(conn)

    def current(self) -> str | None:
        row = self._query(lambda c: c.execute("SELECT version FROM model_current").fetchone())
        return None if row is None else str(row[0])

    def current_stamp(self) -> tuple[str | None, float]:
        """The CURRENT version and when it was promoted."""
        sql = "SELECT version, promoted_at FROM model_current"
        row = self._query(lambda c: c.execute(sql).fetchone())
        return (None, 0.0) if row is None else (str(row[0]), float(row[1]))

    def register(self, version: str, manifest: dict[str, Any]) -> None:
        """Record a saved version (its artifacts are already under ``model_dir``)."""
        with self._transaction() as conn:
            _upsert_version(conn, version, manifest)

    def versions(self) -> list[ModelInfo]:
        """Registered versions whose artifacts this host can read, and any other complete
        bundle in ``model_dir``; newest first."""
        current = self.current()
        sql = "SELECT version, manifest FROM model_versions"
        found = {
            str(v): m
            for v, m in self._query(lambda c: c.execute(sql).fetchall())
            if (self.model_dir / str(v) / "manifest.json").is_file()
        }
        for info in super().versions():
            found.setdefault(info.version, info.manifest)
        out = [ModelInfo(v, self.model_dir / v, m, v == current) for v, m in found.items()]
        return sorted(out, key=lambda m: float(m.manifest.get("created_at", 0)), reverse=True)

    def promote(self, version: str, *, action: str = "promote") -> str | None:
        """Make ``version`` CURRENT for every process at once; returns the previous one."""
        path = self.path(version)
        manifest = json.loads((path / "manifest.json").read_text())
        now = time.time()
        with self._transaction() as conn:
            conn.execute("LOCK TABLE model_current IN EXCLUSIVE MODE")
            row = conn.execute("SELECT version FROM model_current").fetchone()
            previous = None if row is None else str(row[0])
            _upsert_version(conn, version, manifest)
            conn.execute(
                "INSERT INTO model_current (one, version, promoted_at) VALUES (TRUE, %s, %s) "
                "ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version, "
                "promoted_at = EXCLUDED.promoted_at",
                [version, now],
            )
            conn.execute(
                "INSERT INTO model_history (version, previous, at, action) VALUES (%s, %s, %s, %s)",
                [version, previous, now, action],
            )
            self._mirror(version, previous, now, action)  # under the lock: in commit order
        for hook in list(PROMOTION_HOOKS):  # committed: other processes may look now
            try:
                hook(self.model_dir, version)
            except Exception:  # an announcement is a speed-up: polling still finds it
                log.exception("promotion hook failed for %s", version)
        return previous

    def _mirror(self, version: str, previous: str | None, at: float, action: str) -> None:
        """``CURRENT`` and ``history.jsonl`` in ``model_dir``, as the file registry has them."""
        tmp = self.model_dir / f".CURRENT.{os.getpid()}.{threading.get_ident()}"
        tmp.write_text(version)
        tmp.replace(self._current_file)
        entry = {"version": version, "previous": previous, "at": at, "action": action}
        with self._history_file.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")

    def request_retrain(self, reason: str) -> None:
        """A retrain request (table ``model_retrain``), seen by every process and host."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO model_retrain (reason, at) VALUES (%s, %s)", [reason, time.time()]
            )

    def retrain_requests(self) -> list[dict[str, Any]]:
        sql = "SELECT reason, at FROM model_retrain ORDER BY at, id"
        rows = self._query(lambda c: c.execute(sql).fetchall())
        return [{"reason": r, "at": float(a)} for r, a in rows]

    @contextmanager
    def retrain_turn(self) -> Iterator[bool]:
        """One process or host at a time: a session advisory lock per schema, held on a
        connection of its own while the block runs (released if the process dies)."""
        with (
            PgDatabase.errors_of(self.conninfo),
            psycopg.connect(
                self.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            ) as conn,
        ):
            row = conn.execute(_RETRAIN_LOCK).fetchone()
            mine = bool(row and row[0])
            try:
                yield mine
            finally:
                if mine:
                    conn.execute(_RETRAIN_UNLOCK)

    def serve_retrains(self, started: float) -> list[dict[str, Any]]:
        """Delete and return the requests made before ``started`` (once: two retrainers
        finishing together each get their own)."""
        sql = "DELETE FROM model_retrain WHERE at < %s RETURNING reason, at"
        rows = self._query(lambda c: c.execute(sql, [started]).fetchall())
        return sorted(({"reason": r, "at": float(a)} for r, a in rows), key=lambda r: r["at"])

    def history(self) -> list[dict[str, Any]]:
        sql = "SELECT version, previous, at, action FROM model_history ORDER BY id"
        rows = self._query(lambda c: c.execute(sql).fetchall())
        return [{"version": v, "previous": p, "at": a, "action": x} for v, p, a, x in rows]


def _upsert_version(conn: psycopg.Connection[Any], version: str, manifest: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO model_versions (version, created_at, manifest) VALUES (%s, %s, %s::jsonb) "
        "ON CONFLICT (version) DO UPDATE SET manifest = EXCLUDED.manifest",
        [version, float(manifest.get("created_at", 0)), json.dumps(manifest)],
    )
