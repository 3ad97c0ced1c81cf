"""Do the intervals cover and do the tests control false positives? Checked on simulated studies
with known population values (tests/simulated_studies.py), plus exact known answers.

The simulations (slow tier) use the report's settings (1,000 replicates / permutations). Monte
Carlo standard error of a rate near 95% (or 5%) over 400 studies: sqrt(0.05·0.95/400) = 1.1
points; the bounds below allow about ±2.5 of them.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from analysis.accuracy_intervals import accuracy_intervals
from analysis.uncertainty import forgetting_intervals, forgetting_uncertainty
from tests.simulated_studies import simulate

MC_SE_400 = float(np.sqrt(0.05 * 0.95 / 400))
# The paper's 13 ToxiGen groups have ~15–300 evaluation items each in a sub-sampled study.
THIRTEEN_GROUPS = (15, 20, 25, 30, 40, 50, 60, 80, 100, 120, 150, 200, 300)


def _study_index(chain: str) -> int:
    return int(chain[1:])


@pytest.mark.slow
def test_intervals_cover_the_population_values():
    """400 simulated studies, 3 seeds sharing one eval set, 7 groups of 15–300 items, seed
    random effects of 0.1 (stage 1) and 0.2 (stage 2) on the logit scale (≈2 and 4 accuracy
    points between seeds). Coverage of the nominal 95% intervals, measured: accuracy 95.8%
    (both stages, "all" and every group), forgetting 93.8%, group forgetting 96.8% (per group
    size 15 → 300: 96.2, 97.5, 98.0, 97.8, 96.8, 95.8, 95.8)."""
    trials, predictions, truths = simulate(400, seed_sd=(0.1, 0.2), rng_seed=0)
    intervals, tests = forgetting_uncertainty(trials, predictions, n_boot=1000, permutation=False)
    accuracy = accuracy_intervals(trials, predictions, n_boot=1000)

    overall = intervals.filter(pl.col("metric") == "forgetting")
    covered = [low <= truths[_study_index(chain)].forgetting[0] <= high
               for chain, low, high in overall.select("chain", "low", "high").iter_rows()]
    assert len(covered) == 400 and 0.92 <= np.mean(covered) <= 0.98, np.mean(covered)

    groups = [low <= truths[_study_index(chain)].forgetting[1 + int(group[1:])] <= high
              for chain, group, low, high in tests.select(
                  "chain", "group", "group_forgetting_low", "group_forgetting_high").iter_rows()]
    assert len(groups) == 400 * 7 and 0.92 <= np.mean(groups) <= 0.98, np.mean(groups)

    accuracies = []
    for chain, stage, group, low, high in accuracy.select("chain", "stage", "group", "low", "high").iter_rows():
        truth = truths[_study_index(chain)]
        column = 0 if group == "all" else 1 + int(group[1:])
        accuracies.append(low <= (truth.accuracy_stage1 if stage == 1 else truth.accuracy_stage2)[column] <= high)
    assert len(accuracies) == 400 * 2 * 8 and 0.92 <= np.mean(accuracies) <= 0.98, np.mean(accuracies)


@pytest.mark.slow
def test_the_max_biased_forgetting_test_controls_false_positives():
    """400 studies with no group effect (13 groups of 15–300 items share one accuracy and one
    forgetting; 3 seeds). The plug-in max BiasedForgetting is ~7 points on average although no
    group differs; the permutation test of the maximum flags 4.0% of them at α = 0.05
    (measured), the per-group permutation tests 4.1% of groups, and "some group, Holm-adjusted"
    3.3% of studies (permutation) and 1.5% (t test)."""
    trials, predictions, _ = simulate(400, sizes=THIRTEEN_GROUPS, equal_groups=True, rng_seed=7)
    intervals, tests = forgetting_uncertainty(trials, predictions, n_boot=1000)
    maxima = intervals.filter(pl.col("metric") == "max_biased_forgetting")
    assert maxima.height == 400 and maxima["estimate"].mean() > 0.04  # the maximum's upward bias
    upper, lower = 0.05 + 2.5 * MC_SE_400, 0.05 - 2.5 * MC_SE_400
    flagged = float((maxima["p_value"] <= 0.05).mean())
    assert lower <= flagged <= upper, flagged
    assert float((tests["p_permutation"] <= 0.05).mean()) <= upper
    any_group = tests.group_by("chain").agg(pl.col("p_permutation_holm").min(), pl.col("p_bootstrap_holm").min())
    assert float((any_group["p_permutation_holm"] <= 0.05).mean()) <= upper
    assert float((any_group["p_bootstrap_holm"] <= 0.05).mean()) <= upper


@pytest.mark.slow
def test_the_max_biased_forgetting_test_detects_a_planted_group():
    """200 studies as above, but the 100-item group forgets 1.0 more on the logit scale (about
    19 points of accuracy more than the average group, computed from the population values
    below): the test of the maximum flags it in 90% of studies at α = 0.05 (measured). A
    planted 0.5 (about 9 points) is flagged in only 7%: the maximum over 13 groups is dominated
    by the smallest (15-item) groups' noise; a group named in advance is better tested with
    its own per-group test."""
    planted_group = THIRTEEN_GROUPS.index(100)
    trials, predictions, truths = simulate(200, sizes=THIRTEEN_GROUPS, equal_groups=True,
                                           planted=(planted_group, 1.0), rng_seed=11)
    effect = np.mean([t.forgetting[1 + planted_group] - t.forgetting[0] for t in truths])
    assert 0.15 < effect < 0.25
    intervals = forgetting_intervals(trials, predictions, n_boot=500)
    maxima = intervals.filter(pl.col("metric") == "max_biased_forgetting")
    assert float((maxima["p_value"] <= 0.05).mean()) >= 0.8


# ---------------------------------------------------------------- known answers (fast)


def _frames(outcomes: list[tuple[list[int], list[int]]], groups: list[list[str]]):
    """One setting; trial t has (stage-1, stage-2) correctness lists over the same examples."""
    trials, predictions = [], []
    grid = json.dumps({})
    for t, (first, second) in enumerate(outcomes):
        trial = f"t{t}"
        trials += [{"trial_id": trial, "chain": "c", "seed": t, "stage": s, "method": "sft", "task": task,
                    "learning_rate": 1e-5, "batch_size": 16, "grid_point": grid}
                   for s, task in ((1, "toxigen_qa"), (2, "arc_easy"))]
        for stage, correct in ((1, first), (2, second)):
            predictions += [{"trial_id": trial, "stage": stage, "eval_task": "toxigen_qa", "example_id": f"e{i}",
                             "groups": g, "correct": bool(c), "mode": "score"}
                            for i, (c, g) in enumerate(zip(correct, groups, strict=True))]
    return pl.DataFrame(trials), pl.DataFrame(predictions, schema_overrides={"groups": pl.List(pl.String)})


def test_the_permutation_p_of_the_maximum_matches_full_enumeration():
    """8 examples, groups A (3 items) and B (2 items): every one of the 8!/(3!·2!·3!) = 560
    assignments of the labels is enumerated; the share whose max BiasedForgetting reaches the
    observed one is the exact p, which 20,000 random permutations reproduce within Monte Carlo
    error."""
    first = [1, 1, 1, 1, 1, 1, 1, 0]
    second = [0, 0, 1, 1, 0, 1, 1, 0]
    groups = [["A"], ["A"], ["A"], ["B"], ["B"], [], [], []]
    flips = np.array(first) - np.array(second)
    overall = flips.mean()

    def max_bf(labels) -> float:
        return max(flips[[i for i, g in enumerate(labels) if g == name]].mean() - overall for name in ("A", "B"))

    observed = max_bf([g[0] if g else None for g in groups])
    exact = []
    for a in itertools.combinations(range(8), 3):
        for b in itertools.combinations([i for i in range(8) if i not in a], 2):
            labels = ["A" if i in a else "B" if i in b else None for i in range(8)]
            exact.append(max_bf(labels) >= observed - 1e-12)
    assert len(exact) == 560
    row = forgetting_intervals(*_frames([(first, second)], groups), n_boot=20000).filter(
        pl.col("metric") == "max_biased_forgetting").row(0, named=True)
    assert row["estimate"] == pytest.approx(observed)
    assert row["p_value"] == pytest.approx(np.mean(exact), abs=4 * np.sqrt(0.25 / 20000) + 1e-4)


def test_seeds_that_answer_alike_add_no_certainty():
    """Three seeds with identical answers are one eval set seen three times: their intervals
    and tests equal those of one seed (resampling each seed's examples independently would
    have made them ~√3 narrower: the eval-set noise is shared)."""
    rng = np.random.default_rng(3)
    groups = [["A"] if i % 3 == 0 else ["B"] if i % 3 == 1 else [] for i in range(90)]
    first = (rng.random(90) < 0.8).astype(int).tolist()
    second = [c if rng.random() < 0.8 else 0 for c in first]
    one = _frames([(first, second)], groups)
    three = _frames([(first, second)] * 3, groups)
    columns = ["metric", "estimate", "low", "high", "se", "p_value"]
    once = forgetting_intervals(*one, n_boot=400).select(columns)
    thrice = forgetting_intervals(*three, n_boot=400).select(columns)
    assert_frame_equal(thrice, once, rel_tol=1e-9, abs_tol=1e-12)
    assert (once.drop_nulls("low")["high"] > once.drop_nulls("low")["low"]).all()
    once_acc = accuracy_intervals(*one, n_boot=400).select("stage", "group", "low", "high", "df")
    thrice_acc = accuracy_intervals(*three, n_boot=400).select("stage", "group", "low", "high", "df")
    assert_frame_equal(thrice_acc, once_acc, rel_tol=1e-9, abs_tol=1e-12)


def test_seed_spread_widens_the_interval_with_a_t_quantile():
    """Two seeds, no item noise within a seed that they do not share (every example flips or
    not alike... except a constant shift): seed 0 forgets 10 of 100 examples, seed 1 forgets 30
    (a seed effect). Forgetting 0.2; s² = 0.02 over 2 seeds, so σ²_seed/2 adds ~0.01 to the
    eval-set variance and the quantile is t with ≥ 1 degree of freedom, not 1.96."""
    first = [1] * 100
    groups = [["A"]] * 50 + [["B"]] * 50
    seed0 = [0 if i < 10 else 1 for i in range(100)]
    seed1 = [0 if i < 30 else 1 for i in range(100)]
    row = forgetting_intervals(*_frames([(first, seed0), (first, seed1)], groups), n_boot=2000).filter(
        pl.col("metric") == "forgetting").row(0, named=True)
    assert row["estimate"] == pytest.approx(0.2)
    assert row["se"] > np.sqrt(0.02 / 2)  # at least the seed part
    assert 1 <= row["df"] < 50
    assert row["high"] - row["estimate"] > 1.96 * row["se"]
