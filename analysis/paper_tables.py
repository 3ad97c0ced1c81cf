"""The paper's tables, in the paper's layout, built from a results folder's `trials` and `evals`.

Every builder returns a Polars DataFrame for whatever the results contain (an empty frame when
the table does not apply); numbers are fractions in [0, 1] (the paper prints percent) and every
row keeps its setting keys (chain, grid_point) and n_seeds, so each number can be traced back to
`forgetting_summary` / `stage_benchmarks` rows. Seeds are averaged exactly as analysis.forgetting
does (seed means of accuracies first, differences of those means).

    table                      paper            one row per
    ordering_table             Table 1          two-stage all-SFT chain without a varying grid
    first_stage_method_table   Table 2          setting, where ≥ 2 first-stage methods share
                                                stage-1 task and stage-2 (method, task)
    hyperparameter_table       Tables 4, 5, 9   (two-stage chain, value of the one varying axis)
    benchmark_table            Tables 6–10      model: the base model, each stage-1 model and
                                                each chain after its final stage

`applicable_tables` lists which apply; `paper_tables` builds those. Display names of tasks and
methods (TASK_LABELS, METHOD_LABELS: arc_easy is "ARC" as in Tables 1–5; unknown names are shown
as they are) and the row labels are in analysis.labels.
"""

from __future__ import annotations

import json

import polars as pl

from analysis.accuracy import Frame
from analysis.benchmarks import stage_benchmarks
from analysis.forgetting import SETTING, forgetting_summary
from analysis.grid import expand_grid_point, parse_grid_points
from analysis.labels import (
    METHOD_LABELS,
    TASK_LABELS,
    grid_label,
    hyperparameter_label,
    method_label,
    model_label,
    order_label,
    task_label,
)
from analysis.table_columns import declared, null_column, setting_grid_point, typed, typed_column
from contract.methods import SFT

# The paper's column order (TASK_LABELS lists tasks in it): capability tasks, then the safety
# QA tasks, then generation safety; methods SFT, DPO, PPO, RLOO.
TASK_ORDER = tuple(TASK_LABELS)
METHOD_ORDER = tuple(METHOD_LABELS)
# Metrics of the benchmark table and their column prefix (Tables 6–10: "Accuracy", "Safe %").
BENCHMARK_METRICS = {"accuracy": "Acc", "safe": "Safe"}


# ------------------------------------------------------------------------------ sort order


def _task_rank(task: str) -> tuple[int, str]:
    return (TASK_ORDER.index(task), "") if task in TASK_ORDER else (len(TASK_ORDER), task)


def _method_rank(method: str | None) -> tuple[int, str]:
    method = method or SFT
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


# ------------------------------------------------------------------------------ settings


def _normalised(trials: Frame) -> pl.DataFrame:
    frame = trials.lazy().collect()
    extra = [c for c in ("stage_key", "model") if c not in frame.columns]
    return frame.with_columns(
        *[null_column("trials", c) for c in extra]
    ).with_columns(
        *typed("trials", "trial_id", "stage"),
        setting_grid_point(),
        typed_column("trials", "method").fill_null(SFT),
        *typed("trials", "stage_key", "model"),
    )


def setting_stages(trials: Frame) -> pl.DataFrame:
    """One row per setting (chain, grid_point): its stages' methods and tasks (lists, stage 1
    first, read from the setting's first trial), n_stages, and the labels."""
    frame = _normalised(trials)
    per_trial = (
        frame.sort("trial_id", "stage")
        .group_by("trial_id", maintain_order=True)
        .agg(pl.col("chain").first(), pl.col("grid_point").first(), methods=pl.col("method"),
             tasks=pl.col("task"))
    )
    settings = per_trial.group_by(SETTING, maintain_order=True).agg(
        pl.col("methods").first(), pl.col("tasks").first()
    )
    return settings.with_columns(
        n_stages=pl.col("tasks").list.len().cast(pl.Int64),
        label=pl.struct("methods", "tasks").map_elements(
            lambda s: model_label(s["methods"], s["tasks"]), return_dtype=pl.String),
        order=pl.struct("methods", "tasks").map_elements(
            lambda s: order_label(s["methods"], s["tasks"]), return_dtype=pl.String),
    ).sort(SETTING)


def _two_stage_summary(trials: Frame, evals: Frame) -> pl.DataFrame:
    """forgetting_summary of the two-stage settings, with their methods, tasks and labels."""
    stages = setting_stages(trials).filter(pl.col("n_stages") == 2)
    if stages.is_empty():
        return pl.DataFrame()
    summary = forgetting_summary(trials, evals)
    if summary.is_empty():
        return pl.DataFrame()
    return summary.select(
        *SETTING, "n_seeds", "acc_first_task_after_final", "acc_final_task_after_final",
        "forgetting", "wg_forgetting", "worst_group", "max_biased_forgetting",
    ).join(stages, on=SETTING, how="inner")


def _acc_columns(rows: pl.DataFrame) -> list[str]:
    tasks = {t for pair in rows["tasks"].to_list() for t in pair}
    return sorted(tasks, key=_task_rank)


def _with_task_accuracies(rows: pl.DataFrame, tasks: list[str]) -> pl.DataFrame:
    """Acc_<task> after the final stage for each task: the chain's first or final task, else null."""
    first, second = pl.col("tasks").list.get(0), pl.col("tasks").list.get(1)
    return rows.with_columns(
        pl.when(first == task).then(pl.col("acc_first_task_after_final"))
        .when(second == task).then(pl.col("acc_final_task_after_final"))
        .otherwise(None).cast(pl.Float64).alias(f"Acc_{task_label(task)}")
        for task in tasks
    )


def _pair_order(rows: pl.DataFrame) -> pl.DataFrame:
    """Sort keys: the pair of tasks by the paper's task order, then the chain's first task."""
    keys = [
        (
            tuple(sorted((_task_rank(t) for t in tasks))),
            _task_rank(tasks[0]),
            [_method_rank(m) for m in methods],
        )
        for tasks, methods in zip(rows["tasks"].to_list(), rows["methods"].to_list(), strict=True)
    ]
    order = sorted(range(rows.height), key=lambda i: (keys[i], rows["chain"][i], rows["grid_point"][i]))
    return rows[order]


# ------------------------------------------------------------------------------ Table 1


ORDERING_COLUMNS = ["order", "pair", *SETTING, "n_seeds"]


def _empty_ordering_table() -> pl.DataFrame:
    return pl.DataFrame(schema={c: pl.String for c in ORDERING_COLUMNS} | declared("trials", *SETTING)
                        | {"n_seeds": pl.Int64})


def ordering_table(trials: Frame, evals: Frame) -> pl.DataFrame:
    """Table 1: one row per order of two tasks (chain), each stage SFT, chains with a single
    grid point in the results (a varying grid belongs to `hyperparameter_table`).

    Columns: order ("ARC → ToxiGenQA"), pair ("ARC / ToxiGenQA": the paper's sub-table), chain,
    grid_point, n_seeds, then Acc_<task> for every task of any row (the task's accuracy after
    the final stage; null where the chain lacks the task), then Forgetting_<task>: forgetting of
    the chain's first task at the final stage, null in the other tasks' columns (the paper's "-").
    """
    rows = _two_stage_summary(trials, evals)
    if rows.is_empty():
        return _empty_ordering_table()
    points_per_chain = rows.group_by("chain").agg(n_points=pl.col("grid_point").n_unique())
    rows = rows.join(points_per_chain, on="chain").filter(
        (pl.col("n_points") == 1)
        & pl.col("methods").list.eval(pl.element() == SFT).list.all()
        & (pl.col("tasks").list.get(0) != pl.col("tasks").list.get(1))
    )
    if rows.is_empty():
        return _empty_ordering_table()
    tasks = _acc_columns(rows)
    rows = _with_task_accuracies(rows, tasks).with_columns(
        pl.when(pl.col("tasks").list.get(0) == task).then(pl.col("forgetting"))
        .otherwise(None).cast(pl.Float64).alias(f"Forgetting_{task_label(task)}")
        for task in tasks
    ).with_columns(
        pair=pl.col("tasks").map_elements(
            lambda ts: " / ".join(task_label(t) for t in sorted(ts, key=_task_rank)), return_dtype=pl.String)
    )
    return _pair_order(rows).select(
        *ORDERING_COLUMNS,
        *[f"Acc_{task_label(t)}" for t in tasks],
        *[f"Forgetting_{task_label(t)}" for t in tasks],
    )


# ------------------------------------------------------------------------------ Table 2


METHOD_COLUMNS = ["first_stage_method", "model", *SETTING, "n_seeds", "Forgetting", "WG_Forgetting",
                  "worst_group", "BiasedForgetting"]


def first_stage_method_table(trials: Frame, evals: Frame) -> pl.DataFrame:
    """Table 2: one row per setting of the two-stage chains that share the stage-1 task and the
    stage-2 method and task, where those chains use at least two first-stage methods.

    Columns: first_stage_method ("SFT", "DPO", ...), model ("DPO ToxiGenQA → SFT ARC"), chain,
    grid_point, n_seeds, Forgetting (first task, "all"), WG_Forgetting (max over groups),
    worst_group, BiasedForgetting = WG_Forgetting − Forgetting, i.e. analysis.forgetting's
    max_biased_forgetting (the most a group forgets beyond the average). The paper's caption
    says "average minus worst", but its numbers are worst minus average (SFT: 11.07 − 4.81 =
    6.26), positive when a group forgets more than the average; that is what is reported here.
    Null when the first task has no groups.
    """
    empty = pl.DataFrame(schema={c: pl.String for c in METHOD_COLUMNS} | declared("trials", *SETTING)
                         | {"n_seeds": pl.Int64, "Forgetting": pl.Float64, "WG_Forgetting": pl.Float64,
                            "BiasedForgetting": pl.Float64})
    rows = _two_stage_summary(trials, evals)
    if rows.is_empty():
        return empty
    rows = rows.with_columns(
        first_task=pl.col("tasks").list.get(0),
        first_method=pl.col("methods").list.get(0),
        second=pl.concat_str(pl.col("methods").list.get(1), pl.lit(":"), pl.col("tasks").list.get(1)),
    )
    groups = rows.group_by("first_task", "second").agg(n_methods=pl.col("first_method").n_unique())
    rows = rows.join(groups, on=["first_task", "second"]).filter(pl.col("n_methods") >= 2)
    if rows.is_empty():
        return empty
    keys = [
        (_task_rank(r["first_task"]), r["second"], _method_rank(r["first_method"]), r["chain"], r["grid_point"])
        for r in rows.iter_rows(named=True)
    ]
    rows = rows[sorted(range(rows.height), key=lambda i: keys[i])]
    return rows.select(
        first_stage_method=pl.col("first_method").map_elements(method_label, return_dtype=pl.String),
        model=pl.col("label"),
        chain=pl.col("chain"),
        grid_point=pl.col("grid_point"),
        n_seeds=pl.col("n_seeds"),
        Forgetting=pl.col("forgetting"),
        WG_Forgetting=pl.col("wg_forgetting").cast(pl.Float64),
        worst_group=pl.col("worst_group").cast(pl.String),
        BiasedForgetting=pl.col("max_biased_forgetting").cast(pl.Float64),
    )


# ------------------------------------------------------------------------------ reward models


# What a reward model trained in the study learnt from: trials.method_settings' reward.train.data
# (trainables/stages/reward_data.py); a record without it predates the field: QA pairs.
REWARD_DATA_NAMES = {
    "toxigen_statements": "ToxiGen statements (each prompt continued by a neutral vs a hate statement about "
                          "its group)",
    "qa_pairs": "the task's QA preference pairs",
}
REWARD_COLUMNS = ["chain", "grid_point", "stage", "method", "reward_model"]


def reward_model_label(method_settings: str | None) -> str | None:
    """The reward model a stage's recorded settings (trials.method_settings, JSON) name: the Hub id
    or path, or "trained here on <data>"; None for a stage without a reward model."""
    reward = json.loads(method_settings or "{}").get("reward")
    if not isinstance(reward, dict):
        return None
    if reward.get("model"):
        return str(reward["model"])
    data = (reward.get("train") or {}).get("data", "qa_pairs")
    return f"trained here on {REWARD_DATA_NAMES.get(data, data)}"


def reward_models(trials: Frame) -> pl.DataFrame:
    """One row per setting and stage that has a reward model (PPO, RLOO): the reward model its
    trials recorded (`reward_model_label`); differing values across seeds are joined by " / "."""
    frame = _normalised(trials)
    empty = pl.DataFrame(schema=declared("trials", *SETTING, "stage", "method") | {"reward_model": pl.String})
    if "method_settings" not in frame.columns or frame.is_empty():
        return empty
    rows = frame.select(*SETTING, "stage", "method", reward_model=typed_column("trials", "method_settings").map_elements(
        reward_model_label, return_dtype=pl.String)).drop_nulls("reward_model")
    if rows.is_empty():
        return empty
    return (rows.group_by(*SETTING, "stage", "method")
            .agg(pl.col("reward_model").unique(maintain_order=True).sort().str.join(" / "))
            .sort(*SETTING, "stage").select(REWARD_COLUMNS))


# ------------------------------------------------------------------------------ Tables 4, 5, 9


HYPERPARAMETER_COLUMNS = ["order", *SETTING, "axis", "value", "hyperparameter", "n_seeds"]


def varying_axes(trials: Frame, *, two_stage_only: bool = True) -> list[str]:
    """Grid keys whose value differs between grid points of one chain (two-stage chains by default)."""
    stages = setting_stages(trials)
    if two_stage_only:
        stages = stages.filter(pl.col("n_stages") == 2)
    if stages.is_empty():
        return []
    grid = parse_grid_points(stages["grid_point"].to_list())
    joined = stages.select(SETTING).join(grid, on="grid_point", how="left")
    axes = [c for c in grid.columns if c != "grid_point"]
    return sorted(
        axis for axis in axes
        if joined.group_by("chain").agg(n=pl.col(axis).n_unique())["n"].max() > 1
    )


def hyperparameter_table(trials: Frame, evals: Frame, *, axis: str | None = None) -> pl.DataFrame:
    """Tables 4, 5 (learning rate of stage 1 / stage 2) and the forgetting view of Table 9 (stage-1
    batch size): one row per (two-stage chain, grid point) of chains whose grid varies `axis`.

    axis=None detects it: the single grid key that varies within a chain (varying_axes); with no
    varying key, or several, the table is empty unless `axis` names one (the other keys are then
    in grid_point). Columns: order, chain, grid_point, axis ("stage1.learning_rate"), value,
    hyperparameter ("lr=5e-6"), n_seeds, Acc_<task> for the rows' tasks after the final stage,
    Forgetting (of the chain's first task), WG_Forgetting (null when that task has no groups),
    worst_group. Rows: by order (pair, then first task), then value.
    """
    empty = pl.DataFrame(schema={c: pl.String for c in HYPERPARAMETER_COLUMNS} | declared("trials", *SETTING)
                         | {"n_seeds": pl.Int64, "value": pl.Float64})
    if axis is None:
        axes = varying_axes(trials)
        if len(axes) != 1:
            return empty
        axis = axes[0]
    rows = _two_stage_summary(trials, evals)
    if rows.is_empty():
        return empty
    values = {gp: json.loads(gp).get(axis) for gp in rows["grid_point"].unique().to_list()}
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values() if v is not None)
    rows = rows.with_columns(
        value=pl.col("grid_point").replace_strict(
            {k: (float(v) if numeric and v is not None else (None if v is None else str(v))) for k, v in values.items()},
            default=None, return_dtype=pl.Float64 if numeric else pl.String)
    ).filter(pl.col("value").is_not_null())
    per_chain = rows.group_by("chain").agg(n_values=pl.col("value").n_unique())
    rows = rows.join(per_chain, on="chain").filter(pl.col("n_values") > 1)
    if rows.is_empty():
        return empty
    tasks = _acc_columns(rows)
    rows = _with_task_accuracies(rows, tasks).with_columns(
        axis=pl.lit(axis),
        hyperparameter=pl.col("value").map_elements(lambda v: hyperparameter_label(axis, v), return_dtype=pl.String),
    )
    keys = [
        (tuple(sorted(_task_rank(t) for t in r["tasks"])), _task_rank(r["tasks"][0]),
         [_method_rank(m) for m in r["methods"]], r["chain"], r["value"], r["grid_point"])
        for r in rows.iter_rows(named=True)
    ]
    rows = rows[sorted(range(rows.height), key=lambda i: keys[i])]
    return rows.select(
        *HYPERPARAMETER_COLUMNS,
        *[f"Acc_{task_label(t)}" for t in tasks],
        Forgetting=pl.col("forgetting"),
        WG_Forgetting=pl.col("wg_forgetting").cast(pl.Float64),
        worst_group=pl.col("worst_group").cast(pl.String),
    )


# ------------------------------------------------------------------------------ Tables 6–10


BENCHMARK_COLUMNS = ["model", "stage", *SETTING, "grid", "n_settings", "n_seeds"]


def _paper_benchmark_columns(long: pl.DataFrame) -> list[tuple[str, str]]:
    """(metric, eval_task) pairs of the benchmark table, in the paper's order: accuracy on
    ARC, ARC-c, MMLU, ToxiGenQA, BBQ, other tasks (by name), then safe on ToxiGen, SaFeRDialogues,
    others."""
    pairs = set(long.select("metric", "eval_task").unique().rows())
    return sorted(pairs, key=lambda p: (list(BENCHMARK_METRICS).index(p[0]), _task_rank(p[1])))


def benchmark_table(trials: Frame, evals: Frame, *, stages: str = "first_and_final") -> pl.DataFrame:
    """Tables 6–10: one row per model, one column per (metric, eval task): Acc_<task> (metric
    accuracy) then Safe_<task> (metric safe), over each task's whole eval set (group "all"),
    seed means from analysis.benchmarks.stage_benchmarks.

    Models: the base model (stage 0, labelled "Base model (<trials.model>)"), then per setting
    its stage-1 model ("SFT ToxiGenQA") and the chain after its final stage ("SFT ToxiGenQA →
    SFT ARC"); stages="all" adds the stages in between. A model several settings share (same
    stage keys for all seeds: chains with a common first stage, a grid varying stage 2 only;
    the base model: same trials.model) is one row, read from the one of those settings with the
    most numbers at that stage (ties: the first in (chain, grid_point) order), which
    chain/grid_point name; n_settings counts them. Without
    stage keys in `trials`, every setting's model is its own row. grid = the grid point as
    "key=value"; the grid keys are also expanded into columns. n_seeds is the fewest seeds
    behind any number in the row.
    """
    if stages not in ("first_and_final", "all"):
        raise ValueError(f"stages must be 'first_and_final' or 'all', not {stages!r}")
    empty = pl.DataFrame(schema={c: pl.String for c in BENCHMARK_COLUMNS} | declared("trials", *SETTING, "stage")
                         | {"n_settings": pl.Int64, "n_seeds": pl.Int64})
    long = stage_benchmarks(trials, evals).filter(pl.col("metric").is_in(list(BENCHMARK_METRICS)))
    if long.is_empty():
        return empty
    frame = _normalised(trials)
    settings = setting_stages(trials).join(
        frame.group_by(SETTING).agg(final_stage=pl.col("stage").max()), on=SETTING
    )
    wanted = pl.col("stage") == 0
    wanted = wanted | (pl.col("stage").is_between(1, pl.col("final_stage")) if stages == "all"
                       else (pl.col("stage") == 1) | (pl.col("stage") == pl.col("final_stage")))
    long = long.join(settings.select(*SETTING, "final_stage", "methods", "tasks"), on=SETTING).filter(wanted)
    if long.is_empty():
        return empty

    # A model's identity: its stage keys over the setting's seeds (the base model: its name).
    setting_trials = frame.select("trial_id", *SETTING).unique()
    keys = (
        frame.select("trial_id", "stage", "stage_key")
        .join(setting_trials, on="trial_id")
        .group_by(*SETTING, "stage")
        .agg(complete=pl.col("stage_key").is_not_null().all(),
             identity=pl.col("stage_key").drop_nulls().unique().sort().str.join("|"))
    )
    base = frame.group_by(SETTING).agg(base_model=pl.col("model").drop_nulls().first())
    models = (
        long.select(*SETTING, "stage", "methods", "tasks").unique()
        .join(keys, on=[*SETTING, "stage"], how="left")
        .join(base, on=SETTING, how="left")
        .with_columns(
            identity=pl.when(pl.col("stage") == 0)
            .then(pl.concat_str(pl.lit("base:"), pl.col("base_model").fill_null("")))
            .when(pl.col("complete").fill_null(False))
            .then(pl.col("identity"))
            .otherwise(pl.concat_str(pl.col("chain"), pl.lit("\x00"), pl.col("grid_point"), pl.lit("\x00"),
                                     pl.col("stage").cast(pl.String)))
        )
        # The setting with the most numbers at that stage speaks for a shared model (all do the
        # same where every trial evaluates the same tasks), then the first in (chain, grid_point).
        .join(long.group_by(*SETTING, "stage").agg(n_cells=pl.len()), on=[*SETTING, "stage"])
        .sort(pl.col("n_cells"), *SETTING, "stage", descending=[True, False, False, False])
    )
    shared = models.group_by("identity").agg(n_settings=pl.len().cast(pl.Int64))
    models = models.unique("identity", keep="first", maintain_order=True).join(shared, on="identity")

    def label(row: dict) -> str:
        if row["stage"] == 0:
            return f"Base model ({row['base_model']})" if row["base_model"] else "Base model"
        return model_label(row["methods"][: row["stage"]], row["tasks"][: row["stage"]])

    models = models.with_columns(
        model=pl.struct("stage", "methods", "tasks", "base_model").map_elements(label, return_dtype=pl.String),
        grid=pl.col("grid_point").map_elements(grid_label, return_dtype=pl.String),
    )
    cells = long.join(models.select(*SETTING, "stage"), on=[*SETTING, "stage"], how="semi")
    columns = _paper_benchmark_columns(cells)
    wide = models.select(*SETTING, "stage", "model", "grid", "n_settings", "methods").join(
        cells.group_by(*SETTING, "stage").agg(n_seeds=pl.col("n_seeds").min()), on=[*SETTING, "stage"]
    )
    for metric, task in columns:
        name = f"{BENCHMARK_METRICS[metric]}_{task_label(task)}"
        cell = cells.filter((pl.col("metric") == metric) & (pl.col("eval_task") == task)).select(
            *SETTING, "stage", pl.col("value").alias(name))
        wide = wide.join(cell, on=[*SETTING, "stage"], how="left")
    wide = expand_grid_point(wide)
    grid_keys = [c for c in wide.columns if c not in models.columns and c not in ("n_seeds",)
                 and not c.startswith(("Acc_", "Safe_"))]
    order = sorted(
        range(wide.height),
        key=lambda i: (
            wide["stage"][i] != 0,
            _method_rank(wide["methods"][i][0]) if wide["stage"][i] else (0, ""),
            wide["stage"][i],
            wide["model"][i],
            tuple((v is not None, v if isinstance(v, (int, float)) else 0, str(v))
                  for v in (wide[k][i] for k in grid_keys)),
            wide["chain"][i],
        ),
    )
    value_columns = [f"{BENCHMARK_METRICS[m]}_{task_label(t)}" for m, t in columns]
    return wide[order].select(*BENCHMARK_COLUMNS, *grid_keys, *value_columns)


# ------------------------------------------------------------------------------ listing


BUILDERS = {
    "ordering": ordering_table,
    "first_stage_method": first_stage_method_table,
    "hyperparameter": hyperparameter_table,
    "benchmarks": benchmark_table,
}


def paper_tables(trials: Frame, evals: Frame) -> dict[str, pl.DataFrame]:
    """Every paper table that applies to these results, by name (BUILDERS' keys, in that order)."""
    built = {name: builder(trials, evals) for name, builder in BUILDERS.items()}
    return {name: table for name, table in built.items() if not table.is_empty()}


def applicable_tables(trials: Frame, evals: Frame) -> list[str]:
    """Names (BUILDERS' keys) of the paper tables the results fill: a table applies when its
    builder gives at least one row."""
    return list(paper_tables(trials, evals))
