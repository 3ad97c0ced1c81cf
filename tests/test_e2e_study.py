"""End to end on a real local Ray cluster: study file → Tune → (Train) → TRL → Parquet → report."""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest

from analysis.labels import points
from study.orchestrate import run_study
from tests.doc_blocks import python_blocks, run_blocks
from tests.report_checks import assert_every_interval_contains_its_estimate
from study.spec_loading import spec_from_dict

pytestmark = pytest.mark.slow

TQA_EVAL, ARC_EVAL, STEPS = 60, 30, 8


def _spec(tmp_path, data_dir, *, chains, executor="function", name="e2e", grid=None):
    return spec_from_dict({
        "grid": grid or {},
        "name": name,
        "model": {"name": "tiny", "max_length": 256},
        "tasks": {"toxigen_qa": {"train_size": 64, "eval_size": TQA_EVAL}, "arc_easy": {"train_size": 64, "eval_size": ARC_EVAL}},
        "eval_tasks": ["toxigen_qa", "arc_easy"],
        "stage_defaults": {"learning_rate": 3e-3, "batch_size": 8, "steps": STEPS},
        "chains": chains,
        "seeds": [0],
        "data_dir": str(data_dir),
        "storage": str(tmp_path / "results"),
        "execution": {"executor": executor, "cpus_per_trial": 1},
    })


def _table(study_dir, name) -> pl.DataFrame:
    return pl.read_parquet(study_dir / name / "*.parquet")


def _accuracy(predictions: pl.DataFrame, trial: str, stage: int, task: str, group: str | None = None) -> float:
    rows = predictions.filter((pl.col("trial_id") == trial) & (pl.col("stage") == stage) & (pl.col("eval_task") == task))
    if group is not None:
        rows = rows.filter(pl.col("groups").list.contains(group))
    return rows["correct"].mean()


def test_two_chain_study_writes_tables_and_report_matching_predictions(ray_cluster, data_dir, tmp_path):
    # A one-value grid axis: exercises the dotted Tune param and the config → plan lookup.
    spec = _spec(tmp_path, data_dir, grid={"stage2.learning_rate": [2e-3]}, chains={
        "tqa_arc": [{"task": "toxigen_qa"}, {"task": "arc_easy"}],
        "arc_tqa": [{"task": "arc_easy"}, {"task": "toxigen_qa"}],
    })
    outcome = run_study(spec)
    assert outcome.failed == [] and outcome.trials == 2
    study_dir = outcome.study_dir

    trials = _table(study_dir, "trials")
    assert trials.height == 4  # 2 trials x 2 stages
    assert set(trials["status"]) == {"finished"} and set(trials["executor"]) == {"function"}
    assert trials["stage_key"].n_unique() == 4
    assert trials.filter(pl.col("stage") == 2)["learning_rate"].to_list() == [2e-3, 2e-3]
    assert set(trials["grid_point"]) == {'{"stage2.learning_rate": 0.002}'}
    evals = _table(study_dir, "evals")
    for trial in trials["trial_id"].unique():
        assert sorted(evals.filter(pl.col("trial_id") == trial)["stage"].unique()) == [0, 1, 2]
    tqa_groups = evals.filter((pl.col("eval_task") == "toxigen_qa") & (pl.col("stage") == 0))["group"].unique()
    assert len(tqa_groups) == 14  # "all" + the 13 ToxiGen groups
    predictions = _table(study_dir, "predictions")
    assert predictions.height == 2 * 3 * (TQA_EVAL + ARC_EVAL)
    train_log = _table(study_dir, "train_log")
    assert train_log.height == 2 * 2 * STEPS
    weights = _table(study_dir, "weights").sort("trial_id", "stage")
    assert weights.height == 4 and (weights["l2_sq_from_previous"] > 0).all()
    first = weights.filter(pl.col("stage") == 1)
    assert first["l2_sq_from_previous"].to_list() == first["l2_sq_from_base"].to_list()  # previous = base

    # evals agree with the per-example predictions, overall and per group.
    for row in evals.iter_rows(named=True):
        group = None if row["group"] == "all" else row["group"]
        assert row["accuracy"] == pytest.approx(_accuracy(predictions, row["trial_id"], row["stage"], row["eval_task"], group))

    # The report's forgetting equals a recomputation from predictions (one seed: no averaging).
    summary = pl.read_parquet(outcome.report.parent / "tables" / "forgetting_summary.parquet")
    tqa_trial = trials.filter(pl.col("chain") == "tqa_arc")["trial_id"][0]
    expected = _accuracy(predictions, tqa_trial, 1, "toxigen_qa") - _accuracy(predictions, tqa_trial, 2, "toxigen_qa")
    row = summary.filter(pl.col("chain") == "tqa_arc").row(0, named=True)
    assert row["forgetting"] == pytest.approx(expected)
    groups = sorted({g for gs in predictions["groups"] for g in gs})
    per_group = {g: _accuracy(predictions, tqa_trial, 1, "toxigen_qa", g) - _accuracy(predictions, tqa_trial, 2, "toxigen_qa", g)
                 for g in groups}
    assert row["wg_forgetting"] == pytest.approx(max(per_group.values()))
    assert row["max_biased_forgetting"] == pytest.approx(max(per_group.values()) - expected)
    report_md = outcome.report.read_text()
    assert "tqa_arc" in report_md and "arc_tqa" in report_md
    assert f"{points(row['max_biased_forgetting'])} (p = " in report_md  # the maximum's permutation test
    assert_every_interval_contains_its_estimate(outcome.report.parent)
    assert (outcome.report.parent / "figures" / "forgetting_by_first_lr.png").stat().st_size > 1000

    # The user docs' examples run on this folder and compute what they say: forgetting of each
    # trial's first task (ToxiGenQA for tqa_arc, ARC for arc_tqa), as the report has it.
    assert python_blocks("README.md") and len(python_blocks("docs/results.md")) >= 3
    readme = run_blocks("README.md", study_dir)
    assert sorted(readme["summary"]["forgetting"].to_list()) == pytest.approx(sorted(summary["forgetting"].to_list()))
    assert readme["groups"].height > 0
    docs = run_blocks("docs/results.md", study_dir)
    forgetting = docs["forgetting"]
    assert dict(forgetting.filter(pl.col("group") == "all").select("chain", "eval_task").iter_rows()) == \
        {"tqa_arc": "toxigen_qa", "arc_tqa": "arc_easy"}
    whole = forgetting.filter((pl.col("chain") == "tqa_arc") & (pl.col("group") == "all"))["forgetting"].item()
    assert whole == pytest.approx(row["forgetting"])
    assert forgetting.filter(pl.col("chain") == "tqa_arc").height == 14  # "all" + 13 groups
    assert docs["by_stage"].height == evals.filter((pl.col("group") == "all") & (pl.col("metric") == "accuracy")).height
    assert len(docs["evals_pd"]) == evals.height

    # Re-running the finished study overwrites its parts: no duplicated rows.
    again = run_study(spec)
    assert again.failed == []
    assert _table(study_dir, "evals").height == evals.height
    assert _table(study_dir, "predictions").height == predictions.height
    assert _table(study_dir, "trials").height == 4


def test_failed_trial_is_listed_and_cli_exits_1(ray_cluster, data_dir, tmp_path, capsys, tiny_model_path):
    """A model folder with a tokenizer but no weights: the tokenization preflight passes, the
    trial fails inside Ray; the run still finishes and says which."""
    import shutil

    from study.cli import main

    empty_model = tmp_path / "empty-model"
    empty_model.mkdir()
    for f in tiny_model_path.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, empty_model / f.name)
    study_file = tmp_path / "fails.yaml"
    study_file.write_text(
        "name: fails\n"
        f"model: {empty_model}\n"
        "tasks: {arc_easy: {train_size: 16, eval_size: 8}}\n"
        "stage_defaults: {steps: 2, batch_size: 4}\n"
        "chains: {arc: [{task: arc_easy}]}\n"
        f"data_dir: {data_dir}\n"
        f"storage: {tmp_path / 'results'}\n"
        "execution: {max_failures: 0}\n"
    )
    # With the report on: no evals exist, which must not turn the failure into "bad input" (2).
    assert main(["run", str(study_file)]) == 1
    captured = capsys.readouterr()
    assert "1 of 1 trial failed" in captured.err and "arc-0-" in captured.err
    assert "no report written" in captured.out


def test_curvature_and_weights_land_in_tables_and_report(ray_cluster, data_dir, tmp_path):
    spec = spec_from_dict({
        "name": "e2e_curvature",
        "model": {"name": "tiny", "max_length": 256},
        "tasks": {"toxigen_qa": {"train_size": 64, "eval_size": 40}, "arc_easy": {"train_size": 32, "eval_size": 20}},
        "stage_defaults": {"learning_rate": 3e-3, "batch_size": 8, "steps": 8},
        "chains": {"tqa_arc": [{"task": "toxigen_qa"}, {"task": "arc_easy"}]},
        "data_dir": str(data_dir), "storage": str(tmp_path / "results"),
        # Both methods named (the default is Lanczos alone); the per-group rows use the first.
        "curvature": {"enabled": True, "n_samples": 16, "per_group": True, "max_iterations": 60, "tol": 1e-4,
                      "algorithms": ["power_iteration", "lanczos"]},
    })
    outcome = run_study(spec)
    assert outcome.failed == []
    curvature = _table(outcome.study_dir, "curvature")
    overall = curvature.filter(pl.col("group") == "all")
    assert sorted(overall["algorithm"]) == ["lanczos", "power_iteration"]
    assert set(curvature["stage"]) == {1} and set(curvature["task"]) == {"toxigen_qa"}
    assert (overall["n_samples"] == 16).all() and overall["example_ids"].list.len().to_list() == [16, 16]
    power, lanczos = (abs(overall.filter(pl.col("algorithm") == a)["eigenvalue"][0]) for a in ("power_iteration", "lanczos"))
    assert power == pytest.approx(lanczos, rel=0.02)
    # Per group: one power-iteration row for each ToxiGen group present in the training sample.
    per_group = curvature.filter(pl.col("group") != "all")
    assert per_group.height == 13 and set(per_group["algorithm"]) == {"power_iteration"}
    report = outcome.report.read_text()
    assert "Curvature and weight change" in report
    assert (outcome.report.parent / "tables" / "curvature_regressions.csv").exists()


def test_dpo_then_sft_with_replay_runs_on_ray(ray_cluster, data_dir, tmp_path):
    """The paper's Table 2 shape with the mitigation: DPO on ToxiGenQA, then SFT on ARC replaying 25%."""
    spec = spec_from_dict({
        "name": "e2e_dpo",
        "model": {"name": "tiny", "max_length": 256},
        "tasks": {"toxigen_qa": {"train_size": 32, "eval_size": 20}, "arc_easy": {"train_size": 32, "eval_size": 20}},
        "stage_defaults": {"learning_rate": 3e-3, "batch_size": 8, "steps": 4},
        "chains": {"dpo_arc": [{"task": "toxigen_qa", "method": "dpo", "dpo": {"beta": 0.2}},
                               {"task": "arc_easy", "replay": {"from_stage": 1, "fraction": 0.25}}]},
        "data_dir": str(data_dir), "storage": str(tmp_path / "results"),
    })
    outcome = run_study(spec)
    assert outcome.failed == []
    trials = _table(outcome.study_dir, "trials").sort("stage")
    assert trials["method"].to_list() == ["dpo", "sft"]
    assert trials["n_train_examples"].to_list() == [32, 40]  # 32 own + 8 replayed
    assert _table(outcome.study_dir, "replay").height == 8
    assert _table(outcome.study_dir, "train_log").filter(pl.col("stage") == 1).height == 4
    assert "dpo_arc" in outcome.report.read_text()


def test_ppo_and_rloo_first_stages_with_a_trained_reward_model_run_on_ray(ray_cluster, data_dir, tmp_path):
    """The first-stage-method preset, shrunk: PPO and RLOO on ToxiGenQA (reward model trained in
    the trial by TRL RewardTrainer), each followed by SFT on ARC."""
    from study.presets import preset_paths
    from study.spec_loading import load_spec_file

    spec = load_spec_file(preset_paths()["first-stage-method"], [
        f"data_dir={data_dir}", f"storage={tmp_path / 'results'}", "model.max_length=256",
        "tasks.toxigen_qa.train_size=32", "tasks.toxigen_qa.eval_size=16",
        "tasks.arc_easy.train_size=16", "tasks.arc_easy.eval_size=8",
        "stage_defaults.steps=2", "stage_defaults.batch_size=8",
        "chains.ppo_arc.0.steps=2", "chains.rloo_arc.0.steps=2",
        "chains.ppo_arc.0.ppo.response_length=6", "chains.rloo_arc.0.rloo.response_length=6",
        "chains.ppo_arc.0.ppo.reward.steps=3", "chains.rloo_arc.0.rloo.reward.steps=3",
    ])
    spec = dataclasses.replace(spec, chains={k: v for k, v in spec.chains.items() if k in ("ppo_arc", "rloo_arc")})
    outcome = run_study(spec)
    assert outcome.failed == []
    trials = _table(outcome.study_dir, "trials").filter(pl.col("stage") == 1).sort("chain")
    assert trials["method"].to_list() == ["ppo", "rloo"]
    assert all('"kl_coef": 0.05' in s for s in trials["method_settings"])
    log = _table(outcome.study_dir, "train_log").filter(pl.col("stage") == 1)
    assert log.height == 4 and log["loss"].is_finite().all()
    evals = _table(outcome.study_dir, "evals")
    assert sorted(evals["stage"].unique()) == [0, 1, 2]
