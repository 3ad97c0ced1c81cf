"""Load causal LMs and tokenizers: the built-in tiny model, a Hugging Face id, or a local path.

Models load onto this process's device (`trainables.ranks.model_device`: the rank's GPU, else the CPU), and
`release_memory` frees what the previous stage's models left behind.

Loading is locked down (`pretrained_kwargs`): local folders load safetensors weights only (a
pickle file there is refused, never unpickled) and custom model/tokenizer code named by a
config's `auto_map` runs only with `trust_remote_code=True` (the study's
`model.trust_remote_code`, default False).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contract.schema import CHECKPOINT_SAVE, MODEL_LOAD
from trainables import timings
from trainables.ranks import model_device


def resolve_base_model(model_name: str, data_dir: str | None, cache_dir: str | Path | None = None,
                       bad_rows: str = "error") -> str:
    """The path or Hub id trials load as stage 0. 'tiny' is built (once per cache dir) from the
    task data, its bad rows refused or left out as `bad_rows` (the study's data.bad_rows) says."""
    if model_name == "tiny":
        from trainables.tiny_model import ensure_tiny_model

        return str(ensure_tiny_model(data_dir, cache_dir, bad_rows=bad_rows))
    return model_name


def weights_dtype(dtype: str):
    """dtype of the weights the optimizer updates.

    'auto' keeps float32 weights (mixed precision on a GPU comes from bf16 autocast, see
    `bf16_autocast`): AdamW steps of ~lr = 1e-5 are far below bf16's resolution near typical
    weight magnitudes, so pure-bf16 weights silently drop most updates. 'bfloat16' is an
    explicit opt-in to pure bf16 weights (half the memory, with that caveat).
    """
    import torch

    return torch.bfloat16 if dtype == "bfloat16" else torch.float32


def bf16_autocast(dtype: str) -> bool:
    """bf16 mixed precision only on a GPU that does bf16 natively (on CPU it is ~10x slower)."""
    import torch

    return dtype != "float32" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


# Weight files transformers would unpickle (torch.load) instead of memory-mapping safetensors.
PICKLE_WEIGHT_PATTERNS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


class UnsafeCheckpointError(OSError):
    """A local model folder without safetensors weights: this engine never unpickles weights."""


def is_local_model(path: str | Path) -> bool:
    return Path(path).expanduser().is_dir()


def require_safetensors(path: str | Path) -> None:
    """Refuse a local model folder whose weights are not safetensors (a pickle can run code when loaded)."""
    folder = Path(path).expanduser()
    if (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file():
        return
    pickles = sorted(f.name for pattern in PICKLE_WEIGHT_PATTERNS for f in folder.glob(pattern))
    found = f"it has only pickle weights ({', '.join(pickles)}), which are never unpickled here" if pickles \
        else "it has no weights at all"
    raise UnsafeCheckpointError(
        f"refusing to load the model in {folder}: no model.safetensors (or model.safetensors.index.json); {found}. "
        "Convert the weights to safetensors (load them once where you trust the file, then "
        "`save_pretrained(..., safe_serialization=True)`).")


def pretrained_kwargs(path: str | Path, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """Security settings for every `from_pretrained` of a model or tokenizer.

    - `trust_remote_code` is passed explicitly (default False): a config or tokenizer whose
      `auto_map` names Python files is refused instead of importing them (and transformers never
      stops to ask on stdin, which would hang a Ray worker).
    - a local folder (our checkpoints, the tiny model, a reward model trained here, a local path
      in the study file) must hold safetensors weights: `use_safetensors=True`, after a check
      with a clear message, so a stray pytorch_model.bin is never unpickled. A Hub id keeps
      transformers' choice: its safetensors files when the repository has them, else the .bin
      through torch.load(weights_only=True), the restricted unpickler (forcing safetensors there
      would make transformers ask the Hub's conversion service to convert the repository).
    """
    kwargs: dict[str, Any] = {"trust_remote_code": bool(trust_remote_code)}
    if is_local_model(path):
        require_safetensors(path)
        kwargs["use_safetensors"] = True
    return kwargs


def load_tokenizer(path: str, *, trust_remote_code: bool = False) -> Any:
    """The model's tokenizer, with a pad token (Llama-2's has none; padding positions are masked out everywhere)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=bool(trust_remote_code))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def on_this_ranks_device() -> dict[str, Any]:
    """`from_pretrained` arguments that load straight onto this rank's GPU (trainables.ranks), so
    the weights never make a full copy in host RAM; none on CPU. One device in the map, so
    transformers adds no dispatch hooks and a trainer may wrap the model."""
    device = model_device()
    return {"device_map": {"": device}} if device.type != "cpu" else {}


def load_model_and_tokenizer(path: str, *, dtype: str = "auto", attn_implementation: str | None = None,
                             trust_remote_code: bool = False) -> tuple[Any, Any]:
    """A causal LM and its tokenizer from a local folder (safetensors only) or a Hub id.

    `trust_remote_code` (the study's `model.trust_remote_code`, default False) is passed to both
    `from_pretrained` calls; see `pretrained_kwargs`.
    """
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": weights_dtype(dtype), **pretrained_kwargs(path, trust_remote_code=trust_remote_code),
                              **on_this_ranks_device()}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    with timings.phase(MODEL_LOAD):
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    return model, tokenizer


def release_memory() -> None:
    """Free what dropped models, optimizers and references still hold: collect reference cycles
    (accelerate's forward patch and the trainer's callbacks make some, so dropping the last name
    is not enough) and hand the GPU's cached blocks back, so the next stage starts from empty."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def save_checkpoint(model: Any, tokenizer: Any, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with timings.phase(CHECKPOINT_SAVE):
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
    return out_dir
