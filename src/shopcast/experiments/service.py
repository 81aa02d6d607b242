"""Experiment operations shared by the API (``/v1/experiments``) and the CLI."""

from __future__ import annotations

import time
from typing import Any

from shopcast.config import Settings
from shopcast.errors import ConflictError, FieldError, NotFoundError, ValidationError
from shopcast.experiments.model import Experiment, ExperimentSpec, ExperimentStore
from shopcast.experiments.report import experiment_report
from shopcast.feedback.tracker import FeedbackTracker
from shopcast.training.registry import open_registry


def experiments(settings: Settings) -> ExperimentStore:
    return ExperimentStore.of(settings.model_dir)


def create(settings: Settings, spec: ExperimentSpec) -> Experiment:
    """A running experiment; every variant's model version must be in the registry."""
    registry = open_registry(settings)
    problems = []
    for n, variant in enumerate(spec.variants):
        if variant.model_version is not None:
            try:
                registry.path(variant.model_version)
            except NotFoundError as exc:
                problems.append(FieldError(f"variants.{n}.model_version", exc.message))
    if problems:
        raise ValidationError("unknown model version", problems)
    return experiments(settings).create(spec)


def stop(settings: Settings, experiment_id: str) -> Experiment:
    store = experiments(settings)
    experiment = store.get(experiment_id)
    if experiment.status == "running":
        experiment = experiment.model_copy(update={"status": "stopped", "stopped_at": time.time()})
        store.save(experiment)
    return experiment


def report(settings: Settings, tracker: FeedbackTracker, experiment_id: str) -> dict[str, Any]:
    experiment = experiments(settings).get(experiment_id)
    return experiment_report(
        experiment, tracker.attributed(fresh=True), alpha=settings.experiments.alpha
    )


def promote(
    settings: Settings,
    tracker: FeedbackTracker,
    experiment_id: str,
    variant: str | None = None,
    *,
    force: bool = False,
) -> dict[str, Any]:
    """Stop the experiment and make the variant's model version CURRENT.

    Without ``variant`` the report's winner is promoted (409 when there is none yet);
    a named variant that is not the winner needs ``force``. A variant that only
    changes the pipeline configuration cannot be promoted at run time (409: set it in
    the settings)."""
    store = experiments(settings)
    experiment = store.get(experiment_id)
    result = experiment_report(
        experiment, tracker.attributed(fresh=True), alpha=settings.experiments.alpha
    )
    winner = result["winner"]
    name = variant or winner
    if name is None:
        raise ConflictError(f"experiment {experiment_id!r} has no significant winner yet")
    chosen = experiment.variant(name)
    if name != winner and not force:
        raise ConflictError(
            f"variant {name!r} is not the winner ({winner!r}); pass force to promote anyway"
        )
    if chosen.model_version is None:
        if chosen.diversity is not None:
            raise ConflictError(
                f"variant {name!r} changes the pipeline configuration only; set "
                f"merchandising.diversity = {chosen.diversity} in the settings"
            )
        previous = None  # it served CURRENT already
    else:
        previous = open_registry(settings).promote(chosen.model_version)
    experiment = experiment.model_copy(
        update={
            "status": "promoted",
            "promoted": name,
            "stopped_at": experiment.stopped_at or time.time(),
        }
    )
    store.save(experiment)
    return {
        "experiment": experiment_id,
        "promoted": name,
        "model_version": chosen.model_version,
        "previous": previous,
        "winner": winner,
    }
