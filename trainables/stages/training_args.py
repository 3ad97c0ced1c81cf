"""The one place where our stage settings become TRL/transformers training arguments.

Paper §2.2: AdamW (β1 0.9, β2 0.95), weight decay 0.1, cosine schedule, no warmup, a fixed
number of optimizer steps. TRL 1.x defaults that would silently change the experiment are
overridden here: bf16 (≈10x slower on CPU), gradient checkpointing (slower, needless for small
models), the fused AdamW (not on every device), checkpoint saving (we save once per stage).

`stage["batch_size"]` is the GLOBAL batch: with N data-parallel workers (Ray Train, see
`trainables.distributed`) each takes batch_size / N examples per step, and the DDP settings
(backend, FSDP on GPUs when asked) come from `trainables.distributed.parallel_training_kwargs`.
One worker gets exactly the arguments it always had.
"""

from __future__ import annotations

from typing import Any


def common_training_kwargs(*, stage: dict, training: dict, work_dir: str, model_dtype: str) -> dict[str, Any]:
    import torch

    from contract.workers import per_device_batch_size
    from trainables.distributed import parallel_training_kwargs, world_size
    from trainables.models import bf16_autocast

    on_gpu = torch.cuda.is_available()
    bf16 = bf16_autocast(model_dtype)
    workers = world_size()
    kwargs = {
        "output_dir": work_dir,
        "max_steps": int(stage["steps"]),
        "per_device_train_batch_size": per_device_batch_size(int(stage["batch_size"]), workers),
        "gradient_accumulation_steps": 1,
        "learning_rate": float(stage["learning_rate"]),
        "adam_beta1": float(training["adam_beta1"]),
        "adam_beta2": float(training["adam_beta2"]),
        "weight_decay": float(training["weight_decay"]),
        "lr_scheduler_type": training["lr_scheduler"],
        "warmup_steps": int(training["warmup_steps"]),
        "max_grad_norm": float(training["max_grad_norm"]),
        "optim": "adamw_torch",
        "seed": int(stage["seed"]),
        "data_seed": int(stage["seed"]),
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
    kwargs[_checkpointing_field()] = False
    kwargs.update(parallel_training_kwargs(workers=workers, on_gpu=on_gpu))
    return kwargs


def _checkpointing_field() -> str:
    """transformers 5 renamed gradient_checkpointing to activation_checkpointing (old name warns)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
