"""Scored as trained, for every tokenizer family (tests/tokenizer_families.py) and every data path.

For each family — byte-level BPE without and with prefix space, SentencePiece through the Llama
class and as Llama-2's legacy tokenizer.json, a BOS-less Qwen2 tokenizer, a ChatML chat model —
and each method's data path (SFT, DPO, reward model, curvature), the tokens the trainer's loss
covers for the correct answer are exactly the tokens option scoring reads for it, after exactly
the same tokens. The engine's predictions equal lm-evaluation-harness's on the same prompts.
"""

from __future__ import annotations

import pytest

from contract.plan import QA_PAIRS, TrainingPlan
from tests.plans import stage_plan
from tests.tokenizer_families import FAMILIES
from trainables.evaluation.option_scoring import encode_pairs, evaluate_examples
from tasks import Example, load_examples
from contract.problems import TokenizationError
from trainables.tokenization import AnswerEncoder, resolve_chat_template

TRAINING = TrainingPlan.from_dict({"adam_beta1": 0.9, "adam_beta2": 0.95, "weight_decay": 0.1, "lr_scheduler": "cosine",
                                    "warmup_steps": 0, "max_grad_norm": 1.0, "eval_batch_size": 8})
STAGE = {"method": "sft", "task": "x", "learning_rate": 1e-3, "batch_size": 4, "steps": 1, "seed": 0,
         "dpo": {"beta": 0.1, "reference": "stage_start"}}
MAX_LENGTH = 512

# Hand-made items for the boundary cases the task templates do not reach: a context that ends
# in whitespace (lm-eval moves it into the option), options that share their first tokens, and
# options without a leading space.
SYNTHETIC = [
    Example(example_id="synthetic/trailing-space", prompt="Question: Which of these is a planet?\nAnswer:",
            answer_prefix=" ", options=("Mars", "Mars rover", "the Moon"), option_names=("a", "b", "c"), label=0),
    Example(example_id="synthetic/shared-start", prompt="Instructions: Name the colour of the sky.\nAnswer:",
            answer_prefix=" It is", options=(" blue.", " blue-green.", " green."), option_names=("a", "b", "c"),
            label=1),
]


@pytest.fixture(scope="module")
def examples(data_dir) -> list:
    return (load_examples("arc_easy", "eval", data_dir=data_dir, limit=6)
            + load_examples("toxigen_qa", "eval", data_dir=data_dir, limit=6) + SYNTHETIC)


def _load(family_model_path, family: str):
    from trainables.models import load_model_and_tokenizer

    path = family_model_path(family)
    model, tokenizer = load_model_and_tokenizer(str(path), dtype="float32")
    chat = resolve_chat_template("auto", path.name, tokenizer)
    assert chat == (family == "chat")  # the auto rule: a template and a chat/instruct name
    return model, tokenizer, AnswerEncoder(tokenizer, chat=chat)


def _independent(tokenizer, ex, chat: bool) -> tuple[list[int], int]:
    """(training ids, loss start) of the correct answer as TRL's own text paths build them, without
    the seam: plain = tokenizer(prompt) for the loss start and tokenizer(prompt + completion) + EOS
    (TRL appends EOS text; the tokenizer maps it to its id); chat = apply_chat_template of the
    prompt with the generation prompt, and of the whole conversation (TRL's conversational path)."""
    if chat:
        user = [{"role": "user", "content": ex.prompt}]
        answer = [{"role": "assistant", "content": ex.completion.lstrip()}]
        start = tokenizer.apply_chat_template(user, tokenize=True, add_generation_prompt=True, return_dict=True)
        full = tokenizer.apply_chat_template(user + answer, tokenize=True, return_dict=True)
        return list(full["input_ids"]), len(start["input_ids"])
    prompt = ex.prompt.rstrip()  # lm-eval's and the seam's rule: trailing whitespace goes with the answer
    full = tokenizer(ex.prompt + ex.completion)["input_ids"] + [tokenizer.eos_token_id]
    return list(full), len(tokenizer(prompt)["input_ids"])


def _scored(encoder, examples) -> list[tuple[list[int], list[int]]]:
    """(scored sequence, scored tokens) of each example's correct option, from the scoring path."""
    pairs = {(ei, oi): (ids, n) for ei, oi, ids, n in encode_pairs(encoder, examples, MAX_LENGTH)}
    out = []
    for ei, ex in enumerate(examples):
        ids, n = pairs[(ei, ex.label)]
        assert n > 0
        out.append((ids, ids[len(ids) - n:]))
    return out


def _assert_covered(ex, input_ids, loss_mask, scored):
    """The scored sequence is the start of the trained one, and the loss covers its scored tokens."""
    seq, answer = scored
    start = len(seq) - len(answer)
    assert list(input_ids[: len(seq)]) == list(seq), f"{ex.example_id}: scored after other tokens than trained on"
    assert all(loss_mask[start: len(seq)]), f"{ex.example_id}: a scored token carries no training loss"
    assert not any(loss_mask[:1]), f"{ex.example_id}: the loss starts at the first token"


@pytest.mark.parametrize("family", FAMILIES)
def test_sft_loss_covers_exactly_the_scored_answer(family, family_model_path, examples, tmp_path):
    """SFT through TRL (pre-tokenized plain text; conversational messages for the chat model):
    its labels are −100 on the prompt, and on the answer they are the scored tokens, then EOS."""
    from trainables.stages.sft import build_sft_trainer

    model, tokenizer, encoder = _load(family_model_path, family)
    trainer = build_sft_trainer(model=model, tokenizer=encoder, stage=stage_plan(STAGE), examples=examples,
                                training=TRAINING, max_length=MAX_LENGTH, model_dtype="auto",
                                work_dir=str(tmp_path / "work"))
    for ex, row, scored in zip(examples, trainer.train_dataset, _scored(encoder, examples)):
        labels = row["labels"]
        loss = [label != -100 for label in labels]
        ids, start = _independent(tokenizer, ex, encoder.chat)
        assert row["input_ids"] == ids and loss == [i >= start for i in range(len(ids))], ex.example_id
        _assert_covered(ex, row["input_ids"], loss, scored)
        covered = [t for t, keep in zip(row["input_ids"], loss) if keep]
        assert [t for t, label in zip(row["input_ids"], labels) if label != -100] == covered
        # The loss text is the completion: answer prefix + option, then EOS / end of turn.
        text = tokenizer.decode(covered, skip_special_tokens=True)
        assert text.strip() == ex.completion.strip(), (ex.example_id, text)
        assert covered[-1] == tokenizer.eos_token_id or encoder.chat


@pytest.mark.parametrize("family", FAMILIES)
def test_dpo_batches_score_chosen_and_rejected_as_scoring_reads_them(family, family_model_path, examples, tmp_path):
    from trainables.stages.dpo import build_dpo_trainer, preference_tokens, rejected_option

    model, _, encoder = _load(family_model_path, family)
    rows = preference_tokens(encoder, examples, seed=0)
    trainer = build_dpo_trainer(model=model, tokenizer=encoder, stage=stage_plan({**STAGE, "method": "dpo"}),
                                pairs=rows, training=TRAINING, max_length=MAX_LENGTH, model_dtype="auto",
                                work_dir=str(tmp_path / "work"))
    pairs = {(ei, oi): (ids, ids[len(ids) - n:]) for ei, oi, ids, n in encode_pairs(encoder, examples, MAX_LENGTH)}
    for ei, (ex, row) in enumerate(zip(examples, trainer.train_dataset)):
        batch = trainer.data_collator([row])  # what the DPO loss sees: [chosen, rejected]
        width = int(batch["attention_mask"][0].sum()), int(batch["attention_mask"][1].sum())
        for side, option in ((0, ex.label), (1, rejected_option(ex, 0))):
            ids = batch["input_ids"][side, : width[side]].tolist()
            mask = batch["completion_mask"][side, : width[side]].tolist()
            _assert_covered(ex, ids, mask, pairs[(ei, option)])


@pytest.mark.parametrize("family", FAMILIES)
def test_reward_model_rows_are_the_options_training_sequences(family, family_model_path, examples):
    from trainables.stages.reward_model import reward_rows

    _, tokenizer, encoder = _load(family_model_path, family)
    rows = reward_rows(encoder, examples, seed=0, max_length=MAX_LENGTH, data=QA_PAIRS)
    for ex, row, scored in zip(examples, rows, _scored(encoder, examples)):
        assert row["chosen_ids"] == _independent(tokenizer, ex, encoder.chat)[0]  # prompt + answer + EOS
        # A reward model reads the whole sequence (no loss mask): it must start with the scored one.
        seq, _ = scored
        assert row["chosen_ids"][: len(seq)] == list(seq), ex.example_id


@pytest.mark.parametrize("family", FAMILIES)
def test_curvature_loss_masks_the_scored_answer(family, family_model_path, examples):
    from trainables.curvature import sft_batches

    _, tokenizer, encoder = _load(family_model_path, family)
    (batch,) = sft_batches(encoder, examples, max_length=MAX_LENGTH, batch_size=len(examples))
    trained = [_independent(tokenizer, ex, encoder.chat) for ex in examples]
    order = sorted(range(len(examples)), key=lambda i: len(trained[i][0]))  # sft_batches sorts by length
    scored = _scored(encoder, examples)
    for row, i in enumerate(order):
        real = batch["attention_mask"][row].bool()
        ids = batch["input_ids"][row][real].tolist()
        labels = batch["labels"][row][real].tolist()
        assert ids == trained[i][0]
        assert [label != -100 for label in labels] == [j >= trained[i][1] for j in range(len(ids))]
        _assert_covered(examples[i], ids, [label != -100 for label in labels], scored[i])


@pytest.mark.parametrize("family", FAMILIES)
def test_predictions_equal_lm_evaluation_harness(family, family_model_path, examples, tmp_path, monkeypatch):
    """0 differing predictions against lm-eval on the same prompts (its chat-template mode for the
    chat model), and scores equal to float rounding."""
    pytest.importorskip("lm_eval")
    from tests.lm_eval_reference import reference_predictions

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer, encoder = _load(family_model_path, family)
    scored = evaluate_examples(model, encoder, examples, batch_size=8, max_length=MAX_LENGTH)
    predictions, scores, samples = reference_predictions(model, tokenizer, examples, tmp_path / "lm-eval",
                                                         chat=encoder.chat, batch_size=8, max_length=MAX_LENGTH)
    assert [s.prediction for s in scored] == predictions
    for s, row, sample in zip(scored, scores, samples):
        diffs = [a - b for a, b in zip(s.scores, row)]
        context = sample["arguments"][0][0]
        if encoder.chat and context != context.rstrip():
            # The generation prompt ends in "\n": lm-eval moves it into every option and scores it
            # too; the seam does not (it is no loss token). The same shift for every option.
            assert diffs == pytest.approx([diffs[0]] * len(diffs), abs=1e-3) and diffs[0] > 0
        else:
            assert diffs == pytest.approx([0.0] * len(diffs), abs=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_offset_boundaries_equal_lm_eval_style_encodings(family, family_model_path, examples, data_dir):
    """The two ways the seam finds a boundary (character offsets, one tokenization per option; or
    a separate encoding of the text before it, as lm-eval does) agree on every family."""
    _, tokenizer, encoder = _load(family_model_path, family)
    assert encoder.use_offsets  # every family's tokenizer is a fast one
    separate = AnswerEncoder(tokenizer, chat=encoder.chat, offsets=False)
    more = load_examples("bbq", "eval", data_dir=data_dir, limit=30) + load_examples(
        "arc_easy", "train", data_dir=data_dir, limit=30)
    assert encoder.encode(examples + more) == separate.encode(examples + more)


def test_legacy_sentencepiece_option_alone_is_not_what_is_scored(family_model_path):
    """The case that broke scoring: Llama-2's legacy tokenizer encodes " A." alone with a lone '▁'
    that never follows the context; the seam scores the in-context tokens."""
    _, tokenizer, encoder = _load(family_model_path, "sentencepiece_legacy")
    ex = Example(example_id="x/1", prompt="Question? A. yes. B. no.\nAnswer:", answer_prefix=" The best answer is",
                 options=(" A.", " B."), option_names=("A", "B"), label=0)
    alone = tokenizer.convert_ids_to_tokens(tokenizer(" A.", add_special_tokens=False)["input_ids"])
    (enc_a, _), = encoder.encode([ex])
    assert alone == ["▁", "▁A", "."]
    assert tokenizer.convert_ids_to_tokens(list(enc_a.answer_ids)) == ["▁A", "."]
    assert enc_a.ids[0] == tokenizer.bos_token_id and enc_a.ids[-1] == tokenizer.eos_token_id


def test_chat_template_scores_the_assistant_turn(family_model_path):
    _, tokenizer, encoder = _load(family_model_path, "chat")
    ex = SYNTHETIC[1]
    enc = encoder.encode([ex])[0][ex.label]
    text = tokenizer.decode(list(enc.ids))
    assert text == ("<|im_start|>user\nInstructions: Name the colour of the sky.\nAnswer:<|im_end|>\n"
                    "<|im_start|>assistant\nIt is blue-green.<|im_end|>\n")
    assert tokenizer.decode(list(enc.context_ids)).endswith("<|im_start|>assistant\nIt is")
    assert tokenizer.decode(list(enc.answer_ids)) == " blue-green."
    assert tokenizer.decode(list(enc.loss_ids)) == "It is blue-green.<|im_end|>\n"


# ---------------------------------------------------------------- bad input


def test_an_option_without_tokens_is_an_error_naming_example_and_option(family_model_path):
    _, _, encoder = _load(family_model_path, "bytelevel")
    ex = Example(example_id="quiz/7", prompt="Q?\nAnswer:", answer_prefix="", options=(" yes", ""),
                 option_names=("yes", "empty"), label=0)
    with pytest.raises(TokenizationError, match=r"quiz/7, option 'empty' \(''\).*no tokens"):
        encoder.encode([ex])


def test_chat_template_setting_resolution(family_model_path):
    _, plain_tok, _ = _load(family_model_path, "bosless")
    _, chat_tok, _ = _load(family_model_path, "chat")
    assert resolve_chat_template("auto", "Qwen/Qwen2.5-0.5B", chat_tok) is False  # a base model's template unused
    assert resolve_chat_template("auto", "Qwen/Qwen2.5-0.5B-Instruct", chat_tok) is True
    assert resolve_chat_template("auto", "meta-llama/Llama-2-7b-chat-hf", plain_tok) is False  # no template
    assert resolve_chat_template(True, "any/base", chat_tok) is True
    assert resolve_chat_template(False, "x-instruct", chat_tok) is False
    with pytest.raises(TokenizationError, match="has no chat template"):
        resolve_chat_template(True, "some/model", plain_tok)
    with pytest.raises(TokenizationError, match="auto, true or false"):
        resolve_chat_template("yes", "some/model", plain_tok)


@pytest.mark.parametrize("name, says", [("meta-llama/Llama-2-7b-chat-hf", True), ("Qwen/Qwen2.5-0.5B-Instruct", True),
                                        ("google/gemma-2-2b-it", True), ("meta-llama/Llama-2-7b-hf", False),
                                        ("Qwen/Qwen2.5-0.5B", False), ("tiiuae/falcon-7b", False),
                                        ("org/chatterbox-1b", False), ("/models/my-instruct-v2", True)])
def test_chat_names(name, says):
    from trainables.tokenization import name_says_chat

    assert name_says_chat(name) is says


def test_tokenization_keeps_bytelevel_training_ids_as_trl_tokenizes_text(tiny_model_path, data_dir):
    """For the built-in tiny model's tokenizer the seam changes nothing TRL trained on before:
    prompt + completion + EOS text tokenized together, the loss after the prompt's own tokens
    (so stored tiny-model stages stay valid)."""
    from trainables.models import load_model_and_tokenizer

    _, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    examples = load_examples("arc_easy", "train", size=20, data_dir=data_dir) + load_examples(
        "toxigen_qa", "train", size=20, data_dir=data_dir)
    for ex, enc in zip(examples, AnswerEncoder(tokenizer).training(examples)):
        assert list(enc.ids) == tokenizer(ex.prompt + ex.completion + tokenizer.eos_token)["input_ids"]
        assert enc.loss_start == len(tokenizer(ex.prompt)["input_ids"])


@pytest.mark.parametrize("offsets", [True, False])
def test_a_template_that_merges_text_into_the_answer_s_last_token_is_refused(family_model_path, offsets):
    """'role: content\\n': byte-level BPE merges the option's '.' with the newline after it ('.Ċ'),
    so the option's last token is not the option's alone: refused, whichever way the boundary
    is found (a template ending the turn with a special token, as ChatML does, is fine)."""
    _, tokenizer, _ = _load(family_model_path, "chat")
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
                               "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    encoder = AnswerEncoder(tokenizer, chat=True, offsets=offsets)
    ex = Example(example_id="x/2", prompt="Pick one.", answer_prefix=" The best answer is", options=(" A.", " C"),
                 option_names=("A", "C"), label=0)
    full = tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": "Pick one."},
                                                    {"role": "assistant", "content": "The best answer is A."}],
                                                   tokenize=False), add_special_tokens=False)["input_ids"]
    assert ".Ċ" in tokenizer.convert_ids_to_tokens(full)  # the merge this test is about
    with pytest.raises(TokenizationError, match=r"x/2, option ' A.': the chat template writes text right after"):
        encoder.encode([ex])
    assert encoder.encode([ex], which=[[1]])[0][0].answer_ids  # ' C' + '\n' does not merge: fine
