"""The key recipes are the storage format: pinned to the values the engine has always given.

A stage key, trial id, base-stage key, measurement key or validation key that changes makes
every stored stage or measurement of existing studies unreachable (they would be retrained or
re-measured without a word). The values below were computed by the engine before the plan
became typed (the dict-based planner and chain) and again after; a change that alters one must
bump a version on purpose (contract.plan.PLAN_VERSION, TOKENIZATION_VERSION, a task version)
and update this test with the reason.
"""

from __future__ import annotations

import dataclasses

from contract.keys import MeasureKeys, base_stage_key, measure_keys, same_measurements, validation_key
from study.planner import build_plans
from study.spec_loading import load_spec_file


def test_the_demo_studys_keys_are_the_ones_stored_studies_were_written_with(data_dir):
    spec = load_spec_file("study/presets/demo.yaml", ["model=tiny", f"data_dir={data_dir}"])
    plans = build_plans(spec, study_dir="/tmp/keys", data_dir=str(data_dir),
                        base_model_path="/models/tiny-0123456789ab", chat=False)
    plan = plans[0]
    assert plan.trial_id == "tqa_arc-0-182da8d1"
    assert [s.stage_key for s in plan.stages] == ["42d74d3a84cd524f", "7a045c494aaaf2df"]
    assert base_stage_key(plan.model) == "base-689ae6f3009c"
    keys = measure_keys(plan)
    # The curvature key of a study without curvature changed with curvature's default algorithms
    # (Lanczos alone; it was "cc5ffe510e64" with both): such a study's finished trials still count
    # as finished, because only a measured curvature's key is compared (same_measurements).
    assert keys.to_dict() == {"evals": "e2ba4290b8a8", "curvature": "060ac2f95bb5"}
    assert same_measurements(MeasureKeys(evals="e2ba4290b8a8", curvature="cc5ffe510e64"), plan)
    assert not same_measurements(MeasureKeys(evals="e2ba4290b8a9", curvature="060ac2f95bb5"), plan)
    measured = dataclasses.replace(plan, curvature=dataclasses.replace(plan.curvature, enabled=True))
    assert not same_measurements(MeasureKeys(evals="e2ba4290b8a8", curvature="cc5ffe510e64"), measured)
    assert same_measurements(measure_keys(measured), measured)
    assert validation_key("validation", 200, keys) == "cc7959bd0c39"
