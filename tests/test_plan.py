"""Trial plans: chains × grid points × seeds, content-addressed stage keys and trial ids."""

from __future__ import annotations

import copy
import json
import re

import pytest

from study.orchestrate import chat_format
from study.planner import build_plans
from study.points import grid_points
from study.spec_loading import spec_from_dict

BASE = {
    "name": "plan_test",
    "model": {"name": "tiny", "max_length": 128},
    "tasks": {"toxigen_qa": {"train_size": 40, "eval_size": 20}, "arc_easy": {"train_size": 30, "eval_size": 10}},
    "stage_defaults": {"learning_rate": 1e-3, "batch_size": 8, "steps": 5},
    "chains": {
        "tqa_arc": [{"task": "toxigen_qa"}, {"task": "arc_easy"}],
        "arc_tqa": [{"task": "arc_easy"}, {"task": "toxigen_qa"}],
    },
    "grid": {"stage2.learning_rate": [1e-4, 2e-4]},
    "seeds": [0, 1],
}


def _spec(**changes):
    raw = copy.deepcopy(BASE)
    for key, value in changes.items():
        raw[key] = value
    return spec_from_dict(raw)


def _plans(spec=None, *, study_dir="/tmp/study", data_dir=None):
    """The plans in their plans.json form (what these tests read)."""
    spec = spec or _spec()
    return [p.to_dict() for p in build_plans(spec, study_dir=study_dir, data_dir=data_dir, chat=chat_format(spec, None))]


def _by(plans, chain, seed, lr2=None):
    [plan] = [
        p for p in plans
        if p["chain"] == chain and p["seed"] == seed
        and (lr2 is None or p["grid_point"].get("stage2.learning_rate") == lr2)
    ]
    return plan


def _keys(plan):
    return [s["stage_key"] for s in plan["stages"]]


def test_chains_times_grid_times_seeds():
    plans = _plans()
    assert len(plans) == 2 * 2 * 2
    # Order: chains, then grid points, then seeds.
    assert [(p["chain"], p["grid_point"]["stage2.learning_rate"], p["seed"]) for p in plans] == [
        (c, lr, s) for c in ("tqa_arc", "arc_tqa") for lr in (1e-4, 2e-4) for s in (0, 1)
    ]


def test_trial_ids_are_unique_well_formed_and_deterministic():
    first = [p["trial_id"] for p in _plans()]
    again = [p["trial_id"] for p in _plans(_spec())]
    assert first == again
    assert len(set(first)) == len(first)
    for plan in _plans():
        assert re.fullmatch(rf"{plan['chain']}-{plan['seed']}-[0-9a-f]{{8}}", plan["trial_id"])


def test_plans_are_json_plain_data():
    plans = _plans()
    assert json.loads(json.dumps(plans)) == plans


def test_grid_value_is_applied_to_the_named_stage_only():
    for plan in _plans():
        lr2 = plan["grid_point"]["stage2.learning_rate"]
        first, second = plan["stages"]
        assert (first["stage"], second["stage"]) == (1, 2)
        assert second["learning_rate"] == lr2
        assert first["learning_rate"] == 1e-3  # stage_defaults, not the grid
        assert first["batch_size"] == second["batch_size"] == 8


def test_stage_fields_come_from_the_spec():
    plan = _by(_plans(), "tqa_arc", 1, 1e-4)
    first, second = plan["stages"]
    assert (first["task"], second["task"]) == ("toxigen_qa", "arc_easy")
    assert (first["train_size"], second["train_size"]) == (40, 30)
    assert first["seed"] == second["seed"] == 1
    assert first["method"] == "sft" and first["steps"] == 5
    # Defaults (no limit, score mode only) are left out, so studies not using them keep their keys.
    assert plan["eval_tasks"] == [{"task": "toxigen_qa", "size": 20, "version": "2"},
                                  {"task": "arc_easy", "size": 10, "version": "2"}]
    assert plan["generation"] is None  # nothing generates text
    assert plan["model"]["path"] == "tiny" and plan["model"]["max_length"] == 128


def test_base_model_path_goes_into_the_plan_model():
    [plan, *_] = [p.to_dict() for p in build_plans(_spec(), study_dir="/s", data_dir=None, base_model_path="/models/tiny",
                                                   chat=False)]
    assert plan["model"]["path"] == "/models/tiny"
    assert plan["model"]["name"] == "tiny"


def test_grid_on_stage2_shares_stage1_key():
    plans = _plans()
    a = _by(plans, "tqa_arc", 0, 1e-4)
    b = _by(plans, "tqa_arc", 0, 2e-4)
    assert _keys(a)[0] == _keys(b)[0]
    assert _keys(a)[1] != _keys(b)[1]
    assert a["trial_id"] != b["trial_id"]


def test_grid_on_stage1_changes_every_key():
    spec = _spec(grid={"stage1.learning_rate": [1e-4, 2e-4]})
    plans = _plans(spec)
    a, b = [p for p in plans if p["chain"] == "tqa_arc" and p["seed"] == 0]
    assert a["stages"][0]["learning_rate"] != b["stages"][0]["learning_rate"]
    assert _keys(a)[0] != _keys(b)[0]
    # Stage 2 is configured identically but its parent differs, so its key differs too.
    assert {k: v for k, v in a["stages"][1].items() if k != "stage_key"} == {
        k: v for k, v in b["stages"][1].items() if k != "stage_key"
    }
    assert _keys(a)[1] != _keys(b)[1]


def test_chains_sharing_a_prefix_share_its_key():
    spec = _spec(
        chains={
            "tqa_arc": [{"task": "toxigen_qa"}, {"task": "arc_easy"}],
            "tqa_tqa": [{"task": "toxigen_qa"}, {"task": "toxigen_qa"}],
            "arc_tqa": [{"task": "arc_easy"}, {"task": "toxigen_qa"}],
        }
    )
    plans = _plans(spec)
    x, y, z = (_by(plans, c, 0, 1e-4) for c in ("tqa_arc", "tqa_tqa", "arc_tqa"))
    assert _keys(x)[0] == _keys(y)[0]
    assert _keys(x)[1] != _keys(y)[1]
    assert _keys(x)[0] != _keys(z)[0]


def test_stage_keys_change_with_the_trial_seed():
    plans = _plans()
    a, b = _by(plans, "tqa_arc", 0, 1e-4), _by(plans, "tqa_arc", 1, 1e-4)
    assert _keys(a)[0] != _keys(b)[0]
    assert _keys(a)[1] != _keys(b)[1]


def test_fixed_stage_seed_ignores_trial_seed_but_ids_stay_unique():
    spec = _spec(chains={"tqa_arc": [{"task": "toxigen_qa", "seed": 7}, {"task": "arc_easy"}]})
    plans = _plans(spec)
    a, b = _by(plans, "tqa_arc", 0, 1e-4), _by(plans, "tqa_arc", 1, 1e-4)
    assert a["stages"][0]["seed"] == b["stages"][0]["seed"] == 7
    assert _keys(a)[0] == _keys(b)[0]
    assert _keys(a)[1] != _keys(b)[1]
    assert len({p["trial_id"] for p in plans}) == len(plans)


@pytest.mark.parametrize(
    "change",
    [
        {"model": {"name": "gpt2", "max_length": 128}},
        {"model": {"name": "tiny", "max_length": 256}},
        {"data_seed": 1},
        {"training": {"weight_decay": 0.0}},
        {"training": {"lr_scheduler": "linear"}},
        {"stage_defaults": {"learning_rate": 1e-3, "batch_size": 16, "steps": 5}},
        {"stage_defaults": {"learning_rate": 1e-3, "batch_size": 8, "steps": 6}},
        {"tasks": {"toxigen_qa": {"train_size": 41, "eval_size": 20}, "arc_easy": {"train_size": 30, "eval_size": 10}}},
    ],
    ids=["model_name", "max_length", "data_seed", "weight_decay", "scheduler", "batch_size", "steps", "train_size"],
)
def test_stage_keys_change_with_what_determines_weights(change):
    before = _by(_plans(), "tqa_arc", 0, 1e-4)
    after = _by(_plans(_spec(**change)), "tqa_arc", 0, 1e-4)
    assert _keys(before)[0] != _keys(after)[0]
    assert _keys(before)[1] != _keys(after)[1]
    assert before["trial_id"] != after["trial_id"]


def test_train_size_of_a_later_task_leaves_the_first_stage_key():
    tasks = copy.deepcopy(BASE["tasks"])
    tasks["arc_easy"]["train_size"] = 31
    before = _by(_plans(), "tqa_arc", 0, 1e-4)
    after = _by(_plans(_spec(tasks=tasks)), "tqa_arc", 0, 1e-4)
    assert _keys(before)[0] == _keys(after)[0]
    assert _keys(before)[1] != _keys(after)[1]


def test_data_source_enters_the_key():
    hub = _by(_plans(data_dir=None), "tqa_arc", 0, 1e-4)
    mirror = _by(_plans(data_dir="/data/mirror"), "tqa_arc", 0, 1e-4)
    assert _keys(hub)[0] != _keys(mirror)[0]
    assert mirror["data_dir"] == "/data/mirror" and hub["data_dir"] is None


def test_things_that_do_not_change_weights_leave_keys_alone():
    base = _plans()
    tasks = copy.deepcopy(BASE["tasks"])
    tasks["toxigen_qa"]["eval_size"] = 99
    renamed = _plans(_spec(name="other_name", tasks=tasks, execution={"cpus_per_trial": 2}))
    assert [p["trial_id"] for p in base] == [p["trial_id"] for p in renamed]
    assert [_keys(p) for p in base] == [_keys(p) for p in renamed]
    assert (renamed[0]["eval_tasks"][0]["task"], renamed[0]["eval_tasks"][0]["size"]) == ("toxigen_qa", 99)


def test_trial_id_does_not_depend_on_study_dir():
    a = _plans(study_dir="/results/one")
    b = _plans(study_dir="/elsewhere/two")
    assert [p["trial_id"] for p in a] == [p["trial_id"] for p in b]
    assert {p["study_dir"] for p in a} == {"/results/one"}
    assert {p["study_dir"] for p in b} == {"/elsewhere/two"}
    for pa, pb in zip(a, b):
        assert {**pa, "study_dir": None} == {**pb, "study_dir": None}


def test_grid_points_without_a_grid_and_with_two_axes():
    assert grid_points(_spec(grid={})) == [{}]
    assert len(_plans(_spec(grid={}))) == 2 * 2
    spec = _spec(grid={"stage2.steps": [3, 4, 5], "stage1.batch_size": [4, 8]})
    points = grid_points(spec)
    assert len(points) == 6
    assert points[0] == {"stage1.batch_size": 4, "stage2.steps": 3}  # axes in sorted order
    assert len({tuple(sorted(p.items())) for p in points}) == 6
    plans = _plans(spec)
    assert len(plans) == 2 * 6 * 2
    assert len({p["trial_id"] for p in plans}) == len(plans)
    for plan in plans:
        assert plan["stages"][0]["batch_size"] == plan["grid_point"]["stage1.batch_size"]
        assert plan["stages"][1]["steps"] == plan["grid_point"]["stage2.steps"]
        assert plan["stages"][1]["batch_size"] == 8


def test_chat_format_is_resolved_into_the_plan_and_keys_change_only_when_it_is_on(family_model_path):
    """model.chat_template: auto resolves from the tokenizer and the model name; plain text (any
    base model, the tiny one included) leaves stage keys as they were before the option existed."""
    chat_path = str(family_model_path("chat"))  # folder chat-instruct-<hash>: a template and an instruct name
    base_path = str(family_model_path("bosless"))
    keys = {}
    for label, path, setting in (("auto-chat", chat_path, "auto"), ("off-chat", chat_path, False),
                                 ("auto-base", base_path, "auto")):
        plans = _plans(_spec(model={"name": path, "max_length": 128, "chat_template": setting}))
        assert {p["model"]["chat"] for p in plans} == {label == "auto-chat"}
        keys[label] = [s["stage_key"] for p in plans for s in p["stages"]]
    assert not set(keys["auto-chat"]) & set(keys["off-chat"])  # the prompt format changes what is trained
    # Off, the identity holds neither the setting nor the format: keys as before the option existed.
    from study.planner import base_identity

    off_spec = _spec(model={"name": chat_path, "max_length": 128, "chat_template": False})
    on_spec = _spec(model={"name": chat_path, "max_length": 128})
    off = base_identity(off_spec, None, chat_path, chat_format(off_spec, chat_path))
    on = base_identity(on_spec, None, chat_path, chat_format(on_spec, chat_path))
    assert "chat" not in off["model"] and "chat_template" not in off["model"]
    assert on["model"]["chat"] is True and {k: v for k, v in on["model"].items() if k != "chat"} == off["model"]
    assert {p["model"]["chat"] for p in _plans()} == {False}  # the tiny model: auto is plain text


def test_chat_template_true_without_a_template_fails_at_planning(family_model_path):
    from contract.problems import TokenizationError

    path = str(family_model_path("bosless"))
    with pytest.raises(TokenizationError, match="has no chat template"):
        _plans(_spec(model={"name": path, "max_length": 128, "chat_template": True}))


def test_option_counts_enter_stage_and_eval_keys_only_when_they_differ_from_the_default():
    """ARC keeps four-option questions by default: a study keeping all of them ([3, 4, 5])
    never shares an ARC stage (or its later stages) with one keeping the default, while writing
    the default out ([4]) changes nothing. A ToxiGenQA-first stage is untouched."""
    tasks = copy.deepcopy(BASE["tasks"])
    default = _by(_plans(), "arc_tqa", 0, 1e-4)
    spelled = _by(_plans(_spec(tasks={**tasks, "arc_easy": {**tasks["arc_easy"], "option_counts": [4]}})),
                  "arc_tqa", 0, 1e-4)
    every = _by(_plans(_spec(tasks={**tasks, "arc_easy": {**tasks["arc_easy"], "option_counts": [5, 3, 4]}})),
                "arc_tqa", 0, 1e-4)
    assert _keys(spelled) == _keys(default) and spelled["eval_tasks"] == default["eval_tasks"]
    assert "option_counts" not in default["stages"][0]
    assert every["stages"][0]["option_counts"] == [3, 4, 5]
    assert all(a != b for a, b in zip(_keys(every), _keys(default)))
    arc_eval = next(e for e in every["eval_tasks"] if e["task"] == "arc_easy")
    assert arc_eval["option_counts"] == [3, 4, 5]
    tqa_first = _by(_plans(_spec(tasks={**tasks, "arc_easy": {**tasks["arc_easy"], "option_counts": [3, 4, 5]}})),
                    "tqa_arc", 0, 1e-4)
    assert _keys(tqa_first)[0] == _keys(_by(_plans(), "tqa_arc", 0, 1e-4))[0]


def test_best_seed_stage_names_its_validation_split():
    spec = _spec(chains={"c": [{"task": "toxigen_qa"}, {"task": "arc_easy", "start_from": "best_seed",
                                                        "selection_size": 16}]}, grid={})
    start = _plans(spec)[0]["stages"][1]["start_from"]
    assert (start["mode"], start["validation_split"], start["validation_size"]) == ("best_seed", "validation", 16)


def test_reward_key_records_the_reward_data_and_the_text_input_version(monkeypatch):
    """A trained reward model's data and a text-reading reward model's input enter the stage
    key, so stages trained on the earlier data or scored on the earlier input are not reused."""
    import types

    import study.planner as planner
    from contract.plan import REWARD_INPUT_VERSION
    from study.spec import RewardSpec
    from tasks import reward_sources as reward_data

    # The reward's key form (RewardPlan.to_dict of what the planner builds), under the name below.
    plan = types.SimpleNamespace(reward_key=lambda method, reward, task, prompts: planner.reward_plan(
        method, RewardSpec(**reward), task, prompts).to_dict())
    trained = {"model": None, "steps": 5, "learning_rate": 1e-3, "batch_size": 8}
    settings = {"steps": 5, "learning_rate": 1e-3, "batch_size": 8}
    assert plan.reward_key("ppo", trained, "toxigen_qa", "statements") == {
        "train": {**settings, "data": "toxigen_statements"}}
    assert plan.reward_key("ppo", trained, "toxigen_qa", "templated") == {"train": settings}
    assert plan.reward_key("ppo", trained, "arc_easy", "statements") == {"train": settings}
    assert plan.reward_key("rloo", trained, "arc_easy", "statements") == {"train": settings,
                                                                          "input": REWARD_INPUT_VERSION}
    named = {**trained, "model": "org/rm"}
    assert plan.reward_key("ppo", named, "toxigen_qa", "statements") == {"model": "org/rm",
                                                                         "input": REWARD_INPUT_VERSION}

    chain = {"ppo_arc": [{"task": "toxigen_qa", "method": "ppo"}, {"task": "arc_easy"}]}
    spec = _spec(chains=chain, grid={})
    now = _keys(_plans(spec)[0])
    monkeypatch.setattr(reward_data, "reward_data", lambda task, prompts: reward_data.QA_PAIRS)
    assert _keys(_plans(spec)[0])[0] != now[0]  # the QA-pair reward data of earlier versions
