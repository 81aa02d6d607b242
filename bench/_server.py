"""Shared by the serving benchmarks (P1, P2): a store with a trained model on UCI Online
Retail, and `shopcast serve` started on it in a separate process on loopback.

``prepare_data`` imports and trains with `shopcast demo --once` into ``<work>/demo``
(or copies an existing demo directory, so the benchmark's event posts never touch it).
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SHOPCAST = [sys.executable, "-m", "shopcast.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare_data(work: Path, data_dir: Path | None) -> Path:
    """A demo directory (``shopcast.db`` + ``models/``) under ``work`` to serve from."""
    target = work / "demo"
    if data_dir is not None:
        if not (data_dir / "shopcast.db").exists():
            raise SystemExit(f"{data_dir} has no shopcast.db (run `shopcast demo --once` there)")
        target.mkdir(parents=True)
        for name in ("shopcast.db", "shopcast.db-wal", "shopcast.db-shm"):
            if (data_dir / name).exists():
                shutil.copy2(data_dir / name, target / name)
        shutil.copytree(data_dir / "models", target / "models")
        return target
    env = {**os.environ}
    env.setdefault("SHOPCAST_DATA", str(ROOT.parent / "shared" / "datasets"))
    subprocess.run(
        [*SHOPCAST, "demo", "--once", "--data-dir", str(target)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return target


def db_url(data: Path) -> str:
    return f"sqlite:///{data / 'shopcast.db'}"


@dataclass
class Server:
    base: str
    port: int
    process: subprocess.Popen[bytes]
    #: HTTP headers a client sends (the API key when the server requires keys).
    headers: dict[str, str]
    #: Other processes serving with it (the ``shopcast worker`` of ``--workers > 1``).
    helpers: tuple[subprocess.Popen[bytes], ...] = ()

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """CPU seconds of the server, its worker processes and its helpers so far."""
        return sum(tree_cpu_seconds(p.pid) for p in (self.process, *self.helpers))


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of ``root`` and of every running descendant."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with suppress(OSError, IndexError, ValueError):
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            parent[int(d.name)] = int(fields[1])
            cpu[int(d.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo.extend(child for child, up in parent.items() if up == pid)
    return total


def api_key(work: Path, env: dict[str, str]) -> dict[str, str]:
    """When this version of the service requires API keys (``auth``): a key with the
    read and ingest scopes in ``work/keys.db``, and a per-key rate limit far above the
    benchmark's rates (a benchmark client stands for a whole shop front-end, not for
    one caller to throttle). Sets the server's environment; returns client headers."""
    from shopcast.config import Settings

    if "auth" not in Settings.model_fields:
        return {}
    from shopcast.privacy.apikeys import KeyStore

    path = work / "keys.db"
    keys = KeyStore(path)
    try:
        _, token = keys.create(["read", "ingest"], name="benchmark")
    finally:
        keys.close()
    env["SHOPCAST_AUTH__ENABLED"] = "true"
    env["SHOPCAST_AUTH__KEYS_PATH"] = str(path)
    env["SHOPCAST_AUTH__RATE_LIMIT__RATE_PER_S"] = "1000000"
    env["SHOPCAST_AUTH__RATE_LIMIT__BURST"] = "1000000"
    return {"Authorization": f"Bearer {token}"}


#: Redis for ``serve(workers > 1)`` (a unique key prefix per run, deleted after).
REDIS = os.environ.get("SHOPCAST_BENCH_REDIS", "redis://127.0.0.1:6379/0")


@contextmanager
def serve(data: Path, *, log: Path | None = None, workers: int = 1) -> Iterator[Server]:
    """`shopcast serve` over ``data`` on a free loopback port, until the block ends.

    ``workers > 1``: `shopcast serve --workers N` with the live state and event stream
    in Redis (as the scale-out deployment runs; a unique key prefix, deleted at the
    end) and one `shopcast worker` applying the stream's online aggregates.
    """
    port = free_port()
    env = {**os.environ, "SHOPCAST_MODEL_DIR": str(data / "models")}
    env["OPENBLAS_NUM_THREADS"] = "1"
    headers = api_key(data, env)
    prefix = f"bench:p1:{os.getpid()}:{port}:"
    cmd = [*SHOPCAST, "serve", "--db", db_url(data), "--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:
        env["SHOPCAST_STATE__URL"] = f"{REDIS}?prefix={prefix}"
        cmd += ["--workers", str(workers)]
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    helpers: tuple[subprocess.Popen[bytes], ...] = ()
    if workers > 1:
        helpers = (
            subprocess.Popen(
                [*SHOPCAST, "worker", "--db", db_url(data), "--name", "p1"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            ),
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the server exited with {process.returncode} (log: {log})")
            try:
                if httpx.get(f"{base}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not answer /v1/health within 300 s")
            time.sleep(0.2)
        if workers > 1:
            wait_workers(process.pid, workers)
        yield Server(base, port, process, headers, helpers)
    finally:
        for proc in (process, *helpers):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log is not None and out is not subprocess.DEVNULL:
            out.close()
        if workers > 1:
            import redis

            r = redis.Redis.from_url(REDIS)
            keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                r.delete(*keys)
            r.close()


def wait_workers(root: int, workers: int, limit_s: float = 600.0) -> None:
    """Until every uvicorn worker process has loaded (the first one answering health
    does not mean the others are up): each one's CPU stops growing."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = tree_cpu_seconds(root)
        time.sleep(2.0)
        if tree_cpu_seconds(root) - before < 0.2:
            return


def shop_ids(data: Path) -> tuple[list[str], list[str]]:
    """Real customers (with a CustomerID) and real items (StockCodes) of the store."""
    from shopcast.storage import open_store

    store = open_store(db_url(data))
    try:
        frame = store.events.frame()
    finally:
        store.close()
    customers = frame["user_id"].drop_nulls().unique().sort().to_list()
    items = (
        frame.group_by("item_id")
        .len()
        .sort(["len", "item_id"], descending=[True, False])["item_id"]
        .to_list()
    )
    return [str(c) for c in customers], [str(i) for i in items if i is not None]


def percentiles(samples: Sequence[float], unanswered: int = 0) -> dict[str, Any]:
    """p50/p95/p99/max (ms, nearest rank) of latencies in ms.

    ``unanswered`` requests (never answered in time: an overloaded server) count as
    infinitely slow; a percentile they reach is reported as None ("unbounded").
    """
    xs = sorted(samples) + [math.inf] * unanswered
    out: dict[str, Any] = {"n": len(samples)}
    if unanswered:
        out["unanswered"] = unanswered
    if not xs:
        return out
    for name, q in (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99), ("max_ms", 1.0)):
        value = xs[max(math.ceil(q * len(xs)) - 1, 0)]
        out[name] = None if math.isinf(value) else round(value, 3)
    return out


def machine() -> dict[str, object]:
    """What the figures were measured on, and how busy the machine was."""
    import platform

    info: dict[str, object] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    with suppress(OSError, StopIteration):
        info["cpu_model"] = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    with suppress(OSError):
        info["loadavg_1m_start"] = os.getloadavg()[0]
    with suppress(OSError):
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True
        ).stdout.splitlines()
        info["code"] = {"commit": head, "uncommitted_src": [line[3:] for line in dirty]}
    return info
