"""Load generator for the serving benchmarks, run as its own process.

Reads a JSON spec on stdin, writes a JSON result on stdout. HTTP/1.1 keep-alive over
raw asyncio streams (uvloop when installed): far less client overhead than an HTTP
library, so the figures are the server's.

- ``open``: requests are *scheduled* at a fixed rate whatever the server does; each
  latency runs from the scheduled time to the end of the response, so time spent
  waiting for a free connection (queueing) counts. Up to ``connections`` connections.
- ``closed``: ``connections`` clients each send the next request as soon as the
  previous answer arrived: the most the server sustains at that concurrency.

Only requests scheduled (open) or completed (closed) in the measured window, after
``warmup_s``, are counted. Kinds: ``rec`` (GET recommendations for a real customer),
``event`` (POST /v1/events, 1-5 view/add_to_cart events of real items, unique ids) and
``health`` (GET /v1/health, the no-op endpoint).
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Spec:
    port: int
    mode: str
    mix: dict[str, float]
    seconds: float
    warmup_s: float
    customers: list[str]
    items: list[str]
    rate: float = 500.0
    connections: int = 64
    k: int = 10
    seed: int = 0
    run_id: str = "p1"
    #: Open loop: how long to wait for the last answers after the last send.
    drain_s: float = 30.0
    host: str = "127.0.0.1"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    #: Measured requests still unanswered when the phase gave up on them.
    unanswered: dict[str, int] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    completed_in_window: int = 0


class Requests:
    """Builds the raw request bytes of each kind."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.n = 0
        self.kinds = list(spec.mix)
        self.weights = [spec.mix[k] for k in self.kinds]
        extra = "".join(f"{k}: {v}\r\n" for k, v in spec.headers.items())
        self.host = f"Host: {spec.host}:{spec.port}\r\n{extra}".encode()

    def next(self) -> tuple[str, bytes]:
        kind = self.rng.choices(self.kinds, self.weights)[0]
        self.n += 1
        if kind == "health":
            return kind, self._get("/v1/health")
        if kind == "rec":
            user = self.rng.choice(self.spec.customers)
            return kind, self._get(f"/v1/users/{user}/recommendations?k={self.spec.k}")
        if kind == "event":
            user = self.rng.choice(self.spec.customers)
            events = [
                {
                    "event_id": f"{self.spec.run_id}-{self.n}-{j}",
                    "type": self.rng.choice(("view", "view", "view", "add_to_cart")),
                    "user_id": user,
                    "item_id": self.rng.choice(self.spec.items),
                }
                for j in range(self.rng.randint(1, 5))
            ]
            body = json.dumps({"events": events}).encode()
            head = (
                b"POST /v1/events HTTP/1.1\r\n"
                + self.host
                + b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
            )
            return kind, head + body
        raise ValueError(f"unknown request kind {kind!r}")

    def _get(self, path: str) -> bytes:
        return f"GET {path} HTTP/1.1\r\n".encode() + self.host + b"\r\n"


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def call(self, raw: bytes) -> int:
        """Send one request, read the whole response; its status code."""
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            lowered = name.strip().lower()
            if lowered == b"content-length":
                length = int(value)
            elif lowered == b"transfer-encoding":
                raise RuntimeError("chunked responses are not supported by this client")
        if length:
            await self.reader.readexactly(length)
        return status


async def connect(spec: Spec) -> Conn:
    reader, writer = await asyncio.open_connection(spec.host, spec.port)
    return Conn(reader, writer)


def _record(tally: Tally, kind: str, ms: float, status: int) -> None:
    tally.latencies.setdefault(kind, []).append(ms)
    key = str(status)
    tally.status[key] = tally.status.get(key, 0) + 1


async def open_loop(spec: Spec) -> dict[str, Any]:
    tally = Tally()
    reqs = Requests(spec)
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    opened = 0
    for _ in range(min(32, spec.connections)):
        pool.put_nowait(await connect(spec))
        opened += 1
    loop_start = time.perf_counter() + 0.05
    window = (loop_start + spec.warmup_s, loop_start + spec.warmup_s + spec.seconds)
    interval = 1.0 / spec.rate
    late: list[float] = []

    async def one(kind: str, raw: bytes, scheduled: float) -> None:
        nonlocal opened
        measured = scheduled >= window[0]
        conn: Conn | None = None
        try:
            if pool.empty() and opened < spec.connections:
                opened += 1
                conn = await connect(spec)
            else:
                conn = await pool.get()
            status = await conn.call(raw)
        except (OSError, asyncio.IncompleteReadError, ValueError, RuntimeError):
            conn = None
            if measured:
                tally.errors += 1
            return
        finally:
            if conn is not None:
                pool.put_nowait(conn)
        done = time.perf_counter()
        if window[0] <= done <= window[1]:
            tally.completed_in_window += 1
        if measured:
            _record(tally, kind, (done - scheduled) * 1000.0, status)

    tasks: dict[asyncio.Task[None], tuple[str, bool]] = {}
    i = 0
    while True:
        scheduled = loop_start + i * interval
        if scheduled >= window[1]:
            break
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif scheduled >= window[0]:
            late.append(-delay * 1000.0)
        kind, raw = reqs.next()
        task = asyncio.create_task(one(kind, raw, scheduled))
        tasks[task] = (kind, scheduled >= window[0])
        task.add_done_callback(tasks.pop)
        i += 1
    if tasks:
        _, pending = await asyncio.wait(list(tasks), timeout=spec.drain_s)
        for task in pending:
            kind, measured = tasks[task]
            if measured:
                tally.unanswered[kind] = tally.unanswered.get(kind, 0) + 1
            task.cancel()
    late.sort()
    return {
        "mode": "open",
        "offered_rps": spec.rate,
        "achieved_rps": round(tally.completed_in_window / spec.seconds, 1),
        "connections_opened": opened,
        "dispatch_late_p99_ms": round(late[int(0.99 * (len(late) - 1))], 3) if late else 0.0,
        **_summary(tally),
    }


async def closed_loop(spec: Spec) -> dict[str, Any]:
    tally = Tally()
    reqs = Requests(spec)
    conns = [await connect(spec) for _ in range(spec.connections)]
    start = time.perf_counter()
    window = (start + spec.warmup_s, start + spec.warmup_s + spec.seconds)

    async def worker(conn: Conn) -> None:
        while True:
            began = time.perf_counter()
            if began >= window[1]:
                return
            kind, raw = reqs.next()
            try:
                status = await conn.call(raw)
            except (OSError, asyncio.IncompleteReadError, ValueError, RuntimeError):
                tally.errors += 1
                return
            done = time.perf_counter()
            if window[0] <= done <= window[1]:
                tally.completed_in_window += 1
                _record(tally, kind, (done - began) * 1000.0, status)

    await asyncio.gather(*(worker(c) for c in conns))
    return {
        "mode": "closed",
        "connections": spec.connections,
        "achieved_rps": round(tally.completed_in_window / spec.seconds, 1),
        **_summary(tally),
    }


def _summary(tally: Tally) -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "latencies_ms": tally.latencies,
        "unanswered": tally.unanswered,
        "status": tally.status,
        "errors": tally.errors,
        "client_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
    }


def main() -> None:
    spec = Spec(**json.load(sys.stdin))
    run = open_loop if spec.mode == "open" else closed_loop
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(spec))
    else:
        result = uvloop.run(run(spec))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
