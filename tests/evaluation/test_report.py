"""Reports: JSON, Markdown table and plots from a hand-written result."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from shopcast.evaluation.report import markdown_table, write_report

RESULT = {
    "benchmark": "q2",
    "dataset": "toy",
    "protocol": "toy protocol",
    "models": {
        "ease": {"HR@10": 0.5, "NDCG@10": 0.25, "NDCG@20": 0.3, "HR@20": 0.6, "train_s": 1.25},
        "pop": {"HR@10": 0.1, "NDCG@10": 0.05, "NDCG@20": 0.06, "HR@20": 0.2, "train_s": 0.0},
    },
    "peers": {
        "ease": {"HR@10": 0.5, "NDCG@10": 0.25, "NDCG@20": 0.3, "HR@20": 0.6, "train_s": 1.25},
        "lightfm": {"skipped": "lightfm is not installed"},
    },
    "hyperparameters": {"ease": {"chosen": {"reg": 100.0}, "selected_by": "NDCG@10 on validation"}},
    "hardware": "2 CPU cores",
}


def test_markdown_table_merges_a_model_that_is_also_a_peer() -> None:
    md = markdown_table(RESULT)
    lines = md.splitlines()
    assert lines[0] == "| | model | HR@10 | NDCG@10 | NDCG@20 | train_s |"
    assert "| Shopcast = peer | ease | 0.5000 | 0.2500 | 0.3000 | 1.2 |" in lines
    assert "| Shopcast | pop | 0.1000 | 0.0500 | 0.0600 | 0.0 |" in lines
    assert sum("ease" in line for line in lines) == 1
    assert "- lightfm (peer): skipped — lightfm is not installed" in lines


def test_write_report_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "q2.json"
    paths = write_report(RESULT, out)
    assert json.loads(out.read_text()) == RESULT
    md = out.with_suffix(".md").read_text()
    assert md.startswith("# Benchmark Q2") and '`{"reg": 100.0}`' in md
    if importlib.util.find_spec("matplotlib") is not None:
        pngs = sorted(p.name for p in paths if p.suffix == ".png")
        assert pngs == ["q2_ndcg_10.png", "q2_vs_k.png"]
        assert all((tmp_path / "sub" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
        assert "![q2_vs_k](q2_vs_k.png)" in md
