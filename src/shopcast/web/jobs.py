"""Long jobs started from the dashboard: import, train, evaluate.

``JobRunner`` runs one job at a time on a worker thread (an import and a training on
the same SQLite log would only slow each other down) and keeps the last
``keep`` jobs in memory with their progress (0..1), current stage, result or error.
Jobs live in the process that started them: a restart forgets them (the work they
did — imported events, a promoted model, a result file — stays).

Kinds (``KINDS``):

- ``import``: ``{"source": "simulated" | <dataset name>, "seed": int}`` — the simulated
  shop (SYNTHETIC) or a known dataset under ``SHOPCAST_DATA``; new items are live at
  once, the events count in recommendations after the next training.
- ``train``: ``{"ranker": bool | null}`` — ``train_bundle`` on the whole log, saved and
  promoted, then served by this process.
- ``evaluate``: ``{"benchmark": "q1", "quick": true}`` — ``shopcast evaluate``'s
  benchmark run; the report lands in ``settings.reports_dir`` (the models panel
  shows it).
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shopcast.config import Settings
from shopcast.errors import FieldError, NotFoundError, ValidationError
from shopcast.serving.engine import Engine
from shopcast.storage import Store


@dataclass
class Job:
    """One job's state, as ``GET /v1/jobs/{id}`` shows it."""

    kind: str
    params: dict[str, Any]
    tenant: str = "default"
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    status: str = "queued"  # queued | running | done | failed
    progress: float = 0.0
    stage: str = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None

    def update(self, progress: float | None = None, stage: str | None = None) -> None:
        if progress is not None:
            self.progress = max(self.progress, min(1.0, float(progress)))
        if stage is not None:
            self.stage = stage

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "kind": self.kind,
            "params": self.params,
            "status": self.status,
            "progress": round(self.progress, 4),
            "stage": self.stage,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "seconds": (
                round((self.finished_at or time.time()) - self.started_at, 3)
                if self.started_at
                else None
            ),
            "result": self.result,
            "error": self.error,
        }


@dataclass
class JobContext:
    """What a job works on: one tenant's settings, store and engine."""

    settings: Settings
    store: Store
    engine: Engine
    tenant: str = "default"


Work = Callable[[Job, JobContext], dict[str, Any]]


def _import(job: Job, ctx: JobContext) -> dict[str, Any]:
    from shopcast.ingest.datasets import DATASETS, load_dataset
    from shopcast.ingest.importer import import_events, import_frames, import_items, import_users

    source = str(job.params.get("source", "simulated"))
    if source == "simulated":
        from shopcast.simulate import simulate_shop

        job.update(0.05, "simulating a shop (SYNTHETIC data)")
        shop = simulate_shop(seed=int(job.params.get("seed", 7)))
        import_items(ctx.store, shop.items)
        import_users(ctx.store, shop.users)
        total = max(1, shop.events.height)
        job.update(0.1, "importing events")
        summary = import_events(
            ctx.store,
            shop.events,
            progress=lambda done: job.update(0.1 + 0.85 * done / total),
            chunk_rows=max(1000, total // 20),
        )
        items = shop.items
    else:
        if source not in DATASETS:
            raise NotFoundError(
                f"unknown dataset {source!r}; known: simulated, {', '.join(DATASETS)}"
            )
        job.update(0.02, f"loading {source}")
        frames = load_dataset(source, data_path=ctx.settings.data_path)
        total = max(1, frames.events.height)
        job.update(0.2, "importing")
        summary = import_frames(
            ctx.store, frames, progress=lambda done: job.update(0.2 + 0.75 * done / total)
        )
        items = list(frames.items)
    job.update(0.97, "indexing new items")
    ctx.engine.upsert_items(items)
    out = summary.as_dict()
    out["note"] = "train a model to use the new events in recommendations"
    return out


def _train(job: Job, ctx: JobContext) -> dict[str, Any]:
    from shopcast.training.bundle import make_models, save_bundle, train_bundle

    cfg = ctx.settings.recommend
    expected = 2 + len(make_models(cfg))  # load, fit each role, (ranker), save
    expected += int(ctx.settings.training.sequence) + int(ctx.settings.training.embedding)
    stages = 0

    def progress(stage: str) -> None:
        nonlocal stages
        stages += 1
        job.update(min(0.9, stages / expected), stage)

    ranker = job.params.get("ranker")
    bundle = train_bundle(
        ctx.store,
        cfg,
        progress=progress,
        training=ctx.settings.training,
        ranker=None if ranker is None else bool(ranker),
        settings=ctx.settings,
    )
    job.update(0.92, "saving and promoting")
    save_bundle(bundle, ctx.settings.model_dir)
    job.update(0.96, "loading the new model")
    ctx.engine.reload_if_changed()
    return {"version": bundle.version, "stats": bundle.stats, "serving": ctx.engine.bundle.version}


def _evaluate(job: Job, ctx: JobContext) -> dict[str, Any]:
    from rich.progress import Progress

    from shopcast.evaluation.benchmarks import BENCHMARKS, RunOptions, run_benchmark
    from shopcast.evaluation.harness import Tracker
    from shopcast.evaluation.report import write_report

    name = str(job.params.get("benchmark", "q1")).lower()
    bench = BENCHMARKS.get(name)
    if bench is None:
        raise NotFoundError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    quick = bool(job.params.get("quick", True))
    data = ctx.settings.data_path / bench.folder
    if not data.exists():
        raise NotFoundError(f"the dataset of {bench.name} is not under {ctx.settings.data_path}")
    bars = Progress(disable=True)
    done = threading.Event()

    def watch() -> None:  # the harness reports through rich bars: mirror the current one
        while not done.wait(0.25):
            tasks = [t for t in bars.tasks if t.total]
            if tasks:
                t = tasks[-1]
                job.update(stage=f"{t.description} ({t.completed:.0f}/{t.total:.0f})")

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    job.update(0.05, f"running {bench.name}")
    try:
        opts = RunOptions(data=data, quick=quick, tune=not quick, tracker=Tracker(bars))
        result = run_benchmark(bench.name, opts)
    finally:
        done.set()
    job.update(0.95, "writing the report")
    out = ctx.settings.reports_dir / f"{bench.name}{'-quick' if quick else ''}.json"
    paths = write_report(result, out)
    return {"benchmark": bench.name, "files": [str(p) for p in paths]}


KINDS: dict[str, Work] = {"import": _import, "train": _train, "evaluate": _evaluate}


class JobRunner:
    """One worker thread, jobs run in submission order."""

    def __init__(self, keep: int = 50) -> None:
        self.keep = keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._queue: queue.Queue[tuple[Job, JobContext, Work] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, kind: str, params: dict[str, Any], ctx: JobContext) -> Job:
        work = KINDS.get(kind)
        if work is None:
            raise ValidationError(
                "unknown job kind", [FieldError("kind", f"{kind!r}; one of {', '.join(KINDS)}")]
            )
        job = Job(kind, params, ctx.tenant)
        with self._lock:
            self._jobs[job.job_id] = job
            while len(self._jobs) > self.keep:
                oldest = next(iter(self._jobs.values()))
                if oldest.status in ("queued", "running"):
                    break
                self._jobs.popitem(last=False)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="jobs", daemon=True)
                self._thread.start()
        self._queue.put((job, ctx, work))
        return job

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id!r}")
        return job

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(reversed(self._jobs.values()))

    def _work(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is None:
                return
            job, ctx, work = entry
            job.status, job.started_at, job.stage = "running", time.time(), "starting"
            try:
                job.result = work(job, ctx)
                job.status, job.progress, job.stage = "done", 1.0, "done"
            except Exception as exc:  # reported on the job; the runner goes on
                job.status, job.stage = "failed", "failed"
                job.error = f"{type(exc).__name__}: {exc}"
                job.result = {"traceback": traceback.format_exc(limit=5)}
            finally:
                job.finished_at = time.time()

    def close(self) -> None:
        self._queue.put(None)
