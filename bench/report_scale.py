"""How the report scales: a synthetic results folder with N prediction rows (default 10 million),
`study report` on it against a bare Polars scan-and-group-by of the same prediction files.

    python bench/report_scale.py [--rows 10000000] [--folder /tmp/report_scale] [--keep] [--reuse]

The folder is shaped like a real study: 2 orders (ToxiGenQA -> ARC, ARC -> ToxiGenQA) x 5
first-stage learning rates x 3 seeds = 30 trials, each evaluated at stages 0, 1 and 2 on both
tasks; ToxiGenQA examples carry 1-2 of its 13 groups. Correctness is drawn per example from a
per-(trial, stage, task) accuracy, and the evals table is computed from the predictions, so
the report has consistent numbers to work on. Each measurement runs in its own Python process,
so its peak memory (ru_maxrss) is its own. Prints both times, their ratio (target <= 5x) and the
peak memory of each, and the time of the report's data-dependent part alone (the intervals:
paired cells and bootstrap), whose ratio to the bare scan is what grows with the row count;
the rest (small tables, figures, imports) is a fixed cost.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GROUPS = ("asian", "black", "chinese", "jewish", "latino", "lgbtq", "mental_dis", "mexican", "middle_east",
          "muslim", "native_american", "physical_dis", "women")
LEARNING_RATES = (5e-6, 1e-5, 2e-5, 5e-5, 1e-4)
SEEDS = (0, 1, 2)
ORDERS = {"tqa_arc": ("toxigen_qa", "arc_easy"), "arc_tqa": ("arc_easy", "toxigen_qa")}


def _trial_ids() -> list[tuple[str, str, float, int]]:
    return [(f"{chain}-{seed}-lr{i}", chain, lr, seed)
            for chain in ORDERS for i, lr in enumerate(LEARNING_RATES) for seed in SEEDS]


def generate(folder: Path, rows: int) -> None:
    import numpy as np
    import polars as pl

    trials = _trial_ids()
    n_examples = max(1, rows // (len(trials) * 3 * 2))  # 3 stages x 2 eval tasks per trial
    rng = np.random.default_rng(0)
    for table in ("trials", "evals", "predictions"):
        (folder / table).mkdir(parents=True, exist_ok=True)
    # The same example ids and groups in every trial, as in a real study's fixed eval set.
    ids = {task: [f"{task}/{i}" for i in range(n_examples)] for task in ("toxigen_qa", "arc_easy")}
    first = rng.integers(0, len(GROUPS), n_examples)
    second = rng.integers(0, len(GROUPS), n_examples)
    tqa_groups = [[GROUPS[a]] if a == b or k % 3 else [GROUPS[a], GROUPS[b]]
                  for k, (a, b) in enumerate(zip(first, second))]
    groups = {"toxigen_qa": tqa_groups, "arc_easy": [[] for _ in range(n_examples)]}
    trial_rows, plans = [], []
    for trial_id, chain, lr, seed in trials:
        plans.append({"trial_id": trial_id})
        for stage, task in enumerate(ORDERS[chain], start=1):
            trial_rows.append({
                "trial_id": trial_id, "chain": chain, "seed": seed, "stage": stage, "method": "sft", "task": task,
                "learning_rate": lr if stage == 1 else 1e-5, "batch_size": 16, "steps": 100, "train_size": 2241,
                "stage_key": f"{trial_id}-{stage}", "model": "synthetic",
                "grid_point": json.dumps({"stage1.learning_rate": lr}), "status": "finished",
            })
        eval_rows = []
        for stage in (0, 1, 2):
            for task in ("toxigen_qa", "arc_easy"):
                trained = ORDERS[chain].index(task) + 1 if task in ORDERS[chain] else 0
                base = 0.5 + (0.35 if 0 < trained <= stage else 0.0) - (0.05 * lr / 1e-4 if trained == 1 and stage == 2 else 0.0)
                correct = rng.random(n_examples) < base
                frame = pl.DataFrame({
                    "trial_id": trial_id, "stage": stage, "eval_task": task, "example_id": ids[task],
                    "groups": groups[task], "label": "A", "prediction": np_where(correct, "A", "B"),
                    "correct": correct, "margin": rng.normal(size=n_examples), "mode": "score",
                }, schema_overrides={"groups": pl.List(pl.String)})
                frame.write_parquet(folder / "predictions" / f"{trial_id}.stage{stage}.{task}.parquet")
                per_group = (frame.select("correct", group=pl.col("groups")).explode("group").drop_nulls("group")
                             .group_by("group").agg(n=pl.len(), correct=pl.col("correct").sum()))
                eval_rows.append({"group": "all", "grouping": "all", "n": n_examples, "correct": int(correct.sum()),
                                  "stage": stage, "eval_task": task})
                eval_rows += [{"group": g, "grouping": "group", "n": n, "correct": c, "stage": stage, "eval_task": task}
                              for g, n, c in per_group.iter_rows()]
        pl.DataFrame([{**r, "trial_id": trial_id, "metric": "accuracy", "accuracy": r["correct"] / r["n"],
                       "value": r["correct"] / r["n"]} for r in eval_rows]).write_parquet(folder / "evals" / f"{trial_id}.parquet")
    pl.DataFrame(trial_rows).write_parquet(folder / "trials" / "all.parquet")
    (folder / "plans.json").write_text(json.dumps(plans))


def np_where(mask, yes: str, no: str):
    import numpy as np

    return np.where(mask, yes, no)


def bare_polars(folder: Path) -> None:
    """The floor: one lazy scan of every prediction file, accuracy per (trial, stage, task, group)."""
    import polars as pl

    scan = pl.scan_parquet(folder / "predictions" / "*.parquet")
    (scan.select("trial_id", "stage", "eval_task", "correct", group=pl.col("groups"))
     .explode("group").group_by("trial_id", "stage", "eval_task", "group")
     .agg(n=pl.len(), accuracy=pl.col("correct").mean()).collect())


def report(folder: Path) -> None:
    from analysis.report import write_report

    write_report(folder, folder / "report")


def intervals(folder: Path) -> None:
    """The part of the report that reads the predictions: paired cells and the bootstrap
    (analysis.forgetting_uncertainty, as a researcher calls it), without tables and figures."""
    from analysis import forgetting_uncertainty, load_results

    results = load_results(folder)
    forgetting_uncertainty(results.trials.collect(), results.predictions)


def _measure(what: str, folder: Path) -> tuple[float, float]:
    """(seconds, peak RSS in GiB) of one measurement, in a fresh process."""
    code = (f"import sys, time, resource; sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(REPO / 'bench')!r});"
            f"import report_scale as b; from pathlib import Path; t = time.perf_counter(); b.{what}(Path({str(folder)!r}));"
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    seconds, peak_kib = done.stdout.split()[-2:]
    return float(seconds), float(peak_kib) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/report_scale"))
    parser.add_argument("--keep", action="store_true", help="keep the synthetic folder afterwards")
    parser.add_argument("--reuse", action="store_true",
                        help="measure a folder kept by an earlier --keep run instead of generating one")
    args = parser.parse_args()
    start = time.perf_counter()
    if not (args.reuse and (args.folder / "predictions").is_dir()):
        shutil.rmtree(args.folder, ignore_errors=True)
        generate(args.folder, args.rows)
    import polars as pl

    n_rows = pl.scan_parquet(args.folder / "predictions" / "*.parquet").select(pl.len()).collect().item()
    size = sum(f.stat().st_size for f in (args.folder / "predictions").glob("*.parquet")) / 2**20
    print(f"synthetic results: {n_rows:,} prediction rows in {len(list((args.folder / 'predictions').glob('*.parquet')))} "
          f"files ({size:,.0f} MiB), 30 trials; ready in {time.perf_counter() - start:.1f} s")
    bare_s, bare_gib = _measure("bare_polars", args.folder)
    report_s, report_gib = _measure("report", args.folder)
    intervals_s, intervals_gib = _measure("intervals", args.folder)
    print(f"bare Polars scan + group-by : {bare_s:8.2f} s   peak RSS {bare_gib:5.2f} GiB")
    print(f"study report                : {report_s:8.2f} s   peak RSS {report_gib:5.2f} GiB")
    print(f"  of which the intervals    : {intervals_s:8.2f} s   peak RSS {intervals_gib:5.2f} GiB"
          "   (forgetting_uncertainty alone: cells + bootstrap)")
    ratio = report_s / bare_s
    print(f"ratio report / bare Polars  : {ratio:.2f}x (target <= 5x: {'met' if ratio <= 5 else 'NOT met'})")
    print(f"ratio intervals / bare      : {intervals_s / bare_s:.2f}x")
    print(f"this process peak RSS (generation): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    if not (args.keep or args.reuse):  # a reused folder is kept for the next --reuse
        shutil.rmtree(args.folder, ignore_errors=True)


if __name__ == "__main__":
    main()
