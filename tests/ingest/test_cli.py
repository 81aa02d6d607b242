"""``shopcast import …`` through Typer's runner. Data here is SYNTHETIC."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from shopcast.ingest.cli import app
from shopcast.storage import open_store

runner = CliRunner()


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shop.db'}"


def test_events_import_prints_a_summary(tmp_path: Path, db: str) -> None:
    csv = tmp_path / "orders.csv"
    csv.write_text("cust,sku,when\nc1,A,1600000000\nc2,B,1600000001\n,C,1600000002\n")
    args = ["events", str(csv), "--map", "cust=user_id", "--map", "sku=item_id"]
    args += ["--map", "when=timestamp", "--set", "type=purchase", "--db", db]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "rows read" in result.stdout and "accepted" in result.stdout
    assert "user_id: one of user_id or session_id is required" in result.stdout
    again = runner.invoke(app, args)
    assert again.exit_code == 0
    store = open_store(db)
    try:
        assert store.events.count() == 2
    finally:
        store.close()


def test_items_and_users_import(tmp_path: Path, db: str) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text(
        '{"item_id": "A", "title": "Mug", "price": 3}\n{"item_id": "B", "price": -1}\n'
    )
    result = runner.invoke(app, ["items", str(items), "--db", db])
    assert result.exit_code == 0, result.output
    assert "price: Input should be greater than or equal to 0" in result.stdout
    users = tmp_path / "users.csv"
    users.write_text("id,country\nu1,UK\n")
    result = runner.invoke(
        app, ["users", str(users), "--map", "id=user_id", "--map", "country=region", "--db", db]
    )
    assert result.exit_code == 0, result.output
    store = open_store(db)
    try:
        assert store.items.count() == 1 and store.users.count() == 1
    finally:
        store.close()


def test_dataset_import_from_a_path(tmp_path: Path, db: str) -> None:
    folder = tmp_path / "tb"
    folder.mkdir()
    (folder / "UserBehavior.csv").write_text("1,100,7,pv,1511544070\n1,100,7,buy,1511544080\n")
    result = runner.invoke(app, ["dataset", "taobao", "--path", str(folder), "--db", db])
    assert result.exit_code == 0, result.output
    assert "items upserted" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["events", "missing[1].csv"], "no such file: missing[1].csv"),
        (["events", "{csv}", "--format", "xml"], "unknown format"),
        (["events", "{csv}", "--map", "who"], "expected SRC=FIELD"),
        (["events", "{csv}", "--map", "nope=user_id"], "not in the file"),
        (["events", "{csv}", "--set", "type"], "expected FIELD=VALUE"),
        (["items", "{csv}"], "are not fields"),
        (["dataset", "nope"], "unknown dataset 'nope'"),
        (["dataset", "taobao", "--path", "{tmp}/none"], "does not exist; download it from"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    tmp_path: Path, db: str, args: list[str], message: str
) -> None:
    csv = tmp_path / "ev.csv"
    csv.write_text("who,type\nu,view\n")
    args = [a.format(csv=csv, tmp=tmp_path) for a in args] + ["--db", db]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
