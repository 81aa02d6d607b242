"""``shopcast evaluate``: bad input exits 2; quick runs on the REAL shared datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shopcast.cli import app

runner = CliRunner()

SHAPE = {"benchmark", "dataset", "protocol", "models", "peers", "hyperparameters", "hardware"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["q9"], "unknown benchmark"),
        (["q3", "--models", "nope"], "unknown model"),
        (["q3", "--peers", "nope"], "unknown peer"),
        (["q1", "--data", "/no/such/place"], "no data at"),
        (["q1", "--folds", "6"], "folds must be among 1..5"),
        (["q1", "--folds", "one"], "--folds takes fold numbers"),
    ],
)
def test_bad_input_exits_2(args: list[str], message: str) -> None:
    r = runner.invoke(app, ["evaluate", *args])
    assert r.exit_code == 2
    assert message in r.output


def test_help_lists_evaluate() -> None:
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and "evaluate" in r.output


def run_quick(data: Path, folder: str, tmp_path: Path, *args: str) -> dict[str, object]:
    if not (data / folder).is_dir():
        pytest.skip(f"{folder} not under {data}")
    out = tmp_path / "result.json"
    r = runner.invoke(
        app, ["evaluate", *args, "--quick", "--data", str(data / folder), "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    result: dict[str, object] = json.loads(out.read_text())
    assert set(result) == SHAPE
    md = out.with_suffix(".md").read_text()
    assert "| Shopcast |" in md
    return result


@pytest.mark.dataset
def test_quick_q3_on_online_retail(data_path: Path, tmp_path: Path) -> None:
    r = run_quick(
        data_path, "uci-online-retail", tmp_path, "q3", "--models", "popularity,covisit",
        "--peers", "none",
    )  # fmt: skip
    models = r["models"]
    assert isinstance(models, dict)
    for name in ("popularity", "covisit"):
        row = models[name]
        assert 0 < row["NDCG@10"] < 1 and 0 < row["Recall@20"] < 1
        assert 0 < row["buy_again.NDCG@10"] < 1
    if (tmp_path / "result_vs_k.png").exists():  # matplotlib installed
        assert (tmp_path / "result_ndcg_10.png").stat().st_size > 0


@pytest.mark.dataset
def test_quick_q2_on_amazon_beauty(data_path: Path, tmp_path: Path) -> None:
    r = run_quick(
        data_path, "amazon-beauty", tmp_path, "q2", "--models", "covisit", "--peers", "none"
    )
    row = r["models"]["covisit"]  # type: ignore[index]
    assert row["users"] == 2000 and 0 < row["NDCG@10"] <= row["NDCG@20"] < 1


@pytest.mark.dataset
def test_quick_q1_on_movielens(data_path: Path, tmp_path: Path) -> None:
    r = run_quick(
        data_path, "movielens-100k", tmp_path, "q1", "--models", "mf_als", "--peers", "none"
    )
    row = r["models"]["mf_als"]  # type: ignore[index]
    assert 0.85 < row["RMSE_u1"] < 1.1 and row["RMSE"] == row["RMSE_u1"]


@pytest.mark.dataset
def test_q1_on_chosen_folds(data_path: Path, tmp_path: Path) -> None:
    r = run_quick(
        data_path, "movielens-100k", tmp_path, "q1", "--models", "mf_als", "--peers", "none",
        "--folds", "u2,3",
    )  # fmt: skip
    row = r["models"]["mf_als"]  # type: ignore[index]
    assert {"RMSE_u2", "RMSE_u3"} <= set(row) and "RMSE_u1" not in row
    assert row["RMSE"] == pytest.approx((row["RMSE_u2"] + row["RMSE_u3"]) / 2)


@pytest.mark.dataset
@pytest.mark.slow
def test_quick_q3_with_every_peer(data_path: Path, tmp_path: Path) -> None:
    r = run_quick(data_path, "uci-online-retail", tmp_path, "q3", "--models", "popularity")
    peers = r["peers"]
    assert isinstance(peers, dict)
    assert set(peers) == {"ease", "implicit-als", "implicit-bpr", "lightfm"}
    for name, row in peers.items():
        assert "skipped" in row or 0 <= row["NDCG@10"] <= 1, name
