"""Load causal LMs and tokenizers: the built-in tiny model, a Hugging Face id, or a local path."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def resolve_base_model(model_name: str, data_dir: str | None) -> str:
    """The path or Hub id trials load as stage 0. 'tiny' is built (once) and cached locally."""
    if model_name == "tiny":
        from trainables.tiny_model import ensure_tiny_model

        return str(ensure_tiny_model(data_dir))
    return model_name


def torch_dtype(dtype: str):
    import torch

    if dtype == "float32":
        return torch.float32
    if dtype == "bfloat16":
        return torch.bfloat16
    # auto: bf16 only where the hardware does it natively; on CPU bf16 is ~10x slower.
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_model_and_tokenizer(path: str, *, dtype: str = "auto", attn_implementation: str | None = None) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype)}
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
