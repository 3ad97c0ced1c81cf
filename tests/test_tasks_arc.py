"""ARC: four-option questions by default (the paper's sizes), option_counts, the Dev split."""

import pytest

from tests.mirror import MIRROR, needs_mirror
from tasks import get_task, load_examples
from tasks.loading import option_count_histogram

ALL = [3, 4, 5]


def _sizes(task, option_counts=None):
    return {split: len(load_examples(task, split, data_dir=MIRROR, option_counts=option_counts))
            for split in get_task(task).splits}


def test_definitions_keep_four_options_and_have_a_validation_split():
    for name in ("arc_easy", "arc_challenge"):
        task = get_task(name)
        assert task.option_counts == (4,) and task.has_validation and task.version == "2"
        assert task.hub.splits["validation"] == "validation"
    assert get_task("arc_easy").mirror.files["validation"] == "arc/ARC-Easy/ARC-Easy-Dev.jsonl"
    assert get_task("arc_challenge").mirror.files["validation"] == "arc/ARC-Challenge/ARC-Challenge-Dev.jsonl"
    assert not get_task("arc_challenge").trainable


@needs_mirror
def test_arc_easy_sizes_are_the_papers_by_default():
    # Appendix A.1: train 2,241, test 2,365: exactly the four-option questions of the release.
    assert _sizes("arc_easy") == {"train": 2241, "validation": 567, "eval": 2365}
    assert _sizes("arc_easy", ALL) == {"train": 2251, "validation": 570, "eval": 2376}
    assert option_count_histogram("arc_easy", "train", MIRROR) == {3: 6, 4: 2241, 5: 4}
    assert option_count_histogram("arc_easy", "eval", MIRROR) == {3: 7, 4: 2365, 5: 4}


@needs_mirror
def test_arc_challenge_sizes():
    assert _sizes("arc_challenge") == {"validation": 295, "eval": 1165}
    assert _sizes("arc_challenge", ALL) == {"validation": 299, "eval": 1172}


@needs_mirror
def test_option_counts_pick_items_and_order_does_not_matter():
    four = load_examples("arc_easy", "train", data_dir=MIRROR)
    assert {len(e.options) for e in four} == {4}
    assert all("four candidate answers (A, B, C and D)" in e.prompt for e in four)
    odd = load_examples("arc_easy", "train", data_dir=MIRROR, option_counts=[5, 3])
    assert len(odd) == 10 and {len(e.options) for e in odd} == {3, 5}
    # Applied before limit and sampling: the first 5 and a sample are four-option questions.
    assert {len(e.options) for e in load_examples("arc_easy", "train", data_dir=MIRROR, limit=5)} == {4}
    sample = load_examples("arc_easy", "train", size=300, data_dir=MIRROR, option_counts=ALL)
    assert len(sample) == 300


def test_option_counts_on_a_generation_task_are_refused():
    with pytest.raises(ValueError, match="no options to count"):
        load_examples("saferdialogues", "eval", option_counts=[4])
