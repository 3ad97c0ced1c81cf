"""Ranks of a multi-worker chain working together: who writes, where everyone waits, sharding.

Who a process is (rank, world size, the writer, its device) is trainables.ranks.

A chain with `execution.workers_per_trial = N > 1` runs as a Ray Train `TorchTrainer` with N
workers. Ray Train starts one process per worker, sets the torchrun variables (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT) and initialises a torch process group (gloo
without GPUs, nccl with them) before the worker loop runs. The HF/TRL Trainer inside a stage
finds that group through accelerate's `PartialState` (LOCAL_RANK set → MULTI_CPU with `use_cpu`,
MULTI_GPU otherwise; an existing group is never re-initialised), wraps the model in DDP, gives
each rank its slice of every global batch and all-reduces the gradients, so every rank ends a
stage with the same weights. Nothing from `ray.train.huggingface` is needed: its
`prepare_trainer` only adapts Ray Data datasets, and we pass HF datasets.

Rank 0 (the "writer") runs the chain as with one worker: stage store locks, checkpoints, Parquet
parts, evaluation results, curvature. The other ranks ("followers") only train and evaluate:
rank 0 tells them what to do with `lead(command, *args)` and they run it in `follow(handlers)`
(the training step of a stage, their share of an evaluation's batches, a report), until
`release_followers()`. So rank 0's control flow (reuse or train, start
points, divergence) never has to be mirrored on the other ranks, only the collective parts are.

Waiting: inside a Ray Train worker, every wait on rank 0 goes through Ray Train's own barrier
(`ray.train.collective.barrier`, no timeout), so followers can wait out a long evaluation on rank
0; a torch collective would time out after the process group's timeout (30 min by default).
Outside Ray Train (torchrun, tests with `torch.multiprocessing`) the torch process group is used.

Every helper also works in a plain process (the `function` executor, tests, notebooks): one rank,
rank 0, the writer; barriers return at once; `lead` does nothing.

`batch_size` in a stage is the GLOBAL batch (the paper's 16): each of N workers takes
`batch_size / N` examples per optimizer step (contract/workers.py: the split and its check), so 1
and N workers take the same optimizer steps on the same examples: the trainer's seeded sampler
draws one permutation per epoch and accelerate hands step k's global batch to the ranks in
consecutive slices; the loss is normalised by the global batch's token count
(`average_tokens_across_devices`), so the averaged gradient is the one-worker gradient. One exception: when an epoch ends in a partial batch (the
stage's examples are not a multiple of batch_size and it runs past an epoch), accelerate completes
that last batch with examples from the epoch's start (`even_batches`), so that one step per epoch
differs from one worker's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

from trainables.ranks import _initialised, is_writer, model_device, rank, world_size

FSDP_ENV = "STUDY_FSDP"
"""'1' = shard the model over the ranks with FSDP2 (GPU workers only); set by the trial's worker
loop from the spec, read by `parallel_training_kwargs`."""

DONE = "done"


# -- waiting and telling ------------------------------------------------------------------------


def _in_ray_train_worker() -> bool:
    if "ray" not in sys.modules:
        return False
    try:
        import ray.train

        ray.train.get_context()  # Train V2: RuntimeError outside a Train worker
        return True
    except Exception:
        return False


def _require_group() -> None:
    if not _initialised():
        raise RuntimeError(f"WORLD_SIZE={world_size()} but no torch process group is initialised")


def barrier() -> None:
    """Every rank waits here until all ranks have arrived (returns at once with one rank).

    In a Ray Train worker: Ray Train's barrier (no timeout); elsewhere the torch process group's.
    """
    if world_size() <= 1:
        return
    if _in_ray_train_worker():
        from ray.train.collective import barrier as ray_barrier

        ray_barrier()
        return
    _require_group()
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl" and torch.cuda.is_available():
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def broadcast_from_writer(value: Any) -> Any:
    """Rank 0's `value` (any picklable object) on every rank; identity with one rank.

    All ranks first meet at `barrier()` (so a follower may wait as long as rank 0 works), then
    the object travels over the torch process group (no size limit, unlike Ray Train's 1 kB
    broadcast)."""
    if world_size() <= 1:
        return value
    barrier()
    _require_group()
    import torch.distributed as dist

    box = [value if is_writer() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def lead(command: str, *args: Any) -> None:
    """Rank 0: have every follower run `command(*args)` (see `follow`); nothing with one rank.

    Call it right before rank 0 does the same collective work itself (e.g. a stage's training)."""
    if world_size() > 1:
        if not is_writer():
            raise RuntimeError("only rank 0 leads")
        broadcast_from_writer((command, args))


def follow(handlers: dict[str, Callable[..., Any]]) -> int:
    """Ranks ≠ 0: run rank 0's commands with `handlers[command](*args)` until it sends DONE.

    Returns how many commands were run."""
    done = 0
    while True:
        command, args = broadcast_from_writer(None)
        if command == DONE:
            return done
        if command not in handlers:
            raise RuntimeError(f"rank {rank()}: no handler for rank 0's command {command!r}")
        handlers[command](*args)
        done += 1


def release_followers() -> None:
    """Rank 0, when its chain ends normally: followers return from `follow`."""
    lead(DONE)


def leading_report(report: Callable[[dict], None]) -> Callable[[dict], None]:
    """Rank 0's reporter: every follower reports too (`ray.train.report` must be called as
    often on every rank; Tune keeps rank 0's metrics). Followers handle "report" with `report({})`."""
    def _report(metrics: dict) -> None:
        lead("report")
        report(metrics)

    return _report


# -- trainer arguments --------------------------------------------------------------------------


def fsdp_requested() -> bool:
    return os.environ.get(FSDP_ENV, "0") == "1"


def parallel_training_kwargs(*, workers: int, on_gpu: bool) -> dict[str, Any]:
    """TrainingArguments for data-parallel training over `workers` ranks ({} for one rank).

    - `ddp_backend`: the backend Ray Train already initialised (accelerate checks it against its
      own choice and never re-initialises the group; on CPU it would pick MPI when torch has it).
    - `ddp_find_unused_parameters=False`: every parameter of a causal LM / sequence classifier gets
      a gradient each step, so DDP need not walk the autograd graph looking for unused ones
      (transformers' default for a PreTrainedModel is True).
    - FSDP2 (`fsdp`, `fsdp_config`) when `STUDY_FSDP=1` and the workers have GPUs: parameters,
      gradients and AdamW state sharded over the ranks (a 7B model's float32 AdamW state does not
      fit one GPU). accelerate ignores FSDP on CPU workers (it runs DDP there), so it is refused.
    """
    if workers <= 1:
        return {}
    kwargs: dict[str, Any] = {
        "ddp_backend": "nccl" if on_gpu else "gloo",
        "ddp_find_unused_parameters": False,
    }
    if fsdp_requested():
        if not on_gpu:
            raise ValueError("FSDP needs GPU workers (execution.gpus_per_trial > 0)")
        kwargs.pop("ddp_find_unused_parameters")
        kwargs["fsdp"] = True
        kwargs["fsdp_config"] = {
            "version": 2,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",  # wraps the model's `_no_split_modules` (decoder layers)
            "reshard_after_forward": True,
            "state_dict_type": "FULL_STATE_DICT",
            "activation_checkpointing": False,
            "cpu_ram_efficient_loading": False,  # every rank loads the checkpoint itself (the chain does)
        }
    return kwargs


# -- weights after a stage ----------------------------------------------------------------------


def is_sharded(model: Any) -> bool:
    """True when FSDP has replaced the model's parameters by shards (DTensors): such a model only
    runs forward passes on all ranks together, so rank 0 must not evaluate or save it alone."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    return any(isinstance(p, DTensor) for p in model.parameters())


def full_state_dict(model: Any) -> dict[str, Any] | None:
    """The model's full (unsharded) state dict on rank 0, None on the other ranks.

    A collective when the model is sharded: every rank must call it."""
    if not is_sharded(model):
        return model.state_dict() if is_writer() else None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return state if is_writer() else None


def consolidate(model: Any, *, dtype: Any = None, to_device: bool = True) -> Any | None:
    """Every rank calls this right after a stage's training. Rank 0 gets a plain (unsharded)
    model with the trained weights: `model` itself after DDP, a new copy after FSDP. The other
    ranks get None (after FSDP they took part in gathering the weights).

    `dtype`: the copy's dtype (the study's weights dtype: accelerate's FSDP2 preparation upcasts
    trainable bfloat16 parameters to float32, so the gathered state is float32 even for
    `model.dtype: bfloat16`); None keeps the gathered dtype. `to_device=False` leaves the copy on
    the CPU (enough to save it; no second whole model on the GPU beside the shards)."""
    if not is_sharded(model):
        return model if is_writer() else None
    state = full_state_dict(model)
    if not is_writer():
        return None
    import copy

    from transformers.initialization import no_init_weights

    # Built on the CPU without initialising weights (they are replaced at once), so that
    # non-persistent buffers (rotary frequencies) are computed as in from_pretrained. The model's
    # own class (a causal LM, or a reward model's sequence classifier), not FSDP's subclass of it.
    with no_init_weights():
        plain = unsharded_class(model)._from_config(copy.deepcopy(model.config),
                                                    dtype=next(iter(state.values())).dtype)
    plain.load_state_dict(state, strict=True, assign=True)
    plain.tie_weights()
    plain.eval()
    if dtype is not None:
        plain = plain.to(dtype)
    return plain.to(model_device()) if to_device else plain  # where every other model of this rank runs


def unsharded_class(model: Any) -> type:
    """The class `model` had before FSDP2's `fully_shard` (which makes it an instance of a new
    subclass, `FSDP<Class>`, of FSDPModule and the class)."""
    from torch.distributed.fsdp import FSDPModule

    return next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))


def save_stage_checkpoint(model: Any, tokenizer: Any, out_dir: str | Path) -> Path:
    """Every rank calls this after training a model together (a stage's, a reward model's): rank 0
    writes the checkpoint (safetensors + tokenizer), every rank returns once it is on disk, so
    every rank may read it at `out_dir` (a folder all ranks see). With FSDP all ranks first gather
    the full weights. For code where only rank 0 saves (the `lead`/`follow` chain), use `consolidate`."""
    from trainables.models import save_checkpoint

    out_dir = Path(out_dir)
    plain = consolidate(model, to_device=False)
    if plain is not None:
        save_checkpoint(plain, tokenizer, out_dir)
    barrier()
    return out_dir
