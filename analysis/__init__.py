"""Offline analysis of a study's Parquet results: forgetting, worst-group and biased forgetting.

Polars only: this package never imports torch, transformers, trl or ray, so a report can be
rebuilt from the Parquet files on any machine.

    from analysis import load_results, forgetting_summary
    results = load_results("runs/paper-ordering")
    forgetting_summary(results.trials, results.evals)
"""

from analysis.accuracy import accuracy_from_predictions, stage_accuracy
from analysis.forgetting import (
    forgetting_by_trial,
    forgetting_curve,
    forgetting_summary,
    group_forgetting,
    mean_stage_accuracy,
    trial_overview,
)
from analysis.grid import expand_grid_point
from analysis.report import write_report
from analysis.results import ResultTables, load_results

__all__ = [
    "ResultTables",
    "accuracy_from_predictions",
    "expand_grid_point",
    "forgetting_by_trial",
    "forgetting_curve",
    "forgetting_summary",
    "group_forgetting",
    "load_results",
    "mean_stage_accuracy",
    "stage_accuracy",
    "trial_overview",
    "write_report",
]
