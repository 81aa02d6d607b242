"""A server killed with SIGKILL right after a 202 has every acknowledged event after restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from shopcast.storage import open_store

pytestmark = pytest.mark.server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(db: Path, port: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SHOPCAST_MODEL_DIR": str(tmp_path / "models")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shopcast.cli",
            "serve",
            "--db",
            f"sqlite:///{db}",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120  # generous: a loaded CI machine starts slowly
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


@pytest.mark.parametrize("clients", [1, 8])
def test_acknowledged_events_survive_sigkill(tmp_path: Path, clients: int) -> None:
    """One client, or 8 at once (their posts group-committed: several posts share one
    transaction), killed mid-stream: every event of every 202 is in the log."""
    db, port = tmp_path / "shop.db", _free_port()
    proc = _start(db, port, tmp_path)
    acked: list[str] = []
    stop = threading.Event()

    def post_forever(client: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            n = 0
            while not stop.is_set():
                batch = [
                    {
                        "event_id": f"k{client}-{n}-{j}",
                        "type": "view",
                        "user_id": f"u{j % 7}",
                        "item_id": f"i{j}",
                    }
                    for j in range(50 // clients)
                ]
                n += 1
                try:
                    r = http.post("/v1/events", json=batch)
                except httpx.TransportError:
                    return
                if r.status_code == 202:
                    acked.extend(e["event_id"] for e in batch)

    posters = [threading.Thread(target=post_forever, args=(c,)) for c in range(clients)]
    for poster in posters:
        poster.start()
    while len(acked) < 500:  # let a good number of batches be acknowledged
        time.sleep(0.05)
        assert all(p.is_alive() for p in posters)
    proc.send_signal(signal.SIGKILL)  # mid-stream: requests are in flight
    proc.wait(timeout=10)
    stop.set()
    for poster in posters:
        poster.join(timeout=10)

    store = open_store(f"sqlite:///{db}")
    stored = set(store.events.frame()["event_id"].to_list())
    store.close()
    missing = [e for e in acked if e not in stored]
    assert not missing, f"{len(missing)} acknowledged events lost"

    proc = _start(db, port, tmp_path)  # the restarted server serves them
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/v1/users/u1/recommendations?k=3", timeout=5)
        assert r.status_code == 200 and len(r.json()["items"]) == 3
    finally:
        proc.kill()
        proc.wait()
