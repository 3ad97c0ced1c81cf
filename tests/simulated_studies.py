"""Simulated studies with known population values, for calibrating analysis.uncertainty.

Each study is one setting (its own chain name) of `n_seeds` trials that share one evaluation
set, as a real study's seeds do. The generative model, on the logit scale:

  item i of group g:   difficulty b_i ~ N(0, 1), item-specific forgetting c_i ~ N(0, 0.5)
  trial t (a seed):    a1_t ~ N(0, seed_sd[0]) at stage 1, a2_t ~ N(0, seed_sd[1]) at stage 2
  P(correct at stage 1) = σ(μ_g + b_i + a1_t)
  P(correct at stage 2) = σ(μ_g − δ_g + b_i + c_i + a2_t)

with the two outcomes of an item in a trial positively dependent (stage 2 reuses stage 1's
uniform draw with probability 0.7: a model that knew an item tends to keep it). μ_g ~ U(0.3,
1.8) (accuracies ~0.55–0.85), δ_g ~ U(0, 0.8) per group, unless `equal_groups` (then all groups
share one μ and one δ: no group effect at all) — and `planted` adds extra forgetting to one
group. The population value of a group's accuracy is E σ(·) over items and seeds (Gauss–Hermite
quadrature of a normal with the summed variances); "all" weights groups by their sizes, which
the design fixes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import polars as pl

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(80)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()
ITEM_SD, ITEM_FORGETTING_SD, KEEP = 1.0, 0.5, 0.7


def expected_sigmoid(mu: np.ndarray, sd: float) -> np.ndarray:
    """E σ(mu + sd·Z), Z ~ N(0, 1), elementwise over mu."""
    return np.sum(_WEIGHTS / (1.0 + np.exp(-(np.asarray(mu)[..., None] + sd * _NODES))), axis=-1)


@dataclass(frozen=True)
class Truth:
    """Population values of one study: per group (index 0 = "all", then groups in name order)."""

    groups: list[str]
    accuracy_stage1: np.ndarray
    accuracy_stage2: np.ndarray

    @property
    def forgetting(self) -> np.ndarray:
        return self.accuracy_stage1 - self.accuracy_stage2


def simulate(n_studies: int, *, sizes=(15, 25, 40, 60, 100, 150, 300), n_seeds: int = 3,
             seed_sd=(0.1, 0.2), equal_groups: bool = False, planted: tuple[int, float] | None = None,
             rng_seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame, list[Truth]]:
    """(trials, predictions, truths) of n_studies simulated studies; study k is chain f"s{k}".

    planted: (group index, extra forgetting on the logit scale) for one group of every study.
    """
    rng = np.random.default_rng(rng_seed)
    sizes = np.asarray(sizes)
    n_groups = sizes.size
    names = [f"g{index:02d}" for index in range(n_groups)]
    group_of = np.repeat(np.arange(n_groups), sizes)
    n_items = group_of.size
    trial_rows, frames, truths = [], [], []
    grid = json.dumps({})
    for study in range(n_studies):
        if equal_groups:
            mu = np.full(n_groups, rng.uniform(0.3, 1.8))
            delta = np.full(n_groups, rng.uniform(0.0, 0.8))
        else:
            mu, delta = rng.uniform(0.3, 1.8, n_groups), rng.uniform(0.0, 0.8, n_groups)
        if planted is not None:
            delta = delta.copy()
            delta[planted[0]] += planted[1]
        b = rng.normal(0.0, ITEM_SD, n_items)
        c = rng.normal(0.0, ITEM_FORGETTING_SD, n_items)
        a1 = rng.normal(0.0, seed_sd[0], n_seeds)
        a2 = rng.normal(0.0, seed_sd[1], n_seeds)
        p1 = 1.0 / (1.0 + np.exp(-(mu[group_of][None] + b[None] + a1[:, None])))
        p2 = 1.0 / (1.0 + np.exp(-(mu[group_of][None] - delta[group_of][None] + b[None] + c[None] + a2[:, None])))
        u1 = rng.random((n_seeds, n_items))
        u2 = np.where(rng.random((n_seeds, n_items)) < KEEP, u1, rng.random((n_seeds, n_items)))
        correct = {1: u1 < p1, 2: u2 < p2}
        group_acc1 = expected_sigmoid(mu, np.hypot(ITEM_SD, seed_sd[0]))
        group_acc2 = expected_sigmoid(mu - delta, np.sqrt(ITEM_SD**2 + ITEM_FORGETTING_SD**2 + seed_sd[1] ** 2))
        weights = sizes / sizes.sum()
        truths.append(Truth(
            groups=names,
            accuracy_stage1=np.concatenate([[weights @ group_acc1], group_acc1]),
            accuracy_stage2=np.concatenate([[weights @ group_acc2], group_acc2]),
        ))
        chain = f"s{study}"
        for t in range(n_seeds):
            trial_id = f"{chain}-t{t}"
            for stage, task in ((1, "toxigen_qa"), (2, "arc_easy")):
                trial_rows.append({"trial_id": trial_id, "chain": chain, "seed": t, "stage": stage,
                                   "method": "sft", "task": task, "learning_rate": 1e-5, "batch_size": 16,
                                   "grid_point": grid})
            for stage in (1, 2):
                frames.append(pl.DataFrame({"trial_id": trial_id, "stage": stage, "correct": correct[stage][t],
                                            "item": np.arange(n_items)}))
    # Example ids and group lists are joined on once, not built per trial (10^6 rows).
    items = pl.DataFrame({"item": np.arange(n_items), "example_id": [f"e{i}" for i in range(n_items)],
                          "groups": [[names[g]] for g in group_of]},
                         schema_overrides={"groups": pl.List(pl.String)})
    predictions = (pl.concat(frames).join(items, on="item", how="left")
                   .select("trial_id", "stage", pl.lit("toxigen_qa").alias("eval_task"), "example_id", "groups",
                           "correct", pl.lit("score").alias("mode")))
    return pl.DataFrame(trial_rows), predictions, truths
