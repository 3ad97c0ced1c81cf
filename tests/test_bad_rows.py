"""Bad rows of task data: every reader reports one as FILE:LINE (field ...), `study run` and
`study validate --data` refuse them with exit 2 before writing anything, and `data.bad_rows: skip`
leaves them out, records them and keys the study's stages by them.

Corrupted copies of the real mirror's files are built in tmp_path (unchanged files symlinked)."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest

from contract.records import RunCounts, RunRecord, SkippedRow, read_record, write_record
from study import cli
from study.spec import DataSpec
from tasks import clear_caches, load_examples, registry
from tasks.bad_rows import POLICIES, BadRowsError
from tasks.loading import split_bad_rows
from tasks.task_file_problems import TaskFileError
from tasks.task_file_registration import register_task_file
from tests.fake_hub import fake_datasets

ARC_TRAIN = "arc/ARC-Easy/ARC-Easy-Train.jsonl"
TOXIGEN = "toxigen/safenlp/toxiGen.json"


@pytest.fixture(autouse=True)
def fresh_caches(monkeypatch):
    monkeypatch.setattr(registry, "TASKS", dict(registry.TASKS))
    clear_caches()
    yield
    clear_caches()


def mirror_copy(data_dir: Path, root: Path, *corrupted: str) -> Path:
    """A mirror in `root`: the `corrupted` files copied (to be edited), every other file a symlink."""
    for path in data_dir.rglob("*"):
        if path.is_file():
            relative = path.relative_to(data_dir).as_posix()
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if relative in corrupted:
                target.write_bytes(path.read_bytes())
            else:
                target.symlink_to(path)
    return root


def edit_line(path: Path, number: int, change) -> str:
    """Replace line `number` (1-based) of a text file by change(line); returns the old line."""
    lines = path.read_text(encoding="utf-8").split("\n")
    old = lines[number - 1]
    lines[number - 1] = change(old)
    path.write_text("\n".join(lines), encoding="utf-8")
    return old


def break_json(line: str) -> str:
    """A raw control character inside the first string value (the id, at column 10): the issue's
    "Invalid control character"."""
    at = line.index('":"') + 5
    return line[:at] + "\x01" + line[at:]


def drop_field(field: str):
    def change(line: str) -> str:
        row = json.loads(line)
        del row[field]
        return json.dumps(row)
    return change


# --- each format and source, with its message and line -------------------------------------


def test_jsonl_bad_json_names_file_and_line(data_dir, tmp_path):
    mirror = mirror_copy(data_dir, tmp_path / "m", ARC_TRAIN)
    edit_line(mirror / ARC_TRAIN, 7, break_json)
    with pytest.raises(BadRowsError) as caught:
        load_examples("arc_easy", "train", data_dir=mirror)
    (problem,) = caught.value.problems
    assert str(problem) == f"{mirror / ARC_TRAIN}:7: not valid JSON: Invalid control character at column 10"
    # skip: the row is left out, the rest read as before
    whole = load_examples("arc_easy", "train", data_dir=data_dir)
    skipped = load_examples("arc_easy", "train", data_dir=mirror, bad_rows="skip")
    assert len(skipped) == len(whole) - 1


def test_jsonl_missing_field_names_the_field(data_dir, tmp_path):
    mirror = mirror_copy(data_dir, tmp_path / "m", ARC_TRAIN)
    edit_line(mirror / ARC_TRAIN, 3, drop_field("answerKey"))
    with pytest.raises(BadRowsError) as caught:
        load_examples("arc_easy", "train", data_dir=mirror)
    assert [str(p) for p in caught.value.problems] == [f"{mirror / ARC_TRAIN}:3: missing field (field 'answerKey')"]


def test_jsonl_answer_naming_no_option(data_dir, tmp_path):
    mirror = mirror_copy(data_dir, tmp_path / "m", ARC_TRAIN)
    edit_line(mirror / ARC_TRAIN, 5, lambda line: json.dumps({**json.loads(line), "answerKey": "Z"}))
    (problem,) = split_bad_rows("arc_easy", "train", mirror)
    assert problem.file == str(mirror / ARC_TRAIN) and problem.line == 5
    assert "answerKey 'Z' not among labels" in problem.message and problem.message.endswith("(field 'answerKey')")


def _toxigen_object_lines(text: str) -> list[int]:
    return [i for i, line in enumerate(text.split("\n"), start=1) if line.lstrip().startswith(("[{", "}, {"))]


def test_json_list_row_at_the_line_its_object_starts(data_dir, tmp_path):
    mirror = mirror_copy(data_dir, tmp_path / "m", TOXIGEN)
    path = mirror / TOXIGEN
    text = path.read_text(encoding="utf-8")
    starts = _toxigen_object_lines(text)
    # the 4th object's label: "hate" -> "hateful"; its object starts on the line of "}, {"
    label_line = next(i for i, line in enumerate(text.split("\n"), start=1)
                      if i > starts[3] and '"label"' in line)
    edit_line(path, label_line, lambda line: line.replace('"hate"', '"hateful"').replace('"neutral"', '"hateful"'))
    with pytest.raises(BadRowsError) as caught:
        load_examples("toxigen_qa", "eval", data_dir=mirror)
    (problem,) = caught.value.problems
    assert problem.file == str(path) and problem.line == starts[3]
    assert "unexpected label 'hateful'" in problem.message and problem.message.endswith("(field 'label')")


def test_json_list_syntax_error_refuses_the_file_even_under_skip(data_dir, tmp_path):
    mirror = mirror_copy(data_dir, tmp_path / "m", TOXIGEN)
    edit_line(mirror / TOXIGEN, 4, lambda line: line.replace('": ', '" '))  # "toxicity_score" 5.0
    for policy in POLICIES:
        with pytest.raises(BadRowsError) as caught:
            load_examples("toxigen_qa", "eval", data_dir=mirror, bad_rows=policy)
        (problem,) = caught.value.problems
        assert problem.line == 4 and problem.message.startswith("not valid JSON: Expecting ':' delimiter")


def test_csv_record_with_missing_columns(data_dir, tmp_path):
    name = "mmlu/test/anatomy_test.csv"
    mirror = mirror_copy(data_dir, tmp_path / "m", name)
    path = mirror / name
    path.write_text(path.read_text(encoding="utf-8") + "Broken question?,a,b,C\n", encoding="utf-8")
    last = len(path.read_text(encoding="utf-8").splitlines())
    with pytest.raises(BadRowsError) as caught:
        load_examples("mmlu", "eval", data_dir=mirror)
    (problem,) = caught.value.problems
    assert problem.file == str(path) and problem.line == last
    assert "has 4 columns, expected 6 (question, A, B, C, D, answer)" in problem.message


TASK_FILE = """\
name: bad_quiz
version: "1"
source:
  hub: {{path: example-org/bad-quiz, splits: {{eval: test}}}}
  mirror: {{files: {{eval: {file}}}}}
fields:
  id: id
  question: q
  choices: [c1, c2, c3]
  answer: right
  answer_format: text
"""


@pytest.mark.parametrize("file, content, line, message", [
    ("quiz/eval.jsonl",
     '{"id": "a", "q": "?", "c1": "x", "c2": "y", "c3": "z", "right": "x"}\n\n'
     '{"id": "b", "c1": "x", "c2": "y", "c3": "z", "right": "x"}\n',
     3, "the row has no field 'q' (its fields: id, c1, c2, c3, right) (field 'q')"),
    ("quiz/eval.jsonl",
     '{"id": "a", "q": "?", "c1": "x", "c2": "y", "c3": "z", "right": "x"}\n{"id": "b", "q": "?",\n',
     2, "not valid JSON: Expecting property name enclosed in double quotes at column 22"),
    ("quiz/eval.json",
     '[\n  {"id": "a", "q": "?", "c1": "x", "c2": "y", "c3": "z", "right": "x"},\n'
     '  {"id": "b", "q": "?", "c1": "x", "c2": "y", "c3": "z", "right": "w"}\n]\n',
     3, "answer 'w' is not one of the choices ['x', 'y', 'z'] (field 'right')"),
    ("quiz/eval.csv",
     'id,q,c1,c2,c3,right\na,"A question,\nover two lines?",x,y,z,x\nb,?,x,y,x\n',
     4, "record 2 has 5 cells, expected 6 (id, q, c1, c2, c3, right)"),
])
def test_task_file_data_rows(tmp_path, file, content, line, message):
    (tmp_path / "quiz").mkdir()
    (tmp_path / file).write_text(content, encoding="utf-8")
    task_file = tmp_path / "bad_quiz.yaml"
    task_file.write_text(TASK_FILE.format(file=file), encoding="utf-8")
    register_task_file(task_file)
    assert [str(p) for p in split_bad_rows("bad_quiz", "eval", tmp_path)] == [f"{tmp_path / file}:{line}: {message}"]
    # loaded directly, a row the parser refuses keeps the task file's own report (its mapping's
    # line); a line that holds no row is reported at its line
    with pytest.raises((TaskFileError, BadRowsError)):
        load_examples("bad_quiz", "eval", data_dir=tmp_path)
    assert len(load_examples("bad_quiz", "eval", data_dir=tmp_path, bad_rows="skip")) == 1


ARC_HUB_ROW = {"id": "q1", "question": "Which?", "choices": {"text": ["a", "b", "c", "d"], "label": list("ABCD")},
               "answerKey": "B"}


def test_hub_rows_are_named_by_dataset_split_and_position(monkeypatch):
    rows = [ARC_HUB_ROW, {k: v for k, v in ARC_HUB_ROW.items() if k != "answerKey"} | {"id": "q2"},
            {**ARC_HUB_ROW, "id": "q3", "choices": None}]
    with fake_datasets(monkeypatch, rows):
        with pytest.raises(BadRowsError) as caught:
            load_examples("arc_easy", "train")
        assert [str(p) for p in caught.value.problems] == [
            "hub:allenai/ai2_arc/ARC-Easy/train:2: missing field (field 'answerKey')",
            "hub:allenai/ai2_arc/ARC-Easy/train:3: TypeError: 'NoneType' object is not subscriptable",
        ]
        assert [e.example_id for e in load_examples("arc_easy", "train", bad_rows="skip")] == ["arc_easy/q1"]


def test_an_unknown_policy_is_refused(data_dir):
    with pytest.raises(ValueError, match="bad_rows must be one of error, skip"):
        load_examples("arc_easy", "eval", data_dir=data_dir, bad_rows="ignore")
    # the study file's choices are the loader's
    assert typing.get_args(typing.get_type_hints(DataSpec)["bad_rows"]) == POLICIES


# --- the CLI: exit 2 before anything is written; validate --data --------------------------


def test_study_run_on_a_broken_arc_line_exits_2_and_writes_nothing(data_dir, tmp_path, monkeypatch, capsys):
    """The issue's reproduction: one broken line in ARC-Easy-Train.jsonl."""
    mirror = mirror_copy(data_dir, tmp_path / "m", ARC_TRAIN)
    edit_line(mirror / ARC_TRAIN, 7, break_json)
    monkeypatch.setenv("STUDY_DATA_DIR", str(mirror))
    storage = tmp_path / "results"
    assert cli.main(["run", "demo", "--storage", str(storage), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert f"{mirror / ARC_TRAIN}:7: not valid JSON: Invalid control character at column 10" in err
    assert "Traceback" not in err and not storage.exists()


def test_validate_data_passes_on_the_demo_preset(data_dir, monkeypatch, capsys):
    monkeypatch.setenv("STUDY_DATA_DIR", str(data_dir))
    assert cli.main(["validate", "demo", "--data"]) == 0
    out = capsys.readouterr().out
    assert "data: 4 splits of 2 tasks read from" in out and "no bad rows" in out


def test_validate_data_lists_every_bad_row_at_once(data_dir, tmp_path, monkeypatch, capsys):
    mirror = mirror_copy(data_dir, tmp_path / "m", ARC_TRAIN, "arc/ARC-Easy/ARC-Easy-Test.jsonl")
    edit_line(mirror / ARC_TRAIN, 7, break_json)
    edit_line(mirror / ARC_TRAIN, 9, drop_field("question"))
    edit_line(mirror / "arc/ARC-Easy/ARC-Easy-Test.jsonl", 2, drop_field("answerKey"))
    monkeypatch.setenv("STUDY_DATA_DIR", str(mirror))
    assert cli.main(["validate", "demo", "--data"]) == 2
    err = capsys.readouterr().err
    assert "3 bad data rows" in err
    for where in ("ARC-Easy-Train.jsonl:7: not valid JSON", "ARC-Easy-Train.jsonl:9: missing field (field 'question')",
                  "ARC-Easy-Test.jsonl:2: missing field (field 'answerKey')"):
        assert where in err
    # skip: listed, exit 0
    assert cli.main(["validate", "demo", "--data", "--set", "data.bad_rows=skip"]) == 0
    out = capsys.readouterr().out
    assert "data.bad_rows: skip: 3 bad rows left out:" in out and "3 bad rows skipped" in out


# --- skip: the keys, the run record, study status ------------------------------------------


def test_skip_keys_the_stages_by_the_skipped_rows(data_dir, tmp_path, monkeypatch):
    from study.data_check import check_data
    from study.planner import build_plans
    from study.spec_loading import load_spec_file

    mirror = mirror_copy(data_dir, tmp_path / "m", ARC_TRAIN)
    edit_line(mirror / ARC_TRAIN, 7, break_json)
    monkeypatch.setenv("STUDY_DATA_DIR", str(mirror))
    error_spec = load_spec_file("study/presets/demo.yaml", [])
    skip_spec = load_spec_file("study/presets/demo.yaml", ["data.bad_rows=skip"])
    with pytest.raises(BadRowsError):
        check_data(error_spec)
    check = check_data(skip_spec)
    assert check.rows() == [(ARC_TRAIN, 7, "not valid JSON: Invalid control character at column 10")]

    def keys(spec, bad_rows=None):
        plans = build_plans(spec, study_dir=tmp_path / "s", data_dir=str(mirror), chat=False, bad_rows=bad_rows)
        return plans, [s.stage_key for p in plans for s in p.stages]

    plain, plain_keys = keys(error_spec)
    # skip set, but no plan of skipped rows: the keys are the error study's (nothing enters them)
    assert keys(skip_spec)[1] == plain_keys and "bad_rows" not in plain[0].to_dict()
    skipping, skip_keys = keys(skip_spec, check.plan())
    assert not set(skip_keys) & set(plain_keys)
    assert skipping[0].to_dict()["bad_rows"] == {"policy": "skip", "skipped": 1, "digest": check.plan().digest}
    assert skipping[0].bad_rows_policy == "skip" and plain[0].bad_rows_policy == "error"
    # the same corruption in a mirror elsewhere keys alike (files relative to the data dir)
    other = mirror_copy(data_dir, tmp_path / "m2", ARC_TRAIN)
    edit_line(other / ARC_TRAIN, 7, break_json)
    monkeypatch.setenv("STUDY_DATA_DIR", str(other))
    clear_caches()
    assert check_data(load_spec_file("study/presets/demo.yaml", ["data.bad_rows=skip"])).plan() == check.plan()


def test_skipped_rows_in_the_run_record_and_study_status(tmp_path):
    from analysis.status import render_status, study_status
    from contract.layout import StudyLayout

    layout = StudyLayout(tmp_path)
    layout.plans.write_text("[]")
    counts = RunCounts(trials=0, trials_skipped=0, stage_trainings_naive=0, distinct_stages=0,
                       stage_trainings_executed=0, stages_reused_from_earlier_runs=0)
    rows = (SkippedRow(ARC_TRAIN, 7, "not valid JSON: Invalid control character at column 10"),
            SkippedRow("hub:allenai/ai2_arc/ARC-Easy/train", 2, "missing field (field 'answerKey')"))
    layout.runs.mkdir(parents=True, exist_ok=True)
    write_record(layout.run("r1"), RunRecord(run_id="r1", resume=False, started=1.0, finished=2.0, counts=counts,
                                             failed=(), skipped_rows=rows))
    data = json.loads(layout.run("r1").read_text())
    assert data["rows_skipped"] == 2
    assert data["skipped_rows"][0] == {"file": ARC_TRAIN, "line": 7,
                                       "reason": "not valid JSON: Invalid control character at column 10"}
    assert read_record(RunRecord, layout.run("r1")).skipped_rows == rows
    text = render_status(study_status(tmp_path))
    assert "skipped data rows (data.bad_rows: skip): 2" in text
    assert f"  {ARC_TRAIN}:7: not valid JSON" in text
    assert "  hub:allenai/ai2_arc/ARC-Easy/train:2: missing field (field 'answerKey')" in text
    # a run without skipped rows writes the record as before
    write_record(layout.run("r2"), RunRecord(run_id="r2", resume=False, started=3.0, finished=4.0, counts=counts,
                                             failed=()))
    assert "skipped_rows" not in json.loads(layout.run("r2").read_text())


@pytest.mark.slow
def test_a_skip_study_runs_on_ray_and_records_what_it_skipped(ray_cluster, data_dir, tmp_path):
    """data.bad_rows: skip through a real `study run`: the trial trains on the other rows, the run
    record and `study status` list the skipped rows, plans.json carries them, and its stage keys
    differ from the same study's on the clean mirror."""
    from analysis.status import render_status, study_status
    from contract.layout import StudyLayout
    from study.orchestrate import run_study
    from study.planner import build_plans
    from study.spec_loading import spec_from_dict

    mirror = mirror_copy(data_dir, tmp_path / "m", ARC_TRAIN)
    edit_line(mirror / ARC_TRAIN, 7, break_json)
    edit_line(mirror / ARC_TRAIN, 9, drop_field("answerKey"))

    def spec(data, bad_rows):
        return spec_from_dict({
            "name": "skip", "model": {"name": "tiny", "max_length": 256},
            "tasks": {"arc_easy": {"train_size": 32, "eval_size": 20}}, "eval_tasks": ["arc_easy"],
            "stage_defaults": {"learning_rate": 3e-3, "batch_size": 8, "steps": 2},
            "chains": {"arc": [{"task": "arc_easy"}]}, "seeds": [0], "data_dir": str(data),
            "storage": str(tmp_path / "results"), "execution": {"executor": "function", "cpus_per_trial": 1},
            "data": {"bad_rows": bad_rows},
        })

    outcome = run_study(spec(mirror, "skip"), report=False)
    assert outcome.failed == []
    layout = StudyLayout(outcome.study_dir)
    (run_file,) = layout.runs.glob("*.json")
    record = json.loads(run_file.read_text())
    assert record["rows_skipped"] == 2
    assert [(r["file"], r["line"]) for r in record["skipped_rows"]] == [(ARC_TRAIN, 7), (ARC_TRAIN, 9)]
    text = render_status(study_status(outcome.study_dir))
    assert "skipped data rows (data.bad_rows: skip): 2" in text and f"{ARC_TRAIN}:9: missing field" in text
    (plan,) = json.loads(layout.plans.read_text())
    assert plan["bad_rows"]["skipped"] == 2
    clean = build_plans(spec(data_dir, "error"), study_dir=outcome.study_dir, data_dir=str(data_dir),
                        base_model_path=plan["model"]["path"], chat=False)
    assert clean[0].stages[0].stage_key != plan["stages"][0]["stage_key"]
