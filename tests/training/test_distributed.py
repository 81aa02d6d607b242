"""Distributed data-parallel SASRec training: 2 real processes (gloo, CPU) give the
single-process result (dropout off, so both are deterministic). SYNTHETIC shop."""

from __future__ import annotations

import numpy as np
import torch

from shopcast.models._base import Interactions, Vocabulary
from shopcast.models.sasrec import SASRec
from shopcast.simulate import SimulatedShop
from shopcast.training.distributed import fit_sasrec_distributed

SETUP = {
    "hidden": 8,
    "max_len": 8,
    "blocks": 1,
    "epochs": 3,
    "dropout": 0.0,
    "attn_dropout": 0.0,
    "batch_size": 16,
    "holdout": False,
    "refit": False,
    "seed": 1,
    "threads": 1,
    "lr": 1e-2,
}


def test_two_processes_match_single_process_training(small_shop: SimulatedShop) -> None:
    from shopcast.ingest.importer import import_events
    from shopcast.storage import open_store

    store = open_store("memory://")
    import_events(store, small_shop.events)
    data = Interactions.from_frame(store.events.frame(), users=Vocabulary(), items=Vocabulary())
    single = SASRec(**SETUP).fit(data)  # type: ignore[arg-type]
    ddp = fit_sasrec_distributed(SASRec(**SETUP), data, world=2)  # type: ignore[arg-type]
    fresh = SASRec(**{**SETUP, "epochs": 1}).fit(data)  # type: ignore[arg-type]
    a, b, c = single.net_.state_dict(), ddp.net_.state_dict(), fresh.net_.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5)
    # the comparison can fail: more training moved the weights well beyond the tolerance
    assert max(float((a[n] - c[n]).abs().max()) for n in a) > 1e-2
    items = np.arange(min(50, len(data.items)))
    for model in (single, ddp):
        model._refresh()
    from shopcast.models._base import Context

    ctx = Context(now=0.0, recent_items=np.array([1, 2, 3]), recent_types=np.zeros(3, np.int64))
    np.testing.assert_allclose(ddp.score(ctx, items), single.score(ctx, items), atol=1e-4)


def test_cli_train_ddp(tmp_path: object, small_shop: SimulatedShop) -> None:
    """`shopcast train --sequence --ddp 2` trains and promotes a bundle with the sequence model."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from shopcast.ingest.importer import import_events, import_items
    from shopcast.storage import open_store
    from shopcast.training.bundle import load_current

    assert isinstance(tmp_path, Path)
    db = f"sqlite:///{tmp_path / 'shop.db'}"
    store = open_store(db)
    import_items(store, small_shop.items)
    import_events(store, small_shop.events)
    store.close()
    env = {
        **os.environ,
        "SHOPCAST_MODEL_DIR": str(tmp_path / "models"),
        "SHOPCAST_TRAINING__SEQUENCE_EPOCHS": "2",
        "SHOPCAST_TRAINING__SEQUENCE_HIDDEN": "8",
        "OPENBLAS_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shopcast.cli",
            "train",
            "--db",
            db,
            "--sequence",
            "--ddp",
            "2",
            "--no-ranker",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    bundle = load_current(tmp_path / "models")
    assert bundle is not None and "sequence" in bundle.models
