"""A/B/n experiments, exploration and off-policy evaluation.

- ``model``: experiment definitions, deterministic hash assignment, JSON store;
- ``stats`` / ``report``: user-clustered ratio metrics, tests, winner;
- ``layer``: the engine's hook (variant per request, exploration);
- ``exploration``: epsilon-greedy / Thompson slots with logged propensities;
- ``ope``: IPS and SNIPS estimates of a candidate's CTR;
- ``service`` / ``cli``: create, report, stop, promote (API and ``shopcast experiments``).
"""
