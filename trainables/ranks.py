"""Who this process is in a multi-worker chain, and which device it runs on.

Read from the torch process group when one exists, else from the torchrun variables Ray Train
sets (RANK, WORLD_SIZE, LOCAL_RANK); a plain process is rank 0 of 1, the writer, on the CPU or
its one GPU. Kept apart from trainables.distributed (waiting, telling, sharding), which builds on
it, so that loading a model (trainables.models) can ask for its device without the collective
machinery.
"""

from __future__ import annotations

import os
from typing import Any


def _initialised() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes that train this chain together: the process group's size, else WORLD_SIZE, else 1."""
    if _initialised():
        import torch.distributed as dist

        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    if _initialised():
        import torch.distributed as dist

        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_writer() -> bool:
    """Rank 0 writes results and checkpoints and evaluates; the other ranks only train."""
    return rank() == 0


def model_device() -> Any:
    """The device this process runs its models on: the rank's own GPU, cuda:LOCAL_RANK (modulo the
    GPUs it sees, as accelerate places the rank's trainer), or the CPU where no GPU is visible.
    A trial that asked for no GPU sees none (trainables.tune_trial hides them)."""
    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank() % torch.cuda.device_count())
