"""Stratified sampling: allocation arithmetic, and the paper-sized samples of the real data."""

from collections import Counter

import pytest

from tests.mirror import MIRROR, needs_mirror
from tasks import Example, load_examples
from tasks.sampling import allocate, stratified_sample


def _stratum_by_id(pool: list[Example]) -> dict[str, tuple[str, int]]:
    """Each example's (rarest group in the pool, label), computed here independently."""
    group_counts = Counter(g for e in pool for g in e.groups)
    strata = {}
    for e in pool:
        rarest = sorted(e.groups, key=lambda g: (group_counts[g], g))[0] if e.groups else ""
        strata[e.example_id] = (rarest, e.label)
    return strata


def _check_proportional(pool: list[Example], sample: list[Example]) -> None:
    stratum_of = _stratum_by_id(pool)
    pool_sizes = Counter(stratum_of.values())
    sample_sizes = Counter(stratum_of[e.example_id] for e in sample)
    n = len(sample)
    for stratum, pool_size in pool_sizes.items():
        proportional = n * pool_size / len(pool)
        assert abs(sample_sizes[stratum] - proportional) <= 1, (stratum, sample_sizes[stratum], proportional)
        assert sample_sizes[stratum] >= 1, stratum


# --- allocation arithmetic (no data needed) ---


def test_allocation_sums_and_stays_within_one_of_proportional():
    sizes = {("a", 0): 500, ("a", 1): 300, ("b", 0): 7, ("b", 1): 3, ("c", 1): 1}
    total = sum(sizes.values())
    for n in (100, 333, 810):
        counts = allocate(sizes, n)
        assert sum(counts.values()) == n
        for key, count in counts.items():
            assert 1 <= count <= sizes[key]
            assert abs(count - n * sizes[key] / total) <= 1


def test_allocation_prefers_coverage_when_tiny_strata_crowd_the_sample():
    # With 3 strata far below a share of 1, giving each one example must cost the big
    # strata more than their rounding remainder: coverage wins over the within-1 bound.
    sizes = {("a", 0): 500, ("a", 1): 300, ("b", 0): 7, ("b", 1): 3, ("c", 1): 1}
    assert allocate(sizes, 5) == {key: 1 for key in sizes}
    counts = allocate(sizes, 17)
    assert sum(counts.values()) == 17 and min(counts.values()) == 1
    assert counts[("a", 0)] + counts[("a", 1)] == 14


def test_allocation_below_the_number_of_strata_is_plain_largest_remainder():
    counts = allocate({("a", 0): 90, ("b", 0): 9, ("c", 0): 1}, 2)
    assert counts == {("a", 0): 2, ("b", 0): 0, ("c", 0): 0}


def test_allocation_caps_at_the_pool():
    sizes = {("a", 0): 4, ("b", 1): 2}
    assert allocate(sizes, 50) == sizes
    assert allocate(sizes, 0) == {("a", 0): 0, ("b", 1): 0}


def test_sample_of_a_synthetic_pool():
    pool = [
        Example(f"t/{i}", "p", " This is", (" toxic.", " not toxic."), ("toxic", "not toxic"), i % 2, (g,))
        for i, g in enumerate(["x"] * 40 + ["y"] * 8 + ["z"] * 2)
    ]
    sample = stratified_sample(pool, 10, data_seed=3)
    assert len({e.example_id for e in sample}) == 10
    assert {e.groups[0] for e in sample} == {"x", "y", "z"}
    _check_proportional(pool, sample)
    assert stratified_sample(pool, 10, data_seed=3) == sample


# --- the real data ---


@needs_mirror
@pytest.mark.parametrize("size", [100, 2241])
def test_toxigen_sample_covers_groups_in_proportion(size):
    pool = load_examples("toxigen_qa", "train", data_dir=MIRROR)
    sample = load_examples("toxigen_qa", "train", size=size, data_dir=MIRROR, data_seed=0)
    assert len(sample) == size
    assert len({e.example_id for e in sample}) == size
    assert {e.example_id for e in sample} <= {e.example_id for e in pool}
    assert len({g for e in sample for g in e.groups}) == 13
    _check_proportional(pool, sample)
    # Label balance follows the pool's (hate 42%): the stratum rounding moves it only a little.
    pool_toxic = sum(e.label == 0 for e in pool) / len(pool)
    sample_toxic = sum(e.label == 0 for e in sample) / size
    assert abs(sample_toxic - pool_toxic) < (0.05 if size == 100 else 0.01)


@needs_mirror
@pytest.mark.parametrize("task", ["toxigen_qa", "arc_easy"])
def test_sample_is_deterministic_and_seed_dependent(task):
    first = load_examples(task, "train", size=100, data_dir=MIRROR, data_seed=0)
    again = load_examples(task, "train", size=100, data_dir=MIRROR, data_seed=0)
    other = load_examples(task, "train", size=100, data_dir=MIRROR, data_seed=1)
    assert first == again
    assert {e.example_id for e in first} != {e.example_id for e in other}


@needs_mirror
def test_arc_sample_is_stratified_by_answer():
    pool = load_examples("arc_easy", "train", data_dir=MIRROR)
    sample = load_examples("arc_easy", "train", size=2241, data_dir=MIRROR)
    _check_proportional(pool, sample)
    assert all(e.groups == () for e in sample)


@needs_mirror
def test_size_beyond_the_split_returns_all_of_it():
    pool = load_examples("arc_easy", "train", data_dir=MIRROR)
    everything = load_examples("arc_easy", "train", size=10**6, data_dir=MIRROR)
    assert sorted(e.example_id for e in everything) == sorted(e.example_id for e in pool)
    assert load_examples("arc_easy", "train", size=0, data_dir=MIRROR) == []


@needs_mirror
def test_full_splits_have_the_source_sizes():
    # Every question of the release files (the default keeps the four-option ones: test_tasks_arc.py).
    assert len(load_examples("arc_easy", "train", data_dir=MIRROR, option_counts=[3, 4, 5])) == 2251
    assert len(load_examples("arc_easy", "eval", data_dir=MIRROR, option_counts=[3, 4, 5])) == 2376
