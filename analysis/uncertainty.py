"""95% confidence intervals for accuracy, forgetting, WG and biased forgetting, and a paired
test of whether a group forgets more (or less) than the task as a whole — from `predictions`.

The point estimates are exactly those of `analysis.forgetting` (paper §2.4), recomputed from the
per-example records: per trial and group, accuracy = correct / n; per setting (chain,
grid_point) the accuracies are averaged over the setting's trials (one per seed) and then
differenced; WG forgetting = max over groups of the seed-mean group forgetting (ties: the group
first alphabetically); max biased forgetting = WG − overall forgetting. Only option-scoring rows
count (mode null or "score"), except for the eval tasks passed as `generation_tasks`, whose
generate-mode rows (correct = judged safe) are their records, so their forgetting is on safe %; an example listing several groups counts toward each of them, and
"all" is every example. By default forgetting is measured at each trial's final stage
(θ_AB), against stage 1 (θ_A), on the first task of the chain.

Intervals: two-level (hierarchical) nonparametric bootstrap, percentile method
------------------------------------------------------------------------------
One replicate (1) draws the setting's trials (seeds) with replacement, as many as it has, then
(2) for every drawn trial independently draws that trial's evaluation examples with replacement,
as many as it has, and (3) recomputes the statistic exactly as the point estimate is computed
(seed mean of per-group accuracy, then the differences, the max over groups, ...). The interval
is the (1 − level)/2 and (1 + level)/2 quantiles of the replicates (default B = 1000, level
0.95). So the interval covers both sources of noise in a reported number: which seeds were run
and which finite evaluation set was used. With a single seed, step (1) always picks that seed
and only the example-level (evaluation-set) variability is reflected — the interval then says
nothing about seed-to-seed variation. Trials, not seed values, are the resampled units: a
setting normally has one trial per seed (n_seeds counts distinct seeds).

Pairing. Forgetting compares the *same* examples at stage 1 and stage s, so an example is drawn
once and enters both accuracies with its own two outcomes (correct at θ_A, correct at θ_AB).
Examples are paired on example_id; an example evaluated at only one of the two stages is left
out (in a complete results folder there are none). Pairing is what makes the intervals tight: a
model whose answers did not change at all has forgetting exactly 0 in every replicate (interval
[0, 0]), whereas resampling the two stages independently would give an interval as wide as
that of an accuracy. Group accuracies are computed on the same draw, so group-minus-overall
differences are paired too.

Implementation. A draw of n examples with replacement only matters through how many times
each *kind* of example is drawn; examples of a trial are collapsed into cells (their set of
groups × correct at each stage), and a replicate draws Multinomial(n, cell frequencies) cell
counts — the same distribution as drawing n example indices, at a cost independent of n.
(When a trial has so many distinct cells that this is slower, n indices are drawn per
replicate and counted per cell instead: same law.) Group sums are then one matrix product
(counts × cell-membership matrix). There is no Python loop over examples or replicates;
replicates are processed in blocks of at most ~2M drawn numbers to bound memory. Settings are
bootstrapped on one thread per core (numpy's draws release the GIL). Each setting gets its own
random stream derived from `seed` and the setting's key, so results are deterministic and do
not change when other settings are added to or dropped from the tables.

A replicate in which a group drew no examples (a tiny group) has no accuracy for that group
for that trial; as in the point estimate (a trial without the group does not count toward it),
the group's seed mean is over the trials that have it, and a replicate where no trial has it is
skipped for that statistic (n_boot says how many replicates were usable).

Caveat on maxima. WG forgetting (and max biased forgetting) is the maximum of noisy group
estimates; the bootstrap distribution of a maximum sits above the plug-in value when several
groups are close to the max, so with many near-tied groups the percentile interval is shifted
upward and may even exclude the point estimate. Read these intervals as indicative; the
per-group tests below are the sound way to ask whether a particular group is singled out.

Group tests (`group_forgetting_tests`)
--------------------------------------
For each group g, difference = Forgetting_{A,g} − Forgetting_A = BiasedForgetting_{A,g}.
- CI and `p_bootstrap`: the paired two-level bootstrap above, applied to the difference. The
  p-value is the percentile-bootstrap p-value of "difference = 0",
  p = min(1, 2·min((1 + #{d* ≤ 0}) / (B + 1), (1 + #{d* ≥ 0}) / (B + 1))), i.e. the smallest
  1 − level at which the percentile interval excludes 0 (with the +1 correction, so p is never
  0). It is chosen because it is consistent with the reported interval and accounts for the
  same variability (seeds and examples); it is approximate (bootstrap), and it cannot go below
  2 / (B + 1) — raise n_boot for finer p-values.
- `p_permutation`: a stratified permutation test of the example-level null "within every
  trial, whether an example flipped correct → wrong (or back) does not depend on membership of
  g": the members of g are re-drawn at random among the trial's examples (same size; a
  multivariate hypergeometric draw of the counts of flip −1 / 0 / +1, so it is cheap), and the
  statistic mean over trials of (group − overall forgetting) is compared in absolute value.
  It conditions on the trained models (seed variability is not part of its null), so it
  answers "is this group's forgetting in these runs more than chance assignment of the flips",
  and is exact up to Monte Carlo error, p = (1 + #{|d*| ≥ |d|}) / (B + 1).
Multiple comparisons: every group of a setting is tested, so the chance that some group looks
biased by luck grows with the number of groups. `p_*_holm` are Holm-adjusted across the groups
of the same setting and stage (controls the family-wise error rate, no independence assumed);
use those when asking "is any group singled out", the raw ones for a group named in advance.
Nothing is adjusted across settings.

Only numpy and polars are used here (no torch, transformers or ray).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl

from analysis.accuracy import ALL_GROUPS, Frame
from analysis.forgetting import SETTING, trial_overview
from analysis.grid import expand_grid_point

FORGETTING_METRICS = (
    "acc_first_task_after_first_stage",
    "acc_first_task_after_final",
    "forgetting",
    "wg_forgetting",
    "max_biased_forgetting",
)

# Upper bound on the elements of one (replicates × cells) block of drawn counts.
_CHUNK_ELEMENTS = 1 << 21
# Slack when comparing replicate differences with 0 (exact zeros are common: identical groups).
_EPS = 1e-12


# ---------------------------------------------------------------- reading the predictions


def _score_predictions(predictions: Frame, generation_tasks: Sequence[str] = ()) -> pl.LazyFrame:
    """The per-example records of each task's headline metric, with typed keys (a null group
    list is an empty one): option-scoring rows, plus the generate-mode rows of
    `generation_tasks` (correct = the continuation was judged safe; the safe metric)."""
    lazy = predictions.lazy()
    names = lazy.collect_schema().names()
    if "mode" in names:
        kept = pl.col("mode").is_null() | (pl.col("mode") == "score")
        if generation_tasks:
            kept = kept | ((pl.col("mode") == "generate") & pl.col("eval_task").is_in(list(generation_tasks)))
        lazy = lazy.filter(kept)
    groups = (
        pl.col("groups").cast(pl.List(pl.String))
        if "groups" in names
        else pl.lit([], dtype=pl.List(pl.String))
    )
    return lazy.select(
        pl.col("trial_id").cast(pl.String),
        pl.col("stage").cast(pl.Int64),
        pl.col("eval_task").cast(pl.String),
        pl.col("example_id").cast(pl.String),
        # Left as written (order, repeats, "all", nulls): _build_units reads membership from it,
        # so cleaning 10^6 lists here would only merge a few cells.
        groups.fill_null([]).alias("groups"),
        pl.col("correct").cast(pl.Boolean),
    )


def _duplicated_examples(frame: Frame, *, exact: bool) -> pl.LazyFrame:
    """The (trial, stage, eval task) keys with fewer distinct example ids than rows (lazy).

    exact=False counts distinct 64-bit hashes of the ids instead of the ids (about twice as
    fast at 10^7 rows): distinct hashes imply distinct ids, so a key it does not list has no
    duplicate; a key it lists has a duplicate or, very rarely, a hash collision, which the
    exact count then tells apart."""
    ids = pl.col("example_id") if exact else pl.col("example_id").hash()
    counted = frame.lazy().group_by("trial_id", "stage", "eval_task").agg(rows=pl.len(), examples=ids.n_unique())
    return counted.filter(pl.col("rows") > pl.col("examples")).sort("trial_id", "stage", "eval_task")


def _collect_refusing_duplicates(cells: pl.LazyFrame, records: pl.LazyFrame) -> pl.DataFrame:
    """Collect `cells` (built from `records`) and refuse an example listed twice for the same
    (trial, stage, eval task). One collect_all, so the prediction files are scanned once for
    both (at 10^7 rows a separate check cost as much as the cells themselves)."""
    cells, suspects = pl.collect_all([cells, _duplicated_examples(records, exact=False)])
    if suspects.height:
        duplicated = _duplicated_examples(records, exact=True).collect()
        if duplicated.height:
            raise ValueError(
                "predictions list an example more than once among the measured rows (option scoring, or "
                "generation for a generation task) of the same "
                f"(trial_id, stage, eval_task), e.g. {duplicated.row(0, named=True)}"
            )
    return cells


def _in_threads(function, items: list) -> list:
    """[function(item) for item in items], on up to one thread per core. The bootstrap's work is
    numpy draws and matrix products, which release the GIL; each setting has its own random
    stream, so the results do not depend on the scheduling."""
    workers = min(len(items), os.cpu_count() or 1, 8)
    if workers <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, items))


# ---------------------------------------------------------------- the bootstrap engine


@dataclass(frozen=True)
class _Unit:
    """One trial (seed) collapsed into cells of identical examples."""

    counts: np.ndarray  # (K,) examples per cell
    member: np.ndarray  # (K, G1) float 0/1; column 0 is "all"
    weighted: np.ndarray  # (K, G1 * m) member × value of each of the m stages

    @property
    def n(self) -> int:
        return int(self.counts.sum())


def _build_units(cells: pl.DataFrame, values: list[str]) -> tuple[list[str], list[_Unit], pl.DataFrame]:
    """Cells of one setting → (group names, one unit per trial sorted by trial_id, unit info).

    `cells` has trial_id, seed, groups, the boolean value columns and count.
    """
    cells = cells.sort("trial_id", "groups", *values)
    exploded = cells.with_row_index("cell").select("cell", "trial_id", "groups").explode("groups")
    # An example with no groups only counts toward "all"; "all" listed as a group is the same;
    # a group listed twice is one membership (the matrix entry is set, not added).
    exploded = exploded.filter(pl.col("groups").is_not_null() & (pl.col("groups") != ALL_GROUPS))
    groups = sorted(set(exploded.get_column("groups").to_list()))
    n_cols = 1 + len(groups)
    member = np.zeros((cells.height, n_cols))
    member[:, 0] = 1.0
    if exploded.height:
        rows = exploded.get_column("cell").to_numpy()
        index = {group: column for column, group in enumerate(groups, start=1)}
        cols = exploded.get_column("groups").replace_strict(index, return_dtype=pl.Int64).to_numpy()
        member[rows, cols] = 1.0
    value_matrix = np.column_stack([cells.get_column(v).cast(pl.Float64).to_numpy() for v in values])
    weighted = (member[:, :, None] * value_matrix[:, None, :]).reshape(cells.height, -1)
    counts = cells.get_column("count").cast(pl.Int64).to_numpy()
    trial_ids = cells.get_column("trial_id").to_numpy()
    units = []
    info = cells.group_by("trial_id", maintain_order=True).agg(pl.col("seed").first())
    for trial in info.get_column("trial_id").to_list():
        mask = trial_ids == trial
        units.append(_Unit(counts[mask], member[mask], weighted[mask]))
    return groups, units, info


def _unit_means(unit: _Unit, draws: np.ndarray, n_values: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-draw group accuracies (c, G1, m) (0 where the group is empty) and validity (c, G1)."""
    size = draws.shape[0]
    n_per_group = draws @ unit.member
    sums = (draws @ unit.weighted).reshape(size, -1, n_values)
    valid = n_per_group > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(valid[:, :, None], sums / n_per_group[:, :, None], 0.0)
    return acc, valid


def _seed_means(units: list[_Unit], n_values: int, n_boot: int | None, rng) -> np.ndarray:
    """Seed-mean group accuracies: (G1, m) for the data itself (n_boot None), else (B, G1, m).

    Replicates: trials drawn with replacement, then each drawn trial's examples drawn with
    replacement (multinomial cell counts); a group is averaged over the drawn trials in which
    it has examples (NaN where it has none).
    """
    n_cols = units[0].member.shape[1]
    if n_boot is None:
        total = np.zeros((1, n_cols, n_values))
        seen = np.zeros((1, n_cols))
        for unit in units:
            acc, valid = _unit_means(unit, unit.counts[None, :].astype(float), n_values)
            total += acc
            seen += valid
        with np.errstate(invalid="ignore", divide="ignore"):
            return (total / seen[:, :, None])[0]
    n_units = len(units)
    picks = rng.integers(0, n_units, size=(n_boot, n_units))
    total = np.zeros((n_boot, n_cols, n_values))
    seen = np.zeros((n_boot, n_cols))
    for index, unit in enumerate(units):
        replicate = np.nonzero(picks == index)[0]  # one entry per time the trial was drawn
        if replicate.size == 0:
            continue
        n, n_cells = unit.n, unit.counts.size
        # Multinomial cell counts cost ~K binomial draws per replicate; with many distinct
        # cells, drawing n example indices and counting them per cell is cheaper (same law).
        by_index = 3 * n_cells > n
        if by_index:
            # Cells are contiguous runs of examples: per-example draw counts, summed per run.
            starts = np.concatenate([[0], np.cumsum(unit.counts)[:-1]])
        else:
            probabilities = unit.counts / n
        step = max(1, _CHUNK_ELEMENTS // max(1, n if by_index else n_cells))
        for start in range(0, replicate.size, step):
            rows = replicate[start:start + step]
            if by_index:
                drawn = rng.integers(0, n, size=(rows.size, n))
                drawn += (np.arange(rows.size) * n)[:, None]
                per_example = np.bincount(drawn.ravel(), minlength=rows.size * n).reshape(rows.size, n)
                draws = np.add.reduceat(per_example, starts, axis=1).astype(float)
            else:
                draws = rng.multinomial(n, probabilities, size=rows.size).astype(float)
            acc, valid = _unit_means(unit, draws, n_values)
            np.add.at(total, rows, acc)
            np.add.at(seen, rows, valid)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / seen[:, :, None]


def _rng(seed: int, key: Sequence[object], stream: int = 0) -> np.random.Generator:
    """A generator that depends only on `seed` and the unit's key (not on other settings)."""
    digest = zlib.crc32("\x1f".join("" if part is None else str(part) for part in key).encode())
    return np.random.default_rng(np.random.SeedSequence([int(seed), digest, stream]))


# No warnings.catch_warnings here: it swaps a process-wide filter list, which is not safe on the
# bootstrap's threads. All-NaN columns (a group no replicate drew) are skipped instead, so numpy
# has nothing to warn about.


def _quantiles(replicates: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Percentile interval over axis 0 of a (B, k) array, ignoring non-finite replicates:
    low, high (NaN where no replicate is finite), n usable."""
    alpha = (1.0 - level) / 2.0
    finite = np.isfinite(replicates)
    usable = finite.sum(axis=0)
    low, high = np.full(replicates.shape[1:], np.nan), np.full(replicates.shape[1:], np.nan)
    some = usable > 0
    if some.any():
        kept = np.where(finite, replicates, np.nan)[:, some]
        low[some], high[some] = np.nanquantile(kept, [alpha, 1.0 - alpha], axis=0)
    return low, high, usable


def _nanmax(values: np.ndarray, axis: int) -> np.ndarray:
    """np.nanmax that gives NaN for an all-NaN slice without warning (see _quantiles)."""
    empty = np.isnan(values).all(axis=axis)
    return np.where(empty, np.nan, np.max(np.where(np.isnan(values), -np.inf, values), axis=axis))


def _check(n_boot: int, level: float) -> None:
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _none_if_nan(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


# ---------------------------------------------------------------- forgetting


def _forgetting_cells(
    trials: Frame, predictions: Frame, after_stage: int | None, generation_tasks: Sequence[str] = ()
) -> pl.DataFrame:
    """Paired first-task cells: one row per (setting, trial, groups, c1, cs) with its count."""
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
    # else (a float or text stage, off the contract) is cast first, as _score_predictions does.
    stage = pl.col("stage")
    if not lazy.collect_schema()["stage"].is_integer():
        stage = stage.cast(pl.Int64)
    wanted = lazy.filter(
        pl.col("eval_task").is_in(keys.get_column("first_task").unique().to_list())
        & stage.is_in([1, *keys.get_column("after_stage").unique().to_list()])
    )
    # Kept lazy to the end: at 10^7 prediction rows only the cell counts are materialised.
    on_first = (
        _score_predictions(wanted, generation_tasks)
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
    cells = (
        reference.join(later, on=["trial_id", "example_id"], how="inner")
        .group_by(*SETTING, "first_task", "after_stage", "trial_id", "seed", "groups", "c1", "cs")
        .agg(count=pl.len())
        .sort(*SETTING, "after_stage", "trial_id")
    )
    return _collect_refusing_duplicates(cells, on_first)


@dataclass(frozen=True)
class _SettingForgetting:
    key: dict
    groups: list[str]
    n_seeds: int
    n_examples: np.ndarray  # (G1,) examples per group, max over trials
    point: np.ndarray  # (G1, 2) seed-mean accuracy at stage 1 and stage s
    boot: np.ndarray  # (B, G1, 2)
    units: list[_Unit]


def _forgetting_settings(trials, predictions, *, after_stage, n_boot, seed, generation_tasks=()) -> list[_SettingForgetting]:
    cells = _forgetting_cells(trials, predictions, after_stage, generation_tasks)
    keys = [*SETTING, "first_task", "after_stage"]

    def setting(part: pl.DataFrame) -> _SettingForgetting:
        key = {name: part.get_column(name)[0] for name in keys}
        groups, units, info = _build_units(part, ["c1", "cs"])
        rng = _rng(seed, ["forgetting", *key.values()])
        n_examples = np.max([unit.counts @ unit.member for unit in units], axis=0)
        return _SettingForgetting(
            key=key,
            groups=groups,
            n_seeds=info.get_column("seed").n_unique(),
            n_examples=n_examples.astype(np.int64),
            point=_seed_means(units, 2, None, rng),
            boot=_seed_means(units, 2, int(n_boot), rng),
            units=units,
        )

    return _in_threads(setting, cells.partition_by(keys, maintain_order=True))


def _forgetting_statistics(means: np.ndarray) -> dict[str, np.ndarray]:
    """From seed-mean accuracies (..., G1, 2): every forgetting statistic (leading axes kept)."""
    forgetting = means[..., 0] - means[..., 1]  # (..., G1)
    overall = forgetting[..., 0]
    per_group = forgetting[..., 1:]
    wg = _nanmax(per_group, axis=-1) if per_group.shape[-1] else np.full(overall.shape, np.nan)
    return {
        "acc_first_task_after_first_stage": means[..., 0, 0],
        "acc_first_task_after_final": means[..., 0, 1],
        "forgetting": overall,
        "wg_forgetting": wg,
        "max_biased_forgetting": wg - overall,
        "group_forgetting": per_group,
        "difference": per_group - overall[..., None],
    }


def _worst_group(groups: list[str], group_forgetting: np.ndarray) -> str | None:
    if not groups or not np.isfinite(group_forgetting).any():
        return None
    # nanargmax returns the first maximum; groups are sorted, so ties go to the first name.
    return groups[int(np.nanargmax(group_forgetting))]


def forgetting_intervals(
    trials: Frame,
    predictions: Frame,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    after_stage: int | None = None,
    generation_tasks: Sequence[str] = (),
    _settings: list | None = None,
) -> pl.DataFrame:
    """Per (setting, metric): point estimate and bootstrap interval of forgetting statistics.

    Metrics (rows): acc_first_task_after_first_stage (Acc_A(θ_A)), acc_first_task_after_final
    (Acc_A at `after_stage`), forgetting, wg_forgetting and max_biased_forgetting (the last two
    only when the first task has groups). after_stage=None is each trial's final stage (as in
    forgetting_summary), an int that stage (trials that reach it).

    Columns: chain, grid_point (+ one column per grid key), first_task, after_stage, metric,
    group (the worst group on WG / max biased rows, else null), estimate, low, high, level,
    n_seeds, n_examples (paired first-task examples per seed; of the worst group on its rows),
    n_boot (usable replicates). The estimates equal forgetting_summary's (for after_stage=None)
    on evals computed from the same predictions (accuracy_from_predictions; for a task in
    `generation_tasks` the engine's safe rows, with forgetting_summary(metric="primary")). See
    the module docstring for the method.
    """
    _check(n_boot, level)
    rows = []
    settings = _settings if _settings is not None else _forgetting_settings(
        trials, predictions, after_stage=after_stage, n_boot=n_boot, seed=seed,
        generation_tasks=generation_tasks)
    for setting in settings:
        point = _forgetting_statistics(setting.point)
        boot = _forgetting_statistics(setting.boot)
        worst = _worst_group(setting.groups, point["group_forgetting"])
        worst_n = int(setting.n_examples[1 + setting.groups.index(worst)]) if worst else None
        for metric in FORGETTING_METRICS:
            if metric in ("wg_forgetting", "max_biased_forgetting") and not setting.groups:
                continue
            low, high, usable = _quantiles(boot[metric][:, None], level)
            on_group = metric in ("wg_forgetting", "max_biased_forgetting")
            rows.append({
                **setting.key,
                "metric": metric,
                "group": worst if on_group else None,
                "estimate": _none_if_nan(point[metric]),
                "low": _none_if_nan(low[0]),
                "high": _none_if_nan(high[0]),
                "level": level,
                "n_seeds": setting.n_seeds,
                "n_examples": worst_n if on_group else int(setting.n_examples[0]),
                "n_boot": int(usable[0]),
            })
    return expand_grid_point(pl.DataFrame(rows, schema=_FORGETTING_SCHEMA))


_KEY_SCHEMA = {
    "chain": pl.String, "grid_point": pl.String, "first_task": pl.String, "after_stage": pl.Int64,
}
_FORGETTING_SCHEMA = {
    **_KEY_SCHEMA, "metric": pl.String, "group": pl.String, "estimate": pl.Float64,
    "low": pl.Float64, "high": pl.Float64, "level": pl.Float64, "n_seeds": pl.Int64,
    "n_examples": pl.Int64, "n_boot": pl.Int64,
}
_TEST_SCHEMA = {
    **_KEY_SCHEMA, "group": pl.String, "n_seeds": pl.Int64, "n_examples": pl.Int64,
    "group_forgetting": pl.Float64, "group_forgetting_low": pl.Float64,
    "group_forgetting_high": pl.Float64, "average_forgetting": pl.Float64,
    "difference": pl.Float64, "difference_low": pl.Float64, "difference_high": pl.Float64,
    "p_bootstrap": pl.Float64, "p_bootstrap_holm": pl.Float64, "p_permutation": pl.Float64,
    "p_permutation_holm": pl.Float64, "is_worst_group": pl.Boolean, "level": pl.Float64,
    "n_boot": pl.Int64,
}


# ---------------------------------------------------------------- group tests


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None stays None, not counted)."""
    present = [(p, i) for i, p in enumerate(p_values) if p is not None and np.isfinite(p)]
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    m = len(present)
    for rank, (p, index) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted


def _bootstrap_p(replicates: np.ndarray) -> float | None:
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return None
    below = (1 + np.count_nonzero(finite <= _EPS)) / (finite.size + 1)
    above = (1 + np.count_nonzero(finite >= -_EPS)) / (finite.size + 1)
    return float(min(1.0, 2.0 * min(below, above)))


def _permutation_p(units: list[_Unit], column: int, n_perm: int, rng) -> float | None:
    """Stratified permutation p of mean over trials of (group − overall forgetting) = 0.

    Per trial: flips d = c1 − cs ∈ {−1, 0, +1}; the group's members are redrawn among the
    trial's examples (multivariate hypergeometric counts of each flip value).
    """
    observed = []
    permuted = []
    for unit in units:
        size = int(unit.counts @ unit.member[:, column])
        if size == 0:
            continue
        c1 = unit.weighted.reshape(unit.counts.size, -1, 2)[:, 0, 0]
        cs = unit.weighted.reshape(unit.counts.size, -1, 2)[:, 0, 1]
        flip = np.rint(c1 - cs).astype(int)
        colors = np.array([unit.counts[flip == value].sum() for value in (-1, 0, 1)], dtype=np.int64)
        in_group = unit.member[:, column] > 0
        overall = (colors[2] - colors[0]) / unit.n
        group = (unit.counts[in_group & (flip == 1)].sum() - unit.counts[in_group & (flip == -1)].sum())
        group = group / size
        observed.append(group - overall)
        drawn = rng.multivariate_hypergeometric(colors, size, size=n_perm)
        permuted.append((drawn[:, 2] - drawn[:, 0]) / size - overall)
    if not observed:
        return None
    statistic = abs(float(np.mean(observed)))
    null = np.abs(np.mean(permuted, axis=0))
    return float((1 + np.count_nonzero(null >= statistic - _EPS)) / (n_perm + 1))


def group_forgetting_tests(
    trials: Frame,
    predictions: Frame,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    after_stage: int | None = None,
    generation_tasks: Sequence[str] = (),
    permutation: bool = True,
    _settings: list | None = None,
) -> pl.DataFrame:
    """Per (setting, group of the first task): is the group's forgetting different from the task's?

    Columns: chain, grid_point (+ grid keys), first_task, after_stage, group, n_seeds,
    n_examples (the group's examples per seed, max over seeds), group_forgetting (+ _low,
    _high), average_forgetting (Forgetting_A), difference = group − average forgetting
    (= BiasedForgetting_{A,g}, + _low, _high: paired two-level bootstrap percentile interval),
    p_bootstrap (two-sided percentile-bootstrap p of difference = 0), p_permutation (stratified
    permutation test, n_boot permutations; null when permutation=False), their Holm
    adjustments across the groups of the setting (p_*_holm), is_worst_group, level, n_boot.
    The bootstrap replicates are those of forgetting_intervals with the same seed. See the
    module docstring for what each test assumes.
    """
    _check(n_boot, level)
    rows = []
    settings = _settings if _settings is not None else _forgetting_settings(
        trials, predictions, after_stage=after_stage, n_boot=n_boot, seed=seed,
        generation_tasks=generation_tasks)
    for setting in settings:
        if not setting.groups:
            continue
        point = _forgetting_statistics(setting.point)
        boot = _forgetting_statistics(setting.boot)
        worst = _worst_group(setting.groups, point["group_forgetting"])
        group_low, group_high, _ = _quantiles(boot["group_forgetting"], level)
        diff_low, diff_high, usable = _quantiles(boot["difference"], level)
        perm_rng = _rng(seed, ["permutation", *setting.key.values()])
        block = []
        for index, group in enumerate(setting.groups):
            block.append({
                **setting.key,
                "group": group,
                "n_seeds": setting.n_seeds,
                "n_examples": int(setting.n_examples[1 + index]),
                "group_forgetting": _none_if_nan(point["group_forgetting"][index]),
                "group_forgetting_low": _none_if_nan(group_low[index]),
                "group_forgetting_high": _none_if_nan(group_high[index]),
                "average_forgetting": _none_if_nan(point["forgetting"]),
                "difference": _none_if_nan(point["difference"][index]),
                "difference_low": _none_if_nan(diff_low[index]),
                "difference_high": _none_if_nan(diff_high[index]),
                "p_bootstrap": _bootstrap_p(boot["difference"][:, index]),
                "p_permutation": (
                    _permutation_p(setting.units, 1 + index, int(n_boot), perm_rng) if permutation else None
                ),
                "is_worst_group": group == worst,
                "level": level,
                "n_boot": int(usable[index]),
            })
        for name in ("p_bootstrap", "p_permutation"):
            for row, adjusted in zip(block, holm([row[name] for row in block]), strict=True):
                row[f"{name}_holm"] = adjusted
        rows.extend(block)
    return expand_grid_point(pl.DataFrame(rows, schema=_TEST_SCHEMA))


def forgetting_uncertainty(
    trials: Frame,
    predictions: Frame,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    after_stage: int | None = None,
    generation_tasks: Sequence[str] = (),
    permutation: bool = True,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(forgetting_intervals, group_forgetting_tests) from one pass over the predictions and one
    set of bootstrap replicates: what the report uses (the two functions alone each read the
    predictions and draw the same replicates again)."""
    _check(n_boot, level)
    settings = _forgetting_settings(trials, predictions, after_stage=after_stage, n_boot=n_boot, seed=seed,
                                    generation_tasks=generation_tasks)
    common = {"n_boot": n_boot, "seed": seed, "level": level, "after_stage": after_stage,
              "generation_tasks": generation_tasks, "_settings": settings}
    return (forgetting_intervals(trials, predictions, **common),
            group_forgetting_tests(trials, predictions, permutation=permutation, **common))


# ---------------------------------------------------------------- accuracy


_ACCURACY_SCHEMA = {
    "chain": pl.String, "grid_point": pl.String, "stage": pl.Int64, "eval_task": pl.String,
    "group": pl.String, "n_seeds": pl.Int64, "n": pl.Int64, "estimate": pl.Float64,
    "low": pl.Float64, "high": pl.Float64, "level": pl.Float64, "n_boot": pl.Int64,
}


def accuracy_intervals(
    trials: Frame,
    predictions: Frame,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    stages: Sequence[int] | None = None,
    eval_tasks: Sequence[str] | None = None,
    generation_tasks: Sequence[str] = (),
) -> pl.DataFrame:
    """Per (setting, stage, eval_task, group): seed-mean accuracy with a bootstrap interval.

    Same two-level bootstrap as forgetting_intervals (trials, then each trial's examples); the
    estimate equals mean_stage_accuracy's accuracy on evals computed from the same predictions.
    `stages` / `eval_tasks` restrict the work. `generation_tasks` (analysis.generation_tasks of
    the evals) are measured on their generate-mode records, i.e. on the safe metric. Columns: chain, grid_point (+ grid keys), stage,
    eval_task, group ("all" or a group), n_seeds, n (the group's examples per seed, max over
    seeds), estimate, low, high, level, n_boot (usable replicates).
    """
    _check(n_boot, level)
    overview = trial_overview(trials).select("trial_id", *SETTING, "seed")
    lazy = _score_predictions(predictions, generation_tasks).join(overview.lazy(), on="trial_id", how="inner")
    if stages is not None:
        lazy = lazy.filter(pl.col("stage").is_in([int(s) for s in stages]))
    if eval_tasks is not None:
        lazy = lazy.filter(pl.col("eval_task").is_in(list(eval_tasks)))
    keys = [*SETTING, "stage", "eval_task"]
    cells = _collect_refusing_duplicates(
        lazy.group_by(*keys, "trial_id", "seed", "groups", "correct").agg(count=pl.len()).sort(*keys, "trial_id"),
        lazy,
    )

    def setting_rows(part: pl.DataFrame) -> list[dict]:
        key = {name: part.get_column(name)[0] for name in keys}
        groups, units, info = _build_units(part, ["correct"])
        rng = _rng(seed, ["accuracy", *key.values()])
        point = _seed_means(units, 1, None, rng)[:, 0]
        boot = _seed_means(units, 1, int(n_boot), rng)[:, :, 0]
        low, high, usable = _quantiles(boot, level)
        n_per_group = np.max([unit.counts @ unit.member for unit in units], axis=0)
        return [{
            **key,
            "group": group,
            "n_seeds": info.get_column("seed").n_unique(),
            "n": int(n_per_group[index]),
            "estimate": _none_if_nan(point[index]),
            "low": _none_if_nan(low[index]),
            "high": _none_if_nan(high[index]),
            "level": level,
            "n_boot": int(usable[index]),
        } for index, group in enumerate([ALL_GROUPS, *groups])]

    rows = [row for part in _in_threads(setting_rows, cells.partition_by(keys, maintain_order=True)) for row in part]
    result = pl.DataFrame(rows, schema=_ACCURACY_SCHEMA).sort(*keys, "group")
    return expand_grid_point(result)
