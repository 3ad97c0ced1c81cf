"""Online-RL stages: a reward model learned with RewardTrainer, PPO and RLOO on the tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainables.stages.dpo import preference_pairs
from trainables.stages.ppo import raw_statement, rl_prompts
from trainables.tasks import load_examples

TRAINING = {"adam_beta1": 0.9, "adam_beta2": 0.95, "weight_decay": 0.1, "lr_scheduler": "cosine",
            "warmup_steps": 0, "max_grad_norm": 1.0, "eval_batch_size": 8}


def _skewed_toxigen(split: str, data_dir, n_not_toxic: int, n_toxic: int) -> list:
    """A clear 3:1 label prior (not toxic : toxic), the one regularity a random 2-layer model can
    learn in a few steps and that held-out pairs share (as in the DPO test)."""
    examples = load_examples("toxigen_qa", split, size=200, data_dir=data_dir)
    return ([ex for ex in examples if ex.label == 1][:n_not_toxic]
            + [ex for ex in examples if ex.label == 0][:n_toxic])


@pytest.fixture(scope="module")
def reward_model_path(tiny_model_path, data_dir, tmp_path_factory) -> str:
    from trainables.stages.reward_model import train_reward_model

    return train_reward_model(base_path=str(tiny_model_path), examples=_skewed_toxigen("train", data_dir, 48, 16),
                              seed=0, steps=12, learning_rate=3e-3, batch_size=16, max_length=256,
                              work_dir=str(tmp_path_factory.mktemp("rm")))


def _stage(method: str, reward_path: str, **settings) -> dict:
    return {"method": method, "task": "toxigen_qa", "learning_rate": 1e-3, "batch_size": 8, "steps": 3, "seed": 0,
            method: {"reward": {"model": reward_path}, "kl_coef": 0.05, "response_length": 8, "num_ppo_epochs": 1,
                     "prompts": "statements", **settings}}


# ---------------------------------------------------------------- prompts

def test_statement_prompts_drop_the_qa_template(data_dir):
    examples = load_examples("toxigen_qa", "train", size=20, data_dir=data_dir)
    prompts = rl_prompts(examples, "statements")
    for ex, prompt in zip(examples, prompts):
        assert prompt == raw_statement(ex)
        assert "Instructions:" not in prompt and "Answer:" not in prompt
        assert ex.prompt == f"{ex.prompt.split(chr(10) + 'Prompt: ')[0]}\nPrompt: {prompt}\nAnswer:"
    assert rl_prompts(examples, "templated") == [ex.prompt for ex in examples]
    arc = load_examples("arc_easy", "train", size=5, data_dir=data_dir)
    assert rl_prompts(arc, "statements") == [ex.prompt for ex in arc]  # no raw statement: template


# ---------------------------------------------------------------- reward model

def test_trained_reward_model_prefers_held_out_chosen_responses(reward_model_path, data_dir):
    from pathlib import Path

    from trainables.stages.reward_model import load_reward_model, reward_scores

    assert (Path(reward_model_path) / "model.safetensors").exists()
    model, tokenizer = load_reward_model(reward_model_path, model_dtype="float32")
    assert model.config.num_labels == 1 and model.config.pad_token_id == tokenizer.pad_token_id
    pairs = preference_pairs(_skewed_toxigen("eval", data_dir, 24, 8), seed=0)
    eos = tokenizer.eos_token  # RewardTrainer trains on responses ending in EOS
    chosen = reward_scores(model, tokenizer, [p["prompt"] + p["chosen"] + eos for p in pairs])
    rejected = reward_scores(model, tokenizer, [p["prompt"] + p["rejected"] + eos for p in pairs])
    assert float(np.mean(np.array(chosen) - np.array(rejected))) > 0


def test_resolve_reward_model_passes_ids_through_and_rejects_bad_specs(tmp_path):
    from trainables.stages.reward_model import resolve_reward_model

    assert resolve_reward_model({"model": "some/id"}, base_path=None, examples=[], seed=0, max_length=8,
                                work_dir=str(tmp_path)) == "some/id"
    with pytest.raises(ValueError):
        resolve_reward_model({"model": "a", "train": {}}, base_path=None, examples=[], seed=0, max_length=8,
                             work_dir=str(tmp_path))


# ---------------------------------------------------------------- PPO and RLOO

def _run(method: str, tiny_model_path, data_dir, reward_path: str, work_dir: str):
    from trainables.models import load_model_and_tokenizer
    from trainables.stages.ppo import run_ppo
    from trainables.stages.rloo import run_rloo

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    examples = load_examples("toxigen_qa", "train", size=32, data_dir=data_dir)
    stage = _stage(method, reward_path, **({"num_generations": 4} if method == "rloo" else {}))
    run = run_ppo if method == "ppo" else run_rloo
    outcome = run(model=model, tokenizer=tokenizer, stage=stage, examples=examples, training=TRAINING,
                  max_length=256, work_dir=work_dir)
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p)]
    return model, tokenizer, outcome, changed


@pytest.mark.parametrize("method", ["ppo", "rloo"])
def test_online_rl_stage_updates_the_policy_and_logs_finite_losses(method, tiny_model_path, data_dir,
                                                                   reward_model_path, tmp_path):
    _, tokenizer, outcome, changed = _run(method, tiny_model_path, data_dir, reward_model_path, str(tmp_path))
    assert changed, f"{method} left every policy parameter unchanged"
    assert outcome.n_examples == 32
    assert [row["step"] for row in outcome.log_rows] == [1, 2, 3]
    for row in outcome.log_rows:
        assert set(row) == {"step", "loss", "learning_rate", "grad_norm", "seconds"}
        assert math.isfinite(row["loss"]) and row["learning_rate"] > 0
    assert tokenizer.padding_side == "right"  # the chain's tokenizer is left as it was
