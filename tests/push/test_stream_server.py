"""A storefront's view: a real uvicorn server, an SSE subscriber (httpx streaming), and
a triggering event posted to ``POST /v1/events``. The push is handed to the open stream
before the event is acknowledged (its delivery is ``delivered`` when the 202 arrives),
and the subscriber receives it in the documented SSE format. The latency is printed,
not asserted (figures: bench/bench_push.py)."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from tests.push.test_api import ITEMS, push_settings

pytestmark = pytest.mark.server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    from shopcast.api import create_app

    port = _free_port()
    app = create_app(push_settings(tmp_path, heartbeat_s=0.2))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=30) as http:
        assert http.put("/v1/items", json=ITEMS).status_code < 300
        assert (
            http.put(
                "/v1/users", json=[{"user_id": "shopper", "consent": {"push": True}}]
            ).status_code
            < 300
        )
    try:
        yield base
    finally:
        srv.should_exit = True
        srv.force_exit = True  # do not wait for open streams
        thread.join(timeout=30)


def _read(
    base: str, lines: queue.Queue[tuple[float, str]], ready: threading.Event, stop: threading.Event
) -> None:
    with (
        httpx.Client(base_url=base, timeout=httpx.Timeout(30, read=30)) as http,
        http.stream("GET", "/v1/users/shopper/stream") as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line == ": connected":
                ready.set()
            lines.put((time.perf_counter(), line))
            if stop.is_set():  # heartbeats come every 0.2 s: we leave soon
                return


def test_sse_subscriber_gets_the_push_of_an_event(server: str) -> None:
    lines: queue.Queue[tuple[float, str]] = queue.Queue()
    ready, stop = threading.Event(), threading.Event()
    reader = threading.Thread(target=_read, args=(server, lines, ready, stop), daemon=True)
    reader.start()
    assert ready.wait(30)
    with httpx.Client(base_url=server, timeout=30) as http:
        for item in ("t1", "t2"):
            http.post("/v1/events", json={"type": "view", "user_id": "shopper", "item_id": item})
        sent = time.perf_counter()
        r = http.post("/v1/events", json={"type": "view", "user_id": "shopper", "item_id": "t3"})
        assert r.status_code == 202
        (msg,) = http.get("/v1/users/shopper/push").json()["messages"]
        # handed to the open stream while the event was ingested, not by a later tick
        assert msg["deliveries"][0]["status"] == "delivered"
    event = data = None
    heartbeats = 0
    while data is None:
        at, line = lines.get(timeout=30)
        if line == ": heartbeat":
            heartbeats += 1
        elif line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            data = json.loads(line[len("data: ") :])
    print(f"\nSSE push received {1000 * (at - sent):.1f} ms after the event was posted")
    assert event == "push"
    assert set(data) >= {
        "message_id",
        "user_id",
        "trigger",
        "channel",
        "title",
        "body",
        "items",
        "created_at",
    }
    assert data["message_id"] == msg["message_id"]
    assert (data["user_id"], data["trigger"], data["channel"]) == (
        "shopper",
        "session_nudge",
        "live",
    )
    assert data["created_at"].endswith("Z")
    assert {"item_id", "title", "price", "reason"} == set(data["items"][0])
    while heartbeats == 0:  # comment heartbeats keep the stream alive (0.2 s here)
        _, line = lines.get(timeout=30)
        heartbeats += line == ": heartbeat"
    stop.set()
    reader.join(timeout=30)
