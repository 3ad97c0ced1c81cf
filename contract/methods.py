"""The methods the engine knows, as values: how a stage trains and how a task is evaluated.

A study file names them (`method: dpo`, `eval_modes: [score, generate]`, `prompts: templated`,
`reference: base`), study.spec types its fields with them and study.spec_checks checks them;
trainables runs them (one stage runner per method, trainables.stages.STAGE_RUNNERS; one evaluator
per eval mode, trainables.evaluation.dispatch) and analysis reads them back from the tables
(`trials.method`, `predictions.mode`). Each value is stated here once, so the study and the
workers cannot disagree on what a name means.

Also here: what each method's runner needs of the installed TRL (METHOD_REQUIRES), so the study's
checks refuse a method the installed TRL cannot run before a trial starts, without importing TRL
(or torch). The default eval modes stay with the plan that omits them from its keys
(contract.plan.DEFAULT_EVAL_MODES).
"""

from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------- how a stage trains

SFT, DPO, PPO, RLOO = "sft", "dpo", "ppo", "rloo"
METHODS = (SFT, DPO, PPO, RLOO)
"""Every stage method this build can run (trainables.stages has one runner per method)."""
ONLINE_RL_METHODS = (PPO, RLOO)
"""Methods that roll out the policy and score the rollouts with a reward model."""

STAGE_START_REFERENCE, BASE_REFERENCE = "stage_start", "base"
DPO_REFERENCES = (STAGE_START_REFERENCE, BASE_REFERENCE)
"""A DPO stage's frozen reference policy: the model the stage starts from (standard DPO) or the
chain's base model."""
AUTO = "auto"
PRECOMPUTE_SETTINGS = (AUTO, True, False)
"""`dpo.precompute_reference`: compute the reference's log-probabilities of every training pair
once, before the first step, and free the reference for the whole training (True); keep the
reference loaded and run it on every batch (False); or `auto`, which precomputes on GPU workers
without FSDP, where the reference's weights are memory the policy's training needs (a 7B model:
13-27 GB per GPU), and keeps the reference loaded on CPU and under FSDP. Under FSDP the loaded
reference is sharded like the policy and runs in FSDP's mixed precision as the policy does; a
precompute runs the whole model under autocast, whose log-probabilities differ from the
policy's by rounding at the first step (an explicit `true` does that knowingly)."""


def dpo_precomputes_reference(setting: bool | str, *, on_gpu: bool, fsdp: bool) -> bool:
    """What a DPO stage with `dpo.precompute_reference: setting` does on GPU (or CPU) workers,
    with or without FSDP: the planner writes it into the stage's plan, the memory model leaves
    the reference out."""
    if setting == AUTO:
        return on_gpu and not fsdp
    return bool(setting)


STATEMENT_PROMPTS, TEMPLATED_PROMPTS = "statements", "templated"
PROMPT_MODES = (STATEMENT_PROMPTS, TEMPLATED_PROMPTS)
"""What an online-RL stage rolls out on: "statements", the raw ToxiGen statements without the QA
template (paper §3.2; tasks without a statement fall back to the template), or "templated"."""


@dataclass(frozen=True)
class TrlRequirement:
    """What a method's runner imports from TRL: a name `trl` exports, or a submodule of it."""

    name: str
    """Dotted, under `trl`: "DPOTrainer" (exported by trl/__init__.py) or "experimental.ppo"."""
    submodule: bool = False
    """True: `name` is a module (looked for as a folder of the installed trl package)."""
    versions: str | None = None
    """The TRL versions that have it, where recent versions differ."""

    def missing_message(self, method: str) -> str:
        """What the study's checks say when the installed TRL lacks it."""
        if self.versions is not None:
            return f"method '{method}' needs trl.{self.name} ({self.versions})"
        return f"method '{method}' needs trl.{self.name}, which the installed TRL lacks"


METHOD_REQUIRES: dict[str, TrlRequirement] = {
    DPO: TrlRequirement("DPOTrainer"),
    PPO: TrlRequirement("experimental.ppo", submodule=True, versions="TRL 1.10-1.12; removed in 1.13"),
    RLOO: TrlRequirement("RLOOTrainer"),
}
"""What each method's runner needs of TRL beyond what every TRL has (SFT: SFTTrainer; nothing)."""

# ---------------------------------------------------------------- how a task is evaluated

SCORE_MODE, GENERATE_MODE = "score", "generate"
EVAL_MODES = (SCORE_MODE, GENERATE_MODE)
"""How a multiple-choice task is evaluated, and the `mode` of a predictions row: "score" (each
option's log-likelihood, metric accuracy) or "generate" (a greedy answer, parsed; generation
tasks' continuations, classified)."""
