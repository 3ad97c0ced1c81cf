"""Stratified, seeded sub-sampling of a task's examples (Appendix A.1).

The paper sub-samples ToxiGen to ARC's size "with stratified sampling to ensure coverage
of each demographic group". A stratum is (primary group, label), where the primary group is
the example's rarest group in the pool: a multi-group statement then stands for the group
that most needs it. Examples without groups share the primary group "".

Sizes are allocated in proportion to stratum size by largest remainder, and, when the sample
can afford it (size >= number of strata), every stratum gets at least one example. The
returned list is in a data_seed-shuffled order, ready to be trained on as is.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np

from .example import Example

T = TypeVar("T")

Stratum = tuple[str, int]


def primary_group(example: Example, group_counts: Mapping[str, int]) -> str:
    """The example's least frequent group in the pool (ties: alphabetical), "" if it has none."""
    if not example.groups:
        return ""
    return min(example.groups, key=lambda g: (group_counts[g], g))


def strata_of(pool: Sequence[Example]) -> dict[Stratum, list[Example]]:
    """Pool examples by (primary group, label); each stratum sorted by example_id."""
    group_counts = Counter(g for example in pool for g in example.groups)
    strata: dict[Stratum, list[Example]] = defaultdict(list)
    for example in pool:
        strata[(primary_group(example, group_counts), example.label)].append(example)
    # Sorting makes the draw independent of the source's row order.
    return {key: sorted(members, key=lambda e: e.example_id) for key, members in sorted(strata.items())}


def allocate(stratum_sizes: Mapping[Stratum, int], size: int) -> dict[Stratum, int]:
    """How many examples to draw from each stratum; sums to min(size, pool size).

    Largest remainder keeps every count within 1 of its proportional share size * N_s / N.
    The at-least-one rule only lifts strata whose share is below 1, so it stays within 1 too,
    unless there are so many tiny strata that the others must give up more than a remainder.
    """
    total = sum(stratum_sizes.values())
    size = min(size, total)
    if size <= 0:
        return {key: 0 for key in stratum_sizes}
    quota = {key: size * n / total for key, n in stratum_sizes.items()}
    counts = {key: math.floor(q) for key, q in quota.items()}
    if size >= sum(1 for n in stratum_sizes.values() if n > 0):
        for key, n in stratum_sizes.items():
            if n > 0 and counts[key] == 0:
                counts[key] = 1
    # Hand out (or take back) one at a time where it moves a count least from its share.
    # Ties go to the first key in sorted order, so the allocation is deterministic.
    keys = sorted(stratum_sizes)
    while sum(counts.values()) < size:
        key = min((k for k in keys if counts[k] < stratum_sizes[k]), key=lambda k: counts[k] - quota[k])
        counts[key] += 1
    while sum(counts.values()) > size:
        key = max((k for k in keys if counts[k] > 1), key=lambda k: counts[k] - quota[k])
        counts[key] -= 1
    return counts


def derived_data_seed(data_seed: int, stage_seed: int) -> int:
    """The training-subsample seed of a stage under seed_scope 'order_and_data': a 32-bit hash of
    (data_seed, stage seed). A hash rather than a sum, so that (data_seed 0, seed 1) and
    (data_seed 1, seed 0) draw different subsamples."""
    text = json.dumps(["train_data", int(data_seed), int(stage_seed)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def keyed_index(seed: int, key: str, n: int) -> int:
    """An index in range(n) drawn from (seed, sha256 of key) alone: the same key keeps its draw
    whatever list it sits in or whatever else was drawn."""
    id_key = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return int(np.random.default_rng([int(seed), id_key]).integers(n))


def seeded_subset(items: Sequence[T], n: int, seed: int) -> list[T]:
    """n items drawn without replacement by `seed`, in their original order (all when n ≥ len)."""
    if n >= len(items):
        return list(items)
    picked = np.random.default_rng(seed).choice(len(items), size=n, replace=False)
    return [items[i] for i in sorted(picked)]


def stratified_sample(pool: Sequence[Example], size: int, data_seed: int) -> list[Example]:
    """A deterministic stratified sample of `size` examples (all of them if size >= len(pool))."""
    rng = np.random.default_rng(data_seed)
    strata = strata_of(pool)
    counts = allocate({key: len(members) for key, members in strata.items()}, size)
    chosen: list[Example] = []
    for key, members in strata.items():  # sorted keys: the rng is consumed in a fixed order
        picks = rng.choice(len(members), size=counts[key], replace=False)
        chosen.extend(members[i] for i in sorted(picks))
    # Shuffle so the list does not run stratum by stratum (which would order training
    # batches by group and label).
    return [chosen[i] for i in rng.permutation(len(chosen))]
