"""Expand a study spec into concrete trial plans: one per (chain × grid point × seed).

A plan is a `contract.plan.TrialPlan` handed to `trainables`, which never imports `study`: the
seam between "what to run" and "how to run it". Every setting is filled here, once (the study
file's defaults included), so workers read attributes and never restate a default; plans.json
holds `TrialPlan.to_dict()`. What this module needs from `trainables` is passed in by its
caller (study.orchestrate): where the base model was built, and whether it is prompted through
its chat template. Identity is content-addressed:

- stage_key: hash of everything that determines a stage's weights (base model, data source and
  selection, training settings, every earlier stage, its own method/task/hyperparameters/seed,
  and under seed_scope 'order_and_data' the seed that draws its training subsample).
  Two trials whose chains share a prefix share those stages' keys.
- trial_id: `<chain>-<seed>-<hash>` from the chain's stage keys (contract.keys.trial_id), never
  a timestamp, so a rerun writes to the same place and overwrites instead of duplicating.

A `search:` study's points are sampled while it runs: `SampledPlans` builds the plan of each
sampled config with the same code (so a point gets the trial id a grid would give it), and
`collect_plans` gathers the plans of the trials that ran.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from contract.content_hash import content_hash
from contract.keys import trial_id
from contract.methods import DPO, ONLINE_RL_METHODS, PPO, RLOO, dpo_precomputes_reference
from contract.plan import (PLAN_VERSION, REWARD_INPUT_VERSION, BadRowsPlan, CurvaturePlan, DpoPlan, EvalTaskPlan, GenerationPlan,
                           ModelPlan, OnlineRLPlan, ReplayPlan, RewardPlan, RewardTrainingPlan, StagePlan, TrainingPlan,
                           TrialPlan)
from study.points import config_point, grid_points, resolve_stages
from study.spec import (DPOSpec, RewardSpec, StageSpec, StudySpec, checkpointing_on, eval_batch_size,
                        eval_precision, fsdp_on, generation_batch_size, stage_seed)
from study.spec_loading import spec_from_dict
from study.start_points import apply_start_points
from tasks import get_task, register_task_file, resolve_option_counts, reward_sources


def base_identity(spec: StudySpec, data_dir: str | None, base_model_path: str | None, chat: bool,
                  bad_rows: BadRowsPlan | None = None) -> dict[str, Any]:
    """What every stage_key of the study starts from. `chat`: whether the model is prompted
    through its chat template (model.chat_template resolved by the caller, which can load the
    tokenizer: study.orchestrate.chat_format). `bad_rows`: under data.bad_rows: skip, the rows the
    data check left out (study.data_check); it enters the key only then."""
    model = spec.model.name
    if model == "tiny" and base_model_path:
        model = Path(base_model_path).name  # tiny-<content hash>: tokenizer corpus and init included
    identity = {**dataclasses.asdict(spec.model), "name": model}
    if not identity["trust_remote_code"]:
        del identity["trust_remote_code"]  # off (the default) leaves existing stage keys as they were
    # The resolved format, not the setting: `false` and `auto` on a base model train alike.
    del identity["chat_template"]
    if chat:
        identity["chat"] = True  # plain text (the default) leaves existing stage keys as they were
    base = {
        "plan_version": PLAN_VERSION,
        "model": identity,
        # bf16 autocast on GPUs vs float32 on CPUs gives different weights from the same settings
        # (with model.dtype, this fixes the training precision: CPU trials are never shown a GPU).
        "accelerator": "gpu" if spec.execution.gpus_per_trial > 0 else "cpu",
        "data_source": "mirror" if data_dir else "hub",
        "data_seed": spec.data_seed,
        # Its settings that came later enter only when set (contract.plan.TrainingPlan.key_payload).
        "training": training_plan(spec).key_payload(),
    }
    if fsdp_on(spec):
        # FSDP computes in its own mixed-precision policy over sharded parameters, not DDP's
        # autocast over whole ones. The worker count is not keyed: DDP averages the same global
        # batch's gradients on 1 or N workers (trainables.distributed), equal weights up to rounding.
        base["fsdp"] = True
    if bad_rows is not None:
        base["bad_rows"] = bad_rows.to_dict()
    return base


def training_plan(spec: StudySpec) -> TrainingPlan:
    """The study's training settings as its plans carry them: activation checkpointing as the
    trials run it (study.spec.checkpointing_on: 'auto' resolved, or off) and eval_batch_size
    resolved (study.spec.eval_batch_size)."""
    return TrainingPlan(**{**dataclasses.asdict(spec.training), "activation_checkpointing": checkpointing_on(spec),
                           "eval_batch_size": eval_batch_size(spec)})


def study_base_key(spec: StudySpec, data_dir: str | None, base_model_path: str | None, chat: bool,
                   bad_rows: BadRowsPlan | None = None) -> str:
    """The parent key of every first stage of the study: the hash of `base_identity`."""
    return content_hash(base_identity(spec, data_dir, base_model_path, chat, bad_rows))


def build_plans(spec: StudySpec, *, study_dir: str | Path, data_dir: str | None, base_model_path: str | None = None,
                chat: bool, bad_rows: BadRowsPlan | None = None) -> list[TrialPlan]:
    """All trial plans: chains × grid points × seeds, in that order. `base_model_path`: where
    stage 0 loads the model from (None: its name); `chat`: the resolved prompt format;
    `bad_rows`: what the data check skipped under data.bad_rows: skip (None otherwise)."""
    register_task_files(spec)
    base_key = study_base_key(spec, data_dir, base_model_path, chat, bad_rows)
    plans = [trial_plan(spec, chain, point, seed, base_key, study_dir, data_dir, base_model_path, chat, bad_rows)
             for chain in spec.chains for point in grid_points(spec) for seed in spec.seeds]
    if any(stage.start_from == "best_seed" for stages in spec.chains.values() for stage in stages):
        plans = apply_start_points(spec, plans)
    ids = [p.trial_id for p in plans]
    if len(set(ids)) != len(ids):  # two trials would write the same parts and checkpoints
        raise ValueError(f"trial ids collide: {sorted(i for i in ids if ids.count(i) > 1)}")
    return plans


def trial_plan(spec: StudySpec, chain: str, point: Mapping[str, Any], seed: int, base_key: str, study_dir: str | Path,
               data_dir: str | None, base_model_path: str | None, chat: bool,
               bad_rows: BadRowsPlan | None = None) -> TrialPlan:
    """The plan of one trial (before any best_seed start point is resolved)."""
    parent = base_key
    stages = []
    for number, stage in enumerate(resolve_stages(spec, chain, point), start=1):
        planned = stage_plan(spec, stage, number, seed).keyed(parent)
        parent = planned.stage_key
        stages.append(planned)
    return TrialPlan(
        trial_id=trial_id(chain, seed, (s.stage_key for s in stages)),
        study=spec.name,
        chain=chain,
        seed=int(seed),
        grid_point=dict(point),
        model=ModelPlan(**dataclasses.asdict(spec.model), path=base_model_path or spec.model.name, chat=bool(chat)),
        stages=tuple(stages),
        eval_tasks=tuple(eval_task_plan(spec, t) for t in spec.all_eval_tasks()),
        task_files=tuple(spec.task_files),
        # Measurement only, like the eval tasks: it enters measure keys, never stage keys.
        generation=generation_plan(spec) if uses_generation(spec) else None,
        data_dir=data_dir,
        data_seed=spec.data_seed,
        training=training_plan(spec),
        # Measurement only: it does not change weights, so it is not part of any stage_key.
        curvature=CurvaturePlan(**dataclasses.asdict(spec.curvature)),
        study_dir=str(study_dir),
        eval_precision=eval_precision(spec),
        bad_rows=bad_rows,
    )


def stage_plan(spec: StudySpec, stage: StageSpec, number: int, trial_seed: int) -> StagePlan:
    """Stage `number` of a trial with seed `trial_seed`, every setting filled, without its key.
    Settings that entered no key before they existed are None when unset (contract.plan)."""
    settings = spec.task_settings(stage.task)
    seed = stage_seed(stage, trial_seed)
    online_rl_settings = None
    if stage.method in ONLINE_RL_METHODS:
        rl = getattr(stage, stage.method)
        online_rl_settings = OnlineRLPlan(**{**dataclasses.asdict(rl),
                                             "reward": reward_plan(stage.method, rl.reward, stage.task, rl.prompts)})
    return StagePlan(
        stage=number,
        method=stage.method,
        task=stage.task,
        learning_rate=stage.learning_rate,
        batch_size=stage.batch_size,
        steps=stage.steps,
        seed=seed,
        train_size=settings.train_size,
        task_version=task_version(stage.task),
        replay=ReplayPlan(**dataclasses.asdict(stage.replay)) if stage.replay else None,
        train_limit=settings.limit,
        # Under 'order' the trial's data_seed draws every stage's subsample (and the key keeps
        # its shape from before seed scopes existed).
        data_seed=spec.train_data_seed(seed) if spec.seed_scope != "order" else None,
        option_counts=option_counts_entry(stage.task, settings.option_counts),
        # Method settings enter the key only for their own method.
        dpo=dpo_plan(stage.dpo, on_gpu=spec.execution.gpus_per_trial > 0,
                     fsdp=fsdp_on(spec) and spec.execution.workers_per_trial > 1) if stage.method == DPO else None,
        ppo=online_rl_settings if stage.method == PPO else None,
        rloo=online_rl_settings if stage.method == RLOO else None,
        stage_key="",  # StagePlan.keyed fills it in
        start_from=None,  # study.start_points fills it in for a best_seed stage
    )


def dpo_plan(settings: DPOSpec, *, on_gpu: bool, fsdp: bool) -> DpoPlan:
    """A DPO stage's plan: `precompute_reference: auto` resolved for the trial's workers."""
    return DpoPlan(beta=settings.beta, reference=settings.reference,
                   precompute_reference=dpo_precomputes_reference(settings.precompute_reference, on_gpu=on_gpu,
                                                                  fsdp=fsdp))


def reward_plan(method: str, reward: RewardSpec, task: str, prompts: str) -> RewardPlan:
    """An online-RL stage's reward: the named model, or the training settings of one trained in
    the stage with what it is trained on (`tasks.reward_sources.reward_data`), and the version of
    the text a reward model reads wherever it may read text (RLOO always; PPO when the named
    model has its own tokenizer; `text_reward`). Its key form (what the stage key and
    trials.method_settings record) is RewardPlan.to_dict's."""
    train = None
    if not reward.model:
        train = RewardTrainingPlan(steps=reward.steps, learning_rate=reward.learning_rate,
                                   batch_size=reward.batch_size, data=reward_sources.reward_data(task, prompts))
    reads_text = method == RLOO or bool(reward.model)
    return RewardPlan(model=reward.model or None, train=train, input=REWARD_INPUT_VERSION if reads_text else None)


def task_version(task: str) -> str:
    return get_task(task).keyed_version()


def option_counts_entry(task: str, requested: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """The option counts a study keeps of a task, for the plan (workers load with them) and so
    for stage and measurement keys; None when they are the task's default, so studies that keep
    the default share stages with each other whether or not they spell it out."""
    definition = get_task(task)
    counts = resolve_option_counts(definition, requested)
    return None if counts == definition.option_counts else tuple(counts)


def register_task_files(spec: StudySpec) -> None:
    """Make the study's YAML tasks known in this process (a Ray worker building a sampled
    point's plan knows only the built-in ones)."""
    if spec.task_files:
        for path in spec.task_files:
            register_task_file(path)


def eval_task_plan(spec: StudySpec, task: str) -> EvalTaskPlan:
    """What evaluating one task after a stage depends on (it feeds the measurement key, so a
    task-version bump or a new mode re-evaluates stored stages instead of reusing old rows).
    Its limit, option counts and modes enter the key only when they differ from the defaults."""
    settings = spec.task_settings(task)
    return EvalTaskPlan(task=task, size=settings.eval_size, version=get_task(task).keyed_version(),
                        limit=settings.limit, option_counts=option_counts_entry(task, settings.option_counts),
                        modes=tuple(settings.eval_modes))


def generation_plan(spec: StudySpec) -> GenerationPlan:
    """The study's generation settings as planned: batch_size resolved (study.spec.generation_batch_size)."""
    return GenerationPlan(**{**dataclasses.asdict(spec.generation), "batch_size": generation_batch_size(spec)})


def uses_generation(spec: StudySpec) -> bool:
    """Whether any evaluation generates text (so the generation settings shape its results)."""
    return any(get_task(t).kind == "generation" or "generate" in spec.task_settings(t).eval_modes
               for t in spec.all_eval_tasks())


# ---------------------------------------------------------------- plans of sampled points


def plan_for_config(spec: StudySpec, config: Mapping[str, Any], *, study_dir: str | Path, data_dir: str | None,
                    base_model_path: str | None = None, chat: bool, bad_rows: BadRowsPlan | None = None) -> TrialPlan:
    """The plan of one Tune config (a sampled point, or a grid point): the same plan, stage keys
    and trial id that build_plans gives for that chain, point and seed."""
    return SampledPlans(spec, study_dir, data_dir, base_model_path, chat=chat, bad_rows=bad_rows)(config)


class SampledPlans:
    """Picklable `config -> plan` for trials whose points a search algorithm samples (their
    plans cannot be precomputed): what `chain_trial(plan_for=...)` takes, like PlanLookup for
    grids. Built in the driver from the validated spec (or its to_dict() form) and the resolved
    prompt format; the spec travels inside, so a worker never re-reads files or the environment
    to rebuild it."""

    def __init__(self, spec: StudySpec | Mapping[str, Any], study_dir: str | Path, data_dir: str | None,
                 base_model_path: str | None = None, *, chat: bool, bad_rows: BadRowsPlan | None = None):
        self.spec = spec if isinstance(spec, StudySpec) else spec_from_dict(spec)
        self.study_dir = str(study_dir)
        self.data_dir = data_dir
        self.base_model_path = base_model_path
        self.chat = chat
        self.bad_rows = bad_rows
        self._base_key = study_base_key(self.spec, data_dir, base_model_path, chat, bad_rows)

    def __call__(self, config: Mapping[str, Any]) -> TrialPlan:
        register_task_files(self.spec)  # called in the trial's worker, which knows only built-in tasks
        chain, seed, point = config_point(self.spec, config)
        return trial_plan(self.spec, chain, point, seed, self._base_key, self.study_dir, self.data_dir,
                          self.base_model_path, self.chat, self.bad_rows)


def collect_plans(configs: Iterable[Mapping[str, Any] | None],
                  plan_for: Callable[[Mapping[str, Any]], TrialPlan]) -> list[TrialPlan]:
    """The plans of the trials that ran (e.g. `[r.config for r in tuner.fit()]`), once per
    trial id, in order: what the driver writes to plans.json after a search."""
    plans: dict[str, TrialPlan] = {}
    for config in configs:
        if config:
            plan = plan_for(config)
            plans.setdefault(plan.trial_id, plan)
    return list(plans.values())
