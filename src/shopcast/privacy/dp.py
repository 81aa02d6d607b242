"""Differentially private training of SASRec with DP-SGD (Opacus).

Unit of privacy: one user. SASRec trains on one row per subject (user or anonymous
session): the subject's last ``max_len + 1`` items, predicting each next item. Every
row is one example for Opacus, so per-sample gradient clipping bounds the influence of
a whole user's sequence (all of their positions together), and Poisson sampling of rows
with Gaussian noise gives (ε, δ)-DP with respect to adding or removing one user's
training sequence (user-level DP). The default δ is ``1 / n_users``.

How: ``PrivacyEngine.make_private_with_epsilon`` picks the noise multiplier for the
target ε over ``epochs`` at ``sample_rate`` (default ``batch_size / n_users``); rows are
Poisson-sampled, each user's gradient clipped to ``max_grad_norm`` (flat clipping), and
Gaussian noise added before the Adam step. The accountant (``rdp`` or ``prv``) reports the
ε actually spent, stored in the model's ``dp_report_`` and saved in its meta.

What is and is not covered: the network weights are DP. No validation-based early
stopping (it would look at the same private data): training runs exactly ``epochs``.
The prior used for empty contexts is uniform (the item frequencies would be a non-private
release; ``shopcast.privacy.noise`` can release noisy counts at a separate cost). Item
attributes (catalog data, not user data) are not supported by the DP network variant.
The item vocabulary is assumed public (the catalog). ``epsilon=inf`` runs the same
training without clipping or noise (the utility baseline).
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from shopcast.errors import ConfigError, MissingDependencyError, ModelError

if TYPE_CHECKING:
    from shopcast.models._base import Interactions
    from shopcast.models.sasrec import EpochReport, ItemAttributes, SASRec

_ACCOUNTANTS = ("rdp", "prv")


@dataclass(frozen=True, slots=True)
class DPConfig:
    """DP-SGD settings: target ``epsilon`` (``inf``: no DP), ``delta`` (``None``: 1 /
    users), per-user ``max_grad_norm``, ``epochs``, ``sample_rate`` (``None``: batch size
    / users), ``accountant``; ``noise_multiplier`` overrides the one derived from ε;
    ``per_user``: draws of a user's own data per step (hybrid model only, see
    ``dp_hybrid``; SASRec always uses the user's one sequence)."""

    epsilon: float = 8.0
    delta: float | None = None
    max_grad_norm: float = 1.0
    epochs: int = 10
    sample_rate: float | None = None
    accountant: str = "rdp"
    noise_multiplier: float | None = None
    per_user: int = 8

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ConfigError(f"dp epsilon must be > 0, got {self.epsilon}")
        if self.delta is not None and not 0 < self.delta < 1:
            raise ConfigError(f"dp delta must be in (0, 1), got {self.delta}")
        if not self.max_grad_norm > 0:
            raise ConfigError(f"dp max_grad_norm must be > 0, got {self.max_grad_norm}")
        if self.epochs < 1:
            raise ConfigError(f"dp epochs must be >= 1, got {self.epochs}")
        if self.sample_rate is not None and not 0 < self.sample_rate <= 1:
            raise ConfigError(f"dp sample_rate must be in (0, 1], got {self.sample_rate}")
        if self.accountant not in _ACCOUNTANTS:
            raise ConfigError(f"dp accountant must be one of {_ACCOUNTANTS}")
        if self.noise_multiplier is not None and self.noise_multiplier < 0:
            raise ConfigError("dp noise_multiplier must be >= 0")
        if self.per_user < 1:
            raise ConfigError(f"dp per_user must be >= 1, got {self.per_user}")

    @property
    def private(self) -> bool:
        return not math.isinf(self.epsilon)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["epsilon"] = None if not self.private else self.epsilon
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DPConfig:
        values = dict(data)
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"dp: unknown setting(s) {', '.join(unknown)}")
        if values.get("epsilon") is None:
            values["epsilon"] = math.inf
        return cls(**values)


@dataclass(frozen=True, slots=True)
class DPReport:
    """What a DP fit spent: ``epsilon`` per the accountant (``None`` without DP) at
    ``delta``, with the settings used; ``epsilon_by_epoch`` after each epoch."""

    unit: str
    n_users: int
    target_epsilon: float | None
    epsilon: float | None
    delta: float
    noise_multiplier: float
    max_grad_norm: float | None
    sample_rate: float
    epochs: int
    steps: int
    accountant: str
    epsilon_by_epoch: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DPReport:
        return cls(**dict(data))

    @classmethod
    def of_run(
        cls,
        unit: str,
        n_users: int,
        cfg: DPConfig,
        *,
        optimizer: Any,
        private: bool,
        sample_rate: float,
        delta: float,
        steps: int,
        epsilon_by_epoch: list[float],
    ) -> DPReport:
        """The report of a finished ``training_loop_parts`` loop."""
        return cls(
            unit=unit,
            n_users=n_users,
            target_epsilon=cfg.epsilon if cfg.private else None,
            epsilon=epsilon_by_epoch[-1] if epsilon_by_epoch else None,
            delta=delta,
            noise_multiplier=float(optimizer.noise_multiplier) if private else 0.0,
            max_grad_norm=cfg.max_grad_norm if cfg.private else None,
            sample_rate=sample_rate,
            epochs=cfg.epochs,
            steps=steps,
            accountant=cfg.accountant,
            epsilon_by_epoch=epsilon_by_epoch,
        )


def _require_opacus() -> None:
    import importlib.util

    for name in ("torch", "opacus"):
        if importlib.util.find_spec(name) is None:
            raise MissingDependencyError(name, "dp")


def make_private(
    net: Any, optimizer: Any, n_rows: int, batch_size: int, cfg: DPConfig, seed: int
) -> tuple[Any, Any, Any, Any, float]:
    """``(module, optimizer, loader, engine, sample_rate)``: Opacus-wrapped training over
    row indices ``0..n_rows-1`` (each row one user); the loader yields index batches.
    ``sample_rate`` is the Poisson rate actually used and accounted for: 1 / the number
    of batches of ``round(q · n_rows)`` rows (q: ``cfg.sample_rate`` or batch / rows)."""
    _require_opacus()
    import torch
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    q = cfg.sample_rate if cfg.sample_rate is not None else min(1.0, batch_size / n_rows)
    size = max(1, round(q * n_rows))
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(torch.arange(n_rows)), batch_size=size, generator=gen)
    delta = cfg.delta if cfg.delta is not None else 1.0 / n_rows
    engine = PrivacyEngine(accountant=cfg.accountant)
    if cfg.noise_multiplier is not None:
        module, opt, dl = engine.make_private(
            module=net,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=cfg.noise_multiplier,
            max_grad_norm=cfg.max_grad_norm,
            noise_generator=gen,
        )
    else:
        module, opt, dl = engine.make_private_with_epsilon(
            module=net,
            optimizer=optimizer,
            data_loader=loader,
            target_epsilon=cfg.epsilon,
            target_delta=delta,
            epochs=cfg.epochs,
            max_grad_norm=cfg.max_grad_norm,
            noise_generator=gen,
        )
    # Opacus samples (and accounts) at 1 / len(loader), which can differ a little from q.
    return module, opt, dl, engine, 1.0 / len(loader)


def training_loop_parts(
    net: Any, optimizer: Any, n_rows: int, batch_size: int, cfg: DPConfig, seed: int
) -> tuple[Any, Any, Any, Any, float, float]:
    """``(module, optimizer, loader, engine, sample_rate, delta)`` for a training loop over
    row indices ``0..n_rows-1``: ``make_private``'s when ``cfg.private``, else the plain
    net with a seeded shuffling loader (``engine`` None) — the ε = ∞ baseline runs the
    same loop. ``delta``: ``cfg.delta``, or 1 / rows."""
    if cfg.private:
        module, opt, loader, engine, q = make_private(net, optimizer, n_rows, batch_size, cfg, seed)
    else:
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        gen = torch.Generator().manual_seed(seed)
        loader = DataLoader(
            TensorDataset(torch.arange(n_rows)),
            batch_size=batch_size,
            shuffle=True,
            generator=gen,
        )
        module, opt, engine, q = net, optimizer, None, min(1.0, batch_size / n_rows)
    delta = cfg.delta if cfg.delta is not None else 1.0 / n_rows
    return module, opt, loader, engine, q, delta


def fit_private(
    model: SASRec,
    data: Interactions,
    *,
    attributes: ItemAttributes | None = None,
    progress: Callable[[EpochReport], None] | None = None,
) -> SASRec:
    """Fit ``model`` (whose ``dp`` is set) with DP-SGD; see the module docstring."""
    _require_opacus()
    import torch

    import shopcast.models.sasrec as sr
    from shopcast.models._common import weight_array
    from shopcast.privacy import _dp_net

    cfg = model.dp
    assert cfg is not None
    if attributes is not None or model.attributes is not None:
        raise ConfigError("DP training of SASRec does not support item attributes")
    tnet = sr._torch_net()
    t0 = time.perf_counter()
    n_items = max(len(data.items), int(data.item.max(initial=-1)) + 1)
    rows = model._training_rows(sr._sequences(data, weight_array(model.event_weights)))
    n = len(rows.inputs)
    if not n:
        raise ModelError("no subject has two or more items in a row to learn from")
    model.n_items_ = n_items
    model.prior_ = np.full(n_items, 1.0 / max(n_items, 1))
    model.attr_index_, model.attr_offsets_, model.n_attributes_ = sr._attribute_table(
        None, data.items, n_items
    )
    model.history_ = []
    model.best_val_ = math.nan
    end = model.positions == "end"
    threads = model.threads if n >= 256 else 1
    with tnet.seeded(model.seed, threads):
        net = _dp_net.DPNet(**_net_kwargs(model))
        net.reset()
        opt: Any = torch.optim.Adam(net.parameters(), lr=model.lr, weight_decay=model.weight_decay)
        module, opt, loader, engine, q, delta = training_loop_parts(
            net, opt, n, model.batch_size, cfg, model.seed
        )
        by_epoch: list[float] = []
        steps = 0
        for epoch in range(1, cfg.epochs + 1):
            start = time.perf_counter()
            module.train()
            total, count = 0.0, 0
            for (idx,) in loader:
                if idx.shape[0] == 0:  # Poisson sampling drew nobody (probability ~e^-B)
                    continue
                pick = idx.tolist()
                tokens, positions = tnet.layout([rows.inputs[i] for i in pick], model.max_len, end)
                targets, _ = tnet.layout([rows.targets[i] for i in pick], model.max_len, end)
                logits = module(torch.from_numpy(tokens), torch.from_numpy(positions))
                loss: Any = _dp_net.per_user_loss(logits, torch.from_numpy(targets))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
                total += float(loss.detach()) * len(pick)
                count += len(pick)
            if engine is not None:
                by_epoch.append(float(engine.get_epsilon(delta)))
            report = sr.EpochReport(
                epoch, total / max(count, 1), math.nan, time.perf_counter() - start
            )
            model.history_.append(report)
            if progress is not None:
                progress(report)
        plain = model._build(tnet)
        state = {k.removeprefix("_module."): v for k, v in module.state_dict().items()}
        plain.load_state_dict(state)
        plain.eval()
    model.net_ = plain
    model.best_epoch_ = cfg.epochs
    model._refresh()
    model.dp_report_ = DPReport.of_run(
        "user (one training sequence per user)",
        n,
        cfg,
        optimizer=opt,
        private=engine is not None,
        sample_rate=q,
        delta=delta,
        steps=steps,
        epsilon_by_epoch=by_epoch,
    )
    model.fit_seconds_ = time.perf_counter() - t0
    model.peak_rss_mb_ = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return model


def _net_kwargs(model: SASRec) -> dict[str, Any]:
    return {
        "n_items": model.n_items_,
        "n_attributes": 0,
        "attr_index": model.attr_index_,
        "attr_offsets": model.attr_offsets_,
        "hidden": model.hidden,
        "max_len": model.max_len,
        "blocks": model.blocks,
        "heads": model.heads,
        "dropout": model.dropout,
        "attn_dropout": model.attn_dropout,
        "ffn": model.ffn,
    }
