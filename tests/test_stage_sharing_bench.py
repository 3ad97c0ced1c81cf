"""bench/stage_sharing.py: the stage-training counts it reports (fast: plans only, nothing trained)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import stage_sharing as bench  # noqa: E402

from study.points import grid_points  # noqa: E402
from study.spec import StudySpec  # noqa: E402
from study.spec_loading import spec_from_dict  # noqa: E402
from tasks import TASK_NAMES  # noqa: E402

HAS_BBQ = "bbq" in TASK_NAMES


def _two_chains_sharing_a_first_stage(first_stage: dict | None = None) -> StudySpec:
    first = {"task": "toxigen_qa", **(first_stage or {})}
    return spec_from_dict({
        "name": "hand",
        "model": "tiny",
        "stage_defaults": {"learning_rate": 1e-3, "batch_size": 8, "steps": 5},
        "chains": {"a": [first, {"task": "arc_easy", "learning_rate": 1e-3}],
                   "b": [first, {"task": "arc_easy", "learning_rate": 2e-3}]},
        "seeds": [0, 1],
    })


def test_counts_on_two_chains_sharing_their_first_stage_over_two_seeds():
    """Chains a = [TQA, ARC lr 1e-3] and b = [TQA, ARC lr 2e-3] (same first stage), seeds 0 and 1.

    trials = 2 chains × 2 seeds = 4; naive = 4 trials × 2 stages = 8.
    shared: per seed one TQA first stage (a and b share it) + two ARC second stages (different
    lr) = 3; the seed is part of every stage's key, so seeds share nothing: 2 × 3 = 6.
    Per stage: stage 1 naive 4 → 2 keys, stage 2 naive 4 → 4 keys. No two trials are identical.
    """
    count = bench.count_stage_trainings(bench.plans_of(_two_chains_sharing_a_first_stage()))
    assert (count.trials, count.naive, count.shared) == (4, 8, 6)
    assert count.per_stage == ((4, 2), (4, 4))
    assert count.distinct_trials == 4 and count.naive_of_distinct_trials == 8
    assert count.ratio == pytest.approx(6 / 8)


def test_pinning_the_first_stage_seed_shares_it_across_seeds():
    """Same chains with the first stage's `seed: 0`: one TQA stage for all 4 trials, and the 4
    second stages still differ (lr × trial seed): shared = 1 + 4 = 5 of naive 8."""
    count = bench.count_stage_trainings(bench.plans_of(_two_chains_sharing_a_first_stage({"seed": 0})))
    assert (count.trials, count.naive, count.shared) == (4, 8, 5)
    assert count.per_stage == ((4, 1), (4, 4))


def test_identical_trials_in_two_chains_count_once():
    """Two chains with the same stages (different names): 2 trials, naive 4, shared 2, and one
    distinct trial whose 2 stages are all that needs training."""
    spec = spec_from_dict({"name": "dup", "model": "tiny",
                           "chains": {"x": [{"task": "arc_easy"}, {"task": "toxigen_qa"}],
                                      "y": [{"task": "arc_easy"}, {"task": "toxigen_qa"}]}})
    count = bench.count_stage_trainings(bench.plans_of(spec))
    assert (count.trials, count.naive, count.shared) == (2, 4, 2)
    assert (count.distinct_trials, count.naive_of_distinct_trials) == (1, 2)


@pytest.fixture(scope="module")
def grid() -> bench.GridResult:
    return bench.paper_grid()


# Trials per table = settings × 3 seeds, from the paper:
#   Table 1: ARC→TQA, TQA→ARC (+ ARC→BBQ, BBQ→ARC when the registry has bbq) = 2 (4) settings
#   Table 2: SFT, DPO, PPO first stage then SFT ARC                     = 3 settings
#   Table 4: 2 orders × first-stage lr {5e-6, 1e-5, 1.5e-5, 2e-5}        = 8 settings
#   Table 5: 2 orders × second-stage lr {5e-6, 1e-5, 1.5e-5, 2e-5}       = 8 settings
#   Table 9: TQA→ARC × first-stage batch {2, 8, 16, 24, 32}              = 5 settings
#   Table 11: TQA→ARC × first-stage lr {2e-6, 5e-6, 1e-5, 2e-5}          = 4 settings
# Naive = trials × 2 stages. Shared: only where a first stage is common to several settings of
# one seed: Table 5 (one first stage per order and seed: 3 × (2 + 8) = 30) and, with BBQ, Table 1
# (ARC→TQA and ARC→BBQ share the ARC stage: 3 × (3 + 4) = 21).
EXPECTED = {
    "Table 1": (12, 24, 21) if HAS_BBQ else (6, 12, 12),
    "Table 2": (9, 18, 18),
    "Table 4": (24, 48, 48),
    "Table 5": (24, 48, 30),
    "Table 9": (15, 30, 30),
    "Table 11": (12, 24, 24),
}


def test_paper_grid_per_table_counts_match_the_hand_computation(grid):
    got = {" ".join(e.label.split()[:2]): (c.trials, c.naive, c.shared) for e, c in zip(grid.experiments, grid.counts)}
    assert got == EXPECTED
    for count in grid.counts:
        assert 0 < count.ratio <= 1
    assert all(e.spec.seeds == (0, 1, 2) for e in grid.experiments)
    assert HAS_BBQ or any("bbq" in note for note in grid.notes)  # a missing task is said, not hidden


def test_paper_union_counts_match_the_hand_computation(grid):
    """Per seed, distinct first stages: TQA SFT at lr 1e-5 (the default), 2e-6, 5e-6, 1.5e-5, 2e-5,
    batch 2, 8, 24, 32, DPO, PPO = 11; ARC SFT at lr 1e-5, 5e-6, 1.5e-5, 2e-5 = 4 → 15.
    Distinct second stages: ARC lr 1e-5 after each of the 11 TQA stages + ARC lr 5e-6, 1.5e-5,
    2e-5 after the default TQA stage = 14; TQA lr 1e-5 after each of the 4 ARC stages + 3 other
    lrs after the default ARC stage = 7 → 21 (= distinct trials per seed). Shared = 3 × 36 = 108
    of naive 180 (90 trials × 2). With a pinned first-stage seed: 15 + 3 × 21 = 78.
    With BBQ: + BBQ first stage, ARC→BBQ and BBQ→ARC second stages = 3 × 39 = 117 of 192."""
    union = grid.union
    if HAS_BBQ:
        assert (union.trials, union.naive, union.shared) == (96, 192, 117)
    else:
        assert (union.trials, union.naive, union.shared) == (90, 180, 108)
        assert union.distinct_trials == 63 and grid.union_trials_per_seed == 30
        assert (grid.pinned.naive, grid.pinned.shared) == (180, 78)
        assert union.ratio == pytest.approx(0.6)
    assert union.ratio <= 1
    # Cross-table sharing exists: the union trains fewer stages than the tables run one by one.
    assert union.shared < sum(c.shared for c in grid.counts)
    default = next(tables for description, tables in grid.repeated if description.startswith("SFT toxigen_qa lr 1e-05 bs 16 →")
                   and description.endswith("SFT arc_easy lr 1e-05 bs 16"))
    assert default == ["1", "2", "4", "5", "9", "11"]


def test_union_is_one_valid_study_whose_keys_are_the_tables_keys(grid):
    union = bench.union_spec(grid.experiments)
    assert isinstance(union, StudySpec) and union.grid == {} and union.curvature.enabled
    assert len(union.chains) == sum(len(e.spec.chains) * len(grid_points(e.spec)) for e in grid.experiments)
    table_keys = set().union(*(bench.stage_keys(bench.plans_of(e.spec)) for e in grid.experiments))
    assert bench.stage_keys(bench.plans_of(union)) == table_keys


def test_union_refuses_a_table_with_another_base_identity(grid):
    other = dataclasses.replace(grid.experiments[1].spec, model=dataclasses.replace(grid.experiments[1].spec.model, max_length=1024))
    experiments = [grid.experiments[0], dataclasses.replace(grid.experiments[1], spec=other)]
    with pytest.raises(ValueError, match="base settings"):
        bench.union_spec(experiments)


def test_ledger_trainings_counts_stage_records_but_not_the_base(tmp_path):
    assert bench.ledger_trainings(tmp_path) is None
    for key in ("base-0123", "aaaa", "bbbb", "cccc"):
        (tmp_path / "stages" / key).mkdir(parents=True)
        (tmp_path / "stages" / key / "record.json").write_text(json.dumps({"stage_key": key, "status": "finished"}))
    (tmp_path / "stages" / "dddd").mkdir()  # claimed, never finished: no record
    assert bench.ledger_trainings(tmp_path) == 3


def test_main_without_verify_prints_the_table(capsys):
    assert bench.main(["--no-verify"]) == 0
    out = capsys.readouterr().out
    union_line = next(line for line in out.splitlines() if line.startswith("union: all tables as ONE study"))
    if not HAS_BBQ:
        assert union_line.split()[6:10] == ["90", "180", "108", "0.600"] and "NOT met" in union_line
    for label in ("Table 1", "Table 2", "Table 4", "Table 5", "Table 9", "Table 11"):
        assert label in out
    assert "Equality check" not in out
