"""Online-RL stages: a reward model learned with RewardTrainer, PPO and RLOO on the tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from contract.plan import QA_PAIRS, RewardPlan, RewardTrainingPlan, TrainingPlan
from tests.plans import model_plan, stage_plan
from trainables.stages.dpo import preference_pairs
from trainables.stages.rollout_prompts import raw_statement, rl_prompts
from tasks import load_examples

TRAINING = TrainingPlan.from_dict({"adam_beta1": 0.9, "adam_beta2": 0.95, "weight_decay": 0.1, "lr_scheduler": "cosine",
                                    "warmup_steps": 0, "max_grad_norm": 1.0, "eval_batch_size": 8})


def _skewed_toxigen(split: str, data_dir, n_not_toxic: int, n_toxic: int) -> list:
    """A clear 3:1 label prior (not toxic : toxic), the one regularity a random 2-layer model can
    learn in a few steps and that held-out pairs share (as in the DPO test)."""
    examples = load_examples("toxigen_qa", split, size=200, data_dir=data_dir)
    return ([ex for ex in examples if ex.label == 1][:n_not_toxic]
            + [ex for ex in examples if ex.label == 0][:n_toxic])


@pytest.fixture(scope="module")
def reward_model_path(tiny_model_path, data_dir, tmp_path_factory) -> str:
    from trainables.stages.reward_model import train_reward_model

    return train_reward_model(model_plan=model_plan(tiny_model_path, max_length=256),
                              examples=_skewed_toxigen("train", data_dir, 48, 16), seed=0,
                              settings=RewardTrainingPlan(steps=12, learning_rate=3e-3, batch_size=16, data=QA_PAIRS),
                              work_dir=str(tmp_path_factory.mktemp("rm")), training=TRAINING)


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

    from trainables.stages.reward_model import load_reward_model
    from trainables.stages.text_reward import score_texts

    assert (Path(reward_model_path) / "model.safetensors").exists()
    model, tokenizer = load_reward_model(reward_model_path, model_dtype="float32")
    assert model.config.num_labels == 1 and model.config.pad_token_id == tokenizer.pad_token_id
    pairs = preference_pairs(_skewed_toxigen("eval", data_dir, 24, 8), seed=0)
    eos = tokenizer.eos_token  # RewardTrainer trains on responses ending in EOS
    prompts = [p["prompt"] for p in pairs]
    chosen = score_texts(model, tokenizer, prompts, [p["chosen"] + eos for p in pairs], chat=False, batch_size=16)
    rejected = score_texts(model, tokenizer, prompts, [p["rejected"] + eos for p in pairs], chat=False, batch_size=16)
    assert float(np.mean(np.array(chosen) - np.array(rejected))) > 0


def test_resolve_reward_model_passes_ids_through_and_rejects_bad_specs(tmp_path):
    from trainables.stages.reward_model import resolve_reward_model

    unused = model_plan("unused", max_length=8)
    assert resolve_reward_model(RewardPlan.from_dict({"model": "some/id"}), model_plan=unused, examples=[], seed=0,
                                work_dir=str(tmp_path), training=TRAINING) == "some/id"
    with pytest.raises(ValueError):
        resolve_reward_model(RewardPlan.from_dict({"model": "a", "train": {}}), model_plan=unused, examples=[], seed=0,
                             work_dir=str(tmp_path), training=TRAINING)


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
    outcome = run(model=model, tokenizer=tokenizer, stage=stage_plan(stage), examples=examples, training=TRAINING,
                  model_plan=model_plan(tiny_model_path, max_length=256), work_dir=work_dir)
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


# ---------------------------------------------------------------- reward rises on an easy reward

@pytest.fixture(scope="module")
def last_token_reward(tiny_model_path, tmp_path_factory) -> tuple[str, torch.Tensor]:
    """A hand-set reward model whose score depends only on the response's last token.

    Zeroing every layer's attention and MLP output projections leaves the residual stream at the
    token embedding, so score = w · RMSNorm(embed(last token)) for a fixed unit vector w: about
    N(0, 1) across the vocabulary, known exactly for every token (the returned vector), and the
    same tokenizer as the policy (PPO requires it). A few dozen policy-gradient steps can move
    a random 2-layer policy's samples toward high-reward tokens; a learned reward model gives
    too weak a signal for that in a CPU test (it was flaky).
    """
    from trainables.stages.reward_model import load_reward_model

    model, tokenizer = load_reward_model(str(tiny_model_path), model_dtype="float32")
    w = torch.randn(1, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.score.weight.copy_(w / w.norm())
        per_token = model.score(model.model.norm(model.model.embed_tokens.weight))[:, 0]
    out = tmp_path_factory.mktemp("last_token_rm")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return str(out), per_token


def _mean_sampled_reward(model, tokenizer, prompts, per_token, response_length: int, temperature: float) -> float:
    """Mean reward of sampled responses, scored as PPO scores them: the last token, or the first
    EOS when one is sampled (the response is truncated there). Fixed sampling seed."""
    import copy

    left = copy.deepcopy(tokenizer)
    left.padding_side = "left"
    batch = left(prompts, return_tensors="pt", padding=True)
    torch.manual_seed(1234)
    with torch.no_grad():
        out = model.generate(**batch, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                             max_new_tokens=response_length, pad_token_id=left.pad_token_id)
    rewards = []
    for row in out[:, batch["input_ids"].shape[1]:].tolist():
        if tokenizer.eos_token_id in row:
            row = row[:row.index(tokenizer.eos_token_id) + 1]
        rewards.append(float(per_token[row[-1]]))
    return float(np.mean(rewards))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ppo", "rloo"])
def test_online_rl_raises_the_reward_of_sampled_responses(method, tiny_model_path, data_dir, last_token_reward,
                                                          tmp_path):
    """Seeds 0-2, each from the same untrained policy: the mean sampled reward on held-out
    prompts rises with every seed, by more than 0.4 on average. One seed alone is too noisy a
    check: measured rises, PPO (24 steps) +2.43 / +1.87 / +1.50, RLOO (40 steps) +0.29 / +0.93 / +1.37
    (at 24 steps RLOO's are +0.06 / +0.12 / -0.02)."""
    from trainables.models import load_model_and_tokenizer
    from trainables.stages.ppo import run_ppo
    from trainables.stages.rloo import run_rloo

    reward_path, per_token = last_token_reward
    held_out = rl_prompts(load_examples("toxigen_qa", "eval", size=128, data_dir=data_dir), "statements")
    settings = {"reward": {"model": reward_path}, "kl_coef": 0.01, "response_length": 8, "num_ppo_epochs": 1,
                "temperature": 0.7, "prompts": "statements", **({"num_generations": 4} if method == "rloo" else {})}
    run = run_ppo if method == "ppo" else run_rloo
    steps = 24 if method == "ppo" else 40  # measured: PPO rises clearly by 24 steps, RLOO needs 40 (docstring)
    rises = []
    for seed in (0, 1, 2):
        model, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
        before = _mean_sampled_reward(model, tokenizer, held_out, per_token, response_length=8, temperature=0.7)
        stage = {"method": method, "task": "toxigen_qa", "learning_rate": 3e-2, "batch_size": 16, "steps": steps,
                 "seed": seed, method: settings}
        run(model=model, tokenizer=tokenizer, stage=stage_plan(stage), training=TRAINING,
            model_plan=model_plan(tiny_model_path, max_length=256), work_dir=str(tmp_path / str(seed)),
            examples=load_examples("toxigen_qa", "train", size=64, data_dir=data_dir))
        after = _mean_sampled_reward(model, tokenizer, held_out, per_token, response_length=8, temperature=0.7)
        rises.append(after - before)
    # Rewards are ~N(0, 1) over tokens; the mean of 128 samples has a standard error of ~0.09.
    assert min(rises) > 0 and np.mean(rises) > 0.4, f"{method}: rises of the mean sampled reward {rises}"


# ---------------------------------------------------------------- FSDP placement (routing only: FSDP training needs GPUs)


def test_ppo_refuses_fsdp(monkeypatch, tiny_model_path, data_dir, tmp_path):
    from trainables.stages.ppo import run_ppo

    monkeypatch.setenv("STUDY_FSDP", "1")
    with pytest.raises(ValueError, match="does not shard"):
        run_ppo(model=None, tokenizer=None, stage=stage_plan(_stage("ppo", "unused")), examples=[],
                training=TRAINING, model_plan=model_plan(tiny_model_path, max_length=256), work_dir=str(tmp_path))


def test_frozen_models_are_sharded_only_when_the_trainer_shards(monkeypatch):
    from types import SimpleNamespace

    import trl.models

    from trainables.stages.trainer_plumbing import sharded_like_policy

    calls = []
    monkeypatch.setattr(trl.models, "prepare_fsdp", lambda model, accelerator: calls.append(("fsdp", model)) or "sharded")
    accelerator = SimpleNamespace(prepare_model=lambda model, evaluation_mode: calls.append(("prepare", evaluation_mode))
                                  or "prepared")
    model = object()
    assert sharded_like_policy(model, SimpleNamespace(is_fsdp_enabled=True, accelerator=accelerator)) == "sharded"
    assert sharded_like_policy(model, SimpleNamespace(is_fsdp_enabled=False, accelerator=accelerator)) == "prepared"
    assert calls == [("fsdp", model), ("prepare", True)]
