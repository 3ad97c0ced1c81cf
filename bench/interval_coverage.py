"""Coverage of 95% intervals on simulated studies: the report's method against two resampling
alternatives, across sizes of the seed-to-seed effect.

    python bench/interval_coverage.py [--studies 200] [--boot 500]

Studies come from tests/simulated_studies.py (3 seeds sharing one eval set, 7 groups of 15–300
items, known population values). For each seed-effect size (logit SD at stage 1 / stage 2) it
prints the share of studies whose interval covers the true overall forgetting and true group
forgetting (pooled over groups), and the median interval width in points, for:

  report        analysis.uncertainty (eval items resampled once for all seeds, seed variance
                by moments, t interval)
  per-seed      seeds resampled, then each drawn seed's examples resampled independently;
                percentile interval (how the report computed intervals before)
  two-level     seeds resampled, the examples resampled once for all of them; percentile

Monte Carlo standard error of a coverage near 95% over N studies: sqrt(0.05·0.95/N).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.uncertainty import forgetting_uncertainty  # noqa: E402
from tests.simulated_studies import simulate  # noqa: E402

SCENARIOS = ((0.0, 0.0), (0.05, 0.1), (0.1, 0.2), (0.2, 0.5))


def _arrays(predictions: pl.DataFrame, chain: str, n_seeds: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group index per item, stage-1 correct (S, n), stage-2 correct (S, n)) of one study."""
    rows = predictions.filter(pl.col("trial_id").str.starts_with(f"{chain}-")).sort("trial_id", "stage", "example_id")
    n = rows.height // (2 * n_seeds)
    correct = rows["correct"].to_numpy().reshape(n_seeds, 2, n).astype(float)
    ids = rows["example_id"][:n].to_list()
    groups = [int(g[0][1:]) for g in rows["groups"][:n].to_list()]
    order = np.argsort([int(i[1:]) for i in ids])
    return np.asarray(groups)[order], correct[:, 0][:, order], correct[:, 1][:, order]


def _resampled(group_of, first, second, n_boot, rng, shared: bool):
    """(B, G1) seed-mean forgetting (column 0 = all) under one of the two resampling schemes."""
    n_seeds, n = first.shape
    member = np.column_stack([np.ones(n)] + [group_of == g for g in range(group_of.max() + 1)])
    flips = first - second
    picks = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    total = np.zeros((n_boot, member.shape[1]))
    shared_draw = rng.multinomial(n, np.full(n, 1 / n), size=n_boot).astype(float) if shared else None
    for slot in range(n_seeds):
        draw = shared_draw if shared else rng.multinomial(n, np.full(n, 1 / n), size=n_boot).astype(float)
        counts = draw @ member
        sums = np.stack([draw[b] @ (member * flips[picks[b, slot]][:, None]) for b in range(n_boot)])
        with np.errstate(invalid="ignore", divide="ignore"):
            total += sums / counts
    return total / n_seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--boot", type=int, default=500)
    args = parser.parse_args()
    print(f"{args.studies} studies per scenario, B = {args.boot}; MC s.e. of a 95% coverage: "
          f"{100 * np.sqrt(0.05 * 0.95 / args.studies):.1f} points")
    print(f"{'seed SD (logit)':>16} {'method':>10} {'forgetting':>11} {'groups':>7} {'width (pts)':>12}")
    for seed_sd in SCENARIOS:
        started = time.perf_counter()
        trials, predictions, truths = simulate(args.studies, seed_sd=seed_sd, rng_seed=1)
        intervals, tests = forgetting_uncertainty(trials, predictions, n_boot=args.boot, permutation=False)
        report_all = [low <= truths[int(c[1:])].forgetting[0] <= high for c, low, high in
                      intervals.filter(pl.col("metric") == "forgetting").select("chain", "low", "high").iter_rows()]
        report_groups = [low <= truths[int(c[1:])].forgetting[1 + int(g[1:])] <= high for c, g, low, high in
                         tests.select("chain", "group", "group_forgetting_low", "group_forgetting_high").iter_rows()]
        width = 100 * (intervals.filter(pl.col("metric") == "forgetting")
                       .select(pl.col("high") - pl.col("low")).to_series().median())
        rows = {"report": (np.mean(report_all), np.mean(report_groups), width)}
        rng = np.random.default_rng(2)
        for name, shared in (("per-seed", False), ("two-level", True)):
            covered_all, covered_groups, widths = [], [], []
            for study, truth in enumerate(truths):
                group_of, first, second = _arrays(predictions, f"s{study}", 3)
                boot = _resampled(group_of, first, second, args.boot, rng, shared)
                low, high = np.nanquantile(boot, [0.025, 0.975], axis=0)
                covered_all.append(low[0] <= truth.forgetting[0] <= high[0])
                covered_groups.extend((low[1:] <= truth.forgetting[1:]) & (truth.forgetting[1:] <= high[1:]))
                widths.append(high[0] - low[0])
            rows[name] = (np.mean(covered_all), np.mean(covered_groups), 100 * np.median(widths))
        label = f"{seed_sd[0]}/{seed_sd[1]}"
        for name, (overall, groups, width) in rows.items():
            print(f"{label:>16} {name:>10} {100 * overall:10.1f}% {100 * groups:6.1f}% {width:12.2f}")
        print(f"{'':>16} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
