"""ARC (AI2 Reasoning Challenge): ARC-Easy is the paper's capability task (trained and
evaluated); ARC-Challenge is evaluated only (Table 6).

Two row layouts reach this module: the Hub's (``question`` is the stem, ``choices`` holds
parallel ``text``/``label`` lists) and the original AI2 jsonl of the mirror (``question``
holds ``stem`` and a list of ``{text, label}`` choices). Both become the same Example.

Option counts. A few questions have 3 or 5 options (ARC-Easy: 10 of 2,251 train, 11 of 2,376
test, 3 of 570 dev). The paper uses the four-option ones: its sizes (train 2,241, test 2,365)
are exactly those, and its template names "four candidate answers (A, B, C and D)". So both
tasks keep four-option questions by default (``option_counts``); a study's
``tasks.<name>.option_counts: [3, 4, 5]`` keeps them all, the template's count and letters then
following each question.

Validation. The release's Dev split (the Hub's "validation"), filtered the same way, is where
the best first-stage model is chosen; it is never trained on.
"""

from __future__ import annotations

from .definition import TaskDefinition
from .example import Example
from .bad_rows import RowError
from .source import HubSource, MirrorSource, Row
from .templates import multiple_choice_example

TASK_NAME = "arc_easy"
CHALLENGE_TASK_NAME = "arc_challenge"

_HUB_SPLITS = {"train": "train", "validation": "validation", "eval": "test"}
HUB = HubSource(path="allenai/ai2_arc", config="ARC-Easy", splits=_HUB_SPLITS)
MIRROR = MirrorSource(files={
    "train": "arc/ARC-Easy/ARC-Easy-Train.jsonl",
    "validation": "arc/ARC-Easy/ARC-Easy-Dev.jsonl",
    "eval": "arc/ARC-Easy/ARC-Easy-Test.jsonl",
})
CHALLENGE_HUB = HubSource(path="allenai/ai2_arc", config="ARC-Challenge", splits=_HUB_SPLITS)
CHALLENGE_MIRROR = MirrorSource(files={
    "train": "arc/ARC-Challenge/ARC-Challenge-Train.jsonl",
    "validation": "arc/ARC-Challenge/ARC-Challenge-Dev.jsonl",
    "eval": "arc/ARC-Challenge/ARC-Challenge-Test.jsonl",
})
# The paper's items: four options (module docstring).
PAPER_OPTION_COUNTS = (4,)
VALIDATION = "the release's Dev split (Hub: validation)"


def _stem_and_choices(row: Row) -> tuple[str, list[str], list[str]]:
    question = row["question"]
    if isinstance(question, str):  # Hub layout
        return question, list(row["choices"]["text"]), list(row["choices"]["label"])
    choices = question["choices"]  # AI2 jsonl layout
    return question["stem"], [c["text"] for c in choices], [c["label"] for c in choices]


def example_from_row(row: Row, task_name: str = TASK_NAME) -> Example:
    stem, texts, labels = _stem_and_choices(row)
    answer_key = str(row["answerKey"])
    if answer_key not in labels:
        raise RowError(f"ARC item {row['id']}: answerKey {answer_key!r} not among labels {labels}", "answerKey")
    # Some items label options 1-4; the template letters options by position, so the
    # answer is located by position too, whatever the source labels are.
    return multiple_choice_example(
        example_id=f"{task_name}/{row['id']}",
        question=stem.strip(),
        option_texts=[text.strip() for text in texts],
        label=labels.index(answer_key),
    )


def check_row(row: Row) -> None:
    """Raises when a row makes no item (tasks.bad_rows): a missing field, a choice without text,
    an answerKey that names no option."""
    example_from_row(row)


def examples_from_rows(rows: tuple[Row, ...], split: str) -> list[Example]:
    # The source ships its own train/dev/test splits, so every row of the file belongs to `split`.
    return [example_from_row(row) for row in rows]


def challenge_examples_from_rows(rows: tuple[Row, ...], split: str) -> list[Example]:
    return [example_from_row(row, CHALLENGE_TASK_NAME) for row in rows]


DEFINITIONS = (
    TaskDefinition(
        name=TASK_NAME,
        description=("ARC-Easy science questions, multiple choice (capability task); Hub train/test splits, "
                     "four-option questions unless tasks.arc_easy.option_counts says otherwise"),
        version="2",  # 2: four-option questions by default; Dev as the validation split
        hub=HUB,
        mirror=MIRROR,
        template="multiple_choice",
        group_field=None,
        examples_from_rows=examples_from_rows,
        check_row=check_row,
        splits=("train", "validation", "eval"),
        validation=VALIDATION,
        option_counts=PAPER_OPTION_COUNTS,
    ),
    TaskDefinition(
        name=CHALLENGE_TASK_NAME,
        description=("ARC-Challenge science questions, multiple choice (held-out capability eval, Table 6); "
                     "Hub test split, four-option questions unless tasks.arc_challenge.option_counts says otherwise"),
        version="2",  # 2: four-option questions by default
        hub=CHALLENGE_HUB,
        mirror=CHALLENGE_MIRROR,
        template="multiple_choice",
        group_field=None,
        examples_from_rows=challenge_examples_from_rows,
        check_row=check_row,
        splits=("validation", "eval"),
        validation=VALIDATION,
        option_counts=PAPER_OPTION_COUNTS,
    ),
)
