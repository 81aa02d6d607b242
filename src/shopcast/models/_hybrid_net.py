"""PyTorch parts of the hybrid model (imported only when a hybrid model is used)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from shopcast.models._base import FloatArray, IntArray
from shopcast.models._hybrid_side import FeatureBag


@contextlib.contextmanager
def seeded(seed: int, threads: int) -> Iterator[None]:
    """Seeded torch on ``threads`` threads; the global RNG and thread count restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def inference() -> Iterator[None]:
    """No gradients, on one thread: tower outputs do not depend on the thread count
    (a fitted and a loaded model give the same scores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(before)


class Tower(nn.Module):
    """Sum of weighted feature-column embeddings, then an MLP to ``out`` values."""

    def __init__(
        self, n_cols: int, hidden: int, out: int, layers: int, dropout: float, init_std: float
    ) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(max(n_cols, 1), hidden, mode="sum")
        nn.init.normal_(self.bag.weight, 0.0, init_std)
        blocks: list[nn.Module] = []
        for _ in range(layers - 1):
            blocks += [nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden)]
        if layers > 0:
            blocks.append(nn.GELU())
        blocks += [nn.Dropout(dropout), nn.Linear(hidden, out)]  # layers 0: linear towers
        self.mlp = nn.Sequential(*blocks)

    def embed(self, bag: FeatureBag) -> torch.Tensor:
        """Weighted sum of the column embeddings of each row of ``bag``."""
        x: torch.Tensor = self.bag(
            torch.from_numpy(bag.index),
            torch.from_numpy(bag.offsets[:-1]),
            per_sample_weights=torch.from_numpy(bag.weight.astype(np.float32)),
        )
        return x

    def columns(self, cols: IntArray) -> torch.Tensor:
        """Embeddings of single columns."""
        return self.bag.weight[torch.from_numpy(cols)]

    def forward(self, bag: FeatureBag) -> torch.Tensor:
        out: torch.Tensor = self.mlp(self.embed(bag))
        return out


class HybridNet(nn.Module):
    """A user tower and an item tower, each giving ``dim`` factors and one bias, plus an
    id bias per side (the last row of each is the unknown id)."""

    def __init__(
        self,
        user_cols: int,
        item_cols: int,
        n_user_ids: int,
        n_item_ids: int,
        *,
        hidden: int,
        dim: int,
        layers: int,
        dropout: float,
        init_std: float,
    ) -> None:
        super().__init__()
        self.user = Tower(user_cols, hidden, dim + 1, layers, dropout, init_std)
        self.item = Tower(item_cols, hidden, dim + 1, layers, dropout, init_std)
        self.user_bias = nn.Embedding(n_user_ids + 1, 1)
        self.item_bias = nn.Embedding(n_item_ids + 1, 1)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)

    def side(
        self, tower: Tower, bias: nn.Embedding, bag: FeatureBag, ids: IntArray
    ) -> torch.Tensor:
        """``[factors…, bias]`` rows: the tower's bias plus the id bias."""
        z = tower(bag)
        b = bias(torch.from_numpy(ids))[:, 0]
        return torch.cat([z[:, :-1], (z[:, -1] + b)[:, None]], dim=1)

    def rating_side(
        self,
        users: bool,
        static: FeatureBag,
        behaviour: FeatureBag,
        count: FloatArray,
        inverse: IntArray,
        ids: IntArray,
        out_col: IntArray,
        out_weight: FloatArray,
    ) -> torch.Tensor:
        """``[factors…, bias]`` of pairs whose rows are ``inverse`` into ``static`` /
        ``behaviour`` (unnormalized sums of distinct rows, ``count`` their total weight):
        the pair's own entry ``out_col`` (weight ``out_weight``, 0 for none) is taken out
        of the behaviour, which is then divided by the square root of its weight."""
        tower = self.user if users else self.item
        bias = self.user_bias if users else self.item_bias
        inv = torch.from_numpy(inverse)
        w = torch.from_numpy(out_weight.astype(np.float32))[:, None]
        beh = tower.embed(behaviour)[inv] - w * tower.columns(out_col)
        norm = np.sqrt(np.maximum(count[inverse] - out_weight, 1.0)).astype(np.float32)
        x = tower.embed(static)[inv] + tower.columns(ids) + beh / torch.from_numpy(norm)[:, None]
        z = tower.mlp(x)
        b = bias(torch.from_numpy(ids))[:, 0]
        return torch.cat([z[:, :-1], (z[:, -1] + b)[:, None]], dim=1)

    def users(self, bag: FeatureBag, ids: IntArray) -> torch.Tensor:
        return self.side(self.user, self.user_bias, bag, ids)

    def items(self, bag: FeatureBag, ids: IntArray) -> torch.Tensor:
        return self.side(self.item, self.item_bias, bag, ids)


def pair_scores(zu: torch.Tensor, zi: torch.Tensor) -> torch.Tensor:
    """``b_u + b_i + <u, v>`` of matching rows."""
    return (zu[:, :-1] * zi[:, :-1]).sum(1) + zu[:, -1] + zi[:, -1]


def all_logits(zu: torch.Tensor, zi: torch.Tensor) -> torch.Tensor:
    """``<u, v> + b_i`` for every user row against every item row (users' bias left out)."""
    return zu[:, :-1] @ zi[:, :-1].T + zi[:, -1][None, :]


def softmax_loss(
    zu: torch.Tensor,
    zc: torch.Tensor,
    target: IntArray,
    mask_rows: IntArray,
    mask_cols: IntArray,
    log_q: FloatArray | None,
    weight: FloatArray,
) -> torch.Tensor:
    """Weighted cross-entropy of each row's ``target`` column among candidates ``zc``.

    ``(mask_rows, mask_cols)`` are excluded (the user's history, accidental hits);
    ``log_q`` (log sampling probability of each candidate) is subtracted from the
    logits: the sampled-softmax correction (None for the full softmax).
    """
    logits = all_logits(zu, zc)
    if log_q is not None:
        logits = logits - torch.from_numpy(log_q.astype(np.float32))[None, :]
    if mask_rows.size:
        logits = logits.index_put(
            (torch.from_numpy(mask_rows), torch.from_numpy(mask_cols)),
            torch.tensor(-math.inf),
        )
    loss = nn.functional.cross_entropy(logits, torch.from_numpy(target), reduction="none")
    w = torch.from_numpy(weight.astype(np.float32))
    return (loss * w).sum() / w.sum()


def state_vector(net: nn.Module) -> FloatArray:
    """Every parameter and buffer, flattened in ``state_dict`` order (float32)."""
    parts = [t.detach().reshape(-1).to(torch.float32) for t in net.state_dict().values()]
    return torch.cat(parts).numpy() if parts else np.empty(0, np.float32)


def load_state_vector(net: nn.Module, vector: FloatArray) -> None:
    """Fill ``net`` from ``state_vector``'s output; ``ValueError`` on a size mismatch."""
    state = net.state_dict()
    total = sum(t.numel() for t in state.values())
    if vector.shape != (total,):
        raise ValueError(f"weights have {vector.shape[0]} values; the network needs {total}")
    out: dict[str, Any] = {}
    pos = 0
    for name, t in state.items():
        n = t.numel()
        out[name] = torch.from_numpy(np.array(vector[pos : pos + n])).reshape(t.shape).to(t.dtype)
        pos += n
    net.load_state_dict(out)
