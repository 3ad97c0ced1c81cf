"""Bootstrap intervals and group tests of analysis.uncertainty, on hand-built frames.

Predictions are written as the contract's rows (trial_id, stage, eval_task, example_id, groups,
correct, mode); trials as one row per (trial, stage). The point estimates are checked against
analysis.forgetting run on evals rebuilt from the same predictions.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from analysis import accuracy_from_predictions, forgetting_summary, group_forgetting, mean_stage_accuracy
from analysis.accuracy_intervals import accuracy_intervals
from analysis.uncertainty import (
    forgetting_intervals,
    group_forgetting_tests,
    holm,
)

GRID = json.dumps({"stage1.learning_rate": 0.001})


def trial_rows(trial_id: str, seed: int, tasks=("toxigen_qa", "arc"), chain="tqa_arc",
               grid=GRID) -> list[dict]:
    return [
        {"trial_id": trial_id, "chain": chain, "seed": seed, "stage": stage, "method": "sft",
         "task": task, "learning_rate": 1e-5, "batch_size": 16, "grid_point": grid}
        for stage, task in enumerate(tasks, start=1)
    ]


def prediction_rows(trial_id: str, stage: int, task: str, correct, groups, *, prefix="e") -> list[dict]:
    """One row per example: example_id = prefix + index, its groups list and correctness."""
    return [
        {"trial_id": trial_id, "stage": stage, "eval_task": task, "example_id": f"{prefix}{i}",
         "groups": list(g), "correct": bool(c), "mode": "score"}
        for i, (c, g) in enumerate(zip(correct, groups, strict=True))
    ]


def frames(trials: list[dict], predictions: list[dict]) -> tuple[pl.DataFrame, pl.DataFrame]:
    return (
        pl.DataFrame(trials, infer_schema_length=None),
        pl.DataFrame(predictions, schema_overrides={"groups": pl.List(pl.String)}, infer_schema_length=None),
    )


def metric(table: pl.DataFrame, name: str, **where) -> dict:
    rows = table.filter(pl.col("metric") == name)
    for column, value in where.items():
        rows = rows.filter(pl.col(column) == value)
    assert rows.height == 1, rows
    return rows.row(0, named=True)


def random_study(n: int = 200, seeds=(0, 1, 2), rng_seed: int = 1, *, flip_women: float = 0.1,
                 grid=GRID, chain="tqa_arc") -> tuple[list[dict], list[dict]]:
    """n toxigen_qa examples per seed in groups muslim / women / both / none; at stage 2 every
    example that was correct flips to wrong with probability 0.1, women's with flip_women."""
    rng = np.random.default_rng(rng_seed)
    kinds = [["muslim"], ["women"], ["muslim", "women"], []]
    groups = [kinds[i % 4] for i in range(n)]
    trials, predictions = [], []
    for seed in seeds:
        trial = f"{chain}-{grid}-t{seed}"
        trials += trial_rows(trial, seed, chain=chain, grid=grid)
        first = rng.random(n) < 0.8
        p_flip = np.array([flip_women if "women" in g else 0.1 for g in groups])
        second = first & (rng.random(n) >= p_flip)
        predictions += prediction_rows(trial, 1, "toxigen_qa", first, groups)
        predictions += prediction_rows(trial, 2, "toxigen_qa", second, groups)
        predictions += prediction_rows(trial, 2, "arc", rng.random(50) < 0.6, [[]] * 50, prefix="a")
    return trials, predictions


# ---------------------------------------------------------------- point estimates


def test_point_estimates_equal_analysis_forgetting():
    """Two settings, 3 and 2 seeds, multi-group examples, generate-mode rows (ignored) and a
    stage-0 row: estimates are forgetting_summary's, group_forgetting's and
    mean_stage_accuracy's on evals rebuilt from the predictions."""
    trials, predictions = random_study(120, flip_women=0.5)
    more_trials, more_predictions = random_study(80, seeds=(0, 1), rng_seed=7, grid="{}", chain="other")
    trials, predictions = trials + more_trials, predictions + more_predictions
    predictions += [dict(row, mode="generate", correct=not row["correct"]) for row in predictions[:30]]
    predictions += prediction_rows(trials[0]["trial_id"], 0, "toxigen_qa", [True] * 120, [["women"]] * 120)
    trials, predictions = frames(trials, predictions)
    evals = accuracy_from_predictions(predictions)

    summary = forgetting_summary(trials, evals)
    intervals = forgetting_intervals(trials, predictions, n_boot=50)
    assert intervals.height == 2 * 5
    for expected in summary.iter_rows(named=True):
        key = {"chain": expected["chain"], "grid_point": expected["grid_point"]}
        for name in ("acc_first_task_after_first_stage", "acc_first_task_after_final", "forgetting",
                     "wg_forgetting", "max_biased_forgetting"):
            row = metric(intervals, name, **key)
            assert row["estimate"] == pytest.approx(expected[name], abs=1e-12), name
            assert row["n_seeds"] == expected["n_seeds"]
        assert metric(intervals, "wg_forgetting", **key)["group"] == expected["worst_group"]

    groups = group_forgetting(trials, evals)
    tests = group_forgetting_tests(trials, predictions, n_boot=50)
    joined = groups.join(tests, on=["chain", "grid_point", "group"], how="inner")
    assert joined.height == groups.height == tests.height == 2 * 2
    for row in joined.iter_rows(named=True):
        assert row["group_forgetting"] == pytest.approx(row["forgetting"], abs=1e-12)
        assert row["average_forgetting"] == pytest.approx(row["overall_forgetting"], abs=1e-12)
        assert row["difference"] == pytest.approx(row["biased_forgetting"], abs=1e-12)
        assert row["is_worst_group_right"] == row["is_worst_group"]

    means = mean_stage_accuracy(trials, evals)
    accuracy = accuracy_intervals(trials, predictions, n_boot=50)
    joined = means.join(accuracy, on=["chain", "grid_point", "stage", "eval_task", "group"], how="full")
    assert joined.height == means.height == accuracy.height
    assert np.allclose(joined["accuracy"].to_numpy(), joined["estimate"].to_numpy(), atol=1e-12)
    assert (joined["n"] == joined["n_right"]).all() and (joined["n_seeds"] == joined["n_seeds_right"]).all()


def test_multi_group_examples_count_toward_each_group():
    """4 examples: e0 muslim, e1 women (listed twice), e2 women+muslim, e3 none ("all" listed
    is no group). Stage 1 all correct; at stage 2 only e2 is wrong. muslim: 2 examples,
    forgetting 1/2; women likewise; all: 1/4."""
    groups = [["muslim"], ["women", "women"], ["women", "muslim"], ["all"]]
    trials, predictions = frames(
        trial_rows("t", 0),
        prediction_rows("t", 1, "toxigen_qa", [1, 1, 1, 1], groups)
        + prediction_rows("t", 2, "toxigen_qa", [1, 1, 0, 1], groups),
    )
    tests = group_forgetting_tests(trials, predictions, n_boot=20)
    assert tests["group"].to_list() == ["muslim", "women"]
    assert tests["n_examples"].to_list() == [2, 2]
    assert tests["group_forgetting"].to_list() == [0.5, 0.5]
    assert tests["average_forgetting"].to_list() == [0.25, 0.25]
    intervals = forgetting_intervals(trials, predictions, n_boot=20)
    assert metric(intervals, "forgetting")["n_examples"] == 4
    assert metric(intervals, "wg_forgetting")["group"] == "muslim"  # tie: first name
    accuracy = accuracy_intervals(trials, predictions, n_boot=20, stages=[2])
    assert accuracy.select("group", "n", "estimate").rows() == [
        ("all", 4, 0.75), ("muslim", 2, 0.5), ("women", 2, 0.5),
    ]


# ---------------------------------------------------------------- intervals


def test_intervals_contain_the_estimate_and_are_deterministic():
    trials, predictions = frames(*random_study(400, flip_women=0.3))
    first = forgetting_intervals(trials, predictions, n_boot=300, seed=3)
    for row in first.iter_rows(named=True):
        if row["metric"] in ("wg_forgetting", "max_biased_forgetting"):
            # Maxima over groups carry no interval (module docstring); max biased has its test.
            assert row["low"] is None and row["high"] is None and row["se"] is None
            assert (row["p_value"] is not None) == (row["metric"] == "max_biased_forgetting")
            continue
        assert row["low"] <= row["estimate"] <= row["high"], row
        assert row["n_boot"] == 300 and row["low"] < row["high"] and row["p_value"] is None
    assert first.equals(forgetting_intervals(trials, predictions.lazy(), n_boot=300, seed=3))
    other = forgetting_intervals(trials, predictions, n_boot=300, seed=4)
    assert not other["low"].equals(first["low"])
    assert other["estimate"].equals(first["estimate"])
    accuracy = accuracy_intervals(trials, predictions, n_boot=300, seed=3)
    assert ((accuracy["low"] <= accuracy["estimate"]) & (accuracy["estimate"] <= accuracy["high"])).all()
    assert accuracy.equals(accuracy_intervals(trials, predictions, n_boot=300, seed=3))


def test_a_settings_intervals_do_not_depend_on_other_settings():
    """Each setting has its own random stream: adding a setting leaves the others' rows alone."""
    trials_a, predictions_a = random_study(100)
    trials_b, predictions_b = random_study(100, grid="{}", chain="other")
    alone = forgetting_intervals(*frames(trials_a, predictions_a), n_boot=100)
    together = forgetting_intervals(*frames(trials_a + trials_b, predictions_a + predictions_b), n_boot=100)
    assert together.filter(pl.col("chain") == "tqa_arc").equals(alone)


def test_intervals_shrink_with_more_examples():
    """The same rates on 4× the examples, one seed (so only the eval set varies): every
    interval narrower, about half as wide. (With several seeds the seed part of the variance
    does not shrink with the examples.)"""
    small = forgetting_intervals(*frames(*random_study(200, seeds=(0,), rng_seed=5)), n_boot=400)
    large = forgetting_intervals(*frames(*random_study(800, seeds=(0,), rng_seed=5)), n_boot=400)
    width = lambda table: table.drop_nulls("low").select(pl.col("high") - pl.col("low")).to_series().to_numpy()  # noqa: E731
    assert width(large).size == width(small).size == 3
    assert (width(large) < width(small)).all()
    assert np.median(width(large) / width(small)) < 0.75
    small_acc = accuracy_intervals(*frames(*random_study(200, seeds=(0,), rng_seed=5)), n_boot=400, stages=[1])
    large_acc = accuracy_intervals(*frames(*random_study(800, seeds=(0,), rng_seed=5)), n_boot=400, stages=[1])
    assert (width(large_acc) < width(small_acc)).all()


def test_paired_resampling_gives_zero_width_when_nothing_changed():
    """Stage 2 answers exactly as stage 1 (60% correct): forgetting is 0 in every replicate, so
    its interval is exactly [0, 0] (unpaired resampling of the two stages would give about
    ±0.1), while each stage's accuracy interval is wide."""
    rng = np.random.default_rng(0)
    trials, predictions = [], []
    groups = [["muslim"] if i % 2 else ["women"] for i in range(100)]
    for seed in (0, 1):
        trials += trial_rows(f"t{seed}", seed)
        correct = rng.random(100) < 0.6
        predictions += prediction_rows(f"t{seed}", 1, "toxigen_qa", correct, groups)
        predictions += prediction_rows(f"t{seed}", 2, "toxigen_qa", correct, groups)
    intervals = forgetting_intervals(*frames(trials, predictions), n_boot=500)
    row = metric(intervals, "forgetting")
    assert (row["estimate"], row["low"], row["high"]) == (0.0, 0.0, 0.0)
    for name in ("wg_forgetting", "max_biased_forgetting"):
        assert metric(intervals, name)["estimate"] == 0.0
    # No group differs at all: every permutation ties the observed maximum, p = 1.
    assert metric(intervals, "max_biased_forgetting")["p_value"] == 1.0
    accuracy = metric(intervals, "acc_first_task_after_first_stage")
    assert accuracy["high"] - accuracy["low"] > 0.1


def test_one_seed_varies_only_the_examples():
    """A single trial: intervals come from the examples alone; with one example kind per group
    and stage (everything correct at stage 1, nothing at stage 2) they have zero width."""
    trials, predictions = random_study(300, seeds=(0,))
    intervals = forgetting_intervals(*frames(trials, predictions), n_boot=300)
    assert (intervals["n_seeds"] == 1).all()
    row = metric(intervals, "forgetting")
    assert row["low"] < row["estimate"] < row["high"]
    constant = frames(
        trial_rows("t", 0),
        prediction_rows("t", 1, "toxigen_qa", [1] * 10, [["women"]] * 10)
        + prediction_rows("t", 2, "toxigen_qa", [0] * 10, [["women"]] * 10),
    )
    row = metric(forgetting_intervals(*constant, n_boot=50), "forgetting")
    assert (row["estimate"], row["low"], row["high"]) == (1.0, 1.0, 1.0)


def test_after_stage_picks_a_middle_stage():
    """A 3-stage chain: after_stage=2 compares stage 1 with stage 2, default with stage 3."""
    trials = trial_rows("t", 0, tasks=("toxigen_qa", "arc", "mmlu"))
    groups = [["women"]] * 4
    predictions = (
        prediction_rows("t", 1, "toxigen_qa", [1, 1, 1, 1], groups)
        + prediction_rows("t", 2, "toxigen_qa", [1, 1, 1, 0], groups)
        + prediction_rows("t", 3, "toxigen_qa", [1, 0, 0, 0], groups)
    )
    trials, predictions = frames(trials, predictions)
    assert metric(forgetting_intervals(trials, predictions, n_boot=10), "forgetting")["estimate"] == 0.75
    middle = forgetting_intervals(trials, predictions, n_boot=10, after_stage=2)
    assert metric(middle, "forgetting")["estimate"] == 0.25 and (middle["after_stage"] == 2).all()


# ---------------------------------------------------------------- group tests


def test_a_group_that_forgets_everything_is_flagged_and_an_average_group_is_not():
    """300 examples per seed, 3 seeds, all correct at stage 1. Group 'flipped' (50 examples):
    all wrong at stage 2. Group 'whole' lists every example: it *is* the average, so its
    difference is 0 in every replicate (p = 1). Group 'typical' (60 examples): 15 flip, 25%,
    which is the average rate ((50 + 15 + 10) / 300), so its difference is 0 but not in every
    replicate."""
    trials, predictions = [], []
    rng = np.random.default_rng(11)
    for seed in (0, 1, 2):
        groups = [["whole"] for _ in range(300)]
        for i in range(50):
            groups[i].append("flipped")
        for i in range(50, 110):
            groups[i].append("typical")
        second = np.ones(300, dtype=bool)
        second[:50] = False
        second[rng.choice(np.arange(50, 110), size=15, replace=False)] = False
        second[rng.choice(np.arange(110, 300), size=10, replace=False)] = False
        trials += trial_rows(f"t{seed}", seed)
        predictions += prediction_rows(f"t{seed}", 1, "toxigen_qa", np.ones(300, dtype=bool), groups)
        predictions += prediction_rows(f"t{seed}", 2, "toxigen_qa", second, groups)
    tests = group_forgetting_tests(*frames(trials, predictions), n_boot=999)
    flipped = tests.filter(pl.col("group") == "flipped").row(0, named=True)
    assert flipped["group_forgetting"] == 1.0 and flipped["is_worst_group"]
    assert flipped["difference_low"] > 0 and flipped["p_bootstrap"] < 0.01 and flipped["p_permutation"] < 0.01
    # 50 of 50 flipped in every seed against 25% overall: the t test is far past any threshold;
    # the permutation p is at its floor 1 / (B + 1).
    assert flipped["p_bootstrap"] < 1e-6 and flipped["p_bootstrap_holm"] == pytest.approx(3 * flipped["p_bootstrap"])
    assert flipped["p_permutation"] == pytest.approx(1 / 1000)
    assert flipped["p_max_biased_forgetting"] == pytest.approx(1 / 1000)
    whole = tests.filter(pl.col("group") == "whole").row(0, named=True)
    assert whole["difference"] == 0.0 and whole["difference_low"] == whole["difference_high"] == 0.0
    assert whole["p_bootstrap"] == 1.0 and whole["p_permutation"] == 1.0
    typical = tests.filter(pl.col("group") == "typical").row(0, named=True)
    assert typical["difference"] == pytest.approx(0.0, abs=1e-12)
    assert typical["difference_low"] < 0 < typical["difference_high"]
    assert typical["p_bootstrap"] > 0.05 and typical["p_permutation"] > 0.05
    assert (tests["p_bootstrap_holm"] >= tests["p_bootstrap"]).all()
    assert flipped["p_permutation_holm"] <= 3 * flipped["p_permutation"] + 1e-12


def test_holm_adjustment():
    """Holm: sorted 0.01, 0.02, 0.04 → ×3, ×2, ×1 with the running max; None passes through."""
    adjusted = holm([0.04, 0.01, None, 0.02])
    assert adjusted == [pytest.approx(0.04), pytest.approx(0.03), None, pytest.approx(0.04)]
    assert holm([0.5, 0.9]) == [1.0, 1.0]


def test_refuses_bad_arguments_and_duplicated_examples():
    trials, predictions = frames(*random_study(20, seeds=(0,)))
    with pytest.raises(ValueError, match="n_boot"):
        forgetting_intervals(trials, predictions, n_boot=0)
    with pytest.raises(ValueError, match="level"):
        accuracy_intervals(trials, predictions, level=95)
    with pytest.raises(ValueError, match="after_stage"):
        forgetting_intervals(trials, predictions, after_stage=1)
    with pytest.raises(ValueError, match="more than once"):
        forgetting_intervals(trials, pl.concat([predictions, predictions.head(1)]))
    with pytest.raises(ValueError, match="more than once"):
        accuracy_intervals(trials, pl.concat([predictions, predictions.tail(1)]), n_boot=10)


def test_a_hash_collision_alone_is_not_taken_for_a_duplicate(monkeypatch):
    """The duplicate check counts distinct id hashes first; when that flags a key (a duplicate
    or a collision) the exact count decides. Forcing the hashed count to flag every key on
    clean predictions must not raise, and the intervals must be the unforced ones."""
    import analysis.prediction_cells as prediction_cells

    trials, predictions = frames(*random_study(30, seeds=(0,)))
    expected = forgetting_intervals(trials, predictions, n_boot=20)
    counted = prediction_cells.duplicated_examples

    def hashed_flags_everything(frame, *, exact):
        if exact:
            return counted(frame, exact=True)
        return frame.lazy().group_by("trial_id", "stage", "eval_task").agg(rows=pl.len(), examples=pl.lit(0, pl.UInt32))

    monkeypatch.setattr(prediction_cells, "duplicated_examples", hashed_flags_everything)
    assert forgetting_intervals(trials, predictions, n_boot=20).equals(expected)


def test_forgetting_uncertainty_equals_the_two_functions_alone():
    """The report's one-pass helper gives exactly what forgetting_intervals and
    group_forgetting_tests give separately (same data, same replicates)."""
    from analysis.uncertainty import forgetting_uncertainty, forgetting_intervals, group_forgetting_tests

    trials, predictions = frames(*random_study(150, flip_women=0.3))
    intervals, tests = forgetting_uncertainty(trials, predictions, n_boot=200, seed=3)
    assert intervals.equals(forgetting_intervals(trials, predictions, n_boot=200, seed=3))
    assert tests.equals(group_forgetting_tests(trials, predictions, n_boot=200, seed=3))


def test_a_generation_first_task_is_measured_on_its_generate_mode_records():
    """toxigen_prompts (judged safe = correct, mode generate) then arc: 8 of 10 safe after stage
    1, 5 of 10 after stage 2 → forgetting 0.3, asian (examples 0-4) 4/5 → 1/5 = 0.6. Without
    generation_tasks the task has no option-scoring records, so nothing is measured."""
    trials = trial_rows("g", 0, tasks=("toxigen_prompts", "arc"), chain="ppo_arc")
    groups = [["asian"]] * 5 + [["women"]] * 5
    stage1 = [True, True, True, True, False, True, True, True, True, False]
    stage2 = [True, False, False, False, False, True, True, True, True, False]
    predictions = [dict(row, mode="generate") for row in
                   prediction_rows("g", 1, "toxigen_prompts", stage1, groups)
                   + prediction_rows("g", 2, "toxigen_prompts", stage2, groups)]
    trials, predictions = frames(trials, predictions)
    assert forgetting_intervals(trials, predictions, n_boot=20).is_empty()
    intervals = forgetting_intervals(trials, predictions, n_boot=200, generation_tasks=["toxigen_prompts"])
    assert metric(intervals, "forgetting")["estimate"] == pytest.approx(0.3)
    worst = metric(intervals, "wg_forgetting")
    assert (worst["estimate"], worst["group"]) == (pytest.approx(0.6), "asian")
    assert worst["low"] is None and worst["high"] is None
    accuracy = accuracy_intervals(trials, predictions, n_boot=20, generation_tasks=["toxigen_prompts"])
    assert accuracy.filter(pl.col("group") == "all").sort("stage")["estimate"].to_list() == [
        pytest.approx(0.8), pytest.approx(0.5)]


def test_interval_helpers_leave_the_process_warning_filters_alone():
    """The bootstrap runs on threads, where warnings.catch_warnings (a process-wide swap) would
    race; the helpers skip all-NaN columns instead, silently and with the right answers."""
    import warnings

    from analysis.resampling import seed_t_interval
    from analysis.uncertainty import _nanmax

    # Two trials, three statistics: one ordinary, one no trial has, one only trial 0 has.
    observed = np.array([[0.2, np.nan, 0.5], [0.4, np.nan, np.nan]])
    replicates = np.stack([observed + shift for shift in (-0.1, 0.0, 0.1)])
    before = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any RuntimeWarning from numpy fails the test
        interval = seed_t_interval(observed, replicates, np.array([0.3, np.nan, 0.5]), 0.95, (0.0, 1.0))
        maxima = _nanmax(np.array([[1.0, np.nan], [np.nan, np.nan]]), axis=1)
    assert interval.usable.tolist() == [3, 0, 3]
    # V_items = 0.01 (the shift is shared), w = 0, s² = 0.02 → SE² = 0.01 + 0.02 / 2, df = 1 ... 4
    assert interval.se[0] == pytest.approx(np.sqrt(0.02))
    assert interval.low[0] < 0.3 < interval.high[0]
    assert np.isnan(interval.low[1]) and np.isnan(interval.high[1])
    # One trial: the eval set alone (SE 0.1), normal quantile.
    assert interval.se[2] == pytest.approx(0.1) and interval.high[2] == pytest.approx(0.5 + 1.959964 * 0.1)
    assert maxima[0] == 1.0 and np.isnan(maxima[1])
    # Many settings bootstrapped on threads: the filter list is the same afterwards.
    trials, predictions = [], []
    for index in range(12):
        t, p = random_study(20, seeds=(0,), rng_seed=index, grid=json.dumps({"stage1.learning_rate": index}))
        trials, predictions = trials + t, predictions + p
    trials, predictions = frames(trials, predictions)
    for _ in range(3):
        accuracy_intervals(trials, predictions, n_boot=5)
    assert list(warnings.filters) == before


def test_a_float_stage_column_is_still_read():
    """stage is i64 in the contract; a file with a float stage (written by hand) gives the same
    intervals rather than a type error in the reader-side filter."""
    trials, predictions = frames(*random_study(40, seeds=(0, 1)))
    expected = forgetting_intervals(trials, predictions, n_boot=20)
    got = forgetting_intervals(trials, predictions.with_columns(pl.col("stage").cast(pl.Float64)), n_boot=20)
    assert got.equals(expected)


def test_permutation_blocks_stay_within_the_chunk_bound(monkeypatch):
    """permuted_group_sums counts each block of permutations in a (replicates × label rows ×
    outcome patterns) table. With many trials nearly every item has its own pattern, and with
    13 groups of 1–2 per item there are ~90 label rows: a block sized by the items alone made
    that table ~L·P/n times CHUNK_ELEMENTS (measured 2.6 GB for 20,000 items, 10 trials). Every
    block's table must stay within the bound (one replicate at least), and the margins must
    hold: each trial's group sizes and the "all" column's sums are those of the data."""
    import analysis.resampling as resampling
    from analysis.resampling import ItemCells, permuted_group_sums, trial_sums

    monkeypatch.setattr(resampling, "CHUNK_ELEMENTS", 4096)
    rng = np.random.default_rng(0)
    k, n_trials, n_groups = 300, 8, 6
    member = np.zeros((k, 1 + n_groups))
    member[:, 0] = 1.0
    member[np.arange(k), rng.integers(1, 1 + n_groups, k)] = 1.0
    second = rng.random(k) < 0.5
    member[np.flatnonzero(second), rng.integers(1, 1 + n_groups, second.sum())] = 1.0
    values = (rng.random((k, n_trials, 2)) < 0.6).astype(float)
    cells = ItemCells(groups=[f"g{i}" for i in range(n_groups)], trial_ids=[f"t{i}" for i in range(n_trials)],
                      seeds=list(range(n_trials)), counts=np.ones(k, dtype=np.int64), member=member,
                      present=np.ones((k, n_trials)), values=values)
    n_labels = np.unique(member, axis=0).shape[0]
    n_patterns = np.unique(values.reshape(k, -1), axis=0).shape[0]
    assert n_labels * n_patterns > resampling.CHUNK_ELEMENTS  # the case under test
    observed_n, observed_sums = trial_sums(cells, cells.counts[None].astype(float))
    drawn = 0
    for counts, sums in permuted_group_sums(cells, 50, np.random.default_rng(1)):
        size = counts.shape[0]
        drawn += size
        assert size * n_labels * n_patterns <= max(resampling.CHUNK_ELEMENTS, n_labels * n_patterns)
        assert np.array_equal(counts, np.broadcast_to(observed_n, counts.shape))
        assert np.allclose(sums[:, :, 0], observed_sums[:, :, 0])
    assert drawn == 50


def test_both_ways_of_summing_a_permutation_agree():
    """permuted_group_sums sums each shuffle through a label-row × pattern table (few seeds) or
    item by item (many seeds, nearly a pattern per item); given the same shuffles both give the
    same sizes and sums, and both keep the margins. Some items are missing from some trials."""
    from analysis.resampling import ItemCells, permuted_group_sums, trial_sums

    rng = np.random.default_rng(5)
    k, n_trials, n_groups = 120, 5, 4
    member = np.zeros((k, 1 + n_groups))
    member[:, 0] = 1.0
    member[np.arange(k), rng.integers(1, 1 + n_groups, k)] = 1.0
    present = (rng.random((k, n_trials)) < 0.9).astype(float)
    values = (rng.random((k, n_trials, 2)) < 0.6).astype(float) * present[:, :, None]
    cells = ItemCells(groups=[f"g{i}" for i in range(n_groups)], trial_ids=[f"t{i}" for i in range(n_trials)],
                      seeds=list(range(n_trials)), counts=rng.integers(1, 4, k), member=member,
                      present=present, values=values)
    table = list(permuted_group_sums(cells, 64, np.random.default_rng(2), method="table"))
    items = list(permuted_group_sums(cells, 64, np.random.default_rng(2), method="items"))
    observed_n, observed_sums = trial_sums(cells, cells.counts[None].astype(float))
    for (n_a, sums_a), (n_b, sums_b) in zip(table, items, strict=True):
        assert np.allclose(n_a, n_b) and np.allclose(sums_a, sums_b)
        assert np.allclose(n_a[:, :, 0], observed_n[:, :, 0]) and np.allclose(sums_a[:, :, 0], observed_sums[:, :, 0])
    # Group sizes change from shuffle to shuffle when items miss some trials (presence moves
    # with the item), so the permutation is not a relabelling of a fixed table.
    sizes = np.concatenate([n for n, _ in table])[:, :, 1]
    assert sizes.std(axis=0).max() > 0


def test_n_seeds_counts_the_trials_that_evaluated_the_group():
    """Trials evaluated on different example subsets: t0 and t1 on e0–e29, t2 on e0–e19 only,
    and group 'late' is e20–e29, so two seeds measure it (its estimate averages two trials, and
    analysis.forgetting says n_seeds 2). Its rows must say 2, the setting's and 'early''s 3."""
    rng = np.random.default_rng(4)
    groups = [["early"]] * 20 + [["late"]] * 10
    trials, predictions = [], []
    for seed in (0, 1, 2):
        n = 30 if seed < 2 else 20
        trials += trial_rows(f"t{seed}", seed)
        first = rng.random(n) < 0.8
        predictions += prediction_rows(f"t{seed}", 1, "toxigen_qa", first, groups[:n])
        predictions += prediction_rows(f"t{seed}", 2, "toxigen_qa", first & (rng.random(n) < 0.7), groups[:n])
    trials, predictions = frames(trials, predictions)
    evals = accuracy_from_predictions(predictions)
    expected = dict(group_forgetting(trials, evals).select("group", "n_seeds").iter_rows())
    assert expected == {"early": 3, "late": 2}
    tests = group_forgetting_tests(trials, predictions, n_boot=20)
    assert dict(tests.select("group", "n_seeds").iter_rows()) == expected
    assert metric(forgetting_intervals(trials, predictions, n_boot=20), "forgetting")["n_seeds"] == 3
    means = mean_stage_accuracy(trials, evals)
    accuracy = accuracy_intervals(trials, predictions, n_boot=20)
    joined = means.join(accuracy, on=["chain", "grid_point", "stage", "eval_task", "group"], how="full")
    assert joined.height == means.height == accuracy.height
    assert joined["n_seeds"].to_list() == joined["n_seeds_right"].to_list()
    assert joined.filter(pl.col("group") == "late")["n_seeds_right"].to_list() == [2, 2]


def test_forgetting_pairs_the_examples_evaluated_at_both_stages():
    """Forgetting is measured on the examples a trial evaluated at stage 1 *and* at the compared
    stage. Stage 1: e0–e7 right, e8, e9 wrong; stage 2 evaluated e0–e7 only, all wrong. Paired:
    1.0 − 0.0 = 1.0 on 8 examples; analysis.forgetting, which takes each stage's accuracy on
    whatever it evaluated, says 0.8 − 0.0. The two agree when the stages evaluated the same
    examples (the normal case)."""
    groups = [["a"]] * 10
    trials, predictions = frames(
        trial_rows("t", 0),
        prediction_rows("t", 1, "toxigen_qa", [1] * 8 + [0, 0], groups)
        + prediction_rows("t", 2, "toxigen_qa", [0] * 8, groups[:8]),
    )
    row = metric(forgetting_intervals(trials, predictions, n_boot=20), "forgetting")
    assert (row["estimate"], row["n_examples"]) == (1.0, 8)
    summary = forgetting_summary(trials, accuracy_from_predictions(predictions))
    assert summary["forgetting"].to_list() == [pytest.approx(0.8)]


def test_seed_variance_components_by_hand():
    """seed_t_interval's moments on replicates built by hand (3 trials, 4 replicates): a shared
    shift (−0.1, −0.1, 0.1, 0.1) plus per-trial noise ±0.1 on trials 0 and 1 that cancels in
    the seed mean. V_items = Var(shift) = 0.04/3 = 1/75; mean over trials of Var_B =
    (0.08 + 0.08 + 0.04)/9; w = 3/2·(that − V_items) = 1/75. Trials 0.2, 0.5, 0.5: s² = 0.03,
    σ²_seed = 0.03 − 1/75, SE² = 1/75 + σ²_seed/3, df = 2·(3·SE²/s²)². Trials 0.4, 0.45, 0.35:
    s² = 0.0025 < w, so σ²_seed = 0, SE² = V_items and df = 2·(3·(1/75)/0.0025)² = 512."""
    from scipy import stats

    from analysis.resampling import seed_t_interval

    shift = np.array([-0.1, -0.1, 0.1, 0.1])[:, None]
    noise = np.array([[0.1, -0.1, 0.0], [-0.1, 0.1, 0.0], [0.1, -0.1, 0.0], [-0.1, 0.1, 0.0]])
    observed = np.array([[0.2, 0.4], [0.5, 0.45], [0.5, 0.35]])  # (T, k): two statistics
    replicates = observed[None] + (shift + noise)[:, :, None]
    estimate = observed.mean(axis=0)
    interval = seed_t_interval(observed, replicates, estimate, 0.95, (-1.0, 1.0))
    v_items, w = 1 / 75, 1 / 75
    se2 = v_items + (0.03 - w) / 3
    assert interval.se[0] ** 2 == pytest.approx(se2)
    assert interval.df[0] == pytest.approx(2 * (3 * se2 / 0.03) ** 2)
    half = stats.t.ppf(0.975, 2 * (3 * se2 / 0.03) ** 2) * np.sqrt(se2)
    assert (interval.low[0], interval.high[0]) == (pytest.approx(0.4 - half), pytest.approx(0.4 + half))
    assert interval.se[1] ** 2 == pytest.approx(v_items)
    assert interval.df[1] == pytest.approx(512.0)
    assert interval.usable.tolist() == [4, 4]
