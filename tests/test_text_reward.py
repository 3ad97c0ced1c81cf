"""trainables/stages/text_reward.py: a reward model with its own tokenizer scores PPO and RLOO
rollouts as (prompt, decoded response) text.

Policies and reward models come from different tokenizer families: the tiny model's byte-level
BPE, the SentencePiece family (Llama-style, BOS added, no separator) and a WordPiece tokenizer
with [CLS]/[SEP] under a tiny DeBERTa-v2 classifier, the shape of the paper's OpenAssistant
reward model (built here, offline)."""

from __future__ import annotations

import math

import pytest
import torch

from contract.plan import TrainingPlan
from tests.plans import model_plan, stage_plan
from trainables.stages import text_reward
from trainables.stages.rollout_prompts import rl_prompts
from trainables.stages.text_reward import (
    check_reward_model,
    retokenizing_reward_model,
    reward_encoding,
    reward_function,
    score_texts,
)
from tasks import load_examples
from trainables.tokenization import AnswerEncoder, chat_messages

TRAINING = TrainingPlan.from_dict({"adam_beta1": 0.9, "adam_beta2": 0.95, "weight_decay": 0.1, "lr_scheduler": "cosine",
                                    "warmup_steps": 0, "max_grad_norm": 1.0, "eval_batch_size": 8})
PROMPTS = ["muslims were looking for a reformation", "the only way to get rid of racism is to stop talking about it",
           "women are"]


def _deberta_reward(folder, data_dir, num_labels: int = 1) -> str:
    """A tiny DeBERTa-v2 sequence classifier with a WordPiece [CLS] a [SEP] b [SEP] tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, PreTrainedTokenizerFast

    corpus = [ex.prompt for ex in load_examples("toxigen_qa", "train", size=200, data_dir=data_dir)]
    raw = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=True)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    raw.decoder = decoders.WordPiece()
    raw.train_from_iterator(corpus, trainers.WordPieceTrainer(
        vocab_size=800, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False))
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", raw.token_to_id("[CLS]")), ("[SEP]", raw.token_to_id("[SEP]"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                        sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    torch.manual_seed(0)
    model = DebertaV2ForSequenceClassification(DebertaV2Config(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, num_labels=num_labels, pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def deberta_path(data_dir, tmp_path_factory) -> str:
    return _deberta_reward(tmp_path_factory.mktemp("deberta_rm"), data_dir)


def _reward(path: str):
    from trainables.stages.reward_model import load_reward_model

    torch.manual_seed(0)  # a causal LM folder gets a new random score head
    model, tokenizer = load_reward_model(path, model_dtype="float32")
    model.eval()
    return model, tokenizer


def _direct(model, tokenizer, prompt: str, response: str) -> float:
    """The reward model called on one text as its own card would: the pair for a [SEP]
    tokenizer (OpenAssistant's `tokenizer(question, answer)`; as a one-item batch, because a
    single call drops an empty answer where a batch keeps it as the pair (question, "")), else
    the one text."""
    enc = tokenizer([prompt], [response], return_tensors="pt") if tokenizer.sep_token else tokenizer(
        prompt + response, return_tensors="pt")
    with torch.no_grad():
        return float(model(**enc).logits[0, 0])


# ---------------------------------------------------------------- what the reward model reads


def test_reward_encoding_pairs_single_texts_and_conversations(deberta_path, family_model_path):
    _, pair = _reward(deberta_path)
    enc = reward_encoding(pair, ["women are", "a b"], [" strong", " c"], chat=False)
    tokens = pair.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    assert tokens[:4] == ["[CLS]", "women", "are", "[SEP]"] and tokens[-1] == "[SEP]" and tokens.count("[SEP]") == 2
    assert enc["input_ids"][0].tolist() == pair("women are", " strong")["input_ids"]

    _, sp = _reward(str(family_model_path("sentencepiece")))
    enc = reward_encoding(sp, ["women are", "a"], [" strong", " b"], chat=False)
    assert enc["input_ids"][0].tolist() == sp("women are strong")["input_ids"]  # its BOS first
    assert enc["input_ids"][0, 0].item() == sp.bos_token_id
    assert enc["attention_mask"][1].tolist()[-1] == 0  # right-padded
    # Too long: the start of the prompt goes, the response stays.
    full = sp("women are strong")["input_ids"]
    cut = reward_encoding(sp, ["women are"], [" strong"], max_length=4, chat=False)["input_ids"][0].tolist()
    assert len(cut) == 4 and cut[-2:] == full[-2:]
    assert sp.truncation_side == "right"  # the tokenizer is left as it was

    _, chat = _reward(str(family_model_path("chat")))
    enc = reward_encoding(chat, ["women are"], [" strong"], chat=True)
    rendered = chat.apply_chat_template(chat_messages("women are", " strong"), tokenize=False)
    assert enc["input_ids"][0].tolist() == chat(rendered, add_special_tokens=False)["input_ids"]


def test_rloo_reward_function_scores_plain_and_conversational_completions(family_model_path):
    model, tokenizer = _reward(str(family_model_path("chat")))
    score = reward_function(model, tokenizer, batch_size=16)
    plain = score(prompts=PROMPTS, completions=[" yes", " no", " maybe"], trainer_state=None)
    assert plain == pytest.approx(score_texts(model, tokenizer, PROMPTS, [" yes", " no", " maybe"], chat=False,
                                              batch_size=16))
    assert plain == pytest.approx([_direct(model, tokenizer, p, c) for p, c in zip(PROMPTS, [" yes", " no", " maybe"])],
                                  abs=1e-5)
    conversational = score(prompts=[chat_messages(p) for p in PROMPTS],
                           completions=[[{"role": "assistant", "content": c}] for c in ("yes", "no", "maybe")])
    assert conversational == pytest.approx(score_texts(model, tokenizer, PROMPTS, ["yes", "no", "maybe"], chat=True,
                                                       batch_size=16))


def test_an_unusable_reward_model_is_refused(data_dir, tmp_path, tiny_model_path):
    from transformers import AutoModelForSequenceClassification

    from trainables.models import load_tokenizer

    path = _deberta_reward(tmp_path / "two_labels", data_dir, num_labels=2)
    model = AutoModelForSequenceClassification.from_pretrained(path)
    tokenizer = load_tokenizer(path)
    with pytest.raises(ValueError, match="num_labels=2"):
        check_reward_model(model, tokenizer)
    policy = load_tokenizer(str(tiny_model_path))
    with pytest.raises(ValueError, match="num_labels=2"):
        retokenizing_reward_model(model, tokenizer, policy, PROMPTS, AnswerEncoder(policy).prompt_ids(PROMPTS),
                                  chat=False, batch_size=16)
    model.config.num_labels = 1
    tokenizer.pad_token = None
    with pytest.raises(ValueError, match="no pad token"):
        check_reward_model(model, tokenizer)


# ---------------------------------------------------------------- PPO: scores where PPOTrainer reads them


def _rollout_batch(tokenizer, prompt_ids: list[list[int]], responses: list[list[int]]) -> tuple[torch.Tensor, int]:
    """(query_responses, context_length) as PPOTrainer builds them: left-padded queries, then
    responses truncated after the first EOS and right-padded."""
    pad = tokenizer.pad_token_id
    context = max(len(p) for p in prompt_ids)
    width = max(len(r) for r in responses)
    rows = [[pad] * (context - len(p)) + p + r + [pad] * (width - len(r)) for p, r in zip(prompt_ids, responses)]
    return torch.tensor(rows), context


@pytest.mark.parametrize("policy_family,reward", [("bytelevel", "sentencepiece"), ("sentencepiece", "deberta"),
                                                 ("bosless", "sentencepiece"), ("chat", "deberta")])
def test_ppo_reward_reads_the_decoded_policy_text_and_scores_at_the_read_position(
        policy_family, reward, family_model_path, deberta_path, monkeypatch):
    from trl.experimental.utils import get_reward

    from trainables.models import load_tokenizer

    policy = load_tokenizer(str(family_model_path(policy_family)))
    encoder = AnswerEncoder(policy, chat=policy_family == "chat")
    model, tokenizer = _reward(deberta_path if reward == "deberta" else str(family_model_path(reward)))
    prompt_ids = encoder.prompt_ids(PROMPTS)
    eos, pad = policy.eos_token_id, policy.pad_token_id
    words = policy(" and that is all there is to it", add_special_tokens=False)["input_ids"]
    responses = [words[:3] + [eos],  # stopped by EOS (PPOTrainer pads what follows)
                 words,  # the full response length, no EOS
                 [eos]]  # an empty response
    query_responses, context = _rollout_batch(policy, prompt_ids, responses)
    adapter = retokenizing_reward_model(model, tokenizer, policy, PROMPTS, prompt_ids, chat=encoder.chat,
                                        batch_size=2)

    received = []
    encode = text_reward.reward_encoding

    def spy(tok, prompts, texts, **kwargs):
        received.extend(zip(prompts, texts))
        return encode(tok, prompts, texts, **kwargs)

    monkeypatch.setattr(text_reward, "reward_encoding", spy)
    with torch.no_grad():
        logits, scores, lengths = get_reward(adapter, query_responses, pad, context)

    # The text: the stage's prompt and the response decoded by the policy, pads and EOS dropped.
    decoded = [policy.decode(r, skip_special_tokens=True) for r in responses]
    assert decoded[0] == policy.decode(words[:3]) and decoded[2] == ""
    assert received == list(zip(PROMPTS, decoded))
    if not encoder.chat:  # a plain prompt is also what the policy's prompt ids decode to
        assert [policy.decode(p, skip_special_tokens=True) for p in prompt_ids] == PROMPTS
    # The scores: the reward model's own, on that text, at the positions PPOTrainer reads.
    expected = [_direct(model, tokenizer, p, r) for p, r in zip(PROMPTS, decoded)]
    assert scores.tolist() == pytest.approx(expected, abs=1e-5)
    rollouts = adapter.rollouts(query_responses, query_responses != pad)
    # The last token before the response's first pad: the EOS itself, unless EOS is the pad token.
    first_pad = [next((i for i, t in enumerate(r) if t == pad), len(r)) for r in responses]
    assert [r.position for r in rollouts] == lengths.tolist() == [context + k - 1 for k in first_pad]
    others = torch.ones_like(logits[..., 0], dtype=torch.bool)
    others[torch.arange(3), lengths] = False
    assert (logits[..., 0][others] == 0).all()


def test_a_rollout_that_starts_with_no_stage_prompt_is_an_error(tiny_model_path, family_model_path):
    from trainables.models import load_tokenizer

    policy = load_tokenizer(str(tiny_model_path))
    model, tokenizer = _reward(str(family_model_path("sentencepiece")))
    prompt_ids = AnswerEncoder(policy).prompt_ids(PROMPTS)
    adapter = retokenizing_reward_model(model, tokenizer, policy, PROMPTS[:1], prompt_ids[:1], chat=False,
                                        batch_size=16)
    batch, _ = _rollout_batch(policy, prompt_ids[1:2], [[policy.eos_token_id]])
    with pytest.raises(ValueError, match="none of the stage's prompts"):
        adapter.rollouts(batch, batch != policy.pad_token_id)


def test_value_model_from_policy_copies_the_backbone_under_a_zero_head(tiny_model_path):
    from trainables.models import load_model_and_tokenizer
    from trainables.stages.ppo import value_model_from_policy

    policy, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    value = value_model_from_policy(policy, tokenizer.pad_token_id)
    assert type(value).__name__ == "LlamaForSequenceClassification" and value.config.num_labels == 1
    theirs = policy.model.state_dict()
    assert all(torch.equal(p, theirs[n]) for n, p in value.model.state_dict().items())
    assert all((p == 0).all() for p in value.score.parameters())
    with torch.no_grad():
        next(value.model.parameters()).add_(1.0)  # a copy, not the policy's own tensors
    assert not torch.equal(next(value.model.parameters()), next(policy.model.parameters()))


def test_which_reward_models_read_the_policy_ids(tiny_model_path, family_model_path):
    from trainables.models import load_tokenizer
    from trainables.stages.ppo import reads_policy_ids

    policy = load_tokenizer(str(tiny_model_path))
    same, same_tok = _reward(str(tiny_model_path))
    other, other_tok = _reward(str(family_model_path("sentencepiece")))
    assert reads_policy_ids(same, same_tok, policy)
    assert not reads_policy_ids(other, other_tok, policy)


# ---------------------------------------------------------------- the stages, end to end


@pytest.mark.parametrize("method", ["ppo", "rloo"])
def test_online_rl_stage_trains_against_a_reward_model_with_another_tokenizer(method, tiny_model_path, data_dir,
                                                                             family_model_path, monkeypatch, tmp_path):
    from trainables.models import load_model_and_tokenizer
    from trainables.stages.ppo import run_ppo
    from trainables.stages.rloo import run_rloo

    calls = []
    score = text_reward.score_texts

    def spy(model, tokenizer, prompts, responses, **kwargs):
        calls.append((type(model).__name__, list(prompts), list(responses)))
        return score(model, tokenizer, prompts, responses, **kwargs)

    monkeypatch.setattr(text_reward, "score_texts", spy)
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    examples = load_examples("toxigen_qa", "train", size=16, data_dir=data_dir)
    stage = {"method": method, "task": "toxigen_qa", "learning_rate": 1e-3, "batch_size": 2, "steps": 2, "seed": 0,
             method: {"reward": {"model": str(family_model_path("sentencepiece"))}, "response_length": 4,
                      "num_ppo_epochs": 1, **({"num_generations": 2} if method == "rloo" else {})}}
    run = run_ppo if method == "ppo" else run_rloo
    outcome = run(model=model, tokenizer=tokenizer, stage=stage_plan(stage), examples=examples,
                  model_plan=model_plan(tiny_model_path, max_length=256), work_dir=str(tmp_path), training=TRAINING)
    assert [r["step"] for r in outcome.log_rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in outcome.log_rows)
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    # Every rollout was scored as text by the Llama-family reward model, on the stage's prompts.
    assert calls and {c[0] for c in calls} == {"LlamaForSequenceClassification"}
    stage_prompts = set(rl_prompts(examples, mode="statements"))
    assert all(set(c[1]) <= stage_prompts for c in calls)
    assert sum(len(c[1]) for c in calls) >= 2 * 2
