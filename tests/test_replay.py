"""Replay mixes exactly fraction × size examples, only from the named earlier stage, by seed."""

from __future__ import annotations

import polars as pl

from study.planner import build_plans
from study.spec_loading import spec_from_dict
from trainables.replay import replay_count, replay_sample
from tasks import load_examples


def test_replay_sample_is_exact_deterministic_and_a_subset(data_dir):
    """5% of 800 = 40; 2.5% of 100 = 2.5 → round half to even = 2; 0 → none."""
    source = load_examples("toxigen_qa", "train", size=800, data_dir=data_dir)
    picked = replay_sample(source, 0.05, seed=3)
    assert len(picked) == 40 and len({e.example_id for e in picked}) == 40
    assert {e.example_id for e in picked} <= {e.example_id for e in source}
    assert [e.example_id for e in replay_sample(source, 0.05, seed=3)] == [e.example_id for e in picked]
    assert [e.example_id for e in replay_sample(source, 0.05, seed=4)] != [e.example_id for e in picked]
    assert replay_count(0.025, 100) == 2 and replay_sample(source, 0.0, seed=3) == []


def test_chain_mixes_and_records_replay_from_the_named_stage_only(tiny_model_path, data_dir, tmp_path):
    """Three stages toxigen_qa → arc_easy → replay: stage 3 replays 25% of stage 1's 40 examples = 10,
    all ToxiGenQA ids (none from stage 2's ARC set), recorded in the replay table; with only: true it
    trains on those 10 alone (replay as its own short stage; mixing is covered end to end)."""
    from trainables.chain import run_chain

    spec = spec_from_dict({
        "name": "replay", "model": {"name": "tiny", "max_length": 256},
        "tasks": {"toxigen_qa": {"train_size": 40, "eval_size": 8}, "arc_easy": {"train_size": 24, "eval_size": 8}},
        "stage_defaults": {"learning_rate": 1e-3, "batch_size": 4, "steps": 2},
        "chains": {"c": [{"task": "toxigen_qa"}, {"task": "arc_easy"},
                         {"task": "arc_easy", "method": "dpo", "seed": 7,
                          "replay": {"from_stage": 1, "fraction": 0.25, "only": True}}]},
        "data_dir": str(data_dir),
    })
    plan = build_plans(spec, study_dir=tmp_path / "replay", data_dir=str(data_dir), base_model_path=str(tiny_model_path),
                       chat=False)[0]
    run_chain(plan)
    replay = pl.read_parquet(tmp_path / "replay" / "replay" / "*.parquet")
    stage1 = {e.example_id for e in load_examples("toxigen_qa", "train", size=40, data_dir=data_dir)}
    assert replay.height == 10 and set(replay["stage"]) == {3} and set(replay["from_stage"]) == {1}
    assert set(replay["example_id"]) <= stage1
    trials = pl.read_parquet(tmp_path / "replay" / "trials" / "*.parquet").sort("stage")
    assert trials["n_train_examples"].to_list() == [40, 24, 10]  # only the 10 replayed
    assert trials["method_settings"].to_list() == ["{}", "{}", '{"beta": 0.1, "reference": "stage_start"}']
    assert trials["replay_fraction"].to_list() == [None, None, 0.25]
    # Three stages: every earlier task is evaluated after every later stage.
    evals = pl.read_parquet(tmp_path / "replay" / "evals" / "*.parquet").filter(pl.col("group") == "all")
    assert sorted(evals["stage"].unique()) == [0, 1, 2, 3] and evals.height == 4 * 2
