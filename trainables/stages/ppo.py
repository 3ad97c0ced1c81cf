"""RLHF with PPO through TRL's experimental PPOTrainer (paper §2.2, §3.2).

Prompts (`stage["ppo"]["prompts"]`): "statements" (default) gives the policy the original
ToxiGen statement with no QA template, as the paper does ("we use the original prompts from
the ToxiGen dataset without recasting them to the QA template"); tasks that have no raw
statement (ARC) fall back to the templated prompt. "templated" always uses the template.

Models:
  - policy = the chain's `model`, trained in place;
  - reference = a frozen copy of the model as the stage starts (KL anchor; TRL would otherwise
    copy it itself, we make the copy explicit as in the DPO stage);
  - reward = a frozen sequence-classification model (`reward_model.resolve_reward_model`);
  - value = a trainable copy of the reward model. The value head must map a sequence prefix to a
    scalar, which is exactly what the reward model already does (and it shares the tokenizer
    PPOTrainer uses for both), so initialising from it is the standard choice (Ziegler et al.
    2019, TRL's examples); a value model built from the policy would start with a random head.

TRL's PPOTrainer scores the policy's token ids directly, so the reward model must share the
policy's tokenizer; a Hub reward model with another vocabulary (e.g. the paper's OpenAssistant
DeBERTa) is rejected here — use the RLOO stage, which re-tokenizes text for its reward model.

One `stage["steps"]` = one PPO update (a rollout batch of `stage["batch_size"]` prompts, then
`num_ppo_epochs` optimisation passes over it); total_episodes = steps × batch_size.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

from trainables.stages.outcome import StageOutcome
from trainables.stages.reward_model import load_reward_model, resolve_reward_model
from trainables.stages.sft import TrainLogRecorder, quiet_trainer
from trainables.stages.training_args import common_training_kwargs
from trainables.tokenization import as_encoder
from trainables.tasks.templates import prompt_body

def raw_statement(example: Any) -> str | None:
    """The untemplated ToxiGen statement of a toxigen_qa example, or None for other tasks."""
    if not str(example.example_id).startswith("toxigen_qa/"):
        return None
    return prompt_body(example.prompt)


def rl_prompts(examples: Sequence[Any], mode: str = "statements") -> list[str]:
    if mode not in ("statements", "templated"):
        raise ValueError(f"unknown prompts mode '{mode}' (expected 'statements' or 'templated')")
    prompts = []
    for ex in examples:
        text = raw_statement(ex) if mode == "statements" else None
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
                                training=training, model_dtype=model_dtype, trust_remote_code=trust, chat=chat)
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


def run_ppo(*, model: Any, tokenizer: Any, stage: dict, examples: Sequence[Any], training: dict, max_length: int,
            work_dir: str, model_dtype: str = "auto") -> StageOutcome:
    from datasets import Dataset
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    encoder = as_encoder(tokenizer)
    tokenizer = encoder.tokenizer
    settings, response_length, prompts, reward_model, reward_tokenizer, reward_path = online_rl_inputs(
        method="ppo", stage=stage, model=model, tokenizer=encoder, examples=examples, training=training,
        max_length=max_length, work_dir=work_dir, model_dtype=model_dtype)
    if not same_vocabulary(tokenizer, reward_tokenizer):
        raise ValueError(f"PPO reward model {reward_path!r} does not share the policy's tokenizer; "
                         "TRL's PPOTrainer scores token ids directly (use method 'rloo' for such a reward model)")
    value_model = copy.deepcopy(reward_model)
    value_model.requires_grad_(True)
    value_model.train()

    # Generation needs left padding; don't touch the chain's tokenizer.
    ppo_tokenizer = copy.deepcopy(tokenizer)
    ppo_tokenizer.padding_side = "left"
    dataset = Dataset.from_list([{"input_ids": ids} for ids in encoder.prompt_ids(prompts)])

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
