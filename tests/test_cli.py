"""The `study` command line: validate, presets, report; exit codes and messages (no Ray started)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from study.cli import main
from study.presets import preset_paths
from tests.mirror import needs_mirror

REPO = Path(__file__).resolve().parents[1]
SPECS = Path(__file__).parent / "specs"


def test_validate_valid_file(capsys):
    path = SPECS / "valid_small.yaml"
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    # 2 chains × 2 grid values × 2 seeds; after what the study needs (tests/test_needs.py), then the data source
    lines = out.strip().splitlines()
    valid = lines.index(f"{path}: valid study 'small' (8 trials)")
    assert all(line.startswith("needs: ") for line in lines[:valid])
    assert lines[valid + 1].startswith("data: ")  # which source the study reads (tests/test_data_source.py)
    assert err == ""


def test_validate_preset_by_name(capsys):
    assert main(["validate", "demo"]) == 0
    out, _ = capsys.readouterr()
    assert "valid study 'demo'" in out
    assert "(4 trials)" in out
    assert str(preset_paths()["demo"]) in out


def test_validate_with_set_changes_the_trial_count(capsys):
    assert main(["validate", "demo", "--set", "seeds=[0,1,2]", "--set", "grid.stage1.learning_rate=[1e-3]"]) == 0
    out, _ = capsys.readouterr()
    assert "(6 trials)" in out  # 2 chains × 1 grid value × 3 seeds


def test_validate_invalid_file_exits_2_with_path_and_line(capsys):
    path = SPECS / "invalid_unknown_stage_key.yaml"
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{path}:5: chains.a[0].learning_rte: unknown field 'learning_rte'; did you mean 'learning_rate'?" in err


def test_validate_misspelt_seed_scope_exits_2_with_line_and_suggestion(capsys):
    path = SPECS / "invalid_seed_scope.yaml"
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"{path}: 1 problem", f"  {path}:5: seed_scope: must be one of 'order', "
                                "'order_and_data' (got 'order_and_dta'); did you mean 'order_and_data'?"]


def test_validate_lists_every_problem(capsys):
    path = SPECS / "many_semantic_problems.yaml"
    assert main(["validate", str(path)]) == 2
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert lines[0] == f"{path}: 6 problems"
    assert len(lines) == 7
    assert f"{path}:10: seeds: seeds must be distinct" in err
    assert f"{path}:12: execution.cpus_per_trial:" in err


def test_validate_bad_set_path_exits_2(capsys):
    assert main(["validate", "demo", "--set", "chains.tqa_arc.7.steps=1"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "--set chains.tqa_arc.7.steps=1: 'chains.tqa_arc.7': no list item 7 (the list has 2)" in err


def test_validate_set_without_equals_exits_2(capsys):
    assert main(["validate", "demo", "--set", "seeds"]) == 2
    assert "expected key=value" in capsys.readouterr().err


def test_validate_missing_file_exits_2(capsys, tmp_path):
    missing = tmp_path / "absent.yaml"
    assert main(["validate", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "cannot read study file" in err


def test_presets_lists_demo(capsys):
    assert main(["presets"]) == 0
    out, _ = capsys.readouterr()
    [line] = [l for l in out.splitlines() if l.split()[0] == "demo"]
    assert "Demo: tiny model" in line
    assert str(preset_paths()["demo"]) in line


def test_report_on_a_missing_folder_exits_2(capsys, tmp_path):
    missing = tmp_path / "no_results_here"
    assert main(["report", str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("study: ")
    assert "no_results_here" in err
    assert not missing.exists()  # nothing was created


def test_unknown_command_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["launch", "demo"])
    assert info.value.code == 2


def test_python_dash_m_study_validate_invalid_starts_nothing():
    """The real entry point: exit 2, the problem on stderr, and neither ray nor torch imported."""
    path = SPECS / "invalid_negative_lr.yaml"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "study", "validate", str(path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stdout == ""
    assert f"{path}:5: chains.a[0].learning_rate: must be > 0" in proc.stderr
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "study.cli" in imported  # the import trace really was captured
    assert not {m for m in imported if m == "ray" or m.startswith("ray.")}
    assert "torch" not in imported


def test_storage_option_is_a_path_not_yaml(monkeypatch, tmp_path):
    """`--storage "/data/run #2"` must stay whole ('#' would start a YAML comment)."""
    import study.orchestrate

    seen = {}

    def fake_run_study(spec, **kwargs):
        seen["storage"] = spec.storage
        return study.orchestrate.RunOutcome(study_dir=tmp_path, trials=0, failed=[], report=None)

    monkeypatch.setattr(study.orchestrate, "run_study", fake_run_study)
    assert main(["run", str(SPECS / "valid_small.yaml"), "--storage", "/data/run #2"]) == 0
    assert seen["storage"] == "/data/run #2"


def test_a_second_run_of_a_busy_study_folder_is_refused_with_exit_2(tmp_path, capsys):
    """While one `study run` holds <storage>/<name>/.run.lock, another is refused before it
    starts anything (it would retrain stages the first is using)."""
    import fcntl

    from study.cli import main

    study_file = tmp_path / "busy.yaml"
    study_file.write_text(f"name: busy\nmodel: tiny\nchains: {{c: [{{task: arc_easy}}]}}\nstorage: {tmp_path}\n")
    (tmp_path / "busy").mkdir()
    with open(tmp_path / "busy" / ".run.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert main(["run", str(study_file)]) == 2
    assert "another `study run` is using" in capsys.readouterr().err
    assert not (tmp_path / "busy" / "plans.json").exists()


# ---------------------------------------------------------------- checks that read the data

DATA_CHECKS = """\
name: data_checks
model: tiny
tasks:
  toxigen_qa:
    option_counts: [4]
  arc_easy: {{option_counts: [3, 4, 5]}}
chains:
  arc_first:
    - {{task: arc_easy}}
    - task: bbq
      start_from: best_seed
      selection_size: 600
seeds: [0, 1]
storage: {storage}
"""


@needs_mirror
def test_option_counts_emptying_a_task_and_a_short_validation_split_exit_2_with_their_lines(tmp_path, capsys):
    """`study validate` and `study run`: option_counts [4] keeps nothing of ToxiGenQA (2 options),
    and ARC-Easy's Dev split has 570 questions with all option counts, fewer than the 600 asked
    for; both are named with their line, exit 2, and `run` writes nothing."""
    path = tmp_path / "data_checks.yaml"
    storage = tmp_path / "results"
    path.write_text(DATA_CHECKS.format(storage=storage) + "eval_tasks: [toxigen_qa, arc_easy]\n")
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[0] == f"{path}: 2 problems"
    assert (f"{path}:5: tasks.toxigen_qa.option_counts: [4] keeps no item of task 'toxigen_qa': its eval split "
            "has 3509 with 2 options") in err
    assert (f"{path}:12: chains.arc_first[1].selection_size: task 'arc_easy' has 570 validation examples "
            "(after option_counts and limit) for best_seed to pick on, fewer than selection_size 600; "
            "lower selection_size to at most 570") in err
    assert main(["run", str(path)]) == 2
    assert "chains.arc_first[1].selection_size" in capsys.readouterr().err
    assert not storage.exists()
    # Lowering selection_size (or keeping the default) and a task-appropriate option_counts pass.
    assert main(["validate", str(path), "--set", "chains.arc_first.1.selection_size=570",
                 "--set", "tasks.toxigen_qa.option_counts=[2]"]) == 0
    # The default four-option ARC has 567 Dev questions: 570 is then too many.
    assert main(["validate", str(path), "--set", "chains.arc_first.1.selection_size=570",
                 "--set", "tasks.toxigen_qa.option_counts=null", "--set", "tasks.arc_easy.option_counts=null"]) == 2
    assert "task 'arc_easy' has 567 validation examples" in capsys.readouterr().err
