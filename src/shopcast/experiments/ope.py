"""Off-policy evaluation: a candidate policy's CTR from logged exploration.

Data: explored slots (``explored``, ``propensity`` = P(item | slot explored), see
``exploration``), with their attributed ``clicked``. The candidate policy gives a
slate for each logged request (shopper, scene, time: ``replay.ReplayPolicy`` answers
as of then, so it cannot have seen the rewards); as a stochastic policy it shows, in
the explored slot, one item of its slate uniformly: ``π(a | x) = 1/|slate|`` for ``a``
in the slate. With ``w = π(a | x) / propensity`` and ``r`` = clicked:

- IPS   ``V̂ = mean(w r)``, variance ``var(w r) / n``;
- SNIPS ``V̂ = Σ w r / Σ w``, variance by the delta method
  ``var(w (r − V̂)) / (n · mean(w)²)``.

Both target the CTR the candidate's items would get in those slots (same positions,
same shoppers). Intervals are normal with ``z(1 − α/2)``; ``effective_n`` =
``(Σw)² / Σw²``. Unbiased where the logging pool covers the slate; items of pinned or
sponsored slots and of earlier explored slots of the same response are not in it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

#: ``policy(user_id, session_id, scene, ts)``: the candidate's slate for a logged
#: request, as of its time (``replay.ReplayPolicy``).
Policy = Callable[[str | None, str | None, str, float], Sequence[str]]


@dataclass
class OPEResult:
    n: int
    matches: int
    logged_ctr: float | None
    ips: float | None
    ips_ci: tuple[float, float] | None
    snips: float | None
    snips_ci: tuple[float, float] | None
    effective_n: float
    slates: dict[str, list[str]] = field(default_factory=dict, repr=False)  # by rec id

    def as_dict(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 6)

        def pair(x: tuple[float, float] | None) -> list[float] | None:
            return None if x is None else [round(x[0], 6), round(x[1], 6)]

        return {
            "explored_slots": self.n,
            "matches": self.matches,
            "logged_ctr": r(self.logged_ctr),
            "ips": r(self.ips),
            "ips_ci": pair(self.ips_ci),
            "snips": r(self.snips),
            "snips_ci": pair(self.snips_ci),
            "effective_n": round(self.effective_n, 2),
        }


def explored_slots(imps: pl.DataFrame) -> pl.DataFrame:
    """The attributed impressions of explored slots with a logged propensity."""
    return imps.filter(
        pl.col("explored") & pl.col("propensity").is_not_null() & (pl.col("propensity") > 0)
    )


def estimate(logged: pl.DataFrame, policy: Policy, *, alpha: float = 0.05) -> OPEResult:
    """IPS and SNIPS of ``policy`` on the explored slots in ``logged``."""
    rows = explored_slots(logged)
    n = rows.height
    if n == 0:
        return OPEResult(0, 0, None, None, None, None, None, 0.0)
    slates: dict[str, list[str]] = {}
    w = np.zeros(n)
    r = rows["clicked"].to_numpy().astype(np.float64)
    p = rows["propensity"].to_numpy().astype(np.float64)
    columns = ("recommendation_id", "user_id", "session_id", "scene", "ts", "item_id")
    for k, (rec_id, user, session, scene, ts, item) in enumerate(rows.select(*columns).iter_rows()):
        slate = slates.get(rec_id)
        if slate is None:
            slate = slates[rec_id] = list(policy(user, session, scene or "home", float(ts)))
        if slate and item in slate:
            w[k] = (1.0 / len(slate)) / p[k]
    z = float(stats.norm.ppf(1 - alpha / 2))
    wr = w * r
    ips = float(wr.mean())
    ips_se = math.sqrt(float(wr.var(ddof=1)) / n) if n > 1 else math.inf
    matches = int((w > 0).sum())
    snips = snips_ci = None
    if w.sum() > 0:
        snips = float(wr.sum() / w.sum())
        resid = w * (r - snips)
        snips_se = math.sqrt(float(resid.var(ddof=1)) / n) / float(w.mean()) if n > 1 else math.inf
        snips_ci = (snips - z * snips_se, snips + z * snips_se)
    eff = float(w.sum() ** 2 / (w**2).sum()) if (w > 0).any() else 0.0
    return OPEResult(
        n=n,
        matches=matches,
        logged_ctr=float(r.mean()),
        ips=ips,
        ips_ci=(ips - z * ips_se, ips + z * ips_se),
        snips=snips,
        snips_ci=snips_ci,
        effective_n=eff,
        slates=slates,
    )
