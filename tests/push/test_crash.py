"""The durable outbox under SIGKILL: a real process decides a push, commits it, and
is killed before delivering; after a restart it is delivered exactly once per
delivery id. A second scenario kills the deliverer after the receiver got the
message but before the ack: the retry carries the same delivery id (the receiver
drops it), and the outbox ends with every delivery delivered once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.push.receiver import Receiver, running

CHILD = textwrap.dedent(
    """
    import os, sys, time, json
    from shopcast.config import Settings
    from shopcast.domain import Event, Item, User
    from shopcast.push.engine import PushEngine, open_storage
    from shopcast.push.items import CatalogItems

    db, url, mode, now = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    settings = Settings(environment="test", database_url="memory://", push={
        "quiet_hours": {"enabled": False}, "min_gap": 0, "daily_cap": 100,
        "webhooks": [{"name": "crm", "url": url, "secret": "s" * 32}],
        "triggers": {"cart_abandonment": {"delay": 60, "holdout": 0, "channels": ["webhook"]}},
    })
    items = [Item(item_id=f"i{n}", title=f"Item {n}", category=["C"], price=5) for n in range(5)]
    users = {f"u{n}": User(user_id=f"u{n}", consent={"push": True}) for n in range(5)}
    clock = lambda: now
    outbox, state, journal = open_storage(db, db)  # as PushEngine.open: one connection
    engine = PushEngine(settings, outbox=outbox, state=state, journal=journal,
                        items=CatalogItems(items), users=users.get, clock=clock)
    if mode == "decide":
        engine.observe([Event(type="add_to_cart", user_id=u, item_id="i1", timestamp=now - 60)
                        for u in users], now=now - 60)
        verdicts = engine.tick(now)  # decided and committed; nothing delivered yet
        ids = [d.delivery_id for d in engine.outbox.deliveries(limit=100)]
        print("DECIDED " + json.dumps(ids), flush=True)
        time.sleep(600)  # killed here, between decision and delivery
    elif mode == "send-then-die":
        real = engine.channels["webhook"]
        class DieAfterSend:
            def deliver(self, claim, at):
                real.deliver(claim, at)
                print("SENT " + claim.delivery.delivery_id, flush=True)
                time.sleep(600)  # killed after the receiver got it, before the ack
        engine.channels["webhook"] = DieAfterSend()
        engine.deliver(now, limit=1)
    else:
        report = engine.deliver(now)
        print("DELIVERED " + json.dumps(report.delivered), flush=True)
    """
)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    rec = Receiver()
    with running(rec) as url:
        yield rec, url


def child(db: str, url: str, mode: str, now: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, db, url, mode, str(now)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def read_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise AssertionError(f"child ended without {prefix!r} (rc {proc.wait()})")


def kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def run_to_end(db: str, url: str, now: float) -> int:
    proc = child(db, url, "deliver", now)
    delivered = int(read_line(proc, "DELIVERED "))
    assert proc.wait(timeout=60) == 0
    return delivered


T = 1_796_040_000.0


def test_killed_between_decision_and_delivery(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    db = f"sqlite:///{tmp_path / 'push.db'}"
    proc = child(db, url, "decide", T)
    decided = json.loads(read_line(proc, "DECIDED "))
    kill(proc)
    assert len(decided) == 5
    assert rec.requests == []  # nothing went out before the crash
    assert run_to_end(db, url, T + 1) == 5  # the restarted process delivers them
    assert sorted(rec.delivery_ids) == sorted(decided)  # each exactly once
    assert run_to_end(db, url, T + 3600) == 0  # and never again
    assert sorted(rec.delivery_ids) == sorted(decided)


def test_killed_after_send_before_ack(tmp_path: Path, receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    db = f"sqlite:///{tmp_path / 'push.db'}"
    proc = child(db, url, "decide", T)
    decided = json.loads(read_line(proc, "DECIDED "))
    kill(proc)
    proc = child(db, url, "send-then-die", T + 1)
    sent = read_line(proc, "SENT ")
    kill(proc)
    assert rec.delivery_ids == [sent]
    # within the dead deliverer's lease (30 s) the others go out, not the leased one
    assert run_to_end(db, url, T + 2) == 4
    assert rec.delivery_ids.count(sent) == 1
    # after the lease, it is retried with the same delivery id: the receiver drops it
    assert run_to_end(db, url, T + 40) == 1
    assert rec.delivery_ids.count(sent) == 2
    assert set(rec.delivery_ids) == set(decided)
    assert len(set(rec.delivery_ids)) == 5  # exactly once per delivery id after dedup
    assert run_to_end(db, url, T + 3600) == 0
