"""The task registry, argument checking, data dir resolution and the Hub (remote) path."""

import dataclasses
import json

import pytest

from tests.fake_hub import fake_datasets
from tasks import (
    TASK_NAMES,
    Example,
    UnknownTaskError,
    clear_caches,
    get_task,
    load_examples,
    registry,
    resolve_data_dir,
)
from tasks import loading
from tasks.definition import TaskDefinition
from tasks.source import HubSource, MirrorSource


def test_task_names_and_definitions():
    assert TASK_NAMES == ("arc_easy", "arc_challenge", "toxigen_qa", "bbq", "mmlu", "toxigen_prompts", "saferdialogues")
    arc, toxigen = get_task("arc_easy"), get_task("toxigen_qa")
    assert (arc.has_groups, toxigen.has_groups) == (False, True)
    assert "allenai/ai2_arc" in arc.remote_source
    assert "microsoft/SafeNLP" in toxigen.remote_source
    assert arc.version and toxigen.version
    with pytest.raises(dataclasses.FrozenInstanceError):
        arc.version = "2"


def test_unknown_task_suggests_the_closest_name():
    with pytest.raises(UnknownTaskError) as caught:
        get_task("toxigen")
    message = str(caught.value)
    assert "unknown task 'toxigen'; did you mean 'toxigen_qa'?" in message
    assert "arc_easy" in message and "toxigen_qa" in message
    assert isinstance(caught.value, ValueError)
    with pytest.raises(UnknownTaskError, match="did you mean 'arc_easy'"):
        load_examples("arc-easy", "train")
    with pytest.raises(UnknownTaskError) as caught:
        get_task("mnist")
    assert "did you mean" not in str(caught.value)


@pytest.mark.parametrize("split", ["test", "dev", ""])
def test_bad_split(split):
    with pytest.raises(ValueError, match="unknown split"):
        load_examples("arc_easy", split)


def test_a_split_the_task_lacks_is_named():
    with pytest.raises(ValueError, match="task 'saferdialogues' has no 'validation' split"):
        load_examples("saferdialogues", "validation")


@pytest.mark.parametrize("size", [-1, 2.5, True])
def test_bad_size(size):
    with pytest.raises(ValueError, match="size"):
        load_examples("arc_easy", "train", size=size)


def test_data_dir_precedence(tmp_path, monkeypatch):
    spec_dir, env_dir = tmp_path / "spec", tmp_path / "env"
    spec_dir.mkdir()
    env_dir.mkdir()
    monkeypatch.setenv("STUDY_DATA_DIR", str(env_dir))
    assert resolve_data_dir(str(spec_dir)) == spec_dir.resolve()
    assert resolve_data_dir(spec_dir) == spec_dir.resolve()
    assert resolve_data_dir(None) == env_dir.resolve()
    monkeypatch.setenv("STUDY_DATA_DIR", "")
    assert resolve_data_dir(None) is None
    monkeypatch.delenv("STUDY_DATA_DIR")
    assert resolve_data_dir(None) is None


def test_missing_data_dir_names_it_and_its_origin(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    monkeypatch.delenv("STUDY_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError) as caught:
        resolve_data_dir(missing)
    assert str(missing) in str(caught.value) and "spec field" in str(caught.value)
    monkeypatch.setenv("STUDY_DATA_DIR", str(missing))
    with pytest.raises(FileNotFoundError) as caught:
        resolve_data_dir(None)
    assert str(missing) in str(caught.value) and "STUDY_DATA_DIR" in str(caught.value)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError):
        resolve_data_dir(a_file)


def test_data_dir_without_the_task_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="ARC-Easy-Train.jsonl"):
        load_examples("arc_easy", "train", data_dir=tmp_path)


# --- the Hub path, with `datasets` replaced by a recording fake (no network here) ---


@pytest.fixture
def fake_hub(monkeypatch):
    rows = {
        "allenai/ai2_arc": [
            {"id": "Q1", "question": "Pick one", "choices": {"text": ["x", "y", "z", "w"], "label": ["A", "B", "C", "D"]},
             "answerKey": "C"},
            {"id": "Q3", "question": "Three", "choices": {"text": ["x", "y", "z"], "label": ["A", "B", "C"]},
             "answerKey": "A"},
        ],
        "json": [
            {"id": i, "text": f" statement {i} ", "toxicity_score": 3.0, "label": "hate" if i % 2 else "neutral",
             "target_groups": ["middle-eastern"]}
            for i in range(20)
        ],
    }  # fmt: skip

    with fake_datasets(monkeypatch, rows.__getitem__) as calls:
        yield calls


def test_arc_loads_from_the_hub_without_a_data_dir(fake_hub):
    (example,) = load_examples("arc_easy", "eval")
    assert fake_hub == [("allenai/ai2_arc", ("ARC-Easy",), {"split": "test"})]
    assert example.example_id == "arc_easy/Q1"
    assert example.prompt.endswith("\nPrompt: Pick one A. x. B. y. C. z. D. w.\nAnswer:")
    assert example.completion == " The best answer is C."
    assert [e.example_id for e in load_examples("arc_easy", "eval", option_counts=[3, 4])] == ["arc_easy/Q1", "arc_easy/Q3"]
    load_examples("arc_easy", "train")
    assert fake_hub[-1][2] == {"split": "train"}
    load_examples("arc_easy", "validation")
    assert fake_hub[-1][2] == {"split": "validation"}


def test_toxigen_loads_the_source_file_without_a_data_dir(fake_hub):
    train = load_examples("toxigen_qa", "train")
    held_out = load_examples("toxigen_qa", "eval")
    url = "https://raw.githubusercontent.com/microsoft/SafeNLP/main/data/toxiGen.json"
    assert fake_hub[0] == ("json", (), {"data_files": url, "split": "train"})
    validation = load_examples("toxigen_qa", "validation")
    assert len(fake_hub) == 1  # the file is read once for all three splits
    assert len(train) + len(validation) + len(held_out) == 20 and train and held_out
    assert all(e.groups == ("middle_east",) for e in train + validation + held_out)
    example = next(e for e in train + validation + held_out if e.example_id == "toxigen_qa/3")
    assert "\nPrompt: statement 3\nAnswer:" in example.prompt and example.completion == " This is toxic."


# --- registering: replacing a task drops its cached examples ---


def _parse(rows, split, prefix="Q"):
    return [Example(example_id=f"demo_reg/{row['id']}", prompt=f"{prefix}: {row['text']}", answer_prefix=" Answer",
                    options=(" A.", " B."), option_names=("A", "B"), label=0) for row in rows]


def _parse_shouting(rows, split):
    return _parse(rows, split, prefix="QUESTION")


def _read_reversed(path):
    return tuple(reversed([json.loads(line) for line in path.read_text().splitlines()]))


@pytest.fixture
def demo_task(tmp_path, monkeypatch):
    """A programmatic task over two mirror files, in a registry of this test's own."""
    monkeypatch.setattr(registry, "TASKS", dict(registry.TASKS))
    monkeypatch.delenv("STUDY_DATA_DIR", raising=False)
    for name, ids in (("a.jsonl", ["a1", "a2"]), ("b.jsonl", ["b1"])):
        (tmp_path / name).write_text("\n".join(json.dumps({"id": i, "text": f"item {i}"}) for i in ids))
    clear_caches()
    yield TaskDefinition(
        name="demo_reg", description="registry test task", version="1",
        hub=HubSource(path="example-org/demo-reg", splits={"eval": "test"}),
        mirror=MirrorSource(files={"eval": "a.jsonl"}), template="multiple_choice", group_field=None,
        examples_from_rows=_parse, splits=("eval",), origin="test")
    clear_caches()


def _loaded(data_dir):
    return [(e.example_id, e.prompt) for e in load_examples("demo_reg", "eval", data_dir=data_dir)]


@pytest.mark.parametrize("change, expected", [
    # Only the row parser differs: the definitions compare equal, yet the examples change.
    ({"examples_from_rows": _parse_shouting}, [("demo_reg/a1", "QUESTION: item a1"), ("demo_reg/a2", "QUESTION: item a2")]),
    ({"mirror": MirrorSource(files={"eval": "a.jsonl"}, reader=_read_reversed)},
     [("demo_reg/a2", "Q: item a2"), ("demo_reg/a1", "Q: item a1")]),
    ({"mirror": MirrorSource(files={"eval": "b.jsonl"}), "version": "2"}, [("demo_reg/b1", "Q: item b1")]),
])
def test_replacing_a_task_drops_its_cached_examples(demo_task, tmp_path, change, expected):
    registry.register(demo_task)
    assert _loaded(tmp_path) == [("demo_reg/a1", "Q: item a1"), ("demo_reg/a2", "Q: item a2")]
    replacement = dataclasses.replace(demo_task, **change)
    assert registry.register(replacement, replace=True) is replacement and get_task("demo_reg") is replacement
    assert _loaded(tmp_path) == expected


def test_registering_the_same_definition_again_keeps_the_cache(demo_task, tmp_path):
    registry.register(demo_task)
    _loaded(tmp_path)
    assert loading._split_examples.cache_info().currsize == 1
    registry.register(demo_task)
    registry.register(dataclasses.replace(demo_task), replace=True)  # an equal copy
    assert loading._split_examples.cache_info().currsize == 1


def test_a_clash_is_refused_and_leaves_task_and_cache_alone(demo_task, tmp_path):
    registry.register(demo_task)
    _loaded(tmp_path)
    with pytest.raises(ValueError, match="clashes"):
        registry.register(dataclasses.replace(demo_task, version="2", origin="elsewhere"))
    assert get_task("demo_reg") is demo_task and loading._split_examples.cache_info().currsize == 1
