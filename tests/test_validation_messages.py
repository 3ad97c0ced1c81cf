"""Validation points at what the user wrote: `study validate` / `study run` through main(), exit
code 2 and the message and line on stderr, nothing written.

A bad stage_defaults value is reported once at its own line; a bad `--set` value as that
argument (with did-you-mean for its key); negative seeds at their line; `seeds: 3` suggests the
list; a mistyped preset name suggests the closest preset.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from study.cli import main

REPO = Path(__file__).resolve().parents[1]

STUDY = """\
name: points
model: tiny
seeds: [0, 1]
stage_defaults:
  batch_size: {batch_size}
  steps: 3
  learning_rate: 1.0e-3
chains:
  tqa_arc: [{{task: toxigen_qa}}, {{task: arc_easy}}]
  arc_tqa: [{{task: arc_easy}}, {{task: toxigen_qa}}]
"""


def _validate(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["validate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _problem_lines(err: str) -> list[str]:
    return [line.strip() for line in err.splitlines()[1:]]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_a_bad_stage_default_is_reported_once_at_its_own_line(capsys, tmp_path):
    path = _write(tmp_path, STUDY.format(batch_size="sixteen"))
    code, out, err = _validate(capsys, str(path))
    assert code == 2 and out == ""
    # four stages inherit it; one problem, at line 5 where it is written
    assert _problem_lines(err) == [f"{path}:5: stage_defaults.batch_size: must be an integer (got 'sixteen')"]


def test_a_stage_default_that_fails_a_check_is_reported_once_at_its_own_line(capsys, tmp_path):
    path = _write(tmp_path, STUDY.format(batch_size=0))
    code, _, err = _validate(capsys, str(path))
    assert code == 2
    assert _problem_lines(err) == [f"{path}:5: stage_defaults.batch_size: must be ≥ 1 (got 0)"]


def test_a_stage_that_sets_the_field_itself_keeps_its_own_line(capsys, tmp_path):
    text = STUDY.format(batch_size=0).replace("[{task: toxigen_qa}, {task: arc_easy}]",
                                              "[{task: toxigen_qa}, {task: arc_easy, batch_size: -2}]")
    path = _write(tmp_path, text)
    code, _, err = _validate(capsys, str(path))
    assert code == 2
    assert _problem_lines(err) == [f"{path}:5: stage_defaults.batch_size: must be ≥ 1 (got 0)",
                                   f"{path}:9: chains.tqa_arc[1].batch_size: must be ≥ 1 (got -2)"]


def test_a_bad_set_value_is_reported_as_that_argument(capsys, tmp_path):
    path = _write(tmp_path, STUDY.format(batch_size=16))
    code, out, err = _validate(capsys, str(path), "--set", "stage_defaults.batch_size=sixteen")
    assert code == 2 and out == ""
    assert _problem_lines(err) == [f"{path}: --set stage_defaults.batch_size=sixteen: must be an integer (got 'sixteen')"]
    # a check on a --set value: the argument again, not line 5 of the file it replaced
    code, _, err = _validate(capsys, str(path), "--set", "stage_defaults.steps=0")
    assert code == 2
    assert _problem_lines(err) == [f"{path}: --set stage_defaults.steps=0: must be ≥ 1 (got 0)"]


def test_a_set_value_below_its_key_names_the_field(capsys, tmp_path):
    path = _write(tmp_path, STUDY.format(batch_size=16))
    code, _, err = _validate(capsys, str(path), "--set", "model={name: tiny, dtype: float8}")
    assert code == 2
    [line] = _problem_lines(err)
    assert line.startswith(f"{path}: --set model={{name: tiny, dtype: float8}}: model.dtype: must be one of")


@pytest.mark.parametrize(("item", "suggestion"), [
    ("stage_defaults.lr=1e-3", "learning_rate"),
    ("stage_defaults.batch_sise=8", "batch_size"),
    ("execution.cpus_per_trail=2", "cpus_per_trial"),
])
def test_an_unknown_set_key_gets_did_you_mean(capsys, item, suggestion):
    code, _, err = _validate(capsys, "demo", "--set", item)
    assert code == 2
    key = item.partition("=")[0].rsplit(".", 1)[1]
    [line] = _problem_lines(err)
    assert line.endswith(f": --set {item}: unknown field '{key}'; did you mean '{suggestion}'?")


def test_negative_seeds_are_rejected_at_their_lines(capsys, tmp_path):
    text = (STUDY.format(batch_size=16).replace("seeds: [0, 1]", "seeds: [0, -1]\ndata_seed: -3")
            .replace("[{task: arc_easy}, {task: toxigen_qa}]", "[{task: arc_easy}, {task: toxigen_qa, seed: -7}]"))
    path = _write(tmp_path, text)
    code, _, err = _validate(capsys, str(path))
    assert code == 2
    assert _problem_lines(err) == [
        f"{path}:3: seeds[1]: must be a non-negative integer below 2**32 (got -1)",
        f"{path}:4: data_seed: must be a non-negative integer below 2**32 (got -3)",
        f"{path}:11: chains.arc_tqa[1].seed: must be a non-negative integer below 2**32 (got -7)",
    ]


def test_a_bare_seed_count_is_refused_with_the_list(capsys, tmp_path):
    path = _write(tmp_path, STUDY.format(batch_size=16).replace("seeds: [0, 1]", "seeds: 3"))
    code, _, err = _validate(capsys, str(path))
    assert code == 2
    assert _problem_lines(err) == [f"{path}:3: seeds: must be a list of seeds (got the number 3): "
                                   "[0, 1, 2] for 3 seeds, or [3] for the single seed 3"]
    code, _, err = _validate(capsys, str(path), "--set", "seeds=[3]")  # the fix the message names
    assert code == 0


@pytest.mark.parametrize(("command", "typo", "preset"), [
    ("validate", "demoo", "demo"),
    ("run", "paper-orderin", "paper-ordering"),
])
def test_a_mistyped_preset_gets_did_you_mean(tmp_path, command, typo, preset):
    # a subprocess from an empty folder: the name is no file there, and `run` writes nothing
    done = subprocess.run([sys.executable, "-m", "study", command, typo], cwd=tmp_path, capture_output=True,
                          text=True, env={**__import__("os").environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 2
    assert f"no study file or preset named '{typo}'; did you mean '{preset}'?" in done.stderr
    assert "No such file or directory" not in done.stderr
    assert list(tmp_path.iterdir()) == []
