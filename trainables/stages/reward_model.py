"""Reward models for the online-RL stages (PPO, RLOO).

Paper §2.2/§3.2: RLHF first learns a reward model from a preference dataset
{x, y_w, y_l}, then optimises the policy against it. Two ways to get one
(`stage.<method>.reward`, in the form its stage key records):

  {"model": "<hub id or local path>"}   an existing sequence-classification reward model, with
                                        its own tokenizer or the policy's (the paper uses
                                        OpenAssistant/reward-model-deberta-v3-large-v2);
  {"train": {"steps": ..., "learning_rate": ..., "batch_size": ...}}
                                        learn one here with TRL's RewardTrainer, on the text that
                                        follows the stage's prompts (its `data`): for the raw
                                        ToxiGen statements the paper's PPO continues, a neutral vs
                                        a hate ToxiGen statement about the prompt's group; for
                                        templated prompts, the task's preference pairs.

A reward model trained in the study is its own step, before the policy loads (the chain's
`trained_reward_model`): at most one model is being trained on a GPU at a time. Every rank of
the trial trains it together (data parallel, or FSDP-sharded like a stage), rank 0 saves the
gathered weights in a folder all ranks see, and every rank then reads them from there.

A trained reward model is `AutoModelForSequenceClassification(num_labels=1)` initialised from
the chain's base checkpoint (for Llama: LlamaForSequenceClassification; the scalar head is
new), so it shares the policy's tokenizer and PPO scores the policy's token ids with it
directly. A reward model with another tokenizer is given text (`trainables.stages.text_reward`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from contract.plan import ModelPlan, RewardPlan, RewardTrainingPlan, TrainingPlan
from trainables.stages.dpo import fitting_pairs, preference_tokens
from trainables.stages.reward_data import reward_examples
from trainables.stages.trainer_plumbing import TrainLogRecorder, quiet_trainer
from trainables.timings import count_fed
from trainables.stages.training_args import common_training_kwargs
from trainables.tokenization import AnswerEncoder

REWARD_MODEL_DIRNAME = "reward_model"


def load_reward_model(path: str, *, model_dtype: str, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """A scalar (num_labels=1) sequence-classification model and its tokenizer, pad token set.

    Same safeguards as the policy (`trainables.models.pretrained_kwargs`): a local folder (the
    reward model trained here, or a local `reward.model` path) loads safetensors only, and
    custom code runs only with `trust_remote_code=True`; loaded straight onto this rank's GPU,
    as the policy is (not onto the first GPU of the node).
    """
    from transformers import AutoModelForSequenceClassification

    from trainables.models import load_tokenizer, on_this_ranks_device, pretrained_kwargs, weights_dtype

    kwargs = {**pretrained_kwargs(path, trust_remote_code=trust_remote_code), **on_this_ranks_device()}
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=weights_dtype(model_dtype),
                                                               **kwargs)
    # Llama's classification head pools the last non-pad token: it must know the pad id.
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def reward_rows(encoder: AnswerEncoder, examples: Sequence[Any], *, seed: int, max_length: int,
                data: str) -> list[dict]:
    """RewardTrainer rows (chosen_ids, rejected_ids) of `data` (STATEMENTS or QA_PAIRS) built from the
    stage's examples: each side is its option's whole training sequence from the tokenization
    seam (prompt + continuation + EOS, or the chat template's conversation), pairs that do not
    fit in max_length dropped."""
    pairs = reward_examples(examples, data, int(seed))
    if not pairs:
        raise ValueError(f"no {data} reward pair can be built from the stage's {len(examples)} examples "
                         "(a statement prompt needs another neutral and another hate statement about its group); "
                         "raise the task's train_size or name a reward model")
    rows = fitting_pairs(preference_tokens(encoder, pairs, int(seed)), max_length)
    return [{"chosen_ids": r["prompt_ids"] + r["chosen_ids"], "rejected_ids": r["prompt_ids"] + r["rejected_ids"]}
            for r in rows]


def train_reward_model(*, model_plan: ModelPlan, examples: Sequence[Any], seed: int, settings: RewardTrainingPlan,
                       work_dir: str, training: TrainingPlan, out_dir: str | None = None) -> str:
    """Train a reward model from the base model (`model_plan.path`) on the pairs of
    `settings.data` (`reward_rows`); return the folder it is saved in (safetensors): `out_dir`,
    by default `work_dir`/reward_model. RewardTrainer gets the seam's token ids. With several
    ranks every rank calls this with the same `out_dir` (see the module docstring)."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import RewardConfig, RewardTrainer

    from trainables.distributed import save_stage_checkpoint

    set_seed(seed)  # the new score head is drawn when the model loads, before the trainer seeds
    model, tokenizer = load_reward_model(model_plan.path, model_dtype=model_plan.dtype,
                                         trust_remote_code=model_plan.trust_remote_code)
    pairs = reward_rows(AnswerEncoder(tokenizer, chat=model_plan.chat), examples, seed=seed,
                        max_length=model_plan.max_length, data=settings.data)
    out = Path(out_dir) if out_dir is not None else Path(work_dir) / REWARD_MODEL_DIRNAME
    args = RewardConfig(
        **common_training_kwargs(schedule=settings, seed=seed, training=training,
                                 work_dir=str(Path(work_dir) / "rm_trainer"), model_dtype=model_plan.dtype),
        max_length=model_plan.max_length,
        disable_dropout=True,
        center_rewards_coefficient=None,
    )
    log = TrainLogRecorder()
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs),
                            processing_class=tokenizer, callbacks=[log.callback()])
    quiet_trainer(trainer)
    count_fed(trainer)  # examples and tokens into the timings phase it trains in
    trainer.train()
    # Gathered whole on rank 0 (a collective when FSDP sharded it), written once, read by all.
    # (FSDP2 shards `model` in place; DDP wraps it and leaves `model` whole.)
    save_stage_checkpoint(model, tokenizer, out)
    return str(out)


def resolve_reward_model(reward: RewardPlan, *, model_plan: ModelPlan, examples: Sequence[Any], seed: int,
                         work_dir: str, training: TrainingPlan) -> str:
    """Path or Hub id of the reward model a stage's reward names (training one from the base
    model, with the stage's seed, when asked)."""
    if reward.model is not None:
        return reward.model
    return train_reward_model(model_plan=model_plan, examples=examples, seed=seed, settings=reward.train,
                              work_dir=work_dir, training=training)
