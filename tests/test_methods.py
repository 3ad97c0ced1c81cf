"""The methods' vocabulary (contract.methods) against those who use it: the stage runners, the
TRL imports the study's checks predict, and the study file's types and defaults."""

from __future__ import annotations

import ast
import inspect
import typing

from contract.methods import DPO_REFERENCES, EVAL_MODES, METHOD_REQUIRES, METHODS, PROMPT_MODES
from contract.plan import DEFAULT_EVAL_MODES
from study.spec import DPOSpec, OnlineRLSpec, TaskSpec


def test_the_stage_runners_cover_exactly_the_contracts_methods():
    from trainables.stages import STAGE_RUNNERS

    assert set(STAGE_RUNNERS) == set(METHODS)
    assert set(METHOD_REQUIRES) <= set(METHODS)


def _trl_imports(module) -> set[str]:
    """Dotted names under trl a module imports: 'DPOTrainer' (from trl import), 'experimental.ppo' (a submodule)."""
    found = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "trl":
            if node.module == "trl":
                found.update(alias.name for alias in node.names)
            else:
                found.add(node.module.removeprefix("trl."))
    return found


def test_each_runner_imports_what_the_study_checks_require_of_trl():
    from trainables.stages import STAGE_RUNNERS

    for method, requirement in METHOD_REQUIRES.items():
        assert requirement.name in _trl_imports(inspect.getmodule(STAGE_RUNNERS[method])), method


def test_the_study_files_values_are_the_contracts():
    hints = typing.get_type_hints(DPOSpec)
    assert typing.get_args(hints["reference"]) == DPO_REFERENCES and DPOSpec().reference in DPO_REFERENCES
    hints = typing.get_type_hints(OnlineRLSpec)
    assert typing.get_args(hints["prompts"]) == PROMPT_MODES and OnlineRLSpec().prompts in PROMPT_MODES
    # One constant: what an eval task's key omits is what a study gets by default.
    assert TaskSpec().eval_modes is DEFAULT_EVAL_MODES and set(DEFAULT_EVAL_MODES) <= set(EVAL_MODES)
