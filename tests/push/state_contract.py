"""The push state contract: trigger state (``PushState``) and journal (``Attribution``)
behave the same on every backend (SQLite file, PostgreSQL). A backend's test class
subclasses ``StateContract`` with one fixture::

    class TestPgState(StateContract):
        @pytest.fixture
        def open_db(self, postgres_url) -> Callable[[], Any]:
            return lambda: PgPushDatabase(postgres_url)  # each call: the SAME data

Each call of ``open_db`` opens a new connection to the same data: a restart, or
another process. All times are arguments; nothing sleeps. SYNTHETIC data.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shopcast.push.attribution import HOLDOUT, SENT, SUPPRESSED, Attribution, Decision
from shopcast.push.state import ItemSnapshot, PushState, Timer

T0 = 1_800_000_000.0


class StateContract:
    @pytest.fixture
    def open_db(self) -> Callable[[], Any]:
        raise NotImplementedError

    @pytest.fixture
    def dbs(self, open_db: Callable[[], Any]) -> Iterator[Callable[[], Any]]:
        opened: list[Any] = []

        def make() -> Any:
            db = open_db()
            opened.append(db)
            return db

        yield make
        for db in opened:
            db.close()

    def parts(self, dbs: Callable[[], Any]) -> tuple[PushState, Attribution, Any]:
        db = dbs()
        return PushState("", db), Attribution("", db), db

    # -- timers -------------------------------------------------------------------

    def test_timers_arm_rearm_due_done(self, dbs: Callable[[], Any]) -> None:
        state, _, _ = self.parts(dbs)
        state.arm([Timer("u1", "cart", "k", T0 + 60, {"items": ["a"]})])
        state.arm([Timer("u2", "cart", "k", T0 + 30)])
        assert state.timer("u1", "cart", "k") == Timer("u1", "cart", "k", T0 + 60, {"items": ["a"]})
        assert state.next_due() == T0 + 30
        assert state.due(T0) == []
        due = state.due(T0 + 60, lease_s=100)
        assert [t.user_id for t in due] == ["u2", "u1"]  # earliest first
        assert state.due(T0 + 60) == []  # leased
        state.arm([Timer("u1", "cart", "k", T0 + 90, {"items": ["b"]})])  # re-armed meanwhile
        assert not state.done(due[1])  # the handled version is gone; the new one stays
        assert state.done(due[0])
        assert [t.due_at for t in state.timers("u1")] == [T0 + 90]
        assert [t.payload for t in state.due(T0 + 90)] == [{"items": ["b"]}]
        assert state.disarm("u1", "cart") == 1
        assert state.timer("u1", "cart", "k") is None

    def test_lease_expires_and_is_durable(self, dbs: Callable[[], Any]) -> None:
        state, _, _ = self.parts(dbs)
        state.arm([Timer("u1", "cart", "k", T0)])
        assert len(state.due(T0, lease_s=60)) == 1
        again, _, _ = self.parts(dbs)  # a restart / another process
        assert again.due(T0 + 30) == []
        assert len(again.due(T0 + 61)) == 1  # the dead holder's lease ran out

    def test_concurrent_due_leases_each_timer_once(self, dbs: Callable[[], Any]) -> None:
        state, _, _ = self.parts(dbs)
        state.arm([Timer(f"u{n}", "cart", "k", T0) for n in range(200)])
        others = [self.parts(dbs)[0] for _ in range(4)]
        got: list[list[Timer]] = [[] for _ in others]
        start = threading.Barrier(len(others))

        def run(i: int) -> None:
            start.wait()
            while batch := others[i].due(T0, limit=7, lease_s=600):
                got[i] += batch

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(others))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        users = [t.user_id for part in got for t in part]
        assert sorted(users) == sorted(f"u{n}" for n in range(200))  # each once

    # -- interest, snapshots, purchases, overrides -------------------------------------

    def test_interest_keeps_the_latest(self, dbs: Callable[[], Any]) -> None:
        state, _, _ = self.parts(dbs)
        state.add_interest([("i1", "u1", "view", T0 + 10), ("i1", "u2", "cart", T0)])
        state.add_interest([("i1", "u1", "view", T0)])  # older: ignored
        assert state.interested("i1", since=T0 + 5) == {"u1": {"view"}}
        assert state.interested("i1", since=0) == {"u1": {"view"}, "u2": {"cart"}}

    def test_snapshots_purchases_overrides(self, dbs: Callable[[], Any]) -> None:
        state, _, _ = self.parts(dbs)
        state.put_snapshot(
            [("i1", ItemSnapshot(10.0, 12.0, 3)), ("i2", ItemSnapshot(None, None, None))]
        )
        state.put_snapshot([("i1", ItemSnapshot(8.0, 12.0, 0))])
        assert state.snapshot(["i1", "i2", "nope"]) == {
            "i1": ItemSnapshot(8.0, 12.0, 0),
            "i2": ItemSnapshot(None, None, None),
        }
        state.add_purchases([("u1", "i1", T0), ("u1", "i1", T0 + 5), ("u1", "i1", T0)])
        assert state.purchases("u1", "i1") == [T0, T0 + 5]
        state.put_trigger_override("cart", {"delay": 60})
        state.put_trigger_override("cart", {"delay": 30})
        assert state.trigger_overrides() == {"cart": {"delay": 30}}

    def test_prune_and_erase(self, dbs: Callable[[], Any]) -> None:
        state, journal, _ = self.parts(dbs)
        state.arm([Timer("u1", "cart", "k", T0)])
        state.add_interest([("i1", "u1", "view", T0), ("i2", "u2", "view", T0 + 100)])
        state.add_purchases([("u1", "i1", T0)])
        assert state.prune(T0 + 50) == 2  # old interest + purchase; timers kept
        assert state.timer("u1", "cart", "k") is not None
        journal.record([Decision("d1", "u1", "cart", SENT, ("i1",), T0)])
        journal.sent([("m1", "d1", "u1", "cart", "live", T0)])
        assert state.delete_user("u1") == 1  # the timer
        assert journal.delete_user("u1") == 2
        assert journal.recent("u1", 0) == []

    def test_batch_is_one_transaction(self, dbs: Callable[[], Any]) -> None:
        state, journal, _ = self.parts(dbs)
        with pytest.raises(RuntimeError), state.batch():
            state.arm([Timer("u1", "cart", "k", T0)])
            journal.record([Decision("d1", "u1", "cart", SENT, ("i1",), T0)])
            raise RuntimeError("crash mid-round")
        other, other_journal, _ = self.parts(dbs)
        assert other.timer("u1", "cart", "k") is None and other_journal.known(["d1"]) == set()
        with state.batch():
            state.arm([Timer("u1", "cart", "k", T0)])
            journal.record([Decision("d1", "u1", "cart", SENT, ("i1",), T0)])
            assert state.timer("u1", "cart", "k") is not None  # reads see the round's writes
        assert other.timer("u1", "cart", "k") is not None and other_journal.known(["d1"]) == {"d1"}

    # -- journal ------------------------------------------------------------------------

    def test_journal_caps_attribution_metrics(self, dbs: Callable[[], Any]) -> None:
        _, journal, _ = self.parts(dbs)
        d1 = Decision("d1", "u1", "cart", SENT, ("i1", "i2"), T0, None, ("live",))
        d2 = Decision("d2", "u1", "cart", HOLDOUT, ("i3",), T0 + 1)
        d3 = Decision("d3", "u1", "cart", SUPPRESSED, (), T0 + 2, "daily_cap")
        assert journal.record([d1, d2, d3]) == 3
        assert journal.record([d1]) == 0  # a replayed decision
        assert journal.known(["d1", "d9"]) == {"d1"}
        assert [d.decision_id for d in journal.recent("u1", T0)] == ["d1", "d2"]
        assert journal.recent("u1", T0)[0] == d1
        journal.sent([("m1", "d1", "u1", "cart", "live", T0)])
        journal.sent([("m1", "d1", "u1", "cart", "live", T0)])
        journal.delivered("m1", T0 + 1)
        assert journal.feedback("m1", "click", T0 + 2) is True
        assert journal.feedback("m1", "click", T0 + 3) is False
        assert journal.feedback("nope", "open", T0) is None
        assert journal.feedback_of("m1") == {"open": T0 + 2, "click": T0 + 2}
        assert journal.purchase("u1", "i2", T0 + 10, 3600) == 1
        assert journal.purchase("u1", "i2", T0 + 10, 3600) == 0
        assert journal.purchase("u1", "i3", T0 + 10, 3600) == 1  # the holdout converts too
        m = journal.metrics()
        cart = m["triggers"]["cart"]
        assert (cart["decisions"], cart[SENT], cart[HOLDOUT]) == (3, 1, 1)
        assert cart[SUPPRESSED] == {"daily_cap": 1}
        assert cart["lift"]["sent_conversions"] == 1 and cart["lift"]["holdout_conversions"] == 1
        live = cart["channels"]["live"]
        assert (live["messages"], live["delivered"], live["opened"], live["clicked"]) == (
            1,
            1,
            1,
            1,
        )
        assert (live["purchases"], live["click_purchases"]) == (1, 1)
        assert [d.decision_id for d in journal.decisions("u1", limit=2)] == ["d3", "d2"]
        assert journal.prune(T0 + 1.5) >= 3
        assert journal.known(["d1", "d2", "d3"]) == {"d3"}
