"""Expand a study spec into concrete trial plans: one per (chain × grid point × seed).

A plan is plain data (JSON-able) handed to `trainables`, which never imports `study`: the
seam between "what to run" and "how to run it". Identity is content-addressed:

- stage_key: hash of everything that determines a stage's weights (base model, data source and
  selection, training settings, every earlier stage, its own method/task/hyperparameters/seed,
  and under seed_scope 'order_and_data' the seed that draws its training subsample).
  Two trials whose chains share a prefix share those stages' keys.
- trial_id: `<chain>-<seed>-<hash>` from the chain's stage keys, never a timestamp, so a rerun
  writes to the same place and overwrites instead of duplicating.

A `search:` study's points are sampled while it runs: `SampledPlans` builds the plan of each
sampled config with the same code (so a point gets the trial id a grid would give it), and
`collect_plans` gathers the plans of the trials that ran.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from contract.content_hash import content_hash
from study.spec import GRID_KEY, StageSpec, StudySpec, round_sample, stage_seed
from study.spec_loading import spec_from_dict

PLAN_VERSION = 1  # bump when the meaning of a plan field changes (it enters every stage_key)


def grid_points(spec: StudySpec) -> list[dict[str, Any]]:
    """Cartesian product of the grid axes, in a stable order; [{}] without a grid."""
    keys = sorted(spec.grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(spec.grid[k] for k in keys))]


def resolve_stages(spec: StudySpec, chain: str, point: Mapping[str, Any]) -> tuple[StageSpec, ...]:
    stages = list(spec.chains[chain])
    for key, value in point.items():
        match = GRID_KEY.match(key)
        assert match, key  # validated by the spec
        index, fld = int(match.group(1)) - 1, match.group(2)
        if fld == "replay_fraction":
            replay = dataclasses.replace(stages[index].replay, fraction=float(value))
            stages[index] = dataclasses.replace(stages[index], replay=replay)
        else:
            stages[index] = dataclasses.replace(stages[index], **{fld: value})
    return tuple(stages)


def chat_format(spec: StudySpec, base_model_path: str | None = None) -> bool:
    """Whether the study's model is prompted through its chat template (`model.chat_template`
    resolved; the tokenizer is loaded only when the answer depends on it)."""
    from trainables.tokenization import resolve_chat_template

    def load():
        from trainables.models import load_tokenizer

        return load_tokenizer(str(base_model_path or spec.model.name), trust_remote_code=spec.model.trust_remote_code)

    return resolve_chat_template(spec.model.chat_template, spec.model.name, load=load)


def base_identity(spec: StudySpec, data_dir: str | None, base_model_path: str | None = None,
                  chat: bool | None = None) -> dict[str, Any]:
    """What every stage_key of the study starts from. `chat`: `chat_format(spec, ...)`, computed
    when not given."""
    model = spec.model.name
    if model == "tiny" and base_model_path:
        model = Path(base_model_path).name  # tiny-<content hash>: tokenizer corpus and init included
    identity = {**dataclasses.asdict(spec.model), "name": model}
    if not identity["trust_remote_code"]:
        del identity["trust_remote_code"]  # off (the default) leaves existing stage keys as they were
    # The resolved format, not the setting: `false` and `auto` on a base model train alike.
    del identity["chat_template"]
    if chat if chat is not None else chat_format(spec, base_model_path):
        identity["chat"] = True  # plain text (the default) leaves existing stage keys as they were
    return {
        "plan_version": PLAN_VERSION,
        "model": identity,
        # bf16 autocast on GPUs vs float32 on CPUs gives different weights from the same settings.
        "accelerator": "gpu" if spec.execution.gpus_per_trial > 0 else "cpu",
        "data_source": "mirror" if data_dir else "hub",
        "data_seed": spec.data_seed,
        "training": dataclasses.asdict(spec.training),
    }


def _base(spec: StudySpec, data_dir: str | None, base_model_path: str | None) -> tuple[bool, str]:
    """(chat format, base key): what every plan of a study shares, resolved once."""
    chat = chat_format(spec, base_model_path)
    return chat, content_hash(base_identity(spec, data_dir, base_model_path, chat))


def build_plans(spec: StudySpec, *, study_dir: str | Path, data_dir: str | None, base_model_path: str | None = None) -> list[dict[str, Any]]:
    """All trial plans: chains × grid points × seeds, in that order."""
    register_task_files(spec)
    chat, base_key = _base(spec, data_dir, base_model_path)
    plans: list[dict[str, Any]] = []
    for chain in spec.chains:
        for point in grid_points(spec):
            for seed in spec.seeds:
                plan = _plan(spec, chain, point, seed, base_key, study_dir, data_dir, base_model_path, chat)
                plans.append(plan)
    if any(stage.start_from == "best_seed" for stages in spec.chains.values() for stage in stages):
        from study.start_points import apply_start_points  # imports this module

        plans = apply_start_points(spec, plans)
    ids = [p["trial_id"] for p in plans]
    if len(set(ids)) != len(ids):  # two trials would write the same parts and checkpoints
        raise ValueError(f"trial ids collide: {sorted(i for i in ids if ids.count(i) > 1)}")
    return plans


def _plan(spec, chain, point, seed, base_key, study_dir, data_dir, base_model_path, chat) -> dict[str, Any]:
    parent = base_key
    stages = []
    for number, stage in enumerate(resolve_stages(spec, chain, point), start=1):
        settings = spec.task_settings(stage.task)
        entry = {
            "stage": number,
            "method": stage.method,
            "task": stage.task,
            "learning_rate": float(stage.learning_rate),
            "batch_size": int(stage.batch_size),
            "steps": int(stage.steps),
            "seed": stage_seed(stage, seed),
            "train_size": settings.train_size,
            "task_version": task_version(stage.task),
            "replay": dataclasses.asdict(stage.replay) if stage.replay else None,
        }
        if settings.limit is not None:  # only when set, so existing studies keep their stage keys
            entry["train_limit"] = settings.limit
        if spec.seed_scope != "order":  # only then, so studies under 'order' keep their stage keys
            # The seed that draws this stage's training subsample; under 'order' it is the plan's data_seed.
            entry["data_seed"] = spec.train_data_seed(entry["seed"])
        counts = option_counts_entry(stage.task, settings.option_counts)
        if counts is not None:
            entry["option_counts"] = counts
        if stage.method == "dpo":  # method settings enter the key only for their own method
            entry["dpo"] = dataclasses.asdict(stage.dpo)
        if stage.method in ("ppo", "rloo"):
            rl = dataclasses.asdict(getattr(stage, stage.method))
            rl["reward"] = reward_key(stage.method, rl["reward"], stage.task, rl["prompts"])
            entry[stage.method] = rl
        entry["stage_key"] = parent = content_hash({"parent": parent, **entry})
        stages.append(entry)
    trial_id = f"{chain}-{seed}-{content_hash([s['stage_key'] for s in stages], 8)}"
    return {
        "trial_id": trial_id,
        "study": spec.name,
        "chain": chain,
        "seed": int(seed),
        "grid_point": dict(point),
        "model": {**dataclasses.asdict(spec.model), "path": base_model_path or spec.model.name, "chat": bool(chat)},
        "stages": stages,
        "eval_tasks": [eval_entry(spec, t) for t in spec.all_eval_tasks()],
        "task_files": list(spec.task_files),
        # Measurement only, like the eval entries: it enters measure keys, never stage keys.
        "generation": dataclasses.asdict(spec.generation) if uses_generation(spec) else None,
        "data_dir": data_dir,
        "data_seed": spec.data_seed,
        "training": dataclasses.asdict(spec.training),
        # Measurement only: it does not change weights, so it is not part of any stage_key.
        "curvature": spec.to_dict()["curvature"],
        "study_dir": str(study_dir),
    }


def reward_key(method: str, reward: dict[str, Any], task: str, prompts: str) -> dict[str, Any]:
    """An online-RL stage's reward as its stage key (and trials.method_settings) records it: the
    named model, or the training settings of one trained in the stage, with what it is trained on
    when that is not the task's QA pairs (`reward_data`; reward models trained on those keep their
    keys) and the version of the text a reward model reads wherever it may read text (RLOO
    always; PPO when the named model has its own tokenizer; `text_reward`)."""
    from trainables.stages.reward_data import QA_PAIRS, reward_data
    from trainables.stages.text_reward import REWARD_INPUT_VERSION

    if reward["model"]:
        key: dict[str, Any] = {"model": reward["model"]}
    else:
        key = {"train": {k: reward[k] for k in ("steps", "learning_rate", "batch_size")}}
        data = reward_data(task, prompts)
        if data != QA_PAIRS:
            key["train"]["data"] = data
    if method == "rloo" or reward["model"]:
        key["input"] = REWARD_INPUT_VERSION
    return key


def task_version(task: str) -> str:
    from tasks import get_task

    return get_task(task).keyed_version()


def option_counts_entry(task: str, requested: tuple[int, ...] | None) -> list[int] | None:
    """The option counts a study keeps of a task, for the plan (workers load with them) and so
    for stage and measurement keys; None when they are the task's default, so studies that keep
    the default share stages with each other whether or not they spell it out."""
    from tasks import get_task, resolve_option_counts

    definition = get_task(task)
    counts = resolve_option_counts(definition, requested)
    return None if counts == definition.option_counts else list(counts)


def register_task_files(spec: StudySpec) -> None:
    """Make the study's YAML tasks known in this process (a Ray worker building a sampled
    point's plan knows only the built-in ones)."""
    if spec.task_files:
        from tasks import register_task_file

        for path in spec.task_files:
            register_task_file(path)


def eval_entry(spec: StudySpec, task: str) -> dict[str, Any]:
    """What evaluating one task after a stage depends on (it feeds the measurement key, so a
    task-version bump or a new mode re-evaluates stored stages instead of reusing old rows)."""
    from tasks import get_task

    settings, definition = spec.task_settings(task), get_task(task)
    entry: dict[str, Any] = {"task": task, "size": settings.eval_size, "version": definition.keyed_version()}
    # Only what differs from the defaults, so a study that does not use them keeps its keys.
    if settings.limit is not None:
        entry["limit"] = settings.limit
    counts = option_counts_entry(task, settings.option_counts)
    if counts is not None:
        entry["option_counts"] = counts
    if definition.kind == "choice" and tuple(settings.eval_modes) != ("score",):
        entry["modes"] = list(settings.eval_modes)
    return entry


def uses_generation(spec: StudySpec) -> bool:
    """Whether any evaluation generates text (so the generation settings shape its results)."""
    from tasks import get_task

    return any(get_task(t).kind == "generation" or "generate" in spec.task_settings(t).eval_modes
               for t in spec.all_eval_tasks())


# ---------------------------------------------------------------- plans of sampled points


def config_point(spec: StudySpec, config: Mapping[str, Any]) -> tuple[str, int, dict[str, Any]]:
    """(chain, seed, point) of a Tune config `{chain, seed, stage<k>.<field>: value, ...}`.

    The point must name exactly the study's axes (search.space, else the grid). Sampled values
    are normalised as the searcher hands them out: continuous axes rounded to SAMPLE_DIGITS
    significant digits, integer fields as int, so equal points give equal stage keys and trial
    ids however the value travelled. Grid values are kept as they are (build_plans' form).
    """
    chain, seed = config.get("chain"), config.get("seed")
    if chain not in spec.chains:
        raise KeyError(f"config {dict(config)} names no chain of study {spec.name!r} (chains: {', '.join(spec.chains)})")
    if seed not in spec.seeds:
        raise KeyError(f"config {dict(config)} names no seed of study {spec.name!r} (seeds: {list(spec.seeds)})")
    point = {k: v for k, v in config.items() if k not in ("chain", "seed")}
    axes = spec.search.space if spec.search is not None else spec.grid
    if set(point) != set(axes):
        raise KeyError(f"config {dict(config)} does not name the study's axes {sorted(axes)}")
    if spec.search is not None:
        point = {k: sampled_value(k, spec.search.space[k], v) for k, v in point.items()}
    return chain, int(seed), dict(sorted(point.items()))


def sampled_value(axis: str, dist: Mapping[str, Any], value: Any) -> Any:
    """A value of search axis `axis` (distribution `dist`) as trials run it."""
    [kind] = dist
    if kind in ("loguniform", "uniform"):
        return round_sample(value)
    if axis.endswith((".batch_size", ".steps")):
        return int(value)
    return value  # a choice of learning rates or replay fractions: the listed value itself


def plan_for_config(spec: StudySpec, config: Mapping[str, Any], *, study_dir: str | Path, data_dir: str | None,
                    base_model_path: str | None = None) -> dict[str, Any]:
    """The plan of one Tune config (a sampled point, or a grid point): the same plan, stage keys
    and trial id that build_plans gives for that chain, point and seed."""
    register_task_files(spec)
    chain, seed, point = config_point(spec, config)
    chat, base_key = _base(spec, data_dir, base_model_path)
    return _plan(spec, chain, point, seed, base_key, study_dir, data_dir, base_model_path, chat)


class SampledPlans:
    """Picklable `config -> plan` for trials whose points a search algorithm samples (their
    plans cannot be precomputed): what `chain_trial(plan_for=...)` takes, like PlanLookup for
    grids. Built in the driver from the validated spec (or its to_dict() form); the spec
    travels inside, so a worker never re-reads files or the environment to rebuild it."""

    def __init__(self, spec: StudySpec | Mapping[str, Any], study_dir: str | Path, data_dir: str | None,
                 base_model_path: str | None = None):
        self.spec = spec if isinstance(spec, StudySpec) else spec_from_dict(spec)
        self.study_dir = str(study_dir)
        self.data_dir = data_dir
        self.base_model_path = base_model_path
        self._chat, self._base_key = _base(self.spec, data_dir, base_model_path)

    def __call__(self, config: Mapping[str, Any]) -> dict[str, Any]:
        register_task_files(self.spec)  # called in the trial's worker, which knows only built-in tasks
        chain, seed, point = config_point(self.spec, config)
        return _plan(self.spec, chain, point, seed, self._base_key, self.study_dir, self.data_dir, self.base_model_path,
                     self._chat)


def collect_plans(configs: Iterable[Mapping[str, Any] | None], plan_for: Callable[[Mapping[str, Any]], dict]) -> list[dict]:
    """The plans of the trials that ran (e.g. `[r.config for r in tuner.fit()]`), once per
    trial id, in order: what the driver writes to plans.json after a search."""
    plans: dict[str, dict] = {}
    for config in configs:
        if config:
            plan = plan_for(config)
            plans.setdefault(plan["trial_id"], plan)
    return list(plans.values())
