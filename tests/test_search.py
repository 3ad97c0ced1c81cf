"""Optuna search in study specs: validation, plans of sampled points, the searcher, a real Tune run.

Fast tier: the spec, plans and `ChainOptunaSearch` driven directly (suggest / on_trial_complete,
as Tune calls them). Slow tier: real Optuna searches through Ray Tune on the local cluster, with a
trivial function trainable that reports known functions of the sampled learning rate.
"""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import yaml

from study.planner import SampledPlans, build_plans, collect_plans, plan_for_config
from study.spec import study_dir
from study.spec_loading import SpecError, load_spec_file, spec_from_dict

TWO_STAGE = {"tqa_arc": [{"task": "toxigen_qa"}, {"task": "arc_easy"}], "arc_tqa": [{"task": "arc_easy"}, {"task": "toxigen_qa"}]}
BASE = {
    "name": "search_test",
    "model": {"name": "tiny", "max_length": 128},
    "tasks": {"toxigen_qa": {"train_size": 40, "eval_size": 20}, "arc_easy": {"train_size": 30, "eval_size": 10}},
    "stage_defaults": {"learning_rate": 1e-3, "batch_size": 8, "steps": 5},
    "chains": TWO_STAGE,
    "seeds": [0, 1],
    "search": {
        "algorithm": "optuna",
        "num_samples": 4,
        "seed": 0,
        "space": {"stage2.learning_rate": {"loguniform": [1.0e-5, 1.0e-3]}, "stage1.batch_size": {"choice": [8, 16]}},
        "objectives": [{"metric": "arc_easy/accuracy", "mode": "max"}, {"metric": "wg_forgetting/toxigen_qa", "mode": "min"}],
    },
}

STUDY_FILE = """\
name: search_test
model: tiny
chains:
  tqa_arc: [{task: toxigen_qa}, {task: arc_easy}]
  arc_tqa: [{task: arc_easy}, {task: toxigen_qa}]
seeds: [0, 1]
search:
  algorithm: optuna
  num_samples: 8
  seed: 0
  space:
    stage2.learning_rate: {loguniform: [1.0e-5, 1.0e-3]}
    stage1.batch_size: {choice: [8, 16]}
  objectives:
    - {metric: arc_easy/accuracy, mode: max}
    - {metric: wg_forgetting/toxigen_qa, mode: min}
"""


def _raw(**search_changes) -> dict:
    raw = copy.deepcopy(BASE)
    raw["search"].update(search_changes)
    return raw


def _problems(tmp_path, text: str) -> list:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec_file(path)
    rendered = str(info.value)
    for p in info.value.problems:  # every problem renders as file:line: path: message
        assert f"{path}:{p.line}: {p.path}: {p.message}" in rendered
    return info.value.problems


# ---------------------------------------------------------------- spec


def test_study_file_with_search_loads_and_round_trips(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(STUDY_FILE)
    spec = load_spec_file(path)
    assert spec.search.num_samples == 8 and spec.search.seed == 0 and spec.search.algorithm == "optuna"
    assert spec.search.space == {"stage2.learning_rate": {"loguniform": (1e-5, 1e-3)}, "stage1.batch_size": {"choice": (8, 16)}}
    assert [(o.metric, o.mode) for o in spec.search.objectives] == [("arc_easy/accuracy", "max"), ("wg_forgetting/toxigen_qa", "min")]
    assert spec.grid == {}
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(spec.to_dict()))
    assert load_spec_file(again) == spec
    # A study without `search:` has none.
    assert spec_from_dict({"name": "g", "chains": TWO_STAGE}).search is None


def test_nested_space_form_yaml_exponent_strings_and_overrides(tmp_path):
    nested = _raw(space={"stage2": {"learning_rate": {"loguniform": ["1e-5", "1e-3"]}}, "stage1.batch_size": {"choice": [8, 16]}})
    assert spec_from_dict(nested) == spec_from_dict(_raw())
    path = tmp_path / "s.yaml"
    path.write_text(STUDY_FILE)
    spec = load_spec_file(path, ["search.space.stage2.learning_rate={uniform: [1e-4, 2e-4]}", "search.num_samples=3"])
    assert spec.search.space["stage2.learning_rate"] == {"uniform": (1e-4, 2e-4)}
    assert spec.search.num_samples == 3


# (study file text, field path, message fragment, line)
SEARCH_HEAD = "name: s\nmodel: tiny\nchains:\n  tqa_arc: [{task: toxigen_qa}, {task: arc_easy, replay: {from_stage: 1, fraction: 0.05}}]\n"
OBJECTIVE = "  objectives: [{metric: arc_easy/accuracy, mode: max}]\n"


def _search(space: str, objectives: str = OBJECTIVE, extra: str = "") -> str:
    return SEARCH_HEAD + extra + "search:\n  space:\n" + space + objectives


BAD = [
    pytest.param(SEARCH_HEAD + "search:\n  algorithm: hyperopt\n  space: {stage2.learning_rate: {uniform: [1.0e-5, 1.0e-4]}}\n" + OBJECTIVE,
                 "search.algorithm", "must be one of 'optuna' (got 'hyperopt')", 6, id="unknown_algorithm"),
    pytest.param(_search("    stage2.learning_rate: {loguniform: [0, 1.0e-3]}\n"),
                 "search.space.stage2.learning_rate.loguniform", "loguniform needs 0 < low", 7, id="loguniform_zero_low"),
    pytest.param(_search("    stage2.learning_rate: {uniform: [1.0e-3, 1.0e-5]}\n"),
                 "search.space.stage2.learning_rate.uniform", "low must be < high (got [0.001, 1e-05])", 7, id="bounds_reversed"),
    pytest.param(_search("    stage2.learning_rate: {uniform: [1.0e-5]}\n"),
                 "search.space.stage2.learning_rate.uniform", "must be [low, high], two numbers", 7, id="one_bound"),
    pytest.param(_search("    stage2.replay_fraction: {uniform: [0.0, 1.0]}\n"),
                 "search.space.stage2.replay_fraction.uniform", "replay fractions must be in [0, 1)", 7, id="replay_one"),
    pytest.param(_search("    stage2.replay_fraction: {uniform: [-0.1, 0.2]}\n"),
                 "search.space.stage2.replay_fraction.uniform", "replay fractions must be in [0, 1)", 7, id="replay_negative"),
    pytest.param(_search("    stage1.replay_fraction: {uniform: [0.0, 0.2]}\n"),
                 "search.space.stage1.replay_fraction", "stage 1 has no replay to sweep in chain(s) tqa_arc", 7, id="replay_missing"),
    pytest.param(_search("    stage2.learning_rate: {logunifrom: [1.0e-5, 1.0e-3]}\n"),
                 "search.space.stage2.learning_rate.logunifrom", "did you mean 'loguniform'?", 7, id="distribution_typo"),
    pytest.param(_search("    stage1.batch_size: {loguniform: [8, 64]}\n"),
                 "search.space.stage1.batch_size.loguniform", "batch_size is an integer: use {int: [low, high]}", 7, id="int_field_float_dist"),
    pytest.param(_search("    stage1.learning_rate: {int: [1, 3]}\n"),
                 "search.space.stage1.learning_rate.int", "learning_rate is a number", 7, id="float_field_int_dist"),
    pytest.param(_search("    stage1.steps: {int: [0, 3]}\n"),
                 "search.space.stage1.steps.int", "steps must be ≥ 1 (got low 0)", 7, id="int_low_zero"),
    pytest.param(_search("    stage1.batch_size: {choice: [8, big]}\n"),
                 "search.space.stage1.batch_size.choice[1]", "must be an integer ≥ 1 (got 'big')", 7, id="choice_value"),
    pytest.param(_search("    stage1.batch_size: {choice: [8, 8]}\n"),
                 "search.space.stage1.batch_size.choice", "choice values must be distinct", 7, id="choice_duplicate"),
    pytest.param(_search("    stage1.batch_size: {choice: []}\n"),
                 "search.space.stage1.batch_size.choice", "a choice needs at least one value", 7, id="choice_empty"),
    pytest.param(_search("    stage1.batch_size: [8, 16]\n"),
                 "search.space.stage1.batch_size", "must be one distribution such as {choice: [8, 16]}", 7, id="plain_list"),
    pytest.param(_search("    stage1.lr: {uniform: [1.0e-5, 1.0e-4]}\n"),
                 "search.space.stage1.lr", "search space keys look like 'stage<k>.<field>'", 7, id="bad_key"),
    pytest.param(_search("    stage3.learning_rate: {uniform: [1.0e-5, 1.0e-4]}\n"),
                 "search.space.stage3.learning_rate", "stage 3 does not exist in every chain", 7, id="stage_beyond"),
    pytest.param(_search("    stage1.learning_rate: {uniform: [1.0e-5, 1.0e-4], choice: [1.0e-5]}\n"),
                 "search.space.stage1.learning_rate", "must be exactly one distribution", 7, id="two_distributions"),
    pytest.param(_search("    stage1.learning_rate: {uniform: [1.0e-5, 1.0e-4]}\n", extra="grid: {stage1.learning_rate: [1.0e-4]}\n"),
                 "search.space.stage1.learning_rate", "is also a grid axis (grid.stage1.learning_rate)", 8, id="axis_in_grid_too"),
    pytest.param(_search("    stage1.learning_rate: {uniform: [1.0e-5, 1.0e-4]}\n", extra="grid: {stage2.steps: [3, 4]}\n"),
                 "grid", "a study with `search` cannot also have a grid", 5, id="grid_beside_search"),
    pytest.param(_search("    stage1.learning_rate: {uniform: [1.0e-5, 1.0e-4]}\n", "  objectives: [{metric: arc_easy/acuracy, mode: max}]\n"),
                 "search.objectives[0].metric", "unknown metric 'arc_easy/acuracy'; did you mean 'arc_easy/accuracy'?", 8, id="metric_typo"),
    pytest.param(_search("    stage1.learning_rate: {uniform: [1.0e-5, 1.0e-4]}\n", "  objectives: [{metric: arc_easy/accuracy, mode: maximize}]\n"),
                 "search.objectives[0].mode", "must be one of 'max', 'min' (got 'maximize')", 8, id="mode"),
    pytest.param(_search("    stage1.learning_rate: {uniform: [1.0e-5, 1.0e-4]}\n", "  objectives: [{metric: arc_easy/accuracy}]\n"),
                 "search.objectives[0].mode", "required field is missing", 8, id="mode_missing"),
    pytest.param(_search("    stage1.learning_rate: {uniform: [1.0e-5, 1.0e-4]}\n", "  objectives: []\n"),
                 "search.objectives", "at least one objective is required", 8, id="no_objective"),
    pytest.param(_search("    stage1.learning_rate: {uniform: [1.0e-5, 1.0e-4]}\n",
                         "  objectives:\n    - {metric: arc_easy/accuracy, mode: max}\n    - {metric: arc_easy/accuracy, mode: min}\n"),
                 "search.objectives[1].metric", "metric 'arc_easy/accuracy' is already an objective", 10, id="duplicate_objective"),
    pytest.param(_search("    stage1.learning_rate: {uniform: [1.0e-5, 1.0e-4]}\n", "  objectives: [{metric: forgetting/gsm8k, mode: min}]\n"),
                 "search.objectives[0].metric", "no chain trains 'gsm8k'", 8, id="forgetting_unknown_task"),
    pytest.param(_search("    stage1.learning_rate: {uniform: [1.0e-5, 1.0e-4]}\n", "  num_samples: 0\n" + OBJECTIVE),
                 "search.num_samples", "must be ≥ 1 (got 0)", 8, id="num_samples"),
    pytest.param(_search("    stage1.learning_rate: {uniform: [1.0e-5, 1.0e-4]}\n", "  seed: -1\n" + OBJECTIVE),
                 "search.seed", "must be in [0, 2**32) (got -1)", 8, id="sampler_seed"),
    pytest.param(SEARCH_HEAD + "search:\n  space: {}\n" + OBJECTIVE,
                 "search.space", "at least one axis is required", 6, id="empty_space"),
]


@pytest.mark.parametrize(("text", "path", "fragment", "line"), BAD)
def test_bad_search_is_reported_with_file_line_path_and_message(tmp_path, text, path, fragment, line):
    problems = _problems(tmp_path, text)
    matching = [p for p in problems if p.path == path and fragment in p.message]
    assert matching, [(p.path, p.message) for p in problems]
    assert matching[0].line == line
    assert len(problems) == 1, [(p.path, p.message) for p in problems]  # no follow-up noise


def test_every_search_problem_is_reported_at_once(tmp_path):
    text = SEARCH_HEAD + (
        "grid: {stage1.learning_rate: [1.0e-4]}\n"                    # 5
        "search:\n"                                                   # 6
        "  algorithm: optuna\n"                                       # 7
        "  num_samples: 0\n"                                          # 8
        "  space:\n"                                                  # 9
        "    stage1.learning_rate: {uniform: [1.0e-5, 1.0e-4]}\n"     # 10
        "    stage2.learning_rate: {loguniform: [0, 1.0e-3]}\n"       # 11
        "    stage1.batch_size: {choice: [8, 0]}\n"                   # 12
        "  objectives:\n"                                             # 13
        "    - {metric: arc_easy/acc, mode: max}\n"                   # 14
        "    - {metric: wg_forgetting/toxigen_qa, mode: min}\n"       # 15
    )
    problems = _problems(tmp_path, text)
    assert {(p.path, p.line) for p in problems} == {
        ("search.num_samples", 8),
        ("search.space.stage1.learning_rate", 10),
        ("search.space.stage2.learning_rate.loguniform", 11),
        ("search.space.stage1.batch_size.choice[1]", 12),
        ("search.objectives[0].metric", 14),
    }


@pytest.mark.parametrize(("metric", "fragment"), [
    ("toxigen_qa/accuracy", "toxigen_qa is not an eval task of this study (eval tasks: arc_easy)"),
    ("forgetting/arc_easy", "chain(s) tqa_only never train arc_easy, so they do not report forgetting/arc_easy"),
    ("stage_number", "unknown metric 'stage_number'"),
])
def test_objective_metrics_must_be_reported_by_every_trial(metric, fragment):
    raw = {"name": "m", "chains": {"tqa_arc": TWO_STAGE["tqa_arc"], "tqa_only": [{"task": "toxigen_qa"}]},
           "eval_tasks": ["arc_easy"],
           "search": {"space": {"stage1.learning_rate": {"uniform": [1e-5, 1e-4]}},
                      "objectives": [{"metric": metric, "mode": "min"}]}}
    with pytest.raises(SpecError) as info:
        spec_from_dict(raw)
    assert [p.path for p in info.value.problems] == ["search.objectives[0].metric"]
    assert fragment in info.value.problems[0].message
    # The metrics every trial does report are accepted.
    raw["eval_tasks"] = ["arc_easy", "toxigen_qa"]
    for good in ("stage", "arc_easy/accuracy", "toxigen_qa/accuracy", "forgetting/toxigen_qa",
                 "wg_forgetting/toxigen_qa", "biased_forgetting/toxigen_qa"):
        raw["search"]["objectives"] = [{"metric": good, "mode": "min"}]
        assert spec_from_dict(raw).search.objectives[0].metric == good


def test_forgetting_objective_needs_the_task_evaluated():
    """Trials report forgetting only of tasks they evaluate (trainables.trial_reports.forgetting_metrics)."""
    from study.spec_checks_axes import objective_metrics

    raw = {"name": "m", "chains": {"tqa_arc": TWO_STAGE["tqa_arc"]}, "eval_tasks": ["arc_easy"],
           "search": {"space": {"stage1.learning_rate": {"uniform": [1e-5, 1e-4]}},
                      "objectives": [{"metric": "wg_forgetting/toxigen_qa", "mode": "min"}]}}
    with pytest.raises(SpecError) as info:
        spec_from_dict(raw)
    [problem] = info.value.problems
    assert "toxigen_qa is not an eval task of this study, so its forgetting is not measured" in problem.message
    spec = spec_from_dict({**raw, "eval_tasks": []})  # default: every chain task is evaluated
    assert objective_metrics(spec) == (
        "stage", "toxigen_qa/accuracy", "arc_easy/accuracy",
        "forgetting/toxigen_qa", "wg_forgetting/toxigen_qa", "biased_forgetting/toxigen_qa",
        "forgetting/arc_easy", "wg_forgetting/arc_easy", "biased_forgetting/arc_easy")


# ---------------------------------------------------------------- name, storage, trust_remote_code


def test_a_name_that_climbs_out_of_storage_is_rejected_with_its_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("model: tiny\nname: ../x\nchains:\n  a: [{task: arc_easy}]\n")
    with pytest.raises(SpecError) as info:
        load_spec_file(path)
    [problem] = info.value.problems
    assert (problem.path, problem.line) == ("name", 2)
    assert "starting with a letter or digit" in problem.message and "'../x'" in problem.message
    for bad in ("..", ".hidden", "a/b", "/abs", "x\\..\\y", ""):
        with pytest.raises(SpecError, match="name: must be letters, digits"):
            spec_from_dict({"name": bad, "chains": {"a": [{"task": "arc_easy"}]}, "storage": str(tmp_path)})
    assert spec_from_dict({"name": "ok-1.v2_x", "chains": {"a": [{"task": "arc_easy"}]}}).name == "ok-1.v2_x"


def test_study_folder_must_resolve_inside_storage(tmp_path):
    storage, outside = tmp_path / "results", tmp_path / "elsewhere"
    storage.mkdir()
    outside.mkdir()
    raw = {"name": "linked", "chains": {"a": [{"task": "arc_easy"}]}, "storage": str(storage)}
    assert study_dir(spec_from_dict(raw)) == storage.resolve() / "linked"
    (storage / "linked").symlink_to(outside)  # an existing link would send every write elsewhere
    with pytest.raises(SpecError) as info:
        spec_from_dict(raw)
    [problem] = info.value.problems
    assert problem.path == "name" and f"resolves to {outside.resolve()}, outside storage {storage.resolve()}" in problem.message
    # Storage itself may be any path, a link included.
    (tmp_path / "storage_link").symlink_to(outside)
    spec = spec_from_dict({**raw, "storage": str(tmp_path / "storage_link")})
    assert study_dir(spec) == outside.resolve() / "linked"


def test_trust_remote_code_defaults_off_reaches_the_plan_and_keys_only_when_on():
    from study.planner import base_identity

    raw = {"name": "t", "chains": {"a": [{"task": "arc_easy"}]}, "model": {"name": "org/model"}}
    off = spec_from_dict(raw)
    on = spec_from_dict({**raw, "model": {"name": "org/model", "trust_remote_code": True}})
    assert off.model.trust_remote_code is False
    [plan_off] = [p.to_dict() for p in build_plans(off, study_dir="/s", data_dir=None, chat=False)]
    [plan_on] = [p.to_dict() for p in build_plans(on, study_dir="/s", data_dir=None, chat=False)]
    assert plan_off["model"]["trust_remote_code"] is False and plan_on["model"]["trust_remote_code"] is True
    # Off (the default) leaves the identity, hence every existing stage key, as before the field.
    assert "trust_remote_code" not in base_identity(off, None, None, False)["model"]
    assert base_identity(on, None, None, False)["model"]["trust_remote_code"] is True
    assert plan_off["stages"][0]["stage_key"] != plan_on["stages"][0]["stage_key"]
    with pytest.raises(SpecError, match="model.trust_remote_code: must be true or false"):
        spec_from_dict({**raw, "model": {"name": "org/model", "trust_remote_code": "yes"}})


# ---------------------------------------------------------------- plans of sampled points


def test_plan_for_config_equals_build_plans_for_every_grid_point():
    raw = {k: v for k, v in copy.deepcopy(BASE).items() if k != "search"}
    spec = spec_from_dict({**raw, "grid": {"stage2.learning_rate": [1e-4, 2e-4], "stage1.batch_size": [8, 16]}})
    plans = build_plans(spec, study_dir="/s", data_dir="/d", base_model_path="/m/tiny-abc", chat=False)
    assert len(plans) == 2 * 4 * 2
    for plan in plans:
        config = {"chain": plan.chain, "seed": plan.seed, **plan.grid_point}
        assert plan_for_config(spec, config, study_dir="/s", data_dir="/d", base_model_path="/m/tiny-abc",
                               chat=False) == plan
        assert SampledPlans(spec, "/s", "/d", "/m/tiny-abc", chat=False)(config) == plan


def test_sampled_plans_match_the_grid_plan_of_the_same_point_and_round_stably():
    search_spec = spec_from_dict(_raw())
    grid_raw = {k: v for k, v in _raw().items() if k != "search"}
    grid_spec = spec_from_dict({**grid_raw, "grid": {"stage2.learning_rate": [1.23457e-4], "stage1.batch_size": [16]}})
    [grid_plan] = [p.to_dict() for p in build_plans(grid_spec, study_dir="/s", data_dir=None, chat=False)
                   if p.chain == "arc_tqa" and p.seed == 1]
    sampled = SampledPlans(search_spec.to_dict(), "/s", None, chat=False)

    def plan_for(config):
        return sampled(config).to_dict()

    # What Optuna samples has ~17 digits; the trial runs (and is identified by) 6 of them.
    for lr in (1.2345678e-4, 1.23457e-4, 1.234566e-4):
        plan = plan_for({"chain": "arc_tqa", "seed": 1, "stage2.learning_rate": lr, "stage1.batch_size": 16.0})
        assert plan["trial_id"] == grid_plan["trial_id"]
        assert [s["stage_key"] for s in plan["stages"]] == [s["stage_key"] for s in grid_plan["stages"]]
        assert plan["grid_point"] == {"stage1.batch_size": 16, "stage2.learning_rate": 1.23457e-4}
        assert plan["stages"][1]["learning_rate"] == 1.23457e-4 and plan["stages"][0]["batch_size"] == 16
    other = plan_for({"chain": "arc_tqa", "seed": 1, "stage2.learning_rate": 1.2346e-4, "stage1.batch_size": 16})
    assert other["trial_id"] != grid_plan["trial_id"]
    # Picklable for Tune (it travels to every trial) and the same after the trip.
    again = pickle.loads(pickle.dumps(sampled))
    config = {"chain": "arc_tqa", "seed": 1, "stage2.learning_rate": 1.2345678e-4, "stage1.batch_size": 16}
    assert again(config).to_dict() == plan


@pytest.mark.parametrize(("config", "fragment"), [
    ({"chain": "nope", "seed": 0, "stage2.learning_rate": 1e-4, "stage1.batch_size": 8}, "names no chain"),
    ({"chain": "tqa_arc", "seed": 5, "stage2.learning_rate": 1e-4, "stage1.batch_size": 8}, "names no seed"),
    ({"chain": "tqa_arc", "seed": 0, "stage2.learning_rate": 1e-4}, "does not name the study's axes"),
])
def test_a_config_outside_the_study_has_no_plan(config, fragment):
    with pytest.raises(KeyError, match=fragment):
        SampledPlans(spec_from_dict(_raw()), "/s", None, chat=False)(config)


def test_collect_plans_keeps_each_trial_once_in_order():
    plan_for = SampledPlans(spec_from_dict(_raw()), "/s", None, chat=False)
    a = {"chain": "tqa_arc", "seed": 0, "stage2.learning_rate": 1e-4, "stage1.batch_size": 8}
    b = {**a, "seed": 1}
    plans = collect_plans([a, None, b, {**a, "stage2.learning_rate": 1.0000001e-4}], plan_for)
    assert [p.trial_id for p in plans] == [plan_for(a).trial_id, plan_for(b).trial_id]
    assert [p.seed for p in plans] == [0, 1]


# ---------------------------------------------------------------- search_setup


def test_search_setup_of_a_grid_study_is_tunes_grid():
    raw = {k: v for k, v in copy.deepcopy(BASE).items() if k != "search"}
    spec = spec_from_dict({**raw, "grid": {"stage2.learning_rate": [1e-4, 2e-4], "stage1.batch_size": [8, 16]}})
    from study.search import search_setup

    setup = search_setup(spec)
    assert setup.param_space == {
        "chain": {"grid_search": ["tqa_arc", "arc_tqa"]},
        "seed": {"grid_search": [0, 1]},
        "stage1.batch_size": {"grid_search": [8, 16]},
        "stage2.learning_rate": {"grid_search": [1e-4, 2e-4]},
    }
    assert (setup.search_alg, setup.num_samples, setup.metric, setup.mode) == (None, 1, None, None)
    assert setup.tune_config_kwargs() == {"search_alg": None, "num_samples": 1, "metric": None, "mode": None}


def test_search_setup_of_an_optuna_study():
    import optuna
    from ray.tune.search import Searcher
    from ray.tune.search.optuna import OptunaSearch

    from study.search import ChainOptunaSearch, search_setup

    setup = search_setup(spec_from_dict(_raw()))
    assert isinstance(setup.search_alg, ChainOptunaSearch) and isinstance(setup.search_alg, Searcher)
    assert setup.num_samples == 4 * 2 * 2  # points per chain × chains × seeds
    assert (setup.metric, setup.mode) == (None, None)  # multi-objective: metrics live in the searcher
    assert setup.search_alg.metric == ["arc_easy/accuracy", "wg_forgetting/toxigen_qa"]
    assert setup.search_alg.mode == ["max", "min"]
    space = setup.param_space
    assert space["chain"] == {"grid_search": ["tqa_arc", "arc_tqa"]} and space["seed"] == {"grid_search": [0, 1]}
    # What Optuna sees of the Tune domains.
    assert OptunaSearch.convert_search_space({k: v for k, v in space.items() if k.startswith("stage")}) == {
        "stage2.learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True),
        "stage1.batch_size": optuna.distributions.CategoricalDistribution([8, 16]),
    }
    single = search_setup(spec_from_dict(_raw(objectives=[{"metric": "stage", "mode": "max"}],
                                              space={"stage1.steps": {"int": [2, 4]}})))
    assert (single.metric, single.mode, single.search_alg.metric) == ("stage", "max", "stage")
    # {int: [2, 4]} includes both ends (Tune's randint(2, 5) excludes 5).
    assert OptunaSearch.convert_search_space({"s": single.param_space["stage1.steps"]}) == {
        "s": optuna.distributions.IntDistribution(2, 4)}


# ---------------------------------------------------------------- the searcher, driven as Tune does


def _searcher(seed=0, **search_changes):
    from study.search import search_setup

    return search_setup(spec_from_dict(_raw(seed=seed, **search_changes))).search_alg


def _drain(searcher, n=100):
    from ray.tune.search import Searcher

    configs = []
    for i in range(n):
        config = searcher.suggest(f"trial{i}")
        if config == Searcher.FINISHED:
            return configs
        configs.append(config)
    raise AssertionError("the searcher never finished")


def test_searcher_hands_out_every_seed_of_a_point_chains_taking_turns():
    configs = _drain(_searcher())
    assert len(configs) == 4 * 2 * 2
    assert [(c["chain"], c["seed"]) for c in configs[:8]] == [
        ("tqa_arc", 0), ("tqa_arc", 1), ("arc_tqa", 0), ("arc_tqa", 1)] * 2
    for config in configs:
        assert set(config) == {"chain", "seed", "stage2.learning_rate", "stage1.batch_size"}
        assert 1e-5 <= config["stage2.learning_rate"] <= 1e-3 and config["stage1.batch_size"] in (8, 16)
        assert config["stage2.learning_rate"] == float(f"{config['stage2.learning_rate']:.6g}")
    # Seeds of a point share its values; both chains' samplers share the seed, so the random
    # startup points are the same for both chains (paired comparisons of the orders).
    point = lambda c: (c["stage2.learning_rate"], c["stage1.batch_size"])  # noqa: E731
    assert point(configs[0]) == point(configs[1]) == point(configs[2]) == point(configs[3])
    assert [point(c) for c in configs if c["chain"] == "tqa_arc"] == [point(c) for c in configs if c["chain"] == "arc_tqa"]
    assert len({point(c) for c in configs}) == 4


def test_the_sampler_is_seeded():
    same = [_drain(_searcher(seed=7)) for _ in range(2)]
    assert same[0] == same[1]
    other = _drain(_searcher(seed=8))
    assert [c["stage2.learning_rate"] for c in other] != [c["stage2.learning_rate"] for c in same[0]]


def test_optuna_is_told_the_seed_mean_and_failed_points_fail():
    import optuna

    searcher = _searcher(num_samples=2)
    ids = {}
    for i in range(8):
        config = searcher.suggest(f"t{i}")
        ids[f"t{i}"] = config
    for trial_id, config in ids.items():
        lr = config["stage2.learning_rate"]
        if trial_id in ("t6", "t7"):  # arc_tqa's second point: both seeds fail
            assert config["chain"] == "arc_tqa"
            searcher.on_trial_complete(trial_id, result=None, error=True)
            continue
        # Seed 1 reports 0.1 more accuracy: the mean is value + 0.05.
        searcher.on_trial_complete(trial_id, result={"arc_easy/accuracy": lr * 1000 + 0.1 * config["seed"],
                                                     "wg_forgetting/toxigen_qa": float(config["seed"]), "stage": 2})
    study = searcher.optuna_study("tqa_arc")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial, config in zip(study.trials, [ids["t0"], ids["t4"]]):
        assert trial.values == pytest.approx([config["stage2.learning_rate"] * 1000 + 0.05, 0.5])
        assert float(f"{trial.params['stage2.learning_rate']:.6g}") == config["stage2.learning_rate"]
    states = [t.state for t in searcher.optuna_study("arc_tqa").trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    assert len(searcher.results("arc_tqa")) == 1 and len(searcher.results("tqa_arc")) == 2


def test_a_point_proposed_again_is_not_rerun_but_told_the_same_result():
    import optuna

    searcher = _searcher(num_samples=6, space={"stage1.batch_size": {"choice": [8, 16]}},
                         objectives=[{"metric": "arc_easy/accuracy", "mode": "max"}])
    handed = []
    for i in range(200):  # as Tune does: finish each trial, then ask for the next
        config = searcher.suggest(f"t{i}")
        if config == "FINISHED":
            break
        handed.append(config)
        searcher.on_trial_complete(f"t{i}", result={"arc_easy/accuracy": config["stage1.batch_size"] / 100})
    # Only two distinct points exist: at most 2 points × 2 seeds × 2 chains trials ever run.
    assert len(handed) <= 8
    for chain in ("tqa_arc", "arc_tqa"):
        runs = [(c["stage1.batch_size"], c["seed"]) for c in handed if c["chain"] == chain]
        assert len(runs) == len(set(runs))  # no trial id twice
        trials = searcher.optuna_study(chain).trials
        assert len(trials) == 6 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        assert all(t.value == t.params["stage1.batch_size"] / 100 for t in trials)
        assert searcher.best(chain) == [({"chain": chain, "stage1.batch_size": 16}, [0.16])]


def test_searcher_state_survives_save_and_restore(tmp_path):
    first, second = _searcher(), _searcher()
    head = [first.suggest(f"t{i}") for i in range(5)]
    assert [second.suggest(f"t{i}") for i in range(5)] == head
    first.save(str(tmp_path / "state.pkl"))
    restored = _searcher(seed=99)  # a different seed: everything must come from the file
    restored.restore(str(tmp_path / "state.pkl"))
    assert _drain(restored) == _drain(second)


def test_pareto_front_known_answer():
    from study.search import pareto_front

    rows = [("a", [0.9, 0.5]), ("b", [0.8, 0.1]), ("c", [0.7, 0.2]), ("d", [0.9, 0.6]), ("e", [0.95, 0.9])]
    assert [r[0] for r in pareto_front(rows, ["max", "min"])] == ["a", "b", "e"]
    assert [r[0] for r in pareto_front(rows, ["max"])] == ["e"]
    assert [r[0] for r in pareto_front(rows, ["min", "max"])] == ["c", "d", "e"]


# ---------------------------------------------------------------- a real search through Ray Tune


def _lr_trainable(config):
    """Known functions of the sampled learning rate: accuracy peaks at lr = 1e-4, forgetting grows with lr."""
    from ray import tune

    lr = config["stage2.learning_rate"]
    x = math.log10(lr)
    nan = float("nan")
    tune.report({"stage": 0, "arc_easy/accuracy": 0.25, "toxigen_qa/accuracy": 0.5, "forgetting/toxigen_qa": nan,
                 "wg_forgetting/toxigen_qa": nan, "biased_forgetting/toxigen_qa": nan,
                 "forgetting/arc_easy": nan, "wg_forgetting/arc_easy": nan, "biased_forgetting/arc_easy": nan})
    tune.report({"stage": 2, "arc_easy/accuracy": 1 - (x + 4) ** 2 / 4 + 0.01 * config["seed"], "toxigen_qa/accuracy": 0.5,
                 "forgetting/toxigen_qa": lr * 100, "wg_forgetting/toxigen_qa": lr * 1000, "biased_forgetting/toxigen_qa": 0.0,
                 "forgetting/arc_easy": 0.0, "wg_forgetting/arc_easy": 0.0, "biased_forgetting/arc_easy": 0.0})


def _tune_search(tmp_path, name, seeds=(0, 1), **search_changes):
    from ray import tune

    from study.search import search_setup

    raw = _raw(**{"num_samples": 4, "space": {"stage2.learning_rate": {"loguniform": [1e-5, 1e-3]}}, **search_changes})
    raw["chains"], raw["seeds"] = {"tqa_arc": TWO_STAGE["tqa_arc"]}, list(seeds)
    spec = spec_from_dict(raw)
    setup = search_setup(spec)
    plan_for = SampledPlans(spec, tmp_path / name, None, chat=False)
    tuner = tune.Tuner(
        tune.with_parameters(_lr_trainable),
        param_space=setup.param_space,
        tune_config=tune.TuneConfig(**setup.tune_config_kwargs(), max_concurrent_trials=2,
                                    trial_name_creator=lambda t: plan_for(t.config).trial_id,
                                    trial_dirname_creator=lambda t: plan_for(t.config).trial_id),
        run_config=tune.RunConfig(name=name, storage_path=str(tmp_path / "tune"), verbose=0),
    )
    results = list(tuner.fit())
    return setup, results, [p.to_dict() for p in collect_plans([r.config for r in results], plan_for)]


@pytest.mark.slow
def test_optuna_search_through_tune_is_seeded_and_multi_objective(ray_cluster, tmp_path):
    setup, results, plans = _tune_search(tmp_path, "first", seed=3)
    assert not [r.error for r in results if r.error]
    assert len(results) == 4 * 2 and len(plans) == 8  # 4 points × 2 seeds, each its own trial id
    points = sorted({r.config["stage2.learning_rate"] for r in results})
    assert len(points) == 4 and all(1e-5 <= lr <= 1e-3 for lr in points)
    for result in results:  # both objectives in every final report
        lr = result.config["stage2.learning_rate"]
        assert result.metrics["wg_forgetting/toxigen_qa"] == pytest.approx(lr * 1000)
        assert result.metrics["arc_easy/accuracy"] == pytest.approx(1 - (math.log10(lr) + 4) ** 2 / 4 + 0.01 * result.config["seed"])
    for plan in plans:
        assert plan["stages"][1]["learning_rate"] == plan["grid_point"]["stage2.learning_rate"]
    # Optuna was told the seed means of both objectives.
    study = setup.search_alg.optuna_study("tqa_arc")
    told = sorted((float(f"{t.params['stage2.learning_rate']:.6g}"), t.values) for t in study.trials)
    assert [lr for lr, _ in told] == points
    for lr, values in told:
        assert values == pytest.approx([1 - (math.log10(lr) + 4) ** 2 / 4 + 0.005, lr * 1000])
    # The Pareto front (max accuracy, min forgetting) of f(lr): a point is on it iff no smaller
    # learning rate reaches its accuracy. Optuna's own front agrees.
    expected, best_below = [], -math.inf
    for lr in points:
        accuracy = 1 - (math.log10(lr) + 4) ** 2 / 4
        if accuracy > best_below:
            expected.append(lr)
        best_below = max(best_below, accuracy)
    front = setup.search_alg.best("tqa_arc")
    assert sorted(c["stage2.learning_rate"] for c, _ in front) == expected
    assert sorted(float(f"{t.params['stage2.learning_rate']:.6g}") for t in study.best_trials) == expected

    # Same sampler seed: the same points; another seed: others (one trial seed is enough:
    # the points depend on the sampler seed and the order of asks only).
    _, again, _ = _tune_search(tmp_path, "again", seeds=[0], seed=3)
    assert sorted(r.config["stage2.learning_rate"] for r in again) == points
    _, other, _ = _tune_search(tmp_path, "other", seeds=[0], seed=4)
    assert sorted({r.config["stage2.learning_rate"] for r in other}) != points


@pytest.mark.slow
def test_single_objective_search_through_tune_finds_the_best_point(ray_cluster, tmp_path):
    setup, results, _ = _tune_search(tmp_path, "single", seed=0, num_samples=3,
                                     objectives=[{"metric": "arc_easy/accuracy", "mode": "max"}])
    assert setup.metric == "arc_easy/accuracy" and len(results) == 3 * 2
    [(config, [value])] = setup.search_alg.best("tqa_arc")
    lrs = {r.config["stage2.learning_rate"] for r in results}
    best_lr = max(lrs, key=lambda lr: -(math.log10(lr) + 4) ** 2)
    assert config["stage2.learning_rate"] == best_lr
    assert value == pytest.approx(1 - (math.log10(best_lr) + 4) ** 2 / 4 + 0.005)


# ---------------------------------------------------------------- the sampler's options, explicit


def _run_single_objective(seed=0, n=12):
    """A single-objective search driven as Tune does (each trial finished before the next is
    asked), past TPE's 10 random startup points; the points tqa_arc was handed, in order."""
    searcher = _searcher(seed=seed, num_samples=n, objectives=[{"metric": "arc_easy/accuracy", "mode": "max"}],
                         space={"stage2.learning_rate": {"loguniform": [1e-5, 1e-3]}})
    points = []
    for i in range(1000):
        config = searcher.suggest(f"t{i}")
        if config == "FINISHED":
            return points, searcher
        if config["chain"] == "tqa_arc" and config["seed"] == 0:
            points.append(config["stage2.learning_rate"])
        lr = config["stage2.learning_rate"]  # a peak at lr = 1e-4
        searcher.on_trial_complete(f"t{i}", result={"arc_easy/accuracy": -abs(math.log10(lr) + 4)})
    raise AssertionError("the searcher never finished")


def test_a_seeded_search_proposes_the_same_points_twice_past_the_startup():
    first, _ = _run_single_objective()
    again, _ = _run_single_objective()
    assert len(first) == 12 and first == again  # points 11 and 12 come from TPE itself
    # The points Optuna 5.1 proposed with its defaults before the options were written out: a
    # study searched then proposes the same points now (and a new Optuna default cannot move them).
    assert first == [0.000125207, 0.000269388, 0.000160519, 0.000122961, 7.03574e-05, 0.000195789,
                     7.50195e-05, 0.0006075, 0.000845913, 5.84633e-05, 1.34585e-05, 2.92606e-05]
    other, _ = _run_single_objective(seed=1)
    assert other[:3] != first[:3]


def test_the_sampler_options_are_the_explicit_ones():
    import optuna

    from study.search import TPE_OPTIONS

    assert TPE_OPTIONS == {"n_startup_trials": 10, "n_ei_candidates": 24, "constant_liar": True, "group": False}
    for searcher, multivariate in [(_run_single_objective(n=1)[1], True), (_searcher(), False)]:
        for chain in ("tqa_arc", "arc_tqa"):
            sampler = searcher._inner[chain]._sampler  # Ray's OptunaSearch keeps the sampler it was given
            assert isinstance(sampler, optuna.samplers.TPESampler)
            # Optuna's own attributes: what the sampler runs with, whatever its defaults are
            assert (sampler._n_startup_trials, sampler._n_ei_candidates) == (10, 24)
            assert (sampler._multivariate, sampler._constant_liar, sampler._group) == (multivariate, True, False)
