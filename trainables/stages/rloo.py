"""Online RL with REINFORCE Leave-One-Out through TRL's RLOOTrainer.

Same prompts and reward options as the PPO stage (`stage.rloo`: reward, kl_coef,
response_length, num_generations, num_ppo_epochs, prompts; see `trainables.stages.ppo`).
RLOOTrainer takes reward functions; ours (`text_reward.reward_function`) gives the reward
model each (prompt, decoded completion) as text, encoded by its own tokenizer, exactly as PPO
does for a reward model with another vocabulary (e.g. the paper's OpenAssistant reward model
via {"model": "<hub id>"}). TRL's own path for a reward model would instead concatenate
prompt + completion without the reward tokenizer's special tokens, which a question/answer
cross-encoder such as that DeBERTa was not trained on.

Each prompt is sampled `num_generations` times; every sample's baseline is the mean reward of
the prompt's other samples. One `stage.steps` = one optimizer step on `stage.batch_size`
completions (= batch_size / num_generations prompts); `num_ppo_epochs` maps to TRL's
`num_iterations` (passes over each generated batch, with PPO-style ratio clipping).

Reference policy: a frozen copy of the stage-start model. RLOOTrainer would otherwise re-read
`model.config._name_or_path` from disk (float32, the on-disk weights, not the chain's current
ones), so it is built with beta = 0 (no reference) and given our copy and the real KL
coefficient right after construction, prepared as RLOOTrainer prepares its own (FSDP-sharded
like the policy under FSDP, `sharded_like_policy`).
"""

from __future__ import annotations

from typing import Any, Sequence

from contract.plan import ModelPlan, StagePlan, TrainingPlan
from trainables.stages.online_rl import online_rl_inputs
from trainables.stages.outcome import StageOutcome
from trainables.stages.text_reward import check_reward_model, reward_function
from trainables.stages.trainer_plumbing import TrainLogRecorder, frozen_copy, quiet_trainer, sharded_like_policy
from trainables.timings import count_fed
from trainables.stages.training_args import common_training_kwargs
from trainables.tokenization import as_encoder, chat_messages


def run_rloo(*, model: Any, tokenizer: Any, stage: StagePlan, examples: Sequence[Any], training: TrainingPlan,
             model_plan: ModelPlan, work_dir: str, reward_model_path: str | None = None) -> StageOutcome:
    from datasets import Dataset
    from trl import RLOOConfig, RLOOTrainer

    encoder = as_encoder(tokenizer)
    inputs = online_rl_inputs(stage=stage, tokenizer=encoder, examples=examples, training=training,
                              model_plan=model_plan, work_dir=work_dir,
                              reward_model_path=reward_model_path)
    settings, prompts = inputs.settings, inputs.prompts
    check_reward_model(inputs.reward_model, inputs.reward_tokenizer)

    if settings.num_generations < 2 or stage.batch_size % settings.num_generations:
        raise ValueError(f"rloo: num_generations={settings.num_generations} must be >= 2 and divide "
                         f"batch_size={stage.batch_size}")
    kwargs = common_training_kwargs(schedule=stage, seed=stage.seed, training=training, work_dir=work_dir,
                                    model_dtype=model_plan.dtype)
    args = RLOOConfig(
        **kwargs,
        num_generations=settings.num_generations,
        # One generation of batch_size completions per optimizer step, however many micro-batches
        # (training.micro_batch_size) the step accumulates.
        steps_per_generation=kwargs["gradient_accumulation_steps"],
        max_completion_length=settings.response_length,
        temperature=settings.temperature,
        num_iterations=settings.num_ppo_epochs,
        beta=0.0,  # set to kl_coef below, once our reference model is in place
        disable_dropout=True,
        log_completions=False,
        shuffle_dataset=True,
    )
    log = TrainLogRecorder()
    trainer = RLOOTrainer(
        model=model,
        reward_funcs=[reward_function(inputs.reward_model, inputs.reward_tokenizer, batch_size=stage.batch_size)],
        args=args,
        # A chat model gets conversational prompts: TRL renders them with the chat template.
        train_dataset=Dataset.from_list([{"prompt": chat_messages(p) if encoder.chat else p} for p in prompts]),
        processing_class=encoder.tokenizer,
        callbacks=[log.callback()],
    )
    if settings.kl_coef != 0.0:
        trainer.ref_model = sharded_like_policy(frozen_copy(model), trainer)
        trainer.beta = settings.kl_coef
        trainer.args.beta = settings.kl_coef
    quiet_trainer(trainer)
    count_fed(trainer)  # examples and tokens into the timings phase it trains in
    trainer.train()
    model.eval()
    return StageOutcome(log_rows=log.rows, n_examples=len(prompts))
