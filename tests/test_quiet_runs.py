"""A run's log says what each stage did and nothing the libraries repeat: a tiny chain, run in
this process with its output captured, prints one start and one end line per stage (trial,
stage, task, steps, seconds, its task's accuracy) and none of the silenced notices (transformers'
`past_key_values` deprecation, progress bars of datasets and transformers), while any other
warning still shows."""

from __future__ import annotations

import dataclasses
import logging
import re
import warnings

import pytest

from contract.plan import RunInfo
from study.planner import build_plans
from study.spec_loading import spec_from_dict
from trainables.chain import run_chain
from trainables.quiet_logs import PAST_KEY_VALUES_NOTICE, quiet_libraries

SILENCED = ("past_key_values", "cache_params", "Building labels", "Truncating", "Loading weights", "it/s]")


@pytest.fixture(scope="module")
def two_stage_plan(tiny_model_path, data_dir, tmp_path_factory):
    spec = spec_from_dict({
        "name": "quiet", "model": {"name": "tiny", "max_length": 256},
        "tasks": {"toxigen_qa": {"train_size": 8, "eval_size": 4}, "arc_easy": {"train_size": 8, "eval_size": 4}},
        "stage_defaults": {"learning_rate": 1e-3, "batch_size": 4, "steps": 2},
        "chains": {"b": [{"task": "toxigen_qa", "steps": 3}, {"task": "arc_easy"}]},
        "data_dir": str(data_dir),
    })
    study = tmp_path_factory.mktemp("quiet") / "quiet"
    (plan,) = build_plans(spec, study_dir=study, data_dir=str(data_dir), base_model_path=str(tiny_model_path), chat=False)
    return dataclasses.replace(plan, run=RunInfo("run1"))


def test_each_stage_prints_a_start_and_an_end_line_and_no_silenced_notice(two_stage_plan, capfd):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # as a plain `python` process shows them (pytest may differ)
        metrics = run_chain(two_stage_plan)
        warnings.warn("an engine warning that must still show", UserWarning)
    out, err = capfd.readouterr()
    shown = [str(w.message) for w in caught]
    lines = [line for line in out.splitlines() if line.startswith("[stage]")]
    trial = two_stage_plan.trial_id
    assert len(lines) == 4
    assert lines[0] == f"[stage] trial {trial} stage 1/2 toxigen_qa (3 steps): start"
    assert lines[2] == f"[stage] trial {trial} stage 2/2 arc_easy (2 steps): start"
    end = re.compile(rf"\[stage\] trial {trial} stage (\d)/2 (\w+) \((\d) steps\): finished in (\d+\.\d) s, "
                     r"(\w+) accuracy (\d\.\d{3})$")
    one, two = end.match(lines[1]), end.match(lines[3])
    assert one and two, lines
    assert one.groups()[:3] == ("1", "toxigen_qa", "3") and one.group(5) == "toxigen_qa"
    assert two.groups()[:3] == ("2", "arc_easy", "2") and two.group(5) == "arc_easy"
    assert float(two.group(6)) == pytest.approx(metrics["arc_easy/accuracy"], abs=5e-4)
    assert float(one.group(4)) > 0
    for needle in SILENCED:
        assert needle not in out and needle not in err and not any(needle in m for m in shown), needle
    assert "an engine warning that must still show" in shown


def test_only_the_known_notices_are_silenced(capfd):
    """The filters match the known messages, not a category or a logger as a whole."""
    quiet_libraries()
    import transformers

    logger = transformers.utils.logging.get_logger("transformers.models.llama")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_libraries()  # re-applies its filter inside this block
        warnings.warn("`past_key_values` is deprecated and will be removed", FutureWarning)
        warnings.warn("another FutureWarning", FutureWarning)
        warnings.warn("a UserWarning", UserWarning)
    assert [str(w.message) for w in caught] == ["another FutureWarning", "a UserWarning"]
    transformers.utils.logging.set_verbosity_warning()  # as a trainer might set it
    try:
        logger.warning(PAST_KEY_VALUES_NOTICE + " Use `cache` instead.")
        logger.warning("another transformers warning")
    finally:
        transformers.utils.logging.set_verbosity_error()
    err = capfd.readouterr().err
    assert "cache_params" not in err and "another transformers warning" in err
    assert logging.getLogger("transformers").level == logging.ERROR
