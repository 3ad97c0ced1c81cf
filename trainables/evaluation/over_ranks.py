"""Evaluation by every rank of a multi-worker trial: each rank runs its share of the batches.

An evaluator forms its batches the same way on every rank (length-sorted, from the same
examples), so inside `over_ranks()` rank r runs batches r, r + N, r + 2N, … of them
(`my_batches`) and the results of all ranks are put together again (`merged`) before anything
is computed from them. Each batch is the very batch one process would form, run by the same
kernels, so the scores, predictions and generations are those of a one-worker evaluation, and
the evaluation keys need not know how many workers computed them (tests/test_multi_worker.py
checks equality over two gloo processes).

Every rank must evaluate together (the chain's writer leads its followers into the same
`evaluate_rows` call, trainables.chain); outside `over_ranks()`, and with one rank, an
evaluator runs all its batches and `merged` returns its own results. Waiting goes through
`trainables.distributed.barrier` first (no timeout inside Ray Train), so a rank that finishes
its share early waits for the slowest without hitting the process group's timeout.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence, TypeVar

from trainables import ranks

T = TypeVar("T")
_sharing = False


@contextlib.contextmanager
def over_ranks(enabled: bool = True) -> Iterator[None]:
    """Evaluators inside this block share their batches out over the ranks (when `enabled` and
    there is more than one rank)."""
    global _sharing
    before, _sharing = _sharing, enabled and ranks.world_size() > 1
    try:
        yield
    finally:
        _sharing = before


def sharing() -> bool:
    return _sharing


def judges_here() -> bool:
    """Whether this rank computes what follows the model's batches (e.g. a toxicity classifier
    judging the merged generations): the writer, or every process outside `over_ranks`. The
    followers' rows are dropped anyway, so they neither load nor run a judge."""
    return not _sharing or ranks.is_writer()


def my_batches(batches: Sequence[T]) -> list[T]:
    """This rank's share of `batches` (every batch outside `over_ranks`)."""
    batches = list(batches)
    if not _sharing:
        return batches
    return batches[ranks.rank()::ranks.world_size()]


def merged(results: dict[Any, Any]) -> dict[Any, Any]:
    """Every rank's `results` (a dict keyed by what each result belongs to) in one dict, on
    every rank; `results` itself outside `over_ranks`. A collective inside it."""
    if not _sharing:
        return results
    import torch
    import torch.distributed as dist

    from trainables.distributed import barrier

    barrier()
    if dist.get_backend() == "nccl":  # object collectives go through the current CUDA device
        torch.cuda.set_device(ranks.model_device())
    gathered: list[dict[Any, Any] | None] = [None] * ranks.world_size()
    dist.all_gather_object(gathered, results)
    out: dict[Any, Any] = {}
    for part in gathered:
        out.update(part or {})
    return out
