"""`--set key=value` overrides: every field reachable, errors reported as Problems at "--set ..."."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from study.presets import preset_paths
from study.spec_loading import SpecError, apply_overrides, load_spec_file

SPECS = Path(__file__).parent / "specs"
DEMO = preset_paths()["demo"]


def _demo_raw() -> dict:
    return yaml.safe_load(DEMO.read_text())


def _apply(raw, *items):
    problems = []
    out = apply_overrides(raw, list(items), problems)
    return out, problems


# ---------------------------------------------------------------- apply_overrides on raw data


def test_no_overrides_returns_the_data_unchanged():
    raw = _demo_raw()
    out, problems = _apply(raw)
    assert out == raw and problems == []


def test_top_level_scalar_and_list_values_are_parsed_as_yaml():
    out, problems = _apply(_demo_raw(), "model=gpt2", "seeds=[1, 2]", "data_dir=null", "data_seed=3")
    assert problems == []
    assert out["model"] == "gpt2"
    assert out["seeds"] == [1, 2]
    assert out["data_dir"] is None
    assert out["data_seed"] == 3


def test_nested_mapping_and_list_item_paths():
    out, problems = _apply(
        _demo_raw(),
        "tasks.toxigen_qa.train_size=10",
        "chains.tqa_arc.0.learning_rate=1e-4",
        "chains.arc_tqa.-1.steps=7",
    )
    assert problems == []
    assert out["tasks"]["toxigen_qa"] == {"train_size": 10, "eval_size": 300}
    assert out["chains"]["tqa_arc"][0] == {"task": "toxigen_qa", "learning_rate": "1e-4"}
    assert out["chains"]["tqa_arc"][1] == {"task": "arc_easy"}  # siblings untouched
    assert out["chains"]["arc_tqa"][1]["steps"] == 7  # negative index = from the end


def test_grid_keys_keep_their_dot():
    out, problems = _apply(_demo_raw(), "grid.stage1.learning_rate=[1e-3,2e-3]", "grid.stage2.steps=[5]")
    assert problems == []
    assert out["grid"] == {"stage1.learning_rate": ["1e-3", "2e-3"], "stage2.steps": [5]}
    assert "stage1" not in out["grid"] and "stage2" not in out["grid"]


def test_missing_mapping_keys_are_created():
    out, problems = _apply({"name": "x"}, "tasks.arc_easy.eval_size=5", "grid.stage1.batch_size=[4, 8]")
    assert problems == []
    assert out["tasks"] == {"arc_easy": {"eval_size": 5}}
    assert out["grid"] == {"stage1.batch_size": [4, 8]}


def test_null_parent_is_replaced_by_a_mapping():
    out, problems = _apply({"name": "x", "execution": None}, "execution.cpus_per_trial=0.5")
    assert problems == []
    assert out["execution"] == {"cpus_per_trial": 0.5}


def test_later_override_wins():
    out, problems = _apply({"name": "x"}, "data_seed=1", "data_seed=2")
    assert problems == [] and out["data_seed"] == 2


def test_override_does_not_mutate_the_input():
    raw = _demo_raw()
    before = copy.deepcopy(raw)
    out, _ = _apply(raw, "tasks.toxigen_qa.train_size=10", "chains.tqa_arc.0.steps=1", "seeds=[4]")
    assert raw == before
    assert out is not raw
    assert out["tasks"]["toxigen_qa"] is not raw["tasks"]["toxigen_qa"]


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("seeds", "expected key=value"),
        ("=3", "expected key=value"),
        ("chains.tqa_arc.5.learning_rate=1e-4", "'chains.tqa_arc.5': no list item 5 (the list has 2)"),
        ("chains.tqa_arc.first.steps=3", "'chains.tqa_arc.first': no list item first"),
        ("name.first=x", "'name' is a value, not a mapping or list"),
        ("model.name.x=1", "'model.name' is a value"),
        ("seeds=[1, 2", "value is not valid YAML"),
    ],
)
def test_bad_override_is_a_problem_at_its_set_path(item, fragment):
    raw = _demo_raw()
    out, problems = _apply(raw, item)
    assert len(problems) == 1
    assert problems[0].path == f"--set {item}"
    assert fragment in problems[0].message
    assert problems[0].line is None
    assert out == raw  # a rejected override changes nothing


def test_good_overrides_still_apply_beside_a_bad_one():
    out, problems = _apply(_demo_raw(), "oops", "seeds=[9]", "name.x=1")
    assert [p.path for p in problems] == ["--set oops", "--set name.x=1"]
    assert out["seeds"] == [9]


# ---------------------------------------------------------------- through load_spec_file


def test_load_spec_file_applies_overrides_to_the_typed_spec():
    spec = load_spec_file(
        DEMO,
        [
            "model=tiny",
            "seeds=[1,2]",
            "tasks.toxigen_qa.train_size=10",
            "chains.tqa_arc.0.learning_rate=1e-4",
            "grid.stage1.learning_rate=[1e-3,2e-3]",
            "execution.executor=function",
        ],
    )
    assert spec.model.name == "tiny" and spec.model.max_length == 512  # shorthand replaced the mapping
    assert spec.seeds == (1, 2)
    assert spec.tasks["toxigen_qa"].train_size == 10
    assert spec.tasks["toxigen_qa"].eval_size == 300
    assert spec.chains["tqa_arc"][0].learning_rate == 1e-4
    assert spec.chains["tqa_arc"][1].learning_rate == 3e-3  # from stage_defaults, untouched
    assert spec.chains["arc_tqa"][0].learning_rate == 3e-3
    assert spec.grid == {"stage1.learning_rate": (1e-3, 2e-3)}
    assert spec.execution.executor == "function"


def test_override_of_nested_grid_form_wins(tmp_path):
    path = tmp_path / "nested.yaml"
    path.write_text(
        "name: nested\nchains:\n  a: [{task: toxigen_qa}]\n"
        "grid:\n  stage1: {learning_rate: [1.0e-3, 3.0e-3], steps: [5]}\n"
    )
    spec = load_spec_file(path, ["grid.stage1.learning_rate=[5e-4]"])
    assert spec.grid["stage1.learning_rate"] == (5e-4,)
    assert spec.grid["stage1.steps"] == (5,)


def test_override_can_fix_an_invalid_file():
    with pytest.raises(SpecError):
        load_spec_file(SPECS / "invalid_negative_lr.yaml")
    spec = load_spec_file(SPECS / "invalid_negative_lr.yaml", ["chains.a.0.learning_rate=2e-5"])
    assert spec.chains["a"][0].learning_rate == 2e-5


def test_override_can_introduce_a_field_problem():
    with pytest.raises(SpecError) as info:
        load_spec_file(DEMO, ["tasks.toxigen_qa.train_size=0", "execution.executor=ray"])
    paths = {p.path for p in info.value.problems}
    # Type problems stop before semantic checks, so only the executor is reported here ...
    assert paths == {"--set execution.executor=ray"}
    with pytest.raises(SpecError) as info:
        load_spec_file(DEMO, ["tasks.toxigen_qa.train_size=0"])
    # ... and the semantic one is reported as the --set argument that wrote it, not at a line of the file.
    [problem] = info.value.problems
    assert problem.path == "--set tasks.toxigen_qa.train_size=0"
    assert problem.line is None


def test_unknown_key_from_override_gets_did_you_mean():
    with pytest.raises(SpecError) as info:
        load_spec_file(DEMO, ["execution.cpus_per_trail=2"])
    [problem] = info.value.problems
    assert problem.path == "--set execution.cpus_per_trail=2"
    assert "did you mean 'cpus_per_trial'?" in problem.message


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("no_equals_sign", "expected key=value"),
        ("chains.tqa_arc.9.steps=1", "no list item 9 (the list has 2)"),
        ("storage.sub=1", "'storage' is a value"),
    ],
)
def test_bad_override_raises_spec_error_from_load_spec_file(item, fragment):
    with pytest.raises(SpecError) as info:
        load_spec_file(DEMO, [item])
    [problem] = info.value.problems
    assert problem.path == f"--set {item}"
    assert fragment in problem.message
    assert f"{DEMO}: --set {item}: " in str(info.value)


def test_bad_override_is_reported_together_with_file_problems():
    path = SPECS / "invalid_duplicate_seeds.yaml"
    with pytest.raises(SpecError) as info:
        load_spec_file(path, ["chains.a.3.steps=1"])
    paths = [p.path for p in info.value.problems]
    assert "--set chains.a.3.steps=1" in paths
    assert "seeds" in paths
    assert len(paths) == 2


def test_nested_override_on_a_shorthand_model(tmp_path):
    path = tmp_path / "short.yaml"
    path.write_text("name: short\nmodel: tiny\nchains:\n  a: [{task: toxigen_qa}]\n")
    spec = load_spec_file(path, ["model.max_length=1024"])
    assert spec.model == type(spec.model)(name="tiny", max_length=1024)
