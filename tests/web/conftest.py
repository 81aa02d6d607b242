"""A real server over a small SIMULATED shop with a trained model, and headless Chromium.

The browser is Debian's ``chromium`` (``.ci/run`` installs it when missing; nothing is
downloaded at test time). Screenshots go to ``bench/screenshots/`` (gitignored).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = os.environ.get("SHOPCAST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "bench" / "screenshots"
#: Push settings of the demo server (``[push]``): triggers fire within seconds, nobody is
#: held out, no quiet hours, no minimum gap — so the browser sees a toast quickly.
PUSH_ENV = {
    "SHOPCAST_PUSH__TRIGGERS__CART_ABANDONMENT__DELAY": "1.5",
    "SHOPCAST_PUSH__TRIGGERS__CART_ABANDONMENT__HOLDOUT": "0",
    "SHOPCAST_PUSH__TRIGGERS__SESSION_NUDGE__DELAY": "1.5",
    "SHOPCAST_PUSH__TRIGGERS__SESSION_NUDGE__HOLDOUT": "0",
    "SHOPCAST_PUSH__TRIGGERS__PRICE_DROP__HOLDOUT": "0",
    "SHOPCAST_PUSH__QUIET_HOURS__ENABLED": "false",
    "SHOPCAST_PUSH__MIN_GAP": "0",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    users: list[str]
    items: list[str]
    data_dir: Path


def prepare_shop(data_dir: Path) -> tuple[list[str], list[str]]:
    """Import a small simulated shop (SYNTHETIC) and train + promote a model."""
    from shopcast.config import Settings
    from shopcast.ingest.importer import import_events, import_items, import_users
    from shopcast.simulate import simulate_shop
    from shopcast.storage import open_store
    from shopcast.training.bundle import save_bundle, train_bundle

    settings = Settings(
        environment="test",
        database_url=f"sqlite:///{data_dir / 'shop.db'}",
        model_dir=data_dir / "models",
        auth={"enabled": False},
    )
    shop = simulate_shop(n_users=80, n_items=96, sessions_per_user=3, seed=11)
    store = open_store(settings.database_url)
    try:
        import_items(store, shop.items)
        import_users(store, shop.users)
        import_events(store, shop.events)
        save_bundle(train_bundle(store, settings.recommend, ranker=False), settings.model_dir)
        frame = store.events.frame()
    finally:
        store.close()
    users = frame["user_id"].drop_nulls().value_counts(sort=True)["user_id"].to_list()
    return [str(u) for u in users], [i.item_id for i in shop.items]


class ServerProcess:
    """``shopcast serve`` over ``data_dir``'s shop in a subprocess (started at once;
    ``wait`` blocks until it answers), so two servers can start side by side."""

    def __init__(self, data_dir: Path, **env_extra: str) -> None:
        self.data_dir = data_dir
        port = _free_port()
        env = {
            **os.environ,
            "SHOPCAST_MODEL_DIR": str(data_dir / "models"),
            "SHOPCAST_AUTH__ENABLED": "false",
            "SHOPCAST_ENVIRONMENT": "test",
            "OPENBLAS_NUM_THREADS": "1",
            **PUSH_ENV,
            **env_extra,
        }
        for var in ("SHOPCAST_CONFIG", "SHOPCAST_DATABASE_URL"):
            env.pop(var, None)
        self.log_path = data_dir / f"server-{port}.log"
        self.log = self.log_path.open("wb")
        db = f"sqlite:///{data_dir / 'shop.db'}"
        cmd = [sys.executable, "-m", "shopcast.cli", "serve", "--db", db]
        self.proc = subprocess.Popen(
            [*cmd, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=data_dir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{port}"

    def wait(self) -> str:
        deadline = time.monotonic() + 120  # generous: a loaded CI machine starts slowly
        while True:
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    return self.url
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("server did not start:\n" + self.log_path.read_text()[-3000:])
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@dataclass
class SecureServer(Server):
    keys: dict[str, str]  # scope name -> secret


@dataclass
class _Servers:
    users: list[str]
    items: list[str]
    plain: ServerProcess
    secure: ServerProcess
    keys: dict[str, str]


@pytest.fixture(scope="session")
def _servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Servers]:
    """One shop, served twice at once: without API keys (as ``shopcast demo``) and, from a
    copy of its files, with keys on (a key per scope)."""
    from shopcast.privacy.apikeys import KeyStore

    data_dir = tmp_path_factory.mktemp("webshop")
    users, items = prepare_shop(data_dir)
    secure_dir = tmp_path_factory.mktemp("secureshop")
    shutil.copy(data_dir / "shop.db", secure_dir / "shop.db")  # no server writes yet
    shutil.copytree(data_dir / "models", secure_dir / "models")
    store = KeyStore(secure_dir / "keys.db")
    keys = {
        "admin": store.create(["admin"])[1],
        "shop": store.create(["read", "ingest"])[1],
        "read": store.create(["read"])[1],
    }
    store.close()
    plain = ServerProcess(data_dir)
    secure = ServerProcess(
        secure_dir,
        SHOPCAST_AUTH__ENABLED="true",
        SHOPCAST_AUTH__KEYS_PATH=str(secure_dir / "keys.db"),
    )
    try:
        yield _Servers(users, items, plain, secure, keys)
    finally:
        plain.stop()
        secure.stop()


@pytest.fixture(scope="session")
def live_server(_servers: _Servers) -> Server:
    """The shop without API keys (as ``shopcast demo`` serves it)."""
    url = _servers.plain.wait()
    return Server(url, _servers.users, _servers.items, _servers.plain.data_dir)


@pytest.fixture(scope="session")
def secure_server(_servers: _Servers) -> SecureServer:
    url = _servers.secure.wait()
    return SecureServer(
        url, _servers.users, _servers.items, _servers.secure.data_dir, _servers.keys
    )


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        why = f"no Chromium at {CHROMIUM}: apt-get install -y chromium (.ci/run does it)"
        if os.environ.get("SHOPCAST_REQUIRE_SERVICES"):  # CI: a missing browser is a failure
            pytest.fail(why)
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def shot(page: Any, name: str) -> Path:
    """A full-page screenshot under bench/screenshots/ (gitignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
