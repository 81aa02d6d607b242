"""A DP-SGD-compatible variant of SASRec's network (imported only with torch and opacus).

Opacus computes per-sample gradients with hooks on module calls. ``Net`` reads its item
table directly (``table[tokens]`` and ``h @ table.T``, the output layer tied to the
input embedding), which no hook sees. ``DPNet`` routes both uses through one module,
``TiedItems``, with a registered per-sample gradient rule for each use (an integer input
is an embedding lookup, a float input the tied output layer); Opacus adds the two
contributions per sample. Parameter names are those of ``Net`` (``items.weight`` …), so
the trained weights load into a plain ``Net`` for scoring. Item attributes are not
supported here.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from opacus.grad_sample.utils import register_grad_sampler
from torch import nn

from shopcast.models._sasrec_net import INIT_STD, Net, dropout


class TiedItems(nn.Module):
    """Item table ``(n_items + 1, hidden)``, row 0 = padding: ``forward(tokens)`` looks
    items up, ``forward(h)`` gives logits ``h @ weight[1:].T`` over real items."""

    def __init__(self, rows: int, hidden: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(rows, hidden))
        self.reset()

    def reset(self) -> None:
        """Normal(0, ``INIT_STD``) as ``Net.reset`` does for embeddings; row 0 zero."""
        with torch.no_grad():
            nn.init.normal_(self.weight, std=INIT_STD)
            self.weight[0].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.int64, torch.int32):
            return F.embedding(x, self.weight, padding_idx=0)
        return x @ self.weight[1:].T


@register_grad_sampler(TiedItems)  # type: ignore[untyped-decorator]
def _tied_grad_sample(
    layer: TiedItems, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample gradient of ``layer.weight`` for one call (lookup or output layer)."""
    x = activations[0]
    b = x.shape[0]
    hidden = layer.weight.shape[1]
    if x.dtype in (torch.int64, torch.int32):
        grad = torch.zeros(b, *layer.weight.shape, dtype=backprops.dtype)
        index = x.reshape(b, -1, 1).expand(-1, -1, hidden)
        grad.scatter_add_(1, index, backprops.reshape(b, -1, hidden))
        grad[:, 0] = 0.0  # padding row never learns
        return {layer.weight: grad}
    out = torch.einsum("n...k,n...h->nkh", backprops, x)
    return {layer.weight: F.pad(out, (0, 0, 1, 0))}


class DPNet(Net):
    """``Net`` whose item table is a ``TiedItems`` module; ``forward`` gives logits
    ``(batch, width, n_items)`` at every position."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if self.attrs is not None:
            raise ValueError("DPNet does not support item attributes")
        self.items = TiedItems(self.items.num_embeddings, self.items.embedding_dim)  # type: ignore[assignment]

    def reset(self) -> None:
        super().reset()
        cast(TiedItems, self.items).reset()

    def item_table(self) -> torch.Tensor:
        return self.items.weight

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.emb_ln(self.items(tokens) + self.pos(positions))
        x = dropout(x, self.dropout if self.training else 0.0)
        width = tokens.shape[1]
        eye = torch.eye(width, dtype=torch.bool)
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        mask = (causal & ((tokens > 0)[:, None, :] | eye)).unsqueeze(1)
        for block in self.blocks:
            x = block(x, mask)
        logits: torch.Tensor = self.items(self.ln(x))
        return logits


def per_user_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over users of each user's mean next-item cross-entropy (``targets``: tokens,
    0 = padding). Each user's term is one "sample" for per-sample clipping."""
    y = targets - 1  # -1 = padding, ignored
    ce = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=-1, reduction="none")
    per_user = ce.sum(dim=1) / (y >= 0).sum(dim=1).clamp(min=1)
    return per_user.mean()
