"""The Q1, Q2 and Q3 benchmarks of ``BENCHMARKS.md``, end to end.

``run_benchmark(name, options)`` loads the data, builds the protocol's splits, tunes
each model and peer on validation (grids below; never on test), refits with the chosen
values, evaluates on test and returns the result as a JSON-ready dict::

    {"benchmark", "dataset", "protocol", "models": {name: {metric: value, "train_s": …}},
     "peers": {…}, "hyperparameters": {name: {"chosen": …, "grid": …, …}}, "hardware"}

A model or peer that cannot run (missing library, wrong kind of model, fit error)
appears with ``{"skipped": reason}``.
"""

from __future__ import annotations

import inspect
import os
import platform
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from shopcast.errors import (
    DatasetNotFoundError,
    NotFoundError,
    ShopcastError,
    ValidationError,
)
from shopcast.evaluation import splits as S
from shopcast.evaluation.harness import (
    Entry,
    RankingTask,
    RatingTask,
    Tracker,
    accepted_params,
    evaluate_ranking,
    evaluate_rating,
    fit_measured,
    grid_points,
    ranking_task,
    rating_task,
    sample_users,
    tune,
)
from shopcast.evaluation.peers import PEERS, unavailable
from shopcast.models._base import Interactions, RatingPredictor

__all__ = [
    "BENCHMARKS",
    "GRIDS",
    "Benchmark",
    "RunOptions",
    "hardware",
    "run_benchmark",
]

SEED = 0

_RANKING_GRIDS: dict[str, dict[str, list[Any]]] = {
    "ease": {"reg": [250.0, 50.0, 100.0, 500.0, 1000.0]},
    "itemknn": {"k": [100, 20, 50, 200], "shrink": [10.0, 0.0, 50.0]},
    "ials": {"reg": [0.1, 1.0, 10.0]},  # 128 factors: ~25 min a fit here
    "implicit-als": {
        "factors": [64, 128],
        "regularization": [0.01, 0.1, 1.0],
        "alpha": [1.0, 10.0],
    },
    "implicit-bpr": {
        "factors": [64, 128],
        "learning_rate": [0.01, 0.05],
        "regularization": [0.01, 0.001],
    },
    "lightfm": {"no_components": [64], "epochs": [30, 10], "item_alpha": [0.0, 1e-6]},
}

#: Hyperparameters tried on validation, per benchmark and model (names a model's
#: constructor does not take are ignored). The first value of each is the default
#: used without tuning (``--quick``, ``--no-tune``).
GRIDS: dict[str, dict[str, dict[str, list[Any]]]] = {
    "q1": {
        "mf": {"reg_factors": [0.1, 0.05, 0.15], "n_factors": [100, 50]},
        "mf_als": {"reg_factors": [15.0, 10.0, 20.0], "n_factors": [10, 20]},
        "svdpp": {"reg_factors": [0.05, 0.1]},
        "surprise-svd": {
            "reg_all": [0.02, 0.05, 0.1],
            "n_factors": [100, 50],
            "n_epochs": [20, 40],
        },
        "surprise-svdpp": {"reg_all": [0.02, 0.05]},
        # GLocal-K + Bayesian MF, or three GLocal-K seeds + Bayesian MF
        "blend_glk": {
            "components": [
                [["glocal_k", {}], ["mf_bayes", {}]],
                [["glocal_k", {"seed": s}] for s in (0, 1, 2)] + [["mf_bayes", {}]],
            ]
        },
    },
    "q2": {
        "popularity": {"half_life_days": [100_000.0, 30.0]},
        "covisit": {"window": [5, 2, 10], "session_decay": [0.7, 0.4]},
        **_RANKING_GRIDS,
        # 12k items, 22k users: fewer points for the slow fits
        "ease": {"reg": [250.0, 100.0, 500.0, 1000.0]},
        "ials": {"reg": [0.1, 1.0]},
    },
    "q3": {
        "popularity": {"half_life_days": [100_000.0, 14.0, 60.0]},
        "covisit": {
            "window": [5, 20, 50],
            "half_life_days": [60.0, 100_000.0],
            "session_decay": [0.7, 0.95],
        },
        **_RANKING_GRIDS,
    },
}


@dataclass
class RunOptions:
    """What to run: model and peer names (None = the benchmark's defaults), data path."""

    data: Path
    models: Sequence[str] | None = None
    peers: Sequence[str] | None = None
    quick: bool = False
    tune: bool = True
    cutoff: str | None = None  # Q3 only
    folds: Sequence[int] | None = None  # Q1 only: MovieLens folds to run (None = all five)
    tracker: Tracker = field(default_factory=Tracker)


@dataclass(frozen=True)
class Benchmark:
    name: str
    folder: str  # default dataset folder under Settings.data_path
    task: str  # "rating" or "ranking"
    protocol: str
    peers: tuple[str, ...]
    headline: tuple[str, ...]  # metrics of the Markdown table
    objective: str  # tuned on validation
    run: Callable[[Benchmark, RunOptions], dict[str, Any]]


# -- hardware ------------------------------------------------------------------------------


def hardware() -> str:
    """CPU model and cores, memory, OS and library versions, one line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 2**20:.0f} GiB RAM"
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cores} CPU cores ({cpu}){mem}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, numpy {np.__version__}"
    )


# -- entries -------------------------------------------------------------------------------


#: Fixed hyperparameters (not searched), per benchmark and model: the training-time
#: budget of the sequence model (Q2's target: trained within 15 minutes). Q2's SASRec
#: counts CPU seconds of one thread (a shared machine does not shrink its training; on
#: an idle one it is the wall time); the budget keeps room for a refit on every training
#: item for the selected number of epochs (chosen on validation: a nested split gave
#: validation NDCG@10 0.0519 without, 0.0639 with it; docs/benchmarks.md, Q2).
FIXED: dict[str, dict[str, dict[str, Any]]] = {
    "q2": {"sasrec": {"max_seconds": 840.0, "clock": "cpu", "threads": 1, "refit": True}},
    "q3": {"sasrec": {"max_seconds": 600.0}},
}

#: Overrides for ``--quick`` runs (only for constructors that name them).
QUICK_PARAMS: dict[str, Any] = {
    "epochs": 2,
    "n_epochs": 2,
    "iterations": 2,
    "max_seconds": 20.0,
    "burn_in": 2,
    "samples": 4,
}


@dataclass
class Side:
    """Side information offered to models that take it: catalog records and their tokens."""

    items: Sequence[Any] = ()
    tokens: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def params_for(self, build: Callable[..., Any]) -> dict[str, Any]:
        """``item_tokens`` / ``attributes`` when ``build`` names them."""
        named = _named_params(build)
        out: dict[str, Any] = {}
        if "item_tokens" in named and self.tokens:
            out["item_tokens"] = self.tokens
        if "attributes" in named and self.items:
            from shopcast.models.sasrec import ItemAttributes

            out["attributes"] = ItemAttributes.from_items(self.items)
        return out


def _named_params(build: Callable[..., Any]) -> set[str]:
    """Parameters ``build`` names explicitly (not through ``**kwargs``)."""
    try:
        params = inspect.signature(build).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD}


def _entry(
    name: str, kind: str, build: Callable[..., Any], bench: str, quick: bool, side: Side
) -> Entry:
    grid = dict(GRIDS.get(bench, {}).get(name, {}))
    grid = {k: v for k, v in grid.items() if accepted_params(build, {k: None})}
    if quick:  # no search: the first value of each
        grid = {k: v[:1] for k, v in grid.items()}
    fixed: dict[str, Any] = side.params_for(build)
    fixed |= accepted_params(build, FIXED.get(bench, {}).get(name, {}))
    for seed_name in ("seed", "random_state"):
        if accepted_params(build, {seed_name: SEED}):
            fixed[seed_name] = SEED
            break
    if quick:
        named = _named_params(build)
        fixed |= {k: v for k, v in QUICK_PARAMS.items() if k in named and k not in grid}
    return Entry(name, kind, build, grid, fixed)


def _model_entries(
    bench: Benchmark, opts: RunOptions, side: Side
) -> tuple[list[Entry], dict[str, dict[str, Any]]]:
    """Shopcast models to run, and those skipped with a reason."""
    from shopcast.models import MODELS

    names = list(opts.models) if opts.models is not None else sorted(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise NotFoundError(
            f"unknown model(s) {', '.join(unknown)}; known models: {', '.join(sorted(MODELS))}"
        )
    entries: list[Entry] = []
    skipped: dict[str, dict[str, Any]] = {}
    for n in names:
        cls = MODELS[n]
        rates = issubclass(cls, RatingPredictor)
        if bench.task == "rating" and not rates:
            if opts.models is not None:
                skipped[n] = {"skipped": "not a rating model (no predict)"}
            continue
        if bench.task == "ranking" and rates and opts.models is None:
            continue  # explicit-rating models need rate events; run them only when named
        if opts.models is None and getattr(cls, "named_only", False):
            continue  # hours on a CPU (GLocal-K): run only when named
        if opts.models is None and bench.name not in getattr(
            cls, "default_benchmarks", (bench.name,)
        ):
            continue  # built for other benchmarks' data (rerank: Q3): run only when named
        entries.append(_entry(n, "model", cls, bench.name, opts.quick, side))
    return entries, skipped


def _peer_entries(
    bench: Benchmark, opts: RunOptions, side: Side
) -> tuple[list[Entry], dict[str, dict[str, Any]]]:
    names = list(opts.peers) if opts.peers is not None else list(bench.peers)
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise NotFoundError(f"unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEERS)}")
    entries: list[Entry] = []
    skipped: dict[str, dict[str, Any]] = {}
    for n in names:
        spec = PEERS[n]
        if spec.task != bench.task:
            skipped[n] = {"skipped": f"a {spec.task} peer; {bench.name} is a {bench.task} task"}
            continue
        reason = unavailable(n)
        if reason is not None:
            skipped[n] = {"skipped": reason}
            continue
        entries.append(_entry(n, "peer", spec.builder(), bench.name, opts.quick, side))
    return entries, skipped


# -- data ----------------------------------------------------------------------------------


def _generic_events(path: Path, *, default_type: str, purchases_only: bool) -> pl.DataFrame:
    """An event table (CSV/JSONL/Parquet with ``user_id``, ``item_id``, ``timestamp``)
    cleaned by the ingest rules, as an event frame."""
    from shopcast.ingest.bulk import clean_events
    from shopcast.ingest.files import read_table

    raw = read_table(path)
    aliases = {"ts": "timestamp", "rating": "value"}
    raw = raw.rename(
        {k: v for k, v in aliases.items() if k in raw.columns and v not in raw.columns}
    )
    missing = [c for c in ("user_id", "item_id", "timestamp") if c not in raw.columns]
    if missing:
        raise ValidationError(
            f"{path}: not a supported dataset; an event table needs the columns user_id, "
            f"item_id, timestamp (missing: {', '.join(missing)})"
        )
    if "type" not in raw.columns:
        raw = raw.with_columns(pl.lit(default_type).alias("type"))
    from shopcast.ingest.bulk import FIELDS

    cleaned = clean_events(raw.select([c for c in raw.columns if c in FIELDS]), now=0.0).frame
    frame = S.event_frame(cleaned)
    if purchases_only and (frame["type"] == "purchase").any():
        frame = frame.filter(pl.col("type") == "purchase")
    if not frame.height:
        raise ValidationError(f"{path}: no usable events")
    return frame


def _require(path: Path) -> Path:
    if not path.exists():
        raise DatasetNotFoundError(f"no data at {path} (pass --data PATH or set SHOPCAST_DATA)")
    return path


def _subsample_users(frame: pl.DataFrame, keep: int, seed: int = SEED) -> pl.DataFrame:
    users = frame["user_id"].unique().sort()
    if users.len() <= keep:
        return frame
    rng = np.random.default_rng(seed)
    chosen = users.gather(np.sort(rng.choice(users.len(), keep, replace=False)))
    return frame.filter(pl.col("user_id").is_in(chosen.implode()))


_WORD = re.compile(r"[a-z0-9]{3,}")


def _item_tokens(items: Sequence[Any]) -> dict[str, list[str]]:
    """Side features of catalog items: category levels, brand, attribute ids, title words."""
    out: dict[str, list[str]] = {}
    for it in items:
        toks = [f"cat:{'/'.join(it.category[: d + 1])}" for d in range(len(it.category))]
        if it.brand:
            toks.append(f"brand:{it.brand}")
        toks += [f"attr:{a}" for a in it.attributes.get("attribute_ids", [])]
        if it.title:
            toks += sorted({f"w:{w}" for w in _WORD.findall(it.title.lower())})
        if toks:
            out[it.item_id] = toks
    return out


def _feature_matrix(tokens: Mapping[str, Sequence[str]], data: Interactions) -> Any | None:
    """Items x tokens (binary CSR) over ``data.items`` for intra-list diversity."""
    if not tokens:
        return None
    vocab: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    for i, item_id in enumerate(data.items.ids):
        for t in tokens.get(item_id, ()):
            rows.append(i)
            cols.append(vocab.setdefault(t, len(vocab)))
    m = sp.csr_array((np.ones(len(rows)), (rows, cols)), shape=(len(data.items), len(vocab)))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def _describe(frame: pl.DataFrame) -> str:
    return (
        f"{frame['user_id'].n_unique():,} users, {frame['item_id'].n_unique():,} items, "
        f"{frame.height:,} events"
    )


# -- running one entry ---------------------------------------------------------------------


def _result_row(entry: Entry, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()``, or ``{"skipped": reason}`` when the entry cannot run on this data."""
    try:
        return fn()
    except (ShopcastError, ValueError, MemoryError) as exc:
        message = exc.message if isinstance(exc, ShopcastError) else str(exc)
        return {"skipped": f"{type(exc).__name__}: {message}"}


def _tuning_record(
    entry: Entry, chosen: Mapping[str, Any], trials: list[Any], by: str
) -> dict[str, Any]:
    return {
        "kind": entry.kind,
        "chosen": dict(chosen),
        "grid": {k: list(v) for k, v in entry.grid.items()},
        "fixed": {k: v for k, v in entry.fixed.items() if isinstance(v, int | float | str)},
        "selected_by": by,
        "trials": trials,
    }


def _clean(value: Any) -> Any:
    """JSON-safe numbers (NaN/inf as None; numpy scalars as Python)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _assemble(
    bench: Benchmark,
    dataset: str,
    protocol: str,
    rows: Mapping[str, dict[str, Any]],
    kinds: Mapping[str, set[str]],
    hyper: Mapping[str, Any],
) -> dict[str, Any]:
    out: dict[str, Any] = _clean(
        {
            "benchmark": bench.name,
            "dataset": dataset,
            "protocol": protocol,
            "models": {n: r for n, r in rows.items() if "model" in kinds[n]},
            "peers": {n: r for n, r in rows.items() if "peer" in kinds[n]},
            "hyperparameters": dict(hyper),
            "hardware": hardware(),
        }
    )
    return out


def _entries(
    bench: Benchmark, opts: RunOptions, side: Side
) -> tuple[list[Entry], dict[str, dict[str, Any]], dict[str, set[str]]]:
    """Entries to run (a peer that is also a requested model runs once), skipped rows,
    and whether each name is reported as a model, a peer or both."""
    models, skipped_m = _model_entries(bench, opts, side)
    peers, skipped_p = _peer_entries(bench, opts, side)
    kinds: dict[str, set[str]] = {}
    for names, kind in (([e.name for e in models], "model"), (skipped_m, "model")):
        for n in names:
            kinds.setdefault(n, set()).add(kind)
    for names, kind in (([e.name for e in peers], "peer"), (skipped_p, "peer")):
        for n in names:
            kinds.setdefault(n, set()).add(kind)
    same = {e.name for e in models}
    peers = [e for e in peers if e.name not in same]  # e.g. EASE: one run, reported twice
    return [*models, *peers], {**skipped_m, **skipped_p}, kinds


# -- Q1 ------------------------------------------------------------------------------------


def _q1_folds(
    path: Path, quick: bool, only: Sequence[int] | None = None
) -> tuple[list[S.RatingFold], str]:
    if only is not None and (not only or any(f not in range(1, 6) for f in only)):
        raise ValidationError(f"folds must be among 1..5, got {list(only)}")
    path = _require(path)
    if path.is_dir() and (path / "u1.base").is_file():
        chosen = tuple(only) if only is not None else (1,) if quick else (1, 2, 3, 4, 5)
        folds = S.movielens_folds(path, chosen)
        return folds, f"MovieLens folds at {path}"
    if path.is_dir() and (path / "u.data").is_file():
        path = path / "u.data"
    if path.is_file() and path.name.endswith(".data"):
        frame = pl.read_csv(
            path,
            separator="\t",
            has_header=False,
            schema={
                "user_id": pl.String,
                "item_id": pl.String,
                "value": pl.Float64,
                "ts": pl.Float64,
            },
        )
        frame = S.event_frame(frame, default_type="rate")
    elif path.is_file():
        frame = _generic_events(path, default_type="rate", purchases_only=False)
        frame = frame.filter(pl.col("value").is_not_null())
        if not frame.height:
            raise ValidationError(f"{path}: no ratings (a value or rating column)")
    else:
        raise DatasetNotFoundError(f"{path}: no u1.base … u5.base, u.data or rating table there")
    folds = S.random_rating_folds(frame, 5, seed=SEED)
    return folds[:1] if quick else folds, f"5 random rating folds (seed {SEED}) of {path}"


def _run_q1(bench: Benchmark, opts: RunOptions) -> dict[str, Any]:
    folds, source = _q1_folds(opts.data, opts.quick, opts.folds)
    entries, rows, kinds = _entries(bench, opts, Side())
    everything = pl.concat([folds[0].train, folds[0].test])
    dataset = f"{source}: {_describe(everything)} (ratings)"
    hyper: dict[str, Any] = {}
    per_fold: dict[str, list[dict[str, float]]] = {e.name: [] for e in entries}
    tracker = opts.tracker
    for fold in folds:
        fit_part, val_part = S.holdout(fold.train, 0.1, seed=SEED)
        val_task = rating_task(fit_part, val_part)
        test_task = rating_task(fold.train, fold.test)
        for e in entries:
            if e.name in rows:  # failed on an earlier fold
                continue

            def run(
                e: Entry = e,
                val: RatingTask = val_task,
                test: RatingTask = test_task,
                fold: S.RatingFold = fold,
            ) -> dict[str, Any]:
                tuned = opts.tune and len(grid_points(e.grid)) > 1
                rec = hyper.setdefault(
                    e.name,
                    _tuning_record(
                        e,
                        {},
                        [],
                        "RMSE on validation (a seeded 10% of each fold's base)"
                        if tuned
                        else "not tuned",
                    ),
                )
                if tuned:
                    res = tune(
                        e,
                        lambda m: evaluate_rating(m, val),
                        val.train,
                        "RMSE",
                        minimize=True,
                        tracker=tracker,
                    )
                    chosen = res.chosen
                    rec["trials"].append({"fold": fold.name, "trials": res.trials})
                else:
                    chosen = {k: v[0] for k, v in e.grid.items()}
                rec["chosen"][fold.name] = chosen
                tracker.log(f"{fold.name}: fitting {e.name} {chosen}")
                model, stats = fit_measured(e.make(chosen), test.train)
                scores = evaluate_rating(model, test)
                return {**scores, "train_s": stats.train_s, "peak_mem_mb": stats.peak_mem_mb}

            row = _result_row(e, run)
            if "skipped" in row:
                rows[e.name] = row
            else:
                per_fold[e.name].append(row)
    for e in entries:
        if e.name in rows:
            continue
        res: dict[str, Any] = {}
        for fold, r in zip(folds, per_fold[e.name], strict=True):
            res[f"RMSE_{fold.name}"] = r["RMSE"]
            res[f"MAE_{fold.name}"] = r["MAE"]
        res["RMSE"] = float(np.mean([r["RMSE"] for r in per_fold[e.name]]))
        res["MAE"] = float(np.mean([r["MAE"] for r in per_fold[e.name]]))
        res["train_s"] = float(np.sum([r["train_s"] for r in per_fold[e.name]]))
        res["peak_mem_mb"] = float(np.max([r["peak_mem_mb"] for r in per_fold[e.name]]))
        rows[e.name] = res
    protocol = (
        "Q1 rating prediction: train on each fold's base, test on its test set; RMSE and MAE "
        "per fold and their mean; predictions clipped to the training rating range for every "
        "model; hyperparameters chosen per fold on a seeded 10% holdout of its base "
        f"({', '.join(f.name for f in folds)}); train_s sums the final fits"
    )
    return _assemble(bench, dataset, protocol, rows, kinds, hyper)


# -- ranking benchmarks (Q2, Q3) -----------------------------------------------------------


@dataclass
class RankingStage:
    """Validation and test tasks of a ranking benchmark (plus extra test variants)."""

    validation: RankingTask
    test: RankingTask
    variants: dict[str, RankingTask]
    side: Side
    ks: tuple[int, ...]
    capped_recall: bool
    metrics: tuple[str, ...]


def _run_ranking(
    bench: Benchmark, opts: RunOptions, stage: RankingStage, dataset: str, protocol: str
) -> dict[str, Any]:
    entries, rows, kinds = _entries(bench, opts, stage.side)
    hyper: dict[str, Any] = {}
    tracker = opts.tracker
    features = _feature_matrix(stage.side.tokens, stage.test.train)
    val_ks = tuple(sorted({int(bench.objective.split("@")[1])}))
    objective_metric = bench.objective.split("@")[0]

    def validate(model: Any) -> dict[str, float]:
        return evaluate_ranking(
            model,
            stage.validation,
            val_ks,
            capped_recall=stage.capped_recall,
            metrics=(objective_metric,),
            tracker=tracker,
            label="validation",
        )

    for e in entries:

        def run(e: Entry = e) -> dict[str, Any]:
            if opts.tune and len(grid_points(e.grid)) > 1:
                res = tune(e, validate, stage.validation.train, bench.objective, tracker=tracker)
                hyper[e.name] = _tuning_record(
                    e, res.chosen, res.trials, f"{bench.objective} on validation"
                )
                chosen = res.chosen
            else:
                chosen = {k: v[0] for k, v in e.grid.items()}
                hyper[e.name] = _tuning_record(e, chosen, [], "not tuned")
            tracker.log(f"fitting {e.name} {chosen}")
            model, stats = fit_measured(e.make(chosen), stage.test.train)
            out: dict[str, Any] = evaluate_ranking(
                model,
                stage.test,
                stage.ks,
                capped_recall=stage.capped_recall,
                metrics=stage.metrics,
                item_features=features,
                tracker=tracker,
                label=f"test {e.name}",
            )
            for vname, vtask in stage.variants.items():
                v = evaluate_ranking(
                    model,
                    vtask,
                    stage.ks,
                    capped_recall=stage.capped_recall,
                    metrics=stage.metrics,
                    tracker=tracker,
                    label=f"{vname} {e.name}",
                )
                out |= {f"{vname}.{k}": x for k, x in v.items() if k != "score_s"}
            out["train_s"] = stats.train_s
            for attr in ("best_val_", "best_epoch_"):  # early stopping inside fit (SASRec)
                found = getattr(model, attr, None)
                if isinstance(found, int | float):
                    out[f"fit.{attr.rstrip('_')}"] = float(found)
            out["train_cpu_s"] = stats.train_cpu_s
            out["peak_mem_mb"] = stats.peak_mem_mb
            return out

        t0 = time.perf_counter()
        rows[e.name] = _result_row(e, run)
        tracker.log(f"{e.name} done in {time.perf_counter() - t0:.1f} s")
    return _assemble(bench, dataset, protocol, rows, kinds, hyper)


# -- Q2 ------------------------------------------------------------------------------------


def _q2_events(path: Path) -> tuple[pl.DataFrame, Side, str]:
    from shopcast.ingest.datasets import load_amazon_s3rec

    path = _require(path)
    s3rec = (path.is_dir() and any(path.glob("*_item2attributes.json"))) or path.suffix == ".txt"
    if s3rec:
        if path.is_dir() and not (path / "Beauty.txt").is_file():
            jsons = sorted(path.glob("*_item2attributes.json"))
            path = path / (jsons[0].name.removesuffix("_item2attributes.json") + ".txt")
        frames = load_amazon_s3rec(path)
        frame = S.event_frame(frames.events.rename({"timestamp": "ts"}))
        side = Side(frames.items, _item_tokens(frames.items))
        return frame, side, f"S3-Rec sequences at {path}"
    if path.is_dir():
        raise DatasetNotFoundError(
            f"{path}: no S3-Rec files (<name>.txt + <name>_item2attributes.json); "
            "pass the folder of an S3-Rec dataset or an event table"
        )
    frame = _generic_events(path, default_type="purchase", purchases_only=False)
    return frame, Side(), f"event table {path}"


#: Users of the Q2 validation set that tuning scores (a seeded sample, for time).
Q2_VALIDATION_USERS = 10_000


def _run_q2(bench: Benchmark, opts: RunOptions) -> dict[str, Any]:
    frame, side, source = _q2_events(opts.data)
    if opts.quick:
        frame = _subsample_users(frame, 2000)
    dataset = f"{source}: {_describe(frame)}" + (" (quick: 2,000 users)" if opts.quick else "")
    loo = S.leave_one_out(frame)
    if not loo.test.height:
        raise ValidationError("no user has 3 or more events: nothing to leave out")
    opts.tracker.log("building tasks")
    stage = RankingStage(
        validation=sample_users(ranking_task(loo.train, loo.validation), Q2_VALIDATION_USERS),
        test=ranking_task(pl.concat([loo.train, loo.validation]), loo.test),
        variants={},
        side=side,
        ks=(1, 5, 10, 20, 50),
        capped_recall=False,
        metrics=("HR", "NDCG", "MRR"),
    )
    protocol = (
        "Q2 next item, leave-one-out: per user in time order, last item = test, second to last "
        "= validation, the rest = training; tuned on validation (models fitted on training; "
        f"a seeded sample of {Q2_VALIDATION_USERS:,} validation users), then refitted on "
        "training + validation; rank ALL items, the user's earlier items "
        f"excluded; HR@K, NDCG@K, MRR@K over {stage.test.relevant.shape[0]:,} users; ties "
        "broken by lower item index"
    )
    return _run_ranking(bench, opts, stage, dataset, protocol)


# -- Q3 ------------------------------------------------------------------------------------

Q3_CUTOFF = "2011-11-01"
Q3_VALIDATION_DAYS = 31


def _q3_events(path: Path) -> tuple[pl.DataFrame, Side, str]:
    from shopcast.ingest.datasets import load_online_retail

    path = _require(path)
    try:
        frames = load_online_retail(path)
    except (NotFoundError, ValidationError):  # not the UCI layout: a plain event table
        if path.is_dir():
            raise
        frame = _generic_events(path, default_type="purchase", purchases_only=True)
        return frame, Side(), f"event table {path}"
    events = frames.events.filter(pl.col("user_id").is_not_null())
    frame = S.event_frame(events.rename({"timestamp": "ts"}).drop("session_id"))
    side = Side(frames.items, _item_tokens(frames.items))
    return frame, side, f"UCI Online Retail at {path}"


def _run_q3(bench: Benchmark, opts: RunOptions) -> dict[str, Any]:
    frame, side, source = _q3_events(opts.data)
    if opts.quick:
        frame = _subsample_users(frame, 800)
    dataset = f"{source}: {_describe(frame)} (purchase lines with a CustomerID)" + (
        " (quick: 800 customers)" if opts.quick else ""
    )
    cutoff = S.to_epoch(opts.cutoff or Q3_CUTOFF)
    val_cutoff = cutoff - Q3_VALIDATION_DAYS * 86_400.0
    before = frame.filter(pl.col("ts") < cutoff)
    val = S.temporal_split(before, val_cutoff)
    test = S.temporal_split(frame, cutoff)
    again = S.temporal_split(frame, cutoff, new_items_only=False)
    for label, split in (("validation", val), ("test", test)):
        if not split.train.height or not split.test.height:
            raise ValidationError(
                f"the cutoff leaves no {label} data ({split.train.height} training events, "
                f"{split.test.height} held-out pairs); pass --cutoff inside the data's time span"
            )
    opts.tracker.log("building tasks")
    test_task = ranking_task(test.train, test.test, now=cutoff)
    again_task = ranking_task(test_task.train, again.test, exclude_history=False, now=cutoff)
    stage = RankingStage(
        validation=ranking_task(val.train, val.test, now=val_cutoff),
        test=test_task,
        variants={"buy_again": again_task},
        side=side,
        ks=(5, 10, 20, 50),
        capped_recall=True,
        metrics=("Recall", "NDCG", "HR", "Precision", "F1", "MRR", "MAP"),
    )
    day = time.strftime("%Y-%m-%d", time.gmtime(cutoff))
    vday = time.strftime("%Y-%m-%d", time.gmtime(val_cutoff))
    unknown = int(stage.test.relevant[:, stage.test.n_items :].nnz)
    protocol = (
        f"Q3 next-month purchases: customers with an id; cancellations and non-positive "
        f"quantities removed; train = before {day}; test = for each training customer, the "
        f"distinct items bought on or after {day} not bought before "
        f"({stage.test.relevant.shape[0]:,} customers, {stage.test.relevant.nnz:,} pairs, "
        f"{unknown:,} of them items unseen in training); rank ALL training items, the "
        "customer's training items excluded; Recall@K with denominator min(K, |test|), NDCG@K. "
        f"buy_again.*: every distinct item bought on or after {day}, history allowed. Tuned on "
        f"validation: train before {vday}, validation = new items bought {vday}…{day}"
    )
    return _run_ranking(bench, opts, stage, dataset, protocol)


# -- registry ------------------------------------------------------------------------------

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "q1", "movielens-100k", "rating",
            "MovieLens 100K official folds u1…u5", ("surprise-svd", "surprise-svdpp"),
            ("RMSE_u1", "RMSE", "MAE", "train_s"), "RMSE", _run_q1,
        ),
        Benchmark(
            "q2", "amazon-beauty", "ranking",
            "Amazon Beauty (S3-Rec) leave-one-out, full ranking",
            ("ease", "implicit-als", "implicit-bpr", "lightfm"),
            ("HR@10", "NDCG@10", "NDCG@20", "MRR@10", "coverage@10", "train_s"), "NDCG@10", _run_q2,
        ),
        Benchmark(
            "q3", "uci-online-retail", "ranking",
            "UCI Online Retail next-month purchases, temporal cutoff",
            ("ease", "implicit-als", "implicit-bpr", "lightfm"),
            ("Recall@10", "Recall@20", "NDCG@10", "buy_again.Recall@10", "buy_again.NDCG@10",
             "coverage@10", "train_s"),
            "NDCG@10", _run_q3,
        ),
    )
}  # fmt: skip


def run_benchmark(name: str, opts: RunOptions) -> dict[str, Any]:
    """Run benchmark ``name`` (``q1``, ``q2``, ``q3``) and return its result dict."""
    bench = BENCHMARKS.get(name.lower())
    if bench is None:
        raise NotFoundError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    _check_names(opts)
    return bench.run(bench, opts)


def _check_names(opts: RunOptions) -> None:
    """Refuse unknown model or peer names before any data is read."""
    from shopcast.models import MODELS

    for label, given, known in (("model", opts.models, MODELS), ("peer", opts.peers, PEERS)):
        unknown = [n for n in given or () if n not in known]
        if unknown:
            raise NotFoundError(
                f"unknown {label}(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
