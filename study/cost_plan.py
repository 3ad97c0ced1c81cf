"""What a study will compute and write, counted from its plans before anything runs (`study plan`).

Counted per distinct stage (stage keys: trials sharing a prefix share its stages, and a
best_seed stage's candidate prefixes are stages of their own), in plan order:

- training: examples fed and their non-padding tokens. An SFT stage runs `steps` optimizer
  steps of `batch_size` examples over its training subsample of N examples (those that fit
  max_length), epoch after epoch, each epoch ceil(N / batch_size) steps whose last batch holds
  the remainder (transformers' Trainer, dataloader_drop_last off). Whole epochs feed exactly
  the subsample's tokens; the steps of an unfinished epoch feed a random part of it, counted
  as its expected value (batch_size × the mean tokens per example), and the stage says so.
  Other methods (DPO, PPO, RLOO) and replayed examples: examples fed = steps × batch_size, tokens
  not counted.
- evaluation: after every distinct stage and once for the base model (stage 0), every eval task,
  once per stage key (stored with the stage, shared by every trial): examples and scored tokens
  (trainables.token_counts says what is counted).
- best-seed validation: each candidate prefix's last stage, scored once on its validation sample.
- curvature (when measured after the stage): the HVP budget over its sample, n_samples examples
  × (power iteration: top_k × max_iterations; Lanczos: max_iterations; Hutchinson: trace_samples):
  an upper bound, the algorithms stop at `tol`.
- checkpoints: one per stage training, `checkpoint_bytes` each; kept at the end of a fully
  successful run under each keep_checkpoints policy (`kept_at_end`).

What the study folder already holds is not counted again (a `study run --resume`, or an
extension of a finished study, reuses it): a stage with a stored record (finished or diverged)
is reused unless its checkpoint is gone while a planned stage that starts from it still has to
be trained (then it is trained again), and stored evaluations, validations and curvature are
not measured again. `fresh=True` plans a run without --resume, which trains every stage.

Counting needs the examples and their tokens: `counter` (trainables.token_counts.TokenCounter,
reached through study.orchestrate) or any object with its three methods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

from contract import checkpoint_needs
from contract.keys import base_stage_key, measure_keys, validation_key
from contract.layout import StudyLayout
from contract.methods import SFT
from contract.plan import StagePlan, TrialPlan
from contract.records import FINISHED, StageRecord, read_record
from tasks.definition import SELECTION_SPLIT

POLICIES = checkpoint_needs.POLICIES


class Counter(Protocol):
    def train(self, plan: TrialPlan, stage: StagePlan) -> Any: ...
    def evaluation(self, plan: TrialPlan) -> dict[str, Any]: ...
    def validation(self, plan: TrialPlan, stage: StagePlan, size: int) -> Any: ...


@dataclass
class StageCost:
    """One distinct stage (or the base model, `number` 0): what a run does for it."""

    key: str
    label: str
    number: int
    task: str
    method: str
    action: str
    """'train', 'reuse' (stored record, checkpoint there or no longer needed; the base model: its
    evaluation stored) or 'evaluate' (the base model)."""
    train_examples: int = 0
    """The training subsample as trained (examples that fit max_length): a stage record's n_train_examples."""
    examples_fed: int = 0
    train_tokens: float | None = 0
    train_tokens_exact: bool = True
    eval_examples: int = 0
    scored_tokens: int = 0
    eval_by_task: dict[str, int] = field(default_factory=dict)
    validation_examples: int = 0
    validation_tokens: int = 0
    hvp_examples: int = 0
    """Curvature: examples × HVP budget."""
    hvp_tokens: float = 0


@dataclass
class CostPlan:
    """A study's plan, counted (see the module docstring)."""

    study: str
    trials: int
    stage_trainings_naive: int
    distinct_stages: int
    stages: list[StageCost]
    checkpoint_bytes: int
    policy: str
    kept: dict[str, int]
    """Checkpoints left at the end under each policy (POLICIES)."""
    tokens_estimated: bool = False
    generation_upper_bound: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def trainings(self) -> list[StageCost]:
        return [s for s in self.stages if s.action == "train"]

    @property
    def reused(self) -> list[StageCost]:
        return [s for s in self.stages if s.action == "reuse"]

    def total(self, name: str) -> float:
        return sum((getattr(s, name) or 0) for s in self.stages)

    @property
    def train_tokens_exact(self) -> bool:
        return all(s.train_tokens_exact for s in self.trainings)

    @property
    def bytes_written(self) -> int:
        return len(self.trainings) * self.checkpoint_bytes

    def bytes_kept(self, policy: str) -> int:
        return self.kept[policy] * self.checkpoint_bytes


def kept_at_end(plans: list[TrialPlan], policy: str) -> set[str]:
    """Stage keys whose checkpoints a fully successful run of `plans` leaves in the stage store
    under keep_checkpoints `policy`: the engine's own rule (contract.checkpoint_needs), which
    the chain applies as it runs."""
    return checkpoint_needs.kept_at_end([plan.to_dict() for plan in plans], policy)


def planned_stages(plans: Iterable[TrialPlan]) -> list[tuple[TrialPlan, StagePlan, tuple[str, ...]]]:
    """Every distinct stage of the plans, best-seed candidates' prefixes included, once each in
    plan order: (a plan it belongs to, the stage, the keys of the stages it starts from)."""
    seen: dict[str, tuple[TrialPlan, StagePlan, tuple[str, ...]]] = {}

    def add(plan: TrialPlan, stages: tuple[StagePlan, ...]) -> None:
        for i, stage in enumerate(stages):
            if stage.start_from is not None:
                for candidate in stage.start_from.candidates:
                    add(plan, candidate)
                parents = tuple(c[-1].stage_key for c in stage.start_from.candidates)
            else:
                parents = (stages[i - 1].stage_key,) if i else ()
            seen.setdefault(stage.stage_key, (plan, stage, parents))

    for plan in plans:
        add(plan, plan.stages)
    return list(seen.values())


def count_plan(plans: list[TrialPlan], counter: Counter, *, checkpoint_bytes: int, policy: str,
               study: str, fresh: bool = False) -> CostPlan:
    """The cost plan of `plans` (see the module docstring). The study folder is the plans'
    `study_dir`; `fresh`: a run without --resume (every stage trained, every measurement taken)."""
    if not plans:
        return CostPlan(study, 0, 0, 0, [], checkpoint_bytes, policy, {p: 0 for p in POLICIES})
    layout = StudyLayout(Path(plans[0].study_dir))
    stages = planned_stages(plans)
    records = {} if fresh else {s.stage_key: read_record(StageRecord, layout.stage(s.stage_key).record)
                                for _, s, _ in stages}
    children: dict[str, list[str]] = {}
    for _, stage, parents in stages:
        for parent in parents:
            children.setdefault(parent, []).append(stage.stage_key)
    keys = measure_keys(plans[0])
    out: list[StageCost] = []
    estimated = upper = False

    def stored(key: str, table: str, measure: str, suffix: str = ".parquet") -> bool:
        return not fresh and layout.stage(key).measure(table, measure, suffix).is_file()

    def evaluate(cost: StageCost, plan: TrialPlan) -> None:
        nonlocal estimated, upper
        if stored(cost.key, "evals", keys.evals) and stored(cost.key, "predictions", keys.evals):
            return
        for task, count in counter.evaluation(plan).items():
            cost.eval_examples += count.examples
            cost.scored_tokens += count.tokens
            cost.eval_by_task[task] = count.examples
            estimated |= count.estimated
            upper |= count.upper_bound

    bases = {}
    for plan in plans:
        bases.setdefault(base_stage_key(plan.model), plan)
    for key, plan in bases.items():
        cost = StageCost(key=key, label="base model (stage 0)", number=0, task="-", method="-", action="evaluate")
        evaluate(cost, plan)
        if not cost.eval_by_task:
            cost.action = "reuse"  # its evaluation is stored
        out.append(cost)

    def retrain(key: str) -> bool:
        """A stored finished stage whose checkpoint is gone, needed by a stage still to train."""
        return (records.get(key) is not None and records[key].status == FINISHED
                and not layout.stage(key).checkpoint.is_dir()
                and any(records.get(child) is None for child in children.get(key, ())))

    candidates = {c[-1].stage_key: (plan, c[-1], s.start_from.validation_size)
                  for plan, s, _ in stages if s.start_from is not None for c in s.start_from.candidates}
    for plan, stage, _ in stages:
        record = records.get(stage.stage_key)
        action = "train" if record is None or retrain(stage.stage_key) else "reuse"
        cost = StageCost(key=stage.stage_key, label=_label(plan, stage), number=stage.stage, task=stage.task,
                         method=stage.method, action=action)
        if action == "train":
            _training(cost, plan, stage, counter)
        if action == "train" or record.status == FINISHED:
            evaluate(cost, plan)
            if stage.stage_key in candidates:
                cplan, cstage, size = candidates[stage.stage_key]
                if not stored(stage.stage_key, "validation", validation_key(SELECTION_SPLIT, size, keys), ".json"):
                    count = counter.validation(cplan, cstage, size)
                    cost.validation_examples, cost.validation_tokens = count.examples, count.tokens
            if plan.curvature.measures(stage.stage) and not stored(stage.stage_key, "curvature", keys.curvature):
                _curvature(cost, plan, stage, counter)
        out.append(cost)
    kept = {policy_name: len(kept_at_end(plans, policy_name)) for policy_name in POLICIES}
    notes = []
    if not fresh and any(r is not None for r in records.values()):
        notes.append("stages stored in the study folder are reused (`study run --resume`); "
                     "without --resume every stage is trained again")
    return CostPlan(study=study, trials=len(plans), stage_trainings_naive=sum(len(p.stages) for p in plans),
                    distinct_stages=len(stages), stages=out, checkpoint_bytes=checkpoint_bytes, policy=policy,
                    kept=kept, tokens_estimated=estimated, generation_upper_bound=upper, notes=notes)


def fed(n: int, total_tokens: int, steps: int, batch: int) -> tuple[int, float, bool]:
    """(examples fed, tokens fed, exact) of `steps` steps of `batch` over n examples holding
    `total_tokens`, epoch after epoch (the last batch of an epoch holds the remainder)."""
    if n <= 0:
        return 0, 0.0, True
    per_epoch = math.ceil(n / batch)
    epochs, rest = divmod(steps, per_epoch)
    examples = epochs * n + rest * batch
    return examples, epochs * total_tokens + rest * batch * total_tokens / n, rest == 0


def hvp_budget(curvature: Any) -> int:
    """Hessian-vector products a measurement may spend on its sample (an upper bound)."""
    budget = 0
    for algorithm in curvature.algorithms:
        budget += curvature.top_k * curvature.max_iterations if algorithm == "power_iteration" else curvature.max_iterations
    return budget + curvature.trace_samples


def _training(cost: StageCost, plan: TrialPlan, stage: StagePlan, counter: Counter) -> None:
    count = counter.train(plan, stage)
    cost.train_examples = count.examples
    if stage.method != SFT or stage.replay is not None:
        cost.examples_fed, cost.train_tokens, cost.train_tokens_exact = stage.steps * stage.batch_size, None, False
        return
    cost.examples_fed, cost.train_tokens, cost.train_tokens_exact = fed(count.examples, count.tokens, stage.steps,
                                                                        stage.batch_size)


def _curvature(cost: StageCost, plan: TrialPlan, stage: StagePlan, counter: Counter) -> None:
    count = counter.train(plan, stage)
    n = min(plan.curvature.n_samples, count.examples)
    budget = hvp_budget(plan.curvature)
    cost.hvp_examples = n * budget
    cost.hvp_tokens = n * budget * (count.tokens / count.examples if count.examples else 0)


def _label(plan: TrialPlan, stage: StagePlan) -> str:
    point = ",".join(f"{k}={v}" for k, v in plan.grid_point.items())
    return f"{plan.chain}[{point}] seed {stage.seed} stage {stage.stage}" if point else \
        f"{plan.chain} seed {stage.seed} stage {stage.stage}"
