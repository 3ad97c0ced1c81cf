"""YAML-declared multiple-choice tasks: the fixture tasks in tests/tasks/ load through the normal
load_examples path, and every kind of mistake in a task file is reported at its file:line."""

import json
import shutil
from pathlib import Path

import pytest

from tests.fake_hub import fake_datasets
from tasks import clear_caches, get_task, load_examples, loading, registry
from tasks.task_file_problems import TaskFileError
from tasks.task_file_registration import load_task_file, register_task_file
from tasks.templates import multiple_choice_instruction

FIXTURES = Path(__file__).resolve().parent / "tasks"  # also the data dir of the fixture tasks
QUIZ = FIXTURES / "demo_quiz.yaml"
QUIZ_CSV = FIXTURES / "demo_quiz_csv.yaml"


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch):
    """Each test registers into its own copy of the registry, and starts and ends with no cached
    examples: task names from one test never leak into another."""
    monkeypatch.setattr(registry, "TASKS", dict(registry.TASKS))
    monkeypatch.delenv("STUDY_DATA_DIR", raising=False)
    clear_caches()
    yield
    clear_caches()


def _by_id(name, split, data_dir=FIXTURES):
    return {e.example_id: e for e in load_examples(name, split, data_dir=data_dir)}


def _body(example):
    return example.prompt.split("\nPrompt: ")[1].removesuffix("\nAnswer:")


# --- the jsonl fixture ---


def test_jsonl_fixture_registers_and_loads():
    definition = register_task_file(QUIZ)
    assert get_task("demo_quiz") is definition
    # No validation split in the file: one is held out of its train split.
    assert definition.kind == "choice" and definition.splits == ("train", "validation", "eval") and definition.trainable
    assert definition.validation.startswith("10% of the train split")
    assert definition.version == "1" and definition.origin == str(QUIZ)
    assert definition.group_field == "topics" and definition.groupings == ("level",)
    assert definition.metric_names() == ("accuracy",) and definition.metrics[0].direction == "higher"
    assert definition.remote_source == "datasets.load_dataset('example-org/demo-quiz', None)"

    examples = _by_id("demo_quiz", "eval")
    assert list(examples) == [f"demo_quiz/e{i}" for i in range(1, 7)]
    e1 = examples["demo_quiz/e1"]
    assert e1.prompt == (
        f"Instructions: {multiple_choice_instruction(4)}\n"
        "Prompt: Question: Which planet is closest to the Sun? A. Venus. B. Mercury. C. Mars. D. Earth.\n"
        "Answer:"
    )
    assert e1.completion == " The best answer is B." and e1.label == 1
    assert e1.groups == ("astronomy",) and e1.facets == (("level", "easy"),)
    # A context goes before the question, as in the paper's BBQ template.
    assert _body(examples["demo_quiz/e3"]) == (
        "Mars has two small moons, Phobos and Deimos. Question: How many moons does Mars have? "
        "A. None. B. One. C. Two. D. Four.")
    # Option counts other than four change the instruction; a list of groups is kept in order.
    assert multiple_choice_instruction(3) in examples["demo_quiz/e2"].prompt
    assert examples["demo_quiz/e2"].groups == ("biology", "chemistry")
    assert examples["demo_quiz/e4"].option_names == ("A", "B", "C", "D", "E")
    # A plain string is one group; repeats count once; a null facet value is no facet.
    assert examples["demo_quiz/e3"].groups == ("astronomy",)
    assert examples["demo_quiz/e6"].groups == ("chemistry",) and examples["demo_quiz/e6"].facets == ()
    assert examples["demo_quiz/e6"].label == 1  # "1" read as an index
    assert [e.label for e in examples.values()] == [1, 2, 2, 0, 1, 1]

    # The train file's rows split into the training pool and the held-out validation split
    # (t2's prompt hashes into the first 10%).
    train = load_examples("demo_quiz", "train", data_dir=FIXTURES)
    assert [e.example_id for e in train] == ["demo_quiz/t1", "demo_quiz/t3"]
    assert [e.example_id for e in load_examples("demo_quiz", "validation", data_dir=FIXTURES)] == ["demo_quiz/t2"]
    assert load_examples("demo_quiz", "train", size=2, data_dir=FIXTURES, data_seed=1)  # sampling works too


def test_registering_the_same_file_again_is_fine():
    first = register_task_file(QUIZ)
    load_examples("demo_quiz", "eval", data_dir=FIXTURES)
    assert register_task_file(str(QUIZ)) == first
    assert load_task_file(QUIZ) == first
    assert loading._split_examples.cache_info().currsize == 1  # an unchanged file keeps its examples


def test_an_edited_file_replaces_its_task_and_the_cached_examples(tmp_path):
    copy = tmp_path / "quiz.yaml"
    shutil.copytree(FIXTURES / "demo_quiz", tmp_path / "demo_quiz")
    copy.write_text(QUIZ.read_text())
    register_task_file(copy)
    before = _by_id("demo_quiz", "eval", tmp_path)["demo_quiz/e1"]
    copy.write_text(QUIZ.read_text().replace('answer_prefix: " The best answer is"', 'answer_prefix: " So:"'))
    register_task_file(copy)
    after = _by_id("demo_quiz", "eval", tmp_path)["demo_quiz/e1"]
    assert (before.completion, after.completion) == (" The best answer is B.", " So: B.")


def test_a_name_taken_by_another_task_is_reported_at_the_name_line(tmp_path):
    register_task_file(QUIZ)
    other = tmp_path / "other.yaml"
    other.write_text(QUIZ.read_text().replace("description: Hand-written", "description: Another"))
    with pytest.raises(TaskFileError) as caught:
        register_task_file(other)
    assert str(caught.value).startswith(f"{other}:{_line_of(QUIZ.read_text(), 'name:')}: name: task 'demo_quiz'")
    builtin = tmp_path / "arc.yaml"
    builtin.write_text(QUIZ.read_text().replace("name: demo_quiz", "name: arc_easy"))
    with pytest.raises(TaskFileError, match="clashes"):
        register_task_file(builtin)


# --- the csv fixture ---


def test_csv_fixture_without_a_header_with_its_own_template():
    definition = register_task_file(QUIZ_CSV)
    assert definition.splits == ("eval",) and definition.version == "2" and definition.group_field == "subject"
    examples = load_examples("demo_quiz_csv", "eval", data_dir=FIXTURES)
    assert [e.example_id for e in examples] == [f"demo_quiz_csv/{i}" for i in range(1, 5)]
    assert [e.groups for e in examples] == [("geography",)] * 2 + [("arithmetic",)] * 2
    right_answers = ["Pacific", "Africa", "42", "five"]  # keys B, C, a (lower case), B
    for example, answer in zip(examples, right_answers):
        assert example.prompt.startswith("Instructions: Pick the correct answer to the question.\nPrompt: Q: ")
        assert example.answer_prefix == " The answer is"
        # Options are shuffled (fixed per id), and the label follows the right answer.
        assert f"{example.option_names[example.label]}. {answer}." in _body(example)
    assert _body(examples[3]).startswith("Q: Which word means half of 10, spelled out? Options: A. ")
    orders = [_body(e).split("Options: ")[1] for e in examples]
    assert orders[0] != "A. Atlantic. B. Pacific. C. Indian. D. Arctic."  # not the file's order
    clear_caches()
    assert [_body(e) for e in load_examples("demo_quiz_csv", "eval", data_dir=FIXTURES)] == [
        _body(e) for e in examples]  # and the same order on every load


def test_csv_with_a_header_row_and_answers_as_text(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "items.csv").write_text(
        "key,prompt,opt1,opt2,correct,area\n"
        "k1,Which is a colour?,Seven,Blue,Blue,art\n"
        'k2,"Which is a number, not a word?",Nine,9,9,maths\n', encoding="utf-8")
    task = tmp_path / "header.yaml"
    task.write_text(BASE_TEMPLATE.format(name="header_demo", files="{eval: data/items.csv}", extra="") .replace(
        "question: q\n  choices: [c1, c2, c3]\n  answer: right\n  answer_format: text\n  groups: [topic]",
        "question: prompt\n  choices: [opt1, opt2]\n  answer: correct\n  answer_format: text\n  groups: [area]")
        .replace("id: id", "id: key"))
    register_task_file(task)
    examples = load_examples("header_demo", "eval", data_dir=tmp_path)
    assert [(e.example_id, e.label, e.groups) for e in examples] == [
        ("header_demo/k1", 1, ("art",)), ("header_demo/k2", 1, ("maths",))]
    assert _body(examples[1]) == "Which is a number, not a word? A. Nine. B. 9."


def test_glob_sources_can_group_by_file(tmp_path):
    for topic in ("birds", "trees"):
        rows = [{"q": f"A {topic} question?", "choices": ["yes", "no"], "a": 0}]
        (tmp_path / "by_topic").mkdir(exist_ok=True)
        (tmp_path / "by_topic" / f"{topic}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    task = tmp_path / "glob.yaml"
    task.write_text(
        "name: glob_demo\nversion: '1'\n"
        "source:\n  hub: {path: example-org/glob, splits: {eval: test}}\n"
        "  mirror: {files: {eval: by_topic/*.jsonl}}\n"
        "fields: {question: q, choices: choices, answer: a, answer_format: index, groups: _source_file}\n")
    register_task_file(task)
    examples = load_examples("glob_demo", "eval", data_dir=tmp_path)
    assert [(e.example_id, e.groups) for e in examples] == [("glob_demo/0", ("birds",)), ("glob_demo/1", ("trees",))]


def test_hub_is_the_source_without_a_data_dir(monkeypatch):
    rows = [{"qid": "h1", "item": {"question": "Hub question?", "passage": None, "options": ["x", "y"]},
             "answer": 1, "topics": ["hub"], "level": "easy"}]
    register_task_file(QUIZ)
    with fake_datasets(monkeypatch, rows) as calls:
        (example,) = load_examples("demo_quiz", "eval")
    assert calls == [("example-org/demo-quiz", (), {"split": "test"})]
    assert _body(example) == "Question: Hub question? A. x. B. y." and example.label == 1


# --- validation: every problem at its file:line, with the field path ---

BASE_TEMPLATE = """\
name: {name}
version: "1"
source:
  hub: {{path: example-org/err-demo, splits: {{eval: test}}}}
  mirror: {{files: {files}}}
fields:
  id: id
  question: q
  choices: [c1, c2, c3]
  answer: right
  answer_format: text
  groups: [topic]
{extra}"""
ROWS = [
    {"id": "q1", "q": "Capital of Italy?", "c1": "Rome", "c2": "Milan", "c3": "Turin", "right": "Rome", "topic": "geo"},
    {"id": "q2", "q": "Capital of France?", "c1": "Lyon", "c2": "Nice", "c3": "Lille", "right": "Paris", "topic": "geo"},
]


def _line_of(text, marker):
    return next(i for i, line in enumerate(text.splitlines(), start=1) if marker in line)


def _task_file(tmp_path, *, replace=(), extra="", rows=ROWS, name="err_demo"):
    text = BASE_TEMPLATE.format(name=name, files="{eval: err/eval.jsonl}", extra=extra)
    for old, new in replace:
        assert old in text
        text = text.replace(old, new)
    (tmp_path / "err").mkdir(exist_ok=True)
    (tmp_path / "err" / "eval.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    path = tmp_path / "task.yaml"
    path.write_text(text)
    return path, text


def _problems(path):
    with pytest.raises(TaskFileError) as caught:
        load_task_file(path)
    assert isinstance(caught.value, ValueError)
    return [str(p) for p in caught.value.problems]


def test_unknown_key_suggests_the_right_one(tmp_path):
    path, text = _task_file(tmp_path, replace=[("answer_format:", "answer_fromat:")])
    line = _line_of(text, "answer_fromat")
    assert _problems(path) == [
        f"{path}:6: fields: missing required key 'answer_format'",
        f"{path}:{line}: fields.answer_fromat: unknown key (did you mean 'answer_format'? allowed here: "
        "id, question, context, choices, answer, answer_format, groups, facets)",
    ]


def test_bad_answer_format(tmp_path):
    path, text = _task_file(tmp_path, replace=[("answer_format: text", "answer_format: lettr")])
    assert _problems(path) == [f"{path}:{_line_of(text, 'lettr')}: fields.answer_format: must be one of "
                               "index, letter, text (got 'lettr'); did you mean 'letter'?"]


def test_missing_mirror_file_names_the_task_file_line(tmp_path):
    path, text = _task_file(tmp_path, replace=[("err/eval.jsonl", "err/missing.jsonl")])
    register_task_file(path)
    with pytest.raises(FileNotFoundError) as caught:
        load_examples("err_demo", "eval", data_dir=tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{_line_of(text, 'missing.jsonl')}: source.mirror.files.eval: mirror file ")
    assert "err/missing.jsonl" in message


def test_missing_task_file(tmp_path):
    assert _problems(tmp_path / "nowhere.yaml") == [f"{tmp_path / 'nowhere.yaml'}: task file not found"]


def test_answer_not_among_the_choices_names_the_row_and_file(tmp_path):
    path, text = _task_file(tmp_path)
    register_task_file(path)  # the file itself is fine: rows are checked when loaded
    with pytest.raises(TaskFileError) as caught:
        load_examples("err_demo", "eval", data_dir=tmp_path)
    (problem,) = caught.value.problems
    assert str(problem) == (
        f"{path}:{_line_of(text, 'answer: right')}: fields.answer: row 'q2' (row 1 of split 'eval', from mirror "
        "file 'err/eval.jsonl', or Hub 'example-org/err-demo' split 'test'): answer 'Paris' is not one of the "
        "choices ['Lyon', 'Nice', 'Lille']")


@pytest.mark.parametrize("row, fields_key, message", [
    ({"c1": "a", "c2": "b", "c3": "c", "right": "b", "topic": "t"}, "question", "the row has no field 'q'"),
    ({"q": "?", "c1": "a", "c2": "a", "c3": "c", "right": "a", "topic": "t"}, "answer", "matches several of"),
    ({"q": "?", "c1": "a", "c2": None, "c3": "c", "right": "a", "topic": "t"}, "choices", "each option must be text"),
    ({"q": "?", "c1": "a", "c2": "b", "c3": "c", "right": "a", "topic": {"x": 1}}, "groups", "a group must be text"),
    # "all" is the evals table's whole-task group: a group by that name would be counted as the task.
    ({"q": "?", "c1": "a", "c2": "b", "c3": "c", "right": "a", "topic": "all"}, "groups",
     "the group 'all' is reserved: the evals table's group 'all' is the whole task"),
    ({"q": "?", "c1": "a", "c2": "b", "c3": "c", "right": "a", "topic": ["geo", " all "]}, "groups",
     "the group 'all' is reserved"),
])
def test_other_row_problems(tmp_path, row, fields_key, message):
    path, text = _task_file(tmp_path, rows=[{"id": "r", **row}])
    register_task_file(path)
    with pytest.raises(TaskFileError) as caught:
        load_examples("err_demo", "eval", data_dir=tmp_path)
    (problem,) = caught.value.problems
    assert problem.path == f"fields.{fields_key}" and message in problem.message and "row 'r'" in problem.message
    assert problem.line == _line_of(text, f"  {fields_key}:")


def test_row_problems_are_capped(tmp_path):
    rows = [{"id": f"r{i}", "q": "?", "c1": "a", "c2": "b", "c3": "c", "right": "z", "topic": "t"} for i in range(30)]
    path, _ = _task_file(tmp_path, rows=rows)
    register_task_file(path)
    with pytest.raises(TaskFileError) as caught:
        load_examples("err_demo", "eval", data_dir=tmp_path)
    assert len(caught.value.problems) == 21 and "and 10 more rows" in str(caught.value.problems[-1])


@pytest.mark.parametrize("answer_format, answers, labels", [
    ("index", [0, "2", 1], [0, 2, 1]),
    ("letter", ["A", " c ", "b"], [0, 2, 1]),
])
def test_index_and_letter_answers(tmp_path, answer_format, answers, labels):
    rows = [{"id": f"r{i}", "q": "?", "c1": "a", "c2": "b", "c3": "c", "right": a, "topic": "t"}
            for i, a in enumerate(answers)]
    path, _ = _task_file(tmp_path, rows=rows, replace=[("answer_format: text", f"answer_format: {answer_format}")])
    register_task_file(path)
    assert [e.label for e in load_examples("err_demo", "eval", data_dir=tmp_path)] == labels


@pytest.mark.parametrize("answer_format, answer, message", [
    ("index", 3, "is not an option index 0..2"),
    ("index", True, "is not an option index"),
    ("letter", "D", "is not one of the letters A, B, C"),
    ("letter", "AB", "is not one of the letters"),
])
def test_bad_index_and_letter_answers(tmp_path, answer_format, answer, message):
    rows = [{"id": "r", "q": "?", "c1": "a", "c2": "b", "c3": "c", "right": answer, "topic": "t"}]
    path, _ = _task_file(tmp_path, rows=rows, replace=[("answer_format: text", f"answer_format: {answer_format}")])
    register_task_file(path)
    with pytest.raises(TaskFileError, match=message):
        load_examples("err_demo", "eval", data_dir=tmp_path)


@pytest.mark.parametrize("replace, extra, marker, expected", [
    ([], "metrics: [{name: f1, direction: higher}]\n", "metrics:",
     "metrics[0].name: only accuracy is computed for declarative tasks (got 'f1')"),
    ([], "metrics: [{name: accuracy, direction: lower}]\n", "metrics:",
     "metrics[0].direction: accuracy is better when higher: direction must be higher (got 'lower')"),
    ([], "kind: generation\n", "kind:",
     "kind: only multiple-choice ('choice') tasks can be declared in YAML (got 'generation')"),
    ([], "splits: [train, eval]\n", "hub:", "source.hub.splits: has no entry for the 'train' split"),
    ([("splits: {eval: test}", "splits: {train: train}")], "", "hub:",
     "source.hub.splits: has no entry for the 'eval' split (every task is evaluated)"),
    ([], "splits: [eval, test]\n", "splits: [eval", "splits[1]: must be one of train, validation, eval (got 'test')"),
    ([("err/eval.jsonl", "../outside.jsonl")], "", "mirror:",
     "source.mirror.files.eval: must be a relative path under the data dir, without '..'"),
    ([("err/eval.jsonl", "err/eval.txt")], "", "mirror:",
     "source.mirror.files.eval: cannot tell the format from 'err/eval.txt': set source.mirror.format"),
    ([], "template: {prompt: 'Q: {question}'}\n", "template:", "template.prompt: must contain {options}"),
    ([], "template: {prompt: '{context} {question} {options}'}\n", "template:",
     "template.prompt: placeholders must be plain {question}, {options} ({context} needs fields.context)"),
    ([], "template: {shuffle_options: maybe}\n", "template:", "template.shuffle_options: must be true or false"),
    ([("version: \"1\"", "version: 1.10")], "", "version:", "version: must be a string such as \"1\""),
    ([("name: err_demo", "name: 'bad name!'")], "", "name:", "name: must be letters, digits"),
    ([("choices: [c1, c2, c3]", "choices: [c1]")], "", "choices:", "fields.choices: must list 2 to 5 option fields"),
    ([("  groups: [topic]", "  groups: [topic]\n  groups: [other]")], "", "groups: [other]",
     "fields.groups: duplicate key"),
    ([], "mirror: {}\n", "mirror: {}", "mirror: unknown key (allowed here: name, description, version, kind, "),
])
def test_file_problems(tmp_path, replace, extra, marker, expected):
    path, text = _task_file(tmp_path, replace=replace, extra=extra)
    problems = _problems(path)
    wanted = f"{path}:{_line_of(text, marker)}: {expected}"
    assert any(p.startswith(wanted) for p in problems), problems


def test_every_problem_is_reported_at_once(tmp_path):
    path, text = _task_file(tmp_path, replace=[("answer_format: text", "answer_format: lettr"),
                                               ("name: err_demo\n", "")],
                            extra="template:\n  instructions: Do it.\n")
    problems = _problems(path)
    assert [p.split(": ")[1] for p in problems] == ["missing required key 'name'", "fields.answer_format",
                                                    "template.instructions"]
    assert problems[0].startswith(f"{path}:1: ")  # a missing top-level key points at the document start
    assert "did you mean 'instruction'?" in problems[2]


def test_not_yaml_or_not_a_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfields: [unclosed\n")
    (problem,) = _problems(bad)
    assert problem.startswith(f"{bad}:") and "not valid YAML" in problem
    bad.write_text("- just\n- a list\n")
    (problem,) = _problems(bad)
    assert problem.startswith(f"{bad}:1: ") and "must be a mapping" in problem


def test_python_tags_are_refused(tmp_path):
    """Safe-load semantics: a task file can never construct Python objects."""
    path, _ = _task_file(tmp_path, extra="description: !!python/object/apply:os.getcwd []\n")
    (problem,) = _problems(path)
    assert "not valid YAML" in problem and "python/object/apply" in problem


def test_row_ids_must_be_unique(tmp_path):
    rows = [{"id": "same", "q": "?", "c1": "a", "c2": "b", "c3": "c", "right": "a", "topic": "t"}] * 2
    path, text = _task_file(tmp_path, rows=rows)
    register_task_file(path)
    with pytest.raises(TaskFileError) as caught:
        load_examples("err_demo", "eval", data_dir=tmp_path)
    (problem,) = caught.value.problems
    assert str(problem).startswith(f"{path}:{_line_of(text, 'id: id')}: fields.id: row 'same' (row 1 of split")
    assert problem.message.endswith("the id is also that of row 0")


# --- names the evals table reserves: grouping "all" (the whole task) and "group" (primary groups) ---


@pytest.mark.parametrize("facet, meaning", [("group", "the primary groups (fields.groups)"),
                                            ("all", "the whole task")])
def test_reserved_facet_names_are_refused(tmp_path, facet, meaning):
    path, text = _task_file(tmp_path, replace=[
        ("  groups: [topic]", f"  groups: [topic]\n  facets:\n    level: topic\n    {facet}: topic")])
    assert _problems(path) == [
        f"{path}:{_line_of(text, f'    {facet}: topic')}: fields.facets.{facet}: facet name {facet!r} is reserved: "
        f"the evals table's grouping {facet!r} is {meaning}; choose another name"]


def test_other_facet_names_and_a_facet_value_all_are_fine(tmp_path):
    rows = [{**ROWS[0], "size": "all"}]
    path, _ = _task_file(tmp_path, rows=rows, replace=[
        ("  groups: [topic]", "  groups: [topic]\n  facets: {groups: topic, all_of_it: size}")])
    register_task_file(path)
    (example,) = load_examples("err_demo", "eval", data_dir=tmp_path)
    # A facet's grouping is its name, so its value "all" is not the whole-task group.
    assert example.groups == ("geo",) and example.facets == (("groups", "geo"), ("all_of_it", "all"))


# --- a trainable task never trains on its eval set ---

LEAK_TEMPLATE = """\
name: leak_demo
version: "1"
source:
  hub:
    path: example-org/leak
    splits:
      train: {hub_train}
      eval: test
  mirror:
    files:
      train: {mirror_train}
      eval: leak/eval.jsonl
fields: {{question: q, choices: [c1, c2, c3], answer: right, answer_format: text}}
{extra}"""


def _leak_file(tmp_path, hub_train="train", mirror_train="leak/train.jsonl", extra=""):
    text = LEAK_TEMPLATE.format(hub_train=hub_train, mirror_train=mirror_train, extra=extra)
    (tmp_path / "leak").mkdir(exist_ok=True)
    for split in ("train", "eval"):
        (tmp_path / "leak" / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS[:1]))
    path = tmp_path / "leak.yaml"
    path.write_text(text)
    return path, text


DROP_TRAIN = "drop train from source.hub.splits and source.mirror.files to make it evaluation-only"


def test_train_and_eval_reading_the_same_hub_split_is_refused(tmp_path):
    path, text = _leak_file(tmp_path, hub_train="test")
    assert _problems(path) == [
        f"{path}:{_line_of(text, 'train: test')}: source.hub.splits.train: train and eval both read the source's "
        f"'test' split, so the task would train on its eval set: the task needs distinct train and eval sources; "
        f"or {DROP_TRAIN}"]


@pytest.mark.parametrize("mirror_train, same", [
    ("leak/eval.jsonl", "the same file"),
    ("./leak//eval.jsonl", "the same file"),  # the same path, written differently
    ("leak/*.jsonl", "the same files"),  # a glob that takes in the eval file
    ("'**/eval.jsonl'", "the same files"),
])
def test_train_and_eval_reading_the_same_mirror_file_is_refused(tmp_path, mirror_train, same):
    path, text = _leak_file(tmp_path, mirror_train=mirror_train)
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:{_line_of(text, f'train: {mirror_train}')}: source.mirror.files.train: train (")
    assert problem.endswith(f"read {same}, so the task would train on its eval set: the task needs distinct train "
                            f"and eval sources; or {DROP_TRAIN}")


def test_both_leaks_are_reported_and_the_advice_names_an_explicit_splits_list(tmp_path):
    path, text = _leak_file(tmp_path, hub_train="test", mirror_train="leak/eval.jsonl", extra="splits: [train, eval]\n")
    problems = _problems(path)
    assert [p.split(": ")[1] for p in problems] == ["source.hub.splits.train", "source.mirror.files.train"]
    assert all(p.endswith("or drop train from splits, source.hub.splits and source.mirror.files to make it "
                          "evaluation-only") for p in problems)


def test_distinct_sources_and_the_eval_only_fix_are_accepted(tmp_path):
    path, _ = _leak_file(tmp_path, mirror_train="leak/train*.jsonl")  # a glob that misses the eval file
    assert load_task_file(path).splits == ("train", "validation", "eval")
    # The advice for a leaking file: drop train, and the task is evaluation-only.
    path, text = _leak_file(tmp_path, hub_train="test", mirror_train="leak/eval.jsonl")
    path.write_text("".join(line for line in text.splitlines(keepends=True) if "train:" not in line))
    definition = register_task_file(path)
    assert definition.splits == ("eval",) and not definition.trainable
    assert [e.example_id for e in load_examples("leak_demo", "eval", data_dir=tmp_path)] == ["leak_demo/0"]
