"""A study's per-example predictions as item cells: what analysis.uncertainty resamples.

Reads only the records each statistic needs (option-scoring rows, or the generate-mode rows of
generation tasks), refuses an example listed twice for the same (trial, stage, eval task), and
collapses the examples of each setting into cells: one per (groups, answers in every trial).
See analysis.resampling for why an example is one unit across trials.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from analysis.accuracy import Frame
from analysis.forgetting import SETTING, trial_overview
from analysis.resampling import ItemCells
from analysis.table_columns import null_column, typed, typed_column
from contract.methods import GENERATE_MODE, SCORE_MODE
from contract.schema import ALL


# ---------------------------------------------------------------- reading the predictions


def score_predictions(predictions: Frame, generation_tasks: Sequence[str] = ()) -> pl.LazyFrame:
    """The per-example records of each task's headline metric, with typed keys (a null group
    list is an empty one): option-scoring rows, plus the generate-mode rows of
    `generation_tasks` (correct = the continuation was judged safe; the safe metric)."""
    lazy = predictions.lazy()
    names = lazy.collect_schema().names()
    if "mode" in names:
        kept = pl.col("mode").is_null() | (pl.col("mode") == SCORE_MODE)
        if generation_tasks:
            kept = kept | ((pl.col("mode") == GENERATE_MODE) & pl.col("eval_task").is_in(list(generation_tasks)))
        lazy = lazy.filter(kept)
    groups = typed_column("predictions", "groups") if "groups" in names else null_column("predictions", "groups", [])
    return lazy.select(
        *typed("predictions", "trial_id", "stage", "eval_task", "example_id"),
        # Left as written (order, repeats, "all", nulls): _build_units reads membership from it,
        # so cleaning 10^6 lists here would only merge a few cells.
        groups.fill_null([]).alias("groups"),
        typed_column("predictions", "correct"),
    )


def duplicated_examples(frame: Frame, *, exact: bool) -> pl.LazyFrame:
    """The (trial, stage, eval task) keys with fewer distinct example ids than rows (lazy).

    exact=False counts distinct 64-bit hashes of the ids instead of the ids (about twice as
    fast at 10^7 rows): distinct hashes imply distinct ids, so a key it does not list has no
    duplicate; a key it lists has a duplicate or, very rarely, a hash collision, which the
    exact count then tells apart."""
    ids = pl.col("example_id") if exact else pl.col("example_id").hash()
    counted = frame.lazy().group_by("trial_id", "stage", "eval_task").agg(rows=pl.len(), examples=ids.n_unique())
    return counted.filter(pl.col("rows") > pl.col("examples")).sort("trial_id", "stage", "eval_task")


def collect_refusing_duplicates(cells: pl.LazyFrame, records: pl.LazyFrame) -> pl.DataFrame:
    """Collect `cells` (built from `records`) and refuse an example listed twice for the same
    (trial, stage, eval task). One collect_all, so the prediction files are scanned once for
    both (at 10^7 rows a separate check cost as much as the cells themselves)."""
    cells, suspects = pl.collect_all([cells, duplicated_examples(records, exact=False)])
    if suspects.height:
        duplicated = duplicated_examples(records, exact=True).collect()
        if duplicated.height:
            raise ValueError(
                "predictions list an example more than once among the measured rows (option scoring, or "
                "generation for a generation task) of the same "
                f"(trial_id, stage, eval_task), e.g. {duplicated.row(0, named=True)}"
            )
    return cells


# ---------------------------------------------------------------- items shared by a setting's trials


# An item's outcome pattern across a setting's trials is packed into integers: trial t is digit
# t % _DIGITS of word t // _DIGITS, in base 1 + 2^m (0 = not evaluated, else 1 + the m outcome
# bits). 27 base-5 digits fit an int64; grouping on integers is several times cheaper than on
# per-item lists at 10^7 prediction rows.
_DIGITS = 27


@dataclass(frozen=True)
class TrialIndex:
    """Each trial's position among its setting's trials (sorted by trial_id), and its seed."""

    frame: pl.DataFrame  # trial_id, word, weight (base ** digit)
    n_words: int
    seeds: dict[str, int]
    by_setting: dict[tuple, list[str]]  # (chain, grid_point) → trial ids in position order

    @staticmethod
    def of(overview: pl.DataFrame, n_values: int) -> "TrialIndex":
        base = 1 + 2**n_values
        trials = overview.select("trial_id", "seed", *SETTING).unique("trial_id").sort(*SETTING, "trial_id")
        by_setting: dict[tuple, list[str]] = {}
        for trial_id, *setting in trials.select("trial_id", *SETTING).iter_rows():
            by_setting.setdefault(tuple(setting), []).append(trial_id)
        position = {t: i for ids in by_setting.values() for i, t in enumerate(ids)}
        tidx = np.array([position[t] for t in trials.get_column("trial_id").to_list()], dtype=np.int64)
        frame = trials.select("trial_id").with_columns(
            word=pl.Series(tidx // _DIGITS, dtype=pl.Int64),
            weight=pl.Series([base ** int(t % _DIGITS) for t in tidx], dtype=pl.Int64))
        n_words = int(tidx.max() // _DIGITS + 1) if tidx.size else 1
        return TrialIndex(frame, n_words, dict(trials.select("trial_id", "seed").iter_rows()), by_setting)

    def trial_ids(self, key: dict) -> list[str]:
        return self.by_setting[tuple(key[name] for name in SETTING)]


def items_lazy(records: pl.LazyFrame, keys: list[str], values: list[str], index: TrialIndex) -> pl.LazyFrame:
    """Per-item records (keys, trial_id, example_id, groups, values) → cells: one row per
    (keys, groups, outcome pattern across trials) with its count of items."""
    code = pl.lit(1, dtype=pl.Int64)
    for bit, value in enumerate(values):
        code = code + pl.col(value).cast(pl.Int64) * (2**bit)
    coded = records.join(index.frame.lazy(), on="trial_id", how="inner").with_columns(
        code=code * pl.col("weight"))
    words = [f"pattern{w}" for w in range(index.n_words)]
    per_item = coded.group_by(*keys, "example_id", "groups").agg(
        pl.when(pl.col("word") == w).then(pl.col("code")).otherwise(0).sum().alias(name)
        for w, name in enumerate(words))
    return per_item.group_by(*keys, "groups", *words).agg(count=pl.len()).sort(*keys)


def item_cells(part: pl.DataFrame, trial_ids: list[str], seeds: dict[str, int], n_values: int) -> ItemCells:
    """The cells of one setting (rows of items_lazy) as arrays. `trial_ids`: the setting's
    trials in tidx order; trials that evaluated none of these items are left out."""
    words = sorted((c for c in part.columns if c.startswith("pattern")), key=lambda c: int(c[len("pattern"):]))
    part = part.sort("groups", *words)
    exploded = part.with_row_index("cell").select("cell", "groups").explode("groups")
    # An example with no groups only counts toward "all"; "all" listed as a group is the same;
    # a group listed twice is one membership (the matrix entry is set, not added).
    exploded = exploded.filter(pl.col("groups").is_not_null() & (pl.col("groups") != ALL))
    groups = sorted(set(exploded.get_column("groups").to_list()))
    n_cells = part.height
    member = np.zeros((n_cells, 1 + len(groups)))
    member[:, 0] = 1.0
    if exploded.height:
        column = {group: c for c, group in enumerate(groups, start=1)}
        rows = exploded.get_column("cell").to_numpy()
        cols = exploded.get_column("groups").replace_strict(column, return_dtype=pl.Int64).to_numpy()
        member[rows, cols] = 1.0
    base = 1 + 2**n_values
    digits = np.zeros((n_cells, len(words) * _DIGITS), dtype=np.int64)
    for w, name in enumerate(words):
        packed = part.get_column(name).cast(pl.Int64).to_numpy().copy()
        for d in range(_DIGITS):
            digits[:, w * _DIGITS + d] = packed % base
            packed //= base
    digits = digits[:, :len(trial_ids)]
    seen = (digits > 0).any(axis=0)
    digits = digits[:, seen]
    kept = [t for t, keep in zip(trial_ids, seen) if keep]
    bits = np.maximum(digits - 1, 0)
    values = np.stack([(bits >> v) & 1 for v in range(n_values)], axis=-1).astype(float)
    return ItemCells(
        groups=groups, trial_ids=kept, seeds=[seeds[t] for t in kept],
        counts=part.get_column("count").cast(pl.Int64).to_numpy(), member=member,
        present=(digits > 0).astype(float), values=values,
    )


# ---------------------------------------------------------------- forgetting: stage 1 against stage s


def forgetting_cells(
    trials: Frame, predictions: Frame, after_stage: int | None, generation_tasks: Sequence[str] = ()
) -> tuple[pl.DataFrame, TrialIndex]:
    """Paired first-task item cells (rows of items_lazy with values c1, cs: correct at stage 1
    and at the compared stage) of every setting, and the trials' positions."""
    overview = trial_overview(trials)
    if after_stage is None:
        overview = overview.filter(pl.col("final_stage") >= 2).with_columns(
            after_stage=pl.col("final_stage")
        )
    else:
        if after_stage < 2:
            raise ValueError(f"after_stage must be 2 or later (stage 1 is the reference), got {after_stage}")
        overview = overview.filter(pl.col("final_stage") >= after_stage).with_columns(
            after_stage=pl.lit(after_stage, dtype=pl.Int64)
        )
    keys = overview.select("trial_id", *SETTING, "seed", "first_task", "after_stage")
    # Only the first tasks at stage 1 and the compared stages are read: filtered on the raw
    # columns, before any cast or join, so the Parquet reader can skip whole files and row groups.
    lazy = predictions.lazy()
    # An integer stage column is compared as stored (so the filter reaches the reader); anything
    # else (a float or text stage, off the contract) is cast first, as score_predictions does.
    stage = pl.col("stage")
    if not lazy.collect_schema()["stage"].is_integer():
        stage = typed_column("predictions", "stage")
    wanted = lazy.filter(
        pl.col("eval_task").is_in(keys.get_column("first_task").unique().to_list())
        & stage.is_in([1, *keys.get_column("after_stage").unique().to_list()])
    )
    # Kept lazy to the end: at 10^7 prediction rows only the cell counts are materialised.
    on_first = (
        score_predictions(wanted, generation_tasks)
        .join(keys.lazy(), on="trial_id", how="inner")
        .filter(pl.col("eval_task") == pl.col("first_task"))
        .filter((pl.col("stage") == 1) | (pl.col("stage") == pl.col("after_stage")))
    )
    reference = on_first.filter(pl.col("stage") == 1).select(
        "trial_id", *SETTING, "seed", "first_task", "after_stage", "example_id", "groups",
        c1="correct",
    )
    later = on_first.filter(pl.col("stage") == pl.col("after_stage")).select(
        "trial_id", "example_id", cs="correct"
    )
    paired = reference.join(later, on=["trial_id", "example_id"], how="inner")
    index = TrialIndex.of(keys, 2)
    cells = items_lazy(paired, [*SETTING, "first_task", "after_stage"], ["c1", "cs"], index)
    return collect_refusing_duplicates(cells, on_first), index
