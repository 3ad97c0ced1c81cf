"""How a stage's batch splits over a trial's data-parallel workers.

A stage's `batch_size` is the GLOBAL batch (the paper's 16): with `execution.workers_per_trial`
= N, each worker takes batch_size / N examples per optimizer step, so one worker and N workers
take the same optimizer steps on the same examples (trainables/distributed.py says how). The
study file's checks refuse a batch N does not divide (study/spec_checks.py) and the trainer's
arguments take the per-worker size (trainables/stages/training_args.py): both ask here, so
they cannot disagree.
"""

from __future__ import annotations


def batch_size_problem(batch_size: int, workers: int) -> str | None:
    """Why `batch_size` cannot be split over `workers` data-parallel workers, or None."""
    if workers < 1:
        return f"workers must be ≥ 1 (got {workers})"
    if batch_size % workers:
        return (f"batch_size {batch_size} is the global batch and must be divisible by "
                f"execution.workers_per_trial = {workers} (each worker takes batch_size / workers examples)")
    return None


def per_device_batch_size(batch_size: int, workers: int) -> int:
    """Examples per worker per optimizer step for a GLOBAL `batch_size` on `workers` workers."""
    problem = batch_size_problem(batch_size, workers)
    if problem:
        raise ValueError(problem)
    return batch_size // workers
