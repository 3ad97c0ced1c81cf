"""Tiny random causal LMs whose tokenizers behave like the tokenizer families of real models.

A test matrix runs the project's scoring and lm-evaluation-harness over every family here, so
each family reproduces the tokenizer behaviour that decides how (prompt, answer) splits into
tokens: prefix spaces, a BOS added or not, SentencePiece's '▁' and byte fallback, special
tokens and a chat template. Everything is built offline in about a second per family: the
vocabularies are trained with `tokenizers` on the project's own task text, the weights are a
seeded random init, and `save_pretrained` writes the folders.

How transformers 5.25 loads these folders (read from its source and checked by the self-checks
below; this decides how families (c) and (d) are written):

- tokenizer_config "LlamaTokenizer" and "LlamaTokenizerFast" are one class (the Fast name is an
  alias of the tokenizers-backed `LlamaTokenizer`). That class does NOT keep tokenizer.json's
  normalizer, pre-tokenizer, decoder or BPE model: its `__init__` takes only the vocab, the
  merges and the post-processor from the file and rebuilds the rest: BPE(byte_fallback=True,
  fuse_unk=True, no unk_token), normalizer None, pre-tokenizer Metaspace('▁', split=False,
  prepend_scheme "first", or "always" with `legacy: true` (which differs only after special
  tokens), "never" with `add_prefix_space: false`), decoder Replace/ByteFallback/Fuse/Strip,
  and keeps the file's post-processor (the BOS template). So the Llama-2
  legacy layout (normalizer Prepend + Replace, no pre-tokenizer) cannot survive that class:
  a real Llama-2 repository, which declares LlamaTokenizer, loads in 5.25 with family (c)'s
  behaviour. Family (d) keeps the file's own behaviour (what `tokenizers` alone gives) by
  declaring a plain `PreTrainedTokenizerFast` (an alias of `TokenizersBackend`, which loads
  tokenizer.json as it is). Family (c) writes exactly the pipeline the class rebuilds, and the
  self-check below proves the loaded tokenizer encodes like the file.
- AutoTokenizer loads `TokenizersBackend` instead of a declared Llama class when tokenizer.json
  is byte-level (Llama-3 style files), so the byte-level families declare
  `PreTrainedTokenizerFast` (b) / `Qwen2Tokenizer` (e, f), as their real models do; (a) keeps
  what save_pretrained writes for the tiny model ("TokenizersBackend").
- `Qwen2Tokenizer` also rebuilds its pipeline (NFC, Qwen2's split regex, ByteLevel without
  prefix space); families (e) and (f) write that same pipeline.
- The difference that matters for scoring: Metaspace prepends '▁' only to a text that does not
  already start with '▁', so the modern tokenizer (c) encodes " A." as '▁A' '.', while the legacy
  normalizer (d) always prepends and gives '▁' '▁A' '.'.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

FAMILIES: tuple[str, ...] = (
    "bytelevel",
    "bytelevel_prefix",
    "sentencepiece",
    "sentencepiece_legacy",
    "bosless",
    "chat",
)

FAMILY_NOTES: dict[str, str] = {
    "bytelevel": "the built-in tiny model's tokenizer: byte-level BPE, no prefix space, no BOS added; LlamaForCausalLM",
    "bytelevel_prefix": "GPT-2 / Llama-3: byte-level BPE with add_prefix_space (text-initial 'A.' -> 'ĠA' '.') and "
                        "<|begin_of_text|> prepended by the post-processor; GPT2LMHeadModel, tied embeddings",
    "sentencepiece": "modern Llama / Mistral / TinyLlama: SentencePiece BPE with byte fallback, Metaspace "
                     "prepend 'first' (' A.' -> '▁A' '.'), <s> prepended; loaded through LlamaTokenizer",
    "sentencepiece_legacy": "Llama-2's original tokenizer.json as the file itself encodes: normalizer Prepend('▁') + "
                            "Replace, no pre-tokenizer: ' A.' alone -> '▁' '▁A' '.'; PreTrainedTokenizerFast",
    "bosless": "Qwen2 / Qwen2.5 base: byte-level BPE with Qwen2's split regex, no BOS token at all, "
               "eos = pad = <|endoftext|>, config vocab padded past len(tokenizer); Qwen2ForCausalLM",
    "chat": "Qwen2-Instruct: the bosless tokenizer plus a ChatML template, <|im_start|>/<|im_end|> special tokens, "
            "eos <|im_end|>; folder name says 'instruct' so the engine's chat auto rule applies",
}

# Bumped whenever a build changes what it writes, so cached folders are rebuilt.
FAMILY_BUILD_VERSION = 1
VOCAB_SIZE = 1536
MAX_LENGTH = 1024
INIT_SEED = 0
# Far above the usual 0.02: random weights must prefer one option decisively, so comparisons
# of predictions (ours vs lm-eval's) do not hinge on float rounding.
INITIALIZER_RANGE = 0.3
ARCH = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
CORPUS_TASKS = ("arc_easy", "toxigen_qa")
# Qwen2 pads its embedding matrix past the tokenizer (151936 rows for 151665 tokens): logits are
# wider than len(tokenizer), which code must not confuse with the vocabulary.
QWEN_VOCAB_MULTIPLE = 64

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Strings the self-checks encode through both the raw tokenizer and the loaded one.
PROBES = ("Answer: The best answer is A.", " A.", "A.", " This is not toxic.", "naïve café 🙂 ∑ 12345",
          "two  spaces\nand a newline\n\n")


def family_folder_name(name: str) -> str:
    """The folder name for a family: the chat model's name must say 'instruct' (the engine's
    `chat_template: auto` looks at the name)."""
    return "chat-instruct" if name == "chat" else name


def family_corpus(data_dir: str | Path) -> list[str]:
    """Training text for the tokenizers: the rendered training examples of the project's tasks
    (prompt, answer prefix and every option), read from the mirror in source order."""
    from tasks import load_examples

    texts: list[str] = []
    for task in CORPUS_TASKS:
        for ex in load_examples(task, "train", size=None, data_dir=str(data_dir)):
            texts.append(ex.prompt + "".join(ex.answer_prefix + o for o in ex.options))
    return texts


# -- tokenizers ---------------------------------------------------------------------------------
# Each builder returns (raw `tokenizers.Tokenizer`, keyword arguments of the transformers
# wrapper, the tokenizer_class that tokenizer_config.json declares).

def _byte_level_trainer():
    from tokenizers import pre_tokenizers, trainers

    # The full byte alphabet, so any text encodes without an unknown token.
    return trainers.BpeTrainer(vocab_size=VOCAB_SIZE, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                               show_progress=False)


def _bytelevel(corpus):
    # Reuse the tiny model's own trainer, so this family is that tokenizer, not a lookalike.
    from trainables.tiny_model import train_tokenizer

    tok = train_tokenizer(corpus, vocab_size=VOCAB_SIZE)
    raw = tok.backend_tokenizer
    # No declared class: tokenizer_config.json says what save_pretrained writes, as for the tiny model.
    return raw, dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"), None


def _bytelevel_prefix(corpus):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(corpus, trainer=_byte_level_trainer())
    raw.add_special_tokens([bos, eos])  # after the BPE vocab, as in Llama-3 (ids 128000+)
    raw.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1",
                                      special_tokens=[(bos, raw.token_to_id(bos))]),
    ])
    # Llama-3 has no pad token; fine-tuning recipes reuse EOS.
    return raw, dict(bos_token=bos, eos_token=eos, pad_token=eos), "PreTrainedTokenizerFast"


def _sentencepiece_bpe(corpus):
    """SentencePiece-style BPE: <unk> <s> </s>, then the 256 byte-fallback tokens <0x00>..<0xFF>
    (Llama's ids 3..258), then pieces learned within words. Returns (raw, bos, eos, unk)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    raw = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    # Training only: SentencePiece never merges across whitespace, punctuation/script changes
    # or digits (Llama splits digits), so words are cut there while the pieces are learned.
    # Trained line by line so that '\n' is no piece and encodes as <0x0A>, as in Llama-2/Mistral.
    raw.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
        pre_tokenizers.Split(Regex(r"[^\w▁]"), behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    # The byte tokens go in as "special" only to take ids 3..258; they are made ordinary
    # vocabulary below (in Llama they are plain pieces, not added tokens).
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=specials + byte_tokens, show_progress=False)
    raw.train_from_iterator([line for text in corpus for line in text.split("\n")], trainer=trainer)
    spec = json.loads(raw.to_str())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in specials]
    return Tokenizer.from_str(json.dumps(spec)), "<s>", "</s>", "<unk>"


def _bos_template(raw, bos: str):
    from tokenizers import processors

    return processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1",
                                         special_tokens=[(bos, raw.token_to_id(bos))])


def _sentencepiece_decoder():
    from tokenizers import decoders

    return decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                              decoders.Strip(" ", 1, 0)])


def _sentencepiece(corpus):
    from tokenizers import Tokenizer, pre_tokenizers

    raw, bos, eos, unk = _sentencepiece_bpe(corpus)
    # Exactly the pipeline transformers' LlamaTokenizer rebuilds on load (see the module
    # docstring): one Metaspace over the whole text, '▁' prepended to the first section only.
    spec = json.loads(raw.to_str())
    spec["model"]["unk_token"] = None  # the class's BPE has none: byte fallback covers every text
    raw = Tokenizer.from_str(json.dumps(spec))
    raw.normalizer = None
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    raw.decoder = _sentencepiece_decoder()
    raw.post_processor = _bos_template(raw, bos)
    # Many Llama fine-tunes pad with <unk>.
    return raw, dict(bos_token=bos, eos_token=eos, unk_token=unk, pad_token=unk), "LlamaTokenizer"


def _sentencepiece_legacy(corpus):
    from tokenizers import normalizers

    raw, bos, eos, unk = _sentencepiece_bpe(corpus)
    # Llama-2's tokenizer.json: the normalizer does SentencePiece's dummy prefix and space
    # escaping, and there is no pre-tokenizer, so '▁' is prepended to every text, even one that
    # starts with a space.
    raw.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    raw.pre_tokenizer = None
    raw.decoder = _sentencepiece_decoder()
    raw.post_processor = _bos_template(raw, bos)
    return raw, dict(bos_token=bos, eos_token=eos, unk_token=unk, pad_token=eos), "PreTrainedTokenizerFast"


def _qwen2(corpus, chat: bool):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    raw = Tokenizer(models.BPE())
    # The layout of Qwen2's tokenizer.json, which `Qwen2Tokenizer` also rebuilds on load.
    raw.normalizer = normalizers.NFC()
    raw.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    raw.decoder = decoders.ByteLevel()
    raw.post_processor = processors.ByteLevel(trim_offsets=False)
    raw.train_from_iterator(corpus, trainer=_byte_level_trainer())
    endoftext = "<|endoftext|>"
    specials = [endoftext] + (["<|im_start|>", "<|im_end|>"] if chat else [])
    raw.add_special_tokens(specials)  # after the BPE vocab, as in Qwen2 (ids 151643+)
    kwargs = dict(bos_token=None, eos_token=endoftext, pad_token=endoftext, unk_token=None)
    if chat:
        kwargs.update(eos_token="<|im_end|>", extra_special_tokens=specials[1:], chat_template=CHATML_TEMPLATE)
    return raw, kwargs, "Qwen2Tokenizer"


_TOKENIZER_BUILDERS: dict[str, Callable] = {
    "bytelevel": _bytelevel,
    "bytelevel_prefix": _bytelevel_prefix,
    "sentencepiece": _sentencepiece,
    "sentencepiece_legacy": _sentencepiece_legacy,
    "bosless": lambda corpus: _qwen2(corpus, chat=False),
    "chat": lambda corpus: _qwen2(corpus, chat=True),
}


def _write_tokenizer(name: str, corpus: Sequence[str], out_dir: Path):
    """Train, save through transformers, reload through the declared class, check that the
    loaded tokenizer encodes like the raw one, and save again from the loaded one, so the files
    are what that class writes. Returns the loaded tokenizer."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    raw, kwargs, tokenizer_class = _TOKENIZER_BUILDERS[name](list(corpus))
    wrapper = PreTrainedTokenizerFast(tokenizer_object=raw, model_max_length=MAX_LENGTH, **kwargs)
    wrapper.save_pretrained(out_dir)
    _declare_class(out_dir, tokenizer_class)

    loaded = AutoTokenizer.from_pretrained(str(out_dir))
    for text in list(PROBES) + list(corpus[:: max(1, len(corpus) // 50)]):
        for special in (True, False):
            expected = raw.encode(text, add_special_tokens=special).ids
            got = loaded(text, add_special_tokens=special)["input_ids"]
            assert got == expected, f"{name}: {type(loaded).__name__} encodes {text[:60]!r} unlike its tokenizer.json"
    _check_family(name, loaded)
    loaded.save_pretrained(out_dir)
    _declare_class(out_dir, tokenizer_class)  # a TokenizersBackend writes its own name
    _write_special_tokens_map(loaded, out_dir)
    return loaded


# Each family's defining encodings: (the option " A." at the end of "The best answer is A.",
# " A." on its own, "A." with add_special_tokens=True); "BOS" stands for the BOS token. A
# vocabulary or library change that loses one of these fails the build, not a scoring test.
_DEFINING_TOKENS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "bytelevel": (["ĠA", "."], ["ĠA", "."], ["A", "."]),
    "bytelevel_prefix": (["ĠA", "."], ["ĠA", "."], ["BOS", "ĠA", "."]),
    "sentencepiece": (["▁A", "."], ["▁A", "."], ["BOS", "▁A", "."]),
    "sentencepiece_legacy": (["▁A", "."], ["▁", "▁A", "."], ["BOS", "▁A", "."]),
    "bosless": (["ĠA", "."], ["ĠA", "."], ["A", "."]),
    "chat": (["ĠA", "."], ["ĠA", "."], ["A", "."]),
}


def _check_family(name: str, tok) -> None:
    def tokens(text, special=False):
        ids = tok(text, add_special_tokens=special)["input_ids"]
        return ["BOS" if tok.bos_token and t == tok.bos_token else t for t in tok.convert_ids_to_tokens(ids)]

    after_context, alone, with_special = _DEFINING_TOKENS[name]
    got = (tokens("The best answer is A.")[-len(after_context):], tokens(" A."), tokens("A.", special=True))
    assert got == (after_context, alone, with_special), f"{name}: encodes as {got}, expected {_DEFINING_TOKENS[name]}"
    assert tok.pad_token is not None and tok.eos_token is not None, f"{name}: needs a pad and an eos token"


def _declare_class(out_dir: Path, tokenizer_class: str | None) -> None:
    """Set tokenizer_config.json's tokenizer_class: the class AutoTokenizer loads."""
    if tokenizer_class is None:
        return
    path = out_dir / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = tokenizer_class
    if tokenizer_class == "LlamaTokenizer":
        # As modern Llama checkpoints do: pins the non-legacy Metaspace scheme ("first")
        # instead of relying on the class's default.
        config["legacy"] = False
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def _write_special_tokens_map(tokenizer, out_dir: Path) -> None:
    # transformers 5 no longer writes special_tokens_map.json (tokenizer_config.json holds the
    # special tokens); real checkpoints still ship one, and older readers look at it.
    tokens = {key: str(value) for key, value in tokenizer.special_tokens_map.items()
              if value is not None and not isinstance(value, list)}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(tokens, indent=2, ensure_ascii=False) + "\n")


# -- models -------------------------------------------------------------------------------------

def _model_config(name: str, tokenizer):
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if name == "bytelevel_prefix":
        return GPT2Config(vocab_size=len(tokenizer), n_positions=MAX_LENGTH, n_embd=ARCH["hidden_size"],
                          n_layer=ARCH["num_hidden_layers"], n_head=ARCH["num_attention_heads"],
                          n_inner=ARCH["intermediate_size"], initializer_range=INITIALIZER_RANGE, **ids)
    common = dict(max_position_embeddings=MAX_LENGTH, initializer_range=INITIALIZER_RANGE, **ARCH, **ids)
    if name in ("bosless", "chat"):
        padded = -(-len(tokenizer) // QWEN_VOCAB_MULTIPLE) * QWEN_VOCAB_MULTIPLE
        return Qwen2Config(vocab_size=padded, num_key_value_heads=2, tie_word_embeddings=False, **common)
    return LlamaConfig(vocab_size=len(tokenizer), num_key_value_heads=ARCH["num_attention_heads"],
                       tie_word_embeddings=False, **common)


def build_family_model(name: str, out_dir: str | Path, corpus: Sequence[str]) -> Path:
    """Write a complete model folder for family `name` to out_dir (config, seeded random
    safetensors weights, tokenizer files as save_pretrained writes them). Deterministic."""
    import torch
    from transformers import AutoModelForCausalLM

    if name not in FAMILIES:
        raise ValueError(f"unknown tokenizer family {name!r}; expected one of {', '.join(FAMILIES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _write_tokenizer(name, corpus, out_dir)
    config = _model_config(name, tokenizer)
    rng_state = torch.random.get_rng_state()  # a seeded init must not disturb the caller's RNG
    try:
        torch.manual_seed(INIT_SEED)
        model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.random.set_rng_state(rng_state)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def family_digest(corpus: Sequence[str]) -> str:
    """What a build depends on besides the code: the corpus, the build constants and the
    libraries (a new transformers may load or write tokenizers differently)."""
    import tokenizers
    import transformers

    constants = [FAMILY_BUILD_VERSION, VOCAB_SIZE, INIT_SEED, INITIALIZER_RANGE, ARCH,
                 transformers.__version__, tokenizers.__version__]
    digest = hashlib.sha256(json.dumps(constants).encode())
    for text in corpus:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def ensure_family_model(name: str, corpus: Sequence[str], cache_root: str | Path) -> Path:
    """The folder of family `name` under cache_root, built on first use (atomically, so parallel
    test sessions sharing a cache never see half a folder)."""
    from contract.atomic import publish_folder

    target = Path(cache_root) / f"{family_folder_name(name)}-{family_digest(corpus)}"
    if not (target / "model.safetensors").exists():
        publish_folder(target, lambda staging: build_family_model(name, staging, corpus), marker="model.safetensors")
    return target
