"""Bayesian biased matrix factorization by Gibbs sampling (BPMF, Salakhutdinov & Mnih 2008)."""

from __future__ import annotations

import logging
from typing import ClassVar, Self

import numpy as np
from scipy.stats import wishart

from shopcast.errors import ConfigError
from shopcast.models._base import BoolArray, FloatArray, IntArray, Interactions
from shopcast.models._common import check_positive
from shopcast.models._data import (
    SubjectIndex,
    explicit_ratings,
    n_items_of,
    n_users_of,
    ridge_by_group,
)
from shopcast.models.mf import Progress, RatingFactors

log = logging.getLogger(__name__)


class BayesianMF(RatingFactors):
    """``r ~ N(μ + b_u + b_i + p_u·q_i, 1/τ)`` with Normal-Wishart hyperpriors, averaged over draws.

    Users ``[b_u, p_u]`` and items ``[b_i, q_i]`` each have a Gaussian prior whose mean
    and precision are drawn from a Normal-Wishart (``β₀ = 2``, ``ν₀ = d``, ``W₀ = I``);
    ``τ`` has a Gamma(1, 1) prior. Each sweep draws the hyperparameters, all users, all
    items and ``τ``; after ``burn_in`` sweeps, ``samples`` draws are averaged. The
    average of ``p·q`` over draws equals one dot product of the draws laid side by side,
    so the fitted state is that of ``RatingFactors`` with ``n_factors · samples`` factors
    (each scaled by ``samples^-½``) and the mean biases. No regularization to tune.
    """

    name: ClassVar[str] = "mf_bayes"
    _params: ClassVar[tuple[str, ...]] = ("n_factors", "burn_in", "samples", "init_std", "seed")

    tau_: float

    def __init__(
        self,
        n_factors: int = 10,
        burn_in: int = 20,
        samples: int = 100,
        init_std: float = 0.1,
        seed: int = 0,
        progress: Progress | None = None,
    ) -> None:
        for label, value in (("n_factors", n_factors), ("samples", samples)):
            if value < 1:
                raise ConfigError(f"{label} must be >= 1, got {value}")
        if burn_in < 0:
            raise ConfigError(f"burn_in must be >= 0, got {burn_in}")
        self.n_factors = n_factors
        self.burn_in = burn_in
        self.samples = samples
        self.init_std = check_positive("init_std", init_std)
        self.seed = seed
        self.progress = progress

    def fit(self, data: Interactions) -> Self:
        user, item, r = explicit_ratings(data)
        n_users, n_items = n_users_of(data), n_items_of(data)
        d = self.n_factors + 1
        rng = np.random.default_rng(self.seed)
        mu = float(r.mean())
        x = rng.normal(0.0, self.init_std, (n_users, d))
        y = rng.normal(0.0, self.init_std, (n_items, d))
        rated_u = np.bincount(user, minlength=n_users) > 0
        rated_i = np.bincount(item, minlength=n_items) > 0
        tau = 1.0
        sweeps = self.burn_in + self.samples
        bu, bi = np.zeros(n_users), np.zeros(n_items)
        p_draws: list[FloatArray] = []
        q_draws: list[FloatArray] = []
        for sweep in range(sweeps):
            x = _draw(user, x, rated_u, y, item, r - mu - y[item, 0], tau, rng)
            y = _draw(item, y, rated_i, x, user, r - mu - x[user, 0], tau, rng)
            err = r - mu - x[user, 0] - y[item, 0] - np.einsum("ij,ij->i", x[user, 1:], y[item, 1:])
            sse = float(err @ err)
            tau = float(rng.gamma(1.0 + r.shape[0] / 2.0, 1.0 / (1.0 + sse / 2.0)))
            if sweep >= self.burn_in:
                bu += x[:, 0]
                bi += y[:, 0]
                p_draws.append(x[:, 1:].copy())
                q_draws.append(y[:, 1:].copy())
            rmse = float(np.sqrt(sse / r.shape[0]))
            log.debug("%s sweep %d/%d: train RMSE %.4f", self.name, sweep + 1, sweeps, rmse)
            if self.progress is not None:
                self.progress(sweep + 1, sweeps, rmse)
        scale = 1.0 / np.sqrt(self.samples)
        self.mu_ = mu
        self.r_min_, self.r_max_ = float(r.min()), float(r.max())
        self.bu_, self.bi_ = bu / self.samples, bi / self.samples
        self.P_ = np.hstack(p_draws) * scale
        self.Q_ = np.hstack(q_draws) * scale
        self.tau_ = tau
        self.subjects_ = SubjectIndex(data.users.ids[:n_users])
        return self


def _draw(
    group: IntArray,
    own: FloatArray,
    rated: BoolArray,
    other: FloatArray,
    other_idx: IntArray,
    target: FloatArray,
    tau: float,
    rng: np.random.Generator,
) -> FloatArray:
    """One side's ``[bias, factors]`` drawn given the other side's, after its hyperparameters."""
    d = own.shape[1]
    mean, precision = _normal_wishart(own[rated], rng)
    feats = np.hstack([np.ones((other_idx.shape[0], 1)), other[other_idx, 1:]])
    weight = np.full(other_idx.shape[0], tau)
    return ridge_by_group(
        group,
        own.shape[0],
        feats,
        weight,
        tau * target,
        np.zeros(d),
        precision,
        rhs0=precision @ mean,
        noise=rng.standard_normal(own.shape),
    )


def _normal_wishart(x: FloatArray, rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
    """``(mean, precision)`` drawn from the Normal-Wishart posterior given the rows of ``x``."""
    n, d = x.shape
    beta0 = 2.0
    xbar = x.mean(axis=0)
    spread = np.cov(x.T, bias=True).reshape(d, d) if n > 1 else np.zeros((d, d))
    beta = beta0 + n
    w_inv = np.eye(d) + n * spread + (beta0 * n / beta) * np.outer(xbar, xbar)
    w = np.linalg.inv(w_inv)
    precision = np.asarray(wishart.rvs(df=d + n, scale=(w + w.T) / 2.0, random_state=rng))
    precision = precision.reshape(d, d)
    mean = rng.multivariate_normal(n * xbar / beta, np.linalg.inv(beta * precision))
    return mean, precision
