"""Supervised fine-tuning through TRL's SFTTrainer, with the loss on the answer only.

Examples become prompt/completion pairs (prompt = instruction + question + "Answer:",
completion = " The best answer is A." + EOS), tokenized by the one tokenization seam
(trainables.tokenization), so the tokens the loss covers are exactly the tokens option scoring
reads for the correct answer:

- plain text (base models): TRL gets the seam's token ids and completion mask as an already
  tokenized dataset (`input_ids`, `completion_mask`). TRL's own plain-text path encodes the
  prompt alone to find where the completion starts, which is wrong for a tokenizer that merges
  across that boundary.
- chat template: TRL gets conversational prompt/completion messages (user = the prompt,
  assistant = the answer) and renders them with the tokenizer's template itself; the stage then
  checks, example by example, that TRL's input ids and loss mask equal the seam's, and stops
  with the first difference otherwise.

Batches are padded to their longest example, or with `training.padding_free` laid end to end
as one row (TRL's padding-free collator: position ids restart at each example, which
FlashAttention, and transformers' sdpa/eager masks when no KV cache is used, read as separate
sequences), the same loss
without the padding's compute (tests/test_micro_batches.py).
"""

from __future__ import annotations

from typing import Any, Sequence

from contract.plan import ModelPlan, StagePlan, TrainingPlan
from contract.problems import TokenizationError
from trainables.stages.outcome import StageOutcome
from trainables.stages.trainer_plumbing import TrainLogRecorder, quiet_trainer
from trainables.timings import count_fed
from trainables.stages.training_args import common_training_kwargs
from trainables.tokenization import IGNORE_INDEX, AnswerEncoder, Encoded, as_encoder, chat_messages


def sft_dataset(encoder: AnswerEncoder, examples: Sequence[Any], encoded: Sequence[Encoded] | None = None):
    """The dataset SFTTrainer is given: seam token ids (plain) or conversational messages (chat)."""
    from datasets import Dataset

    if encoder.chat:
        rows = []
        for ex in examples:
            user, assistant = chat_messages(ex.prompt, ex.completion)
            rows.append({"prompt": [user], "completion": [assistant]})
        return Dataset.from_list(rows)
    encoded = encoded if encoded is not None else encoder.training(examples)
    return Dataset.from_list([{"input_ids": list(enc.ids),
                               "completion_mask": [0] * enc.loss_start + [1] * (len(enc.ids) - enc.loss_start)}
                              for enc in encoded])


def run_sft(*, model: Any, tokenizer: Any, stage: StagePlan, examples: Sequence[Any], training: TrainingPlan,
            model_plan: ModelPlan, work_dir: str) -> StageOutcome:
    kept, encoded = _fitting(as_encoder(tokenizer), examples, model_plan.max_length)
    log = TrainLogRecorder()
    trainer = build_sft_trainer(model=model, tokenizer=tokenizer, stage=stage, examples=kept, training=training,
                                max_length=model_plan.max_length, work_dir=work_dir, model_dtype=model_plan.dtype,
                                callbacks=[log.callback()], encoded=encoded)
    trainer.train()
    return StageOutcome(log_rows=log.rows, n_examples=len(kept))


def build_sft_trainer(*, model: Any, tokenizer: Any, stage: StagePlan, examples: Sequence[Any], training: TrainingPlan,
                      max_length: int, work_dir: str, model_dtype: str, callbacks: list | None = None,
                      encoded: Sequence[Encoded] | None = None):
    """SFTTrainer over `examples`; `tokenizer` is an AnswerEncoder (or a tokenizer: plain text);
    `encoded`: the examples' `encoder.training(examples)` when the caller already has it."""
    from trl import SFTConfig, SFTTrainer

    encoder = as_encoder(tokenizer)
    encoded = encoded if encoded is not None else encoder.training(examples)
    args = SFTConfig(
        **common_training_kwargs(schedule=stage, seed=stage.seed, training=training, work_dir=work_dir,
                                 model_dtype=model_dtype),
        # Padding-free batches are not truncated by TRL (it refuses a max_length with them): the
        # examples already fit (run_sft keeps those that do, `fitting_examples`).
        max_length=None if training.padding_free else max_length,
        completion_only_loss=True,
        packing=False,
        padding_free=training.padding_free,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_dataset(encoder, examples, encoded),
        processing_class=encoder.tokenizer,
        callbacks=callbacks or [],
    )
    check_trainer_tokens(trainer.train_dataset, examples, encoded)
    quiet_trainer(trainer)
    count_fed(trainer)  # examples and tokens into the timings phase it trains in
    return trainer


def check_trainer_tokens(dataset: Any, examples: Sequence[Any], encoded: Sequence[Encoded]) -> None:
    """TRL's tokenized training rows must be the seam's: the same input ids, loss on exactly
    ids[loss_start:]. Raises TokenizationError naming the first example that differs."""
    if len(dataset) != len(encoded):
        raise TokenizationError(f"the SFT trainer kept {len(dataset)} of {len(encoded)} examples")
    for ex, enc, row in zip(examples, encoded, dataset):
        ids = list(row["input_ids"])
        labels = row.get("labels")
        loss = ([i for i, label in enumerate(labels) if label != IGNORE_INDEX] if labels is not None
                else [i for i, m in enumerate(row.get("completion_mask") or []) if m])
        if ids != list(enc.ids) or loss != list(range(enc.loss_start, len(enc.ids))):
            raise TokenizationError(
                f"{ex.example_id}: TRL tokenized the training example differently from the scoring seam "
                f"(TRL: {len(ids)} tokens, loss on {len(loss)}; seam: {len(enc.ids)} tokens, loss on "
                f"{len(enc.ids) - enc.loss_start}); the answer would not be scored as trained")


def fitting_examples(tokenizer: Any, examples: Sequence[Any], max_length: int) -> list[Any]:
    """Examples whose training sequence (prompt + completion + EOS, as the seam encodes it)
    fits in max_length tokens.

    TRL 1.x truncates only by keeping the start, which cuts the answer off (and then drops the
    fully masked example without saying so); we drop such examples here instead, so the stage
    records how many it really trained on (trials.n_train_examples).
    """
    return _fitting(as_encoder(tokenizer), examples, max_length)[0]


def _fitting(encoder: AnswerEncoder, examples: Sequence[Any], max_length: int) -> tuple[list[Any], list[Encoded]]:
    """`fitting_examples` with the kept examples' encodings (so SFT tokenizes its data once)."""
    pairs = [(ex, enc) for ex, enc in zip(examples, encoder.training(examples)) if len(enc.ids) <= max_length]
    if not pairs:
        raise ValueError(f"no training example fits in max_length={max_length} tokens; raise model.max_length")
    return [ex for ex, _ in pairs], [enc for _, enc in pairs]
