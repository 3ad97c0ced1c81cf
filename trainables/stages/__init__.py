"""Stage runners, one per fine-tuning method, all with the signature of `StageRunner`.

A registry instead of a class hierarchy: adding a method is one module, one line here and its
name in contract.methods.METHODS (with what it needs of TRL in METHOD_REQUIRES, which the
study's checks read; tests check that the registry covers exactly the contract's methods).
Every runner trains `model` in place for `stage.steps` optimizer steps and returns a
StageOutcome (its training log and the number of examples it used). A runner reads its
settings from the typed plan (`stage`: the stage's method settings among them; `training`;
`model_plan`: max_length, dtype, the base model's path) and restates no default: the planner
filled every one (study.planner).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from contract.methods import DPO, PPO, RLOO, SFT
from contract.plan import ModelPlan, StagePlan, TrainingPlan
from trainables.stages.outcome import StageOutcome
from trainables.stages.dpo import run_dpo
from trainables.stages.ppo import run_ppo
from trainables.stages.rloo import run_rloo
from trainables.stages.sft import run_sft


class StageRunner(Protocol):
    def __call__(self, *, model: Any, tokenizer: Any, stage: StagePlan, examples: Sequence[Any],
                 training: TrainingPlan, model_plan: ModelPlan, work_dir: str) -> StageOutcome: ...


STAGE_RUNNERS: dict[str, StageRunner] = {SFT: run_sft, DPO: run_dpo, PPO: run_ppo, RLOO: run_rloo}


def get_runner(method: str) -> StageRunner:
    try:
        return STAGE_RUNNERS[method]
    except KeyError:
        raise ValueError(f"no stage runner for method '{method}' (available: {', '.join(STAGE_RUNNERS)})") from None
