"""Accuracy matrix R[i][j] and backward transfer on a hand-built three-stage chain."""

from __future__ import annotations

import polars as pl
import pytest

from analysis import accuracy_matrix, backward_transfer
from tests.test_analysis_forgetting import eval_rows, trial_rows

ACC = {  # seed 0 / seed 1: accuracy of each task ("all") after each stage
    # stage:        1           2           3
    "tqa": ([0.80, 0.60, 0.50], [0.90, 0.70, 0.70]),
    "arc": ([None, 0.50, 0.40], [None, 0.60, 0.60]),
    "bbq": ([None, None, 0.70], [None, None, 0.90]),
}


def _frames():
    trials, evals = [], []
    for seed in (0, 1):
        trial = f"t{seed}"
        trials += trial_rows(trial, "c3", seed, ["tqa", "arc", "bbq"])
        for task, per_seed in ACC.items():
            evals += eval_rows(trial, 0, task, {"all": 0.25})
            for stage, acc in enumerate(per_seed[seed], start=1):
                if acc is not None:
                    evals += eval_rows(trial, stage, task, {"all": acc, "g": 0.0})
    return pl.DataFrame(trials), pl.DataFrame(evals, infer_schema_length=None)


def test_accuracy_matrix_is_seed_mean_with_forgetting_since_training():
    """Seed means: tqa 0.85 → 0.65 → 0.60; arc 0.55 → 0.50; bbq 0.80.
    Forgetting of tqa after stage 3 = 0.85 − 0.60 = 0.25; of arc after stage 3 = 0.55 − 0.50 = 0.05.
    Stage 0 (base) rows are kept with no forgetting; group rows are ignored."""
    matrix = accuracy_matrix(*_frames())
    cell = {(r["trained_stage"], r["after_stage"]): r for r in matrix.iter_rows(named=True)}
    assert cell[(1, 1)]["accuracy"] == pytest.approx(0.85) and cell[(1, 3)]["accuracy"] == pytest.approx(0.60)
    assert cell[(1, 3)]["forgetting"] == pytest.approx(0.25) and cell[(2, 3)]["forgetting"] == pytest.approx(0.05)
    assert cell[(1, 1)]["forgetting"] is None and cell[(1, 0)]["accuracy"] == pytest.approx(0.25)
    assert sorted(cell) == [(1, 0), (1, 1), (1, 2), (1, 3), (2, 0), (2, 2), (2, 3), (3, 0), (3, 3)]
    assert set(matrix["n_seeds"]) == {2}


def test_backward_transfer_by_hand():
    """BWT = ((R[3][1] − R[1][1]) + (R[3][2] − R[2][2])) / 2 = ((0.60 − 0.85) + (0.50 − 0.55)) / 2 = −0.15."""
    bwt = backward_transfer(*_frames()).row(0, named=True)
    assert (bwt["chain"], bwt["n_stages"], bwt["n_seeds"]) == ("c3", 3, 2)
    assert bwt["bwt"] == pytest.approx(-0.15)


def test_report_has_backward_transfer_section_and_tables(tmp_path):
    from analysis import write_report

    trials, evals = _frames()
    for name, frame in (("trials", trials), ("evals", evals)):
        (tmp_path / name).mkdir()
        frame.write_parquet(tmp_path / name / "part.parquet")
    text = write_report(tmp_path).read_text()
    assert "## Backward transfer" in text and "| c3 | – | 3 | 2 | -15.00 |" in text
    assert pl.read_csv(tmp_path / "report" / "tables" / "accuracy_matrix.csv").height == 9
