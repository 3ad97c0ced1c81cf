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

Studies with `gpus_per_trial: 0` are not checked: their workers run wherever Ray places them,
whose RAM the driver does not know, and CPU studies run small models. `study run` checks before
anything is written (reading config.json from the Hub if needed); `study validate` checks when
the configs are on this machine (a local path, 'tiny' or the Hugging Face cache) and says so
otherwise, downloading nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from contract.methods import ONLINE_RL_METHODS
from contract.problems import Problem

if TYPE_CHECKING:  # the model arithmetic loads torch: only GPU studies, which are checked, import it
    from trainables.memory_model import ModelShape, StepSetup


@dataclass(frozen=True)
class MemoryReport:
    problems: list[Problem]
    lines: list[str]
    """One line per distinct step: its estimate (printed by `study validate`)."""


def largest_batch(spec: Any, index: int, batch_size: int) -> int:
    """The largest batch stage `index` (0-based) can take: its own, a grid axis', a search's."""
    key = f"stage{index + 1}.batch_size"
    values = [batch_size, *spec.grid.get(key, ())]
    if spec.search is not None:
        for distribution in spec.search.space.get(key, {}).values():
            values.extend(distribution)
    return max(int(v) for v in values)


def study_steps(spec: Any, *, local_files_only: bool = False,
                read_config: Callable[[str], Any] | None = None) -> list[tuple[str, ModelShape, StepSetup]]:
    """(field path, model shape, setup) of every step the study's trials run (OSError when a
    config cannot be read). `read_config(name)`: a model's config (default: `load_config`;
    bench/memory_table.py gives the published configs instead of downloading them)."""
    from trainables.memory_model import StepSetup, classifier_shape, load_config, model_shape, parameter_count

    def config_of(name: str) -> Any:
        if read_config is not None:
            return read_config(name)
        return load_config(name, trust_remote_code=spec.model.trust_remote_code, local_files_only=local_files_only)

    ex = spec.execution
    policy = model_shape(config_of(spec.model.name))
    training = spec.training
    common = dict(seq_len=spec.model.max_length, workers=ex.workers_per_trial, fsdp=ex.fsdp, dtype=spec.model.dtype,
                  on_gpu=ex.gpus_per_trial > 0, micro_batch_size=training.micro_batch_size,
                  activation_checkpointing=training.activation_checkpointing, optimizer=training.optimizer)
    steps = []
    for chain, stages in spec.chains.items():
        for i, stage in enumerate(stages):
            path = f"chains.{chain}[{i}]"
            batch = largest_batch(spec, i, stage.batch_size)
            reward = None
            if stage.method in ONLINE_RL_METHODS:
                settings = getattr(stage, stage.method)
                if settings.reward.model is not None:
                    reward = classifier_shape(config_of(settings.reward.model))
                else:
                    steps.append((f"{path}.{stage.method}.reward", policy,
                                  StepSetup(method="reward", batch_size=settings.reward.batch_size, **common)))
            steps.append((path, policy, StepSetup(method=stage.method, batch_size=batch, reward=reward, **common)))
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


def memory_preflight(spec: Any, *, local_files_only: bool = False,
                     read_config: Callable[[str], Any] | None = None) -> MemoryReport:
    """The study's memory problems (one per distinct step that does not fit, at its first field
    path) and one estimate line per distinct step; nothing for a CPU study."""
    if not spec.execution.gpus_per_trial > 0:
        return MemoryReport(problems=[], lines=[])
    from trainables.memory_model import describe_misfit, estimate

    budget = worker_budget(spec)
    seen: dict[tuple[ModelShape, StepSetup], list[str]] = {}
    for path, shape, setup in study_steps(spec, local_files_only=local_files_only, read_config=read_config):
        seen.setdefault((shape, setup), []).append(path)
    problems, lines = [], []
    for (shape, setup), paths in seen.items():
        also = f" (also {', '.join(paths[1:])})" if len(paths) > 1 else ""
        breakdown = estimate(shape, setup)
        lines.append(f"memory: {paths[0]}{also}: {setup.method}: {breakdown.render()}")
        if not breakdown.fits(budget):
            named = None
            if setup.method == "curvature":  # suggest a curvature.parameters regex the step fits with
                from trainables.curvature.budget import named_parameter_sizes

                named = named_parameter_sizes(_model_config(spec, local_files_only, read_config),
                                              trust_remote_code=spec.model.trust_remote_code)
            problems.append(Problem(paths[0], describe_misfit(shape, setup, budget, named) + also))
    return MemoryReport(problems=problems, lines=lines)
