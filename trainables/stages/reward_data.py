"""What a reward model trained in the study learns from: the text that follows the RL prompts.

A reward model scores what the online-RL stage produces, a prompt continued by the policy, so it
is trained on the same kind of text. Which one depends on the prompts (`tasks.reward_sources.reward_data`,
recorded in the stage plan's reward):

  "toxigen_statements"  prompts that are raw ToxiGen statements (the default `prompts:
                        statements` on ToxiGenQA, as in the paper), which the policy continues
                        freely. Each such prompt, about group g, gets one pair:
                            chosen   = prompt + " " + a neutral ToxiGen statement about g
                            rejected = prompt + " " + a hate ToxiGen statement about g
                        (`continuation_examples`): the reward model learns to prefer a benign
                        continuation about the same group to a hateful one.
  "qa_pairs"            templated prompts ("...Answer:"), continued by an answer: the task's
                        preference pairs (chosen = the correct answer, rejected = a wrong one,
                        `dpo.preference_pairs`).

Where the statements come from: the stage's own training examples (ToxiGenQA's train split: its
hash split keeps every eval-side statement out, so the evaluation's statements are never
rewarded or penalised in training), labels as released (hate / neutral) and groups as the task
reads them. A prompt's own statement is never its continuation. A prompt whose groups have no
other neutral and hate statement among the examples gets no pair. Replayed examples of a task
without statements keep their QA pair (their RL prompt is the templated one).
"""

from __future__ import annotations

from typing import Any, Sequence

from contract.plan import QA_PAIRS, STATEMENTS
from tasks.example import Example
from tasks.sampling import keyed_index
from tasks.templates import TOXICITY_OPTION_NAMES
from trainables.stages.rollout_prompts import raw_statement

HATE = TOXICITY_OPTION_NAMES[0]  # the name of ToxiGenQA's "toxic" option: a statement labelled hate
CONTINUATION_SEPARATOR = " "  # between a prompt and the statement that continues it


def continuation_examples(examples: Sequence[Any], seed: int) -> list[Example]:
    """One two-option Example per statement prompt that can have a pair: prompt = the statement,
    options = (separator + neutral statement, separator + hate statement), label 0 (the neutral
    one), so `dpo.preference_tokens` encodes chosen / rejected through the tokenization seam.

    The group (when the prompt names several) and the two statements are drawn by the seed and
    the prompt's id, from pools sorted by example id: a prompt keeps its pair whatever the
    order or the rest of the sample."""
    statements = [(ex, raw_statement(ex)) for ex in examples]
    pools: dict[tuple[str, bool], list[tuple[str, str]]] = {}
    for ex, text in statements:
        if text is not None:
            for group in ex.groups:
                pools.setdefault((group, ex.option_names[ex.label] == HATE), []).append((ex.example_id, text))
    for pool in pools.values():
        pool.sort()
    out = []
    for ex, text in statements:
        if text is None:
            continue
        others = {(g, hate): [s for i, s in pools.get((g, hate), []) if i != ex.example_id]
                  for g in ex.groups for hate in (False, True)}
        groups = [g for g in ex.groups if others[(g, False)] and others[(g, True)]]
        if not groups:
            continue
        group = groups[keyed_index(seed, ex.example_id, len(groups))]
        neutral, hate = others[(group, False)], others[(group, True)]
        pair_id = f"{ex.example_id}#continuation"
        out.append(Example(
            example_id=pair_id, prompt=text, answer_prefix="",
            options=(CONTINUATION_SEPARATOR + neutral[keyed_index(seed, pair_id + "/neutral", len(neutral))],
                     CONTINUATION_SEPARATOR + hate[keyed_index(seed, pair_id + "/hate", len(hate))]),
            option_names=("neutral", "hate"), label=0, groups=(group,),
        ))
    return out


def reward_examples(examples: Sequence[Any], data: str, seed: int) -> list[Any]:
    """The examples whose (correct, wrong) options are the reward model's (chosen, rejected):
    continuation pairs for statement prompts, and the examples themselves (QA pairs) otherwise."""
    if data == QA_PAIRS:
        return list(examples)
    if data != STATEMENTS:
        raise ValueError(f"unknown reward data '{data}' (expected '{STATEMENTS}' or '{QA_PAIRS}')")
    return continuation_examples(examples, seed) + [ex for ex in examples if raw_statement(ex) is None]
