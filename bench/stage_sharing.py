"""How many stage trainings a stage store saves on the paper's experiment grids, and a check
that a shared stage gives the same results as one trained on its own.

    python bench/stage_sharing.py [--model NAME] [--no-verify] [--storage DIR]

1. Paper grid ratio (no training, plans only). The grids of the paper's Tables 1, 2, 4, 5, 9
   and 11 are built as real study specs (validated by `study.spec_loading.spec_from_dict`), 3
   seeds each, with the paper's settings (Llama-2-7B, max length 2048, SFT, lr 1e-5, batch 16,
   100 steps, ~2,241 training examples per task, AdamW 0.9/0.95, wd 0.1, cosine, no warmup, GPU).
   For each table, and for all tables run as ONE study (the "union": every table's settings as
   explicit chains of one StudySpec), it counts

       naive  = stage trainings without sharing = sum over trials of their number of stages
       shared = stage trainings with a stage store = number of distinct stage_keys

   stage_key (study/planner.py) hashes the base identity (model settings, CPU/GPU, data source and
   seed, shared training settings) and every stage up to this one, so keys can only match
   between trials of specs with the same base identity: every table here is built from the
   same base settings, and the script checks that their base identities are equal and that the
   union study's keys are exactly the union of the tables' keys.

2. Equality check on the tiny model (`--verify`, on by default): one study with two chains that
   share their first stage (ToxiGenQA SFT, then ARC SFT at two learning rates), then each chain
   as its own study; the evals rows of matching trials (same trial_id: it is a hash of the stage
   keys) must be equal. Prints the number of stage trainings executed when the study folder has
   a stage-store ledger (`<study>/stages/*/record.json`), else "not recorded".
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contract.keys import BASE_KEY_PREFIX  # noqa: E402
from contract.layout import StageLayout, StudyLayout  # noqa: E402
from study.orchestrate import chat_format  # noqa: E402
from study.planner import base_identity, build_plans  # noqa: E402
from study.spec import StudySpec  # noqa: E402
from study.spec_loading import spec_from_dict  # noqa: E402

TARGET_RATIO = 0.5  # issue #6: a stage store should at least halve the paper's stage trainings
PAPER_MODEL = "meta-llama/Llama-2-7b-hf"
PAPER_SEEDS = (0, 1, 2)  # paper §2.2: "We repeat each experiment three times with different random seeds"
PAPER_LRS = (5e-6, 1e-5, 1.5e-5, 2e-5)  # Tables 4, 5 (and 7, 8)
TABLE11_LRS = (2e-6, 5e-6, 1e-5, 2e-5)  # Table 11 (curvature), rows of the first-stage lr
TABLE9_BATCH_SIZES = (2, 8, 16, 24, 32)


# ----------------------------------------------------------------------------- counting


@dataclass(frozen=True)
class SharingCount:
    trials: int
    naive: int
    """Stage trainings without sharing: the sum over trials of their number of stages."""
    shared: int
    """Stage trainings with a stage store: distinct stage_keys."""
    per_stage: tuple[tuple[int, int], ...]
    """(naive, shared) for stage 1, 2, ..."""
    distinct_trials: int
    """Trials with distinct stage-key sequences (identical trials are whole-chain duplicates)."""
    naive_of_distinct_trials: int
    """Stage trainings of the distinct trials alone: naive - this = saved by whole-trial duplicates."""

    @property
    def ratio(self) -> float:
        return self.shared / self.naive if self.naive else float("nan")


def count_stage_trainings(plans: Iterable[Mapping[str, Any]]) -> SharingCount:
    """Naive and shared stage trainings of a set of trial plans (from `study.planner.build_plans`)."""
    plans = list(plans)
    keys_by_stage: dict[int, list[str]] = {}
    chains: set[tuple[str, ...]] = set()
    naive_distinct = 0
    for plan in plans:
        chain = tuple(stage["stage_key"] for stage in plan["stages"])
        if chain not in chains:
            chains.add(chain)
            naive_distinct += len(chain)
        for stage in plan["stages"]:
            keys_by_stage.setdefault(int(stage["stage"]), []).append(stage["stage_key"])
    all_keys = [key for keys in keys_by_stage.values() for key in keys]
    per_stage = tuple((len(keys_by_stage[k]), len(set(keys_by_stage[k]))) for k in sorted(keys_by_stage))
    return SharingCount(trials=len(plans), naive=len(all_keys), shared=len(set(all_keys)), per_stage=per_stage,
                        distinct_trials=len(chains), naive_of_distinct_trials=naive_distinct)


def plans_of(spec: StudySpec) -> list[dict[str, Any]]:
    """The spec's trial plans as `study run` would build them, in their plans.json form
    (base_model_path None: a Hub id or 'tiny' enters the identity by name; nothing is built)."""
    from tasks import resolve_data_dir

    data_dir = resolve_data_dir(spec.data_dir)
    plans = build_plans(spec, study_dir=Path(spec.storage) / spec.name, data_dir=str(data_dir) if data_dir else None,
                        base_model_path=None, chat=chat_format(spec, None))
    return [plan.to_dict() for plan in plans]


def identity(spec: StudySpec, data_dir: str | None) -> dict[str, Any]:
    """The spec's base identity as `plans_of` plans it (base_model_path None)."""
    return base_identity(spec, data_dir, None, chat_format(spec, None))


def stage_keys(plans: Iterable[Mapping[str, Any]]) -> set[str]:
    return {stage["stage_key"] for plan in plans for stage in plan["stages"]}


# ----------------------------------------------------------------------------- the paper's grids


def paper_base(model: str = PAPER_MODEL, seeds: Sequence[int] = PAPER_SEEDS) -> dict[str, Any]:
    """Settings every table shares (paper §2.2, §2.3, Appendix A.1): they make up the base
    identity, so all tables' stage keys are comparable."""
    return {
        "model": {"name": model, "max_length": 2048},
        # Appendix A.1: training sets subsampled to ~2,241 examples (ARC-e's 4-option train set).
        "tasks": {"toxigen_qa": {"train_size": 2241}, "arc_easy": {"train_size": 2241}},
        # §2.2: "we report the majority of our results using learning rate of 1e-5 and batch size of
        # 16"; "finetuning for 100 optimization steps".
        "stage_defaults": {"method": "sft", "learning_rate": 1e-5, "batch_size": 16, "steps": 100},
        "seeds": list(seeds),
        # AdamW β 0.9/0.95, wd 0.1, cosine, no warmup: the engine's TrainingSpec defaults.
        "training": {"adam_beta1": 0.9, "adam_beta2": 0.95, "weight_decay": 0.1, "lr_scheduler": "cosine",
                     "warmup_steps": 0},
        # A 7B model trains on GPUs (bf16 autocast): this enters every stage key.
        "execution": {"gpus_per_trial": 1},
        "storage": "results",
    }


TQA_ARC = [{"task": "toxigen_qa"}, {"task": "arc_easy"}]
ARC_TQA = [{"task": "arc_easy"}, {"task": "toxigen_qa"}]


@dataclass(frozen=True)
class Experiment:
    label: str
    spec: StudySpec
    settings: str
    """What the table varies, from the paper."""


def paper_experiments(model: str = PAPER_MODEL, seeds: Sequence[int] = PAPER_SEEDS) -> tuple[list[Experiment], list[str]]:
    """The paper's grids as validated study specs, and notes on what had to be left out."""
    from tasks import TASK_NAMES

    notes: list[str] = []

    def spec(name: str, chains: dict, grid: dict | None = None, **extra: Any) -> StudySpec:
        return spec_from_dict({**paper_base(model, seeds), "name": name, "chains": chains, "grid": grid or {}, **extra},
                              source=f"<bench {name}>")

    table1 = {"arc_tqa": ARC_TQA, "tqa_arc": TQA_ARC}
    if "bbq" in TASK_NAMES:
        table1 |= {"arc_bbq": [{"task": "arc_easy"}, {"task": "bbq"}], "bbq_arc": [{"task": "bbq"}, {"task": "arc_easy"}]}
        table1_settings = "ARC→TQA, TQA→ARC, ARC→BBQ, BBQ→ARC"
    else:
        notes.append("Table 1: task 'bbq' is not in the task registry (known: " + ", ".join(TASK_NAMES)
                     + "): its BBQ rows (ARC→BBQ, BBQ→ARC) are left out; only the ToxiGenQA orders are counted.")
        table1_settings = "ARC→TQA, TQA→ARC (BBQ rows: no bbq task)"
    notes.append("Table 2: PPO uses a reward model trained in the study (TRL RewardTrainer, the engine's default "
                 "reward settings): the paper's OpenAssistant DeBERTa reward model does not share Llama's tokenizer, "
                 "which our PPO stage rejects. DPO: beta 0.1, reference = the stage's start model (paper gives no beta).")
    experiments = [
        Experiment("Table 1  task order", spec("paper-table1", table1), table1_settings),
        Experiment("Table 2  first-stage method", spec("paper-table2", {
            "sft_arc": TQA_ARC,
            "dpo_arc": [{"task": "toxigen_qa", "method": "dpo", "dpo": {"beta": 0.1, "reference": "stage_start"}},
                        {"task": "arc_easy"}],
            "ppo_arc": [{"task": "toxigen_qa", "method": "ppo", "ppo": {"prompts": "statements"}}, {"task": "arc_easy"}],
        }), "SFT / DPO / PPO on TQA, then SFT ARC"),
        Experiment("Table 4  first-stage lr", spec("paper-table4", {"tqa_arc": TQA_ARC, "arc_tqa": ARC_TQA},
                                                   {"stage1.learning_rate": list(PAPER_LRS)}),
                   "both orders × stage-1 lr 5e-6, 1e-5, 1.5e-5, 2e-5"),
        Experiment("Table 5  second-stage lr", spec("paper-table5", {"tqa_arc": TQA_ARC, "arc_tqa": ARC_TQA},
                                                    {"stage2.learning_rate": list(PAPER_LRS)}),
                   "both orders × stage-2 lr 5e-6, 1e-5, 1.5e-5, 2e-5"),
        Experiment("Table 9  first-stage batch", spec("paper-table9", {"tqa_arc": TQA_ARC},
                                                      {"stage1.batch_size": list(TABLE9_BATCH_SIZES)}),
                   "TQA→ARC × stage-1 batch 2, 8, 16, 24, 32"),
        Experiment("Table 11 curvature", spec("paper-table11", {"tqa_arc": TQA_ARC},
                                              {"stage1.learning_rate": list(TABLE11_LRS)},
                                              curvature={"enabled": True, "stages": [1], "n_samples": 50,
                                                         "algorithms": ["power_iteration"]}),
                   "TQA→ARC × stage-1 lr 2e-6, 5e-6, 1e-5, 2e-5; ρ(H) after stage 1"),
    ]
    return experiments, notes


def _stage_dict(stage) -> dict[str, Any]:
    data = dataclasses.asdict(stage)
    return {k: v for k, v in data.items() if v is not None}


def union_spec(experiments: Sequence[Experiment], *, name: str = "paper-union", pin_first_stage_seed: int | None = None) -> StudySpec:
    """All experiments as ONE study: each (table, chain, grid point) becomes an explicit chain
    (a study's grid applies to all of its chains, so the tables' grids cannot be combined as grids).
    Chain names do not enter stage keys, so equal settings in two tables get equal keys.
    `pin_first_stage_seed` sets every chain's first stage `seed` (seeds then vary later stages only)."""
    from study.points import grid_points, resolve_stages

    first = experiments[0].spec
    chains: dict[str, list[dict[str, Any]]] = {}
    curvature = first.curvature
    for experiment in experiments:
        spec = experiment.spec
        if spec.seeds != first.seeds:
            raise ValueError(f"{spec.name}: seeds {spec.seeds} differ from {first.seeds}; one study has one seed list")
        # One study has one base identity and one set of task sizes: a table with others cannot join.
        if identity(spec, spec.data_dir) != identity(first, first.data_dir) or spec.tasks != first.tasks:
            raise ValueError(f"{spec.name}: base settings (model, accelerator, data, training, task sizes) differ "
                             f"from {first.name}'s; its stage keys could never match theirs")
        if spec.curvature.enabled:
            curvature = spec.curvature  # measurement only: not part of any stage key
        table = spec.name.rsplit("table", 1)[-1]
        points = grid_points(spec)
        for chain in spec.chains:
            for index, point in enumerate(points):
                stages = [_stage_dict(s) for s in resolve_stages(spec, chain, point)]
                if pin_first_stage_seed is not None:
                    stages[0]["seed"] = pin_first_stage_seed
                chains[f"t{table}_{chain}" + (f"_p{index}" if len(points) > 1 else "")] = stages
    raw = first.to_dict()
    raw.update(name=name, chains=chains, grid={}, curvature=dataclasses.asdict(curvature))
    return spec_from_dict(raw, source=f"<bench {name}>")


@dataclass(frozen=True)
class GridResult:
    experiments: list[Experiment]
    counts: list[SharingCount]
    union: SharingCount
    union_trials_per_seed: int
    pinned: SharingCount
    repeated: list[tuple[str, list[str]]]
    """Trials (seed 0) that several tables run with identical settings: (description, tables)."""
    notes: list[str]


def paper_grid(model: str = PAPER_MODEL, seeds: Sequence[int] = PAPER_SEEDS) -> GridResult:
    """Counts per table and for the union study; checks the keys are comparable across tables."""
    experiments, notes = paper_experiments(model, seeds)
    plans = [plans_of(e.spec) for e in experiments]
    identities = {json.dumps(identity(e.spec, p[0]["data_dir"]), sort_keys=True) for e, p in zip(experiments, plans)}
    if len(identities) != 1:
        raise AssertionError("the tables' base identities differ: their stage keys could never match")
    union = union_spec(experiments)
    union_plans = plans_of(union)
    union_keys, table_keys = stage_keys(union_plans), set().union(*(stage_keys(p) for p in plans))
    if union_keys != table_keys:
        raise AssertionError(f"union study keys != union of the tables' keys ({len(union_keys)} vs {len(table_keys)})")
    pinned = count_stage_trainings(plans_of(union_spec(experiments, name="paper-union-pinned", pin_first_stage_seed=0)))
    return GridResult(experiments=experiments, counts=[count_stage_trainings(p) for p in plans],
                      union=count_stage_trainings(union_plans), union_trials_per_seed=len(union.chains),
                      pinned=pinned, repeated=repeated_trials(union_plans), notes=notes)


def describe_stages(plan: Mapping[str, Any]) -> str:
    return " → ".join(f"{s['method'].upper()} {s['task']} lr {s['learning_rate']:g} bs {s['batch_size']}"
                      for s in plan["stages"])


def repeated_trials(union_plans: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """Settings that more than one table runs (seed 0 of the union study; chains are named t<table>_...)."""
    by_chain: dict[tuple[str, ...], tuple[str, list[str]]] = {}
    for plan in union_plans:
        if plan["seed"] != min(p["seed"] for p in union_plans):
            continue
        chain = tuple(s["stage_key"] for s in plan["stages"])
        table = plan["chain"].split("_", 1)[0][1:]
        description, tables = by_chain.setdefault(chain, (describe_stages(plan), []))
        if table not in tables:
            tables.append(table)
    return [(d, t) for d, t in by_chain.values() if len(t) > 1]


def _explain(count: SharingCount) -> str:
    if count.shared == count.naive:
        return "shares nothing: every trial's stage 1 differs (setting or seed), so every later stage does too"
    parts = [f"stage {k}: {n} → {s}" for k, (n, s) in enumerate(count.per_stage, start=1) if s < n]
    return "shared " + "; ".join(parts)


def print_grid(result: GridResult, out=print) -> None:
    first = result.experiments[0].spec
    out(f"Paper grids: model {first.model.name} (max_length {first.model.max_length}), seeds {list(first.seeds)}, "
        f"SFT lr 1e-5 / batch 16 / 100 steps unless the table varies it, "
        f"{'GPU' if first.execution.gpus_per_trial else 'CPU'} identity; plans only, nothing trained")
    out("")
    head = f"{'experiment':34s} {'trials':>6s} {'naive':>6s} {'shared':>6s} {'ratio':>6s}  settings / what is shared"
    out(head)
    out("-" * len(head))
    for experiment, count in zip(result.experiments, result.counts):
        out(f"{experiment.label:34s} {count.trials:6d} {count.naive:6d} {count.shared:6d} {count.ratio:6.3f}  "
            f"{experiment.settings}")
        out(f"{'':34s} {'':6s} {'':6s} {'':6s} {'':6s}  {_explain(count)}")
    out("-" * len(head))
    total_naive = sum(c.naive for c in result.counts)
    total_shared = sum(c.shared for c in result.counts)
    out(f"{'sum of tables, each its own study':34s} {sum(c.trials for c in result.counts):6d} {total_naive:6d} "
        f"{total_shared:6d} {total_shared / total_naive:6.3f}  sharing only inside a table")
    u = result.union
    met = "met" if u.ratio <= TARGET_RATIO else "NOT met"
    out(f"{'union: all tables as ONE study':34s} {u.trials:6d} {u.naive:6d} {u.shared:6d} {u.ratio:6.3f}  "
        f"target ≤ {TARGET_RATIO}: {met}")
    duplicates = u.naive - u.naive_of_distinct_trials
    prefix = u.naive_of_distinct_trials - u.shared
    out(f"{'':34s} {'':6s} {'':6s} {'':6s} {'':6s}  {result.union_trials_per_seed} chains × {len(first.seeds)} seeds; "
        f"{u.distinct_trials} distinct trials; saved {u.naive - u.shared} = {duplicates} by whole trials repeated "
        f"across tables + {prefix} by shared prefixes")
    p = result.pinned
    out(f"{'variant: stage-1 seed pinned':34s} {p.trials:6d} {p.naive:6d} {p.shared:6d} {p.ratio:6.3f}  "
        f"target ≤ {TARGET_RATIO}: {'met' if p.ratio <= TARGET_RATIO else 'NOT met'} (a different experiment, see below)")
    out("")
    out("Notes:")
    for note in result.notes:
        out(f"- {note}")
    out("- Keys match across tables because every table is built from the same base settings (model, max length, "
        "GPU, data source and seed, training settings; checked: equal base_identity, and the union study's "
        "stage keys = the union of the tables' keys).")
    out("- Whole trials that several tables run with the same settings (each once per seed in the union):")
    for description, tables in result.repeated:
        out(f"    {description}: Tables {', '.join(tables)}")
    sharing = [e.label.split()[1] for e, c in zip(result.experiments, result.counts) if c.shared < c.naive]
    alone = [e.label.split()[1] for e, c in zip(result.experiments, result.counts) if c.shared == c.naive]
    out(f"- Inside one table, prefixes are shared only in Table(s) {', '.join(sharing) or 'none'}; Tables "
        f"{', '.join(alone) or 'none'} differ in the first stage between settings, and each seed trains its own "
        "first stage (stage seed = trial seed), so nothing is shared inside them.")
    out("- Variant: every chain's first stage gets `seed: 0`, so the 3 seeds vary only the second stage (one θ_A per "
        "setting, like §2.2's \"we pick the best model for the first task, and use it as the baseline model for "
        "the second task\"). It changes the experiment: no seed spread of θ_A (Acc_A(θ_A), ρ(H) error bars).")


# ----------------------------------------------------------------------------- equality check


def tiny_spec(name: str, storage: str, data_dir: str, stage2_lrs: Sequence[float], steps: int) -> StudySpec:
    return spec_from_dict({
        "name": name,
        "model": {"name": "tiny", "max_length": 256},
        "tasks": {"toxigen_qa": {"train_size": 64, "eval_size": 60}, "arc_easy": {"train_size": 64, "eval_size": 30}},
        "eval_tasks": ["toxigen_qa", "arc_easy"],
        "stage_defaults": {"method": "sft", "learning_rate": 3e-3, "batch_size": 8, "steps": steps},
        "chains": {"tqa_arc": TQA_ARC},
        "grid": {"stage2.learning_rate": list(stage2_lrs)},
        "seeds": [0],
        "data_dir": data_dir,
        "storage": storage,
        "execution": {"executor": "function", "cpus_per_trial": 1},
    }, source=f"<bench {name}>")


def ledger_trainings(study_dir: Path) -> int | None:
    """Stage trainings recorded in the stage store (`stages/<key>/record.json`, one per trained
    stage; `base-*` entries are the base model's evaluation, not a training), or None."""
    records = sorted(StudyLayout(study_dir).stages.glob(f"*/{StageLayout.RECORD}"))
    if not records:
        return None
    return sum(1 for r in records if not r.parent.name.startswith(BASE_KEY_PREFIX))


@dataclass(frozen=True)
class VerifyResult:
    max_abs_diff: float
    rows_compared: int
    matched_trials: list[str]
    unmatched: list[str]
    counts_equal: bool
    trainings: dict[str, int | None]
    seconds: float

    @property
    def passed(self) -> bool:
        return (not self.unmatched and self.rows_compared > 0 and self.max_abs_diff == 0.0 and self.counts_equal)


def verify(storage: str, data_dir: str, *, steps: int = 8, lrs: tuple[float, float] = (1e-3, 3e-3), log=print) -> VerifyResult:
    import polars as pl

    from study.cluster import connect
    from study.orchestrate import run_study

    start = time.perf_counter()
    log(f"[verify] {connect(dashboard=False)}")
    logging.getLogger("ray.tune").setLevel(logging.WARNING)  # "Wrote the latest version of all result files..."
    studies = {"shared": tiny_spec("sharing-shared", storage, data_dir, lrs, steps)}
    for tag, lr in zip("ab", lrs):
        studies[f"alone_{tag}"] = tiny_spec(f"sharing-alone-{tag}", storage, data_dir, [lr], steps)
    dirs: dict[str, Path] = {}
    ray_log = Path(storage) / "stage_sharing_ray.log"
    for tag, spec in studies.items():
        t0 = time.perf_counter()
        # Tune's trial tables go to a log file, not the benchmark's output.
        with open(ray_log, "a") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            outcome = run_study(spec, report=False, log=lambda *_: None)
        if outcome.failed:
            raise RuntimeError(f"study {spec.name} failed: {outcome.failed} (Ray/Tune output: {ray_log})")
        dirs[tag] = outcome.study_dir
        log(f"[verify] study {spec.name}: {outcome.trials} trial(s) in {time.perf_counter() - t0:.1f} s")

    def evals(study_dir: Path) -> pl.DataFrame:
        return pl.read_parquet(study_dir / "evals" / "*.parquet")

    keys = ["trial_id", "stage", "eval_task", "metric", "group"]
    shared = evals(dirs["shared"])
    alone = pl.concat([evals(dirs["alone_a"]), evals(dirs["alone_b"])])
    shared_ids, alone_ids = set(shared["trial_id"]), set(alone["trial_id"])
    joined = shared.join(alone, on=keys, how="inner", suffix="_alone")
    diff = (joined["accuracy"] - joined["accuracy_alone"]).abs().max() if joined.height else float("nan")
    counts_equal = joined.height == shared.height == alone.height and bool(
        ((joined["n"] == joined["n_alone"]) & (joined["correct"] == joined["correct_alone"])).all())
    return VerifyResult(max_abs_diff=float(diff), rows_compared=joined.height, matched_trials=sorted(shared_ids & alone_ids),
                        unmatched=sorted(shared_ids ^ alone_ids), counts_equal=counts_equal,
                        trainings={tag: ledger_trainings(d) for tag, d in dirs.items()},
                        seconds=time.perf_counter() - start)


def print_verify(result: VerifyResult, out=print) -> None:
    out("Equality check (tiny model): chains [ToxiGenQA SFT, ARC SFT lr 1e-3] and [ToxiGenQA SFT, ARC SFT lr 3e-3]")
    out("  one study sharing the first stage vs each chain as its own study (trains its own first stage)")
    out(f"  matching trials (same trial_id in both): {', '.join(result.matched_trials) or 'none'}")
    if result.unmatched:
        out(f"  trials in only one of the runs: {', '.join(result.unmatched)}")
    out(f"  evals rows compared: {result.rows_compared} (stages 0-2, both eval tasks, overall and per group); "
        f"n and correct equal: {result.counts_equal}")
    out(f"  max |accuracy difference|: {result.max_abs_diff}")
    t = result.trainings
    if t["shared"] is None:
        out("  stage trainings executed: not recorded (no stage-store ledger under <study>/stages/)")
    else:
        alone = [t[k] for k in ("alone_a", "alone_b")]
        out(f"  stage trainings executed (stage-store ledger): shared study {t['shared']} (naive 4, expected 3 with "
            f"sharing); separate studies {' + '.join(str(a) for a in alone)}")
    out(f"  {'PASSED' if result.passed else 'FAILED'} ({result.seconds:.0f} s)")


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=PAPER_MODEL,
                        help=f"model name of the paper grids (default {PAPER_MODEL}; plans only, never downloaded)")
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="run the tiny-model equality check (default on; --no-verify skips it)")
    parser.add_argument("--storage", default=None, help="results root of the equality check (default: a temporary folder)")
    parser.add_argument("--steps", type=int, default=8, help="steps per stage in the equality check")
    args = parser.parse_args(argv)

    print_grid(paper_grid(args.model))
    if not args.verify:
        return 0
    print("")
    data_dir = os.environ.get("STUDY_DATA_DIR") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
    if args.storage:
        result = verify(args.storage, data_dir, steps=args.steps)
    else:
        with tempfile.TemporaryDirectory() as storage:
            result = verify(storage, data_dir, steps=args.steps)
    print_verify(result)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
