"""ToxiGenQA: the revised ToxiGen ("v2", Hosseini et al. 2023) recast as toxic / not toxic QA.

The revised set is not a Hub dataset: it is ``data/toxiGen.json`` of microsoft/SafeNLP,
which ``datasets.load_dataset("json", data_files=<raw GitHub URL>)`` reads directly.

Statements, not rows. The file holds 6,514 rows but 6,408 distinct statements: 106 statements
occur twice (compared case-folded, whitespace collapsed). A split by row id put 53 of them on
both sides, so a model could be trained on an eval item. Items are therefore statements:

* a statement whose copies disagree on the label (10; "hate" in one row, "neutral" in the
  other) is dropped: its gold answer is contradictory;
* the copies of any other statement (96) become one item, with the lowest row id as its id and
  every group either copy names (17 pairs name different groups, e.g. "latino" and "mexican,
  latino"), so the statement counts once in accuracy and once toward each of its groups.

That leaves 6,398 items. The file has no train/test split, so a fixed one is derived from a
hash of the normalized statement (holdout.py): it never depends on a seed, on row order or on
how many rows were loaded, and identical statements always land on the same side. Train pool
[0, 0.40), validation [0.40, 0.45) (where the best first-stage model is chosen; never trained
on), eval the rest.
"""

from __future__ import annotations

from collections.abc import Iterable

from .bad_rows import RowError
from .definition import TaskDefinition
from .example import Example
from .holdout import normalized_text, side_of
from .source import HubSource, MirrorSource, Row
from .templates import toxicity_example

TASK_NAME = "toxigen_qa"

_SOURCE_FILE_URL = "https://raw.githubusercontent.com/microsoft/SafeNLP/main/data/toxiGen.json"
_MIRROR_FILE = "toxigen/safenlp/toxiGen.json"
# One file holds every row; the split is applied after reading (see split_of).
HUB = HubSource(path="json", data_files=_SOURCE_FILE_URL,
                splits={"train": "train", "validation": "train", "eval": "train"})
MIRROR = MirrorSource(files={"train": _MIRROR_FILE, "validation": _MIRROR_FILE, "eval": _MIRROR_FILE})
ANNOTATED_MIRROR_FILE = "toxigen/annotated_train_v1/toxigen.csv"
"""The original ToxiGen's human-annotated statements in a data mirror: not a task, but what the
local toxicity classifier trains on (trainables/toxicity/local_classifier.py), so validating a
study that judges generations with it checks the mirror has this file (study/spec_checks_tasks.py)."""

# Shares of the statements in the training pool and the validation split; the rest is held out
# for evaluation. 40% of 6,398 leaves ~2,600 to sample the paper's ~2,240 training examples
# from, and 5% gives ~320 validation statements (selection_size 200 by default).
TRAIN_POOL_FRACTION = 0.40
VALIDATION_FRACTION = 0.05
VALIDATION = (f"{VALIDATION_FRACTION:.0%} of the statements, held out of the training pool by a hash of the "
              "normalized text")

# Source spellings that differ from the names the ToxiGen prompts and the analysis use.
_GROUP_ALIASES = {
    "mental dis": "mental_dis",
    "physical dis": "physical_dis",
    "native-american": "native_american",
    "middle-eastern": "middle_east",
}
CANONICAL_GROUPS = (
    "asian", "black", "chinese", "jewish", "latino", "lgbtq", "mental_dis",
    "mexican", "middle_east", "muslim", "native_american", "physical_dis", "women",
)  # fmt: skip

_IS_TOXIC = {"hate": True, "neutral": False}


def canonical_group(name: str) -> str:
    return _GROUP_ALIASES.get(name, name)


def split_of(statement: str) -> str:
    """'train', 'validation' or 'eval' for a statement, from sha256 of its normalized text."""
    bands = (("train", TRAIN_POOL_FRACTION), ("validation", VALIDATION_FRACTION))
    return side_of(f"{TASK_NAME}/{normalized_text(statement)}", bands, rest="eval")


def _is_toxic(row: Row) -> bool:
    label = row["label"]
    if label not in _IS_TOXIC:
        raise RowError(f"ToxiGen item {row['id']}: unexpected label {label!r} (expected 'hate' or 'neutral')", "label")
    return _IS_TOXIC[label]


def _row_order(row: Row) -> tuple[int, int | str]:
    # Numeric ids compare as numbers; the lowest id names a statement whatever the row order.
    text = str(row["id"])
    return (0, int(text)) if text.isdigit() else (1, text)


def statements(rows: Iterable[Row]) -> list[list[Row]]:
    """The rows of each distinct statement (normalized text), each list in id order; statements
    whose copies disagree on the label are left out. Ordered by their first row's id."""
    copies: dict[str, list[Row]] = {}
    for row in rows:
        copies.setdefault(normalized_text(row["text"]), []).append(row)
    kept = [sorted(group, key=_row_order) for group in copies.values() if len({_is_toxic(r) for r in group}) == 1]
    return sorted(kept, key=lambda group: _row_order(group[0]))


def statement_example(copies: list[Row]) -> Example:
    """One item for the copies of one statement: the first copy's id and text, every copy's groups."""
    first = copies[0]
    # A statement aimed at several groups counts toward each of them (DESIGN: definitions);
    # dict.fromkeys drops repeats while keeping the source order.
    groups = tuple(dict.fromkeys(canonical_group(g) for row in copies for g in row["target_groups"]))
    # Only surrounding whitespace is stripped; other artifacts (e.g. "_x000D_") stay as released.
    return toxicity_example(f"{TASK_NAME}/{first['id']}", first["text"].strip(), _is_toxic(first), groups)


def check_row(row: Row) -> None:
    """Raises when a row makes no statement (tasks.bad_rows): a missing field, a label other than
    hate or neutral, text or groups of the wrong type."""
    if not isinstance(row["text"], str):
        raise RowError(f"ToxiGen item {row['id']}: the text must be a string", "text")
    if not isinstance(row["target_groups"], (list, tuple)):
        raise RowError(f"ToxiGen item {row['id']}: target_groups must be a list", "target_groups")
    statement_example([row])


def examples_from_rows(rows: tuple[Row, ...], split: str) -> list[Example]:
    return [statement_example(copies) for copies in statements(rows)
            if split_of(copies[0]["text"]) == split]


DEFINITIONS = (
    TaskDefinition(
        name=TASK_NAME,
        description=(
            "Revised ToxiGen statements (Hosseini et al. 2023) as toxic / not toxic QA (safety task), "
            "13 target groups; one item per distinct statement; fixed hash split of the normalized text, "
            f"{TRAIN_POOL_FRACTION:.0%} train pool / {VALIDATION_FRACTION:.0%} validation / rest eval"
        ),
        version="2",  # 2: one item per statement, split by its normalized text (was: by row id); validation
        hub=HUB,
        mirror=MIRROR,
        template="toxicity",
        group_field="target_groups",
        examples_from_rows=examples_from_rows,
        check_row=check_row,
        splits=("train", "validation", "eval"),
        validation=VALIDATION,
    ),
)
