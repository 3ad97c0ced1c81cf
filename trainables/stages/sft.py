"""Supervised fine-tuning through TRL's SFTTrainer, with the loss on the answer only.

Examples become prompt/completion pairs (prompt = instruction + question + "Answer:",
completion = " The best answer is A."): TRL masks the prompt tokens, so the loss is the
cross-entropy of the completion, as in the paper's SFT.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from trainables.stages.training_args import common_training_kwargs


def sft_dataset(examples: Sequence[Any]):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": ex.prompt, "completion": ex.completion} for ex in examples])


def run_sft(*, model: Any, tokenizer: Any, stage: dict, examples: Sequence[Any], training: dict, max_length: int,
            work_dir: str) -> list[dict]:
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        **common_training_kwargs(stage=stage, training=training, work_dir=work_dir),
        max_length=max_length,
        completion_only_loss=True,
        packing=False,
    )
    log = TrainLogRecorder()
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_dataset(examples),
        processing_class=tokenizer,
        callbacks=[log.callback()],
    )
    quiet_trainer(trainer)
    trainer.train()
    return log.rows


def quiet_trainer(trainer: Any) -> None:
    """Metrics go to Parquet and Ray, not stdout: drop the per-step printer that disable_tqdm adds."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


class TrainLogRecorder:
    """Collects the trainer's per-step logs as rows of the `train_log` table."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self._start = time.perf_counter()

    def callback(self):
        from transformers import TrainerCallback

        recorder = self

        class _Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    recorder.rows.append({
                        "step": int(state.global_step),
                        "loss": float(logs["loss"]),
                        "learning_rate": float(logs.get("learning_rate", float("nan"))),
                        "grad_norm": float(logs.get("grad_norm", float("nan"))),
                        "seconds": time.perf_counter() - recorder._start,
                    })

        return _Callback()
