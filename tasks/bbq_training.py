"""BBQ's training set (Appendix A.1) and the human-validated items it prefers.

The paper: "We construct the training dataset with examples from BBQ's human validation
sub-dataset, and fill the rest with the provided templated examples. We ensure an even split
across all the social groups, and balance between disambiguated and ambiguous questions within
each group." train_selection does that on the train pool: an even share per category (within
1), within it half ambiguous, half disambiguated (within 1), and in each of those cells the
human-validated items first, then templated ones, all drawn by data_seed. A cell too small for
its share gives what it has and the rest goes to the other cells (so the size is still met).

Human-validated items. The release's ``supplemental/MTurk_validation/data/validations_*.csv``
hold the crowdworkers' answers: one row per HIT of 5 items, each item given in full (context,
question, three answers, gold label, category) with the worker's pick. Item ids do not help:
the data was regenerated after validation (the generator is unseeded), so only the final round's
ids match data/*.jsonl. Items are therefore matched by content: category, context, question,
the two non-unknown answers and the gold answer (the can't-be-determined option is compared as
"unknown", since its wording is redrawn per item). An item counts as human-validated when it
matches and at least 80% of the votes on it pick the gold answer (4 of 5 workers).

Mapping result on the mirror (release commit bea11bd, 6 of 9 categories): the 2,160 HITs hold
10,770 votes on 1,957 distinct item contents, 866 of them in the mirrored categories. 369 of
those match the content of a data/*.jsonl item (the other 497 no longer occur: earlier rounds
validated template drafts that were revised before the final generation); 362 pass the
agreement rule (7 had 3 of 5 votes for gold) and mark 374 jsonl items (a few contents occur
twice in a file): 11-49 per category and condition; 130 of them are in the train pool
(5-20 per category and condition, with the content split of bbq.split_of) and 13 in the
validation split.

Only the mirror can mark items: its reader (read_mirror_file) finds the validation files beside
``bbq/data``. The Hub dataset has no supplemental folder, so Hub items carry
``human_validated=None`` and the training set is then drawn from templated items alone, with a
warning. A mirror without the folder behaves the same.
"""

from __future__ import annotations

import csv
import functools
import io
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .example import Example
from .row_files import FileRows, read_jsonl
from .source import Row

HUMAN_VALIDATED_FIELD = "_human_validated"
# Relative to the folder holding data/*.jsonl (the release root, "<data dir>/bbq").
VALIDATION_DIR = Path("supplemental") / "MTurk_validation" / "data"
VALIDATION_FILES = "validations_*.csv"
MIN_AGREEMENT = 0.8

# The release's wordings of the can't-be-determined answer (every one of them occurs in data/).
UNKNOWN_ANSWERS = frozenset({
    "unknown", "cannot answer", "can't answer", "can't be determined", "cannot be determined",
    "not known", "not enough info", "not enough information", "not answerable", "undetermined",
})  # fmt: skip

ContentKey = tuple[str, str, str, tuple[str, ...], str]


def _text(value: str) -> str:
    # Whitespace and apostrophe style vary between the validation sheets and the final files.
    return " ".join(str(value).replace("\u2019", "'").split())


def content_key(category: str, context: str, question: str, answers: Sequence[str], label: int) -> ContentKey | None:
    """What identifies an item across regenerations; None if no answer is a can't-be-determined one."""
    texts = [_text(a) for a in answers]
    unknown = [i for i, t in enumerate(texts) if t.lower() in UNKNOWN_ANSWERS]
    if len(unknown) != 1:
        return None
    people = tuple(sorted(t for i, t in enumerate(texts) if i != unknown[0]))
    gold = "<unknown>" if label == unknown[0] else texts[label]
    return (category.strip().lower(), _text(context), _text(question), people, gold)


def _read_csv(path: Path) -> list[dict[str, str]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # a few release sheets were saved as Windows-1252
        text = raw.decode("cp1252", errors="replace")
    return list(csv.DictReader(io.StringIO(text)))


def _votes(hit: Mapping[str, str]) -> list[tuple[ContentKey, bool]]:
    """(item, did the worker pick the gold answer) for each of a HIT's items."""
    votes = []
    for q in range(1, 6):
        prefix = f"q{q}_"
        if not hit.get(prefix + "input") or not hit.get(prefix + "label", "").isdigit():
            continue
        label = int(hit[prefix + "label"])
        answers = tuple(hit[f"{prefix}ans_{i}"] for i in range(3))
        key = _cached_content_key(hit[prefix + "cat"], hit[prefix + "input"], hit[prefix + "question"], answers, label)
        if key is not None:
            votes.append((key, hit.get(f"Answer.q{q}") == f"ans_{label}"))
    return votes


# Each item is shown to 5 or more workers: normalize its text once.
_cached_content_key = functools.lru_cache(maxsize=8192)(content_key)


@functools.lru_cache(maxsize=4)
def validated_keys(validation_dir: str) -> frozenset[ContentKey] | None:
    """Contents of items at least MIN_AGREEMENT of whose votes pick the gold answer; None if
    the folder has no validation files."""
    paths = sorted(Path(validation_dir).glob(VALIDATION_FILES))
    if not paths:
        return None
    agree: dict[ContentKey, list[bool]] = defaultdict(list)
    for path in paths:
        for hit in _read_csv(path):
            for key, vote in _votes(hit):
                agree[key].append(vote)
    return frozenset(key for key, votes in agree.items() if sum(votes) >= MIN_AGREEMENT * len(votes))


def row_content_key(row: Row) -> ContentKey | None:
    answers = [row[f"ans{i}"] for i in range(3)]
    return content_key(row["category"], row["context"], row["question"], answers, int(row["label"]))


def read_mirror_file(path: Path) -> FileRows:
    """A release data/*.jsonl file, each row marked human-validated (True / False), or None
    when the mirror lacks the validation files; rows with their lines (tasks.row_files)."""
    keys = validated_keys(str(path.parent.parent / VALIDATION_DIR))
    return read_jsonl(path).mapped(
        lambda row: {**row, HUMAN_VALIDATED_FIELD: None if keys is None else _validated(row, keys)})


def _validated(row: Row, keys: frozenset[ContentKey]) -> bool | None:
    try:
        return row_content_key(row) in keys
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # a row without the fields of its key: the task's row check reports it


# --- the training-set rule -------------------------------------------------------------------


def even_allocation(capacities: Mapping[str, int], total: int, rng: np.random.Generator) -> dict[str, int]:
    """Split `total` (at most the capacities' sum) as evenly as capacities allow.

    Keys that cannot take an equal share give all they have; the others share the rest
    equally, and the remainder of that division goes one each to keys drawn by `rng`.
    """
    total = min(total, sum(capacities.values()))
    counts = {key: 0 for key in capacities}
    open_keys = sorted(capacities)
    while open_keys:
        share = total // len(open_keys)
        full = [key for key in open_keys if capacities[key] <= share]
        if not full:
            break
        for key in full:
            counts[key] = capacities[key]
            total -= capacities[key]
        open_keys = [key for key in open_keys if key not in full]
    if open_keys:
        share, extra = divmod(total, len(open_keys))
        lucky = set(rng.choice(len(open_keys), size=extra, replace=False).tolist())
        for position, key in enumerate(open_keys):
            counts[key] = share + (position in lucky)
    return counts


def _draw(items: Sequence[Example], n: int, rng: np.random.Generator) -> list[Example]:
    picks = rng.choice(len(items), size=min(n, len(items)), replace=False)
    return [items[i] for i in sorted(picks)]


def validated_first(items: Sequence[Example], n: int, rng: np.random.Generator) -> list[Example]:
    """n items, human-validated ones first (a seeded subset if there are more), then templated."""
    validated = [e for e in items if e.info.get("human_validated")]
    if n <= len(validated):
        return _draw(validated, n, rng)
    templated = [e for e in items if not e.info.get("human_validated")]
    return validated + _draw(templated, n - len(validated), rng)


def _cells(pool: Sequence[Example]) -> dict[str, dict[str, list[Example]]]:
    """category -> condition -> items sorted by id (so the draw ignores the pool's order)."""
    cells: dict[str, dict[str, list[Example]]] = defaultdict(lambda: defaultdict(list))
    for example in pool:
        cells[example.groups[0]][example.info["condition"]].append(example)
    return {
        category: {condition: sorted(items, key=lambda e: e.example_id) for condition, items in sorted(conds.items())}
        for category, conds in sorted(cells.items())
    }


def _warn_if_unmarked(pool: Sequence[Example]) -> None:
    if pool and all(e.info.get("human_validated") is None for e in pool):
        warnings.warn(
            "BBQ training set: no human-validation data (the Hub source, or a mirror without "
            f"bbq/{VALIDATION_DIR.as_posix()}), so it is drawn from templated items only",
            stacklevel=3,
        )


def train_selection(pool: Sequence[Example], size: int, data_seed: int) -> list[Example]:
    """The Appendix A.1 training set: min(size, len(pool)) items, in a data_seed-shuffled order."""
    _warn_if_unmarked(pool)
    rng = np.random.default_rng(data_seed)
    cells = _cells(pool)
    per_category = even_allocation({c: sum(map(len, conds.values())) for c, conds in cells.items()}, size, rng)
    chosen: list[Example] = []
    for category, conds in cells.items():  # sorted: the rng is consumed in a fixed order
        per_condition = even_allocation({k: len(v) for k, v in conds.items()}, per_category[category], rng)
        for condition, items in conds.items():
            chosen.extend(validated_first(items, per_condition[condition], rng))
    # Shuffled so that training batches do not run category by category.
    return [chosen[i] for i in rng.permutation(len(chosen))]
