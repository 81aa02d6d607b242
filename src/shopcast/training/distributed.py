"""Distributed data-parallel training of SASRec with PyTorch (``torch.distributed``).

``fit_sasrec_distributed(model, data, world=2)`` starts ``world`` processes
(``torch.multiprocessing``, the ``gloo`` backend: CPU, one machine or several), each
training the same model on its slice of every batch; after each backward pass the
gradients are summed across processes with ``all_reduce`` (what
``DistributedDataParallel`` does), each process's loss being weighted by its share of
the batch's targets. Every optimizer step is therefore the single-process step: with
dropout off the result matches single-process training up to float rounding (tested:
``tests/training/test_distributed.py``); with dropout each process draws its own masks.

Rank 0 saves the model in the usual format (``SASRec.save``: ``.npz`` + JSON, no
pickle) and the caller loads it. Under ``torchrun`` (several hosts), call
``fit_rank(model, data)`` in each process after ``init_process_group``.

CLI: ``shopcast train --sequence --ddp 2``.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shopcast.models._base import Interactions
from shopcast.models.sasrec import SASRec


@dataclass(frozen=True)
class DataParallel:
    rank: int
    world: int

    def sum_gradients(self, net: Any) -> None:
        """All-reduce (sum) every parameter's gradient, zeros where a rank had none."""
        import torch
        import torch.distributed as dist

        grads = []
        for p in net.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n


def fit_rank(model: SASRec, data: Interactions) -> SASRec:
    """Train this process's part (the process group is initialized)."""
    import torch.distributed as dist

    model._data_parallel = DataParallel(dist.get_rank(), dist.get_world_size())  # type: ignore[attr-defined]
    try:
        return model.fit(data)
    finally:
        del model._data_parallel  # type: ignore[attr-defined]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, model: SASRec, data: Interactions, out: str) -> None:
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


def fit_sasrec_distributed(model: SASRec, data: Interactions, *, world: int = 2) -> SASRec:
    """``model`` trained on ``data`` by ``world`` local processes; the fitted model."""
    from torch.multiprocessing.spawn import spawn

    if world < 1:
        from shopcast.errors import ConfigError

        raise ConfigError(f"world (--ddp) must be >= 1, got {world}")
    if world == 1:
        return model.fit(data)
    with tempfile.TemporaryDirectory(prefix="shopcast-ddp-") as tmp:
        out = Path(tmp) / "model"
        args = (world, _free_port(), model, data, str(out))
        spawn(_worker, args=args, nprocs=world)  # type: ignore[no-untyped-call]
        return SASRec.load(out, data.items)
