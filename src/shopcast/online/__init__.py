"""Online state shared by API processes and workers, chosen by ``state.url``.

- ``memory://`` (default, embedded): live sessions and counters in the process
  (``serving.state.MemorySessions``, ``MemoryCounters``); no bus.
- ``redis://HOST:PORT/DB[?prefix=P]``: live sessions (``RedisSessions``), counters,
  frequency caps and online deltas (``RedisCounters``) and the event bus (``RedisBus``:
  a stream read by ``shopcast worker`` processes, model promotions on pub/sub).

The event log stays the durable truth: Redis holds what can be rebuilt from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shopcast.config import Settings, StateSettings
from shopcast.online._redis import RedisConnection, with_namespace
from shopcast.online.bus import RedisBus
from shopcast.online.counters import Counters, MemoryCounters, RedisCounters
from shopcast.online.sessions import RedisSessions
from shopcast.serving.state import Loader, MemorySessions, SessionStore

__all__ = [
    "Counters",
    "MemoryCounters",
    "OnlineState",
    "RedisBus",
    "RedisCounters",
    "RedisSessions",
    "announce_promotion",
    "install_announcer",
    "is_shared",
    "open_online",
    "with_namespace",
]


@dataclass
class OnlineState:
    url: str
    sessions: SessionStore
    counters: Counters
    bus: RedisBus | None = None
    conn: RedisConnection | None = None

    @property
    def shared(self) -> bool:
        return self.conn is not None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def is_shared(url: str) -> bool:
    return url.split("://", 1)[0].lower() in ("redis", "rediss", "unix")


def connect(cfg: StateSettings) -> RedisConnection:
    return RedisConnection(cfg.url, timeout_s=cfg.timeout_s, retry_s=cfg.retry_s)


def open_online(cfg: StateSettings, loader: Loader, *, length: int = 20) -> OnlineState:
    """The backends named by ``cfg.url`` (connecting lazily: Redis may be down now)."""
    if not is_shared(cfg.url):
        return OnlineState(
            cfg.url,
            MemorySessions(loader, length=length),
            MemoryCounters(window=cfg.covisit_window),
        )
    conn = connect(cfg)
    return OnlineState(
        cfg.url,
        RedisSessions(conn, loader, length=length, ttl_s=cfg.session_ttl_s),
        RedisCounters(
            conn,
            window=cfg.covisit_window,
            counter_ttl_s=cfg.counter_ttl_s,
            dedupe_ttl_s=cfg.dedupe_ttl_s,
        ),
        RedisBus(conn, maxlen=cfg.stream_maxlen),
        conn,
    )


def announce_promotion(settings: Settings, version: str) -> bool:
    """Publish a promotion on the ``models`` channel so every API process swaps now
    (they also poll ``CURRENT``); False with the embedded state or Redis down."""
    if not is_shared(settings.state.url):
        return False
    from shopcast.errors import StateUnavailableError

    conn = connect(settings.state)
    try:
        RedisBus(conn).announce_model(str(Path(settings.model_dir).resolve()), version)
        return True
    except StateUnavailableError:
        return False
    finally:
        conn.close()


_ANNOUNCERS: set[tuple[str, str]] = set()


def install_announcer(settings: Settings) -> None:
    """Announce every promotion of ``settings.model_dir`` made in this process on Redis
    (a ``training.registry.PROMOTION_HOOKS`` hook; once per URL and model directory)."""
    if not is_shared(settings.state.url):
        return
    from shopcast.training.registry import PROMOTION_HOOKS

    model_dir = Path(settings.model_dir).resolve()
    key = (settings.state.url, str(model_dir))
    if key in _ANNOUNCERS:
        return
    _ANNOUNCERS.add(key)

    def hook(directory: Path, version: str) -> None:
        if Path(directory).resolve() == model_dir:
            announce_promotion(settings, version)

    PROMOTION_HOOKS.append(hook)
