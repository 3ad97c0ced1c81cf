"""Load causal LMs and tokenizers: the built-in tiny model, a Hugging Face id, or a local path."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def resolve_base_model(model_name: str, data_dir: str | None, cache_dir: str | Path | None = None) -> str:
    """The path or Hub id trials load as stage 0. 'tiny' is built (once per cache dir)."""
    if model_name == "tiny":
        from trainables.tiny_model import ensure_tiny_model

        return str(ensure_tiny_model(data_dir, cache_dir))
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


def load_model_and_tokenizer(path: str, *, dtype: str = "auto", attn_implementation: str | None = None) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": weights_dtype(dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        # Llama-2's tokenizer has no pad token; padding positions are masked out everywhere.
        tokenizer.pad_token = tokenizer.eos_token
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model, tokenizer


def save_checkpoint(model: Any, tokenizer: Any, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
