"""Write a benchmark result: JSON, a Markdown table next to it, and PNG plots.

``write_report(result, out)`` writes ``out`` (JSON), ``out`` with ``.md`` and, when
matplotlib is installed (extra ``bench``), ``<stem>_<metric>.png`` (the headline
metric per model) and ``<stem>_vs_k.png`` (metric vs K; RMSE per fold for Q1).
Plots use the Agg backend (no display needed).
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["markdown_table", "plot", "write_report"]

HEADLINE: dict[str, tuple[str, ...]] = {
    "q1": ("RMSE_u1", "RMSE_u2", "RMSE_u3", "RMSE_u4", "RMSE_u5", "RMSE", "MAE", "train_s"),
    "q2": ("HR@10", "NDCG@10", "NDCG@20", "MRR@10", "coverage@10", "train_s"),
    "q3": (
        "Recall@10",
        "Recall@20",
        "NDCG@10",
        "buy_again.Recall@10",
        "buy_again.NDCG@10",
        "coverage@10",
        "train_s",
    ),
}
PRIMARY = {"q1": "RMSE", "q2": "NDCG@10", "q3": "NDCG@10"}


def _rows(result: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """``(kind, name, metrics)``; a name that is both a model and a peer (the same run,
    e.g. EASE) is one row of kind "Shopcast = peer"."""
    models = result.get("models", {})
    peers = result.get("peers", {})
    out = [("Shopcast = peer" if n in peers else "Shopcast", n, r) for n, r in models.items()]
    return out + [("peer", n, r) for n, r in peers.items() if n not in models]


def _columns(result: Mapping[str, Any]) -> list[str]:
    wanted = HEADLINE.get(str(result.get("benchmark")), ())
    present = {k for _, _, r in _rows(result) for k in r}
    cols = [c for c in wanted if c in present]
    if not cols:  # unknown benchmark: every numeric metric
        cols = sorted(k for k in present if k != "skipped")
    return cols


def _fmt(value: Any, column: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1f}" if column.endswith("_s") else f"{value:.4f}"
    return str(value)


def markdown_table(result: Mapping[str, Any]) -> str:
    """The result's headline metrics as a Markdown table (skipped entries listed below)."""
    cols = _columns(result)
    lines = [
        "| | model | " + " | ".join(cols) + " |",
        "|---|---|" + "---:|" * len(cols),
    ]
    skipped: list[str] = []
    for kind, name, row in _rows(result):
        if "skipped" in row:
            skipped.append(f"- {name} ({kind}): skipped — {row['skipped']}")
            continue
        cells = " | ".join(_fmt(row.get(c), c) for c in cols)
        lines.append(f"| {kind} | {name} | {cells} |")
    return "\n".join(lines + (["", *skipped] if skipped else [])) + "\n"


def _document(result: Mapping[str, Any], plots: Sequence[Path]) -> str:
    hyper = result.get("hyperparameters", {})
    chosen = [
        f"- {name}: `{json.dumps(h.get('chosen'), sort_keys=True)}` ({h.get('selected_by')})"
        for name, h in hyper.items()
    ]
    parts = [
        f"# Benchmark {str(result.get('benchmark', '?')).upper()}",
        "",
        f"- dataset: {result.get('dataset')}",
        f"- protocol: {result.get('protocol')}",
        f"- hardware: {result.get('hardware')}",
        f"- written: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        markdown_table(result),
        "Hyperparameters (chosen on validation only):",
        "",
        *chosen,
        "",
        *[f"![{p.stem}]({p.name})" for p in plots],
    ]
    return "\n".join(parts).rstrip() + "\n"


def _k_curves(result: Mapping[str, Any]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """``{metric: {model: [(K, value), …]}}`` from keys like ``NDCG@10`` (no variants)."""
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    pattern = re.compile(r"^(HR|NDCG|Recall)@(\d+)$")
    for _, name, row in _rows(result):
        for key, value in row.items():
            m = pattern.match(key)
            if m and isinstance(value, int | float):
                curves.setdefault(m.group(1), {}).setdefault(name, []).append(
                    (float(m.group(2)), float(value))
                )
    return curves


def plot(result: Mapping[str, Any], stem: Path) -> list[Path]:
    """PNG plots next to ``stem``; [] without matplotlib."""
    if importlib.util.find_spec("matplotlib") is None:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bench = str(result.get("benchmark"))
    rows = [(k, n, r) for k, n, r in _rows(result) if "skipped" not in r]
    if not rows:
        return []
    written: list[Path] = []
    primary = PRIMARY.get(bench) or next(
        (c for c in _columns(result) if not c.endswith("_s")), None
    )
    if primary is not None:
        bars = [(k, n, float(r[primary])) for k, n, r in rows if isinstance(r.get(primary), float)]
        names = [n for _, n, _ in bars]
        values = [v for _, _, v in bars]
        colors = ["tab:gray" if k == "peer" else "tab:blue" for k, _, _ in bars]
        fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(names) + 2), 4))
        ax.bar(names, values, color=colors)
        ax.set_ylabel(primary)
        ax.set_title(f"{bench.upper()}: {primary} per model (blue: Shopcast, grey: peers)")
        ax.tick_params(axis="x", rotation=30)
        fig.tight_layout()
        path = stem.with_name(f"{stem.name}_{_slug(primary)}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    if bench == "q1":
        folds = sorted({k[5:] for _, _, r in rows for k in r if k.startswith("RMSE_")})
        if folds:
            fig, ax = plt.subplots(figsize=(6, 4))
            for _, name, r in rows:
                ys = [float(r.get(f"RMSE_{f}") or np.nan) for f in folds]
                ax.plot(folds, ys, marker="o", label=name)
            ax.set_xlabel("fold")
            ax.set_ylabel("RMSE")
            ax.set_title("Q1: RMSE per fold")
            ax.legend(fontsize=8)
            fig.tight_layout()
            path = stem.with_name(f"{stem.name}_vs_fold.png")
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
        return written

    curves = _k_curves(result)
    kinds = {n: ("peer" if k == "peer" else "model") for k, n, _ in rows}
    if curves:
        fig, axes = plt.subplots(1, len(curves), figsize=(5.0 * len(curves), 4), squeeze=False)
        for ax, (metric, per_model) in zip(axes[0], sorted(curves.items()), strict=True):
            ks: set[float] = set()
            for name, points in per_model.items():
                points.sort()
                ks |= {p[0] for p in points}
                style = "--" if kinds.get(name) == "peer" else "-"
                ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    style,
                    marker="o",
                    label=name + (" (peer)" if kinds.get(name) == "peer" else ""),
                )
            ax.set_xscale("log")
            ax.set_xticks(sorted(ks), [f"{k:g}" for k in sorted(ks)])
            ax.minorticks_off()
            ax.set_xlabel("K")
            ax.set_ylabel(f"{metric}@K")
            ax.set_title(f"{bench.upper()}: {metric} vs K")
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        path = stem.with_name(f"{stem.name}_vs_k.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def write_report(result: Mapping[str, Any], out: Path) -> list[Path]:
    """Write ``out`` (JSON), its ``.md`` and plots; returns every path written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    stem = out.with_suffix("")
    plots = plot(result, stem)
    md = out.with_suffix(".md")
    md.write_text(_document(result, plots))
    return [out, md, *plots]
