"""The one place where our stage settings become TRL/transformers training arguments.

Paper §2.2: AdamW (β1 0.9, β2 0.95), weight decay 0.1, cosine schedule, no warmup, a fixed
number of optimizer steps. TRL 1.x defaults that would silently change the experiment are
overridden here: bf16 (≈10x slower on CPU), activation checkpointing (TRL turns it on; here it is
the study's `training.activation_checkpointing`, off by default), the AdamW kernel (transformers
5 picks the fused one; here it is `training.optimizer`, torch's plain AdamW by default),
checkpoint saving (we save once per stage).

A schedule's `batch_size` (a stage's, or a trained reward model's) is the GLOBAL batch: with N data-parallel workers (Ray Train, see
`trainables.distributed`) each takes batch_size / N examples per step, and the DDP settings
(backend, FSDP on GPUs when asked) come from `trainables.distributed.parallel_training_kwargs`.
With `training.micro_batch_size` each worker runs its share as micro-batches whose gradients
are accumulated into the one optimizer step (contract.workers.batch_split): the same global
batch and optimizer steps. One worker without micro-batches gets exactly the arguments it always had.
Padding-free batches are SFT's own argument (trainables.stages.sft).
"""

from __future__ import annotations

from typing import Any, Protocol

from contract.plan import TrainingPlan


class OptimizerSchedule(Protocol):
    """How long and how fast an optimizer runs: a stage's plan (contract.plan.StagePlan) or a
    reward model's training settings (contract.plan.RewardTrainingPlan)."""

    @property
    def steps(self) -> int: ...

    @property
    def batch_size(self) -> int: ...

    @property
    def learning_rate(self) -> float: ...


def common_training_kwargs(*, schedule: OptimizerSchedule, seed: int, training: TrainingPlan, work_dir: str,
                           model_dtype: str) -> dict[str, Any]:
    import torch

    from contract.workers import batch_split
    from trainables.distributed import parallel_training_kwargs
    from trainables.ranks import world_size
    from trainables.models import bf16_autocast

    on_gpu = torch.cuda.is_available()
    bf16 = bf16_autocast(model_dtype)
    workers = world_size()
    split = batch_split(schedule.batch_size, workers, training.micro_batch_size)
    kwargs = {
        "output_dir": work_dir,
        "max_steps": schedule.steps,
        "per_device_train_batch_size": split.micro_batch,
        "gradient_accumulation_steps": split.accumulation_steps,
        "learning_rate": schedule.learning_rate,
        "adam_beta1": training.adam_beta1,
        "adam_beta2": training.adam_beta2,
        "weight_decay": training.weight_decay,
        "lr_scheduler_type": training.lr_scheduler,
        "warmup_steps": training.warmup_steps,
        "max_grad_norm": training.max_grad_norm,
        "optim": training.optimizer,
        "seed": seed,
        "data_seed": seed,
        "bf16": bf16,
        "fp16": False,
        "use_cpu": not on_gpu,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": [],
        "logging_strategy": "steps",
        "logging_steps": 1,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    kwargs.update(parallel_training_kwargs(workers=workers, on_gpu=on_gpu))
    checkpointing = training.activation_checkpointing
    if checkpointing and "fsdp_config" in kwargs:
        # Under FSDP, FSDP's own checkpointing (transformers refuses both at once).
        kwargs["fsdp_config"] = {**kwargs["fsdp_config"], "activation_checkpointing": True}
        checkpointing = False
    kwargs[_checkpointing_field()] = checkpointing
    if checkpointing:
        # The non-reentrant torch.utils.checkpoint: works with frozen inputs and DDP, restores
        # the RNG state (dropout) in the recomputation.
        kwargs[_checkpointing_field() + "_kwargs"] = {"use_reentrant": False}
    return kwargs


def _checkpointing_field() -> str:
    """transformers 5 renamed gradient_checkpointing to activation_checkpointing (old name warns)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
