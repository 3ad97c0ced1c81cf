"""The tokenizer-family fixtures behave like the real tokenizers they stand for.

Each test pins the behaviour that makes its family worth testing against (where a BOS comes
from, how " A." encodes alone and after a context, byte fallback, the chat template), so a
change in transformers or tokenizers that erases a difference fails here, not silently in the
scoring matrix that uses these models.
"""

from __future__ import annotations

import json

import pytest

from tests.tokenizer_families import FAMILIES, FAMILY_NOTES, PROBES, build_family_model

CONTEXT = "Answer: The best answer is A."


def _tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def _tokens(tok, text, special=False):
    return tok.convert_ids_to_tokens(tok(text, add_special_tokens=special)["input_ids"])


def _config(path, name="tokenizer_config.json"):
    return json.loads((path / name).read_text())


def test_every_family_has_a_note():
    assert list(FAMILY_NOTES) == list(FAMILIES)


def test_bytelevel_option_alone_is_its_tail_after_a_context(family_model_path):
    tok = _tokenizer(family_model_path("bytelevel"))
    alone = tok(" A.", add_special_tokens=False)["input_ids"]
    assert alone == tok(CONTEXT, add_special_tokens=False)["input_ids"][-len(alone):]
    assert _tokens(tok, " A.") == ["ĠA", "."]
    assert _tokens(tok, "A.") == ["A", "."]  # no prefix space added
    assert tok(CONTEXT)["input_ids"] == tok(CONTEXT, add_special_tokens=False)["input_ids"]  # no BOS


def test_bytelevel_prefix_adds_bos_and_a_prefix_space(family_model_path):
    path = family_model_path("bytelevel_prefix")
    tok = _tokenizer(path)
    ids = tok("A.")["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.bos_token == "<|begin_of_text|>"
    assert tok.convert_ids_to_tokens(ids[1:]) == ["ĠA", "."]  # text-initial "A." gets the 'Ġ' too
    assert _tokens(tok, " A.") == ["ĠA", "."]
    assert _tokens(tok, CONTEXT)[-2:] == ["ĠA", "."]
    config = _config(path, "config.json")
    assert config["model_type"] == "gpt2" and config["n_positions"] >= 1024


def test_sentencepiece_loads_as_the_llama_class_with_byte_fallback(family_model_path):
    from transformers import LlamaTokenizer, LlamaTokenizerFast

    tok = _tokenizer(family_model_path("sentencepiece"))
    assert type(tok) is LlamaTokenizer and LlamaTokenizerFast is LlamaTokenizer
    assert tok("A.")["input_ids"][0] == tok.bos_token_id and tok.bos_token == "<s>"
    assert _tokens(tok, "🙂") == ["▁", "<0xF0>", "<0x9F>", "<0x99>", "<0x82>"]  # not in the vocab: its bytes
    assert "<0x0A>" in _tokens(tok, "a\nb")  # Llama has no newline piece
    assert tok.decode(tok("naïve 🙂")["input_ids"], skip_special_tokens=True) == "naïve 🙂"
    # Non-legacy Metaspace: a text that starts with a space gets no second '▁'.
    assert _tokens(tok, " A.") == ["▁A", "."] == _tokens(tok, CONTEXT)[-2:]


def test_sentencepiece_legacy_prepends_a_lone_meta_space(family_model_path):
    from transformers import PreTrainedTokenizerFast

    path = family_model_path("sentencepiece_legacy")
    tok = _tokenizer(path)
    assert _config(path)["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert type(tok) is PreTrainedTokenizerFast
    backend = json.loads(tok.backend_tokenizer.to_str())
    assert backend["pre_tokenizer"] is None and backend["normalizer"]["type"] == "Sequence"
    assert _tokens(tok, " A.") == ["▁", "▁A", "."]
    assert _tokens(tok, CONTEXT)[-2:] == ["▁A", "."]
    assert tok("A.")["input_ids"][0] == tok.bos_token_id


def test_llama_class_rebuilds_the_pipeline_and_drops_the_legacy_normalizer(family_model_path, tmp_path):
    """Why (d) declares PreTrainedTokenizerFast (module docstring): the same files declared as
    LlamaTokenizer lose the Prepend normalizer and encode " A." the modern way."""
    import shutil

    folder = shutil.copytree(family_model_path("sentencepiece_legacy"), tmp_path / "as-llama")
    config = _config(folder)
    config["tokenizer_class"] = "LlamaTokenizerFast"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    tok = _tokenizer(folder)
    backend = json.loads(tok.backend_tokenizer.to_str())
    assert type(tok).__name__ == "LlamaTokenizer" and backend["normalizer"] is None
    assert backend["pre_tokenizer"]["type"] == "Metaspace" and backend["pre_tokenizer"]["prepend_scheme"] == "first"
    assert _tokens(tok, " A.") == ["▁A", "."]


def test_bosless_has_no_bos_at_all(family_model_path):
    path = family_model_path("bosless")
    tok = _tokenizer(path)
    assert type(tok).__name__ == "Qwen2Tokenizer"
    assert tok.bos_token is None and tok.eos_token == "<|endoftext|>"
    assert tok(CONTEXT)["input_ids"] == tok(CONTEXT, add_special_tokens=False)["input_ids"]
    assert _tokens(tok, " A.") == ["ĠA", "."] == _tokens(tok, CONTEXT)[-2:]
    # Like Qwen2, the embedding matrix has more rows than the tokenizer has tokens.
    assert _config(path, "config.json")["vocab_size"] > len(tok)


def test_chat_renders_chatml(family_model_path):
    from trainables.tokenization import name_says_chat

    path = family_model_path("chat")
    tok = _tokenizer(path)
    assert "instruct" in path.name and name_says_chat(str(path))
    assert tok.bos_token is None and tok.eos_token == "<|im_end|>"
    user = [{"role": "user", "content": "hi"}]
    prompt = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    full = tok.apply_chat_template(user + [{"role": "assistant", "content": "The best answer is A."}], tokenize=False)
    assert full == prompt + "The best answer is A.<|im_end|>\n"
    for special in ("<|im_start|>", "<|im_end|>"):
        assert special in tok.all_special_tokens
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1


@pytest.mark.parametrize("name", FAMILIES)
def test_family_loads_and_runs(family_model_path, name):
    import torch

    from trainables.models import load_model_and_tokenizer

    path = family_model_path(name)
    own = _tokenizer(path)  # before load_tokenizer's pad fallback: the family has its own pad token
    assert own.pad_token is not None and own.eos_token is not None
    model, tok = load_model_and_tokenizer(str(path), dtype="float32")
    assert tok.pad_token == own.pad_token
    batch = tok([CONTEXT, " A."], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch.to(model.device)).logits
    assert logits.shape[-1] == model.config.vocab_size and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", FAMILIES)
def test_tokenizer_json_encodes_like_the_loaded_tokenizer(family_model_path, name):
    """The file is what the declared class uses: a class that rebuilt the pipeline differently
    (as LlamaTokenizer does) would make tokenizer.json lie about the family."""
    from tokenizers import Tokenizer

    path = family_model_path(name)
    tok, raw = _tokenizer(path), Tokenizer.from_file(str(path / "tokenizer.json"))
    for text in PROBES:
        assert tok(text)["input_ids"] == raw.encode(text).ids, text


@pytest.mark.parametrize("name", FAMILIES)
def test_random_weights_prefer_one_option_decisively(family_model_path, data_dir, name):
    """Prediction comparisons must not hinge on float rounding: the two best options of an
    ARC question differ by far more than 1e-3 nats."""
    import torch

    from trainables.models import load_model_and_tokenizer
    from tasks import load_examples

    model, tok = load_model_and_tokenizer(str(family_model_path(name)), dtype="float32")
    tok.padding_side = "right"  # pads after the scored tokens, so they keep their positions
    gaps = []
    for ex in load_examples("arc_easy", "eval", size=None, data_dir=str(data_dir), limit=50):
        context = len(tok(ex.prompt + ex.answer_prefix)["input_ids"])
        batch = tok([ex.prompt + ex.answer_prefix + option for option in ex.options], return_tensors="pt", padding=True)
        with torch.no_grad():
            logp = model(**batch.to(model.device)).logits.log_softmax(-1)
        scores = []
        for row, (ids, mask) in enumerate(zip(batch["input_ids"], batch["attention_mask"])):
            end = int(mask.sum())
            scores.append(sum(logp[row, i - 1, ids[i]].item() for i in range(context, end)))
        best, second = sorted(scores, reverse=True)[:2]
        gaps.append(best - second)
    assert sum(gap > 1e-3 for gap in gaps) >= 0.9 * len(gaps), sorted(gaps)[:10]


def test_build_is_deterministic(family_model_path, data_dir, tmp_path):
    from tests.tokenizer_families import family_corpus

    cached = family_model_path("sentencepiece")
    rebuilt = build_family_model("sentencepiece", tmp_path / "again", family_corpus(data_dir))
    for file in sorted(p.name for p in cached.iterdir()):
        assert (rebuilt / file).read_bytes() == (cached / file).read_bytes(), file
