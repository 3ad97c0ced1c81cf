"""ToxiGenQA: canonical groups, multi-group items, one item per statement and the fixed
hash split of the normalized statement."""

import json
from collections import Counter

from tests.mirror import MIRROR, needs_mirror
from tasks import load_examples
from tasks.holdout import normalized_text, unit_point
from tasks.source import read_rows
from tasks.toxigen import CANONICAL_GROUPS, HUB, MIRROR as TOXIGEN_MIRROR, examples_from_rows, split_of

SPLITS = ("train", "validation", "eval")


def _all_splits():
    return {split: load_examples("toxigen_qa", split, data_dir=MIRROR) for split in SPLITS}


def _statement(example):
    return normalized_text(example.prompt.split("\nPrompt: ", 1)[1].rsplit("\nAnswer:", 1)[0])


def test_split_rule_is_pinned():
    # sha256("toxigen_qa/<normalized statement>") as a fraction of 2**64: < 0.40 train,
    # < 0.45 validation, else eval. Pinned so a change to the rule (which would silently move
    # examples between the splits) fails here.
    assert [split_of(t) for t in "abcdefghijklmnopq"] == [
        "eval", "eval", "train", "eval", "eval", "validation", "eval", "train", "train", "train", "eval",
        "eval", "train", "train", "validation", "train", "eval",
    ]  # fmt: skip
    # Case and whitespace do not move a statement.
    assert split_of("  F\n") == split_of("f") == "validation"


def _row(i, text, label="hate", groups=("women",)):
    return {"id": i, "text": text, "toxicity_score": 4.0, "label": label, "target_groups": list(groups)}


def test_copies_of_a_statement_become_one_item():
    rows = (
        _row(7, "Same  statement", groups=("mexican", "latino")),
        _row(3, " same statement", groups=("latino",)),
        _row(5, "Contested", label="hate"),
        _row(9, "contested ", label="neutral"),
        _row(1, "alone", label="neutral", groups=("middle-eastern",)),
    )
    items = [e for split in SPLITS for e in examples_from_rows(rows, split)]
    by_id = {e.example_id: e for e in items}
    # The lowest id names the statement, its text is the first copy's, its groups every copy's;
    # copies that disagree on the label are dropped.
    assert sorted(by_id) == ["toxigen_qa/1", "toxigen_qa/3"]
    assert by_id["toxigen_qa/3"].groups == ("latino", "mexican")
    assert "\nPrompt: same statement\nAnswer:" in by_id["toxigen_qa/3"].prompt
    assert by_id["toxigen_qa/1"].groups == ("middle_east",)


@needs_mirror
def test_groups_are_the_13_canonical_names():
    examples = [e for split in _all_splits().values() for e in split]
    groups = {g for e in examples for g in e.groups}
    assert groups == set(CANONICAL_GROUPS) and len(groups) == 13
    assert {"mental_dis", "physical_dis", "native_american", "middle_east"} <= groups


@needs_mirror
def test_multi_group_example_keeps_all_groups():
    examples = [e for split in _all_splits().values() for e in split]
    by_id = {e.example_id: e for e in examples}
    # Source: ["native-american", "jewish", "black", "mexican", "latino", "asian"]
    assert by_id["toxigen_qa/1770"].groups == ("native_american", "jewish", "black", "mexican", "latino", "asian")
    # 1,017 rows name several groups; as statements, with copies merged (and 17 copies naming
    # other groups than their twin), 998 items do.
    assert sum(len(e.groups) > 1 for e in examples) == 998


@needs_mirror
def test_splits_are_disjoint_complete_and_sized():
    splits = _all_splits()
    # 6,514 rows, 6,408 distinct statements, 10 of them with contradictory labels dropped.
    assert {s: len(v) for s, v in splits.items()} == {"train": 2570, "validation": 319, "eval": 3509}
    ids = {s: {e.example_id for e in v} for s, v in splits.items()}
    assert len(ids["train"] | ids["validation"] | ids["eval"]) == 6398
    texts = {s: [_statement(e) for e in v] for s, v in splits.items()}
    assert all(len(set(t)) == len(t) for t in texts.values())  # no statement twice within a split
    for a, b in (("train", "eval"), ("train", "validation"), ("validation", "eval")):
        assert not ids[a] & ids[b]
        assert not set(texts[a]) & set(texts[b])  # 0 normalized statements shared
    assert all(split_of(t) == s for s, v in texts.items() for t in v)


@needs_mirror
def test_the_row_id_split_leaked_statements_the_text_split_does_not():
    """What the version-1 rule (sha256("toxigen_qa/<row id>") < 0.4 -> train) did on the
    mirror: 53 of the 106 repeated statements had a copy on each side."""
    rows = json.loads((MIRROR / "toxigen/safenlp/toxiGen.json").read_text(encoding="utf-8"))
    copies = Counter(normalized_text(r["text"]) for r in rows)
    assert (len(rows), len(copies), sum(n == 2 for n in copies.values())) == (6514, 6408, 106)
    old_side = {}
    for row in rows:
        old_side.setdefault(normalized_text(row["text"]), set()).add(unit_point(f"toxigen_qa/{row['id']}") < 0.4)
    assert sum(len(sides) == 2 for sides in old_side.values()) == 53
    assert all(len({split_of(r["text"]) for r in rows if normalized_text(r["text"]) == t}) == 1
               for t, n in copies.items() if n > 1)


@needs_mirror
def test_split_does_not_depend_on_row_order():
    rows = read_rows(HUB, TOXIGEN_MIRROR, MIRROR, "train")
    for split in SPLITS:
        forward = {(e.example_id, e.groups) for e in examples_from_rows(rows, split)}
        backward = {(e.example_id, e.groups) for e in examples_from_rows(tuple(reversed(rows)), split)}
        assert forward == backward


@needs_mirror
def test_text_is_stripped_but_otherwise_kept():
    examples = [e for split in _all_splits().values() for e in split]
    statements = [e.prompt.split("\nPrompt: ", 1)[1].rsplit("\nAnswer:", 1)[0] for e in examples]
    assert all(s == s.strip() for s in statements)
    assert any("_x000D_" in s for s in statements)  # a source artifact, kept as released
