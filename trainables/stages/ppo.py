"""RLHF with PPO through TRL's experimental PPOTrainer (paper §2.2, §3.2).

`trl.experimental.ppo` exists in TRL 1.10-1.12 only; contract.methods.METHOD_REQUIRES says so,
and the study's checks refuse a PPO stage before a run when the installed TRL lacks it.

Prompts (`stage.ppo.prompts`, `trainables.stages.rollout_prompts`): the original ToxiGen
statements without the QA template by default, as in the paper; the policy continues each one.

Models:
  - policy = the chain's `model`, trained in place;
  - reference = a frozen copy of the model as the stage starts (KL anchor; TRL would otherwise
    copy it itself, we make the copy explicit as in the DPO stage);
  - reward = a frozen sequence-classification model (`online_rl.online_rl_inputs`): a Hub
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

One `stage.steps` = one PPO update (a rollout batch of `stage.batch_size` prompts, then
`num_ppo_epochs` optimisation passes over it); total_episodes = steps × batch_size.

No FSDP, no bf16 autocast: PPOTrainer does not call Trainer.__init__; it builds its own
accelerator, which reads FSDP and mixed precision from the environment (`accelerate launch`)
only, never from the training arguments. So PPO stages train data-parallel (DDP) in the weights'
dtype, every model whole on every GPU; study validation refuses `execution.fsdp: true` with a
PPO stage, `auto` leaves it off, and a direct caller with STUDY_FSDP=1 is refused here. With
`training.micro_batch_size` each pass accumulates the rollout batch's gradients over micro-batches
(PPOTrainer's own loop reads per_device_train_batch_size and gradient_accumulation_steps). That
loop never turns activation checkpointing on, so `training.activation_checkpointing` is refused
for PPO stages (study/spec_checks.py, and here for a direct caller).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

from contract.plan import ModelPlan, StagePlan, TrainingPlan
from trainables.stages.online_rl import online_rl_inputs
from trainables.stages.outcome import StageOutcome
from trainables.stages.text_reward import retokenizing_reward_model
from trainables.stages.trainer_plumbing import TrainLogRecorder, frozen_copy, quiet_trainer
from trainables.timings import count_fed
from trainables.stages.training_args import common_training_kwargs
from trainables.tokenization import as_encoder


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


def run_ppo(*, model: Any, tokenizer: Any, stage: StagePlan, examples: Sequence[Any], training: TrainingPlan,
            model_plan: ModelPlan, work_dir: str, reward_model_path: str | None = None) -> StageOutcome:
    from datasets import Dataset
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    if training.activation_checkpointing:
        raise ValueError("ppo: TRL's PPOTrainer never turns activation checkpointing on; "
                         "set training.activation_checkpointing to false for PPO stages")
    from trainables.distributed import fsdp_requested

    if fsdp_requested():
        raise ValueError("ppo: TRL's PPOTrainer builds its own accelerator, which does not shard; "
                         "set execution.fsdp to false for studies with PPO stages")
    encoder = as_encoder(tokenizer)
    tokenizer = encoder.tokenizer
    inputs = online_rl_inputs(stage=stage, tokenizer=encoder, examples=examples, training=training,
                              model_plan=model_plan, work_dir=work_dir,
                              reward_model_path=reward_model_path)
    settings, prompts, reward_model = inputs.settings, inputs.prompts, inputs.reward_model
    prompt_ids = encoder.prompt_ids(prompts)
    if reads_policy_ids(reward_model, inputs.reward_tokenizer, tokenizer):
        value_model = copy.deepcopy(reward_model)
    else:
        reward_model = retokenizing_reward_model(reward_model, inputs.reward_tokenizer, tokenizer, prompts, prompt_ids,
                                                 chat=encoder.chat, batch_size=stage.batch_size)
        value_model = value_model_from_policy(model, tokenizer.pad_token_id)
    value_model.requires_grad_(True)
    value_model.train()

    # Generation needs left padding; don't touch the chain's tokenizer.
    ppo_tokenizer = copy.deepcopy(tokenizer)
    ppo_tokenizer.padding_side = "left"
    dataset = Dataset.from_list([{"input_ids": ids} for ids in prompt_ids])

    kwargs = common_training_kwargs(schedule=stage, seed=stage.seed, training=training, work_dir=work_dir,
                                    model_dtype=model_plan.dtype)
    kwargs.pop("max_steps")  # PPO counts updates through total_episodes
    args = PPOConfig(
        **kwargs,
        total_episodes=stage.steps * stage.batch_size,
        num_mini_batches=1,
        local_rollout_forward_batch_size=stage.batch_size,
        num_ppo_epochs=settings.num_ppo_epochs,
        kl_coef=settings.kl_coef,
        response_length=settings.response_length,
        temperature=settings.temperature,
        stop_token="eos",
        num_sample_generations=0,
        sft_model_path=str(getattr(model.config, "_name_or_path", "") or ""),
        reward_model_path=inputs.reward_path,
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
    count_fed(trainer)  # examples and tokens into the timings phase it trains in
    try:
        trainer.train()
    finally:
        model.generation_config.eos_token_id = generation_eos  # PPOTrainer overwrites it
    model.eval()
    return StageOutcome(log_rows=log.rows, n_examples=len(prompts))
