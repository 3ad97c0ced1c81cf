"""What would make a step fit its GPU: the changes of a study's settings the memory model
(trainables/memory_model.py) says would fit, and the refusal message that names them.

Each candidate change (FSDP over the trial's or more workers, activation checkpointing, one-
sequence micro-batches, a shorter model.max_length; for curvature a smaller batch or a parameter
subset) is tried by estimating the step again with it, most direct first.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from trainables.curvature.budget import CURVATURE_DTYPE_BYTES, peak_vectors, suggest_subset
from trainables.memory_model import GB, ModelShape, StepSetup, estimate

WORKER_COUNTS = (2, 4, 8, 16, 32, 64)


def _fsdp_workers(shape: ModelShape, setup: StepSetup, budget: float, **changes: Any) -> int | None:
    for workers in WORKER_COUNTS:
        if setup.batch_size % workers == 0 and workers >= setup.workers:
            if estimate(shape, replace(setup, workers=workers, fsdp=True, **changes)).fits(budget):
                return workers
    return None


def longest_fitting_length(shape: ModelShape, setup: StepSetup, budget: float) -> int | None:
    """The longest max_length (a multiple of 64) at which the step fits, None when none does."""
    low, high = 0, setup.seq_len // 64
    while low < high:
        mid = (low + high + 1) // 2
        if estimate(shape, replace(setup, seq_len=mid * 64)).fits(budget):
            low = mid
        else:
            high = mid - 1
    return low * 64 or None


def curvature_parameter_limit(shape: ModelShape, setup: StepSetup, budget: float) -> int:
    """The most parameters the curvature step may measure within `budget` bytes (0 when not even
    one fits): the step grows linearly in them, by its algorithms' peak vectors of float32."""
    per_parameter = peak_vectors(setup.curvature_algorithms, setup.curvature_top_k, setup.curvature_max_iterations,
                                 setup.curvature_trace_samples) * CURVATURE_DTYPE_BYTES
    fixed = estimate(shape, replace(setup, curvature_params=1)).total - per_parameter
    return max(0, int((budget - fixed) // per_parameter))


def _curvature_changes(shape: ModelShape, setup: StepSetup, budget: float,
                       named_sizes: Sequence[tuple[str, int]] | None = None) -> list[str]:
    """With `named_sizes` (the model's (name, entries), curvature.budget.named_parameter_sizes)
    the subset is a regex of the last decoder layers that fit (curvature.budget.suggest_subset),
    at the study's curvature.batch_size or else at 1; without, one decoder layer."""
    out = []
    if setup.curvature_batch_size > 1 and estimate(shape, replace(setup, curvature_batch_size=1)).fits(budget):
        out.append("curvature.batch_size: 1")
    if named_sizes is not None:
        for batch in sorted({setup.curvature_batch_size, 1}, reverse=True):
            limit = curvature_parameter_limit(shape, replace(setup, curvature_batch_size=batch), budget)
            suggestion = suggest_subset(named_sizes, limit) if limit else None
            if suggestion is not None:
                regex, size = suggestion
                also = " with curvature.batch_size: 1" if batch != setup.curvature_batch_size else ""
                out.append(f"curvature.parameters: '{regex}' ({size:,} parameters, the last decoder layers that "
                           f"fit: at most {limit:,}){also}")
                return out
    layer = replace(setup, curvature_params=shape.layer_params, curvature_batch_size=1)
    if shape.layer_params and (setup.curvature_params or shape.params) > shape.layer_params \
            and estimate(shape, layer).fits(budget):
        out.append(f"curvature.parameters restricted to one decoder layer ({shape.layer_params / 1e6:.0f}M "
                   "parameters, e.g. 'model\\.layers\\.0\\.') with curvature.batch_size: 1")
    elif shape.layer_params and (length := longest_fitting_length(shape, layer, budget)) is not None:
        out.append(f"curvature.parameters restricted to one decoder layer, curvature.batch_size: 1 and "
                   f"model.max_length: {length} (or less)")
    return out


def fitting_changes(shape: ModelShape, setup: StepSetup, budget: float,
                    named_sizes: Sequence[tuple[str, int]] | None = None) -> list[str]:
    """Changes of the study's settings under which the step fits `budget` bytes per GPU, most
    direct first (empty when nothing tried fits). `named_sizes`: the model's parameter names and
    sizes, for a curvature step's suggested `curvature.parameters` regex."""
    if setup.method == "curvature":
        return _curvature_changes(shape, setup, budget, named_sizes)
    out = []
    if setup.workers > 1 and not setup.fsdp and estimate(shape, replace(setup, fsdp=True)).fits(budget):
        out.append(f"execution.fsdp: true (shard over the {setup.workers} workers)")
    workers = _fsdp_workers(shape, setup, budget)
    if workers is not None and not (workers == setup.workers and setup.fsdp):
        out.append(f"FSDP over {workers} GPU workers (execution.workers_per_trial: {workers}, "
                   f"execution.gpus_per_trial: {workers}, execution.fsdp: true)")
    if not setup.activation_checkpointing:
        checkpointed = replace(setup, activation_checkpointing=True)
        if estimate(shape, checkpointed).fits(budget):
            out.append("training.activation_checkpointing: true")
        elif (w := _fsdp_workers(shape, setup, budget, activation_checkpointing=True)) is not None and w != workers:
            out.append(f"FSDP over {w} GPU workers with training.activation_checkpointing: true")
    if setup.micro > 1 and estimate(shape, replace(setup, micro_batch_size=1)).fits(budget):
        out.append("training.micro_batch_size: 1 (gradient accumulation keeps the batch)")
    length = longest_fitting_length(shape, setup, budget)
    if length is not None and length < setup.seq_len:
        out.append(f"model.max_length: {length} (or less)")
    elif length is None:  # the most sharded, checkpointed setup the batch allows, at a shorter length
        most = max((w for w in WORKER_COUNTS if setup.batch_size % w == 0), default=setup.workers)
        sharded = replace(setup, workers=max(most, setup.workers), fsdp=setup.fsdp or most > 1,
                          activation_checkpointing=True)
        length = longest_fitting_length(shape, sharded, budget)
        if length is not None and length < setup.seq_len:
            out.append(f"FSDP over {sharded.workers} GPU workers with training.activation_checkpointing: true and "
                       f"model.max_length: {length} (or less)")
    return out


def describe_misfit(shape: ModelShape, setup: StepSetup, budget: float,
                    named_sizes: Sequence[tuple[str, int]] | None = None) -> str:
    """The problem message of a step that does not fit: the estimate and what would fit."""
    breakdown = estimate(shape, setup)
    changes = fitting_changes(shape, setup, budget, named_sizes)
    fix = ("; it would fit with " + ", or ".join(changes)) if changes else \
        "; no change of workers (up to 64 with FSDP), checkpointing, micro-batch or max_length tried here fits"
    return (f"{setup.method} needs about {breakdown.render()}, over the {budget / GB:.0f} GB a worker's GPU "
            f"has (execution.gpu_memory_gb){fix}")
