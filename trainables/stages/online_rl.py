"""What PPO and RLOO both start from: their settings, the prompts that fit, the reward model.

The prompts are the stage's rollout prompts (`rollout_prompts`) that leave room for a whole
response within the model's max_length; the reward model is the one the stage's reward names,
or one trained from the base model (`reward_model`) before the policy loaded, loaded frozen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from contract.plan import ModelPlan, OnlineRLPlan, StagePlan, TrainingPlan
from trainables.stages.reward_model import load_reward_model, resolve_reward_model
from trainables.stages.rollout_prompts import fitting_prompts, rl_prompts


@dataclass(frozen=True)
class OnlineRLInputs:
    settings: OnlineRLPlan
    prompts: list[str]
    reward_model: Any
    """Frozen (eval mode, no gradients)."""
    reward_tokenizer: Any
    reward_path: str
    """Hub id or folder of the reward model (a trained one's: under the stage's work_dir)."""


def online_rl_inputs(*, stage: StagePlan, tokenizer: Any, examples: Sequence[Any], training: TrainingPlan,
                     model_plan: ModelPlan, work_dir: str, reward_model_path: str | None) -> OnlineRLInputs:
    """`tokenizer`: the policy's AnswerEncoder (or tokenizer). `reward_model_path`: the reward
    model the chain trained before the policy loaded (chain.trained_reward_model); None = the one
    the stage's reward names, trained here if it asks for one (a direct caller)."""
    settings = stage.online_rl
    prompts = fitting_prompts(tokenizer, rl_prompts(examples, settings.prompts), model_plan.max_length,
                              settings.response_length)
    path = reward_model_path or resolve_reward_model(settings.reward, model_plan=model_plan, examples=examples,
                                                     seed=stage.seed, work_dir=work_dir, training=training)
    reward_model, reward_tokenizer = load_reward_model(path, model_dtype=model_plan.dtype,
                                                       trust_remote_code=model_plan.trust_remote_code)
    reward_model.eval()
    reward_model.requires_grad_(False)
    return OnlineRLInputs(settings=settings, prompts=prompts, reward_model=reward_model,
                          reward_tokenizer=reward_tokenizer, reward_path=path)
