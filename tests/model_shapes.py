"""Model configs of real sizes for the memory tests, built on the meta device (no weights).

Llama-2-7B as published (meta-llama/Llama-2-7b-hf's config.json: 6,738,415,616 parameters) and
the engine's tiny architecture; the fixtures (tests/conftest.py) give their shapes and a folder
holding only Llama-2-7B's config.json, which is all the memory check reads.
"""

from __future__ import annotations

LLAMA2_7B = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                 intermediate_size=11008, vocab_size=32000, tie_word_embeddings=False)


def llama7b_config():
    from transformers import LlamaConfig

    return LlamaConfig(**LLAMA2_7B)


def tiny_config():
    from transformers import LlamaConfig

    from trainables.tiny_model import TINY_ARCH

    return LlamaConfig(vocab_size=2048, **TINY_ARCH)
