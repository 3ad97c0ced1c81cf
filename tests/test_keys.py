"""The key recipes are the storage format: pinned to the values the engine has always given.

A stage key, trial id, base-stage key, measurement key or validation key that changes makes
every stored stage or measurement of existing studies unreachable (they would be retrained or
re-measured without a word). The values below were computed by the engine before the plan
became typed (the dict-based planner and chain) and again after; a change that alters one must
bump a version on purpose (contract.plan.PLAN_VERSION, TOKENIZATION_VERSION, a task version)
and update this test with the reason.
"""

from __future__ import annotations

from contract.keys import base_stage_key, measure_keys, validation_key
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
    assert keys.to_dict() == {"evals": "e2ba4290b8a8", "curvature": "cc5ffe510e64"}
    assert validation_key("validation", 200, keys) == "cc7959bd0c39"
