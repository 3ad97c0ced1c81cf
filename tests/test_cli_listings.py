"""What the CLI prints for a new user: --set's help, `study presets` wrapped to the terminal,
`study tasks` with each mirror file's presence and row count, counts in the singular."""

from __future__ import annotations

import json

import pytest

from study.cli import main
from study.presets import preset_paths, render_presets
from study.task_listing import render_tasks
from tests.mirror import MIRROR, needs_mirror


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
def test_set_has_help_text(capsys, command):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps it
    assert "--set KEY=VALUE change a field of the study file without editing it: a dotted field path" in help_text
    assert "--set stage_defaults.learning_rate=1e-4" in help_text


def test_presets_wrap_to_the_width_and_keep_every_word():
    for width in (60, 100):
        wrapped = render_presets(width)
        for line in wrapped.splitlines():
            # only a file path too long for the line may stick out: it is never broken
            assert len(line) <= width or line.strip().startswith("("), line
        assert wrapped.split() == render_presets(None).split()
    assert len(render_presets(None).splitlines()) == len(preset_paths())  # not a terminal: one line each
    demo = render_presets(60).split("\ndemo ")[1]
    assert demo.splitlines()[1].startswith(" " * 25)  # continuation lines indented under the description


def test_tasks_show_each_mirror_file_and_its_rows(tmp_path, monkeypatch):
    train = tmp_path / "arc" / "ARC-Easy" / "ARC-Easy-Train.jsonl"
    train.parent.mkdir(parents=True)
    train.write_text("".join(json.dumps({"id": str(i)}) + "\n" for i in range(3)))
    (tmp_path / "mmlu" / "val").mkdir(parents=True)
    for subject in ("anatomy", "virology"):  # a glob: two files of 2 rows each
        (tmp_path / "mmlu" / "val" / f"{subject}_val.csv").write_text("q,a,b,c,d,A\nq,a,b,c,d,B\n")
    monkeypatch.setenv("STUDY_DATA_DIR", str(tmp_path))
    text = render_tasks()
    assert text.splitlines()[0] == f"data: local mirror at {tmp_path.resolve()}"
    [arc] = [line for line in text.splitlines() if "ARC-Easy-Train.jsonl" in line]
    assert ("mirror: train: arc/ARC-Easy/ARC-Easy-Train.jsonl (3 rows); "
            "validation: arc/ARC-Easy/ARC-Easy-Dev.jsonl (missing); "
            "eval: arc/ARC-Easy/ARC-Easy-Test.jsonl (missing)") in arc
    assert "validation: mmlu/val/*_val.csv (2 files, 4 rows); eval: mmlu/test/*_test.csv (missing)" in text


@needs_mirror
def test_tasks_count_the_rows_of_the_real_mirror(monkeypatch):
    monkeypatch.setenv("STUDY_DATA_DIR", str(MIRROR))
    text = render_tasks()
    lines = (MIRROR / "arc" / "ARC-Easy" / "ARC-Easy-Train.jsonl").read_text().splitlines()
    assert f"train: arc/ARC-Easy/ARC-Easy-Train.jsonl ({len([l for l in lines if l.strip()])} rows)" in text
    assert "(missing)" not in text


def test_tasks_without_a_mirror_name_the_hub(monkeypatch):
    monkeypatch.delenv("STUDY_DATA_DIR", raising=False)
    text = render_tasks()
    assert text.splitlines()[0].startswith("data: Hugging Face Hub")
    assert "rows)" not in text and "(missing)" not in text


def test_one_trial_is_one_trial(capsys, tmp_path):
    path = tmp_path / "one.yaml"
    path.write_text("name: one\nmodel: tiny\nchains:\n  a: [{task: toxigen_qa}]\n")
    assert main(["validate", str(path)]) == 0
    assert f"{path}: valid study 'one' (1 trial)\n" in capsys.readouterr().out
