"""MMLU (Hendrycks et al. 2021): the paper's held-out capability task (Figure 7, Table 3).

Evaluation only: the 14,042 test questions, zero-shot, rendered with the Appendix A.2
multiple-choice template the paper uses for ARC (every MMLU question has four options). The
release's ``val`` split (1,531 questions) is the task's validation split; the 5-shot ``dev``
questions are not used.

Each question's group is its subject (57); its facet ``category`` is one of MMLU's four
standard categories, so results can also be read per category without making categories
part of worst-group forgetting.

Two row layouts reach this module:
  * the mirror: the original release CSVs, ``mmlu/test/<subject>_test.csv`` (and
    ``mmlu/val/<subject>_val.csv``), no header, columns question, A, B, C, D, answer letter;
    the subject comes from the file name;
  * the Hub (``cais/mmlu``, config ``all``): ``question``, ``subject``, ``choices`` (a list)
    and ``answer`` (an index).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from .bad_rows import BadRowsError, RowError
from .definition import TaskDefinition
from .example import Example
from .row_files import FileRows, read_csv
from .source import HubSource, MirrorSource, Row
from .templates import LETTERS, multiple_choice_example

TASK_NAME = "mmlu"
N_OPTIONS = 4

# The subjects of each standard MMLU category, from the MMLU authors' categories.py
# (hendrycks/test): there each subject has a subcategory (math, health, law, ...) and each
# subcategory belongs to one of four categories; only the category is kept here. The
# authors' label for the last one is "other (business, health, misc.)".
CATEGORY_SUBJECTS: dict[str, tuple[str, ...]] = {
    "STEM": (
        "abstract_algebra", "astronomy", "college_biology", "college_chemistry",
        "college_computer_science", "college_mathematics", "college_physics", "computer_security",
        "conceptual_physics", "electrical_engineering", "elementary_mathematics", "high_school_biology",
        "high_school_chemistry", "high_school_computer_science", "high_school_mathematics",
        "high_school_physics", "high_school_statistics", "machine_learning",
    ),
    "humanities": (
        "formal_logic", "high_school_european_history", "high_school_us_history",
        "high_school_world_history", "international_law", "jurisprudence", "logical_fallacies",
        "moral_disputes", "moral_scenarios", "philosophy", "prehistory", "professional_law",
        "world_religions",
    ),
    "social sciences": (
        "econometrics", "high_school_geography", "high_school_government_and_politics",
        "high_school_macroeconomics", "high_school_microeconomics", "high_school_psychology",
        "human_sexuality", "professional_psychology", "public_relations", "security_studies",
        "sociology", "us_foreign_policy",
    ),
    "other": (
        "anatomy", "business_ethics", "clinical_knowledge", "college_medicine", "global_facts",
        "human_aging", "management", "marketing", "medical_genetics", "miscellaneous", "nutrition",
        "professional_accounting", "professional_medicine", "virology",
    ),
}  # fmt: skip
CATEGORIES = tuple(CATEGORY_SUBJECTS)
SUBJECT_CATEGORY: dict[str, str] = {
    subject: category for category, subjects in CATEGORY_SUBJECTS.items() for subject in subjects
}
SUBJECTS = tuple(sorted(SUBJECT_CATEGORY))

# Release file names: <subject>_test.csv, <subject>_val.csv.
_MIRROR_SUFFIXES = ("_test", "_val")
_CSV_COLUMNS = ("question", "A", "B", "C", "D", "answer")

def release_csv_rows(path: Path) -> FileRows:
    """One release CSV (no header) as rows keyed by column name, with their lines; a record
    with another number of columns is a bad row at its line (tasks.bad_rows).

    The csv module is needed, not a split on commas: questions and options hold quoted
    commas and line breaks.
    """
    return read_csv(path, _CSV_COLUMNS, what="columns")


def read_release_csv(path: Path) -> tuple[Row, ...]:
    """The rows of one release CSV; BadRowsError (a ValueError) on any bad record."""
    read = release_csv_rows(path)
    if read.problems:
        raise BadRowsError(read.problems, source=str(path))
    return read.rows


HUB = HubSource(path="cais/mmlu", config="all", splits={"validation": "validation", "eval": "test"})
MIRROR = MirrorSource(files={"validation": "mmlu/val/*_val.csv", "eval": "mmlu/test/*_test.csv"},
                      reader=release_csv_rows)


def _subject_of(row: Row) -> str:
    if "subject" in row:  # Hub layout
        subject = str(row["subject"])
    else:  # mirror layout: the glob tags each row with its file's stem
        stem = str(row["_source_file"])
        subject = next((stem.removesuffix(s) for s in _MIRROR_SUFFIXES if stem.endswith(s)), stem)
    if subject not in SUBJECT_CATEGORY:
        raise RowError(f"MMLU row of unknown subject {subject!r} (known: the 57 of CATEGORY_SUBJECTS)", "subject")
    return subject


def _choices_and_label(row: Row, where: str) -> tuple[list[str], int]:
    if "choices" in row:  # Hub layout: a list of texts and an integer index
        texts, answer = [str(text) for text in row["choices"]], row["answer"]
        valid = isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(texts)
        label = answer if valid else -1
    else:  # mirror layout: one column per option and an answer letter
        texts, answer = [row[letter] for letter in LETTERS[:N_OPTIONS]], str(row["answer"]).strip()
        label = LETTERS.index(answer) if len(answer) == 1 and answer in LETTERS[:N_OPTIONS] else -1
    if len(texts) != N_OPTIONS:
        raise RowError(f"{where}: {len(texts)} options, expected {N_OPTIONS}", "choices")
    if label < 0:
        raise RowError(f"{where}: answer {answer!r} names none of the {N_OPTIONS} options", "answer")
    return texts, label


def example_from_row(row: Row, index_in_subject: int, split: str = "eval") -> Example:
    """One question; ``index_in_subject`` is its row number in its subject's release file,
    which keeps the id stable (MMLU rows have no ids of their own). Validation ids name their
    split, since row numbers restart in every file."""
    subject = _subject_of(row)
    prefix = TASK_NAME if split == "eval" else f"{TASK_NAME}/{split}"
    example_id = f"{prefix}/{subject}/{index_in_subject}"
    texts, label = _choices_and_label(row, example_id)
    # Surrounding whitespace is stripped, as for ARC: several release cells start with a space
    # or end with one, which would otherwise leak into the rendered prompt.
    example = multiple_choice_example(
        example_id=example_id,
        question=str(row["question"]).strip(),
        option_texts=[text.strip() for text in texts],
        label=label,
    )
    return _with_groups(example, subject)


def _with_groups(example: Example, subject: str) -> Example:
    return replace(example, groups=(subject,), facets=(("category", SUBJECT_CATEGORY[subject]),))


def _indexed_by_subject(rows: Iterable[Row]) -> Iterable[tuple[Row, int]]:
    # Both layouts list a subject's questions in release-file order (the Hub's "all" config is
    # the per-subject files concatenated), so a running count per subject is the row's index
    # in its file whichever layout was read.
    seen: dict[str, int] = {}
    for row in rows:
        subject = _subject_of(row)
        index = seen.get(subject, 0)
        seen[subject] = index + 1
        yield row, index


def check_row(row: Row) -> None:
    """Raises when a row makes no question (tasks.bad_rows): an unknown subject, a missing
    column, an answer that names no option."""
    example_from_row(row, 0)


def examples_from_rows(rows: tuple[Row, ...], split: str) -> list[Example]:
    # Each split is its own release files, so every row counts.
    return [example_from_row(row, index, split) for row, index in _indexed_by_subject(rows)]


DEFINITIONS = (
    TaskDefinition(
        name=TASK_NAME,
        description=(
            "MMLU test questions (14,042; 57 subjects as groups, 4 categories as facet 'category'), "
            "multiple choice, zero-shot with the Appendix A.2 template (held-out capability eval, "
            "Figure 7); evaluation only, the 5-shot dev questions are not used"
        ),
        splits=("validation", "eval"),
        validation="the release's val split (Hub: validation)",
        version="1",
        hub=HUB,
        mirror=MIRROR,
        template="multiple_choice",
        group_field="subject",
        examples_from_rows=examples_from_rows,
        check_row=check_row,
        groupings=("category",),
    ),
)
