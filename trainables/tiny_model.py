"""The built-in `tiny` model: a 2-layer LlamaConfig and a byte-level BPE tokenizer trained here.

Nothing is downloaded. The tokenizer is trained with `tokenizers` on a fixed corpus (the
rendered training examples of the foundation tasks, read through the same loaders as the
study, so the mirror or the Hub), and the weights are a seeded random init. Both are
deterministic, so the folder name is a content hash: equal inputs → the same cached model.
It is small enough that a 100-step SFT stage runs in seconds on 2 CPU cores; it is for
exercising the engine end to end, not for reproducing the paper's numbers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

from contract.atomic import publish_folder
from trainables.machine_cache import models_cache

TINY_ARCH = {
    "hidden_size": 64,
    "intermediate_size": 176,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
TINY_VOCAB_SIZE = 2048
TINY_INIT_SEED = 0
# Tasks whose training text trains the tokenizer (fixed, so the tokenizer does not change
# with the study file; byte-level BPE still encodes any text).
CORPUS_TASKS = ("arc_easy", "toxigen_qa")
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
TINY_BUILD_VERSION = 1


def tiny_corpus(data_dir: str | None, bad_rows: str = "error") -> list[str]:
    from tasks import load_examples

    texts: list[str] = []
    for task in CORPUS_TASKS:
        for ex in load_examples(task, "train", size=None, data_dir=data_dir, data_seed=0, bad_rows=bad_rows):
            texts.append(ex.prompt + "".join(ex.answer_prefix + o for o in ex.options))
    return texts


def ensure_tiny_model(data_dir: str | None, cache_dir: str | Path | None = None, *, bad_rows: str = "error") -> Path:
    """Build (once) and return the folder of the tiny model: config, safetensors weights, tokenizer.
    `bad_rows`: what a bad row of the corpus's task data does (tasks.bad_rows: error or skip)."""
    corpus = tiny_corpus(data_dir, bad_rows)
    digest = hashlib.sha256()
    digest.update(json.dumps([TINY_ARCH, TINY_VOCAB_SIZE, TINY_INIT_SEED, TINY_BUILD_VERSION]).encode())
    for text in corpus:
        digest.update(text.encode())
    target = Path(cache_dir or models_cache()) / f"tiny-{digest.hexdigest()[:12]}"
    if (target / "model.safetensors").exists():
        return target
    # Concurrent builders never see half a model.
    publish_folder(target, lambda staging: build_tiny_model(corpus, staging), marker="model.safetensors")
    return target


def train_tokenizer(corpus: Iterable[str], vocab_size: int = TINY_VOCAB_SIZE):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        model_max_length=TINY_ARCH["max_position_embeddings"],
    )


def build_tiny_model(corpus: list[str], out_dir: str | Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(corpus)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **TINY_ARCH,
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(TINY_INIT_SEED)
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
