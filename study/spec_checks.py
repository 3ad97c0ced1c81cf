"""The checks across a study file's fields, run once its types are right (`semantic_problems`).

`spec_from_dict` (study/spec_loading.py) builds the typed StudySpec and calls
`semantic_problems`, which returns every problem it finds (nothing stops at the first). This
module holds the entry point and the checks of the study's own settings, in the order of a study
file: name and storage, chains and their stages (methods, their settings and the installed TRL),
model, training (and what each stage's method supports of it), curvature, execution (workers,
batch splits and micro-batches) and generation. The checks
that read the task registry and the data are study/spec_checks_tasks.py; those of the grid and
search axes study/spec_checks_axes.py. Checks import the dataclasses (study/spec.py), never the
reverse.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

from contract.methods import DPO, METHOD_REQUIRES, METHODS, ONLINE_RL_METHODS, PPO, RLOO, SFT
from contract.problems import Problem, did_you_mean
from contract.workers import batch_size_problem
from study.spec import (
    ExecutionSpec,
    GenerationSpec,
    ModelSpec,
    OnlineRLSpec,
    StageSpec,
    StudySpec,
    TrainingSpec,
    study_dir,
)
from study.spec_checks_axes import grid_problems, search_problems
from study.spec_checks_tasks import (
    data_problems,
    eval_mode_problems,
    option_count_problems,
    stage_task_problems,
    task_file_problems,
)
from tasks import task_names  # pure data registry; no torch


def semantic_problems(spec: StudySpec) -> list[Problem]:
    """Checks across fields, after types are right."""
    out: list[Problem] = task_file_problems(spec)
    known = task_names()

    def check_task(name: str, path: str) -> bool:
        if name not in known:
            out.append(Problem(path, f"unknown task '{name}'{did_you_mean(name, known)} (known: {', '.join(known)})"))
            return False
        return True

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", spec.name):
        # One safe path component: no '/', no '..', no hidden or option-like first character.
        out.append(Problem("name", "must be letters, digits, '_', '-' or '.', starting with a letter or digit "
                                   f"(it names the results folder <storage>/<name>; got {spec.name!r})"))
    else:
        out.extend(_storage_problems(spec))
    if not spec.chains:
        out.append(Problem("chains", "at least one chain is required"))
    for chain, stages in spec.chains.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", chain):
            out.append(Problem(f"chains.{chain}", "chain names must be letters, digits, '_' or '-'"))
        if not stages:
            out.append(Problem(f"chains.{chain}", "a chain needs at least one stage"))
        for i, stage in enumerate(stages):
            out.extend(stage_problems(stage, f"chains.{chain}[{i}]"))
            if check_task(stage.task, f"chains.{chain}[{i}].task"):
                out.extend(stage_task_problems(spec, stages, i, f"chains.{chain}[{i}]"))
            if stage.replay is not None and not 1 <= stage.replay.from_stage <= i:
                out.append(Problem(f"chains.{chain}[{i}].replay.from_stage",
                                   f"must name an earlier stage, 1..{i} (got {stage.replay.from_stage})" if i
                                   else "the first stage has no earlier stage to replay"))
            if stage.start_from == "best_seed":
                where = f"chains.{chain}[{i}].start_from"
                if i == 0:
                    out.append(Problem(where, "the first stage has no previous stage to pick the best seed of"))
                elif any(s.start_from == "best_seed" for s in stages[:i]):
                    out.append(Problem(where, "only one stage of a chain may start from the best seed"))
                if spec.search is not None:
                    out.append(Problem(where, "needs a grid study: a search samples points one at a time"))
                if stage.selection_size < 1:
                    out.append(Problem(f"chains.{chain}[{i}].selection_size", "must be ≥ 1"))
    for name, settings in spec.tasks.items():
        check_task(name, f"tasks.{name}")
        for attr in ("train_size", "eval_size", "limit"):
            value = getattr(settings, attr)
            if value is not None and value < 1:
                out.append(Problem(f"tasks.{name}.{attr}", "must be ≥ 1 or null (all)"))
        out.extend(eval_mode_problems(name, settings, known))
        out.extend(option_count_problems(name, settings, known))
    for i, name in enumerate(spec.eval_tasks):
        check_task(name, f"eval_tasks[{i}]")
    out.extend(data_problems(spec))
    if not spec.seeds:
        out.append(Problem("seeds", "at least one seed is required"))
    if len(set(spec.seeds)) != len(spec.seeds):
        out.append(Problem("seeds", "seeds must be distinct"))
    out.extend(_seed_problems(spec))
    out.extend(grid_problems(spec))
    out.extend(search_problems(spec))
    out.extend(_model_problems(spec.model))
    out.extend(_training_problems(spec.training))
    out.extend(_training_method_problems(spec))
    out.extend(_curvature_problems(spec))
    out.extend(_execution_problems(spec.execution))
    out.extend(_worker_problems(spec))
    out.extend(_generation_problems(spec.generation))
    return out


SEED_LIMIT = 2**32
"""Seeds are non-negative and below 2**32: what numpy's and torch's seeding (`set_seed`) accept."""


def _seed_problems(spec: StudySpec) -> list[Problem]:
    """The study's seeds, data_seed and each stage's own seed, in [0, 2**32) (`set_seed` would
    refuse them in every trial)."""
    seeds = [(f"seeds[{i}]", s) for i, s in enumerate(spec.seeds)] + [("data_seed", spec.data_seed)]
    seeds += [(f"chains.{chain}[{i}].seed", stage.seed) for chain, stages in spec.chains.items()
              for i, stage in enumerate(stages) if stage.seed is not None]
    seeds.append(("curvature.sample_seed", spec.curvature.sample_seed))
    return [Problem(path, f"must be a non-negative integer below 2**32 (got {seed})")
            for path, seed in seeds if not 0 <= seed < SEED_LIMIT]


def _storage_problems(spec: StudySpec) -> list[Problem]:
    try:
        study_dir(spec)
    except ValueError as exc:
        return [Problem("name", str(exc))]
    except RuntimeError as exc:  # '~user' for an unknown user
        return [Problem("storage", f"cannot resolve storage {spec.storage!r}: {exc}")]
    return []


# ---------------------------------------------------------------- stages


def stage_problems(stage: StageSpec, path: str) -> list[Problem]:
    """One stage's own settings: its method (and what the installed TRL offers), hyperparameters, replay."""
    out = []
    if stage.method not in METHODS:
        out.append(Problem(f"{path}.method", f"unknown method '{stage.method}'{did_you_mean(stage.method, METHODS)}"))
    if not stage.learning_rate > 0:
        out.append(Problem(f"{path}.learning_rate", f"must be > 0 (got {stage.learning_rate})"))
    if stage.batch_size < 1:
        out.append(Problem(f"{path}.batch_size", f"must be ≥ 1 (got {stage.batch_size})"))
    if stage.steps < 1:
        out.append(Problem(f"{path}.steps", f"must be ≥ 1 (got {stage.steps})"))
    if stage.method == DPO and not stage.dpo.beta > 0:
        out.append(Problem(f"{path}.dpo.beta", f"must be > 0 (got {stage.dpo.beta})"))
    if stage.method in ONLINE_RL_METHODS:
        out.extend(_online_rl_problems(stage, path))
    requirement = METHOD_REQUIRES.get(stage.method)
    if requirement is not None and not _trl_provides(requirement.name, requirement.submodule):
        out.append(Problem(f"{path}.method", requirement.missing_message(stage.method)))
    if stage.replay is not None and not 0 <= stage.replay.fraction < 1:
        out.append(Problem(f"{path}.replay.fraction", f"must be in [0, 1) (got {stage.replay.fraction})"))
    elif stage.replay is not None and stage.replay.only and stage.replay.fraction == 0:
        out.append(Problem(f"{path}.replay.fraction", "must be > 0 with only: true (the stage would train on nothing)"))
    return out


def _online_rl_problems(stage: StageSpec, path: str) -> list[Problem]:
    rl: OnlineRLSpec = getattr(stage, stage.method)
    where = f"{path}.{stage.method}"
    out = []
    for name, value, ok, rule in [
        ("kl_coef", rl.kl_coef, rl.kl_coef >= 0, "≥ 0"),
        ("response_length", rl.response_length, rl.response_length >= 1, "≥ 1"),
        ("num_ppo_epochs", rl.num_ppo_epochs, rl.num_ppo_epochs >= 1, "≥ 1"),
        ("temperature", rl.temperature, rl.temperature > 0, "> 0"),
        ("reward.steps", rl.reward.steps, rl.reward.steps >= 1, "≥ 1"),
        ("reward.learning_rate", rl.reward.learning_rate, rl.reward.learning_rate > 0, "> 0"),
        ("reward.batch_size", rl.reward.batch_size, rl.reward.batch_size >= 1, "≥ 1"),
    ]:
        if not ok:
            out.append(Problem(f"{where}.{name}", f"must be {rule} (got {value})"))
    if stage.method == RLOO:
        if rl.num_generations < 2:
            out.append(Problem(f"{where}.num_generations", f"must be ≥ 2 (got {rl.num_generations})"))
        elif stage.batch_size % rl.num_generations:
            out.append(Problem(f"{where}.num_generations",
                               f"must divide the stage's batch_size {stage.batch_size} (got {rl.num_generations})"))
    return out


@functools.lru_cache(maxsize=1)
def _trl_init_file() -> Path | None:
    """trl/__init__.py of the installed TRL, found without importing TRL (and torch)."""
    spec = importlib.util.find_spec("trl")
    return Path(spec.origin) if spec is not None and spec.origin else None


@functools.lru_cache(maxsize=None)
def _trl_provides(name: str, submodule: bool) -> bool:
    """Whether the installed TRL has the submodule `name` (dotted, under trl) or exports `name`
    (read once per name, not per stage)."""
    init = _trl_init_file()
    if init is None:
        return False
    if submodule:
        return init.parent.joinpath(*name.split(".")).exists()
    return name in init.read_text()


# ---------------------------------------------------------------- model, training, curvature


def _model_problems(model: ModelSpec) -> list[Problem]:
    out = []
    if not model.name.strip():
        out.append(Problem("model.name", "must name 'tiny', a Hugging Face id or a local path"))
    elif model.name.startswith(("/", "./", "../", "~")) and not _path_exists(model.name):
        # Caught here rather than in a trial, where transformers would try it as a Hub id.
        out.append(Problem("model.name", f"local model path {model.name} does not exist"))
    if model.max_length < 16:
        out.append(Problem("model.max_length", f"must be ≥ 16 (got {model.max_length})"))
    if model.name == "tiny" and model.chat_template is True:
        # Other models' templates are checked with their tokenizer (`--show-tokens`, `study run`).
        out.append(Problem("model.chat_template", "the built-in tiny model has no chat template (use auto or false)"))
    return out


def _path_exists(text: str) -> bool:
    try:
        return Path(text).expanduser().exists()
    except RuntimeError:  # '~user' for an unknown user
        return False


def _training_problems(t: TrainingSpec) -> list[Problem]:
    out = []
    for name in ("adam_beta1", "adam_beta2"):
        if not 0 <= getattr(t, name) < 1:
            out.append(Problem(f"training.{name}", f"must be in [0, 1) (got {getattr(t, name)})"))
    if t.weight_decay < 0:
        out.append(Problem("training.weight_decay", "must be ≥ 0"))
    if t.warmup_steps < 0:
        out.append(Problem("training.warmup_steps", "must be ≥ 0"))
    if t.max_grad_norm <= 0:
        out.append(Problem("training.max_grad_norm", "must be > 0"))
    if t.eval_batch_size != "auto" and t.eval_batch_size < 1:
        out.append(Problem("training.eval_batch_size", f"must be ≥ 1 or auto (got {t.eval_batch_size})"))
    if t.micro_batch_size is not None and t.micro_batch_size < 1:
        out.append(Problem("training.micro_batch_size", f"must be ≥ 1 or null (got {t.micro_batch_size})"))
    return out


def _training_method_problems(spec: StudySpec) -> list[Problem]:
    """Training settings a stage's method cannot honour in the installed TRL (1.12): padding-free
    batches exist for SFT only (DPOTrainer turns `padding_free` off, RewardTrainer, PPO and RLOO
    have none), and TRL's PPOTrainer runs its own loop, which never turns activation checkpointing on,
    with its own accelerator, which never shards (FSDP) nor casts (bf16) from the training arguments."""
    t, out = spec.training, []
    for chain, stages in spec.chains.items():
        for i, stage in enumerate(stages):
            if t.padding_free and stage.method != SFT:
                out.append(Problem("training.padding_free",
                                   f"padding-free batches are for SFT stages only; chains.{chain}[{i}] is a "
                                   f"{stage.method} stage (TRL 1.12 supports them in SFTTrainer alone)"))
            if t.activation_checkpointing is True and stage.method == PPO:  # 'auto' stays off with PPO
                out.append(Problem("training.activation_checkpointing",
                                   f"chains.{chain}[{i}] is a ppo stage: TRL's PPOTrainer runs its own training loop, "
                                   "which never turns activation checkpointing on"))
            if spec.execution.fsdp is True and stage.method == PPO:  # 'auto' stays off with PPO
                out.append(Problem("execution.fsdp",
                                   f"chains.{chain}[{i}] is a ppo stage: TRL's PPOTrainer builds its own accelerator "
                                   "from the environment, not from the training arguments, so it would not shard "
                                   "(or shard with FSDP1 and no wrapping after an earlier FSDP trainer); "
                                   "PPO stages run with DDP"))
    return out


def _curvature_problems(spec: StudySpec) -> list[Problem]:
    c = spec.curvature
    out = []
    longest = max((len(s) for s in spec.chains.values()), default=0)
    for i, stage in enumerate(c.stages):
        if not 1 <= stage <= longest:
            out.append(Problem(f"curvature.stages[{i}]", f"no chain has a stage {stage} (stages are numbered 1..{longest})"))
    if not c.stages and c.enabled:
        out.append(Problem("curvature.stages", "at least one stage is required when curvature is enabled"))
    if not c.algorithms:
        out.append(Problem("curvature.algorithms", "at least one of power_iteration, lanczos"))
    if len(set(c.algorithms)) != len(c.algorithms):
        out.append(Problem("curvature.algorithms", "algorithms must be distinct"))
    for name, low in (("n_samples", 1), ("top_k", 1), ("max_iterations", 1), ("batch_size", 1), ("trace_samples", 0)):
        if getattr(c, name) < low:
            out.append(Problem(f"curvature.{name}", f"must be ≥ {low} (got {getattr(c, name)})"))
    if not c.tol > 0:
        out.append(Problem("curvature.tol", f"must be > 0 (got {c.tol})"))
    if c.parameters is not None:
        try:
            re.compile(c.parameters)
        except re.error as exc:
            out.append(Problem("curvature.parameters", f"not a valid regular expression: {exc}"))
    return out


# ---------------------------------------------------------------- execution and generation


def _execution_problems(e: ExecutionSpec) -> list[Problem]:
    out = []
    if not e.cpus_per_trial > 0:
        # Ray refuses a trial bundle of 0 CPUs ("empty head"); fractions work.
        out.append(Problem("execution.cpus_per_trial", "must be > 0 (fractions such as 0.5 are fine)"))
    if e.gpus_per_trial < 0:
        out.append(Problem("execution.gpus_per_trial", "must be ≥ 0"))
    elif e.gpus_per_trial and e.workers_per_trial >= 1:
        out.extend(_gpu_share_problems(e))
    if not e.gpu_memory_gb > 0:
        out.append(Problem("execution.gpu_memory_gb", f"must be > 0 (GB of one GPU; got {e.gpu_memory_gb})"))
    if e.max_concurrent_trials is not None and e.max_concurrent_trials < 1:
        out.append(Problem("execution.max_concurrent_trials", "must be ≥ 1 or null"))
    if e.max_failures < 0:
        out.append(Problem("execution.max_failures", "must be ≥ 0"))
    return out


def _gpu_share_problems(e: ExecutionSpec) -> list[Problem]:
    """Exactly one GPU per worker: every rank runs on cuda:LOCAL_RANK (as accelerate does), so a
    second GPU of a worker would sit idle, and NCCL cannot put two ranks on one GPU. A fraction
    lets one-worker trials share a GPU, which Ray splits by count, not memory: only on request."""
    n, gpus = e.workers_per_trial, e.gpus_per_trial
    if gpus == n:
        return []
    if e.share_gpus and n == 1 and 0 < gpus < 1:
        return []
    if e.share_gpus and n == 1:
        hint = f"with share_gpus, a fraction in (0, 1) (got {gpus})"
    elif e.share_gpus:
        hint = (f"{n} (one GPU per worker; share_gpus is for one-worker trials: the ranks of a trial "
                f"cannot share a GPU) (got {gpus})")
    elif n == 1 and 0 < gpus < 1:
        hint = (f"1 (got {gpus}): a fraction puts several trials on one GPU, which Ray splits by count, "
                "not memory; set execution.share_gpus: true if that many copies of the model fit one GPU")
    else:
        hint = f"{n}, one GPU per worker (got {gpus}): each worker runs on one GPU, a second would sit idle"
    return [Problem("execution.gpus_per_trial", f"must be 0 (CPU) or {hint}")]


def _worker_problems(spec: StudySpec) -> list[Problem]:
    """Multi-worker trials and micro-batches: every batch a stage (or a reward model trained in
    it) can take must split evenly over the workers, and each worker's share into micro-batches
    (contract.workers.batch_size_problem)."""
    e, out = spec.execution, []
    n = e.workers_per_trial
    if n < 1:
        return [Problem("execution.workers_per_trial", f"must be ≥ 1 (got {n})")]
    if e.fsdp is True and not e.gpus_per_trial:  # 'auto' is off on CPU workers
        out.append(Problem("execution.fsdp", "FSDP needs GPU workers (gpus_per_trial > 0)"))
    micro = spec.training.micro_batch_size
    if micro is not None and micro < 1:
        return out  # _training_problems says so
    if n > 1:
        if e.executor == "function":
            out.append(Problem("execution.executor",
                               f"'function' runs one worker per trial; workers_per_trial = {n} needs 'train' or 'auto'"))
    elif micro is None:
        return out

    def check(path: str, value) -> None:
        problem = isinstance(value, int) and batch_size_problem(value, n, micro)
        if problem:
            out.append(Problem(path, problem))

    for chain, stages in spec.chains.items():
        for i, stage in enumerate(stages):
            check(f"chains.{chain}[{i}].batch_size", stage.batch_size)
            if stage.method in ONLINE_RL_METHODS and not getattr(stage, stage.method).reward.model:
                check(f"chains.{chain}[{i}].{stage.method}.reward.batch_size",
                      getattr(stage, stage.method).reward.batch_size)
    for key, values in spec.grid.items():
        if key.endswith(".batch_size"):
            for value in values:
                check(f"grid.{key}", value)
    if spec.search is not None:
        split = f"workers_per_trial = {n}" + (f" and micro_batch_size = {micro}" if micro is not None else "")
        for key, dist in spec.search.space.items():
            if key.endswith(".batch_size"):
                values = dist.get("choice")
                if values is None:  # an {int: [low, high]} range would sample sizes that do not split
                    out.append(Problem(f"search.space.{key}",
                                       f"with {split} use {{choice: [...]}} of sizes that split evenly"
                                       if micro is not None else
                                       f"with workers_per_trial = {n} use {{choice: [...]}} of sizes {n} divides"))
                for value in values or ():
                    check(f"search.space.{key}", value)
    return out


def _generation_problems(g: GenerationSpec) -> list[Problem]:
    out = []
    if not 0.0 < g.threshold < 1.0:
        out.append(Problem("generation.threshold", f"must be in (0, 1) (got {g.threshold})"))
    for attr in ("max_new_tokens", "answer_max_new_tokens", "batch_size"):
        if getattr(g, attr) != "auto" and getattr(g, attr) < 1:
            out.append(Problem(f"generation.{attr}", f"must be ≥ 1 (got {getattr(g, attr)})"))
    if not g.classifier.strip():
        out.append(Problem("generation.classifier", "must be 'local' or a Hugging Face classifier id or path"))
    return out
