"""The statistical engine under analysis.uncertainty: a setting's evaluation items shared by its
trials, the eval-item bootstrap, seed variance components with t intervals, and the
permutation of group labels over items.

Why items are shared units. Every trial (seed) of a setting is evaluated on the *same*
evaluation examples, so the luck of which finite eval set was drawn is common to all seeds:
resampling each seed's examples independently would average that luck away over seeds and
understate it by up to the number of seeds. Here an example is one unit carrying its outcomes
in every trial (and at every compared stage), and a bootstrap replicate draws the examples once
for all trials.

Cells. A draw of n items with replacement matters only through how many times each *kind* of
item is drawn. Items are collapsed into cells: the set of groups they belong to (a label row)
× their pattern of outcomes across the trials (which trials evaluated them, and the values at
each compared stage). A replicate is a multinomial draw of cell counts, the same law as drawing
item indices, at a cost that grows with the cells, not the items; when there are more than a
third as many cells as items (many trials), n item indices are drawn and counted per cell
instead (same law). Group sums per trial are then matrix products.

Seeds. With S trials, the seed-to-seed part of the variance is estimated by moments rather
than by resampling S seeds (which, for S = 3, sees only (S−1)/S of the seed variance and has no
small-sample correction; in the coverage simulation of tests/test_uncertainty_calibration.py it
covered 72% at a 95% level when seed effects were large). See `seed_t_interval`.

Settings. Each setting is resampled on its own random stream (`setting_rng`), so its numbers do
not depend on the other settings or on scheduling, and settings run on threads (`in_threads`).
analysis.uncertainty (forgetting) and analysis.accuracy_intervals (accuracy) both work this way.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

# Upper bound on the elements of one (replicates × cells) block of drawn counts.
CHUNK_ELEMENTS = 1 << 21
# The range each kind of number lives in; intervals are clipped to it.
ACCURACY_RANGE = (0.0, 1.0)
FORGETTING_RANGE = (-1.0, 1.0)  # a difference of two accuracies
DIFFERENCE_RANGE = (-2.0, 2.0)  # a difference of two forgettings


@dataclass(frozen=True)
class ItemCells:
    """A setting's evaluation items collapsed into cells (see the module docstring).

    counts:  (K,) items per cell
    member:  (K, G1) 0/1 group membership; column 0 is "all" (every item)
    present: (K, T) whether trial t evaluated the cell's items (at every compared stage)
    values:  (K, T, m) the m compared values (correct at each stage, 0/1); 0 where absent
    """

    groups: list[str]
    trial_ids: list[str]
    seeds: list[int]
    counts: np.ndarray
    member: np.ndarray
    present: np.ndarray
    values: np.ndarray

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def n_trials(self) -> int:
        return len(self.trial_ids)

    def _per_trial_sizes(self) -> np.ndarray:
        """(G1, T) items of each group that each trial evaluated (one product, no cells × groups
        × trials array)."""
        return (self.counts[:, None] * self.member).T @ self.present

    def group_sizes(self) -> np.ndarray:
        """(G1,) items per group in the trial that has the most of them."""
        return self._per_trial_sizes().max(axis=1)

    def group_seeds(self) -> np.ndarray:
        """(G1,) distinct seeds among the trials that evaluated items of the group."""
        per_trial = self._per_trial_sizes()
        seeds = np.asarray(self.seeds)
        return np.array([np.unique(seeds[row > 0]).size for row in per_trial], dtype=np.int64)


def trial_sums(cells: ItemCells, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-draw group sizes (c, T, G1) and value sums (c, T, G1, m) of every trial, for draws
    (c, K) of cell counts shared by all trials."""
    size = draws.shape[0]
    k, g1 = cells.member.shape
    m = cells.values.shape[2]
    n = np.empty((size, cells.n_trials, g1))
    sums = np.empty((size, cells.n_trials, g1, m))
    for t in range(cells.n_trials):
        present = cells.member * cells.present[:, t, None]  # (K, G1)
        n[:, t] = draws @ present
        weighted = (present[:, :, None] * cells.values[:, t, None, :]).reshape(k, g1 * m)
        sums[:, t] = (draws @ weighted).reshape(size, g1, m)
    return n, sums


def group_means(n: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """sums (..., m) / n (...), NaN where a group has no item."""
    out = np.full(sums.shape, np.nan)
    np.divide(sums, n[..., None], out=out, where=n[..., None] > 0)
    return out


def trial_means(cells: ItemCells, draws: np.ndarray) -> np.ndarray:
    """Per-draw, per-trial group means (c, T, G1, m); NaN where the group drew no item."""
    return group_means(*trial_sums(cells, draws))


def observed_means(cells: ItemCells) -> np.ndarray:
    """(T, G1, m): the data's own per-trial group means."""
    return trial_means(cells, cells.counts[None, :].astype(float))[0]


def bootstrap_means(cells: ItemCells, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(B, T, G1, m): per-trial group means under B resamples of the items, each resample
    shared by every trial (see the module docstring)."""
    n, k = cells.n, cells.counts.size
    out = np.empty((n_boot, cells.n_trials, cells.member.shape[1], cells.values.shape[2]))
    # Multinomial cell counts cost ~K binomial draws per replicate; with many distinct cells,
    # drawing n item indices and counting them per cell is cheaper (same law).
    by_index = 3 * k > n
    starts = np.concatenate([[0], np.cumsum(cells.counts)[:-1]])
    step = max(1, CHUNK_ELEMENTS // max(1, n if by_index else k))
    for start in range(0, n_boot, step):
        size = min(step, n_boot - start)
        if by_index:
            # Cells are contiguous runs of items: per-item draw counts, summed per run.
            drawn = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
            per_item = np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n)
            draws = np.add.reduceat(per_item, starts, axis=1).astype(float)
        else:
            draws = rng.multinomial(n, cells.counts / n, size=size).astype(float)
        out[start:start + size] = trial_means(cells, draws)
    return out


def seed_mean(per_trial: np.ndarray, axis: int) -> np.ndarray:
    """Mean over trials (along `axis`) of the finite values; NaN where no trial has one."""
    finite = np.isfinite(per_trial)
    count = finite.sum(axis=axis)
    total = np.where(finite, per_trial, 0.0).sum(axis=axis)
    out = np.full(total.shape, np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


def _nan_var(values: np.ndarray, axis: int) -> np.ndarray:
    """Sample variance (ddof 1) of the finite values along `axis`; NaN below two of them."""
    finite = np.isfinite(values)
    count = finite.sum(axis=axis)
    mean = seed_mean(values, axis)
    centred = np.where(finite, values - np.expand_dims(mean, axis), 0.0)
    out = np.full(count.shape, np.nan)
    np.divide((centred**2).sum(axis=axis), count - 1, out=out, where=count > 1)
    return out


@dataclass(frozen=True)
class Interval:
    low: np.ndarray
    high: np.ndarray
    se: np.ndarray  # standard error (NaN where nothing could be estimated)
    df: np.ndarray  # degrees of freedom of the t quantile (inf: normal)
    usable: np.ndarray  # bootstrap replicates with a finite value


def seed_t_interval(observed: np.ndarray, replicates: np.ndarray, estimate: np.ndarray, level: float,
                    bounds: tuple[float, float]) -> Interval:
    """A t interval estimate ± q·SE for a seed mean of per-trial statistics.

    observed: (T, k) each trial's statistic (NaN where a trial lacks it); replicates (B, T, k)
    the same under the shared-item bootstrap. With S trials having the statistic:

      V_items = Var_B(mean_t θ*_t)                 eval-set variance of the seed mean
      w       = S/(S−1)·(mean_t Var_B(θ*_t) − V_items)
                                                   per-trial item noise not shared by the trials
      s²      = sample variance of θ_t over trials = σ²_seed + w in expectation
      σ²_seed = max(0, s² − w)
      SE²     = V_items + σ²_seed / S
      df      = max(S−1, (S−1)·(SE²·S/s²)²)        Satterthwaite, with s² (S−1 df) as the
                                                   uncertain part; inf when s² = 0 (S = 1)

    q is the t quantile with df degrees of freedom. The interval is centred on `estimate`, so it
    always contains it, and is clipped to `bounds` (an accuracy stays in [0, 1]). One trial: the
    interval reflects the eval set only.
    """
    from scipy import stats  # on first use: `import analysis` stays light

    finite_obs = np.isfinite(observed)
    n_trials = finite_obs.sum(axis=0)
    usable_rows = np.isfinite(replicates).any(axis=1)  # (B, k): the replicate drew the group
    usable = usable_rows.sum(axis=0)
    mean_replicates = seed_mean(replicates, axis=1)  # (B, k)
    v_items = _nan_var(mean_replicates, axis=0)
    v_trial = seed_mean(_nan_var(replicates, axis=0), axis=0)  # mean over trials of Var_B
    s2 = np.where(n_trials > 1, _nan_var(observed, axis=0), 0.0)
    # Trials that agree up to rounding (identical answers) have no spread: s² = 0, df = ∞.
    s2 = np.where(np.abs(s2) < 1e-20, 0.0, s2)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(n_trials > 1, np.maximum(0.0, v_trial - v_items) * n_trials / np.maximum(n_trials - 1, 1), 0.0)
        seed_var = np.maximum(0.0, np.nan_to_num(s2) - np.nan_to_num(w))
        variance = v_items + seed_var / np.maximum(n_trials, 1)
        ratio = np.where(s2 > 0, variance * n_trials / np.where(s2 > 0, s2, 1.0), np.inf)
        df = np.where(s2 > 0, np.maximum(n_trials - 1, (n_trials - 1) * ratio**2), np.inf)
    se = np.sqrt(variance)
    quantile = stats.t.ppf(0.5 + level / 2.0, np.where(np.isfinite(df), np.minimum(df, 1e9), 1e9))
    half = quantile * se
    low = np.clip(estimate - half, *bounds)
    high = np.clip(estimate + half, *bounds)
    missing = ~np.isfinite(estimate) | ~np.isfinite(se)
    low, high = np.where(missing, np.nan, low), np.where(missing, np.nan, high)
    return Interval(low=low, high=high, se=np.where(missing, np.nan, se), df=df, usable=usable)


def t_test_p(estimate: np.ndarray, interval: Interval) -> np.ndarray:
    """Two-sided p of "the quantity is 0" from the interval's SE and df (consistent with it:
    p < 1 − level exactly when the unclipped interval excludes 0). SE 0: p is 1 for an
    estimate of 0, else 0."""
    from scipy import stats

    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.abs(estimate) / interval.se
    z = np.where(interval.se > 0, z, np.where(np.abs(estimate) > 1e-12, np.inf, 0.0))
    p = 2.0 * stats.t.sf(z, np.where(np.isfinite(interval.df), np.minimum(interval.df, 1e9), 1e9))
    return np.where(np.isfinite(estimate) & np.isfinite(interval.se), np.minimum(1.0, p), np.nan)


# ---------------------------------------------------------------- permutation of group labels


def permuted_group_sums(cells: ItemCells, n_perm: int, rng: np.random.Generator, method: str | None = None):
    """Blocks of (n (c, T, G1), sums (c, T, G1, m)) under random permutations of the label rows
    over the items: which items belong to which groups is re-drawn (each label row keeps its
    number of items), while every item keeps its outcomes in every trial. The permutation is
    the same for all trials, as the items are: an item that flips in every seed stays one item.

    Each replicate shuffles the items' outcome patterns over the label rows' positions. The
    sums are then taken one of two ways, with the same shuffles (so the same result):
    "table" counts a label row × pattern table (one bincount per block) and multiplies it out per
    trial, which is cheap while label rows × patterns < items (few seeds: few patterns);
    "items" reads every shuffled item's answers per trial and sums them per label row, which does
    not grow with the number of patterns (many seeds: nearly one pattern per item). None picks the
    cheaper."""
    labels, label_of = np.unique(cells.member, axis=0, return_inverse=True)
    flat_values = cells.values.reshape(cells.counts.size, -1)
    patterns, pattern_of = np.unique(np.concatenate([cells.present, flat_values], axis=1), axis=0,
                                     return_inverse=True)
    label_of, pattern_of = label_of.ravel(), pattern_of.ravel()
    n_labels, n_patterns, n = labels.shape[0], patterns.shape[0], cells.n
    # Items in label-row order: position i belongs to label row label_at[i]; the patterns
    # are what gets shuffled over the positions.
    order = np.argsort(label_of, kind="stable")
    label_at = np.repeat(label_of[order], cells.counts[order])
    # The shuffle is the cost (replicates × items): the narrowest integer type halves it or better.
    item_patterns = np.repeat(pattern_of, cells.counts).astype(np.min_scalar_type(max(n_patterns - 1, 0)))
    index_type = np.int32 if n_perm * n_labels * n_patterns < 2**31 else np.int64
    slot = (label_at * n_patterns).astype(index_type)  # table index of (label row, pattern 0) at each position
    n_trials, m = cells.n_trials, cells.values.shape[2]
    present = patterns[:, :n_trials]  # (P, T)
    values = patterns[:, n_trials:].reshape(n_patterns, n_trials, m)  # (P, T, m)
    # A block holds (size × n) shuffled items and a (size × labels × patterns) table: both bounded.
    step = max(1, CHUNK_ELEMENTS // max(1, n, n_labels * n_patterns))
    if method is None:
        method = "table" if n_labels * n_patterns <= n else "items"
    starts = np.concatenate([[0], np.cumsum(np.bincount(label_at, minlength=n_labels))[:-1]])
    for start in range(0, n_perm, step):
        size = min(step, n_perm - start)
        shuffled = rng.permuted(np.broadcast_to(item_patterns, (size, n)), axis=1)
        if method == "items":
            yield _summed_per_label_row(shuffled, starts, labels, present, values)
            continue
        index = slot[None, :] + shuffled + (np.arange(size, dtype=index_type) * (n_labels * n_patterns))[:, None]
        table = np.bincount(index.ravel(), minlength=size * n_labels * n_patterns).reshape(size, n_labels, n_patterns)
        table = table.astype(float)
        counts = np.empty((size, n_trials, labels.shape[1]))
        sums = np.empty((size, n_trials, labels.shape[1], m))
        for t in range(n_trials):
            counts[:, t] = (table @ present[:, t]) @ labels
            for v in range(m):
                sums[:, t, :, v] = (table @ (present[:, t] * values[:, t, v])) @ labels
        yield counts, sums


def _summed_per_label_row(shuffled: np.ndarray, starts: np.ndarray, labels: np.ndarray, present: np.ndarray,
                          values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group sizes and sums of one block from the shuffled patterns (size, n) directly: each
    position's answers per trial, summed over the label rows' contiguous positions."""
    size, n_trials, m = shuffled.shape[0], present.shape[1], values.shape[2]
    counts = np.empty((size, n_trials, labels.shape[1]))
    sums = np.empty((size, n_trials, labels.shape[1], m))
    for t in range(n_trials):
        seen = present[shuffled, t]  # (size, n)
        counts[:, t] = np.add.reduceat(seen, starts, axis=1) @ labels
        for v in range(m):
            sums[:, t, :, v] = np.add.reduceat(seen * values[shuffled, t, v], starts, axis=1) @ labels
    return counts, sums


# ---------------------------------------------------------------- per setting: streams, threads, rows


def setting_rng(seed: int, key: Sequence[object], stream: int = 0) -> np.random.Generator:
    """A generator that depends only on `seed` and the unit's key (not on other settings)."""
    digest = zlib.crc32("\x1f".join("" if part is None else str(part) for part in key).encode())
    return np.random.default_rng(np.random.SeedSequence([int(seed), digest, stream]))


def in_threads(function, items: list) -> list:
    """[function(item) for item in items], on up to one thread per core. The bootstrap's work is
    numpy draws and matrix products, which release the GIL; each setting has its own random
    stream, so the results do not depend on the scheduling.

    BLAS runs single-threaded meanwhile: the matrices are small (replicates × cells), and
    OpenBLAS's own threads on top of these oversubscribe the cores (measured 40x slower on a
    busy 2-core machine)."""
    workers = min(len(items), os.cpu_count() or 1, 8)
    with threadpool_limits(limits=1, user_api="blas"):
        if workers <= 1:
            return [function(item) for item in items]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(function, items))


def check_arguments(n_boot: int, level: float) -> None:
    """ValueError unless n_boot ≥ 1 and 0 < level < 1."""
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def none_if_nan(value: float | None, *, allow_inf: bool = False) -> float | None:
    """A number for a result row: None where it is undefined (NaN; ±inf unless allowed)."""
    if value is None or np.isnan(value) or (not allow_inf and not np.isfinite(value)):
        return None
    return float(value)
