"""What a trial trains, evaluates and validates on: a stage's training subsample (with what replay
mixes in), the eval sets, a best_seed candidate's validation sample. Data only: the chain runs
them, `trainables.token_counts` counts their tokens for `study plan`, both with the same rules.
Each read is timed as the trial's DATA phase."""

from __future__ import annotations

from contract.plan import StagePlan, TrialPlan
from contract.schema import DATA
from tasks import load_examples
from tasks.definition import SELECTION_SPLIT
from trainables import timings
from trainables.replay import replay_sample


def stage_examples(plan: TrialPlan, stage: StagePlan, stages: tuple[StagePlan, ...]) -> tuple[list, list]:
    """(what the stage trains on, the replayed part of it): its training subsample plus, with
    replay, a sample of the named earlier stage's own subsample drawn by the stage's seed."""
    examples = train_examples(plan, stage)
    replayed: list = []
    if stage.replay is not None:
        source = stages[stage.replay.from_stage - 1]
        replayed = replay_sample(train_examples(plan, source), stage.replay.fraction, stage.seed)
        examples = replayed if stage.replay.only else list(examples) + replayed
    return examples, replayed


def plan_eval_sets(plan: TrialPlan) -> dict[str, list]:
    """Every eval task's examples, as each stage is evaluated on them."""
    with timings.phase(DATA):
        return {e.task: load_examples(e.task, "eval", size=e.size, data_dir=plan.data_dir, data_seed=plan.data_seed,
                                      limit=e.limit, option_counts=e.option_counts, bad_rows=plan.bad_rows_policy)
                for e in plan.eval_tasks}


def train_examples(plan: TrialPlan, stage: StagePlan) -> list:
    """The stage's training subsample: what it trains on (every method, PPO/RLOO prompts and the
    reward model included), what replay from it draws from, and the pool of its curvature sample."""
    with timings.phase(DATA):
        return load_examples(stage.task, "train", size=stage.train_size, data_dir=plan.data_dir,
                             data_seed=plan.train_data_seed(stage), limit=stage.train_limit,
                             option_counts=stage.option_counts, bad_rows=plan.bad_rows_policy)


def validation_examples(plan: TrialPlan, stage: StagePlan, size: int) -> list:
    """What best_seed scores a stage's model on: a stratified sample of `size` examples of its
    task's validation split, filtered as its training data is (option counts, limit). Never
    fewer than asked: study validation refuses such a selection_size, and so does this."""
    with timings.phase(DATA):
        examples = load_examples(stage.task, SELECTION_SPLIT, size=size, data_dir=plan.data_dir,
                                 data_seed=plan.data_seed, limit=stage.train_limit,
                                 option_counts=stage.option_counts, bad_rows=plan.bad_rows_policy)
    if len(examples) < size:
        raise ValueError(f"start_from best_seed: task {stage.task!r} has {len(examples)} validation examples, "
                         f"fewer than selection_size {size}; lower selection_size")
    return examples
