"""The study spec: loading, round-tripping, stage_defaults, and every invalid file's message.

Fast tier: no Ray, no torch. Invalid fixtures live in tests/specs/invalid_*.yaml; each is listed
below with the field path, a fragment of the message and the 1-based line the problem must
point at, so a regression in the path, the wording or the line index fails a named case.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from contract.problems import Problem
from study.presets import preset_paths
from study.spec import StageSpec, StudySpec
from study.spec_loading import SpecError, load_spec_file, spec_from_dict

SPECS = Path(__file__).parent / "specs"
DEMO = preset_paths()["demo"]


def _problems(path: Path, overrides=()) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        load_spec_file(path, overrides)
    return info.value.problems


def _minimal(**extra) -> dict:
    return {"name": "t", "chains": {"a": [{"task": "toxigen_qa"}]}, **extra}


# ---------------------------------------------------------------- valid files


def test_demo_preset_loads_with_its_declared_values():
    spec = load_spec_file(DEMO)
    assert isinstance(spec, StudySpec)
    assert spec.name == "demo"
    assert list(spec.chains) == ["tqa_arc", "arc_tqa"]
    assert [s.task for s in spec.chains["tqa_arc"]] == ["toxigen_qa", "arc_easy"]
    assert spec.model.name == "tiny" and spec.model.max_length == 384
    assert spec.grid == {"stage1.learning_rate": (1.0e-3, 3.0e-3)}
    assert spec.seeds == (0,)
    assert spec.tasks["toxigen_qa"].train_size == 800
    assert spec.execution.cpus_per_trial == 1.0


def test_demo_round_trips_through_to_dict():
    spec = load_spec_file(DEMO)
    data = spec.to_dict()
    # to_dict is plain data: no tuples or dataclasses survive.
    assert isinstance(data["chains"]["tqa_arc"], list)
    assert isinstance(data["chains"]["tqa_arc"][0], dict)
    assert isinstance(data["grid"]["stage1.learning_rate"], list)
    again = spec_from_dict(data)
    assert again == spec
    assert again.to_dict() == data


def test_demo_round_trips_through_yaml_text(tmp_path):
    spec = load_spec_file(DEMO)
    out = tmp_path / "dumped.yaml"
    out.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=True))
    again = load_spec_file(out)
    assert again == spec
    # The dumped form is explicit: stage_defaults are baked into each stage.
    assert "stage_defaults" not in yaml.safe_load(out.read_text())


def test_round_trip_keeps_non_default_values(tmp_path):
    spec = load_spec_file(SPECS / "valid_small.yaml")
    assert spec.chains["tqa_arc"][1].learning_rate == pytest.approx(1e-4)
    out = tmp_path / "small.yaml"
    out.write_text(yaml.safe_dump(spec.to_dict()))
    again = load_spec_file(out)
    assert again == spec
    assert again.chains["tqa_arc"][1].learning_rate == pytest.approx(1e-4)
    assert again.seeds == (0, 1)


def test_stage_defaults_are_inherited_and_a_stage_overrides_only_what_it_names():
    spec = spec_from_dict(
        {
            "name": "inherit",
            "stage_defaults": {"method": "sft", "learning_rate": 3e-3, "batch_size": 8},
            "chains": {
                "a": [
                    {"task": "toxigen_qa"},
                    {"task": "arc_easy", "learning_rate": 1e-4, "seed": 7},
                ]
            },
        }
    )
    first, second = spec.chains["a"]
    assert first == StageSpec(task="toxigen_qa", method="sft", learning_rate=3e-3, batch_size=8)
    # Only learning_rate and seed changed; batch_size still comes from stage_defaults.
    assert second.learning_rate == 1e-4
    assert second.seed == 7
    assert second.batch_size == 8
    # steps is in neither: the dataclass default applies.
    default_steps = {f.name: f.default for f in dataclasses.fields(StageSpec)}["steps"]
    assert first.steps == second.steps == default_steps
    assert first.seed is None


def test_stage_defaults_do_not_leak_between_chains():
    spec = spec_from_dict(
        {
            "name": "leak",
            "stage_defaults": {"steps": 11},
            "chains": {
                "a": [{"task": "toxigen_qa", "steps": 3}],
                "b": [{"task": "toxigen_qa"}],
            },
        }
    )
    assert spec.chains["a"][0].steps == 3
    assert spec.chains["b"][0].steps == 11


def test_yaml_1_1_exponent_learning_rates_are_floats(tmp_path):
    text = (
        "name: exp\n"
        "stage_defaults: {learning_rate: 1e-5}\n"
        "chains:\n"
        "  a: [{task: toxigen_qa}, {task: arc_easy, learning_rate: 2e-5}]\n"
        "grid:\n"
        "  stage1.learning_rate: [1e-5, 5e-6]\n"
        "  stage2: {learning_rate: [3e-5]}\n"
    )
    # PyYAML (YAML 1.1) really does read these as strings: the spec must convert them.
    raw = yaml.safe_load(text)
    assert raw["chains"]["a"][1]["learning_rate"] == "2e-5"
    assert raw["grid"]["stage1.learning_rate"] == ["1e-5", "5e-6"]
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    spec = load_spec_file(path)
    first, second = spec.chains["a"]
    assert isinstance(first.learning_rate, float) and first.learning_rate == 1e-5
    assert isinstance(second.learning_rate, float) and second.learning_rate == 2e-5
    assert spec.grid["stage1.learning_rate"] == (1e-5, 5e-6)
    assert all(isinstance(v, float) for v in spec.grid["stage1.learning_rate"])
    # The nested grid form is flattened to the dotted key, with the same conversion.
    assert spec.grid["stage2.learning_rate"] == (3e-5,)
    assert isinstance(spec.grid["stage2.learning_rate"][0], float)


def test_non_numeric_learning_rate_string_is_still_rejected():
    with pytest.raises(SpecError) as info:
        spec_from_dict(
            {"name": "t", "chains": {"a": [{"task": "toxigen_qa", "learning_rate": "fast"}]}}
        )
    [problem] = info.value.problems
    assert problem.path == "chains.a[0].learning_rate"
    assert "must be a number" in problem.message and "'fast'" in problem.message


def test_shorthands_model_seed_and_eval_task():
    spec = spec_from_dict(_minimal(model="gpt2", seeds=[5], eval_tasks="arc_easy"))  # `seeds: 5` is refused
    assert spec.model.name == "gpt2"
    assert spec.model.max_length == 512  # the rest of ModelSpec keeps its defaults
    assert spec.seeds == (5,)
    assert spec.eval_tasks == ("arc_easy",)


def test_all_eval_tasks_defaults_to_chain_tasks_in_first_use_order():
    spec = spec_from_dict(
        {"name": "t", "chains": {"a": [{"task": "arc_easy"}, {"task": "toxigen_qa"}], "b": [{"task": "toxigen_qa"}]}}
    )
    assert spec.eval_tasks == ()
    assert spec.all_eval_tasks() == ("arc_easy", "toxigen_qa")


def test_spec_is_frozen():
    spec = load_spec_file(DEMO)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"


# ---------------------------------------------------------------- invalid files

# (file, field path, message fragment, 1-based line or None when the field is absent)
INVALID = [
    ("invalid_unknown_top_key.yaml", "chians", "unknown field 'chians'; did you mean 'chains'?", 2),
    ("invalid_unknown_stage_key.yaml", "chains.a[0].learning_rte", "did you mean 'learning_rate'?", 5),
    ("invalid_unknown_task.yaml", "chains.a[1].task", "unknown task 'toxigen'; did you mean 'toxigen_qa'?", 5),
    ("invalid_negative_lr.yaml", "chains.a[0].learning_rate", "must be > 0 (got -1e-05)", 5),
    ("invalid_batch_size_zero.yaml", "chains.a[1].batch_size", "must be ≥ 1 (got 0)", 6),
    ("invalid_steps_string.yaml", "chains.a[0].steps", "must be an integer (got 'many')", 5),
    ("invalid_method_planned.yaml", "chains.a[0].method", "unknown method 'grpo'", 5),
    ("invalid_method_typo.yaml", "chains.a[0].method", "unknown method 'sftt'; did you mean 'sft'?", 5),
    ("invalid_grid_stage_beyond.yaml", "grid.stage3.learning_rate", "stage 3 does not exist in every chain", 7),
    ("invalid_grid_key_format.yaml", "grid.stage1.lr", "grid keys look like 'stage<k>.<field>'", 5),
    ("invalid_grid_value_type.yaml", "grid.stage1.batch_size[1]", "must be an integer ≥ 1 (got 'big')", 7),
    ("invalid_duplicate_seeds.yaml", "seeds", "seeds must be distinct", 4),
    ("invalid_empty_chains.yaml", "chains", "at least one chain is required", 3),
    ("invalid_empty_chain.yaml", "chains.b", "a chain needs at least one stage", 4),
    ("invalid_chain_name.yaml", "chains.tqa arc", "chain names must be letters, digits", 3),
    ("invalid_missing_name.yaml", "name", "required field is missing", None),
    ("invalid_name_chars.yaml", "name", "must be letters, digits", 1),
    ("invalid_executor.yaml", "execution.executor", "must be one of 'auto', 'function', 'train' (got 'ray')", 5),
    ("invalid_cpus_zero.yaml", "execution.cpus_per_trial", "must be > 0", 6),
    ("invalid_yaml_syntax.yaml", "", "invalid YAML", 6),
    ("invalid_eval_task.yaml", "eval_tasks[1]", "unknown task 'arc_hard'", 6),
    ("invalid_stage_defaults_key.yaml", "stage_defaults.batchsize", "did you mean 'batch_size'?", 4),
    ("invalid_task_size.yaml", "tasks.toxigen_qa.train_size", "must be ≥ 1 or null", 4),
    ("invalid_max_length.yaml", "model.max_length", "must be ≥ 16 (got 8)", 4),
    ("invalid_grid_nested_list.yaml", "grid.stage1.batch_size[0]", "must be an integer ≥ 1", 6),
    ("invalid_missing_chains.yaml", "chains", "required field is missing", None),
    ("invalid_seed_scope.yaml", "seed_scope",
     "must be one of 'order', 'order_and_data' (got 'order_and_dta'); did you mean 'order_and_data'?", 5),
]


def _case_file(case) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


CASES = [c if hasattr(c, "values") else pytest.param(*c, id=c[0]) for c in INVALID]


@pytest.mark.parametrize(("filename", "path", "fragment", "line"), CASES)
def test_invalid_file_reports_path_message_and_line(filename, path, fragment, line):
    problems = _problems(SPECS / filename)
    matching = [p for p in problems if p.path == path]
    assert matching, f"no problem at {path!r}; got {problems}"
    assert any(fragment in p.message for p in matching), [p.message for p in matching]
    assert [p.line for p in matching if fragment in p.message][0] == line


def test_there_are_enough_invalid_cases_and_every_fixture_is_covered():
    files = sorted(p.name for p in SPECS.glob("invalid_*.yaml"))
    covered = sorted(_case_file(c) for c in INVALID)
    assert files == covered
    assert len(files) >= 12


def test_single_problem_files_report_exactly_one_problem():
    # A problem must not cascade into spurious follow-up problems.
    for filename in ("invalid_negative_lr.yaml", "invalid_grid_key_format.yaml", "invalid_executor.yaml",
                     "invalid_unknown_stage_key.yaml", "invalid_duplicate_seeds.yaml"):
        assert len(_problems(SPECS / filename)) == 1, filename


def test_reported_line_points_at_the_offending_key():
    # The line number in the table above must name the field in the file itself.
    text = (SPECS / "invalid_unknown_stage_key.yaml").read_text().splitlines()
    [problem] = _problems(SPECS / "invalid_unknown_stage_key.yaml")
    assert "learning_rte" in text[problem.line - 1]


def test_grid_on_stage_zero_is_rejected():
    with pytest.raises(SpecError) as info:
        spec_from_dict(_minimal(grid={"stage0.learning_rate": [1e-3]}))
    assert any(p.path == "grid.stage0.learning_rate" and "stage 0 does not exist" in p.message
               for p in info.value.problems)


def test_grid_duplicate_and_empty_values_are_rejected():
    with pytest.raises(SpecError) as info:
        spec_from_dict(_minimal(grid={"stage1.learning_rate": [1e-3, "1e-3"], "stage1.steps": []}))
    messages = {(p.path, p.message) for p in info.value.problems}
    assert ("grid.stage1.learning_rate", "grid values must be distinct") in messages
    assert ("grid.stage1.steps", "a grid axis needs at least one value") in messages


def test_inherited_bad_default_is_reported_once_at_stage_defaults():
    with pytest.raises(SpecError) as info:
        spec_from_dict({"name": "t", "stage_defaults": {"steps": 0},
                        "chains": {"a": [{"task": "toxigen_qa"}, {"task": "arc_easy"}]}})
    assert [p.path for p in info.value.problems] == ["stage_defaults.steps"]


def test_non_mapping_study_file_is_rejected(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- name: a\n- name: b\n")
    [problem] = _problems(path)
    assert problem.path == ""
    assert "must be a mapping" in problem.message


def test_missing_file_is_a_spec_error(tmp_path):
    [problem] = _problems(tmp_path / "nope.yaml")
    assert "cannot read study file" in problem.message


# ---------------------------------------------------------------- all problems at once


def test_every_type_problem_is_reported_at_once():
    path = SPECS / "many_type_problems.yaml"
    with pytest.raises(SpecError) as info:
        load_spec_file(path)
    got = {(p.path, p.line) for p in info.value.problems}
    assert got == {
        ("stage_defaults.learning_rte", 4),
        ("chians", 2),
        ("chains.a[0].steps", 8),
        ("chains.a[1].batch_size", 10),
        ("training.lr_scheduler", 12),
        ("execution.executor", 14),
    }
    assert len(info.value.problems) == 6
    rendered = str(info.value)
    assert rendered.splitlines()[0] == f"{path}: 6 problems"
    for p in info.value.problems:
        assert f"{path}:{p.line}: {p.path}: {p.message}" in rendered
    assert "did you mean 'cosine'?" in rendered


def test_every_semantic_problem_is_reported_at_once():
    path = SPECS / "many_semantic_problems.yaml"
    with pytest.raises(SpecError) as info:
        load_spec_file(path)
    problems = info.value.problems
    assert len(problems) == 6
    assert {p.path for p in problems} == {
        "chains.a[0].learning_rate",
        "chains.a[1].batch_size",
        "chains.a[2].method",
        "chains.a[2].task",
        "seeds",
        "execution.cpus_per_trial",
    }
    rendered = str(info.value)
    assert len(rendered.splitlines()) == 1 + 6
    for p in problems:
        assert p.line is not None
        assert f"{path}:{p.line}: {p.path}: {p.message}" in rendered


def test_render_without_line_uses_the_source_alone():
    err = SpecError([Problem("name", "required field is missing"), Problem("", "top problem")], source="x.yaml")
    lines = str(err).splitlines()
    assert lines == ["x.yaml: 2 problems", "  x.yaml: name: required field is missing", "  x.yaml: <top>: top problem"]
    assert str(SpecError([Problem("a", "b", 3)], source="y.yaml")).splitlines()[0] == "y.yaml: 1 problem"


def test_a_problem_reads_well_with_or_without_its_file_and_line():
    assert str(Problem("a.b", "bad", 3, "f.yaml")) == "f.yaml:3: a.b: bad"
    assert str(Problem("a.b", "bad", 3)) == "line 3: a.b: bad"
    assert str(Problem("a.b", "bad", file="f.yaml")) == "f.yaml: a.b: bad"
    assert str(Problem("", "bad")) == "bad"


def test_unknown_key_does_not_hide_cross_field_problems(tmp_path):
    """A typo'd top-level key, a negative learning rate and an unknown task: all three at once."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\n"
        "model: tiny\n"
        "chians: {}\n"
        "chains:\n"
        "  tqa_arc:\n"
        "    - {task: toxigen_qa, learning_rate: -0.001}\n"
        "    - {task: toxigen}\n"
    )
    with pytest.raises(SpecError) as info:
        load_spec_file(path)
    found = {(p.path, p.line) for p in info.value.problems}
    assert found == {("chians", 3), ("chains.tqa_arc[0].learning_rate", 6), ("chains.tqa_arc[1].task", 7)}


def test_missing_local_model_path_is_a_validation_error(tmp_path):
    base = {"name": "m", "chains": {"a": [{"task": "arc_easy"}]}}
    with pytest.raises(SpecError) as info:
        spec_from_dict({**base, "model": {"name": str(tmp_path / "no-such-model")}})
    assert [(p.path, "does not exist" in p.message) for p in info.value.problems] == [("model.name", True)]
    (tmp_path / "model").mkdir()
    assert spec_from_dict({**base, "model": {"name": str(tmp_path / "model")}}).model.name == str(tmp_path / "model")
    # A Hub id is left to the trial (real users have the Hub).
    assert spec_from_dict({**base, "model": "meta-llama/Llama-2-7b-hf"}).model.name == "meta-llama/Llama-2-7b-hf"


def test_duplicate_yaml_keys_are_reported_with_both_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: x\nname: y\nchains:\n  a: [{task: arc_easy}]\n")
    with pytest.raises(SpecError) as info:
        load_spec_file(path)
    assert [(p.path, p.line, p.message) for p in info.value.problems] == [("name", 2, "duplicate key (also on line 1)")]


def test_numerically_equal_grid_values_are_duplicates():
    """1e-3 and 0.001 would give the same stage keys and the same trial id twice."""
    with pytest.raises(SpecError) as info:
        spec_from_dict({"name": "g", "chains": {"a": [{"task": "arc_easy"}]},
                        "grid": {"stage1.learning_rate": ["1e-3", 0.001], "stage1.batch_size": [16, 16]}})
    assert sorted(p.path for p in info.value.problems) == ["grid.stage1.batch_size", "grid.stage1.learning_rate"]


@pytest.mark.parametrize("make, fragment", [
    (lambda tmp: tmp / "missing", "does not exist"),
    (lambda tmp: (tmp / "file.txt").write_text("x") and tmp / "file.txt", "is not a directory"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "has no arc/ARC-Easy/ARC-Easy-Train.jsonl"),
])
def test_bad_data_dir_fails_validation(tmp_path, make, fragment):
    data_dir = make(tmp_path)
    with pytest.raises(SpecError) as info:
        spec_from_dict({"name": "d", "chains": {"a": [{"task": "arc_easy"}]}, "data_dir": str(data_dir)})
    assert {p.path for p in info.value.problems} == {"data_dir"}
    assert any(fragment in p.message for p in info.value.problems)


def test_non_utf8_file_and_unknown_user_path_are_problems_not_tracebacks(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpecError, match="not UTF-8"):
        load_spec_file(path)
    with pytest.raises(SpecError, match="does not exist"):
        spec_from_dict({"name": "u", "model": "~no_such_user_xyz/model", "chains": {"a": [{"task": "arc_easy"}]}})


def _chain(*stages):
    return {"name": "m", "chains": {"a": list(stages)}}


@pytest.mark.parametrize("stages, grid, path, fragment", [
    ([{"task": "arc_easy", "method": "dpo", "dpo": {"beta": 0}}], {}, "chains.a[0].dpo.beta", "must be > 0"),
    ([{"task": "arc_easy", "method": "dpo", "dpo": {"reference": "sft"}}], {}, "chains.a[0].dpo.reference", "one of"),
    ([{"task": "arc_easy", "replay": {"from_stage": 1, "fraction": 0.05}}], {}, "chains.a[0].replay.from_stage",
     "the first stage has no earlier stage"),
    ([{"task": "toxigen_qa"}, {"task": "arc_easy", "replay": {"from_stage": 2, "fraction": 0.05}}], {},
     "chains.a[1].replay.from_stage", "must name an earlier stage, 1..1"),
    ([{"task": "toxigen_qa"}, {"task": "arc_easy", "replay": {"from_stage": 1, "fraction": 1.0}}], {},
     "chains.a[1].replay.fraction", "must be in [0, 1)"),
    ([{"task": "toxigen_qa"}, {"task": "arc_easy"}], {"stage2.replay_fraction": [0.05]},
     "grid.stage2.replay_fraction", "has no replay to sweep"),
    ([{"task": "toxigen_qa"}, {"task": "arc_easy", "replay": {"from_stage": 1, "fraction": 0.05}}],
     {"stage2.replay_fraction": [0.05, 1.5]}, "grid.stage2.replay_fraction[1]", "a number in [0, 1)"),
])
def test_method_and_replay_settings_are_validated(stages, grid, path, fragment):
    with pytest.raises(SpecError) as info:
        spec_from_dict({**_chain(*stages), "grid": grid})
    assert any(p.path == path and fragment in p.message for p in info.value.problems), info.value.render()


def test_replay_fraction_grid_and_dpo_settings_reach_the_plan():
    from study.planner import build_plans

    spec = spec_from_dict({**_chain({"task": "toxigen_qa", "method": "dpo", "dpo": {"beta": 0.2}},
                                    {"task": "arc_easy", "replay": {"from_stage": 1, "fraction": 0.05}}),
                           "grid": {"stage2.replay_fraction": ["0", 0.05]}})
    plans = [p.to_dict() for p in build_plans(spec, study_dir="/tmp/x", data_dir=None, chat=False)]
    assert [p["stages"][1]["replay"] for p in plans] == [{"from_stage": 1, "fraction": 0.0, "only": False},
                                                         {"from_stage": 1, "fraction": 0.05, "only": False}]
    assert plans[0]["stages"][0]["dpo"] == {"beta": 0.2, "reference": "stage_start"}
    assert "dpo" not in plans[0]["stages"][1]  # an SFT stage's key does not depend on DPO settings
    assert plans[0]["stages"][1]["stage_key"] != plans[1]["stages"][1]["stage_key"]
    assert plans[0]["stages"][0]["stage_key"] == plans[1]["stages"][0]["stage_key"]


@pytest.mark.parametrize("stage, path, fragment", [
    ({"task": "toxigen_qa", "method": "ppo", "ppo": {"kl_coef": -1}}, "chains.a[0].ppo.kl_coef", "must be ≥ 0"),
    ({"task": "toxigen_qa", "method": "ppo", "ppo": {"reward": {"steps": 0}}}, "chains.a[0].ppo.reward.steps", "≥ 1"),
    ({"task": "toxigen_qa", "method": "rloo", "batch_size": 6, "rloo": {"num_generations": 4}},
     "chains.a[0].rloo.num_generations", "must divide the stage's batch_size 6"),
    ({"task": "toxigen_qa", "method": "rloo", "rloo": {"num_generations": 1}}, "chains.a[0].rloo.num_generations", "≥ 2"),
    ({"task": "toxigen_qa", "method": "ppo", "ppo": {"prompts": "raw"}}, "chains.a[0].ppo.prompts", "one of"),
])
def test_online_rl_settings_are_validated(stage, path, fragment):
    with pytest.raises(SpecError) as info:
        spec_from_dict(_chain(stage))
    assert any(p.path == path and fragment in p.message for p in info.value.problems), info.value.render()


def test_online_rl_settings_reach_the_plan_in_runner_form():
    from study.planner import build_plans

    spec = spec_from_dict(_chain({"task": "toxigen_qa", "method": "ppo", "ppo": {"kl_coef": 0.1}},
                                 {"task": "arc_easy", "method": "rloo", "rloo": {"reward": {"model": "org/rm"}}}))
    stages = build_plans(spec, study_dir="/tmp/x", data_dir=None, chat=False)[0].to_dict()["stages"]
    assert stages[0]["ppo"]["reward"] == {"train": {"steps": 50, "learning_rate": 1e-5, "batch_size": 16,
                                                    "data": "toxigen_statements"}}
    assert stages[0]["ppo"]["kl_coef"] == 0.1 and "rloo" not in stages[0]
    assert stages[1]["rloo"]["reward"] == {"model": "org/rm", "input": 2} and stages[1]["rloo"]["num_ppo_epochs"] == 1


def test_every_shipped_preset_validates():
    assert {"demo", "curvature", "first-stage-method"} <= set(preset_paths())
    for name, path in preset_paths().items():
        assert load_spec_file(path).name == name


def test_readme_study_files_per_method_validate(tmp_path):
    """docs/methods.md shows one study file per method; each must stay valid as the spec evolves.
    The README's study file too."""
    import re

    root = Path(__file__).resolve().parents[1]
    (example,) = re.findall(r"```yaml\n(name: my-study.*?)```", (root / "README.md").read_text(), re.S)
    (tmp_path / "readme.yaml").write_text(example)
    assert load_spec_file(tmp_path / "readme.yaml").seeds == (0, 1, 2)
    readme = (root / "docs" / "methods.md").read_text()
    blocks = re.findall(r"```yaml\n(# (?:SFT|DPO|RLHF|RLOO).*?)```", readme, re.S)
    methods = set()
    for i, block in enumerate(blocks):
        path = tmp_path / f"method{i}.yaml"
        path.write_text(block)
        spec = load_spec_file(path)
        methods.add(next(iter(spec.chains.values()))[0].method)
    assert methods == {"sft", "dpo", "ppo", "rloo"}


def test_start_from_best_seed_is_checked_where_it_is_written():
    """best_seed needs a previous stage, appears at most once per chain, and needs a grid study."""
    from study.spec_loading import SpecError, spec_from_dict

    base = {"name": "b", "model": "tiny", "seeds": [0, 1]}
    ok = spec_from_dict({**base, "chains": {"c": [{"task": "toxigen_qa"},
                                                 {"task": "arc_easy", "start_from": "best_seed"}]}})
    assert ok.chains["c"][1].start_from == "best_seed" and ok.chains["c"][1].selection_size == 200
    with pytest.raises(SpecError) as err:
        spec_from_dict({**base, "chains": {"c": [
            {"task": "toxigen_qa", "start_from": "best_seed"},
            {"task": "arc_easy", "start_from": "best_seed", "selection_size": 0},
            {"task": "arc_easy", "start_from": "best_seed"}]}})
    text = err.value.render()
    assert "chains.c[0].start_from: the first stage has no previous stage" in text
    assert "chains.c[1].selection_size: must be ≥ 1" in text
    assert "chains.c[2].start_from: only one stage of a chain may start from the best seed" in text
    with pytest.raises(SpecError) as err:
        spec_from_dict({**base, "chains": {"c": [{"task": "toxigen_qa"}, {"task": "arc_easy", "start_from": "best"}]}})
    assert "chains.c[1].start_from" in err.value.render()


def test_option_counts_are_checked_where_they_are_written(tmp_path):
    path = tmp_path / "counts.yaml"
    path.write_text(
        "name: counts\n"
        "chains: {a: [{task: arc_easy}]}\n"
        "tasks:\n"
        "  arc_easy: {option_counts: [4, 7, 4]}\n"
        "  bbq: {option_counts: []}\n"
        "  saferdialogues:\n"
        "    option_counts: [4]\n"
    )
    problems = {(p.path, p.line): p.message for p in _problems(path)}
    assert problems[("tasks.arc_easy.option_counts[1]", 4)] == "must be one of 2..5 (got 7)"
    assert problems[("tasks.arc_easy.option_counts", 4)] == "counts must be distinct"
    assert problems[("tasks.bbq.option_counts", 5)].startswith("at least one option count is required")
    assert problems[("tasks.saferdialogues.option_counts", 7)] == (
        "task 'saferdialogues' is a generation task: its items have no options")
    with pytest.raises(SpecError, match=r"tasks.toxigen_qa.option_counts: must be a list"):
        spec_from_dict(_minimal(tasks={"toxigen_qa": {"option_counts": "four"}}))
    assert spec_from_dict(_minimal(tasks={"arc_easy": {"option_counts": [3, 4, 5]}})).tasks[
        "arc_easy"].option_counts == (3, 4, 5)


def test_best_seed_needs_a_validation_split_on_the_previous_task(monkeypatch):
    """Every trainable built-in choice task has one; a task registered without one is refused."""
    from tasks import get_task, registry

    monkeypatch.setattr(registry, "TASKS", dict(registry.TASKS))
    bare = dataclasses.replace(get_task("arc_easy"), name="arc_bare", splits=("train", "eval"), validation="")
    registry.register(bare)
    with pytest.raises(SpecError) as err:
        spec_from_dict({"name": "b", "model": "tiny", "seeds": [0, 1], "data_dir": None,
                        "chains": {"c": [{"task": "arc_bare"}, {"task": "toxigen_qa", "start_from": "best_seed"}]}})
    assert ("chains.c[1].start_from: best_seed picks on stage 1's task's validation split, and 'arc_bare' has none"
            in err.value.render())
