"""A DP-SGD-compatible variant of the hybrid model's network (imported only with torch).

Opacus computes per-sample gradients from module hooks, which assume that the first
dimension of every module input is the batch of private examples. ``HybridNet`` feeds
its towers flat ``EmbeddingBag`` inputs (one bag per user row or candidate item, not per
example) and reads id columns from the bag table directly, which no hook sees.
``DPHybridNet`` takes padded dense inputs whose leading dimension is the example:

- user side ``(B, S, L)``: ``S`` slots per example (training pairs or baskets of that
  one user), each a bag of ``L`` (column, weight) entries (padding: weight 0);
- item side ``(B, S, C, L)``: ``C`` candidates per slot (the positive first, then the
  example's own sampled negatives) or ``(B, S, L)`` for the rating head.

Each tower's table is an ``nn.Embedding`` (weighted sum over the last axis), so every
parameter is used through ``nn.Embedding`` and ``nn.Linear`` calls whose per-sample
gradient rules Opacus has. Parameter names and shapes are those of ``HybridNet``
(``user.bag.weight``, ``item.mlp.1.weight``…): the trained weights load into the plain
network for scoring.
"""

from __future__ import annotations

import torch
from torch import nn

from shopcast.models._hybrid_net import HybridNet


class DPTower(nn.Module):
    """``Tower`` over padded bags: ``forward(index, weight)`` sums the weighted column
    embeddings over the last axis and applies the MLP."""

    def __init__(self, rows: int, hidden: int, mlp: nn.Sequential) -> None:
        super().__init__()
        self.bag = nn.Embedding(rows, hidden)
        self.mlp = mlp

    def forward(self, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        x = (self.bag(index) * weight.unsqueeze(-1)).sum(-2)
        out: torch.Tensor = self.mlp(x)
        return out


class DPHybridNet(nn.Module):
    """Towers and id biases of a ``HybridNet`` (copied at construction), over padded
    per-example inputs."""

    def __init__(self, plain: HybridNet) -> None:
        super().__init__()
        towers = []
        for tower in (plain.user, plain.item):
            rows, hidden = tower.bag.weight.shape
            mlp = nn.Sequential(*[_copy(m) for m in tower.mlp])
            towers.append(DPTower(rows, hidden, mlp))
        self.user, self.item = towers
        self.user_bias = nn.Embedding(*plain.user_bias.weight.shape)
        self.item_bias = nn.Embedding(*plain.item_bias.weight.shape)
        self.load_state_dict(plain.state_dict())

    def side(
        self,
        users: bool,
        index: torch.Tensor,
        weight: torch.Tensor,
        ids: torch.Tensor,
    ) -> torch.Tensor:
        """``[factors…, bias]`` over the leading axes: the tower's bias plus the id bias."""
        tower = self.user if users else self.item
        bias = self.user_bias if users else self.item_bias
        z = tower(index, weight)
        b = bias(ids)[..., 0]
        return torch.cat([z[..., :-1], (z[..., -1] + b).unsqueeze(-1)], dim=-1)

    def forward(
        self,
        user_index: torch.Tensor,
        user_weight: torch.Tensor,
        user_ids: torch.Tensor,
        item_index: torch.Tensor,
        item_weight: torch.Tensor,
        item_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(zu, zi)``: user and item side outputs, leading axes kept."""
        zu = self.side(True, user_index, user_weight, user_ids)
        zi = self.side(False, item_index, item_weight, item_ids)
        return zu, zi


def _copy(module: nn.Module) -> nn.Module:
    """A fresh module of the same kind (weights are loaded afterwards)."""
    if isinstance(module, nn.Linear):
        return nn.Linear(module.in_features, module.out_features)
    if isinstance(module, nn.Dropout):
        return nn.Dropout(module.p)
    if isinstance(module, nn.GELU):
        return nn.GELU()
    raise TypeError(f"unexpected tower layer {type(module).__name__}")


def ranking_scores_loss(
    zu: torch.Tensor, zi: torch.Tensor, valid: torch.Tensor, slot_weight: torch.Tensor
) -> torch.Tensor:
    """Per-example sampled-softmax loss ``(B,)`` from ``forward``'s ``(zu, zi)``:
    ``zu`` ``(B, S, D+1)``, ``zi`` ``(B, S, C, D+1)`` with candidate 0 the positive;
    ``valid`` ``(B, S, C)`` masks excluded candidates (the user's history, accidental
    hits); ``slot_weight`` ``(B, S)`` sums to 1 per example. Negatives are uniform, so
    the log-Q correction is a constant and left out. Example ``b``'s loss reads only
    row ``b`` of every input."""
    logits = (zu[..., None, :-1] * zi[..., :-1]).sum(-1) + zi[..., -1]
    logits = logits.masked_fill(~valid, float("-inf"))
    nll = -torch.log_softmax(logits, dim=-1)[..., 0]
    return (nll * slot_weight).sum(-1)


def rating_scores_loss(
    zu: torch.Tensor,
    zi: torch.Tensor,
    target: torch.Tensor,
    slot_weight: torch.Tensor,
    mu: float,
    l2: float,
) -> torch.Tensor:
    """Per-example weighted squared error ``(B,)`` of ``mu + b_u + b_i + <u, v>`` over
    the example's ``(B, S)`` rating slots (plus ``l2`` times the outputs' squared norm)."""
    pred = mu + (zu[..., :-1] * zi[..., :-1]).sum(-1) + zu[..., -1] + zi[..., -1]
    err = (pred - target) ** 2
    if l2 > 0:
        err = err + l2 * ((zu**2).sum(-1) + (zi**2).sum(-1))
    return (err * slot_weight).sum(-1)
