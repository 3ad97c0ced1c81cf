"""trainables/stages/reward_data.py: a reward model trained in the study learns from the text
that follows the RL prompts: for raw ToxiGen statements, a neutral vs a hate statement about
the prompt's group, from ToxiGenQA's training split."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from contract.plan import QA_PAIRS, STATEMENTS, RewardTrainingPlan, TrainingPlan
from tasks.reward_sources import reward_data
from tests.plans import model_plan
from trainables.stages.reward_data import continuation_examples, reward_examples
from trainables.stages.rollout_prompts import raw_statement
from tasks import load_examples
from tasks.toxigen import split_of

TRAINING = TrainingPlan.from_dict({"adam_beta1": 0.9, "adam_beta2": 0.95, "weight_decay": 0.1, "lr_scheduler": "cosine",
                                    "warmup_steps": 0, "max_grad_norm": 1.0, "eval_batch_size": 8})


def test_reward_data_follows_the_prompts():
    assert reward_data("toxigen_qa", "statements") == STATEMENTS
    assert reward_data("toxigen_qa", "templated") == QA_PAIRS  # a templated prompt is continued by its answer
    assert reward_data("arc_easy", "statements") == QA_PAIRS  # no raw statement: the templated prompt


def test_statement_pairs_continue_each_prompt_with_a_neutral_and_a_hate_statement_about_its_group(data_dir):
    examples = load_examples("toxigen_qa", "train", size=200, data_dir=data_dir)
    by_statement = {raw_statement(ex): ex for ex in examples}
    pairs = continuation_examples(examples, seed=0)
    assert len(pairs) > 150  # nearly every prompt has a pair
    for pair in pairs:
        prompt = by_statement[pair.prompt]
        [group] = pair.groups
        assert group in prompt.groups and pair.example_id == f"{prompt.example_id}#continuation"
        assert pair.answer_prefix == "" and pair.label == 0 and pair.option_names == ("neutral", "hate")
        neutral, hate = (by_statement[option.removeprefix(" ")] for option in pair.options)
        assert all(option.startswith(" ") for option in pair.options)
        assert (neutral.option_names[neutral.label], hate.option_names[hate.label]) == ("not toxic", "toxic")
        assert group in neutral.groups and group in hate.groups
        assert prompt not in (neutral, hate)
        assert {split_of(raw_statement(ex)) for ex in (prompt, neutral, hate)} == {"train"}  # split by statement text
    # The draw depends on the seed and the prompt, not on the examples' order.
    shuffled = list(examples)
    random.Random(1).shuffle(shuffled)
    assert {p.example_id: p.options for p in continuation_examples(shuffled, 0)} == {
        p.example_id: p.options for p in pairs}
    assert [p.options for p in continuation_examples(examples, 1)] != [p.options for p in pairs]


def test_statement_reward_rows_are_prompt_plus_statement_and_other_tasks_keep_their_qa_pairs(data_dir, tiny_model_path):
    from trainables.models import load_tokenizer
    from trainables.stages.reward_model import reward_rows
    from trainables.tokenization import AnswerEncoder

    tokenizer = load_tokenizer(str(tiny_model_path))
    examples = load_examples("toxigen_qa", "train", size=60, data_dir=data_dir)
    rows = reward_rows(AnswerEncoder(tokenizer), examples, seed=0, max_length=256, data=STATEMENTS)
    pairs = [p for p in continuation_examples(examples, 0)
             if len(tokenizer(p.prompt + max(p.options, key=len))["input_ids"]) < 256]
    assert len(rows) == len(pairs)
    for row, pair in zip(rows, pairs):
        for ids, option in ((row["chosen_ids"], pair.options[0]), (row["rejected_ids"], pair.options[1])):
            assert tokenizer.decode(ids, skip_special_tokens=True) == pair.prompt + option
            assert ids[-1] == tokenizer.eos_token_id  # a response ends as PPO's do when the policy stops
    arc = load_examples("arc_easy", "train", size=5, data_dir=data_dir)
    assert reward_examples(examples[:10] + arc, STATEMENTS, 0)[-5:] == arc  # replayed ARC: its QA pairs
    assert reward_examples(examples, QA_PAIRS, 0) == examples
    with pytest.raises(ValueError, match="no toxigen_statements reward pair"):
        reward_rows(AnswerEncoder(tokenizer), examples[:1], seed=0, max_length=256, data=STATEMENTS)


def _margin(path: str, pairs) -> float:
    """Mean score of the benign continuation minus the hateful one, on held-out prompts."""
    from trainables.stages.reward_model import load_reward_model
    from trainables.stages.text_reward import score_texts

    model, tokenizer = load_reward_model(path, model_dtype="float32")
    prompts, eos = [p.prompt for p in pairs], tokenizer.eos_token
    chosen = score_texts(model, tokenizer, prompts, [p.options[0] + eos for p in pairs], chat=False, batch_size=16)
    rejected = score_texts(model, tokenizer, prompts, [p.options[1] + eos for p in pairs], chat=False, batch_size=16)
    return float(np.mean(np.array(chosen) - np.array(rejected)))


def test_a_few_steps_on_statement_pairs_prefer_benign_continuations_on_held_out_prompts(data_dir, tiny_model_path,
                                                                                        tmp_path):
    from trainables.stages.reward_model import train_reward_model

    held_out = continuation_examples(load_examples("toxigen_qa", "eval", size=200, data_dir=data_dir), seed=0)
    torch.manual_seed(0)  # the untrained model's new score head
    before = _margin(str(tiny_model_path), held_out)
    path = train_reward_model(model_plan=model_plan(tiny_model_path, max_length=256), seed=0,
                              settings=RewardTrainingPlan(steps=20, learning_rate=3e-3, batch_size=16, data=STATEMENTS),
                              examples=load_examples("toxigen_qa", "train", size=200, data_dir=data_dir),
                              work_dir=str(tmp_path), training=TRAINING)
    after = _margin(path, held_out)
    # Measured: before ~0 (|margin| < 0.02 over head seeds), after 0.60-0.89 over training seeds 0-2.
    assert after > 0.3 and after > before + 0.3, (before, after)
