"""Replay mitigation: mix a sample of an earlier stage's training examples into a stage's own.

The replayed count is exact, round(fraction × size of the earlier stage's training set), and
the sample is deterministic in the stage's seed; it is drawn only from the examples that the
named earlier stage trained on (same task, train size and training-subsample seed, so under
seed_scope 'order_and_data' the earlier stage's own subsample), and every replayed example id is
written to the `replay` table. Which examples are replayed follows the stage's seed under both
seed scopes: it is part of how the stage is trained, like its batch order.
"""

from __future__ import annotations

from typing import Any, Sequence

from tasks.sampling import seeded_subset


def replay_count(fraction: float, source_size: int) -> int:
    return int(round(fraction * source_size))


def replay_sample(source: Sequence[Any], fraction: float, seed: int) -> list[Any]:
    return seeded_subset(source, replay_count(fraction, len(source)), seed)


def replay_rows(trial_id: str, stage: int, from_stage: int, replayed: Sequence[Any]) -> list[dict]:
    return [{"trial_id": trial_id, "stage": stage, "from_stage": from_stage, "example_id": ex.example_id}
            for ex in replayed]
