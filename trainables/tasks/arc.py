"""ARC-Easy (AI2 Reasoning Challenge, easy set): the paper's capability task.

Two row layouts reach this module: the Hub's (``question`` is the stem, ``choices`` holds
parallel ``text``/``label`` lists) and the original AI2 jsonl of the mirror (``question``
holds ``stem`` and a list of ``{text, label}`` choices). Both become the same Example.
"""

from __future__ import annotations

from .example import Example
from .source import HubSource, MirrorSource, Row
from .templates import multiple_choice_example

TASK_NAME = "arc_easy"

HUB = HubSource(path="allenai/ai2_arc", config="ARC-Easy", splits={"train": "train", "eval": "test"})
MIRROR = MirrorSource(files={"train": "arc/ARC-Easy/ARC-Easy-Train.jsonl", "eval": "arc/ARC-Easy/ARC-Easy-Test.jsonl"})


def _stem_and_choices(row: Row) -> tuple[str, list[str], list[str]]:
    question = row["question"]
    if isinstance(question, str):  # Hub layout
        return question, list(row["choices"]["text"]), list(row["choices"]["label"])
    choices = question["choices"]  # AI2 jsonl layout
    return question["stem"], [c["text"] for c in choices], [c["label"] for c in choices]


def example_from_row(row: Row) -> Example:
    stem, texts, labels = _stem_and_choices(row)
    answer_key = str(row["answerKey"])
    if answer_key not in labels:
        raise ValueError(f"ARC item {row['id']}: answerKey {answer_key!r} not among labels {labels}")
    # Some items label options 1-4; the template letters options by position, so the
    # answer is located by position too, whatever the source labels are.
    return multiple_choice_example(
        example_id=f"{TASK_NAME}/{row['id']}",
        question=stem.strip(),
        option_texts=[text.strip() for text in texts],
        label=labels.index(answer_key),
    )


def examples_from_rows(rows: tuple[Row, ...], split: str) -> list[Example]:
    # The source ships its own train/test split, so every row of the file belongs to `split`.
    return [example_from_row(row) for row in rows]
