"""Shipped study files: every preset validates as is and as its tiny variant (`--set model=tiny`),
the paper presets hold the paper's settings and grids, and the `tiny:` block's precedence and
validation. Fast tier: no Ray, no torch, nothing downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from study.presets import describe, preset_paths
from study.spec import StudySpec
from study.spec_loading import SpecError, load_spec_file

PRESETS = preset_paths()
PAPER = {name: path for name, path in PRESETS.items() if name.startswith("paper-")}
TINY = ["model=tiny"]
FULL_SUITE = ("arc_easy", "arc_challenge", "mmlu", "toxigen_qa", "bbq", "toxigen_prompts", "saferdialogues")
PAPER_LRS = (5e-6, 1e-5, 1.5e-5, 2e-5)  # Tables 4, 5, 7, 8


@pytest.fixture(autouse=True)
def _mirror(monkeypatch):
    """Validate against the local mirror when there is one (as `study validate` with
    STUDY_DATA_DIR set does), else against the Hub, which validation never contacts."""
    from tests.mirror import mirror_dir

    path = mirror_dir()
    if path is not None:
        monkeypatch.setenv("STUDY_DATA_DIR", str(path))


def _load(name: str, overrides=()) -> StudySpec:
    return load_spec_file(PRESETS[name], list(overrides))


def _problems(path: Path, overrides=()):
    with pytest.raises(SpecError) as info:
        load_spec_file(path, list(overrides))
    return info.value.problems


def test_every_paper_experiment_has_a_preset():
    assert set(PAPER) == {"paper-ordering", "paper-first-stage-method", "paper-first-lr", "paper-second-lr",
                          "paper-batch-size", "paper-bbq", "paper-curvature", "paper-replay"}


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("overrides", [(), tuple(TINY)], ids=["as-is", "tiny"])
def test_every_preset_validates(name, overrides):
    spec = _load(name, overrides)
    assert spec.name == name
    if overrides:
        assert spec.model.name == "tiny"


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_presets_name_their_tables_and_the_tiny_override(name):
    text = PRESETS[name].read_text()
    assert text.startswith("# ")
    assert "Table" in describe(PRESETS[name]) or name == "paper-replay"
    assert "--set model=tiny" in text


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_defaults(name):
    spec = _load(name)
    assert spec.model.name == "meta-llama/Llama-2-7b-hf" and spec.model.max_length == 2048
    assert spec.seeds == (0, 1, 2)
    t = spec.training
    assert (t.adam_beta1, t.adam_beta2, t.weight_decay, t.lr_scheduler, t.warmup_steps) == (0.9, 0.95, 0.1, "cosine", 0)
    for stages in spec.chains.values():
        for stage in stages:
            assert stage.steps == 100 and stage.batch_size == 16
            if not (name == "paper-curvature" and stage.learning_rate != 1e-5):  # Table 11's lr chains
                assert stage.learning_rate == 1e-5
    for task in {s.task for stages in spec.chains.values() for s in stages}:
        assert spec.task_settings(task).train_size == 2241
    for task in spec.all_eval_tasks():
        assert spec.task_settings(task).eval_size is None  # whole eval splits


@pytest.mark.parametrize("name", sorted(PAPER))
def test_tiny_variant_scales_the_run(name):
    paper, tiny = _load(name), _load(name, TINY)
    assert tiny.model.max_length == 384
    assert tiny.seeds == paper.seeds and tiny.training == paper.training
    assert set(tiny.chains) == set(paper.chains)
    for chain, stages in tiny.chains.items():
        for stage, original in zip(stages, paper.chains[chain]):
            assert (stage.task, stage.method, stage.batch_size, stage.start_from, stage.replay) == \
                   (original.task, original.method, original.batch_size, original.start_from, original.replay)
            assert stage.learning_rate == pytest.approx(200 * original.learning_rate)
            assert stage.steps == (40 if stage.method in ("ppo", "rloo") else 150)
    for task in {s.task for stages in tiny.chains.values() for s in stages}:
        assert tiny.task_settings(task).train_size == 800
    for task in tiny.all_eval_tasks():
        size = tiny.task_settings(task).eval_size
        assert size is not None and size <= 300
        # Generate-and-parse only where the paper's safety tasks need it, to keep tiny runs short.
        tiny_modes = paper.task_settings(task).eval_modes if task not in ("arc_easy", "arc_challenge", "mmlu") else ("score",)
        assert tiny.task_settings(task).eval_modes == tiny_modes
    for key, values in paper.grid.items():
        factor = 200 if key.endswith(".learning_rate") else 1
        assert tiny.grid[key] == pytest.approx(tuple(factor * v for v in values))
    if any(t in ("toxigen_prompts", "saferdialogues") for t in paper.all_eval_tasks()):
        assert paper.generation.classifier == "tomh/toxigen_roberta" and tiny.generation.classifier == "local"


def test_tiny_variant_changes_only_what_its_block_names():
    """The resolved tiny spec equals the paper spec with exactly the block's fields changed."""
    paper, tiny = _load("paper-ordering").to_dict(), _load("paper-ordering", TINY).to_dict()
    paper["model"]["name"], paper["model"]["max_length"] = "tiny", 384
    paper["generation"]["classifier"] = "local"
    for stages in paper["chains"].values():
        for stage in stages:
            stage["learning_rate"], stage["steps"] = 2e-3, 150
    for task, size in {"arc_easy": 300, "toxigen_qa": 300, "bbq": 300, "arc_challenge": 200, "mmlu": 285,
                       "toxigen_prompts": 130, "saferdialogues": 100}.items():
        paper["tasks"][task]["eval_size"] = size
        if task in ("arc_easy", "toxigen_qa", "bbq"):
            paper["tasks"][task]["train_size"] = 800
        if task in ("arc_easy", "arc_challenge", "mmlu"):
            paper["tasks"][task]["eval_modes"] = ["score"]
    assert tiny == paper


def test_first_stage_method_tiny_trains_its_own_reward_models():
    paper, tiny = _load("paper-first-stage-method"), _load("paper-first-stage-method", TINY)
    methods = {c: s[0].method for c, s in paper.chains.items()}
    assert methods == {"sft_arc": "sft", "dpo_arc": "dpo", "ppo_arc": "ppo", "rloo_arc": "rloo"}
    # The paper's reward model for both online-RL methods; the tiny run trains its own.
    for chain, method in (("ppo_arc", "ppo"), ("rloo_arc", "rloo")):
        assert getattr(paper.chains[chain][0], method).reward.model == "OpenAssistant/reward-model-deberta-v3-large-v2"
        assert getattr(paper.chains[chain][0], method).prompts == "statements"
        assert getattr(tiny.chains[chain][0], method).reward.model is None
    for chain, method in (("ppo_arc", "ppo"), ("rloo_arc", "rloo")):
        reward = getattr(tiny.chains[chain][0], method).reward
        assert (reward.steps, reward.learning_rate) == (100, 3e-3)
    assert all(s[1].task == "arc_easy" and s[1].method == "sft" for s in paper.chains.values())


# ---------------------------------------------------------------- the paper's grids and chains


def _orders(spec: StudySpec) -> dict[str, tuple[str, ...]]:
    return {name: tuple(s.task for s in stages) for name, stages in spec.chains.items()}


def test_ordering_grid_and_suite():  # Table 1, Figure 7
    spec = _load("paper-ordering")
    assert _orders(spec) == {"arc_tqa": ("arc_easy", "toxigen_qa"), "tqa_arc": ("toxigen_qa", "arc_easy"),
                             "arc_bbq": ("arc_easy", "bbq"), "bbq_arc": ("bbq", "arc_easy")}
    assert spec.eval_tasks == FULL_SUITE and spec.grid == {}
    assert all(s[1].start_from == "best_seed" for s in spec.chains.values())  # paper §2.2


def test_first_lr_grid():  # Tables 4 and 8
    spec = _load("paper-first-lr")
    assert spec.grid == {"stage1.learning_rate": PAPER_LRS}
    assert set(_orders(spec).values()) == {("toxigen_qa", "arc_easy"), ("arc_easy", "toxigen_qa")}


def test_second_lr_grid():  # Tables 5 and 7
    spec = _load("paper-second-lr")
    assert spec.grid == {"stage2.learning_rate": PAPER_LRS}
    assert set(_orders(spec).values()) == {("toxigen_qa", "arc_easy"), ("arc_easy", "toxigen_qa")}


def test_batch_size_grid():  # Table 9
    spec = _load("paper-batch-size")
    assert spec.grid == {"stage1.batch_size": (2, 8, 16, 24, 32)}
    assert _orders(spec) == {"tqa_arc": ("toxigen_qa", "arc_easy")}
    assert _load("paper-batch-size", TINY).grid == spec.grid


def test_bbq_chains():  # Table 10, Figure 6
    spec = _load("paper-bbq")
    assert _orders(spec) == {"bbq": ("bbq",), "arc_bbq": ("arc_easy", "bbq"), "bbq_arc": ("bbq", "arc_easy")}
    assert spec.eval_tasks == FULL_SUITE


def test_curvature_chains_and_settings():  # Tables 11-12, Figure 5
    spec = _load("paper-curvature")
    first = {name: (stages[0].task, stages[0].learning_rate) for name, stages in spec.chains.items()}
    assert sorted(lr for task, lr in first.values() if task == "toxigen_qa") == [2e-6, 5e-6, 1e-5, 2e-5]  # Table 11
    assert {task for task, lr in first.values() if lr == 1e-5} == {"arc_easy", "toxigen_qa", "bbq"}  # Table 12
    c = spec.curvature
    assert c.enabled and c.stages == (1,) and c.n_samples == 50 and c.algorithms == ("power_iteration",)
    assert all(s.start_from == "previous" for stages in spec.chains.values() for s in stages)
    tiny = _load("paper-curvature", TINY)
    assert sorted(s[0].learning_rate for c, s in tiny.chains.items() if s[0].task == "toxigen_qa") == \
           pytest.approx([4e-4, 1e-3, 2e-3, 4e-3])


def test_replay_grid():
    spec = _load("paper-replay")
    assert spec.grid == {"stage2.replay_fraction": (0.0, 0.01, 0.05, 0.1)}
    stage = spec.chains["tqa_arc"][1]
    assert stage.replay is not None and stage.replay.from_stage == 1 and not stage.replay.only


# ---------------------------------------------------------------- the `tiny:` block


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


BASE = """name: variant
model: {name: meta-llama/Llama-2-7b-hf, max_length: 2048}
tasks: {toxigen_qa: {train_size: 2241}}
stage_defaults: {learning_rate: 1.0e-5, steps: 100}
chains:
  tqa_arc: [{task: toxigen_qa}, {task: arc_easy}]
grid: {stage1.learning_rate: [1.0e-5, 2.0e-5]}
"""


def test_user_set_wins_over_the_tiny_block(tmp_path):
    path = _write(tmp_path, BASE + "tiny:\n  model.max_length: 384\n  stage_defaults.steps: 150\n"
                                   "  grid.stage1.learning_rate: [1.0e-3, 2.0e-3]\n  tasks.toxigen_qa.train_size: 800\n")
    spec = load_spec_file(path, ["model=tiny", "stage_defaults.steps=7", "model.max_length=100",
                                 "grid.stage1.learning_rate=[5e-3]"])
    assert spec.model.max_length == 100 and spec.chains["tqa_arc"][0].steps == 7
    assert spec.grid == {"stage1.learning_rate": (5e-3,)}
    assert spec.task_settings("toxigen_qa").train_size == 800  # untouched by --set: the block's
    # --set model=<name> names the model only; a mapping replaces the whole model, block included
    assert load_spec_file(path, ["model=tiny"]).model.max_length == 384
    assert load_spec_file(path, ["model={name: tiny, max_length: 64}"]).model.max_length == 64


def test_tiny_block_applies_only_to_the_tiny_model(tmp_path):
    path = _write(tmp_path, BASE + "tiny: {stage_defaults.steps: 150}\n")
    assert load_spec_file(path).chains["tqa_arc"][0].steps == 100
    assert load_spec_file(path, ["model=gpt2"]).chains["tqa_arc"][0].steps == 100
    assert load_spec_file(path, ["model.name=tiny"]).chains["tqa_arc"][0].steps == 150
    # a file already on the tiny model (or naming none: the default is tiny) takes it as is
    tiny_file = _write(tmp_path, BASE.replace("{name: meta-llama/Llama-2-7b-hf, max_length: 2048}", "tiny")
                       + "tiny: {stage_defaults.steps: 150}\n")
    assert load_spec_file(tiny_file).chains["tqa_arc"][0].steps == 150


def test_tiny_block_is_not_part_of_the_spec(tmp_path):
    path = _write(tmp_path, BASE + "tiny: {stage_defaults.steps: 150}\n")
    spec = load_spec_file(path)
    assert "tiny" not in spec.to_dict()
    plain = tmp_path / "plain.yaml"
    plain.write_text(BASE)
    assert load_spec_file(plain) == spec


@pytest.mark.parametrize("tiny_model", [False, True], ids=["paper", "tiny"])
def test_bad_keys_in_the_tiny_block_are_reported_with_path_and_line(tmp_path, tiny_model):
    path = _write(tmp_path, BASE + "tiny:\n"                            # line 8
                                   "  stage_defaults.stepz: 150\n"          # line 9
                                   "  model.max_length: 384\n"
                                   "  chains.nope.0.steps: 5\n"             # line 11
                                   "  chains.tqa_arc.5.steps: 5\n"          # line 12
                                   "  grid.stage1.learning_rat: [1.0]\n"    # line 13
                                   "  training.weight_decay: lots\n"        # line 14
                                   "  model: tiny\n"                        # line 15
                                   "  tasks.arc_easy: {train_size: 5, eval_sise: 3}\n")  # line 16
    problems = _problems(path, TINY if tiny_model else ())
    found = {(p.path, p.line) for p in problems}
    assert found == {("tiny.stage_defaults.stepz", 9), ("tiny.chains.nope.0.steps", 11),
                     ("tiny.chains.tqa_arc.5.steps", 12), ("tiny.grid.stage1.learning_rat", 13),
                     ("tiny.training.weight_decay", 14), ("tiny.model", 15),
                     ("tiny.tasks.arc_easy.eval_sise", 16)}, problems
    messages = {p.path: p.message for p in problems}
    assert "did you mean 'steps'" in messages["tiny.stage_defaults.stepz"]
    assert "no chain 'nope'" in messages["tiny.chains.nope.0.steps"]
    assert "no list item 5" in messages["tiny.chains.tqa_arc.5.steps"]
    assert "must be a number" in messages["tiny.training.weight_decay"]


def test_tiny_block_must_be_a_mapping(tmp_path):
    path = _write(tmp_path, BASE + "tiny: [model.max_length=384]\n")
    [problem] = _problems(path)
    assert problem.path == "tiny" and problem.line == 8 and "mapping" in problem.message


def test_bad_value_applied_by_the_tiny_block_fails_the_tiny_variant_only(tmp_path):
    path = _write(tmp_path, BASE + "tiny: {stage_defaults.learning_rate: -1.0}\n")
    load_spec_file(path)  # the paper spec is fine
    # reported as the block's key, at its line (not once per stage that inherits it)
    assert [(p.path, p.line) for p in _problems(path, TINY)] == [("tiny.stage_defaults.learning_rate", 8)]


def test_preset_file_and_tiny_block_yaml_are_plain(tmp_path):
    """Every preset's tiny block (when it has one) is a flat mapping of dotted keys."""
    for name, path in PRESETS.items():
        raw = yaml.safe_load(path.read_text())
        block = raw.get("tiny")
        if name.startswith("paper-"):
            assert isinstance(block, dict) and block
        if block is not None:
            assert all(isinstance(k, str) and "." in k for k in block)
