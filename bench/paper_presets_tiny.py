"""Every `paper-*` preset end to end on the built-in tiny model, through the real CLI
(`study run <preset> --set model=tiny ...` on a local Ray cluster), and what its report shows.

    python bench/paper_presets_tiny.py [--full] [--presets paper-ordering paper-bbq ...]
                                       [--storage /tmp/paper_presets]

Default (quick): the preset's own `tiny:` block plus one seed, a few training steps and small
train/eval sets, so all eight run in minutes on 2 CPUs; this checks that each preset runs and
that its report regenerates the paper's table and figure for that experiment. --full runs the
`tiny:` block as written (3 seeds, 150 steps, 800 training examples: tens of minutes per preset
on 2 CPUs). Prints, per preset: wall seconds, trials, failed trials, and each expected report
item (a table heading or a figure file) as found or MISSING. Exit 1 when a run fails or an item
is missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]

# What each experiment's report must contain: the paper's table (a heading in report.md) and
# its figure (a file under report/figures/).
EXPECTED = {
    "paper-ordering": ["### Table 1:", "accuracy_progression.png"],
    "paper-first-stage-method": ["### Table 2:", "group_forgetting.png"],
    "paper-first-lr": ["### Tables 4, 5 and 9:", "forgetting_by_first_lr.png"],
    "paper-second-lr": ["### Tables 4, 5 and 9:", "forgetting_by_stage2_learning_rate.png"],
    "paper-batch-size": ["### Tables 4, 5 and 9:", "forgetting_by_stage1_batch_size.png"],
    "paper-bbq": ["### Tables 6-10:", "group_forgetting.png"],
    "paper-curvature": ["## Curvature and weight change", "spectral_radius_by_lr.png",
                        "forgetting_by_spectral_radius.png"],
    "paper-replay": ["### Tables 4, 5 and 9:", "forgetting_by_stage2_replay_fraction.png"],
}

# Quick mode on top of the preset's tiny: block (tasks a preset does not use are skipped).
QUICK_EVAL_SIZES = {"toxigen_qa": 40, "arc_easy": 30, "arc_challenge": 20, "bbq": 36, "mmlu": 60,
                    "toxigen_prompts": 26, "saferdialogues": 5}
QUICK_TRAIN_SIZE = 48
QUICK = ["seeds=[0]", "stage_defaults.steps=6", "model.max_length=256", "generation.max_new_tokens=12"]
# PPO/RLOO stages and their reward models have their own step counts in the preset.
QUICK_METHOD = {"paper-first-stage-method": [
    "chains.ppo_arc.0.steps=3", "chains.ppo_arc.0.ppo.reward.steps=6",
    "chains.rloo_arc.0.steps=3", "chains.rloo_arc.0.rloo.reward.steps=6",
]}


def _preset_tasks(preset: str) -> set[str]:
    from study.presets import resolve_study_file
    from study.spec_loading import load_spec_file

    return set(load_spec_file(resolve_study_file(preset), ["model=tiny"]).tasks)


def overrides(preset: str, full: bool, data_dir: str | None) -> list[str]:
    sets = ["model=tiny"]
    if not full:
        tasks = _preset_tasks(preset)
        sets += QUICK + QUICK_METHOD.get(preset, [])
        sets += [f"tasks.{task}.eval_size={size}" for task, size in QUICK_EVAL_SIZES.items() if task in tasks]
        sets += [f"tasks.{task}.train_size={QUICK_TRAIN_SIZE}" for task in ("toxigen_qa", "arc_easy", "bbq")
                 if task in tasks]
    if data_dir:
        sets.append(f"data_dir={data_dir}")
    return sets


def run_preset(preset: str, storage: Path, sets: list[str]) -> dict:
    command = [sys.executable, "-m", "study", "run", preset, "--storage", str(storage)]
    for item in sets:
        command += ["--set", item]
    start = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    study_dir = storage / preset
    result = {"preset": preset, "wall_s": wall, "exit": completed.returncode, "trials": 0, "failed": None}
    trials_dir = study_dir / "trials"
    if trials_dir.is_dir() and any(trials_dir.glob("*.parquet")):
        trials = pl.read_parquet(trials_dir / "*.parquet")
        result["trials"] = trials["trial_id"].n_unique()
        if "status" in trials.columns:
            result["failed"] = trials.filter(pl.col("status") == "failed")["trial_id"].n_unique()
    report = study_dir / "report" / "report.md"
    text = report.read_text(encoding="utf-8") if report.is_file() else ""
    result["items"] = {
        item: (item in text) if not item.endswith(".png")
        else (study_dir / "report" / "figures" / item).is_file() and f"figures/{item}" in text
        for item in EXPECTED[preset]
    }
    if completed.returncode != 0:
        result["tail"] = (completed.stdout + completed.stderr)[-3000:]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the tiny: block as written (slow)")
    parser.add_argument("--presets", nargs="+", default=list(EXPECTED), choices=list(EXPECTED))
    parser.add_argument("--storage", type=Path, default=Path("/tmp/paper_presets"))
    args = parser.parse_args(argv)
    data_dir = os.environ.get("STUDY_DATA_DIR")
    ok = True
    for preset in args.presets:
        shutil.rmtree(args.storage / preset, ignore_errors=True)
        result = run_preset(preset, args.storage, overrides(preset, args.full, data_dir))
        found = ", ".join(f"{item} {'ok' if present else 'MISSING'}" for item, present in result["items"].items())
        print(f"{preset:26s} {result['wall_s']:7.1f} s  exit {result['exit']}  trials {result['trials']}"
              f"  failed {result['failed']}  | {found}", flush=True)
        if result["exit"] != 0 or not all(result["items"].values()):
            ok = False
            print(result.get("tail", ""), flush=True)
    print(f"report folders: {args.storage}/<preset>/report")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
