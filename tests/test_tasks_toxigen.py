"""ToxiGenQA: canonical groups, multi-group items and the fixed hash split."""

from tests.mirror import MIRROR, needs_mirror
from trainables.tasks import load_examples
from trainables.tasks.source import read_rows
from trainables.tasks.toxigen import CANONICAL_GROUPS, HUB, MIRROR as TOXIGEN_MIRROR, examples_from_rows, split_of


def test_split_rule_is_pinned():
    # sha256("toxigen_qa/<id>") < 0.4 * 2**64 -> train. Pinned so a change to the rule
    # (which would silently move examples between train and eval) fails here.
    assert [split_of(f"toxigen_qa/{i}") for i in range(8)] == [
        "eval", "eval", "train", "eval", "eval", "eval", "train", "train",
    ]  # fmt: skip


@needs_mirror
def test_groups_are_the_13_canonical_names():
    examples = load_examples("toxigen_qa", "train", data_dir=MIRROR) + load_examples(
        "toxigen_qa", "eval", data_dir=MIRROR
    )
    groups = {g for e in examples for g in e.groups}
    assert groups == set(CANONICAL_GROUPS) and len(groups) == 13
    assert {"mental_dis", "physical_dis", "native_american", "middle_east"} <= groups


@needs_mirror
def test_multi_group_example_keeps_all_groups():
    examples = load_examples("toxigen_qa", "train", data_dir=MIRROR) + load_examples(
        "toxigen_qa", "eval", data_dir=MIRROR
    )
    by_id = {e.example_id: e for e in examples}
    # Source: ["native-american", "jewish", "black", "mexican", "latino", "asian"]
    assert by_id["toxigen_qa/1770"].groups == ("native_american", "jewish", "black", "mexican", "latino", "asian")
    assert sum(len(e.groups) > 1 for e in examples) == 1017  # 979 with 2 groups + 38 with 3-7


@needs_mirror
def test_splits_are_disjoint_complete_and_sized():
    train = load_examples("toxigen_qa", "train", data_dir=MIRROR)
    held_out = load_examples("toxigen_qa", "eval", data_dir=MIRROR)
    train_ids, eval_ids = {e.example_id for e in train}, {e.example_id for e in held_out}
    assert not train_ids & eval_ids
    assert len(train_ids | eval_ids) == 6514
    assert (len(train), len(held_out)) == (2638, 3876)
    assert all(split_of(i) == "train" for i in train_ids)


@needs_mirror
def test_split_does_not_depend_on_row_order():
    rows = read_rows(HUB, TOXIGEN_MIRROR, MIRROR, "train")
    forward = {e.example_id for e in examples_from_rows(rows, "train")}
    backward = {e.example_id for e in examples_from_rows(tuple(reversed(rows)), "train")}
    assert forward == backward


@needs_mirror
def test_text_is_stripped_but_otherwise_kept():
    examples = load_examples("toxigen_qa", "eval", data_dir=MIRROR) + load_examples(
        "toxigen_qa", "train", data_dir=MIRROR
    )
    statements = [e.prompt.split("\nPrompt: ", 1)[1].rsplit("\nAnswer:", 1)[0] for e in examples]
    assert all(s == s.strip() for s in statements)
    assert any("_x000D_" in s for s in statements)  # a source artifact, kept as released
