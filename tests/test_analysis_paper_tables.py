"""analysis/paper_tables.py: the paper's Tables 1, 2, 4/5/9 and 6–10 from hand-built `trials` and
`evals` frames, each compared with a hand computation written next to it. Accuracies are
fractions; "tqa" = toxigen_qa, "arc" = arc_easy, groups g1/g2 are ToxiGenQA's demographic groups."""

from __future__ import annotations

import json

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from analysis.labels import hyperparameter_label, model_label, order_label, task_label
from analysis.paper_tables import (
    applicable_tables,
    benchmark_table,
    first_stage_method_table,
    hyperparameter_table,
    ordering_table,
    paper_tables,
    reward_model_label,
    reward_models,
    varying_axes,
)

NO_GRID = "{}"


def trials_of(trial_id: str, chain: str, seed: int, stages: list[tuple[str, str]], *,
              grid_point: str = NO_GRID, keys: list[str] | None = None) -> list[dict]:
    """`trials` rows of one trial; stages = [(method, task), ...]; keys = the stage keys."""
    keys = keys or [f"{trial_id}-{s}" for s in range(1, len(stages) + 1)]
    return [
        {"trial_id": trial_id, "chain": chain, "seed": seed, "stage": stage, "method": method,
         "task": task, "learning_rate": 1e-5, "batch_size": 16, "steps": 10, "stage_key": key,
         "model": "tiny", "grid_point": grid_point}
        for stage, ((method, task), key) in enumerate(zip(stages, keys, strict=True), start=1)
    ]


def ev(trial_id: str, stage: int, task: str, value: float, groups: dict[str, float] | None = None,
       metric: str = "accuracy") -> list[dict]:
    """`evals` rows of one (trial, stage, task, metric): group "all" and the primary groups."""
    rows = [("all", "all", value)] + [(g, "group", v) for g, v in (groups or {}).items()]
    return [
        {"trial_id": trial_id, "stage": stage, "eval_task": task, "metric": metric, "group": group,
         "grouping": grouping, "n": 100, "correct": round(100 * v),
         "accuracy": None if metric.startswith("bias") else v, "value": v}
        for group, grouping, v in rows
    ]


SFT_TQA_ARC = [("sft", "toxigen_qa"), ("sft", "arc_easy")]
SFT_ARC_TQA = [("sft", "arc_easy"), ("sft", "toxigen_qa")]


# ------------------------------------------------------------------ results for Tables 1 and 2


def ordering_results() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Five chains, no grid:
    tqa_arc  SFT tqa → SFT arc, seeds 0 (a0) and 1 (a1)
    arc_tqa  SFT arc → SFT tqa, seed 0 (c0)
    dpo_arc  DPO tqa → SFT arc, seed 0 (d0)
    bbq_arc  SFT bbq → SFT arc, seed 0 (e0)
    three    SFT tqa → SFT arc → SFT mmlu, seed 0 (f0): three stages, in neither table
    """
    trials = (
        trials_of("a0", "tqa_arc", 0, SFT_TQA_ARC) + trials_of("a1", "tqa_arc", 1, SFT_TQA_ARC)
        + trials_of("c0", "arc_tqa", 0, SFT_ARC_TQA)
        + trials_of("d0", "dpo_arc", 0, [("dpo", "toxigen_qa"), ("sft", "arc_easy")])
        + trials_of("e0", "bbq_arc", 0, [("sft", "bbq"), ("sft", "arc_easy")])
        + trials_of("f0", "three", 0, [*SFT_TQA_ARC, ("sft", "mmlu")])
    )
    evals = (
        # a0/a1: tqa  stage 1 all .80/.90 (g1, g2 the same); stage 2 all .70/.80, g1 .50/.85, g2 .80/.60
        ev("a0", 1, "toxigen_qa", 0.80, {"g1": 0.80, "g2": 0.80}) + ev("a0", 1, "arc_easy", 0.40)
        + ev("a0", 2, "toxigen_qa", 0.70, {"g1": 0.50, "g2": 0.80}) + ev("a0", 2, "arc_easy", 0.60)
        + ev("a1", 1, "toxigen_qa", 0.90, {"g1": 0.90, "g2": 0.90}) + ev("a1", 1, "arc_easy", 0.50)
        + ev("a1", 2, "toxigen_qa", 0.80, {"g1": 0.85, "g2": 0.60}) + ev("a1", 2, "arc_easy", 0.70)
        # c0: arc .60 after stage 1, .58 after stage 2; tqa .88 after stage 2
        + ev("c0", 1, "arc_easy", 0.60) + ev("c0", 1, "toxigen_qa", 0.55, {"g1": 0.5, "g2": 0.6})
        + ev("c0", 2, "arc_easy", 0.58) + ev("c0", 2, "toxigen_qa", 0.88, {"g1": 0.9, "g2": 0.86})
        # d0: tqa .90 (groups .90) → .86 (g1 .80, g2 .88); arc .62 after stage 2
        + ev("d0", 1, "toxigen_qa", 0.90, {"g1": 0.90, "g2": 0.90}) + ev("d0", 1, "arc_easy", 0.40)
        + ev("d0", 2, "toxigen_qa", 0.86, {"g1": 0.80, "g2": 0.88}) + ev("d0", 2, "arc_easy", 0.62)
        # e0: bbq .55 → .50; arc .61 after stage 2
        + ev("e0", 1, "bbq", 0.55) + ev("e0", 1, "arc_easy", 0.40)
        + ev("e0", 2, "bbq", 0.50) + ev("e0", 2, "arc_easy", 0.61)
        + ev("f0", 1, "toxigen_qa", 0.80) + ev("f0", 2, "toxigen_qa", 0.70) + ev("f0", 3, "toxigen_qa", 0.60)
        + ev("f0", 3, "arc_easy", 0.5) + ev("f0", 3, "mmlu", 0.3)
    )
    return pl.DataFrame(trials), pl.DataFrame(evals)


def test_ordering_table_is_table_1():
    trials, evals = ordering_results()
    expected = pl.DataFrame(
        {
            "order": ["ARC → ToxiGenQA", "ToxiGenQA → ARC", "BBQ → ARC"],
            "pair": ["ARC / ToxiGenQA", "ARC / ToxiGenQA", "ARC / BBQ"],
            "chain": ["arc_tqa", "tqa_arc", "bbq_arc"],
            "grid_point": [NO_GRID] * 3,
            "n_seeds": [1, 2, 1],
            # final-stage accuracies: c0 arc .58, tqa .88; tqa_arc arc (.60+.70)/2 = .65,
            # tqa (.70+.80)/2 = .75; e0 arc .61 (no tqa), bbq .50
            "Acc_ARC": [0.58, 0.65, 0.61],
            "Acc_ToxiGenQA": [0.88, 0.75, None],
            "Acc_BBQ": [None, None, 0.50],
            # forgetting of the first task only: arc .60 − .58 = .02; tqa (.85 − .75) = .10; bbq .55 − .50 = .05
            "Forgetting_ARC": [0.02, None, None],
            "Forgetting_ToxiGenQA": [None, 0.10, None],
            "Forgetting_BBQ": [None, None, 0.05],
        },
        schema_overrides={"n_seeds": pl.Int64},
    )
    assert_frame_equal(ordering_table(trials, evals), expected, check_exact=False, abs_tol=1e-12)


def test_first_stage_method_table_is_table_2():
    trials, evals = ordering_results()
    expected = pl.DataFrame(
        {
            "first_stage_method": ["SFT", "DPO"],
            "model": ["SFT ToxiGenQA → SFT ARC", "DPO ToxiGenQA → SFT ARC"],
            "chain": ["tqa_arc", "dpo_arc"],
            "grid_point": [NO_GRID] * 2,
            "n_seeds": [2, 1],
            # SFT: seed means tqa all .85 → .75: .10; g1 .85 → (.50+.85)/2 = .675: .175;
            #      g2 .85 → (.80+.60)/2 = .70: .15. WG = .175 (g1); biased = .175 − .10 = .075
            # DPO: all .90 → .86: .04; g1 .90 → .80: .10; g2 .90 → .88: .02. WG .10 (g1); biased .06
            "Forgetting": [0.10, 0.04],
            "WG_Forgetting": [0.175, 0.10],
            "worst_group": ["g1", "g1"],
            "BiasedForgetting": [0.075, 0.06],
        },
        schema_overrides={"n_seeds": pl.Int64},
    )
    # bbq_arc has a single first-stage method for (bbq, SFT arc): no rows; "three" has 3 stages.
    assert_frame_equal(first_stage_method_table(trials, evals), expected, check_exact=False, abs_tol=1e-12)


def test_table_1_and_2_only_where_they_apply():
    trials, evals = ordering_results()
    assert applicable_tables(trials, evals) == ["ordering", "first_stage_method", "benchmarks"]
    assert hyperparameter_table(trials, evals).is_empty()  # no grid
    # Without the DPO chain there is one first-stage method: Table 2 no longer applies.
    keep = pl.col("trial_id") != "d0"
    assert first_stage_method_table(trials.filter(keep), evals.filter(keep)).is_empty()
    assert "first_stage_method" not in applicable_tables(trials.filter(keep), evals.filter(keep))


# ------------------------------------------------------------------ reward models

OA = "OpenAssistant/reward-model-deberta-v3-large-v2"


def online_rl_results() -> tuple[pl.DataFrame, pl.DataFrame]:
    """ordering_results plus two online-RL first stages, recorded as a run records them
    (trials.method_settings): ppo_arc with the paper's reward model (seeds 0 and 1, p0 and p1),
    rloo_arc with one trained in the study on ToxiGen statements (r0)."""
    trials, evals = ordering_results()
    rl = {"ppo": {"kl_coef": 0.05, "reward": {"model": OA, "input": 2}},
          "rloo": {"kl_coef": 0.05, "reward": {"train": {"steps": 100, "learning_rate": 0.003, "batch_size": 16,
                                                         "data": "toxigen_statements"}, "input": 2}}}
    rows = []
    for trial_id, chain, seed, method in (("p0", "ppo_arc", 0, "ppo"), ("p1", "ppo_arc", 1, "ppo"),
                                          ("r0", "rloo_arc", 0, "rloo")):
        for row in trials_of(trial_id, chain, seed, [(method, "toxigen_qa"), ("sft", "arc_easy")]):
            rows.append({**row, "method_settings": json.dumps(rl[method] if row["stage"] == 1 else {})})
        evals = pl.concat([evals, pl.DataFrame(
            ev(trial_id, 1, "toxigen_qa", 0.80, {"g1": 0.8, "g2": 0.8}) + ev(trial_id, 1, "arc_easy", 0.4)
            + ev(trial_id, 2, "toxigen_qa", 0.60, {"g1": 0.5, "g2": 0.7}) + ev(trial_id, 2, "arc_easy", 0.6))])
    trials = pl.concat([trials.with_columns(method_settings=pl.lit("{}")), pl.DataFrame(rows)], how="diagonal")
    return trials, evals


def test_reward_model_label_reads_the_recorded_reward():
    assert reward_model_label(json.dumps({"reward": {"model": OA, "input": 2}})) == OA
    statements = {"reward": {"train": {"steps": 1, "data": "toxigen_statements"}}}
    assert reward_model_label(json.dumps(statements)).startswith("trained here on ToxiGen statements")
    # Recorded before the data kind was: the task's QA pairs, all it could have been then.
    assert reward_model_label(json.dumps({"reward": {"train": {"steps": 1}}})) == (
        "trained here on the task's QA preference pairs")
    assert reward_model_label('{"beta": 0.1}') is None and reward_model_label(None) is None


def test_reward_models_one_row_per_setting_and_online_rl_stage():
    trials, _ = online_rl_results()
    table = reward_models(trials)
    assert table.select("chain", "stage", "method").rows() == [("ppo_arc", 1, "ppo"), ("rloo_arc", 1, "rloo")]
    assert table["reward_model"][0] == OA  # both seeds' records agree
    assert table["reward_model"][1].startswith("trained here on ToxiGen statements")
    assert reward_models(trials.drop("method_settings")).is_empty()  # results without the column
    assert reward_models(trials.filter(pl.col("method") == "sft")).is_empty()


# ------------------------------------------------------------------ results for Tables 4, 5, 9


def grid_results(extra_axis: bool = False) -> tuple[pl.DataFrame, pl.DataFrame]:
    """tqa_arc and arc_tqa, grid stage2.learning_rate ∈ {1e-5, 2e-5}; stage 1 is shared by the two
    grid points of a chain and seed (same stage key and stage-1 evals). tqa_arc has seeds 0, 1.
    extra_axis adds stage1.batch_size = 16 at every point (a key that does not vary)."""
    trials, evals = [], []
    tqa_final = {  # (lr, seed) → (tqa all, g1, g2, arc) after stage 2
        (1e-5, 0): (0.70, 0.60, 0.80, 0.60), (1e-5, 1): (0.80, 0.70, 0.90, 0.70),
        (2e-5, 0): (0.50, 0.20, 0.60, 0.66), (2e-5, 1): (0.60, 0.40, 0.50, 0.70),
    }
    for lr in (1e-5, 2e-5):
        point = {"stage2.learning_rate": lr} | ({"stage1.batch_size": 16} if extra_axis else {})
        grid = json.dumps(point, sort_keys=True)
        for seed in (0, 1):
            tid = f"t{seed}-{lr}"
            trials += trials_of(tid, "tqa_arc", seed, SFT_TQA_ARC, grid_point=grid,
                                keys=[f"tqa-{seed}", f"tqa-{seed}-arc-{lr}"])
            all_, g1, g2, arc = tqa_final[(lr, seed)]
            evals += (ev(tid, 1, "toxigen_qa", 0.90, {"g1": 0.90, "g2": 0.90}) + ev(tid, 1, "arc_easy", 0.40)
                      + ev(tid, 2, "toxigen_qa", all_, {"g1": g1, "g2": g2}) + ev(tid, 2, "arc_easy", arc))
        tid = f"c0-{lr}"
        trials += trials_of(tid, "arc_tqa", 0, SFT_ARC_TQA, grid_point=grid, keys=["arc-0", f"arc-0-tqa-{lr}"])
        evals += (ev(tid, 1, "arc_easy", 0.60) + ev(tid, 2, "arc_easy", {1e-5: 0.59, 2e-5: 0.50}[lr])
                  + ev(tid, 2, "toxigen_qa", {1e-5: 0.85, 2e-5: 0.87}[lr]))
    return pl.DataFrame(trials), pl.DataFrame(evals)


def test_hyperparameter_table_is_tables_4_5():
    trials, evals = grid_results()
    assert varying_axes(trials) == ["stage2.learning_rate"]
    expected = pl.DataFrame(
        {
            "order": ["ARC → ToxiGenQA"] * 2 + ["ToxiGenQA → ARC"] * 2,
            "chain": ["arc_tqa"] * 2 + ["tqa_arc"] * 2,
            "grid_point": [json.dumps({"stage2.learning_rate": lr}) for lr in (1e-5, 2e-5, 1e-5, 2e-5)],
            "axis": ["stage2.learning_rate"] * 4,
            "value": [1e-5, 2e-5, 1e-5, 2e-5],
            "hyperparameter": ["lr=1e-5", "lr=2e-5", "lr=1e-5", "lr=2e-5"],
            "n_seeds": [1, 1, 2, 2],
            # arc_tqa: arc .59 / .50, tqa .85 / .87; tqa_arc lr 1e-5: arc (.60+.70)/2 = .65,
            # tqa (.70+.80)/2 = .75; lr 2e-5: arc (.66+.70)/2 = .68, tqa (.50+.60)/2 = .55
            "Acc_ARC": [0.59, 0.50, 0.65, 0.68],
            "Acc_ToxiGenQA": [0.85, 0.87, 0.75, 0.55],
            # arc_tqa: .60 − .59 = .01, .60 − .50 = .10 (ARC has no groups: WG null)
            # tqa_arc lr 1e-5: .90 − .75 = .15; g1 .90 − .65 = .25, g2 .90 − .85 = .05 → WG .25 (g1)
            # tqa_arc lr 2e-5: .90 − .55 = .35; g1 .90 − .30 = .60, g2 .90 − .55 = .35 → WG .60 (g1)
            "Forgetting": [0.01, 0.10, 0.15, 0.35],
            "WG_Forgetting": [None, None, 0.25, 0.60],
            "worst_group": [None, None, "g1", "g1"],
        },
        schema_overrides={"n_seeds": pl.Int64},
    )
    assert_frame_equal(hyperparameter_table(trials, evals), expected, check_exact=False, abs_tol=1e-12)
    # A varying grid is not Table 1; there is one first-stage method: no Table 2.
    assert applicable_tables(trials, evals) == ["hyperparameter", "benchmarks"]


def test_hyperparameter_axis_detection_ignores_fixed_keys_and_needs_a_single_axis():
    trials, evals = grid_results(extra_axis=True)
    # stage1.batch_size is 16 everywhere: the one varying axis is still the stage-2 rate.
    table = hyperparameter_table(trials, evals)
    assert table["axis"].unique().to_list() == ["stage2.learning_rate"]
    assert table["Forgetting"].to_list() == pytest.approx([0.01, 0.10, 0.15, 0.35])
    # Two varying axes (batch size 8 at the 2e-5 points): no table unless one is named.
    two = trials.with_columns(pl.col("grid_point").str.replace(
        '"stage1.batch_size": 16, "stage2.learning_rate": 2e-05',
        '"stage1.batch_size": 8, "stage2.learning_rate": 2e-05', literal=True))
    assert varying_axes(two) == ["stage1.batch_size", "stage2.learning_rate"]
    assert hyperparameter_table(two, evals).is_empty()
    assert "hyperparameter" not in applicable_tables(two, evals)
    named = hyperparameter_table(two, evals, axis="stage1.batch_size")
    # batch size 8 is the 2e-5 point: rows ordered by value put it first within each chain
    assert named.select("chain", "hyperparameter").rows() == [
        ("arc_tqa", "bs=8"), ("arc_tqa", "bs=16"), ("tqa_arc", "bs=8"), ("tqa_arc", "bs=16")]
    assert named["Forgetting"].to_list() == pytest.approx([0.10, 0.01, 0.35, 0.15])


# ------------------------------------------------------------------ results for Tables 6–10


def benchmark_results(with_keys: bool = True) -> tuple[pl.DataFrame, pl.DataFrame]:
    """tqa_arc (SFT tqa → SFT arc) and tqa_mmlu (SFT tqa → SFT mmlu), seeds 0 and 1, sharing the
    stage-1 model of each seed (stage keys S1-0, S1-1). Every trial evaluates arc, mmlu, tqa
    (accuracy) and saferdialogues (safe) after stages 0, 1, 2, plus a BBQ bias score (not a column).

    values           arc   mmlu  tqa   safe
    stage 0 (all)    .40   .30   .50   .70
    stage 1 seed 0   .42   .30   .80   .60
    stage 1 seed 1   .44   .32   .90   .64
    tqa_arc  s2 s0   .60   .33   .70   .66
    tqa_arc  s2 s1   .70   .35   .80   .68
    tqa_mmlu s2 s0   .41   .50   .60   .62
    tqa_mmlu s2 s1   .45   .40   .80   .70
    """
    table = {
        (0, None, None): (0.40, 0.30, 0.50, 0.70),
        (1, None, 0): (0.42, 0.30, 0.80, 0.60), (1, None, 1): (0.44, 0.32, 0.90, 0.64),
        (2, "tqa_arc", 0): (0.60, 0.33, 0.70, 0.66), (2, "tqa_arc", 1): (0.70, 0.35, 0.80, 0.68),
        (2, "tqa_mmlu", 0): (0.41, 0.50, 0.60, 0.62), (2, "tqa_mmlu", 1): (0.45, 0.40, 0.80, 0.70),
    }
    trials, evals = [], []
    for chain, second in (("tqa_arc", "arc_easy"), ("tqa_mmlu", "mmlu")):
        for seed in (0, 1):
            tid = f"{chain}-{seed}"
            trials += trials_of(tid, chain, seed, [("sft", "toxigen_qa"), ("sft", second)],
                                keys=[f"S1-{seed}", f"{chain}-{seed}"])
            for stage in (0, 1, 2):
                key = (0, None, None) if stage == 0 else (1, None, seed) if stage == 1 else (2, chain, seed)
                arc, mmlu, tqa, safe = table[key]
                evals += (ev(tid, stage, "arc_easy", arc) + ev(tid, stage, "mmlu", mmlu)
                          + ev(tid, stage, "toxigen_qa", tqa, {"g1": 0.1}) + ev(tid, stage, "saferdialogues", safe, metric="safe")
                          + ev(tid, stage, "bbq", -0.2, metric="bias_score_ambig"))
    frame = pl.DataFrame(trials)
    if not with_keys:
        frame = frame.drop("stage_key")
    return frame, pl.DataFrame(evals)


def test_benchmark_table_is_tables_6_to_10():
    trials, evals = benchmark_results()
    expected = pl.DataFrame(
        {
            "model": ["Base model (tiny)", "SFT ToxiGenQA", "SFT ToxiGenQA → SFT ARC", "SFT ToxiGenQA → SFT MMLU"],
            "stage": [0, 1, 2, 2],
            # the base and stage-1 models are shared by both chains: one row each, read from tqa_arc
            "chain": ["tqa_arc", "tqa_arc", "tqa_arc", "tqa_mmlu"],
            "grid_point": [NO_GRID] * 4,
            "grid": [""] * 4,
            "n_settings": [2, 2, 1, 1],
            "n_seeds": [2, 2, 2, 2],
            # stage 1: (.42+.44)/2 = .43, (.30+.32)/2 = .31, (.80+.90)/2 = .85, (.60+.64)/2 = .62
            # tqa_arc:  (.60+.70)/2 = .65, (.33+.35)/2 = .34, (.70+.80)/2 = .75, (.66+.68)/2 = .67
            # tqa_mmlu: (.41+.45)/2 = .43, (.50+.40)/2 = .45, (.60+.80)/2 = .70, (.62+.70)/2 = .66
            "Acc_ARC": [0.40, 0.43, 0.65, 0.43],
            "Acc_MMLU": [0.30, 0.31, 0.34, 0.45],
            "Acc_ToxiGenQA": [0.50, 0.85, 0.75, 0.70],
            "Safe_SaFeRDialogues": [0.70, 0.62, 0.67, 0.66],
        },
        schema_overrides={"stage": pl.Int64, "n_settings": pl.Int64, "n_seeds": pl.Int64},
    )
    assert_frame_equal(benchmark_table(trials, evals), expected, check_exact=False, abs_tol=1e-12)
    # Two all-SFT two-stage chains without a grid: Table 1 applies too (one method: no Table 2).
    assert applicable_tables(trials, evals) == ["ordering", "benchmarks"]


def test_benchmark_table_without_stage_keys_keeps_each_settings_stage_1():
    trials, evals = benchmark_results(with_keys=False)
    table = benchmark_table(trials, evals)
    assert table["model"].to_list() == [
        "Base model (tiny)", "SFT ToxiGenQA", "SFT ToxiGenQA", "SFT ToxiGenQA → SFT ARC", "SFT ToxiGenQA → SFT MMLU"]
    assert table["chain"].to_list() == ["tqa_arc", "tqa_arc", "tqa_mmlu", "tqa_arc", "tqa_mmlu"]
    assert table["Acc_ToxiGenQA"].to_list()[1:3] == pytest.approx([0.85, 0.85])


def test_benchmark_rows_of_a_grid_follow_the_grid_value():
    trials, evals = grid_results()
    table = benchmark_table(trials, evals)
    # Stage-1 models are shared by the two stage-2 rates: one row per chain (n_settings 2).
    assert table.select("model", "stage", "n_settings").rows() == [
        ("SFT ARC", 1, 2), ("SFT ToxiGenQA", 1, 2),
        ("SFT ARC → SFT ToxiGenQA", 2, 1), ("SFT ARC → SFT ToxiGenQA", 2, 1),
        ("SFT ToxiGenQA → SFT ARC", 2, 1), ("SFT ToxiGenQA → SFT ARC", 2, 1),
    ]
    assert table["stage2.learning_rate"].to_list() == [1e-5, 1e-5, 1e-5, 2e-5, 1e-5, 2e-5]
    # tqa_arc after stage 2 at lr 2e-5: tqa (.50+.60)/2 = .55
    assert table["Acc_ToxiGenQA"][5] == pytest.approx(0.55)
    assert table["grid"][5] == "stage2.learning_rate=2e-05"


def test_empty_results_give_no_tables():
    trials, evals = benchmark_results()
    none = evals.clear()
    assert paper_tables(trials, none) == {}
    assert ordering_table(trials, none).is_empty() and benchmark_table(trials, none).is_empty()


def test_labels():
    assert task_label("arc_easy") == "ARC" and task_label("toxigen_qa") == "ToxiGenQA"
    assert task_label("arc_challenge") == "ARC-c" and task_label("demo_quiz") == "demo_quiz"
    assert model_label(["sft", "sft"], ["toxigen_qa", "arc_easy"]) == "SFT ToxiGenQA → SFT ARC"
    assert model_label(["ppo", None], ["toxigen_qa", "arc_easy"]) == "PPO ToxiGenQA → SFT ARC"
    assert order_label(["sft", "sft"], ["arc_easy", "bbq"]) == "ARC → BBQ"
    assert order_label(["dpo", "sft"], ["toxigen_qa", "arc_easy"]) == "DPO ToxiGenQA → SFT ARC"
    assert hyperparameter_label("stage1.learning_rate", 5e-6) == "lr=5e-6"
    assert hyperparameter_label("stage2.learning_rate", 1.5e-5) == "lr=1.5e-5"
    assert hyperparameter_label("stage1.batch_size", 32.0) == "bs=32"


def test_single_stage_chain_is_a_benchmark_row_only():
    """Table 10's 'SFT BBQ': a one-stage chain is its own stage-1 (and final) model, and has no
    forgetting, so it is in no other table. Its base model evaluated BBQ only, so the shared
    base row is read from a setting with all four tasks (the most numbers)."""
    trials, evals = benchmark_results()
    trials = pl.concat([trials, pl.DataFrame(trials_of("b0", "bbq", 0, [("sft", "bbq")]))], how="diagonal")
    evals = pl.concat([evals, pl.DataFrame(ev("b0", 0, "bbq", 0.30) + ev("b0", 1, "bbq", 0.50))])
    table = benchmark_table(trials, evals)
    assert table.select("model", "stage", "chain", "n_settings").rows()[:2] == [
        ("Base model (tiny)", 0, "tqa_arc", 3), ("SFT BBQ", 1, "bbq", 1)]
    assert table["Acc_BBQ"].to_list()[1] == pytest.approx(0.50)
    assert "bbq" not in ordering_table(trials, evals)["chain"].to_list()
