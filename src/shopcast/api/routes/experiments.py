"""A/B experiments (admin): CRUD, report, stop, promote; off-policy evaluation."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from shopcast.api.routes._common import engine_of, settings_of, store_of
from shopcast.experiments import ope, service
from shopcast.experiments.model import VERSION_PATTERN, ExperimentSpec
from shopcast.experiments.replay import ReplayPolicy
from shopcast.feedback.tracker import FeedbackTracker, tracker_for
from shopcast.serving.pipeline import PUBLIC_SCENES

router = APIRouter(tags=["experiments"])


def _tracker(request: Request) -> FeedbackTracker:
    engine = engine_of(request)
    if engine.impressions is not None:
        engine.impressions.flush()  # what was just served counts
    return tracker_for(store_of(request), settings_of(request))


@router.get("/v1/experiments")
def list_experiments(request: Request) -> dict[str, Any]:
    store = service.experiments(settings_of(request))
    return {"experiments": [e.model_dump(mode="json") for e in store.all()]}


@router.post("/v1/experiments", status_code=201)
async def create_experiment(request: Request, spec: ExperimentSpec) -> dict[str, Any]:
    """Start an experiment (409 when a running one covers one of its scenes)."""
    experiment = service.create(settings_of(request), spec)
    return experiment.model_dump(mode="json")


@router.get("/v1/experiments/{experiment_id}")
def get_experiment(request: Request, experiment_id: str) -> dict[str, Any]:
    return service.experiments(settings_of(request)).get(experiment_id).model_dump(mode="json")


@router.delete("/v1/experiments/{experiment_id}", status_code=204)
def delete_experiment(request: Request, experiment_id: str) -> Response:
    service.experiments(settings_of(request)).delete(experiment_id)
    return Response(status_code=204)


@router.get("/v1/experiments/{experiment_id}/report")
async def experiment_report(request: Request, experiment_id: str) -> dict[str, Any]:
    """Per-variant CTR, conversion and RPM with intervals, tests against the control."""
    tracker = await run_in_threadpool(_tracker, request)  # flushes impressions (disk)
    settings = settings_of(request)
    return await run_in_threadpool(service.report, settings, tracker, experiment_id)


@router.post("/v1/experiments/{experiment_id}/stop")
def stop_experiment(request: Request, experiment_id: str) -> dict[str, Any]:
    """Everybody gets the default again; the data stays for the report."""
    return service.stop(settings_of(request), experiment_id).model_dump(mode="json")


class PromoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variant: str | None = Field(None, description="Default: the report's winner")
    force: bool = Field(False, description="Promote a variant that is not the winner")


@router.post("/v1/experiments/{experiment_id}/promote")
async def promote_experiment(
    request: Request, experiment_id: str, body: PromoteBody | None = None
) -> dict[str, Any]:
    """Stop the experiment and serve the variant's model version (CURRENT)."""
    body = body or PromoteBody()
    tracker = await run_in_threadpool(_tracker, request)  # flushes impressions (disk)
    out = await run_in_threadpool(
        service.promote,
        settings_of(request),
        tracker,
        experiment_id,
        body.variant,
        force=body.force,
    )
    await run_in_threadpool(engine_of(request).reload_if_changed)
    return out


class OPEBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_version: str | None = Field(
        None, max_length=128, pattern=VERSION_PATTERN, description="Candidate (default: CURRENT)"
    )
    k: int = Field(10, ge=1, le=200, description="Slate size of the candidate")
    since: float | None = Field(None, description="Only slots explored after (epoch s)")
    scene: str | None = Field(None, description="Only this scene")


@router.post("/v1/experiments/ope")
async def off_policy(request: Request, body: OPEBody) -> dict[str, Any]:
    """IPS and SNIPS estimates of a candidate model's CTR on logged exploration: the
    candidate (as trained, from the registry) answers each logged request as of its
    time (``experiments.replay``)."""
    import polars as pl

    from shopcast.errors import FieldError, ValidationError

    if body.scene is not None and body.scene not in PUBLIC_SCENES:
        raise ValidationError("invalid scene", [FieldError("scene", "unknown scene")])
    tracker = await run_in_threadpool(_tracker, request)  # flushes impressions (disk)
    engine, settings = engine_of(request), settings_of(request)
    logged = tracker.attributed(fresh=True)
    if body.since is not None:
        logged = logged.filter(pl.col("ts") >= body.since)
    if body.scene is not None:
        logged = logged.filter(pl.col("scene") == body.scene)

    version = body.model_version or engine.bundle.version
    policy = await run_in_threadpool(
        ReplayPolicy.of_version,
        store_of(request),
        settings,
        version,
        k=body.k,
        content=engine.item_features,
    )

    started = time.perf_counter()
    result = await run_in_threadpool(ope.estimate, logged, policy, alpha=settings.experiments.alpha)
    return {
        "model_version": version,
        **result.as_dict(),
        "seconds": round(time.perf_counter() - started, 3),
    }
