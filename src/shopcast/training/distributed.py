"""Distributed data-parallel training of the deep models with ``torch.distributed``.

One implementation serves every model that supports it (``SASRec``, the hybrid
``HybridRanker`` / ``HybridRating``: class attribute ``supports_data_parallel``):

``fit_distributed(model, data, world=2)`` starts ``world`` processes
(``torch.multiprocessing`` spawn, the ``gloo`` backend: CPU, one machine or several).
Every process holds the whole data set and draws the same global batches from the same
seeded generator; rank ``r`` computes the loss of rows ``r, r + world, …`` of each
global batch (``DataParallel.shard``: ``DistributedSampler`` semantics with a shared
shuffling seed and a per-rank batch of ``batch_size / world``). Each rank's loss is
scaled so that the ranks' losses sum to the global batch's loss; after each backward
pass the gradients are summed across processes with ``all_reduce``
(``DataParallel.sum_gradients``, what ``DistributedDataParallel`` does), so every
optimizer step is the single-process step with the same global batch. With dropout off
the result matches single-process training up to float rounding (tested:
``tests/training/test_distributed.py``); with ``nn.Dropout`` on, each process draws its
own masks.

Negatives: the hybrid ranker's in-batch negatives are the positives of the *global*
batch (every rank builds the same candidate set from the global batch indices, so no
gather is needed), its sampled negatives and every numpy-drawn mask (edge and id
dropout) come from the shared generator: the candidate set and the masks of a step are
those of the single-process step. The price: each rank runs the item tower over the
whole candidate set (only the user tower is split).

Rank 0 saves the model in the usual format (``.npz`` + JSON, no pickle) and the
caller loads it. Under ``torchrun`` (several hosts), call ``fit_rank(model, data)`` in
each process after ``init_process_group("gloo")`` (env:// rendezvous; every process
loads the same data) and save on rank 0 (tested with ``torchrun --nproc-per-node 2``).

CLI: ``shopcast train --ddp 2`` (the sequence model and the hybrid ``embedding`` model).
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from shopcast.errors import ConfigError
from shopcast.models._base import IntArray, Interactions, Vocabulary


class _Trainable(Protocol):
    supports_data_parallel: bool

    def fit(self, data: Interactions) -> Any: ...

    def save(self, path: Path) -> None: ...


M = TypeVar("M", bound=_Trainable)


@dataclass(frozen=True)
class DataParallel:
    """This process's place in the group; set as ``model._data_parallel`` during fit."""

    rank: int
    world: int

    def shard(self, n: int) -> IntArray:
        """Positions of this rank's rows in a global batch of ``n`` rows."""
        return np.arange(self.rank, n, self.world, dtype=np.int64)

    def sum_gradients(self, net: Any, *extra: Any) -> list[float]:
        """All-reduce (sum) every parameter's gradient, zeros where a rank had none;
        ``extra`` scalars (e.g. the rank's loss) ride along and come back summed."""
        import torch
        import torch.distributed as dist

        grads = []
        for p in net.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        tail = torch.tensor([float(x) for x in extra], dtype=grads[0].dtype)
        flat = torch.cat([*(g.reshape(-1) for g in grads), tail])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n
        return [float(x) for x in flat[offset:]]


def supports(model: object) -> bool:
    """Whether ``model`` trains data-parallel (``fit_distributed``): its class does and
    it is not set to DP-SGD (Opacus clips per example within one process)."""
    return bool(getattr(model, "supports_data_parallel", False)) and (
        getattr(model, "dp", None) is None
    )


def fit_rank(model: M, data: Interactions) -> M:
    """Train this process's part (the process group is initialized)."""
    import torch.distributed as dist

    model._data_parallel = DataParallel(dist.get_rank(), dist.get_world_size())  # type: ignore[attr-defined]
    try:
        model.fit(data)
        return model
    finally:
        del model._data_parallel  # type: ignore[attr-defined]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(
    rank: int, world: int, port: int, model: _Trainable, data: Interactions, out: str
) -> None:
    import torch.distributed as dist

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        fit_rank(model, data)
        if rank == 0:
            model.save(Path(out))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def fit_distributed(model: M, data: Interactions, *, world: int = 2) -> M:
    """``model`` trained on ``data`` by ``world`` local processes; the fitted model
    (loaded from what rank 0 saved: ``type(model).load(dir, data.items)``)."""
    from torch.multiprocessing.spawn import spawn

    if world < 1:
        raise ConfigError(f"world (--ddp) must be >= 1, got {world}")
    if getattr(model, "dp", None) is not None:  # Opacus' per-example clipping is per process
        raise ConfigError("a model trained with DP-SGD (dp) does not train data-parallel (--ddp)")
    if not supports(model):
        raise ConfigError(f"{type(model).__name__} does not train data-parallel (--ddp)")
    if world == 1:
        model.fit(data)
        return model
    with tempfile.TemporaryDirectory(prefix="shopcast-ddp-") as tmp:
        out = Path(tmp) / "model"
        args = (world, _free_port(), model, data, str(out))
        spawn(_worker, args=args, nprocs=world)  # type: ignore[no-untyped-call]
        items: Vocabulary = data.items
        loaded: M = type(model).load(out, items)  # type: ignore[attr-defined]
        return loaded
