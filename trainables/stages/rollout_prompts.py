"""The prompts the online-RL stages (PPO, RLOO) roll out on.

A stage's `prompts` setting (`stage.ppo.prompts`, `stage.rloo.prompts`): "statements" (the
study's default) gives the policy the original ToxiGen statement with no QA template, as the
paper does ("we use the original prompts from the ToxiGen dataset without recasting them to
the QA template", §3.2); tasks that have no raw statement (ARC) fall back to the templated
prompt. "templated" always uses the template.
"""

from __future__ import annotations

from typing import Any, Sequence

from contract.methods import PROMPT_MODES, STATEMENT_PROMPTS
from tasks.reward_sources import STATEMENT_TASK
from tasks.templates import prompt_body
from trainables.tokenization import as_encoder


def raw_statement(example: Any) -> str | None:
    """The untemplated ToxiGen statement of a toxigen_qa example, or None for other tasks."""
    if not str(example.example_id).startswith(f"{STATEMENT_TASK}/"):
        return None
    return prompt_body(example.prompt)


def rl_prompts(examples: Sequence[Any], mode: str) -> list[str]:
    """The prompt of each example in `mode` (one of contract.methods.PROMPT_MODES)."""
    if mode not in PROMPT_MODES:
        raise ValueError(f"unknown prompts mode '{mode}' (expected one of {', '.join(PROMPT_MODES)})")
    prompts = []
    for ex in examples:
        text = raw_statement(ex) if mode == STATEMENT_PROMPTS else None
        prompts.append(text if text is not None else ex.prompt)
    return prompts


def fitting_prompts(tokenizer: Any, prompts: Sequence[str], max_length: int, response_length: int) -> list[str]:
    """Prompts that leave room for a full response within max_length tokens (encoded as the
    policy reads them: `AnswerEncoder.prompt_ids`, so a chat model's user turn + generation prompt)."""
    budget = max_length - response_length
    encoded = as_encoder(tokenizer).prompt_ids(prompts)
    kept = [p for p, ids in zip(prompts, encoded) if len(ids) <= budget]
    if not kept:
        raise ValueError(f"no prompt fits in max_length={max_length} - response_length={response_length} tokens")
    return kept
