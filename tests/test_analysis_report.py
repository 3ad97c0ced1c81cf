"""write_report: report.md / report.html, CSV + Parquet tables and PNG figures from Parquet alone."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from analysis import write_report
from analysis.figures import _interval_spans
from analysis.labels import points
from tests.test_analysis_forgetting import (
    GRID_LOW_LR,
    eval_rows,
    generation_chain_rows,
    trial_rows,
    two_seed_rows,
    write_table,
)

TABLES = ["forgetting_summary", "group_forgetting", "forgetting_curve", "stage_accuracy", "forgetting_by_trial"]
# The figures of a two-stage study (the forgetting curve is drawn only for chains of 3+ stages).
FIGURES = ["forgetting_by_first_lr.png", "group_forgetting.png", "accuracy_progression.png"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_study(results_dir: Path) -> Path:
    """Write a results folder with three settings:
    - tqa_arc, stage1.learning_rate=0.001, seeds 0 and 1 (two_seed_rows): forgetting 0.10 →
      "10.00", WG 0.175 muslim → "17.50 (muslim)", max biased 0.075 → "7.50".
    - tqa_arc, stage1.learning_rate=1e-05, seed 0: all 0.90 → 0.88 (forgetting 0.02),
      muslim 0.90 → 0.80 (0.10, worst, biased 0.08), women 0.90 → 0.90 (0.00).
    - arc_tqa (no grid), seed 0: arc 0.60 → 0.55, forgetting 0.05; arc has no groups.
    """
    trials, evals = two_seed_rows()
    trials += trial_rows("low", "tqa_arc", 0, ["toxigen_qa", "arc"], GRID_LOW_LR, [1e-5, 1e-5])
    evals += eval_rows("low", 1, "toxigen_qa", {"all": 0.90, "muslim": 0.90, "women": 0.90})
    evals += eval_rows("low", 2, "toxigen_qa", {"all": 0.88, "muslim": 0.80, "women": 0.90}, n=50)
    trials += trial_rows("rev", "arc_tqa", 0, ["arc", "toxigen_qa"], "{}", [1e-3, 1e-5])
    evals += eval_rows("rev", 1, "arc", {"all": 0.60}) + eval_rows("rev", 2, "arc", {"all": 0.55})
    evals += eval_rows("rev", 2, "toxigen_qa", {"all": 0.85, "muslim": 0.80, "women": 0.90})
    write_table(results_dir, "trials", trials, parts=2)
    write_table(results_dir, "evals", evals, parts=2)
    return results_dir


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    return write_study(tmp_path)


def test_write_report_writes_every_file(study_dir: Path):
    """Default out_dir is <results>/report; every table exists as CSV and Parquet with the same
    rows; every figure is a non-empty PNG."""
    report_md = write_report(study_dir)
    out = study_dir / "report"
    assert report_md == out / "report.md"
    assert (out / "report.html").is_file()
    for name in TABLES:
        from_parquet = pl.read_parquet(out / "tables" / f"{name}.parquet")
        from_csv = pl.read_csv(out / "tables" / f"{name}.csv")
        assert from_parquet.height == from_csv.height > 0, name
    for name in FIGURES:
        data = (out / "figures" / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, name


def test_report_tables_hold_the_expected_rows(study_dir: Path, tmp_path_factory):
    """forgetting_summary: one row per setting (see the fixture for the numbers);
    group_forgetting: muslim and women for each tqa_arc setting (arc has no groups) = 4 rows."""
    out = tmp_path_factory.mktemp("elsewhere")
    write_report(study_dir, out)
    summary = pl.read_parquet(out / "tables" / "forgetting_summary.parquet")
    expected = pl.DataFrame({
        "chain": ["arc_tqa", "tqa_arc", "tqa_arc"],
        "first_learning_rate": [1e-3, 1e-3, 1e-5],
        "n_seeds": [1, 2, 1],
        "forgetting": [0.05, 0.10, 0.02],
        "wg_forgetting": [None, 0.175, 0.10],
        "worst_group": [None, "muslim", "muslim"],
        "max_biased_forgetting": [None, 0.075, 0.08],
    })
    assert_frame_equal(summary.select(expected.columns), expected)
    groups = pl.read_csv(out / "tables" / "group_forgetting.csv")
    assert groups.select("group", "forgetting").to_dicts() == [
        {"group": "muslim", "forgetting": pytest.approx(0.175)},
        {"group": "women", "forgetting": pytest.approx(0.15)},
        {"group": "muslim", "forgetting": pytest.approx(0.10)},
        {"group": "women", "forgetting": pytest.approx(0.0)},
    ]
    # stage_accuracy: seed means, e.g. tqa_arc lr 1e-3, stage 2, toxigen_qa, muslim = 0.675.
    accuracy = pl.read_parquet(out / "tables" / "stage_accuracy.parquet").filter(
        pl.col("chain") == "tqa_arc", pl.col("stage1.learning_rate") == 0.001,
        pl.col("stage") == 2, pl.col("eval_task") == "toxigen_qa", pl.col("group") == "muslim",
    )
    assert accuracy.get_column("accuracy").to_list() == [pytest.approx(0.675)]
    assert accuracy.get_column("n_seeds").to_list() == [2]


def test_report_md_and_html_show_the_numbers(study_dir: Path):
    """report.md names every chain and prints forgetting, WG (group) and max biased in points."""
    text = write_report(study_dir).read_text(encoding="utf-8")
    for needle in [
        "tqa_arc", "arc_tqa", "stage1.learning_rate=0.001", "stage1.learning_rate=1e-05",
        "| 10.00 | 17.50 (muslim) | 7.50 |",  # lr 1e-3, two seeds
        "| 2.00 | 10.00 (muslim) | 8.00 |",  # lr 1e-5
        "| 5.00 | – | – |",  # arc_tqa: no groups on arc
        "which arc does not have",  # ...and the report says why
        "BiasedForgetting", "Seeds", "figures/forgetting_by_first_lr.png",
    ]:
        assert needle in text, needle
    page = (study_dir / "report" / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    assert "17.50 (muslim)" in page and "arc_tqa" in page


def test_report_without_chained_results_still_writes_every_file(tmp_path: Path):
    """Only stage 1 has been evaluated: no forgetting yet, but the report and empty tables are
    written; a figure with nothing to plot is neither drawn nor shown (no placeholder)."""
    write_table(tmp_path, "trials", trial_rows("t", "tqa_arc", 0, ["toxigen_qa", "arc"]))
    write_table(tmp_path, "evals", eval_rows("t", 1, "toxigen_qa", {"all": 0.9, "muslim": 0.8}))
    text = write_report(tmp_path, tmp_path / "out").read_text(encoding="utf-8")
    assert "No forgetting to show yet" in text
    assert pl.read_parquet(tmp_path / "out" / "tables" / "forgetting_summary.parquet").is_empty()
    assert sorted(p.name for p in (tmp_path / "out" / "figures").iterdir()) == ["accuracy_progression.png"]
    assert "figures/forgetting_by_first_lr.png" not in text and "figures/group_forgetting.png" not in text


def test_report_needs_trials(tmp_path: Path):
    write_table(tmp_path, "evals", eval_rows("t", 1, "toxigen_qa", {"all": 0.9}))
    with pytest.raises(FileNotFoundError, match="trials"):
        write_report(tmp_path)


def test_points_never_prints_negative_zero():
    """0.85 − 0.85 may be −1e-17 in floating point; the report shows 0.00, not -0.00."""
    assert points(-1e-17) == "0.00"
    assert (points(0.0481), points(-0.02), points(None)) == ("4.81", "-2.00", "–")


def test_a_varying_second_stage_lr_and_batch_size_get_their_own_figures(tmp_path: Path):
    """Grid stage2.learning_rate x stage1.batch_size on one chain: the report draws forgetting
    against each (stage 1's lr has its fixed figure), and the example study, which varies only
    stage 1's lr, has no such extra figure."""
    trials, evals = [], []
    for index, (lr2, batch) in enumerate([(1e-5, 8), (1e-5, 16), (2e-5, 8), (2e-5, 16)]):
        grid = json.dumps({"stage1.batch_size": batch, "stage2.learning_rate": lr2})
        trials += trial_rows(f"t{index}", "tqa_arc", 0, ["toxigen_qa", "arc"], grid, [1e-5, lr2])
        evals += eval_rows(f"t{index}", 1, "toxigen_qa", {"all": 0.9, "muslim": 0.9})
        evals += eval_rows(f"t{index}", 2, "toxigen_qa", {"all": 0.9 - index / 20, "muslim": 0.8})
    write_table(tmp_path, "trials", trials)
    write_table(tmp_path, "evals", evals)
    text = write_report(tmp_path, tmp_path / "out").read_text(encoding="utf-8")
    for stem, words in (("forgetting_by_stage2_learning_rate", "learning rate of stage 2"),
                        ("forgetting_by_stage1_batch_size", "batch size of stage 1")):
        data = (tmp_path / "out" / "figures" / f"{stem}.png").read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
        assert f"figures/{stem}.png" in text and f"first task by {words}" in text
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == len(FIGURES) + 2

    write_report(write_study(tmp_path / "plain"))
    assert sorted(p.name for p in (tmp_path / "plain" / "report" / "figures").iterdir()) == sorted(FIGURES)


def test_interval_bars_span_the_interval_even_when_the_estimate_lies_outside_it():
    """Bars are drawn as (centre ± half-width) of [low, high] in points, not as distances from
    the estimate: a WG interval such as [0.106, 0.182] around an estimate of 0.100 (a maximum
    over groups) is drawn from 10.6 to 18.2. Points without an interval get no bar."""
    xs, centres, halves = _interval_spans([1, 2, 3], [0.106, None, 0.02], [0.182, None, 0.08])
    assert xs == [1, 3]
    assert [c - h for c, h in zip(centres, halves)] == [pytest.approx(10.6), pytest.approx(2.0)]
    assert [c + h for c, h in zip(centres, halves)] == [pytest.approx(18.2), pytest.approx(8.0)]
    assert _interval_spans([1], [None], [None]) == ([], [], [])


def test_report_measures_a_generation_first_task_on_safe(tmp_path: Path):
    """PPO on toxigen_prompts then ARC (see generation_chain_rows): the report's forgetting is
    the drop in safe %, 20.00 points, worst group asian at 40.00."""
    trials, evals = generation_chain_rows()
    write_table(tmp_path, "trials", trials)
    write_table(tmp_path, "evals", evals)
    text = write_report(tmp_path, tmp_path / "out").read_text(encoding="utf-8")
    assert "| 20.00 | 40.00 (asian) | 20.00 |" in text
    summary = pl.read_parquet(tmp_path / "out" / "tables" / "forgetting_summary.parquet")
    assert summary["forgetting"].to_list() == [pytest.approx(0.2)]
    stage_accuracy = pl.read_parquet(tmp_path / "out" / "tables" / "stage_accuracy.parquet")
    assert set(stage_accuracy.select("eval_task", "metric").unique().iter_rows()) == {
        ("toxigen_prompts", "safe"), ("arc", "accuracy")}


def test_results_folders_read_the_same_in_duckdb_pandas_and_polars(study_dir: Path):
    """The README's claim: a results table is one Parquet dataset that DuckDB and pandas read
    as well as Polars. Forgetting of the lr-1e-3 setting (two seeds, two part files) by SQL and
    by pandas equals forgetting_summary's 0.10 (see write_study)."""
    import duckdb
    import pandas as pd

    from analysis import forgetting_summary, load_results

    sql = f"""
        WITH acc AS (
            SELECT e.trial_id, e.stage, e.accuracy FROM read_parquet('{study_dir}/evals/*.parquet') e
            JOIN (SELECT DISTINCT trial_id, grid_point FROM read_parquet('{study_dir}/trials/*.parquet')) t
              USING (trial_id)
            WHERE t.grid_point = '{{"stage1.learning_rate": 0.001}}' AND e.eval_task = 'toxigen_qa' AND e."group" = 'all')
        SELECT avg(a1.accuracy - a2.accuracy) FROM acc a1 JOIN acc a2 USING (trial_id)
        WHERE a1.stage = 1 AND a2.stage = 2"""
    by_sql = duckdb.sql(sql).fetchall()[0][0]
    evals = pd.read_parquet(study_dir / "evals")
    trials = pd.read_parquet(study_dir / "trials").drop_duplicates("trial_id")
    rows = evals.merge(trials[["trial_id", "grid_point"]], on="trial_id")
    rows = rows[(rows.grid_point == '{"stage1.learning_rate": 0.001}') & (rows.eval_task == "toxigen_qa")
                & (rows.group == "all")]
    wide = rows.pivot(index="trial_id", columns="stage", values="accuracy")
    by_pandas = (wide[1] - wide[2]).mean()
    results = load_results(study_dir)
    summary = forgetting_summary(results.trials, results.evals).filter(pl.col("stage1.learning_rate") == 0.001)
    assert by_sql == pytest.approx(0.10) and by_pandas == pytest.approx(0.10)
    assert summary["forgetting"].to_list() == [pytest.approx(by_sql)]
    assert len(list((study_dir / "evals").glob("*.parquet"))) == 2


def test_stage_one_lr_under_another_name_gets_no_second_figure(tmp_path: Path):
    """A grid over stage_defaults.learning_rate sets stage 1's lr too: forgetting_by_first_lr
    already draws it, so no forgetting_by_stage_defaults_learning_rate.png is written."""
    trials, evals = [], []
    for index, lr in enumerate([1e-5, 2e-5]):
        grid = json.dumps({"stage_defaults.learning_rate": lr})
        trials += trial_rows(f"t{index}", "tqa_arc", 0, ["toxigen_qa", "arc"], grid, [lr, lr])
        evals += eval_rows(f"t{index}", 1, "toxigen_qa", {"all": 0.9}) + eval_rows(f"t{index}", 2, "toxigen_qa", {"all": 0.8})
    write_table(tmp_path, "trials", trials)
    write_table(tmp_path, "evals", evals)
    write_report(tmp_path, tmp_path / "out")
    # No group rows in these evals: no per-group figure either.
    assert sorted(p.name for p in (tmp_path / "out" / "figures").iterdir()) == sorted(
        set(FIGURES) - {"group_forgetting.png"})


def test_table_2_caption_names_the_reward_model_the_runs_recorded(tmp_path: Path):
    from tests.test_analysis_paper_tables import OA, online_rl_results

    trials, evals = online_rl_results()
    write_table(tmp_path, "trials", trials.to_dicts())
    write_table(tmp_path, "evals", evals.to_dicts())
    text = write_report(tmp_path, tmp_path / "out").read_text(encoding="utf-8")
    table_2 = text[text.index("### Table 2"):]
    caption = table_2[:table_2.index("\n###")]
    assert "Reward model of each online-RL first stage, as its runs recorded it: " in caption
    assert f"PPO ToxiGenQA → SFT ARC (ppo_arc): {OA};" in caption
    assert "RLOO ToxiGenQA → SFT ARC (rloo_arc): trained here on ToxiGen statements" in caption
    assert pl.read_csv(tmp_path / "out" / "tables" / "reward_models.csv")["chain"].to_list() == ["ppo_arc", "rloo_arc"]
    # Without an online-RL first stage there is no caption line.
    write_table(tmp_path / "sft", "trials", trials.filter(~pl.col("chain").is_in(["ppo_arc", "rloo_arc"])).to_dicts())
    write_table(tmp_path / "sft", "evals", evals.to_dicts())
    assert "Reward model of each" not in write_report(tmp_path / "sft").read_text(encoding="utf-8")
