"""What a task gives an online-RL stage (PPO, RLOO) to learn its reward from: pure data.

A reward model trained in a stage scores what the stage produces, a prompt continued by the
policy, so it is trained on the same kind of text, and which one depends on the task and the
stage's prompts mode (`reward_data`). The choice enters the stage key (study.planner), which is
why it lives here, beside the tasks, and not with the trainer that builds the pairs
(trainables.stages.reward_data).
"""

from __future__ import annotations

from contract.methods import STATEMENT_PROMPTS
from contract.plan import QA_PAIRS, STATEMENTS

STATEMENT_TASK = "toxigen_qa"
"""The task whose examples carry a raw statement (ToxiGenQA recasts ToxiGen statements)."""


def reward_data(task: str, prompts: str) -> str:
    """The data a reward model trained for an online-RL stage on `task` with `prompts` (the
    stage's prompts mode) learns from: STATEMENTS for raw statement prompts (ToxiGenQA's,
    continued freely by the policy), QA_PAIRS for templated prompts continued by an answer."""
    return STATEMENTS if prompts == STATEMENT_PROMPTS and task == STATEMENT_TASK else QA_PAIRS
