"""How a stage's batch splits over a trial's data-parallel workers and into micro-batches.

A stage's `batch_size` is the GLOBAL batch (the paper's 16): with `execution.workers_per_trial`
= N, each worker takes batch_size / N examples per optimizer step, so one worker and N workers
take the same optimizer steps on the same examples (trainables/distributed.py says how).

`training.micro_batch_size` = m (per device) splits each worker's share further: the worker runs
(batch_size / N) / m forward/backward passes of m examples and accumulates their gradients
before the one optimizer step (gradient accumulation), so the global batch, the optimizer steps
and the examples each step sees stay the same; only the activations held at once shrink. None
(the default) is one pass over the whole per-device batch, the engine's behaviour before
micro-batches existed.

The study file's checks refuse a split that does not divide (study/spec_checks.py) and the
trainer's arguments take the sizes from here (trainables/stages/training_args.py): both ask
here, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass


def batch_size_problem(batch_size: int, workers: int, micro_batch_size: int | None = None) -> str | None:
    """Why `batch_size` cannot be split over `workers` data-parallel workers (and, when given,
    into micro-batches of `micro_batch_size` per device), or None."""
    if workers < 1:
        return f"workers must be ≥ 1 (got {workers})"
    if batch_size % workers:
        return (f"batch_size {batch_size} is the global batch and must be divisible by "
                f"execution.workers_per_trial = {workers} (each worker takes batch_size / workers examples)")
    if micro_batch_size is not None:
        if micro_batch_size < 1:
            return f"training.micro_batch_size must be ≥ 1 or null (got {micro_batch_size})"
        per_device = batch_size // workers
        if per_device % micro_batch_size:
            return (f"batch_size {batch_size} over {workers} worker(s) is {per_device} examples per device, "
                    f"which training.micro_batch_size = {micro_batch_size} must divide (each device accumulates "
                    f"per-device batch / micro_batch_size gradient passes per optimizer step)")
    return None


@dataclass(frozen=True)
class BatchSplit:
    """One optimizer step's examples on one device: `accumulation_steps` passes of `micro_batch`."""

    micro_batch: int
    """Examples per forward/backward pass on one device (TrainingArguments.per_device_train_batch_size)."""
    accumulation_steps: int
    """Passes whose gradients are summed before each optimizer step (gradient_accumulation_steps)."""


def batch_split(batch_size: int, workers: int, micro_batch_size: int | None = None) -> BatchSplit:
    """How a GLOBAL `batch_size` runs on each of `workers` devices; ValueError if it does not divide."""
    problem = batch_size_problem(batch_size, workers, micro_batch_size)
    if problem:
        raise ValueError(problem)
    per_device = batch_size // workers
    micro = per_device if micro_batch_size is None else micro_batch_size
    return BatchSplit(micro_batch=micro, accumulation_steps=per_device // micro)


def per_device_batch_size(batch_size: int, workers: int) -> int:
    """Examples per worker per optimizer step for a GLOBAL `batch_size` on `workers` workers."""
    problem = batch_size_problem(batch_size, workers)
    if problem:
        raise ValueError(problem)
    return batch_size // workers
