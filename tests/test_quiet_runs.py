"""A run's log says what each stage did and nothing the libraries repeat: a tiny chain, run in
this process with its output captured, prints one start and one end line per stage (trial,
stage, task, steps, seconds, its task's accuracy) and none of the silenced notices (transformers'
`past_key_values` deprecation, progress bars of datasets and transformers), while any other
warning still shows."""

from __future__ import annotations

import logging
import re
import warnings

import pytest

from tests.plans import tiny_study_plans
from trainables.chain import run_chain
from trainables.quiet_logs import PAST_KEY_VALUES_NOTICE, quiet_libraries

SILENCED = ("past_key_values", "cache_params", "Building labels", "Truncating", "Loading weights", "it/s]")


@pytest.fixture(scope="module")
def two_stage_plan(tiny_model_path, data_dir, tmp_path_factory):
    study = tmp_path_factory.mktemp("quiet") / "quiet"
    (plan,) = tiny_study_plans(tiny_model_path, data_dir, study, "quiet",
                               {"b": [{"task": "toxigen_qa", "steps": 3}, {"task": "arc_easy"}]}, train_size=8,
                               eval_size=4, run_id="run1")
    return plan


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


def test_only_the_known_notices_are_silenced():
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
    # transformers' own handler drops the notice and passes any other warning (asked of the
    # handler's filters directly: the stream it writes to is whatever stderr was when it was made)
    handler = transformers.utils.logging._default_handler
    assert handler is not None

    def passes(message: str) -> bool:
        record = logger.makeRecord(logger.name, logging.WARNING, __file__, 0, message, (), None)
        return bool(handler.filter(record))

    assert not passes(PAST_KEY_VALUES_NOTICE + " Use `cache` instead.")
    assert passes("another transformers warning")
    assert logging.getLogger("transformers").level == logging.ERROR


def test_ray_never_folds_stage_lines():
    """The `study` command tells Ray, before Ray is imported, to pass every stage line through
    its log deduplication (lines of two trials differ only in numbers, which Ray would fold)."""
    import re
    import subprocess
    import sys

    from study.cli import STAGE_LINES
    from trainables.timings import stage_line
    from tests.plans import stage_plan

    stage = stage_plan({"method": "sft", "task": "toxigen_qa", "learning_rate": 1e-3, "batch_size": 4,
                        "steps": 150, "seed": 0, "stage": 1})
    assert re.search(STAGE_LINES, stage_line("tqa_arc-0-1a2b", stage, 2))
    probe = ("import os, sys; import study.cli; "
             "print('ray' in sys.modules); print(os.environ['RAY_DEDUP_LOGS_ALLOW_REGEX'])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["False", STAGE_LINES]
