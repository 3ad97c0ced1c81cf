"""Offline analysis of a study's Parquet results: forgetting, worst-group and biased forgetting,
and the curvature / weight-change analysis of the paper's §3.4.

Polars only (numpy and scipy for the intervals, matplotlib for the figures and statsmodels for
the curvature regressions, the last two imported on first use). Of the project it imports only
the ground floor, `contract` (the results schema and the study folder's layout): never study,
tasks or trainables, nor torch, transformers, trl or ray, so a report can be rebuilt from the
Parquet files on any machine (tests/test_analysis_forgetting.py checks both).

    from analysis import load_results, forgetting_summary
    results = load_results("runs/paper-ordering")
    forgetting_summary(results.trials, results.evals)
"""

from analysis.accuracy import accuracy_from_predictions, generation_tasks, primary_metrics, stage_accuracy
from analysis.accuracy_intervals import accuracy_intervals
from analysis.benchmarks import stage_benchmarks
from analysis.curvature import (
    curvature_by_setting,
    curvature_by_trial,
    curvature_regressions,
    group_curvature_by_trial,
)
from analysis.forgetting import (
    forgetting_by_trial,
    forgetting_curve,
    forgetting_summary,
    group_forgetting,
    mean_stage_accuracy,
    trial_overview,
)
from analysis.grid import expand_grid_point
from analysis.paper_tables import (
    benchmark_table,
    first_stage_method_table,
    hyperparameter_table,
    ordering_table,
    paper_tables,
    reward_models,
)
from analysis.regression import ols
from analysis.report import write_report
from analysis.transfer import accuracy_matrix, backward_transfer
from analysis.results import ResultTables, load_results
from analysis.weight_norms import with_weight_norms
from analysis.uncertainty import forgetting_intervals, forgetting_uncertainty, group_forgetting_tests

__all__ = [
    "accuracy_intervals",
    "benchmark_table",
    "first_stage_method_table",
    "forgetting_intervals",
    "forgetting_uncertainty",
    "generation_tasks",
    "primary_metrics",
    "group_forgetting_tests",
    "hyperparameter_table",
    "ordering_table",
    "paper_tables",
    "reward_models",
    "stage_benchmarks",
    "accuracy_matrix",
    "backward_transfer",
    "ResultTables",
    "accuracy_from_predictions",
    "curvature_by_setting",
    "curvature_by_trial",
    "curvature_regressions",
    "expand_grid_point",
    "forgetting_by_trial",
    "forgetting_curve",
    "forgetting_summary",
    "group_curvature_by_trial",
    "group_forgetting",
    "load_results",
    "mean_stage_accuracy",
    "ols",
    "stage_accuracy",
    "trial_overview",
    "with_weight_norms",
    "write_report",
]
