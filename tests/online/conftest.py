"""Helpers of the online-state tests (the shop is the SYNTHETIC simulated shop)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from shopcast.config import Settings
from shopcast.simulate import SimulatedShop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"server {url} did not start: {log.read_text()[-3000:]}")


@contextmanager
def serve_processes(env: dict[str, str], logs: Path, n: int = 2) -> Iterator[list[str]]:
    """``n`` real ``shopcast serve`` processes on free ports, healthy; their base URLs.
    Each logs to ``logs/server<i>.log``; all get SIGTERM (then SIGKILL) on exit."""
    procs: list[tuple[subprocess.Popen[bytes], Path, str]] = []
    try:
        for i in range(n):
            port = free_port()
            log = logs / f"server{i}.log"
            proc = subprocess.Popen(
                [sys.executable, "-m", "shopcast.cli", "serve", "--port", str(port)],
                env=env,
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
            )
            procs.append((proc, log, f"http://127.0.0.1:{port}"))
        for proc, log, url in procs:
            wait_healthy(url, proc, log)
        yield [url for _, _, url in procs]
    finally:
        for proc, _, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, _, _ in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def prepare_shop(tmp_path: Path, shop: SimulatedShop) -> Settings:
    from shopcast.ingest.importer import import_events, import_items, import_users
    from shopcast.storage import open_store
    from shopcast.training.bundle import save_bundle, train_bundle

    settings = Settings(
        environment="test",
        database_url=f"sqlite:///{tmp_path / 'shop.db'}",
        model_dir=tmp_path / "models",
    )
    store = open_store(settings.database_url)
    import_items(store, shop.items)
    import_users(store, shop.users)
    import_events(store, shop.events)
    save_bundle(train_bundle(store, settings.recommend), settings.model_dir)
    store.close()
    return settings
