"""The PyTorch network of ``SASRec`` (imported only when torch is needed).

Tokens are item indices + 1; token 0 is padding. A batch of sequences is laid out
either left-aligned (``positions="start"``: position k is the k-th item of the window)
or right-aligned (``positions="end"``: the newest item always has position
``max_len - 1``). Attention is causal and never looks at padding, so a batch may be
trimmed to its longest sequence without changing any real position's output.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shopcast.models._base import IntArray

INIT_STD = 0.02


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout from a uniform draw (faster than ``bernoulli_`` on CPU)."""
    if p == 0.0:
        return x
    return x * ((torch.rand_like(x) >= p).to(x.dtype) / (1.0 - p))


#: Rows of logits handled at once by ``FullSoftmaxCE``: a ``(CE_CHUNK, n_items)`` block
#: stays in the CPU's cache (12k items: 6 MB) instead of going out to memory.
CE_CHUNK = 128


class FullSoftmaxCE(torch.autograd.Function):
    """Mean cross-entropy of ``h @ table.T`` against ``target`` over every item.

    The logits are made ``CE_CHUNK`` rows at a time in a reused workspace and never
    kept: the forward pass keeps only each row's log-sum-exp, and the backward pass
    computes each block again and turns it into softmax gradients in place. One more
    matrix product, but every elementwise pass stays in cache (on CPU those passes over
    a ``(n, n_items)`` matrix in memory cost more than the products).
    """

    @staticmethod
    def forward(
        ctx: Any,
        h: torch.Tensor,
        table: torch.Tensor,
        target: torch.Tensor,
        smoothing: float,
        workspace: Workspace,
        masked: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        n = h.shape[0]
        lse = torch.empty(n, dtype=h.dtype)
        mean = torch.empty(n, dtype=h.dtype) if smoothing else None
        for r0, block in _blocks(h, table, workspace, masked):
            lse[r0 : r0 + block.shape[0]] = torch.logsumexp(block, dim=1)
            if mean is not None:
                mean[r0 : r0 + block.shape[0]] = block.mean(dim=1)
        picked = (h * table[target]).sum(dim=1)
        loss = lse - (1.0 - smoothing) * picked
        if mean is not None:
            loss = loss - smoothing * mean
        ctx.save_for_backward(h, table, target, lse)
        ctx.workspace = workspace
        ctx.masked = masked
        ctx.smoothing = smoothing
        return loss.mean()

    @staticmethod
    def backward(
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, None, None, None, None]:
        h, table, target, lse = ctx.saved_tensors
        n, n_items = h.shape[0], table.shape[0]
        grad_h = torch.empty_like(h)
        grad_table = torch.zeros_like(table)
        scale = grad / n
        for r0, p in _blocks(h, table, ctx.workspace, ctx.masked):
            r1 = r0 + p.shape[0]
            p.sub_(lse[r0:r1, None]).exp_()
            p[torch.arange(r1 - r0), target[r0:r1]] -= 1.0 - ctx.smoothing
            if ctx.smoothing:
                p.sub_(ctx.smoothing / n_items)
            p.mul_(scale)
            torch.mm(p, table, out=grad_h[r0:r1])
            grad_table.addmm_(p.t(), h[r0:r1])
        return grad_h, grad_table, None, None, None, None


def _blocks(
    h: torch.Tensor,
    table: torch.Tensor,
    workspace: Workspace,
    masked: tuple[torch.Tensor, torch.Tensor] | None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(first row, logits of rows first … first + CE_CHUNK)`` blocks of ``h @ table.T``
    with the ``masked`` (row, item) pairs at -inf; each block reuses ``workspace``."""
    n, n_items = h.shape[0], table.shape[0]
    bounds = None
    if masked is not None:
        order = torch.argsort(masked[0], stable=True)
        rows, cols = masked[0][order], masked[1][order]
        cuts = torch.arange(0, n + CE_CHUNK, CE_CHUNK).clamp_(max=n)
        bounds = torch.searchsorted(rows, cuts).tolist()
    for k, r0 in enumerate(range(0, n, CE_CHUNK)):
        r1 = min(n, r0 + CE_CHUNK)
        block = workspace.take(r1 - r0, n_items)
        torch.mm(h[r0:r1], table.t(), out=block)
        if bounds is not None:
            lo, hi = bounds[k], bounds[k + 1]
            block[rows[lo:hi] - r0, cols[lo:hi]] = -math.inf
        yield r0, block


def full_softmax_ce(
    h: torch.Tensor,
    table: torch.Tensor,
    target: torch.Tensor,
    smoothing: float,
    ws: Workspace,
    masked: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``FullSoftmaxCE`` (``target``: row indices of ``table``); ``masked`` (row, item)
    pairs are left out of the softmax (they must not include a row's target)."""
    out: torch.Tensor = FullSoftmaxCE.apply(h, table, target, smoothing, ws, masked)  # type: ignore[no-untyped-call]
    return out


def seen_pairs(rows: Sequence[IntArray], targets: Sequence[IntArray]) -> tuple[IntArray, IntArray]:
    """``(flat target index, item index)`` of every item a row has shown up to each of its
    positions (itself included), the position's own target left out. Targets are
    numbered row by row, position by position (the order of ``h[tokens > 0]``)."""
    flat: list[IntArray] = []
    items: list[IntArray] = []
    offset = 0
    for r, t in zip(rows, targets, strict=True):
        n = r.shape[0]
        pos, src = np.tril_indices(n)
        keep = r[src] != t[pos]
        flat.append(pos[keep] + offset)
        items.append(r[src][keep] - 1)
        offset += n
    if not flat:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(flat).astype(np.int64), np.concatenate(items).astype(np.int64)


class Workspace:
    """A float32 buffer that grows on demand and is handed out as ``(rows, cols)`` views."""

    def __init__(self) -> None:
        self.buffer = torch.empty(0)

    def take(self, rows: int, cols: int) -> torch.Tensor:
        if self.buffer.numel() < rows * cols:
            self.buffer = torch.empty(rows * cols)
        return self.buffer[: rows * cols].view(rows, cols)


class Block(nn.Module):
    """Pre-norm transformer block: causal multi-head attention, then a GELU MLP."""

    def __init__(self, hidden: int, heads: int, dropout: float, attn_dropout: float, ffn: int):
        super().__init__()
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.ln1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden)
        self.ff1 = nn.Linear(hidden, ffn * hidden)
        self.ff2 = nn.Linear(ffn * hidden, hidden)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0
        )
        p = self.dropout if self.training else 0.0
        x = x + dropout(self.proj(a.transpose(1, 2).reshape(b, n, d)), p)
        return x + dropout(self.ff2(F.gelu(self.ff1(self.ln2(x)))), p)


class Net(nn.Module):
    """Item (+ attribute) and position embeddings, transformer blocks, final norm.

    The output layer is tied to the item table: logits are ``h @ table[1:].T``.
    """

    def __init__(
        self,
        *,
        n_items: int,
        n_attributes: int,
        attr_index: IntArray,
        attr_offsets: IntArray,
        hidden: int,
        max_len: int,
        blocks: int,
        heads: int,
        dropout: float,
        attn_dropout: float,
        ffn: int,
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.items = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        self.attrs = nn.Embedding(n_attributes, hidden) if n_attributes else None
        self.attr_index = torch.as_tensor(attr_index, dtype=torch.int64)
        self.attr_offsets = torch.as_tensor(attr_offsets, dtype=torch.int64)
        self.pos = nn.Embedding(max_len, hidden)
        self.emb_ln = nn.LayerNorm(hidden)
        self.dropout = dropout
        self.blocks = nn.ModuleList(
            Block(hidden, heads, dropout, attn_dropout, ffn) for _ in range(blocks)
        )
        self.ln = nn.LayerNorm(hidden)

    def reset(self) -> None:
        """BERT-style init: normal(0, 0.02) weights, zero biases, padding row 0."""
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=INIT_STD)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def item_table(self) -> torch.Tensor:
        """``(n_items + 1, hidden)``: item embedding plus its mean attribute embedding."""
        table = self.items.weight
        if self.attrs is not None:
            pooled = F.embedding_bag(
                self.attr_index, self.attrs.weight, self.attr_offsets, mode="mean"
            )
            table = table + F.pad(pooled, (0, 0, 1, 0))
        return table

    def encode(
        self, tokens: torch.Tensor, positions: torch.Tensor, table: torch.Tensor
    ) -> torch.Tensor:
        """Hidden states ``(batch, width, hidden)`` of token rows ``(batch, width)``."""
        x = self.emb_ln(table[tokens] + self.pos(positions))
        x = dropout(x, self.dropout if self.training else 0.0)
        width = tokens.shape[1]
        eye = torch.eye(width, dtype=torch.bool)
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        mask = (causal & ((tokens > 0)[:, None, :] | eye)).unsqueeze(1)
        for block in self.blocks:
            x = block(x, mask)
        out: torch.Tensor = self.ln(x)
        return out


def layout(rows: Sequence[IntArray], max_len: int, end: bool) -> tuple[IntArray, IntArray]:
    """``(tokens, positions)`` of ``rows`` (token arrays, at most ``max_len`` long),
    trimmed to the longest row; right-aligned when ``end``."""
    width = max((r.shape[0] for r in rows), default=0)
    tokens = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        n = r.shape[0]
        if end:
            tokens[i, width - n :] = r
        else:
            tokens[i, :n] = r
    offset = max_len - width if end else 0
    positions = np.broadcast_to(np.arange(offset, offset + width), tokens.shape).copy()
    return tokens, positions


def last_hidden(net: Net, rows: Sequence[IntArray], table: torch.Tensor, end: bool) -> torch.Tensor:
    """``(len(rows), hidden)``: the state after each row's newest token (rows non-empty)."""
    tokens, positions = layout(rows, net.max_len, end)
    h = net.encode(torch.from_numpy(tokens), torch.from_numpy(positions), table)
    if end:
        return h[:, -1]
    last = torch.as_tensor([r.shape[0] - 1 for r in rows], dtype=torch.int64)
    return h[torch.arange(len(rows)), last]


@contextlib.contextmanager
def seeded(seed: int, threads: int) -> Iterator[None]:
    """Seeded, deterministic torch on ``threads`` threads; global state restored after."""
    threads_before = torch.get_num_threads()
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
        torch.set_num_threads(threads_before)


def sampled_softmax_loss(
    h: torch.Tensor, target: torch.Tensor, table: torch.Tensor, negatives: int
) -> torch.Tensor:
    """Cross-entropy of the target against ``negatives`` uniformly drawn items (shared
    by the batch, log-Q corrected; accidental hits masked). ``target``: tokens."""
    n_items = table.shape[0] - 1
    neg = torch.randint(1, n_items + 1, (negatives,))
    pos_logit = (h * table[target]).sum(-1, keepdim=True)
    neg_logits = h @ table[neg].T + math.log(n_items / negatives)
    neg_logits = neg_logits.masked_fill(target[:, None] == neg[None, :], float("-inf"))
    logits = torch.cat([pos_logit, neg_logits], dim=1)
    zeros = torch.zeros(h.shape[0], dtype=torch.int64)
    return F.cross_entropy(logits, zeros)


def state_vector(net: Net) -> np.ndarray:
    """Every parameter, in ``state_dict`` order, as one float32 vector."""
    parts = [t.detach().reshape(-1).to(torch.float32).numpy() for t in net.state_dict().values()]
    return np.concatenate(parts) if parts else np.empty(0, np.float32)


def load_state_vector(net: Net, vector: np.ndarray) -> None:
    """Fill ``net`` from ``state_vector``; ``ValueError`` when the size does not match."""
    state = net.state_dict()
    total = sum(t.numel() for t in state.values())
    if vector.shape != (total,):
        raise ValueError(f"expected {total} weights, found {vector.shape}")
    out: dict[str, torch.Tensor] = {}
    start = 0
    for name, t in state.items():
        out[name] = torch.from_numpy(vector[start : start + t.numel()].copy()).view_as(t)
        start += t.numel()
    net.load_state_dict(out)
