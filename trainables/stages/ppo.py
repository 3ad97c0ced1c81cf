"""RLHF with PPO through TRL's experimental PPOTrainer (paper §2.2, §3.2).

Prompts (`stage["ppo"]["prompts"]`, `trainables.stages.rollout_prompts`): the original ToxiGen
statements without the QA template by default, as in the paper; the policy continues each one.

Models:
  - policy = the chain's `model`, trained in place;
  - reference = a frozen copy of the model as the stage starts (KL anchor; TRL would otherwise
    copy it itself, we make the copy explicit as in the DPO stage);
  - reward = a frozen sequence-classification model (`reward_model.resolve_reward_model`): a Hub
    reward model such as the paper's OpenAssistant/reward-model-deberta-v3-large-v2, or one
    trained in the study;
  - value = a trainable sequence-classification model (the critic), which PPOTrainer runs on the
    policy's token ids.

How the reward model scores a rollout. TRL's PPOTrainer feeds the reward model the policy's
token ids. A reward model that reads those ids (the policy's vocabulary and pad token, and the
`score` head TRL calls: one trained in the study) is used as it is. Any other (a DeBERTa with
its own tokenizer, as in the paper) is wrapped by `text_reward.retokenizing_reward_model`, which
gives it each rollout as text, (prompt, decoded response), the same input RLOO gives it.

The value model. With a reward model that reads the policy's ids, the critic is a trainable
copy of it (Ziegler et al. 2019, TRL's examples): its head already maps a sequence to a reward.
A reward model with another tokenizer cannot be copied (the critic must read the policy's ids),
so the critic is then the stage-start policy's backbone under a new scalar head, initialised to
zero so that every prefix starts at value 0 rather than at a random one (`value_model_from_policy`).

One `stage["steps"]` = one PPO update (a rollout batch of `stage["batch_size"]` prompts, then
`num_ppo_epochs` optimisation passes over it); total_episodes = steps × batch_size.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

from trainables.stages.outcome import StageOutcome
from trainables.stages.reward_model import load_reward_model, resolve_reward_model
from trainables.stages.reward_data import reward_data
from trainables.stages.rollout_prompts import fitting_prompts, rl_prompts
from trainables.stages.sft import TrainLogRecorder, quiet_trainer
from trainables.stages.text_reward import retokenizing_reward_model
from trainables.stages.training_args import common_training_kwargs
from trainables.tokenization import as_encoder


def frozen_copy(model: Any) -> Any:
    ref = copy.deepcopy(model)
    ref.eval()
    ref.requires_grad_(False)
    return ref


def stage_reward_model(*, stage: dict, settings: dict, examples: Sequence[Any], training: dict, max_length: int,
                       work_dir: str, model_dtype: str, model: Any, chat: bool = False) -> tuple[Any, Any, str]:
    base_path = settings.get("base_model_path") or getattr(model.config, "_name_or_path", None)
    trust = bool(settings.get("trust_remote_code", False))
    path = resolve_reward_model(settings.get("reward") or {"train": {}}, base_path=base_path, examples=examples,
                                seed=int(stage["seed"]), max_length=max_length, work_dir=work_dir,
                                training=training, model_dtype=model_dtype, trust_remote_code=trust, chat=chat,
                                data=reward_data(stage["task"], settings.get("prompts", "statements")))
    reward_model, reward_tokenizer = load_reward_model(path, model_dtype=model_dtype, trust_remote_code=trust)
    reward_model.eval()
    reward_model.requires_grad_(False)
    return reward_model, reward_tokenizer, path


def online_rl_inputs(*, method: str, stage: dict, model: Any, tokenizer: Any, examples: Sequence[Any],
                     training: dict, max_length: int, work_dir: str, model_dtype: str) -> tuple:
    """What PPO and RLOO both start from: (settings, response_length, prompts, reward model,
    reward tokenizer, reward model path). `tokenizer`: the policy's AnswerEncoder (or tokenizer)."""
    settings = dict(stage.get(method) or {})
    response_length = int(settings.get("response_length", 16))
    prompts = fitting_prompts(tokenizer, rl_prompts(examples, settings.get("prompts", "statements")), max_length,
                              response_length)
    reward_model, reward_tokenizer, reward_path = stage_reward_model(
        stage=stage, settings=settings, examples=examples, training=training, max_length=max_length,
        work_dir=work_dir, model_dtype=model_dtype, model=model, chat=as_encoder(tokenizer).chat)
    return settings, response_length, prompts, reward_model, reward_tokenizer, reward_path


def same_vocabulary(a: Any, b: Any) -> bool:
    return a.get_vocab() == b.get_vocab() and a.pad_token_id == b.pad_token_id


def reads_policy_ids(reward_model: Any, reward_tokenizer: Any, policy_tokenizer: Any) -> bool:
    """Whether PPOTrainer can score the policy's token ids with this reward model directly: same
    vocabulary and pad token, and the backbone + `score` head that TRL's `get_reward` calls."""
    prefix = getattr(reward_model, "base_model_prefix", "")
    return (same_vocabulary(policy_tokenizer, reward_tokenizer) and hasattr(reward_model, "score")
            and bool(prefix) and hasattr(reward_model, prefix))


def value_model_from_policy(policy: Any, pad_token_id: int) -> Any:
    """PPO's critic for a reward model that reads text: a sequence-classification model of the
    policy's architecture whose backbone is a copy of the policy's (as the stage starts) and whose
    scalar head is zero, so every prefix starts at value 0 (see the module docstring)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(policy.config)
    config.num_labels = 1
    config.pad_token_id = pad_token_id
    try:
        with torch.device(policy.device):  # built where it will train: no host copy of a large model
            value = AutoModelForSequenceClassification.from_config(config, dtype=policy.dtype)
    except ValueError as exc:
        raise ValueError(f"PPO value model: {type(policy).__name__} has no sequence-classification "
                         f"counterpart in transformers ({exc})") from exc
    if not hasattr(value, "score"):  # TRL's PPOTrainer calls the critic's head `score`
        raise ValueError(f"PPO value model: {type(value).__name__} has no `score` head for TRL's PPOTrainer")
    getattr(value, value.base_model_prefix).load_state_dict(getattr(policy, policy.base_model_prefix).state_dict())
    with torch.no_grad():
        for parameter in value.score.parameters():
            parameter.zero_()
    return value


def run_ppo(*, model: Any, tokenizer: Any, stage: dict, examples: Sequence[Any], training: dict, max_length: int,
            work_dir: str, model_dtype: str = "auto") -> StageOutcome:
    from datasets import Dataset
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    encoder = as_encoder(tokenizer)
    tokenizer = encoder.tokenizer
    settings, response_length, prompts, reward_model, reward_tokenizer, reward_path = online_rl_inputs(
        method="ppo", stage=stage, model=model, tokenizer=encoder, examples=examples, training=training,
        max_length=max_length, work_dir=work_dir, model_dtype=model_dtype)
    prompt_ids = encoder.prompt_ids(prompts)
    if reads_policy_ids(reward_model, reward_tokenizer, tokenizer):
        value_model = copy.deepcopy(reward_model)
    else:
        reward_model = retokenizing_reward_model(reward_model, reward_tokenizer, tokenizer, prompts, prompt_ids,
                                                 chat=encoder.chat, batch_size=int(stage["batch_size"]))
        value_model = value_model_from_policy(model, tokenizer.pad_token_id)
    value_model.requires_grad_(True)
    value_model.train()

    # Generation needs left padding; don't touch the chain's tokenizer.
    ppo_tokenizer = copy.deepcopy(tokenizer)
    ppo_tokenizer.padding_side = "left"
    dataset = Dataset.from_list([{"input_ids": ids} for ids in prompt_ids])

    batch_size = int(stage["batch_size"])
    kwargs = common_training_kwargs(stage=stage, training=training, work_dir=work_dir, model_dtype=model_dtype)
    kwargs.pop("max_steps")  # PPO counts updates through total_episodes
    args = PPOConfig(
        **kwargs,
        total_episodes=int(stage["steps"]) * batch_size,
        num_mini_batches=1,
        local_rollout_forward_batch_size=batch_size,
        num_ppo_epochs=int(settings.get("num_ppo_epochs", 4)),
        kl_coef=float(settings.get("kl_coef", 0.05)),
        response_length=response_length,
        temperature=float(settings.get("temperature", 0.7)),
        stop_token="eos",
        missing_eos_penalty=settings.get("missing_eos_penalty"),
        num_sample_generations=0,
        sft_model_path=str(getattr(model.config, "_name_or_path", "") or ""),
        reward_model_path=reward_path,
    )
    generation_eos = model.generation_config.eos_token_id
    # PPOTrainer logs no "loss" nor grad_norm: `loss` is the objective it back-propagates,
    # policy (clipped surrogate) + vf_coef × value loss, averaged over the update's minibatches.
    # (The policy part alone is ~0 on the first pass over a rollout: whitened advantages, ratio 1.)
    vf_coef = float(args.vf_coef)
    log = TrainLogRecorder(loss_key="loss/policy_avg", lr_key="lr",
                        loss_fn=lambda logs: logs["loss/policy_avg"] + vf_coef * logs["loss/value_avg"])
    trainer = PPOTrainer(
        args=args,
        processing_class=ppo_tokenizer,
        model=model,
        ref_model=frozen_copy(model),
        reward_model=reward_model,
        train_dataset=dataset,
        value_model=value_model,
        callbacks=[log.callback()],
    )
    quiet_trainer(trainer)
    try:
        trainer.train()
    finally:
        model.generation_config.eos_token_id = generation_eos  # PPOTrainer overwrites it
    model.eval()
    return StageOutcome(log_rows=log.rows, n_examples=len(prompts))
