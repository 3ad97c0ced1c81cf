"""MMLU: the subject -> category table, both row layouts, the mirror's test split, the Hub path."""

import csv
from collections import Counter

import pytest

from tests.fake_hub import fake_datasets
from tasks import get_task, load_examples
from tasks import mmlu
from tasks.mmlu import CATEGORIES, CATEGORY_SUBJECTS, SUBJECT_CATEGORY, SUBJECTS, example_from_row

# The paper's Appendix A.2 example, in the layout MMLU items are rendered with.
PAPER_ARC_INSTRUCTION = (
    "Given the following question and four candidate answers (A, B, C and D), choose the best answer. "
    "Your response should end with “The best answer is [the_answer_letter]” where the "
    "[the_answer_letter] is one of A, B, C or D."
)
PAPER_PROMPT = (
    "Which two body systems are directly involved in movement? A. muscular and skeletal. "
    "B. digestive and muscular. C. skeletal and respiratory. D. respiratory and digestive."
)


def _hub_row(subject, question, choices, answer):
    return {"question": question, "subject": subject, "choices": choices, "answer": answer}


# --- the category table ---


def test_every_subject_has_exactly_one_of_the_four_categories():
    assert CATEGORIES == ("STEM", "humanities", "social sciences", "other")
    listed = [s for subjects in CATEGORY_SUBJECTS.values() for s in subjects]
    assert len(listed) == len(set(listed)) == len(SUBJECTS) == 57  # no subject in two categories
    assert {c: len(s) for c, s in CATEGORY_SUBJECTS.items()} == {
        "STEM": 18, "humanities": 13, "social sciences": 12, "other": 14}
    assert SUBJECT_CATEGORY["abstract_algebra"] == "STEM"
    assert SUBJECT_CATEGORY["professional_law"] == "humanities"
    assert SUBJECT_CATEGORY["econometrics"] == "social sciences"
    assert SUBJECT_CATEGORY["anatomy"] == "other"  # health subjects are "other" in MMLU's table


def test_table_names_every_subject_file_of_the_mirror(data_dir):
    test_dir = data_dir / "mmlu" / "test"
    if not test_dir.is_dir():
        pytest.skip("the mirror has no mmlu/test")
    subjects = {p.name.removesuffix("_test.csv") for p in test_dir.glob("*_test.csv")}
    assert subjects == set(SUBJECTS)


# --- the definition ---


def test_definition_is_evaluation_only_with_subjects_and_categories():
    task = get_task("mmlu")
    assert task.splits == ("validation", "eval") and not task.trainable and task.kind == "choice"
    assert task.group_field == "subject" and task.groupings == ("category",)
    assert task.template == "multiple_choice" and task.metric_names() == ("accuracy",)
    assert "dev" in task.description and "not used" in task.description
    assert task.hub.path == "cais/mmlu" and task.hub.config == "all"
    assert task.hub.splits == {"validation": "validation", "eval": "test"}
    assert task.mirror.files == {"validation": "mmlu/val/*_val.csv", "eval": "mmlu/test/*_test.csv"}
    with pytest.raises(ValueError, match="no 'train' split"):
        load_examples("mmlu", "train")


# --- row layouts ---


def test_hub_row_renders_the_papers_template():
    row = _hub_row("high_school_biology", "Which two body systems are directly involved in movement?",
                   ["muscular and skeletal", "digestive and muscular", "skeletal and respiratory",
                    "respiratory and digestive"], 0)
    example = example_from_row(row, 0)
    assert example.prompt == f"Instructions: {PAPER_ARC_INSTRUCTION}\nPrompt: {PAPER_PROMPT}\nAnswer:"
    assert example.completion == " The best answer is A."
    assert example.options == (" A.", " B.", " C.", " D.") and example.option_names == ("A", "B", "C", "D")
    assert example.example_id == "mmlu/high_school_biology/0"
    assert example.groups == ("high_school_biology",)
    assert example.facets == (("category", "STEM"),)


def test_ids_count_rows_within_each_subject():
    rows = (
        _hub_row("virology", "q0", ["a", "b", "c", "d"], 3),
        _hub_row("virology", "q1", ["a", "b", "c", "d"], 1),
        _hub_row("world_religions", "q0", ["a", "b", "c", "d"], 2),
        _hub_row("virology", "q2", ["a", "b", "c", "d"], 0),
    )
    examples = mmlu.examples_from_rows(rows, "eval")
    assert [e.example_id for e in examples] == [
        "mmlu/virology/0", "mmlu/virology/1", "mmlu/world_religions/0", "mmlu/virology/2"]
    assert [e.label for e in examples] == [3, 1, 2, 0]
    assert [dict(e.facets)["category"] for e in examples] == ["other", "other", "humanities", "other"]


def test_mirror_and_hub_layouts_give_the_same_example():
    mirror_row = {"question": " What is 2 + 2?", "A": "3", "B": "4 ", "C": "5", "D": "22", "answer": "B",
                  "_source_file": "elementary_mathematics_test"}
    hub_row = _hub_row("elementary_mathematics", "What is 2 + 2?", ["3", "4", "5", "22"], 1)
    assert example_from_row(mirror_row, 7) == example_from_row(hub_row, 7)
    assert example_from_row(mirror_row, 7).example_id == "mmlu/elementary_mathematics/7"


@pytest.mark.parametrize("row, match", [
    (_hub_row("underwater_basketry", "q", ["a", "b", "c", "d"], 0), "unknown subject"),
    (_hub_row("anatomy", "q", ["a", "b", "c", "d"], 4), "names none of the 4 options"),
    (_hub_row("anatomy", "q", ["a", "b", "c", "d"], True), "names none"),
    (_hub_row("anatomy", "q", ["a", "b", "c"], 0), "3 options, expected 4"),
    ({"question": "q", "A": "a", "B": "b", "C": "c", "D": "d", "answer": "E", "_source_file": "anatomy_test"},
     "names none"),
])
def test_bad_rows_are_named(row, match):
    with pytest.raises(ValueError, match=match):
        example_from_row(row, 0)


def test_release_csv_reader_keeps_quoted_commas_and_checks_columns(tmp_path):
    good = tmp_path / "anatomy_test.csv"
    good.write_text('"Which, of these?",a,"b, c",d,e,C\n', encoding="utf-8")
    assert mmlu.read_release_csv(good) == ({"question": "Which, of these?", "A": "a", "B": "b, c", "C": "d",
                                            "D": "e", "answer": "C"},)
    bad = tmp_path / "virology_test.csv"
    bad.write_text("q,a,b,c,C\n", encoding="utf-8")
    with pytest.raises(ValueError, match="record 1 has 5 columns, expected 6"):
        mmlu.read_release_csv(bad)


# --- whole splits ---


def test_mirror_test_split(data_dir):
    if not (data_dir / "mmlu" / "test").is_dir():
        pytest.skip("the mirror has no mmlu/test")
    examples = load_examples("mmlu", "eval", data_dir=data_dir)
    assert len(examples) == 14042  # Table 3
    assert len({e.example_id for e in examples}) == 14042
    assert {g for e in examples for g in e.groups} == set(SUBJECTS)
    assert all(len(e.groups) == 1 and e.facets == (("category", SUBJECT_CATEGORY[e.groups[0]]),) for e in examples)
    assert Counter(dict(e.facets)["category"] for e in examples) == {
        "STEM": 3018, "humanities": 4705, "social sciences": 3077, "other": 3242}
    assert Counter(e.groups[0] for e in examples)["professional_law"] == 1534
    assert {e.label for e in examples} == {0, 1, 2, 3}
    assert all(e.options == (" A.", " B.", " C.", " D.") for e in examples)
    # The first question of a file, as the release CSV has it, rendered with the template.
    with open(data_dir / "mmlu" / "test" / "anatomy_test.csv", encoding="utf-8", newline="") as handle:
        question, *texts, letter = next(csv.reader(handle))
    first = next(e for e in examples if e.example_id == "mmlu/anatomy/0")
    body = question.strip() + " " + " ".join(
        f"{l}. {t.strip()}" + ("" if t.strip().endswith(".") else ".") for l, t in zip("ABCD", texts))
    assert first.prompt == f"Instructions: {PAPER_ARC_INSTRUCTION}\nPrompt: {body}\nAnswer:"
    assert first.completion == f" The best answer is {letter}."


def test_stratified_sample_covers_every_subject(data_dir):
    if not (data_dir / "mmlu" / "test").is_dir():
        pytest.skip("the mirror has no mmlu/test")
    sample = load_examples("mmlu", "eval", size=285, data_dir=data_dir, data_seed=0)
    assert len(sample) == 285 and {e.groups[0] for e in sample} == set(SUBJECTS)


def test_loads_from_the_hub_without_a_data_dir(monkeypatch):
    rows = [_hub_row("astronomy", "Which planet has rings?", ["Mars", "Saturn", "Venus", "Mercury"], 1)]
    with fake_datasets(monkeypatch, rows) as calls:
        (example,) = load_examples("mmlu", "eval")
    assert calls == [("cais/mmlu", ("all",), {"split": "test"})]
    assert example.example_id == "mmlu/astronomy/0" and example.completion == " The best answer is B."
