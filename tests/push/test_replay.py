"""``shopcast push simulate`` and the replay behind it: a SYNTHETIC log in the Taobao
format for the counts, and the real Taobao sample when SHOPCAST_DATA has it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shopcast.cli import app
from shopcast.config import Settings
from shopcast.domain import Event, Item
from shopcast.push.replay import replay

T = 1_511_700_000  # 2017-11-26, Taobao's week


def synthetic_log() -> list[Event]:
    """Users cart, some buy within minutes, some view one category three times."""
    out = []
    for u in range(40):
        t = T + u * 600
        out.append(Event(type="cart", user_id=f"u{u}", item_id=f"i{u % 7}", timestamp=t))
        if u % 3 == 0:  # bought within the cart delay: no cart push
            out.append(Event(type="buy", user_id=f"u{u}", item_id=f"i{u % 7}", timestamp=t + 60))
        if u % 4 == 0:  # three views in one category: a session nudge
            for k in range(3):
                out.append(Event(type="pv", user_id=f"u{u}", item_id=f"j{k}", timestamp=t + 10 + k))
        if u % 5 == 1:  # buys the carted item hours later: followed by purchase
            out.append(
                Event(type="buy", user_id=f"u{u}", item_id=f"i{u % 7}", timestamp=t + 3 * 3600)
            )
    return sorted(out, key=lambda e: e.timestamp)


def items() -> list[Item]:
    return [Item(item_id=f"i{n}", category=["A"]) for n in range(7)] + [
        Item(item_id=f"j{n}", category=["B"]) for n in range(6)
    ]


def settings() -> Settings:
    return Settings(
        environment="test",
        database_url="memory://",
        push={
            "quiet_hours": {"enabled": False},
            "triggers": {"cart_abandonment": {"delay": "30m", "holdout": 0}},
        },
    )


def test_replay_counts() -> None:
    report = replay(synthetic_log(), items(), settings()).as_dict()
    rows = {r["trigger"]: r for r in report["triggers"]}
    cart = rows["cart_abandonment"]
    # 40 carts, 14 bought within 30 minutes -> 26 decisions, none held out
    assert cart["decisions"] == 26
    assert cart["pushes"] + sum(cart["suppressed"].values()) == 26
    assert cart["followed_by_purchase"] == 8 - 3  # u % 5 == 1 and not u % 3 == 0
    nudge = rows["session_nudge"]
    assert nudge["decisions"] == 10
    assert report["totals"]["sent"] == sum(r["pushes"] for r in report["triggers"])
    assert report["events"] == len(synthetic_log())


def _taobao_file(path: Path) -> None:
    lines = []
    for e in synthetic_log():
        kind = {"add_to_cart": "cart", "purchase": "buy", "view": "pv"}[e.type.value]
        cat = "A" if (e.item_id or "").startswith("i") else "B"
        lines.append(f"{e.user_id},{e.item_id},{cat},{kind},{int(e.timestamp)}")
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")


def test_cli_simulate_prints_the_report(tmp_path: Path) -> None:
    data = tmp_path / "UserBehavior.csv.gz"
    _taobao_file(data)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["push", "simulate", "--data", str(data), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "cart_abandonment" in result.output
    assert "Suppressed per policy rule" in result.output
    report = json.loads(out.read_text())
    assert report["dataset"] == "taobao"
    assert report["events"] == len(synthetic_log())


def test_cli_simulate_missing_data_is_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["push", "simulate", "--data", str(tmp_path / "none")])
    assert result.exit_code == 2


@pytest.mark.dataset
@pytest.mark.slow
def test_taobao_sample(data_path: Path, tmp_path: Path) -> None:
    if not (data_path / "taobao-userbehavior-sample").exists():
        pytest.skip("Taobao sample not under SHOPCAST_DATA")
    out = tmp_path / "taobao.json"
    result = CliRunner().invoke(
        app, ["push", "simulate", "--data", str(data_path), "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["events"] > 80_000
    rows = {r["trigger"]: r for r in report["triggers"]}
    assert rows["cart_abandonment"]["pushes"] > 0
    assert rows["session_nudge"]["pushes"] > 0
