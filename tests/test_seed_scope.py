"""`seed_scope`: whether a trial's seed varies only the training order, or its training data too.

Plans and stage keys need no data; what the stages train on is drawn from the local mirror
(`data_dir` fixture: skipped without one). Fast tier: no Ray, no model.
"""

from __future__ import annotations

import copy

import pytest

import study.planner as plan_module
from contract.plan import TrialPlan
from study.planner import build_plans
from study.spec_loading import spec_from_dict
from trainables.trial_data import stage_examples
from trainables.trial_reports import trial_row
from tasks.sampling import derived_data_seed

BASE = {
    "name": "seed_scope_test",
    "model": {"name": "tiny", "max_length": 128},
    "tasks": {"toxigen_qa": {"train_size": 40, "eval_size": 20}, "arc_easy": {"train_size": 30, "eval_size": 10}},
    "stage_defaults": {"learning_rate": 1e-3, "batch_size": 8, "steps": 5},
    "chains": {
        "tqa_arc": [{"task": "toxigen_qa"}, {"task": "arc_easy", "start_from": "best_seed",
                                              "replay": {"from_stage": 1, "fraction": 0.1}}],
        "fixed": [{"task": "arc_easy", "seed": 7}, {"task": "toxigen_qa"}],
    },
    "grid": {"stage2.learning_rate": [1e-4, 2e-4]},
    "seeds": [0, 1],
}

# (trial id, stage keys) of BASE, computed before seed_scope existed (task versions pinned to
# "pinned", data_dir "/data/mirror"): the default scope must leave every one of them as it was.
# The best_seed stages (tqa_arc stage 2) were re-pinned once, when best_seed moved to the tasks'
# validation splits (its selection rule enters the key); every other key is the original.
KEYS_BEFORE_SEED_SCOPE = [
    ("tqa_arc-0-4e4f471d", ["161ee6ac05166b7a", "29c4465567f4b3b1"]),
    ("tqa_arc-1-23da9590", ["b549d4ea42da65b0", "afdc154d45495fbb"]),
    ("tqa_arc-0-a749aa64", ["161ee6ac05166b7a", "f760bb37616c26c4"]),
    ("tqa_arc-1-33a2dd49", ["b549d4ea42da65b0", "dd370ff592769156"]),
    ("fixed-0-70a8f4e8", ["ba458f0edb5df682", "830bcbe35e7b7520"]),
    ("fixed-1-c3ffa582", ["ba458f0edb5df682", "7d6fcd8748a451e7"]),
    ("fixed-0-a46cf18d", ["ba458f0edb5df682", "1ff7a18099128cf1"]),
    ("fixed-1-3885a49e", ["ba458f0edb5df682", "5e2e5e99e42ba138"]),
]
STAGE_FIELDS_BEFORE_SEED_SCOPE = {"stage", "method", "task", "learning_rate", "batch_size", "steps", "seed",
                                  "train_size", "task_version", "replay", "stage_key"}


def _plans(data_dir="/data/mirror", **changes) -> list[dict]:
    """The plans in their plans.json form (what these tests read)."""
    raw = copy.deepcopy(BASE) | changes
    plans = build_plans(spec_from_dict(raw), study_dir="/tmp/study", data_dir=None if data_dir is None else str(data_dir),
                        chat=False)
    return [p.to_dict() for p in plans]


def _by(plans, chain, seed, lr2=1e-4) -> dict:
    [plan] = [p for p in plans if p["chain"] == chain and p["seed"] == seed
              and p["grid_point"]["stage2.learning_rate"] == lr2]
    return plan


def _keys(plan) -> list[str]:
    return [s["stage_key"] for s in plan["stages"]]


def _ids(plan, number: int) -> list[str]:
    """Example ids stage `number` of the plan trains on (replayed ones included), in order."""
    plan = TrialPlan.from_dict(plan)
    examples, _ = stage_examples(plan, plan.stages[number - 1], plan.stages)
    return [ex.example_id for ex in examples]


@pytest.fixture
def pinned_task_versions(monkeypatch):
    """Task versions as a constant, so the pinned keys do not move when a task's version does."""
    monkeypatch.setattr(plan_module, "task_version", lambda task: "pinned")


# ---------------------------------------------------------------- the default keeps every key


def test_default_scope_keeps_the_keys_and_trial_ids_of_before(pinned_task_versions):
    plans = _plans()
    assert [(p["trial_id"], _keys(p)) for p in plans] == KEYS_BEFORE_SEED_SCOPE
    assert all(set(s) - {"start_from"} == STAGE_FIELDS_BEFORE_SEED_SCOPE for p in plans for s in p["stages"])


def test_order_written_out_is_the_default_plan_for_plan():
    assert _plans(seed_scope="order") == _plans()


def test_every_preset_states_its_scope_and_why():
    from study.presets import preset_paths

    for name, path in preset_paths().items():
        [line] = [line for line in path.read_text().splitlines() if line.startswith("seed_scope:")]
        value, _, why = line.partition("#")
        assert value.split(":")[1].strip() in ("order", "order_and_data") and why.strip(), name


# ---------------------------------------------------------------- stage keys under order_and_data


def test_order_and_data_keys_differ_by_seed_and_from_order():
    order, data = _plans(), _plans(seed_scope="order_and_data")
    assert _keys(_by(data, "tqa_arc", 0))[0] != _keys(_by(data, "tqa_arc", 1))[0]
    assert not set(_keys(_by(order, "tqa_arc", 0))) & set(_keys(_by(data, "tqa_arc", 0)))
    assert len({p["trial_id"] for p in order + data}) == len(order) * 2


def test_order_and_data_shares_what_the_same_data_and_seed_train():
    """Same seed, two stage-2 learning rates: one stage 1. A stage pinned to `seed: 7` draws its
    data with 7 in every trial: one stage 1 over the trial seeds, as under order."""
    data = _plans(seed_scope="order_and_data")
    assert _keys(_by(data, "tqa_arc", 0, 1e-4))[0] == _keys(_by(data, "tqa_arc", 0, 2e-4))[0]
    assert _keys(_by(data, "tqa_arc", 0, 1e-4))[1] != _keys(_by(data, "tqa_arc", 0, 2e-4))[1]
    pinned = [_by(data, "fixed", seed)["stages"][0] for seed in (0, 1)]
    assert pinned[0]["stage_key"] == pinned[1]["stage_key"]
    assert pinned[0]["data_seed"] == pinned[1]["data_seed"] == derived_data_seed(0, 7)
    later = [_by(data, "fixed", seed)["stages"][1] for seed in (0, 1)]
    assert [s["data_seed"] for s in later] == [derived_data_seed(0, 0), derived_data_seed(0, 1)]


def test_chains_with_one_first_stage_share_it_under_order_and_data():
    chains = {"tqa_arc": [{"task": "toxigen_qa"}, {"task": "arc_easy"}],
              "tqa_tqa": [{"task": "toxigen_qa"}, {"task": "toxigen_qa", "learning_rate": 1e-4}]}
    data = _plans(seed_scope="order_and_data", chains=chains)
    for seed in (0, 1):
        assert _keys(_by(data, "tqa_arc", seed))[0] == _keys(_by(data, "tqa_tqa", seed))[0]


def test_best_seed_candidates_are_the_seeds_prefixes_under_both_scopes():
    for scope in ("order", "order_and_data"):
        plans = _plans(seed_scope=scope)
        start = _by(plans, "tqa_arc", 1)["stages"][1]["start_from"]
        assert [c[-1]["seed"] for c in start["candidates"]] == [0, 1]
        assert [c[-1]["stage_key"] for c in start["candidates"]] == [_keys(_by(plans, "tqa_arc", s))[0] for s in (0, 1)]


def test_derived_data_seed_is_a_stable_32_bit_hash_of_both_seeds():
    assert derived_data_seed(0, 1) == derived_data_seed(0, 1)
    assert derived_data_seed(0, 1) != derived_data_seed(1, 0)
    assert all(0 <= derived_data_seed(d, s) < 2**32 for d in (0, 5) for s in (0, 1, 2))


# ---------------------------------------------------------------- what the stages train on


def test_order_and_data_redraws_the_training_examples_per_seed(data_dir):
    data = _plans(data_dir, seed_scope="order_and_data")
    again = _plans(data_dir, seed_scope="order_and_data")
    seed0, seed1 = _by(data, "tqa_arc", 0), _by(data, "tqa_arc", 1)
    assert len(_ids(seed0, 1)) == len(_ids(seed1, 1)) == 40
    assert set(_ids(seed0, 1)) != set(_ids(seed1, 1))
    assert _ids(seed0, 1) == _ids(_by(again, "tqa_arc", 0), 1)  # same seed, same examples in the same order
    assert _ids(_by(data, "fixed", 0), 1) == _ids(_by(data, "fixed", 1), 1)  # a pinned stage seed pins its data


def test_order_trains_every_seed_on_the_same_examples(data_dir):
    from tasks import load_examples

    order = _plans(data_dir)
    drawn = [ex.example_id for ex in load_examples("toxigen_qa", "train", size=40, data_dir=data_dir, data_seed=0)]
    assert _ids(_by(order, "tqa_arc", 0), 1) == _ids(_by(order, "tqa_arc", 1), 1) == drawn


def test_replay_draws_from_the_trials_own_first_stage_subsample(data_dir):
    """Stage 2 replays round(0.1 × 40) = 4 examples of stage 1: under order_and_data from that
    trial's own stage-1 subsample, which differs between the seeds."""
    data = _plans(data_dir, seed_scope="order_and_data")
    for seed in (0, 1):
        plan = _by(data, "tqa_arc", seed)
        typed = TrialPlan.from_dict(plan)
        _, replayed = stage_examples(typed, typed.stages[1], typed.stages)
        assert len(replayed) == 4 and {ex.example_id for ex in replayed} <= set(_ids(plan, 1))


def test_trials_rows_record_the_training_subsample_seed():
    order, data = _by(_plans(), "fixed", 1), _by(_plans(seed_scope="order_and_data"), "fixed", 1)
    order, data = TrialPlan.from_dict(order), TrialPlan.from_dict(data)
    assert [trial_row(order, s, "function", status="pending")["train_data_seed"] for s in order.stages] == [0, 0]
    assert [trial_row(data, s, "function", status="pending")["train_data_seed"] for s in data.stages] == \
           [derived_data_seed(0, 7), derived_data_seed(0, 1)]


def test_preflight_reads_every_seeds_training_examples(data_dir):
    """order: toxigen_qa's 40 examples once; order_and_data: the union of the two seeds'
    subsamples (80 draws, fewer ids where they overlap), each example once."""
    from trainables.token_preflight import study_examples

    order = spec_from_dict(copy.deepcopy(BASE))
    data = spec_from_dict(copy.deepcopy(BASE) | {"seed_scope": "order_and_data"})
    assert study_examples(order, str(data_dir))["toxigen_qa"][2] == 40
    splits, examples, n_train = study_examples(data, str(data_dir))["toxigen_qa"]
    plans = _plans(data_dir, seed_scope="order_and_data")
    union = set(_ids(_by(plans, "tqa_arc", 0), 1)) | set(_ids(_by(plans, "tqa_arc", 1), 1))
    assert n_train == len(union) > 40
    assert {ex.example_id for ex in examples[:n_train]} == union


def test_a_chain_under_order_and_data_trains_and_measures_its_own_subsample(tiny_model_path, data_dir, tmp_path):
    """Two seeds of a one-stage chain: each trains on its own subsample of 16 (trials record the
    seed that drew it), and its curvature sample (sample_seed 0) comes from those 16."""
    import polars as pl

    from trainables.chain import run_chain

    spec = spec_from_dict({
        "name": "scoped", "model": {"name": "tiny", "max_length": 256}, "seed_scope": "order_and_data",
        "tasks": {"toxigen_qa": {"train_size": 16, "eval_size": 8}},
        "stage_defaults": {"learning_rate": 1e-3, "batch_size": 4, "steps": 1},
        "chains": {"c": [{"task": "toxigen_qa"}]}, "seeds": [0, 1], "data_dir": str(data_dir),
        "curvature": {"enabled": True, "n_samples": 4, "algorithms": ["power_iteration"], "max_iterations": 2},
    })
    plans = build_plans(spec, study_dir=tmp_path / "scoped", data_dir=str(data_dir), base_model_path=str(tiny_model_path),
                        chat=False)
    for plan in plans:
        run_chain(plan)
    plans = [p.to_dict() for p in plans]
    trials = pl.read_parquet(tmp_path / "scoped" / "trials" / "*.parquet").sort("seed")
    assert trials["train_data_seed"].to_list() == [derived_data_seed(0, 0), derived_data_seed(0, 1)]
    assert trials["n_train_examples"].to_list() == [16, 16] and trials["reused"].to_list() == [False, False]
    curvature = pl.read_parquet(tmp_path / "scoped" / "curvature" / "*.parquet")
    for plan in plans:
        [sample] = curvature.filter(pl.col("trial_id") == plan["trial_id"])["example_ids"].to_list()
        assert len(sample) == 4 and set(sample) <= set(_ids(plan, 1))
