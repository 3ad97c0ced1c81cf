"""Does a study fit its GPUs? The memory preflight, before anything loads or trains.

Every step a trial runs (each stage's training, a reward model trained for an online-RL stage,
curvature after a stage) is estimated per worker by trainables/memory_model.py from the model's
config alone, at the study's settings: the largest batch the stage can take (its own, a grid's
or a search's), `model.max_length` as the padded length (an upper bound: batches pad to their
longest example), the workers, FSDP and the dtype. A step over the worker's share of a GPU
(`execution.gpu_memory_gb` × the worker's GPUs, at most one: a worker uses one GPU) is a problem
at the stage's field path, saying what would fit. The curvature step is judged here alone for GPU
studies (its advice names a `curvature.parameters` regex of the last decoder layers that fit);
study/orchestrate.py's `check_curvature` judges CPU studies' curvature.

`execution.fsdp` and `training.activation_checkpointing` default to 'auto', resolved here for a
GPU study before it is planned (`resolve_auto`: FSDP over the workers when some step does not fit
without it, then checkpointing when one still does not, never with a PPO stage); the report
carries the values the trials run with and a line saying why. Explicit values are kept.

Studies with `gpus_per_trial: 0` are not checked: their workers run wherever Ray places them,
whose RAM the driver does not know, and CPU studies run small models. `study run` checks before
anything is written (reading config.json from the Hub if needed); `study validate` checks when
the configs are on this machine (a local path, 'tiny' or the Hugging Face cache) and says so
otherwise, downloading nothing.

Evaluation is sized here too (`eval_batch_sizes`): a GPU study's `training.eval_batch_size` and
`generation.batch_size` set to `auto` become the largest power of two whose evaluation fits one
worker's GPU (trainables.eval_memory.largest_eval_batch); a number (the defaults 32 and 16
included) that does not fit is a problem at its field. `study run` puts the resolved numbers into the spec before planning
(study.orchestrate.check_memory, before planning).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

from contract.methods import DPO, ONLINE_RL_METHODS, dpo_precomputes_reference
from contract.problems import Problem

if TYPE_CHECKING:  # the model arithmetic loads torch: only GPU studies, which are checked, import it
    from trainables.memory_model import ModelShape, StepSetup


AUTO = "auto"


@dataclass(frozen=True)
class MemoryReport:
    problems: list[Problem]
    lines: list[str]
    """One line per distinct step: its estimate (printed by `study validate`), after the line
    saying what 'auto' resolved to."""
    fsdp: bool = False
    activation_checkpointing: bool = False
    """execution.fsdp and training.activation_checkpointing as the trials run them: the study's
    own values, or what 'auto' resolved to (`resolve_auto`)."""


def largest_batch(spec: Any, index: int, batch_size: int) -> int:
    """The largest batch stage `index` (0-based) can take: its own, a grid axis', a search's."""
    key = f"stage{index + 1}.batch_size"
    values = [batch_size, *spec.grid.get(key, ())]
    if spec.search is not None:
        for distribution in spec.search.space.get(key, {}).values():
            values.extend(distribution)
    return max(int(v) for v in values)


def study_steps(spec: Any, *, local_files_only: bool = False, read_config: Callable[[str], Any] | None = None,
                fsdp: bool | None = None,
                activation_checkpointing: bool | None = None) -> list[tuple[str, ModelShape, StepSetup]]:
    """(field path, model shape, setup) of every step the study's trials run (OSError when a
    config cannot be read). `read_config(name)`: a model's config (default: `load_config`;
    bench/memory_table.py gives the published configs instead of downloading them). `fsdp`,
    `activation_checkpointing`: None = the study's value ('auto' as off)."""
    from trainables.memory_model import StepSetup, classifier_shape, load_config, model_shape, parameter_count

    def config_of(name: str) -> Any:
        if read_config is not None:
            return read_config(name)
        return load_config(name, trust_remote_code=spec.model.trust_remote_code, local_files_only=local_files_only)

    ex = spec.execution
    policy = model_shape(config_of(spec.model.name))
    training = spec.training
    if fsdp is None:
        fsdp = ex.fsdp is True
    if activation_checkpointing is None:
        activation_checkpointing = training.activation_checkpointing is True
    common = dict(seq_len=spec.model.max_length, workers=ex.workers_per_trial, fsdp=fsdp, dtype=spec.model.dtype,
                  on_gpu=ex.gpus_per_trial > 0, micro_batch_size=training.micro_batch_size,
                  activation_checkpointing=activation_checkpointing, optimizer=training.optimizer)
    steps = []
    for chain, stages in spec.chains.items():
        for i, stage in enumerate(stages):
            path = f"chains.{chain}[{i}]"
            batch = largest_batch(spec, i, stage.batch_size)
            reward, rollout = None, {}
            if stage.method in ONLINE_RL_METHODS:
                settings = getattr(stage, stage.method)
                rollout = {"rollout_tokens": settings.response_length}
                if settings.reward.model is not None:
                    reward = classifier_shape(config_of(settings.reward.model))
                else:
                    steps.append((f"{path}.{stage.method}.reward", policy,
                                  StepSetup(method="reward", batch_size=settings.reward.batch_size, **common)))
            precompute = stage.method == DPO and dpo_precomputes_reference(
                stage.dpo.precompute_reference, on_gpu=ex.gpus_per_trial > 0, fsdp=fsdp and ex.workers_per_trial > 1)
            steps.append((path, policy, StepSetup(method=stage.method, batch_size=batch, reward=reward,
                                                  dpo_precompute=precompute, **rollout, **common)))
    cfg = spec.curvature
    if cfg.enabled:
        measured = None
        if cfg.parameters is not None:
            measured = parameter_count(config_of(spec.model.name), cfg.parameters)
        steps.append(("curvature", policy, StepSetup(
            method="curvature", curvature_params=measured, curvature_batch_size=cfg.batch_size,
            curvature_algorithms=tuple(cfg.algorithms), curvature_top_k=cfg.top_k,
            curvature_max_iterations=cfg.max_iterations, curvature_trace_samples=cfg.trace_samples, **common)))
    return steps


def _model_config(spec: Any, local_files_only: bool, read_config: Callable[[str], Any] | None) -> Any:
    """The study's model's config, read as `study_steps` reads it."""
    if read_config is not None:
        return read_config(spec.model.name)
    from trainables.memory_model import load_config

    return load_config(spec.model.name, trust_remote_code=spec.model.trust_remote_code,
                       local_files_only=local_files_only)


def worker_budget(spec: Any) -> float:
    """Bytes of GPU memory one worker has: its share of the trial's GPUs, at most one GPU."""
    ex = spec.execution
    from trainables.memory_model import GB

    return ex.gpu_memory_gb * GB * min(1.0, ex.gpus_per_trial / ex.workers_per_trial)


def _distinct(steps: list[tuple[str, ModelShape, StepSetup]], fsdp: bool,
              checkpointing: bool) -> dict[tuple[ModelShape, StepSetup], list[str]]:
    """The study's distinct steps under these two settings, each with its field paths."""
    from dataclasses import replace

    seen: dict[tuple[ModelShape, StepSetup], list[str]] = {}
    for path, shape, setup in steps:
        seen.setdefault((shape, replace(setup, fsdp=fsdp, activation_checkpointing=checkpointing)), []).append(path)
    return seen


def _misfits(seen: dict[tuple[ModelShape, StepSetup], list[str]], budget: float) -> list[tuple[str, float]]:
    """(first field path, bytes per GPU) of each distinct step over `budget`."""
    from trainables.memory_model import estimate

    out = []
    for (shape, setup), paths in seen.items():
        total = estimate(shape, setup).total
        if total > budget:
            out.append((paths[0], total))
    return out


def resolve_auto(spec: Any, steps: list[tuple[str, ModelShape, StepSetup]], budget: float) -> tuple[bool, bool, str]:
    """(fsdp, activation checkpointing, the line saying why) for a GPU study: its explicit values
    kept, 'auto' resolved from the memory model. Tried in order, each only while some step does
    not fit: both off; FSDP on (only with more than one worker: nothing to shard over otherwise;
    never with a PPO stage: TRL's PPOTrainer builds its own accelerator, which does not shard);
    activation checkpointing on as well (never with a PPO stage: TRL's PPOTrainer runs its own
    loop, which never turns it on). The first setting under which every step fits wins; when none
    does, the one with the fewest steps over budget, earliest on ties (so a step no setting of them
    fixes, e.g. curvature, turns nothing on by itself), and the preflight refuses what is left."""
    from contract.methods import PPO

    ex, training = spec.execution, spec.training
    fsdp_auto, checkpointing_auto = ex.fsdp == AUTO, training.activation_checkpointing == AUTO
    fsdp, checkpointing = ex.fsdp is True, training.activation_checkpointing is True
    ppo = any(stage.method == PPO for stages in spec.chains.values() for stage in stages)
    tries = [(fsdp, checkpointing)]
    if fsdp_auto and ex.workers_per_trial > 1 and not ppo:
        tries.append((True, checkpointing))
    if checkpointing_auto and not ppo:
        tries.append((tries[-1][0], True))
    over = [_misfits(_distinct(steps, *t), budget) for t in tries]
    fitting = [i for i, misfits in enumerate(over) if not misfits]
    chosen = fitting[0] if fitting else min(range(len(tries)), key=lambda i: (len(over[i]), i))
    fsdp, checkpointing = tries[chosen]

    def worst(i: int) -> str:
        path, total = max(over[i], key=lambda m: m[1])
        return f"{path} needs {total / 1e9:.0f} GB per GPU"

    reasons = []
    if fsdp_auto:
        if ppo:
            why = "a PPO stage: TRL's PPOTrainer does not shard"
        elif ex.workers_per_trial == 1:
            why = "one worker per trial: nothing to shard over"
        elif fsdp:
            why = f"without it {worst(0)}, over {budget / 1e9:.0f} GB"
        else:
            why = "every step fits without it" if not over[0] else "it fits no more steps"
        reasons.append(f"execution.fsdp {str(fsdp).lower()} ({why})")
    if checkpointing_auto:
        before = chosen - 1 if checkpointing else chosen
        if ppo:
            why = "a PPO stage: TRL's PPOTrainer never turns it on"
        elif checkpointing:
            why = f"{'with FSDP ' if fsdp else ''}{'alone ' if fsdp else 'without it '}{worst(before)}"
        else:
            why = "every step fits without it" if not over[chosen] else "it fits no more steps"
        reasons.append(f"training.activation_checkpointing {str(checkpointing).lower()} ({why})")
    if not fitting:
        reasons.append("no setting of them fits every step")
    line = f"memory: auto resolved: {'; '.join(reasons)}" if reasons else ""
    return fsdp, checkpointing, line


def memory_preflight(spec: Any, *, local_files_only: bool = False,
                     read_config: Callable[[str], Any] | None = None) -> MemoryReport:
    """The study's memory problems (one per distinct step that does not fit, at its first field
    path), one estimate line per distinct step (after the line saying what 'auto' resolved to),
    and the FSDP and checkpointing settings the trials run with; for a CPU study no problems, no
    lines, and 'auto' off (FSDP needs GPUs, and CPU studies run small models)."""
    ex, training = spec.execution, spec.training
    if not ex.gpus_per_trial > 0:
        return MemoryReport(problems=[], lines=[], fsdp=ex.fsdp is True,
                            activation_checkpointing=training.activation_checkpointing is True)
    from trainables.memory_fit import describe_misfit
    from trainables.memory_model import estimate

    budget = worker_budget(spec)
    steps = study_steps(spec, local_files_only=local_files_only, read_config=read_config)
    fsdp, checkpointing, resolved = resolve_auto(spec, steps, budget)
    problems, lines = [], [resolved] if resolved else []
    for (shape, setup), paths in _distinct(steps, fsdp, checkpointing).items():
        also = f" (also {', '.join(paths[1:])})" if len(paths) > 1 else ""
        breakdown = estimate(shape, setup)
        lines.append(f"memory: {paths[0]}{also}: {setup.method}: {breakdown.render()}")
        if not breakdown.fits(budget):
            named = None
            if setup.method == "curvature":  # suggest a curvature.parameters regex the step fits with
                from trainables.curvature.budget import named_parameter_sizes

                named = named_parameter_sizes(_model_config(spec, local_files_only, read_config),
                                              trust_remote_code=spec.model.trust_remote_code)
            auto = f" ({resolved.removeprefix('memory: ')})" if resolved else ""
            problems.append(Problem(paths[0], describe_misfit(shape, setup, budget, named) + also + auto))
    return MemoryReport(problems=problems, lines=lines, fsdp=fsdp, activation_checkpointing=checkpointing)


@dataclass(frozen=True)
class TrialMemory:
    """What one trial needs, for the needs block of `study validate` / `study run`: the model's
    parameter count and the largest of its steps (by the memory model, at the settings the trials
    run with)."""

    params: int
    path: str
    """The field path of the largest step (its first, when several share it)."""
    method: str
    breakdown: Any
    """Its MemoryBreakdown: bytes per GPU (per worker on CPU, where `host_ram` is what counts)."""


def trial_memory(spec: Any, *, local_files_only: bool = False,
                 read_config: Callable[[str], Any] | None = None) -> TrialMemory:
    """The study's largest step under its own settings (call it with 'auto' resolved:
    study.orchestrate.check_memory), by GPU memory on a GPU study and by host RAM on a CPU one.
    OSError when a config cannot be read."""
    from trainables.memory_model import estimate

    steps = study_steps(spec, local_files_only=local_files_only, read_config=read_config)
    on_gpu = spec.execution.gpus_per_trial > 0
    sized = [(path, shape, setup, estimate(shape, setup)) for path, shape, setup in steps]
    path, shape, setup, breakdown = max(sized, key=lambda s: s[3].total if on_gpu else s[3].host_ram)
    return TrialMemory(params=shape.params, path=path, method=setup.method, breakdown=breakdown)


# ---------------------------------------------------------------- evaluation batch sizes


@dataclass(frozen=True)
class EvalBatchReport:
    """A GPU study's evaluation batch sizes: `training.eval_batch_size` and (when the study
    generates text) `generation.batch_size`, `auto` resolved from the memory model, with a
    line each for `study validate` and a problem for a batch that does not fit one GPU."""

    eval_batch_size: int | None
    """The scoring batch (None for a CPU study, or an auto that nothing fits)."""
    generation_batch_size: int | None
    """The generation batch (None for a CPU study, a study that generates nothing, or no fit)."""
    problems: list[Problem]
    lines: list[str]


def eval_setup(spec: Any, precision: str, kind: str) -> Any:
    """The EvalSetup of a study's scoring or generation: model.max_length, model.dtype, the
    resolved evaluation precision, and for generation the shorter of its two new-token lengths
    (the longer prompt: prompt + new tokens are cut to max_length either way)."""
    from trainables.eval_memory import EvalSetup

    g = spec.generation
    return EvalSetup(seq_len=spec.model.max_length, dtype=spec.model.dtype, precision=precision,
                     max_new_tokens=min(g.max_new_tokens, g.answer_max_new_tokens) if kind == "generation" else 32)


def _eval_batch(shape: Any, spec: Any, precision: str, kind: str, path: str, value: Any,
                budget: float) -> tuple[int | None, Problem | None, str]:
    from trainables.eval_memory import EVAL_BATCH_CAP, eval_estimate, largest_eval_batch
    from trainables.memory_model import GB

    setup = eval_setup(spec, precision, kind)
    largest = largest_eval_batch(shape, setup, budget, kind)
    where = f"over the {budget / GB:.0f} GB a worker's GPU has (execution.gpu_memory_gb)"
    if largest is None:
        fixes = [fix for fix, changed in (
            ("model.dtype: bfloat16", replace(setup, dtype="bfloat16")),
            ("evaluation.precision: float32", replace(setup, precision="float32")),
            ("a shorter model.max_length", replace(setup, seq_len=max(64, setup.seq_len // 4))))
            if eval_estimate(shape, changed, 1, kind).fits(budget)]
        hint = f"; it may fit with {' or '.join(fixes)}" if fixes else ""
        one = eval_estimate(shape, setup, 1, kind)
        return None, Problem(path, f"{kind} of one row needs about {one.render()}, {where}{hint}"), ""
    if value == "auto":
        line = (f"memory: evaluation: {path}: auto = {largest} (the largest power of two up to {EVAL_BATCH_CAP} "
                f"that fits): {kind} needs about {eval_estimate(shape, setup, largest, kind).render()}")
        return largest, None, line
    breakdown = eval_estimate(shape, setup, int(value), kind)
    if not breakdown.fits(budget):
        return None, Problem(path, f"{kind} needs about {breakdown.render()}, {where}; at most {largest} fits "
                                   "(or set auto)"), ""
    return int(value), None, f"memory: evaluation: {path}: {value}: {kind} needs about {breakdown.render()}"


def eval_batch_sizes(spec: Any, *, precision: str, generates: bool, local_files_only: bool = False,
                     read_config: Callable[[str], Any] | None = None) -> EvalBatchReport:
    """Evaluation batch sizes of a GPU study (nothing for a CPU study, whose auto is the planner's
    fixed value, study.spec.eval_batch_size). `precision`: the resolved evaluation.precision;
    `generates`: whether some evaluation generates text. The whole model is evaluated on one
    worker's GPU (`worker_budget`), whatever FSDP did in training. OSError when the model's
    config cannot be read."""
    if not spec.execution.gpus_per_trial > 0:
        return EvalBatchReport(eval_batch_size=None, generation_batch_size=None, problems=[], lines=[])
    from trainables.memory_model import load_config, model_shape

    if read_config is not None:
        config = read_config(spec.model.name)
    else:
        config = load_config(spec.model.name, trust_remote_code=spec.model.trust_remote_code,
                             local_files_only=local_files_only)
    shape, budget = model_shape(config), worker_budget(spec)
    problems, lines, sizes = [], [], {}
    wanted = [("scoring", "training.eval_batch_size", spec.training.eval_batch_size)]
    if generates:
        wanted.append(("generation", "generation.batch_size", spec.generation.batch_size))
    for kind, path, value in wanted:
        sizes[kind], problem, line = _eval_batch(shape, spec, precision, kind, path, value, budget)
        problems.extend([problem] if problem is not None else [])
        lines.extend([line] if line else [])
    return EvalBatchReport(eval_batch_size=sizes.get("scoring"), generation_batch_size=sizes.get("generation"),
                           problems=problems, lines=lines)
