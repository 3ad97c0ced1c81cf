"""Study-file fields of the task suite (task_files, limit, eval_modes, generation) and
`study tasks`: validation problems with paths and lines, exit codes, and what plans carry."""

from __future__ import annotations

from pathlib import Path

import pytest

from study.cli import main
from study.planner import build_plans
from study.spec_loading import load_spec_file

FIXTURES = Path(__file__).parent / "tasks"


@pytest.fixture(autouse=True)
def own_registry(monkeypatch):
    """Each test registers its YAML tasks into its own copy of the registry."""
    from tasks import clear_caches, registry

    monkeypatch.setattr(registry, "TASKS", dict(registry.TASKS))
    yield
    clear_caches()


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_study_tasks_lists_every_builtin_and_a_yaml_task(capsys):
    assert main(["tasks", str(FIXTURES / "demo_quiz.yaml")]) == 0
    out = capsys.readouterr().out
    for name in ("arc_easy", "arc_challenge", "toxigen_qa", "bbq", "mmlu", "toxigen_prompts", "saferdialogues", "demo_quiz"):
        assert f"\n{name}  [" in f"\n{out}", name
    assert "bias_score_ambig (zero)" in out and "safe (higher)" in out
    assert "groups: subject; also by category" in out
    arc = f"\n{out}".split("\narc_easy  [", 1)[1].split("\n\n", 1)[0]
    assert "splits: train, validation, eval; version 2" in arc
    assert "  validation: the release's Dev split (Hub: validation)" in arc
    assert "  option counts kept by default: 4 (tasks.arc_easy.option_counts)" in arc
    assert "option counts kept by default: all (tasks.toxigen_qa.option_counts)" in out


def test_study_tasks_with_a_bad_task_file_exits_2(tmp_path, capsys):
    bad = _write(tmp_path / "bad.yaml", "name: bad\nversion: '1'\nsourse: {}\n")
    assert main(["tasks", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3: sourse: unknown" in err


def test_validation_names_bad_task_files_modes_and_eval_only_training(tmp_path, capsys):
    _write(tmp_path / "bad_task.yaml", "name: q\nversion: '1'\nsource:\n  hub: {path: x/y, splits: {eval: test}}\n"
                                       "  mirror: {files: {eval: q.jsonl}}\nfields:\n  question: q\n  choices: [a, b]\n"
                                       "  answer: a\n  answer_format: lettr\n")
    study = _write(tmp_path / "study.yaml", "name: s\nmodel: tiny\ntask_files: [bad_task.yaml]\n"
                                            "tasks: {arc_easy: {eval_modes: [scor]}, saferdialogues: {eval_modes: [generate]}}\n"
                                            "chains: {a: [{task: mmlu}, {task: saferdialogues}]}\n"
                                            "generation: {threshold: 1.5}\n")
    assert main(["validate", str(study)]) == 2
    err = capsys.readouterr().err
    assert f"study.yaml:3: task_files[0]: {tmp_path / 'bad_task.yaml'}:10: fields.answer_format: must be one of" in err
    assert "study.yaml:5: chains.a[0].task: task 'mmlu' is evaluation-only" in err
    assert "chains.a[1].task: task 'saferdialogues' is evaluation-only" in err
    assert "study.yaml:4: tasks.arc_easy.eval_modes: unknown mode 'scor'" in err
    assert "tasks.saferdialogues.eval_modes: task 'saferdialogues' is a generation task" in err
    assert "generation.threshold: must be in (0, 1) (got 1.5)" in err


def test_sft_on_a_prompt_only_task_is_refused(tmp_path, capsys):
    study = _write(tmp_path / "study.yaml", "name: s\nmodel: tiny\nchains: {a: [{task: toxigen_prompts}]}\n")
    assert main(["validate", str(study)]) == 2
    assert "method 'sft' needs an answer task (ppo or rloo can use it)" in capsys.readouterr().err


def test_plans_carry_task_files_limits_modes_and_yaml_task_versions(tmp_path):
    study = _write(tmp_path / "study.yaml", f"""name: s
model: tiny
task_files: [{FIXTURES / 'demo_quiz.yaml'}]
data_dir: {FIXTURES}
tasks:
  demo_quiz: {{train_size: 2, limit: 3, eval_modes: [score, generate]}}
chains: {{a: [{{task: demo_quiz}}]}}
""")
    spec = load_spec_file(study)
    [plan] = [p.to_dict() for p in build_plans(spec, study_dir=tmp_path / "out", data_dir=str(FIXTURES), chat=False)]
    assert plan["task_files"] == [str(FIXTURES / "demo_quiz.yaml")]
    [stage] = plan["stages"]
    assert stage["train_limit"] == 3
    # A YAML task's version carries a hash of its file: editing it changes the stage key.
    assert stage["task_version"].startswith("1+") and len(stage["task_version"]) == 2 + 12
    [entry] = plan["eval_tasks"]
    assert (entry["task"], entry["limit"], entry["modes"]) == ("demo_quiz", 3, ["score", "generate"])
    assert entry["version"] == stage["task_version"]
    assert plan["generation"]["classifier"] == "local"  # the generate mode uses these settings


def test_limit_keeps_the_first_items_before_sampling(data_dir):
    from tasks import load_examples

    first = load_examples("arc_challenge", "eval", data_dir=data_dir, limit=5)
    assert [e.example_id for e in first] == [e.example_id for e in load_examples("arc_challenge", "eval", data_dir=data_dir)[:5]]
    sample = load_examples("arc_challenge", "eval", data_dir=data_dir, limit=5, size=3)
    assert len(sample) == 3 and {e.example_id for e in sample} <= {e.example_id for e in first}
    with pytest.raises(ValueError, match="has no 'train' split"):
        load_examples("arc_challenge", "train", data_dir=data_dir)


# --- YAML tasks where plans are built or run in another process ---------------------------------


def _quiz_search_study(tmp_path: Path) -> Path:
    task = tmp_path / "quiz.yaml"
    task.write_text((FIXTURES / "demo_quiz.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    return _write(tmp_path / "study.yaml", f"""name: s
model: tiny
task_files: [quiz.yaml]
data_dir: {FIXTURES}
tasks: {{demo_quiz: {{train_size: 2}}}}
chains: {{a: [{{task: demo_quiz}}]}}
search:
  num_samples: 2
  space: {{stage1.learning_rate: {{loguniform: [1.0e-4, 1.0e-3]}}}}
  objectives: [{{metric: demo_quiz/accuracy, mode: max}}]
""")


def test_a_sampled_point_is_planned_in_a_fresh_process_that_knows_only_builtin_tasks(tmp_path):
    """Search studies build each trial's plan inside its Ray worker, which starts without the
    study's YAML tasks: SampledPlans must register them (the same plan as in the driver)."""
    import pickle
    import subprocess
    import sys

    from study.planner import SampledPlans

    spec = load_spec_file(_quiz_search_study(tmp_path))
    lookup = SampledPlans(spec, tmp_path / "out", str(FIXTURES), chat=False)
    config = {"chain": "a", "seed": 0, "stage1.learning_rate": 3e-4}
    (tmp_path / "lookup.pkl").write_bytes(pickle.dumps((lookup, config)))
    script = ("import json, pickle, sys; lookup, config = pickle.load(open(sys.argv[1], 'rb')); "
              "print(json.dumps(lookup(config).stages[0].task_version))")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "lookup.pkl")], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f'"{lookup(config).stages[0].task_version}"'


def test_a_worker_refuses_a_yaml_task_that_changed_since_planning(tmp_path):
    from trainables.chain import register_plan_tasks

    study = _quiz_search_study(tmp_path)
    spec = load_spec_file(study)
    from study.planner import SampledPlans

    plan = SampledPlans(spec, tmp_path / "out", str(FIXTURES), chat=False)({"chain": "a", "seed": 0,
                                                                           "stage1.learning_rate": 3e-4})
    register_plan_tasks(plan)  # unchanged: fine
    task = tmp_path / "quiz.yaml"
    task.write_text(task.read_text(encoding="utf-8").replace("description:", "description: edited,"), encoding="utf-8")
    with pytest.raises(ValueError, match="changed since the study was planned"):
        register_plan_tasks(plan)


def test_search_study_with_an_unknown_task_is_bad_input_not_a_crash(tmp_path, capsys):
    study = _write(tmp_path / "study.yaml", """name: s
model: tiny
chains: {a: [{task: arc_easyy}]}
search:
  num_samples: 2
  space: {stage1.learning_rate: {loguniform: [1.0e-4, 1.0e-3]}}
  objectives: [{metric: arc_easy/accuracy, mode: max}]
""")
    assert main(["validate", str(study)]) == 2
    assert "unknown task 'arc_easyy'; did you mean 'arc_easy'?" in capsys.readouterr().err


def test_prompt_only_stages_cannot_feed_replay_best_seed_or_curvature(tmp_path, capsys):
    study = _write(tmp_path / "study.yaml", """name: s
model: tiny
stage_defaults: {method: sft}
chains:
  replayed: [{task: toxigen_prompts, method: ppo, ppo: {reward: {model: some/reward}}},
             {task: arc_easy, replay: {from_stage: 1, fraction: 0.1}}]
  picked: [{task: toxigen_prompts, method: ppo, ppo: {reward: {model: some/reward}}},
           {task: arc_easy, start_from: best_seed}]
curvature: {enabled: true, stages: [1]}
seeds: [0, 1]
""")
    assert main(["validate", str(study)]) == 2
    err = capsys.readouterr().err
    assert "chains.replayed[1].replay.from_stage: stage 1 trains on prompt-only task 'toxigen_prompts'" in err
    assert "chains.picked[1].start_from: best_seed picks by accuracy" in err
    assert "curvature.stages: stage 1 trains on prompt-only task 'toxigen_prompts'" in err


def test_set_task_files_is_relative_to_the_study_file(tmp_path, monkeypatch):
    (tmp_path / "quiz.yaml").write_text((FIXTURES / "demo_quiz.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    study = _write(tmp_path / "study.yaml", f"name: s\nmodel: tiny\ndata_dir: {FIXTURES}\nchains: {{a: [{{task: demo_quiz}}]}}\n")
    monkeypatch.chdir(FIXTURES.parent)  # somewhere else
    spec = load_spec_file(study, ["task_files=quiz.yaml"])
    assert spec.task_files == (str(tmp_path / "quiz.yaml"),)


def test_the_local_classifier_needs_its_training_file_in_the_mirror(tmp_path, data_dir, capsys):
    mirror = tmp_path / "mirror"
    (mirror / "toxigen").mkdir(parents=True)
    for part in ("prompts", "safenlp"):  # everything but annotated_train_v1/
        (mirror / "toxigen" / part).symlink_to(data_dir / "toxigen" / part)
    study = _write(tmp_path / "study.yaml", f"name: s\nmodel: tiny\ndata_dir: {mirror}\n"
                                            "chains: {a: [{task: toxigen_qa}]}\neval_tasks: [toxigen_qa, toxigen_prompts]\n")
    assert main(["validate", str(study)]) == 2
    assert "generation.classifier: the local classifier trains on" in capsys.readouterr().err
    assert main(["validate", str(study), "--set", "generation.classifier=tomh/toxigen_roberta"]) == 0
