"""Distributed data-parallel training (SASRec, the hybrid ranker and rating heads): 2 real
processes (gloo, CPU) give the single-process result with the same global batch (dropout
off, so both are deterministic). SYNTHETIC shop."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from shopcast.models._base import Interactions, Vocabulary
from shopcast.models.sasrec import SASRec
from shopcast.simulate import SimulatedShop
from shopcast.training.distributed import fit_distributed

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


def shop_data(shop: SimulatedShop) -> Interactions:
    from shopcast.ingest.importer import import_events
    from shopcast.storage import open_store

    store = open_store("memory://")
    import_events(store, shop.events)
    return Interactions.from_frame(store.events.frame(), users=Vocabulary(), items=Vocabulary())


def test_two_processes_match_single_process_training(small_shop: SimulatedShop) -> None:
    data = shop_data(small_shop)
    single = SASRec(**SETUP).fit(data)  # type: ignore[arg-type]
    ddp = fit_distributed(SASRec(**SETUP), data, world=2)  # type: ignore[arg-type]
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
    """`shopcast train --sequence --embedding --ddp 2` trains and promotes a bundle with the
    sequence and the hybrid embedding models (both data-parallel)."""
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
        "SHOPCAST_TRAINING__EMBEDDING_EPOCHS": "2",
        "SHOPCAST_TRAINING__EMBEDDING_DIM": "8",
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
            "--embedding",
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
    assert bundle is not None and {"sequence", "embedding"} <= set(bundle.models)


# The hybrid heads with every numpy-drawn randomness on (id and edge dropout, sampled
# negatives, a holdout with early stopping and refit, an EMA of the weights): the ranks
# draw what the single process draws; torch dropout off. Batch sizes leave an uneven
# last batch.
HYBRID = {
    "dim": 8,
    "hidden": 16,
    "epochs": 3,
    "dropout": 0.0,
    "id_dropout": 0.2,
    "edge_dropout": 0.2,
    "holdout": 0.1,
    "refit": True,
    "patience": 5,
    "ema": 0.5,
    "seed": 1,
    "threads": 1,
}
RANKER = HYBRID | {"batch_size": 33, "negatives": 16}  # in-batch + sampled negatives
RATING = HYBRID | {"batch_size": 29, "l2": 0.01}  # 320 = 11 * 29 + 1: rank 1 idles once
#: The ranker's softmax is unchanged by a shift common to every candidate's logit: the
#: item tower's output bias ``b`` adds ``<u, b>`` to all of a row's logits, so its
#: gradient is zero up to float rounding, which Adam scales to steps of size ~lr. It
#: moves freely in both runs and is left out of the parameter comparison; the scores
#: (which it does not change) are compared.
GAUGE = {"item.mlp.2.bias"}


def _compare(single: Any, ddp: Any, fresh: Any, skip: set[str]) -> None:
    for x, y, z in zip(single.nets_, ddp.nets_, fresh.nets_, strict=True):
        a, b, c = x.state_dict(), y.state_dict(), z.state_dict()
        assert a.keys() == b.keys()
        names = [n for n in a if n not in skip]
        for name in names:
            torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5)
        # the comparison can fail: another seed moved the weights well beyond the tolerance
        assert max(float((a[n] - c[n]).abs().max()) for n in names) > 1e-2
    # the same epochs, losses and validation metrics
    assert [(r.epoch, r.refit) for r in ddp.history_] == [
        (r.epoch, r.refit) for r in single.history_
    ]
    np.testing.assert_allclose(
        [r.loss for r in ddp.history_], [r.loss for r in single.history_], rtol=1e-5
    )
    np.testing.assert_allclose(
        [r.val for r in ddp.history_], [r.val for r in single.history_], rtol=1e-5
    )


def test_hybrid_ranker_two_processes_match_single_process(small_shop: SimulatedShop) -> None:
    from shopcast.models._base import Context
    from shopcast.models.hybrid import HybridRanker

    data = shop_data(small_shop)
    single = HybridRanker(**RANKER).fit(data)  # type: ignore[arg-type]
    ddp = fit_distributed(HybridRanker(**RANKER), data, world=2)  # type: ignore[arg-type]
    fresh = HybridRanker(**{**RANKER, "seed": 2}).fit(data)  # type: ignore[arg-type]
    _compare(single, ddp, fresh, GAUGE)
    items = np.arange(len(data.items))
    for user in (data.users.id(3)[2:], None):
        ctx = Context(
            now=float(data.ts.max()),
            user_id=user,
            recent_items=np.array([1, 2, 3]),
            recent_types=np.zeros(3, np.int64),
        )
        np.testing.assert_allclose(ddp.score(ctx, items), single.score(ctx, items), rtol=1e-4)
        assert not np.allclose(fresh.score(ctx, items), single.score(ctx, items), rtol=1e-2)


def test_hybrid_rating_two_processes_match_single_process() -> None:
    from shopcast.domain import EventType
    from shopcast.models._base import EVENT_CODES
    from shopcast.models.hybrid import HybridRating

    rng = np.random.default_rng(0)  # SYNTHETIC ratings: 40 users rate 8 of 20 items
    users, items = Vocabulary(), Vocabulary(str(i) for i in range(20))
    user = np.repeat(np.arange(40), 8)
    item = np.concatenate([rng.choice(20, 8, replace=False) for _ in range(40)])
    value = np.clip(((user % 2 == 0) == (item < 10)) * 3.0 + 1.5 + rng.normal(0, 0.5, 320), 1, 5)
    users.indices([f"u:p{u}" for u in range(40)], add=True)
    data = Interactions(
        users=users,
        items=items,
        user=user.astype(np.int64),
        item=item.astype(np.int64),
        type=np.full(320, EVENT_CODES[EventType.RATE], dtype=np.int64),
        ts=1.7e9 + np.arange(320, dtype=np.float64),
        value=value.round(),
    )
    single = HybridRating(**RATING).fit(data)  # type: ignore[arg-type]
    ddp = fit_distributed(HybridRating(**RATING), data, world=2)  # type: ignore[arg-type]
    fresh = HybridRating(**{**RATING, "seed": 2}).fit(data)  # type: ignore[arg-type]
    _compare(single, ddp, fresh, set())
    np.testing.assert_allclose(ddp.predict(user, item), single.predict(user, item), atol=1e-4)


def test_models_that_cannot_train_data_parallel_are_refused() -> None:
    from shopcast.errors import ConfigError
    from shopcast.models.hybrid import HybridRanker
    from shopcast.models.popularity import Popularity
    from shopcast.privacy.dp import DPConfig

    data = None  # refused before the data is looked at
    with pytest.raises(ConfigError, match="data-parallel"):
        fit_distributed(Popularity(), data, world=2)  # type: ignore[arg-type,type-var]
    with pytest.raises(ConfigError, match="DP-SGD"):
        fit_distributed(HybridRanker(dp=DPConfig()), data, world=2)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=">= 1"):
        fit_distributed(HybridRanker(), data, world=0)  # type: ignore[arg-type]


def test_bundle_trains_a_dp_sgd_embedding_in_one_process() -> None:
    from shopcast.models.hybrid import HybridRanker
    from shopcast.privacy.dp import DPConfig
    from shopcast.training.distributed import supports

    assert supports(HybridRanker()) and supports(SASRec())
    assert not supports(HybridRanker(dp=DPConfig()))  # train_bundle fits it in-process


TORCHRUN_SCRIPT = """
import sys
from pathlib import Path

import numpy as np
import torch.distributed as dist

from shopcast.models._base import Interactions, Vocabulary
from shopcast.models.hybrid import HybridRanker
from shopcast.training.distributed import fit_rank

arrays = np.load(sys.argv[1])
items = Vocabulary(str(i) for i in range(int(arrays["n_items"])))
users = Vocabulary()
users.indices([f"u:{u}" for u in range(int(arrays["n_users"]))], add=True)
data = Interactions(users=users, items=items, user=arrays["user"], item=arrays["item"],
                    type=arrays["type"], ts=arrays["ts"], value=arrays["value"])
dist.init_process_group("gloo")  # env:// from torchrun
model = fit_rank(HybridRanker(**{PARAMS}), data)
if dist.get_rank() == 0:
    model.save(Path(sys.argv[2]))
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_torchrun_ranks_match_single_process(tmp_path: Any, small_shop: SimulatedShop) -> None:
    """``fit_rank`` under ``torchrun --nproc-per-node 2`` (env:// rendezvous): the model
    rank 0 saves equals single-process training."""
    import subprocess
    import sys

    from shopcast.models.hybrid import HybridRanker
    from shopcast.training.distributed import _free_port

    data = shop_data(small_shop)
    np.savez(
        tmp_path / "data.npz",
        user=data.user,
        item=data.item,
        type=data.type,
        ts=data.ts,
        value=data.value,
        n_users=len(data.users),
        n_items=len(data.items),
    )
    script = tmp_path / "train.py"
    script.write_text(TORCHRUN_SCRIPT.replace("{PARAMS}", repr(RANKER)))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            str(_free_port()),
            str(script),
            str(tmp_path / "data.npz"),
            str(tmp_path / "model"),
        ],
        capture_output=True,
        text=True,
        timeout=280,
        env={**__import__("os").environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    items = Vocabulary(str(i) for i in range(len(data.items)))
    ddp = HybridRanker.load(tmp_path / "model", items)
    single = HybridRanker(**RANKER).fit(data)  # type: ignore[arg-type]
    fresh = HybridRanker(**{**RANKER, "seed": 2}).fit(data)  # type: ignore[arg-type]
    _compare(single, ddp, fresh, GAUGE)
