"""Stage runners, one per fine-tuning method, all with the signature of `StageRunner`.

A registry instead of a class hierarchy: adding a method is one module and one
line here. Every runner trains `model` in place for `stage.steps` optimizer steps and returns
a StageOutcome (its training log and the number of examples it used).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

from trainables.stages.outcome import StageOutcome
from trainables.stages.dpo import run_dpo
from trainables.stages.ppo import run_ppo
from trainables.stages.rloo import run_rloo
from trainables.stages.sft import run_sft


class StageRunner(Protocol):
    def __call__(self, *, model: Any, tokenizer: Any, stage: dict, examples: Sequence[Any], training: dict,
                 max_length: int, work_dir: str, model_dtype: str) -> StageOutcome: ...


STAGE_RUNNERS: dict[str, Callable[..., StageOutcome]] = {"sft": run_sft, "dpo": run_dpo, "ppo": run_ppo, "rloo": run_rloo}


def get_runner(method: str) -> Callable[..., StageOutcome]:
    try:
        return STAGE_RUNNERS[method]
    except KeyError:
        raise ValueError(f"no stage runner for method '{method}' (available: {', '.join(STAGE_RUNNERS)})") from None
