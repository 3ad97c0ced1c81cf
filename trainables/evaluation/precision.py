"""One precision for every model evaluated: the study's resolved `evaluation.precision`.

A forgetting number subtracts two accuracies, so both must come from the same arithmetic. The
models a trial scores reach evaluation by different roads: stage 0 and reused stages are loaded
from disk, a stage trained here is still in memory, an FSDP stage is a consolidated copy. The
one in memory is not the model as loaded: the HF/TRL trainer's accelerate replaced its
`forward` by a bf16-autocast wrapper (`Accelerator.prepare_model` under mixed precision), so
without care it would be scored in bf16 while the others are scored in float32.

`scoring(model, precision)` is the single door: it removes accelerate's wrapper (`unwrapped`)
and runs what is inside under the asked precision, the same for every road. 'float32' turns autocast off
(whatever an outer context asked), 'bfloat16' turns bf16 autocast on for the model's device;
the weights keep their dtype (model.dtype) either way. The judge of the safety tasks (a toxicity
classifier) is not the model being measured: `judge_precision()` runs it outside that autocast.
"""

from __future__ import annotations

import contextlib
from types import MethodType
from typing import Any, Iterator

from contract.plan import EVAL_PRECISIONS


def unwrapped(model: Any) -> Any:
    """`model` as it was before accelerate prepared it (the same object; nothing to do for a model
    loaded from disk): out of any DDP/compile container (accelerate's `extract_model_from_parallel`)
    and with the forward it had before, which accelerate kept in `_original_forward`.

    Not `extract_model_from_parallel(..., keep_fp32_wrapper=False)`: with accelerate 1.16 and
    transformers 5 it follows `__wrapped__` past the autocast wrapper into the model class's own
    decorated forward (it compares each function with the bound original, which never matches)
    and installs the innermost function, without transformers' decorators. Restoring the class's
    forward by removing the instance attribute also drops accelerate's model -> bound method ->
    model reference cycle, which would keep a 7B model alive until the collector happens to run."""
    from accelerate.utils import extract_model_from_parallel

    model = extract_model_from_parallel(model)
    original = model.__dict__.pop("_original_forward", None)
    if original is None:
        return model
    if isinstance(original, MethodType) and original.__self__ is model and original.__func__ is type(model).forward:
        model.__dict__.pop("forward", None)  # the class's forward, as a freshly loaded model has it
    else:
        model.forward = original  # someone else's forward, kept as accelerate found it
    return model


def is_wrapped(model: Any) -> bool:
    """Whether accelerate's mixed-precision forward is still on `model`."""
    return "_original_forward" in model.__dict__


def autocast_context(precision: str, device: Any) -> contextlib.AbstractContextManager:
    """The autocast state `precision` asks for on `device` (a torch.device): bf16 autocast, or
    autocast explicitly off. A bf16 request on a GPU without bf16 is refused (the study's keys say
    bfloat16; a silent float32 run would store float32 numbers under them)."""
    import torch

    if precision not in EVAL_PRECISIONS:
        raise ValueError(f"evaluation precision must be one of {EVAL_PRECISIONS}, got {precision!r}")
    if precision == "bfloat16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise RuntimeError("evaluation.precision resolved to bfloat16, but this GPU has no bf16; "
                               "set evaluation.precision: float32 in the study file")
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


@contextlib.contextmanager
def scoring(model: Any, precision: str) -> Iterator[Any]:
    """Score or generate from `model` inside this block, in `precision`: yields the unwrapped model."""
    model = unwrapped(model)
    device = next(model.parameters()).device
    with autocast_context(precision, device):
        yield model


@contextlib.contextmanager
def judge_precision() -> Iterator[None]:
    """A judge (toxicity classifier) in its own precision, outside the scored model's autocast."""
    import torch

    with torch.autocast("cpu", enabled=False):
        if torch.cuda.is_available():
            with torch.autocast("cuda", enabled=False):
                yield
        else:
            yield
