"""Forgetting, WG and biased forgetting, seed averaging and accuracy from predictions.

Every results folder here is written by hand as real Parquet files in the contract's layout,
and the expected numbers are worked out in each test's docstring. Accuracies are fractions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from analysis import (
    expand_grid_point,
    accuracy_from_predictions,
    forgetting_by_trial,
    forgetting_curve,
    forgetting_summary,
    generation_tasks,
    group_forgetting,
    load_results,
    primary_metrics,
    stage_accuracy,
)

GRID_HIGH_LR = json.dumps({"stage1.learning_rate": 0.001})
GRID_LOW_LR = json.dumps({"stage1.learning_rate": 1e-05})


# ---------------------------------------------------------------- builders of hand-made results


def trial_rows(trial_id: str, chain: str, seed: int, tasks: list[str], grid_point: str = "{}",
               lrs: list[float] | None = None) -> list[dict]:
    """The `trials` rows of one trial: one per stage, stage 1 first."""
    lrs = lrs or [1e-5] * len(tasks)
    return [
        {
            "trial_id": trial_id, "chain": chain, "seed": seed, "stage": stage, "method": "sft",
            "task": task, "learning_rate": lr, "batch_size": 16, "steps": 10, "train_size": 100,
            "stage_key": f"{trial_id}-{stage}", "model": "tiny", "grid_point": grid_point,
        }
        for stage, (task, lr) in enumerate(zip(tasks, lrs, strict=True), start=1)
    ]


def eval_rows(trial_id: str, stage: int, eval_task: str, accuracies: dict[str, float],
              n: int = 20) -> list[dict]:
    """The `evals` rows of one (trial, stage, task): group -> accuracy, n examples per group."""
    return [
        {
            "trial_id": trial_id, "stage": stage, "eval_task": eval_task, "metric": "accuracy",
            "group": group, "n": n, "correct": round(accuracy * n), "accuracy": accuracy,
        }
        for group, accuracy in accuracies.items()
    ]


def write_table(results_dir: Path, table: str, rows: list[dict], *, parts: int = 1) -> None:
    """Write `rows` as `parts` Parquet files in results_dir/table/, as several trials would."""
    folder = results_dir / table
    folder.mkdir(parents=True, exist_ok=True)
    frame = pl.DataFrame(rows, infer_schema_length=None)
    size = -(-frame.height // parts)
    for index in range(parts):
        frame.slice(index * size, size).write_parquet(folder / f"part-{index}.parquet")


def two_seed_rows() -> tuple[list[dict], list[dict]]:
    """Chain tqa_arc (toxigen_qa → arc), grid stage1.learning_rate=0.001, seeds 0 and 1.

    toxigen_qa accuracy          stage 1 (θ_A)            stage 2 (θ_AB)
                              all   muslim  women       all   muslim  women
    seed 0 (t0)               0.80  0.80    0.80        0.70  0.50    0.80
    seed 1 (t1)               0.90  0.90    0.90        0.80  0.85    0.60
    seed mean                 0.85  0.85    0.85        0.75  0.675   0.70
    arc accuracy after stage 2: 0.60 (t0), 0.70 (t1) → mean 0.65.
    Stage 0 (base) rows and arc at stage 1 exist but must not matter.
    """
    trials = trial_rows("t0", "tqa_arc", 0, ["toxigen_qa", "arc"], GRID_HIGH_LR, [1e-3, 1e-5])
    trials += trial_rows("t1", "tqa_arc", 1, ["toxigen_qa", "arc"], GRID_HIGH_LR, [1e-3, 1e-5])
    evals = []
    for trial, first, second, arc in [
        ("t0", (0.80, 0.80, 0.80), (0.70, 0.50, 0.80), 0.60),
        ("t1", (0.90, 0.90, 0.90), (0.80, 0.85, 0.60), 0.70),
    ]:
        evals += eval_rows(trial, 0, "toxigen_qa", {"all": 0.5, "muslim": 0.5, "women": 0.5})
        evals += eval_rows(trial, 1, "toxigen_qa", dict(zip(["all", "muslim", "women"], first)))
        evals += eval_rows(trial, 2, "toxigen_qa", dict(zip(["all", "muslim", "women"], second)))
        evals += eval_rows(trial, 1, "arc", {"all": 0.3})
        evals += eval_rows(trial, 2, "arc", {"all": arc})
    return trials, evals


@pytest.fixture
def two_seeds(tmp_path: Path):
    trials, evals = two_seed_rows()
    write_table(tmp_path, "trials", trials, parts=2)
    write_table(tmp_path, "evals", evals, parts=3)
    return load_results(tmp_path)


# ---------------------------------------------------------------- loading


def test_load_results_reads_every_part_and_marks_absent_tables(two_seeds):
    """trials is split over 2 files and evals over 3: all rows come back; predictions,
    train_log, curvature and weights were never written, so they are None."""
    assert two_seeds.trials.collect().height == 4
    assert two_seeds.evals.collect().height == 2 * (3 + 3 + 3 + 1 + 1)
    assert two_seeds.predictions is None and two_seeds.train_log is None
    assert two_seeds.curvature is None and two_seeds.weights is None and two_seeds.replay is None


def test_load_results_reads_the_replay_table_of_the_latest_run(tmp_path: Path):
    """Every table the engine writes is read, the replay table too (which examples each
    replaying stage mixed in), filtered like the others to the latest run's trials."""
    import json

    trials, evals = two_seed_rows()
    write_table(tmp_path, "trials", trials)
    write_table(tmp_path, "evals", evals)
    write_table(tmp_path, "replay", [
        {"trial_id": trial, "stage": 2, "from_stage": 1, "example_id": f"toxigen_qa/{i}"}
        for trial in ("t0", "t1") for i in range(3)])
    (tmp_path / "plans.json").write_text(json.dumps([{"trial_id": "t1"}]))
    replay = load_results(tmp_path).replay.collect()
    assert replay.height == 3 and set(replay["trial_id"]) == {"t1"}
    assert load_results(tmp_path, all_trials=True).replay.collect().height == 6


def test_load_results_keeps_only_the_latest_runs_trials(tmp_path: Path):
    """plans.json of the latest run names only t1: t0 (left by an earlier run with other
    settings) stays on disk but is left out, so the setting has 1 seed, forgetting 0.90 − 0.80."""
    import json

    trials, evals = two_seed_rows()
    write_table(tmp_path, "trials", trials)
    write_table(tmp_path, "evals", evals)
    (tmp_path / "plans.json").write_text(json.dumps([{"trial_id": "t1"}]))
    latest = load_results(tmp_path)
    assert set(latest.evals.collect()["trial_id"]) == {"t1"}
    summary = forgetting_summary(latest.trials, latest.evals).row(0, named=True)
    assert summary["n_seeds"] == 1 and summary["forgetting"] == pytest.approx(0.10)
    assert summary["acc_first_task_after_first_stage"] == pytest.approx(0.90)
    everything = load_results(tmp_path, all_trials=True)
    assert forgetting_summary(everything.trials, everything.evals)["n_seeds"].to_list() == [2]


def test_load_results_without_evals_names_the_path(tmp_path: Path):
    write_table(tmp_path, "trials", trial_rows("t0", "tqa_arc", 0, ["toxigen_qa", "arc"]))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "evals")):
        load_results(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_results(tmp_path / "nowhere")


def test_load_results_stacks_files_with_different_columns(tmp_path: Path):
    """An older evals file lacks `metric` and stores stage as i32; a newer one has an extra
    column. Both are read, stacked by name (missing values null) and still analysed:
    forgetting = 0.9 − 0.7 = 0.2."""
    write_table(tmp_path, "trials", trial_rows("t", "tqa_arc", 0, ["toxigen_qa", "arc"]))
    (tmp_path / "evals").mkdir()
    old = pl.DataFrame(eval_rows("t", 1, "toxigen_qa", {"all": 0.9})).drop("metric")
    old.with_columns(pl.col("stage").cast(pl.Int32)).write_parquet(tmp_path / "evals" / "a.parquet")
    new = pl.DataFrame(eval_rows("t", 2, "toxigen_qa", {"all": 0.7})).with_columns(seconds=pl.lit(1.5))
    new.write_parquet(tmp_path / "evals" / "b.parquet")
    results = load_results(tmp_path)
    assert results.evals.collect().height == 2
    # The old row's metric is null once stacked: it is read as accuracy.
    rows = forgetting_by_trial(results.trials, results.evals)
    assert rows.get_column("forgetting").to_list() == [pytest.approx(0.2)]


def test_stage_accuracy_keeps_one_metric(two_seeds):
    """A second metric (safe_pct) in evals is filtered out by metric="accuracy"."""
    extra = pl.DataFrame(eval_rows("t0", 2, "toxigen_qa", {"all": 0.99})).with_columns(
        metric=pl.lit("safe_pct")
    )
    evals = pl.concat([two_seeds.evals.collect(), extra])
    assert stage_accuracy(evals).height == 22
    assert stage_accuracy(evals, metric="safe_pct").get_column("accuracy").to_list() == [0.99]


def test_expand_grid_point_with_differing_keys():
    """Keys are the union over grid points (sorted), absent keys null, '{}' and null all null,
    nested values kept as JSON text; the columns come right after grid_point."""
    frame = pl.DataFrame({
        "chain": ["a", "b", "c", "d"],
        "grid_point": ['{"stage1.learning_rate": 0.001}', '{"stage2.batch_size": 8}', "{}", None],
        "value": [1, 2, 3, 4],
    })
    expected = frame.with_columns(
        pl.Series("stage1.learning_rate", [0.001, None, None, None]),
        pl.Series("stage2.batch_size", [None, 8, None, None]),
    ).select("chain", "grid_point", "stage1.learning_rate", "stage2.batch_size", "value")
    assert_frame_equal(expand_grid_point(frame), expected)
    nested = expand_grid_point(pl.DataFrame({"grid_point": ['{"lrs": [1, 2]}']}))
    assert nested.get_column("lrs").to_list() == ["[1, 2]"]


# ---------------------------------------------------------------- per trial


def test_forgetting_by_trial_per_group_and_biased(two_seeds):
    """Per trial at stage 2 (forgetting = stage-1 acc − stage-2 acc; biased = group − all):
    t0: all 0.80−0.70 = 0.10; muslim 0.80−0.50 = 0.30 (biased 0.20); women 0.00 (−0.10).
    t1: all 0.90−0.80 = 0.10; muslim 0.90−0.85 = 0.05 (−0.05); women 0.30 (0.20)."""
    rows = forgetting_by_trial(two_seeds.trials, two_seeds.evals)
    expected = pl.DataFrame({
        "trial_id": ["t0"] * 3 + ["t1"] * 3,
        "group": ["all", "muslim", "women"] * 2,
        "forgetting": [0.10, 0.30, 0.00, 0.10, 0.05, 0.30],
        "biased_forgetting": [0.0, 0.20, -0.10, 0.0, -0.05, 0.20],
    })
    assert_frame_equal(rows.select(expected.columns), expected)
    assert set(rows.get_column("after_stage")) == {2}
    assert rows.get_column("stage_task").unique().to_list() == ["arc"]
    assert rows.get_column("stage1.learning_rate").unique().to_list() == [0.001]


# ---------------------------------------------------------------- per setting, seed-averaged


def test_forgetting_summary_two_seeds(two_seeds):
    """Seed means (see two_seed_rows): stage 1 all/muslim/women 0.85; stage 2 all 0.75,
    muslim 0.675, women 0.70. Forgetting = 0.85 − 0.75 = 0.10; muslim 0.175; women 0.15.
    WG = max(0.175, 0.15) = 0.175 (muslim); max biased = 0.175 − 0.10 = 0.075.
    (The mean of per-seed WG would be (0.30 + 0.30)/2 = 0.30: not what is reported.)
    Acc_A(θ_A) 0.85, Acc_A(θ_AB) 0.75, Acc_B(θ_AB) = mean(0.60, 0.70) = 0.65."""
    summary = forgetting_summary(two_seeds.trials, two_seeds.evals)
    expected = pl.DataFrame({
        "chain": ["tqa_arc"],
        "grid_point": [GRID_HIGH_LR],
        "stage1.learning_rate": [0.001],
        "chain_stages": ["sft:toxigen_qa → sft:arc"],
        "first_task": ["toxigen_qa"],
        "final_task": ["arc"],
        "final_stage": [2],
        "first_learning_rate": [0.001],
        "n_seeds": [2],
        "acc_first_task_after_first_stage": [0.85],
        "acc_first_task_after_final": [0.75],
        "acc_final_task_after_final": [0.65],
        "forgetting": [0.10],
        "wg_forgetting": [0.175],
        "worst_group": ["muslim"],
        "max_biased_forgetting": [0.075],
    })
    assert_frame_equal(summary, expected)


def test_group_forgetting_two_seeds(two_seeds):
    """Per group at the final stage: muslim 0.175 (biased 0.075, worst), women 0.15 (0.05)."""
    groups = group_forgetting(two_seeds.trials, two_seeds.evals)
    expected = pl.DataFrame({
        "group": ["muslim", "women"],
        "n_seeds": [2, 2],
        "acc_after_first_stage": [0.85, 0.85],
        "acc_after_stage": [0.675, 0.70],
        "forgetting": [0.175, 0.15],
        "overall_forgetting": [0.10, 0.10],
        "biased_forgetting": [0.075, 0.05],
        "is_worst_group": [True, False],
    })
    assert_frame_equal(groups.select(expected.columns), expected)


def test_settings_are_kept_apart_and_unfinished_seeds_left_out(tmp_path: Path):
    """Two grid points of tqa_arc plus an arc_tqa chain whose first task has no groups.

    lr 1e-3, seed 0: stage 1 all 0.80, stage 2 all 0.60 → forgetting 0.20.
             seed 1: stage 1 all 0.40 and no stage-2 eval (unfinished) → left out entirely,
             so Acc_A(θ_A) stays 0.80 (not mean(0.80, 0.40)) and n_seeds = 1.
    lr 1e-5, seed 0: 0.70 → 0.65 → forgetting 0.05.
    arc_tqa, seed 0: arc 0.50 → 0.52 → forgetting −0.02 (negative = improved); arc has no
             groups, so WG, worst group and max biased are null.
    """
    trials = trial_rows("a", "tqa_arc", 0, ["toxigen_qa", "arc"], GRID_HIGH_LR)
    trials += trial_rows("b", "tqa_arc", 1, ["toxigen_qa", "arc"], GRID_HIGH_LR)
    trials += trial_rows("c", "tqa_arc", 0, ["toxigen_qa", "arc"], GRID_LOW_LR)
    trials += trial_rows("d", "arc_tqa", 0, ["arc", "toxigen_qa"], "{}")
    evals = (
        eval_rows("a", 1, "toxigen_qa", {"all": 0.80}) + eval_rows("a", 2, "toxigen_qa", {"all": 0.60})
        + eval_rows("b", 1, "toxigen_qa", {"all": 0.40})
        + eval_rows("c", 1, "toxigen_qa", {"all": 0.70}) + eval_rows("c", 2, "toxigen_qa", {"all": 0.65})
        + eval_rows("d", 1, "arc", {"all": 0.50}) + eval_rows("d", 2, "arc", {"all": 0.52})
    )
    write_table(tmp_path, "trials", trials)
    write_table(tmp_path, "evals", evals)
    results = load_results(tmp_path)
    summary = forgetting_summary(results.trials, results.evals)
    expected = pl.DataFrame({
        "chain": ["arc_tqa", "tqa_arc", "tqa_arc"],
        "grid_point": ["{}", GRID_HIGH_LR, GRID_LOW_LR],
        "stage1.learning_rate": [None, 0.001, 1e-05],
        "n_seeds": [1, 1, 1],
        "acc_first_task_after_first_stage": [0.50, 0.80, 0.70],
        "forgetting": [-0.02, 0.20, 0.05],
        "wg_forgetting": [None, None, None],
        "worst_group": [None, None, None],
    }, schema_overrides={"wg_forgetting": pl.Float64, "worst_group": pl.String})
    assert_frame_equal(summary.select(expected.columns), expected)
    # Acc_B(θ_AB) has no eval of the final task here: null, not an error.
    assert summary.get_column("acc_final_task_after_final").null_count() == 3


def test_worst_group_ties_go_to_first_name(tmp_path: Path):
    """women and jewish both lose 0.20 (0.9 → 0.7) while all loses 0.10: the worst group is
    'jewish' (alphabetically first), max biased 0.10."""
    write_table(tmp_path, "trials", trial_rows("t", "tqa_arc", 0, ["toxigen_qa", "arc"]))
    write_table(tmp_path, "evals",
                eval_rows("t", 1, "toxigen_qa", {"all": 0.9, "women": 0.9, "jewish": 0.9})
                + eval_rows("t", 2, "toxigen_qa", {"all": 0.8, "women": 0.7, "jewish": 0.7}))
    results = load_results(tmp_path)
    row = forgetting_summary(results.trials, results.evals).row(0, named=True)
    assert row["worst_group"] == "jewish"
    assert row["wg_forgetting"] == pytest.approx(0.20)
    assert row["max_biased_forgetting"] == pytest.approx(0.10)


# ---------------------------------------------------------------- curve on a 3-stage chain


def three_stage_rows() -> tuple[list[dict], list[dict]]:
    """Chain tqa_arc_bbq: toxigen_qa → arc → bbq, one seed, toxigen_qa accuracies:

                  all   muslim  women
    stage 1       0.90  0.90    0.80
    stage 2       0.80  0.60    0.80   → F 0.10, muslim 0.30, women 0.00: WG 0.30 muslim, biased 0.20
    stage 3       0.70  0.70    0.50   → F 0.20, muslim 0.20, women 0.30: WG 0.30 women,  biased 0.10
    bbq after stage 3: 0.55.
    """
    trials = trial_rows("t3", "tqa_arc_bbq", 0, ["toxigen_qa", "arc", "bbq"])
    evals = (
        eval_rows("t3", 1, "toxigen_qa", {"all": 0.90, "muslim": 0.90, "women": 0.80})
        + eval_rows("t3", 2, "toxigen_qa", {"all": 0.80, "muslim": 0.60, "women": 0.80})
        + eval_rows("t3", 3, "toxigen_qa", {"all": 0.70, "muslim": 0.70, "women": 0.50})
        + eval_rows("t3", 3, "bbq", {"all": 0.55})
    )
    return trials, evals


def test_forgetting_curve_three_stages(tmp_path: Path):
    """See three_stage_rows for the arithmetic; the summary is the curve's stage-3 row."""
    trials, evals = three_stage_rows()
    write_table(tmp_path, "trials", trials)
    write_table(tmp_path, "evals", evals)
    results = load_results(tmp_path)
    curve = forgetting_curve(results.trials, results.evals)
    expected = pl.DataFrame({
        "chain": ["tqa_arc_bbq"] * 2,
        "grid_point": ["{}"] * 2,
        "first_task": ["toxigen_qa"] * 2,
        "after_stage": [2, 3],
        "stage_task": ["arc", "bbq"],
        "is_final_stage": [False, True],
        "n_seeds": [1, 1],
        "acc_first_task_after_first_stage": [0.90, 0.90],
        "acc_first_task_after_stage": [0.80, 0.70],
        "forgetting": [0.10, 0.20],
        "wg_forgetting": [0.30, 0.30],
        "worst_group": ["muslim", "women"],
        "max_biased_forgetting": [0.20, 0.10],
    })
    assert_frame_equal(curve, expected)
    summary = forgetting_summary(results.trials, results.evals).row(0, named=True)
    assert summary["final_stage"] == 3 and summary["final_task"] == "bbq"
    assert summary["forgetting"] == pytest.approx(0.20)
    assert summary["worst_group"] == "women"
    assert summary["acc_final_task_after_final"] == pytest.approx(0.55)
    every_stage = group_forgetting(results.trials, results.evals, all_stages=True)
    assert every_stage.get_column("after_stage").to_list() == [2, 2, 3, 3]
    assert group_forgetting(results.trials, results.evals).get_column("after_stage").to_list() == [3, 3]


# ---------------------------------------------------------------- accuracy from predictions


def test_accuracy_from_predictions_counts_multi_group_examples_toward_each(tmp_path: Path):
    """Trial t, stage 1, toxigen_qa, five examples:
        e1 [muslim, women] correct    e2 [muslim] wrong    e3 [women] correct
        e4 []              correct    e5 [women, women] wrong (repeated name counts once)
    all: 3/5 = 0.6; muslim: e1, e2 → 1/2 = 0.5; women: e1, e3, e5 → 2/3.
    Stage 2 has one example e1 [muslim] wrong: all 0/1, muslim 0/1.
    The result equals the evals rows written for the same numbers."""
    predictions = [
        {"trial_id": "t", "stage": 1, "eval_task": "toxigen_qa", "example_id": eid, "groups": groups,
         "label": "toxic", "prediction": "toxic" if ok else "benign", "correct": ok, "margin": 0.1}
        for eid, groups, ok in [
            ("e1", ["muslim", "women"], True), ("e2", ["muslim"], False), ("e3", ["women"], True),
            ("e4", [], True), ("e5", ["women", "women"], False),
        ]
    ] + [{"trial_id": "t", "stage": 2, "eval_task": "toxigen_qa", "example_id": "e1",
          "groups": ["muslim"], "label": "toxic", "prediction": "benign", "correct": False,
          "margin": -0.2}]
    write_table(tmp_path, "predictions", predictions)
    write_table(tmp_path, "evals", [
        {"trial_id": "t", "stage": s, "eval_task": "toxigen_qa", "metric": "accuracy",
         "group": g, "n": n, "correct": c, "accuracy": c / n}
        for s, g, n, c in [(1, "all", 5, 3), (1, "muslim", 2, 1), (1, "women", 3, 2),
                           (2, "all", 1, 0), (2, "muslim", 1, 0)]
    ])
    results = load_results(tmp_path)
    rebuilt = accuracy_from_predictions(results.predictions)
    assert_frame_equal(rebuilt, stage_accuracy(results.evals))
    women = rebuilt.filter(pl.col("stage") == 1, pl.col("group") == "women").row(0, named=True)
    assert (women["n"], women["correct"], women["accuracy"]) == (3, 2, pytest.approx(2 / 3))


# ---------------------------------------------------------------- import hygiene


def test_import_analysis_loads_no_ml_framework():
    """In a fresh interpreter (other tests' imports cannot interfere), importing analysis and
    its report/figure machinery leaves torch, ray, transformers, trl, study and trainables
    out of sys.modules."""
    code = (
        "import sys\n"
        "import analysis, analysis.report, analysis.figures\n"
        "import matplotlib.backends.backend_agg, matplotlib.figure\n"
        "from analysis import load_results, forgetting_summary, group_forgetting, "
        "forgetting_curve, accuracy_from_predictions, write_report\n"
        "banned = ('torch', 'ray', 'transformers', 'trl', 'study', 'trainables')\n"
        "print([m for m in sys.modules if m.split('.')[0] in banned])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.stdout.strip() == "[]", result.stdout


# ---------------------------------------------------------------- headline metric per task


def generation_chain_rows() -> tuple[list[dict], list[dict]]:
    """Chain ppo_arc: PPO on toxigen_prompts (a generation task: safe, no accuracy), then ARC.

    toxigen_prompts safe      stage 1   stage 2        arc accuracy   stage 1   stage 2
      all                      0.80      0.60                          0.50      0.70
      asian                    0.90      0.50
      women                    0.70      0.70
    The judge's held-out accuracy (classifier_heldout_accuracy, 0.8) is on the generation task
    too, and must never be taken for its headline metric.
    """
    trials = trial_rows("g", "ppo_arc", 0, ["toxigen_prompts", "arc"])
    evals = []
    for stage, safe in ((1, {"all": 0.8, "asian": 0.9, "women": 0.7}), (2, {"all": 0.6, "asian": 0.5, "women": 0.7})):
        evals += [dict(row, metric="safe") for row in eval_rows("g", stage, "toxigen_prompts", safe)]
        evals += [dict(row, metric="classifier_heldout_accuracy")
                  for row in eval_rows("g", stage, "toxigen_prompts", {"all": 0.8})]
    evals += eval_rows("g", 1, "arc", {"all": 0.5}) + eval_rows("g", 2, "arc", {"all": 0.7})
    return trials, evals


def test_primary_metric_is_accuracy_or_safe_per_task():
    trials, evals = generation_chain_rows()
    evals = pl.DataFrame(evals)
    assert primary_metrics(evals) == {"toxigen_prompts": "safe", "arc": "accuracy"}
    assert generation_tasks(evals) == ["toxigen_prompts"]
    rows = stage_accuracy(evals, metric="primary")
    assert sorted(set(rows.select("eval_task", "metric").iter_rows())) == [
        ("arc", "accuracy"), ("toxigen_prompts", "safe")]
    assert rows.height == 2 * 3 + 2


def test_forgetting_of_a_generation_task_is_the_drop_in_safe_share():
    """Forgetting_A = 0.80 − 0.60 = 0.20; asian 0.40 is the worst group (biased 0.20); with
    metric="accuracy" the chain has no first-task accuracy, so no forgetting row at all."""
    trials, evals = generation_chain_rows()
    summary = forgetting_summary(pl.DataFrame(trials), pl.DataFrame(evals), metric="primary")
    row = summary.row(0, named=True)
    assert summary.height == 1
    assert row["forgetting"] == pytest.approx(0.20)
    assert (row["wg_forgetting"], row["worst_group"]) == (pytest.approx(0.40), "asian")
    assert row["max_biased_forgetting"] == pytest.approx(0.20)
    assert row["acc_final_task_after_final"] == pytest.approx(0.70)
    assert forgetting_summary(pl.DataFrame(trials), pl.DataFrame(evals), metric="accuracy").is_empty()


def test_a_report_is_built_without_torch_ray_transformers_or_trl(tmp_path: Path):
    """analysis/ reads only Parquet and stands on the ground floor (contract) alone: in a
    process where torch, ray, transformers, trl, datasets and accelerate, and the project's
    study, tasks and trainables packages, cannot be imported at all, every analysis module
    imports and a report (tables, figures, intervals from predictions) is written. An analysis
    module importing any of them fails this test."""
    import subprocess
    import sys

    trials, evals = two_seed_rows()
    write_table(tmp_path, "trials", trials)
    write_table(tmp_path, "evals", evals)
    # Per-example records of the first task, so the report computes intervals and tests too.
    write_table(tmp_path, "predictions", [
        {"trial_id": trial, "stage": stage, "eval_task": "toxigen_qa", "example_id": f"e{i}",
         "groups": ["muslim" if i % 2 else "women"], "correct": (i + stage + seed) % 3 != 0, "mode": "score"}
        for seed, trial in enumerate(("t0", "t1")) for stage in (1, 2) for i in range(20)])
    code = (
        # Any import of a blocked package fails. (Libraries that only probe whether it exists,
        # as polars does with find_spec, still get an answer: its import is what is refused.)
        "import importlib.abc, importlib.machinery, sys\n"
        "BLOCKED = {'torch', 'ray', 'transformers', 'trl', 'datasets', 'accelerate',\n"
        "           'study', 'tasks', 'trainables'}\n"
        "class Refuse(importlib.abc.Loader):\n"
        "    def create_module(self, spec):\n"
        "        raise ModuleNotFoundError(f'{spec.name} is blocked in this test', name=spec.name)\n"
        "    def exec_module(self, module):\n"
        "        pass\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            return importlib.machinery.ModuleSpec(name, Refuse())\n"
        "sys.meta_path.insert(0, Block())\n"
        "import pkgutil, importlib, analysis\n"
        "for module in pkgutil.iter_modules(analysis.__path__):\n"
        "    importlib.import_module(f'analysis.{module.name}')\n"
        "from analysis.report import write_report\n"
        f"print(write_report({str(tmp_path)!r}).stat().st_size)\n"
        "print(sorted(n for n in ('torch', 'ray', 'transformers', 'trl', 'study', 'tasks', 'trainables')\n"
        "             if sys.modules.get(n) is not None))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
    size, loaded = result.stdout.strip().splitlines()[-2:]
    assert int(size) > 1000 and loaded == "[]"
    assert (tmp_path / "report" / "report.html").is_file()
    assert (tmp_path / "report" / "tables" / "group_forgetting_tests.parquet").is_file()


# The ground floor and the libraries analysis/ may import (besides the standard library).
ANALYSIS_MAY_IMPORT = {"analysis", "contract", "polars", "numpy", "scipy", "statsmodels", "matplotlib",
                       "threadpoolctl"}


def test_analysis_imports_only_the_ground_floor_and_its_libraries():
    """Every import statement of analysis/, at module level or inside a function (imports on
    first use are never run by the report test above unless their branch is), names the
    standard library, contract, analysis itself or one of its data libraries: never study,
    tasks, trainables or an ML framework."""
    import ast

    root = Path(__file__).resolve().parents[1] / "analysis"
    found = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in ANALYSIS_MAY_IMPORT and top not in sys.stdlib_module_names:
                    found.setdefault(f"{path.relative_to(root.parent)}", []).append(name)
    assert found == {}, found
