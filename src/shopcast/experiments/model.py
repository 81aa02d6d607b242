"""Experiments: definitions, deterministic assignment, storage.

An experiment splits shoppers between variants. Each variant serves a model version
from the registry (``model_version``; None = whatever is CURRENT) and/or a pipeline
configuration (``diversity``: the MMR strength). Assignment is deterministic and needs
no storage: ``u = H(salt, "traffic", key)`` decides whether the shopper is in the
experiment at all (``u < traffic``), and ``v = H(salt, "variant", key)`` picks the
variant by the cumulative ``share``s. ``H`` maps the first 8 bytes of SHA-256 to
[0, 1). ``key`` is the user id, else ``s:<session id>``. Two salts give independent
splits; the same salt always gives the same split, in every process.

Experiments live as JSON files in ``<model_dir>/experiments/`` (written atomically), so
every API process and the CLI share them, as they share the model registry; the
serving layer re-reads them when the directory changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shopcast.errors import ConflictError, NotFoundError

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
#: What a model version may look like (``training.bundle.new_version``: v20261128-…).
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
Status = Literal["running", "stopped", "promoted"]
Metric = Literal["ctr", "conversion_rate", "rpm"]


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    share: float = Field(gt=0, description="Relative traffic share (normalized over variants)")
    model_version: str | None = Field(
        None,
        max_length=128,
        pattern=VERSION_PATTERN,
        description="Registry version to serve (None: the CURRENT one)",
    )
    diversity: float | None = Field(None, ge=0, le=1, description="MMR strength override")


class ExperimentSpec(BaseModel):
    """What a client sends to create an experiment."""

    model_config = ConfigDict(extra="forbid")

    experiment_id: str = Field(description="Lower-case id: letters, digits, '_' and '-'")
    description: str = ""
    variants: list[Variant] = Field(min_length=2, max_length=16)
    traffic: float = Field(1.0, gt=0, le=1, description="Share of shoppers in the experiment")
    scenes: list[str] = Field(default_factory=list, description="Scenes covered (empty: all)")
    salt: str | None = Field(None, description="Hash salt (default: the experiment id)")
    metric: Metric = "ctr"

    @field_validator("experiment_id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("lower-case letters, digits, '_' or '-', at most 63, not '-' first")
        return v

    @field_validator("scenes")
    @classmethod
    def _scenes(cls, v: list[str]) -> list[str]:
        from shopcast.serving.pipeline import SCENES

        for scene in v:
            if scene not in SCENES:
                raise ValueError(f"unknown scene {scene!r}")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> ExperimentSpec:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variants: names must be distinct")
        return self


class Experiment(ExperimentSpec):
    status: Status = "running"
    created_at: float = Field(default_factory=time.time)
    stopped_at: float | None = None
    promoted: str | None = Field(None, description="The variant promoted, if any")

    @property
    def key_salt(self) -> str:
        return self.salt or self.experiment_id

    def covers(self, scene: str) -> bool:
        return not self.scenes or scene in self.scenes

    def assign(self, user_id: str | None, session_id: str | None) -> Variant | None:
        """The shopper's variant, or None when outside the experiment's traffic."""
        key = user_id if user_id is not None else None
        if key is None:
            if session_id is None:
                return None
            key = f"s:{session_id}"
        if unit_hash(self.key_salt, "traffic", key) >= self.traffic:
            return None
        total = sum(v.share for v in self.variants)
        u, acc = unit_hash(self.key_salt, "variant", key) * total, 0.0
        for variant in self.variants:
            acc += variant.share
            if u < acc:
                return variant
        return self.variants[-1]

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise NotFoundError(f"experiment {self.experiment_id!r} has no variant {name!r}")


def unit_hash(salt: str, purpose: str, key: str) -> float:
    """A uniform number in [0, 1) from SHA-256 of ``salt``, ``purpose`` and ``key``."""
    digest = hashlib.sha256(f"{salt}\x1f{purpose}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


class ExperimentStore:
    """Experiments as JSON files in one directory (shared by processes)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def of(cls, model_dir: Path) -> ExperimentStore:
        return cls(model_dir / "experiments")

    def _path(self, experiment_id: str) -> Path:
        if not _ID.match(experiment_id):
            raise NotFoundError(f"experiment {experiment_id!r} not found")
        return self.directory / f"{experiment_id}.json"

    def stamp(self) -> float:
        """Changes whenever an experiment is written (cheap to poll)."""
        try:
            return self.directory.stat().st_mtime_ns / 1e9
        except FileNotFoundError:
            return 0.0

    def all(self) -> list[Experiment]:
        if not self.directory.is_dir():
            return []
        out = []
        for path in self.directory.glob("*.json"):
            try:
                out.append(Experiment.model_validate_json(path.read_text()))
            except (OSError, ValueError):
                continue  # being written or damaged: not listed
        return sorted(out, key=lambda e: e.created_at)

    def get(self, experiment_id: str) -> Experiment:
        path = self._path(experiment_id)
        try:
            return Experiment.model_validate_json(path.read_text())
        except FileNotFoundError:
            raise NotFoundError(f"experiment {experiment_id!r} not found") from None

    def save(self, experiment: Experiment) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(experiment.experiment_id)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(experiment.model_dump(mode="json"), indent=2))
        tmp.replace(path)
        os.utime(self.directory)  # the stamp moves even on coarse-mtime filesystems

    def create(self, spec: ExperimentSpec) -> Experiment:
        """A running experiment; 409 when the id exists or a running one shares a scene."""
        if self._path(spec.experiment_id).exists():
            raise ConflictError(f"experiment {spec.experiment_id!r} already exists")
        for other in self.all():
            if other.status == "running" and _overlap(other.scenes, spec.scenes):
                raise ConflictError(
                    f"experiment {other.experiment_id!r} is running on the same scenes; "
                    "stop it first (one experiment per scene)"
                )
        experiment = Experiment(**spec.model_dump())
        self.save(experiment)
        return experiment

    def delete(self, experiment_id: str) -> None:
        path = self._path(experiment_id)
        try:
            path.unlink()
        except FileNotFoundError:
            raise NotFoundError(f"experiment {experiment_id!r} not found") from None
        os.utime(self.directory)

    def running(self) -> list[Experiment]:
        return [e for e in self.all() if e.status == "running"]


def _overlap(a: list[str], b: list[str]) -> bool:
    return not a or not b or bool(set(a) & set(b))
