"""Supervised fine-tuning through TRL's SFTTrainer, with the loss on the answer only.

Examples become prompt/completion pairs (prompt = instruction + question + "Answer:",
completion = " The best answer is A."): TRL masks the prompt tokens, so the loss is the
cross-entropy of the completion, as in the paper's SFT.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

from trainables.stages.outcome import StageOutcome
from trainables.stages.training_args import common_training_kwargs


def sft_dataset(examples: Sequence[Any]):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": ex.prompt, "completion": ex.completion} for ex in examples])


def run_sft(*, model: Any, tokenizer: Any, stage: dict, examples: Sequence[Any], training: dict, max_length: int,
            work_dir: str, model_dtype: str = "auto") -> StageOutcome:
    kept = fitting_examples(tokenizer, examples, max_length)
    log = TrainLogRecorder()
    trainer = build_sft_trainer(model=model, tokenizer=tokenizer, stage=stage, examples=kept, training=training,
                                max_length=max_length, work_dir=work_dir, model_dtype=model_dtype,
                                callbacks=[log.callback()])
    trainer.train()
    return StageOutcome(log_rows=log.rows, n_examples=len(kept))


def build_sft_trainer(*, model: Any, tokenizer: Any, stage: dict, examples: Sequence[Any], training: dict,
                      max_length: int, work_dir: str, model_dtype: str = "auto", callbacks: list | None = None):
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        **common_training_kwargs(stage=stage, training=training, work_dir=work_dir, model_dtype=model_dtype),
        max_length=max_length,
        completion_only_loss=True,
        packing=False,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_dataset(examples),
        processing_class=tokenizer,
        callbacks=callbacks or [],
    )
    quiet_trainer(trainer)
    return trainer


def fitting_examples(tokenizer: Any, examples: Sequence[Any], max_length: int) -> list[Any]:
    """Examples whose prompt + completion (+ EOS) fit in max_length tokens.

    TRL 1.x truncates only by keeping the start, which cuts the answer off (and then drops the
    fully masked example without saying so); we drop such examples here instead, so the stage
    records how many it really trained on (trials.n_train_examples).
    """
    kept = [ex for ex in examples
            if len(tokenizer(ex.prompt + ex.completion, add_special_tokens=True)["input_ids"]) + 1 <= max_length]
    if not kept:
        raise ValueError(f"no training example fits in max_length={max_length} tokens; raise model.max_length")
    return kept


def quiet_trainer(trainer: Any) -> None:
    """Metrics go to Parquet and Ray, not stdout: drop the per-step printer that disable_tqdm adds."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


class TrainLogRecorder:
    """Collects the trainer's per-step logs as rows of the `train_log` table.

    `loss_key` names the logged value that marks a training step (online-RL trainers log no
    "loss"); `loss_fn` computes the row's loss from the logs when it is not that value itself.
    """

    def __init__(self, loss_key: str = "loss", lr_key: str = "learning_rate", loss_fn=None) -> None:
        self.rows: list[dict] = []
        self.loss_key = loss_key
        self.lr_key = lr_key
        self.loss_fn = loss_fn or (lambda logs: logs[loss_key])
        self._start = time.perf_counter()

    def callback(self):
        from transformers import TrainerCallback

        recorder = self

        class _Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and recorder.loss_key in logs:
                    loss = float(recorder.loss_fn(logs))
                    if not math.isfinite(loss):
                        # Diverged: stop here (chain.divergence records why) instead of
                        # spending the remaining steps on NaNs.
                        control.should_training_stop = True
                    recorder.rows.append({
                        "step": int(state.global_step),
                        "loss": loss,
                        "learning_rate": float(logs.get(recorder.lr_key, float("nan"))),
                        "grad_norm": float(logs.get("grad_norm", float("nan"))),
                        "seconds": time.perf_counter() - recorder._start,
                    })

        return _Callback()
