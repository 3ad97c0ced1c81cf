"""Option scoring on a model whose preferences are known, and per-group accuracy by hand."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.evaluation.option_scoring import evaluate_examples, group_accuracy, option_scores
from tasks import Example

VOCAB = 128


class CharTokenizer:
    """One token per character (its code point); pad id 0."""

    pad_token_id = 0
    eos_token_id = None

    def __call__(self, text, add_special_tokens=True):
        if isinstance(text, list):
            return {"input_ids": [[ord(c) for c in t] for t in text]}
        return {"input_ids": [ord(c) for c in text]}


class BigramModel(torch.nn.Module):
    """logits[t] = table[token t]: the next-token distribution depends only on the current token."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table)

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0):
        logits = self.table[input_ids]
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return type("Out", (), {"logits": logits})()


def _table() -> torch.Tensor:
    table = torch.zeros(VOCAB, VOCAB)
    table[ord("p"), ord("a")] = 2.0  # after 'p' the model prefers 'a'
    table[ord("q"), ord("b")] = 3.0  # after 'q' it prefers 'b'
    return table


def _example(eid, context_end, label, groups):
    return Example(example_id=eid, prompt="x" + context_end, answer_prefix="", options=("a.", "b."),
                   option_names=("a", "b"), label=label, groups=groups)


EXAMPLES = [
    _example("e1", "p", 0, ("g1",)),
    _example("e2", "q", 0, ("g1", "g2")),  # several groups: counts toward each
    _example("e3", "qq", 1, ("g2",)),      # longer context: exercises left padding
]


def test_scores_are_hand_computed_log_probabilities():
    """After 'p', logits are 2 at 'a' and 0 elsewhere: log p(a|p) = 2 − log(e² + 127).
    '.' always follows with logits all 0: log p(.|a) = −log 128. So score(e1, 'a.') =
    2 − log(e² + 127) − log 128 and score(e1, 'b.') = −log(e² + 127) − log 128."""
    scores = option_scores(BigramModel(_table()), CharTokenizer(), EXAMPLES, batch_size=8, max_length=512)
    z = math.log(math.exp(2) + 127)
    assert scores[0][0] == pytest.approx(2 - z - math.log(128), abs=1e-5)
    assert scores[0][1] == pytest.approx(-z - math.log(128), abs=1e-5)


def test_prediction_margin_and_group_accuracy():
    """Predictions: e1 → a (label a, correct), e2 → b (label a, wrong), e3 → b (label b, correct).
    all: 2/3; g1 = {e1, e2}: 1/2; g2 = {e2, e3}: 1/2. Margin of e2 = score(a) − score(b) = −3."""
    scored = evaluate_examples(BigramModel(_table()), CharTokenizer(), EXAMPLES, batch_size=2, max_length=512)
    assert [s.prediction_name for s in scored] == ["a", "b", "b"]
    assert [s.correct for s in scored] == [True, False, True]
    assert scored[1].margin == pytest.approx(-3.0, abs=1e-5)
    rows = {r["group"]: r for r in group_accuracy(scored)}
    assert (rows["all"]["n"], rows["all"]["correct"]) == (3, 2)
    assert (rows["g1"]["n"], rows["g1"]["correct"], rows["g1"]["accuracy"]) == (2, 1, 0.5)
    assert (rows["g2"]["n"], rows["g2"]["correct"]) == (2, 1)
    assert list(rows) == ["all", "g1", "g2"]


def test_batching_does_not_change_scores_on_the_tiny_llama(tiny_model_path, data_dir):
    """Left padding with explicit position ids must give the same scores as one sequence at a time."""
    from trainables.models import load_model_and_tokenizer
    from tasks import load_examples

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    examples = load_examples("arc_easy", "eval", size=6, data_dir=data_dir) + load_examples(
        "toxigen_qa", "eval", size=6, data_dir=data_dir)
    one = option_scores(model, tokenizer, examples, batch_size=1, max_length=512)
    many = option_scores(model, tokenizer, examples, batch_size=16, max_length=512)
    for a, b in zip(one, many):
        assert a == pytest.approx(b, abs=1e-4)


# ----------------------------------------------------------------------------- shared-context scoring


@pytest.fixture(scope="module")
def tiny(tiny_model_path):
    from trainables.models import load_model_and_tokenizer

    return load_model_and_tokenizer(str(tiny_model_path), dtype="float32")


@pytest.fixture(scope="module")
def real_examples(data_dir):
    """ARC questions with 4, 3 and 5 options and ToxiGenQA statements (options of 2 and 3 tokens)."""
    from tasks import load_examples

    arc = load_examples("arc_easy", "eval", data_dir=data_dir, option_counts=[3, 4, 5])
    odd = [ex for ex in arc if len(ex.options) == 3][:2] + [ex for ex in arc if len(ex.options) == 5][:2]
    assert sorted(len(ex.options) for ex in odd) == [3, 3, 5, 5]
    return arc[:8] + odd + load_examples("toxigen_qa", "eval", data_dir=data_dir, limit=8)


def _predictions(scores):
    return [max(range(len(row)), key=lambda i: (row[i], -i)) for row in scores]


@pytest.mark.parametrize("max_length", [512, 48, 3])
def test_shared_context_scores_equal_full_sequence_scores(tiny, real_examples, max_length):
    """Shared-context scores (one pass over each context, tails from its KV cache) equal the
    full-sequence scores, predictions included: without truncation, with contexts cut from
    the left (48 tokens: ToxiGenQA's 2- and 3-token options then keep different contexts), and
    with almost nothing left of the context (3 tokens)."""
    model, tokenizer = tiny
    if max_length == 48:  # the cut really happens
        assert all(len(tokenizer(ex.prompt + ex.answer_prefix)["input_ids"]) > 48 for ex in real_examples)
    full = option_scores(model, tokenizer, real_examples, batch_size=8, max_length=max_length, share_context=False)
    shared = option_scores(model, tokenizer, real_examples, batch_size=8, max_length=max_length, share_context=True)
    for a, b in zip(full, shared):
        assert len(a) == len(b)
        assert a == pytest.approx(b, abs=1e-4)
    assert _predictions(full) == _predictions(shared)


def test_shared_context_handles_shared_first_tokens_and_small_batches(tiny, real_examples):
    """Options that share their first tokens, and a batch size below an example's option count."""
    model, tokenizer = tiny
    base = real_examples[-1]
    options = (" not toxic.", " not sure.", " not toxic at all.", " toxic.", " not")
    examples = [Example(example_id=f"shared/{i}", prompt=ex.prompt, answer_prefix=ex.answer_prefix, options=options,
                        option_names=tuple(o.strip() for o in options), label=i % len(options))
                for i, ex in enumerate([base, real_examples[0]])]
    assert len({tuple(tokenizer(o, add_special_tokens=False)["input_ids"][:1]) for o in options[:3]}) == 1
    full = option_scores(model, tokenizer, examples, batch_size=3, share_context=False, max_length=512)
    for batch_size in (1, 2, 64):
        shared = option_scores(model, tokenizer, examples, batch_size=batch_size, share_context=True, max_length=512)
        for a, b in zip(full, shared):
            assert a == pytest.approx(b, abs=1e-4)


def test_default_scoring_runs_each_context_once_within_the_batch_size(tiny, real_examples):
    """The default on a Hugging Face model is shared-context scoring: the model sees each
    context once (a fraction of the tokens one sequence per option needs), and no forward pass
    has more than batch_size rows."""
    model, tokenizer = tiny
    seen = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    try:
        default = evaluate_examples(model, tokenizer, real_examples, batch_size=8, max_length=512)
        shared_shapes, seen[:] = list(seen), []
        full = evaluate_examples(model, tokenizer, real_examples, batch_size=8, share_context=False, max_length=512)
        full_shapes = list(seen)
    finally:
        hook.remove()
    assert [s.prediction for s in default] == [s.prediction for s in full]
    assert max(rows for rows, _ in shared_shapes) <= 8
    tokens = lambda shapes: sum(rows * width for rows, width in shapes)  # noqa: E731
    assert tokens(shared_shapes) < 0.4 * tokens(full_shapes)


def test_models_without_a_cache_fall_back_to_full_sequences():
    model = BigramModel(_table())
    assert option_scores(model, CharTokenizer(), EXAMPLES, batch_size=32, max_length=512) == option_scores(
        model, CharTokenizer(), EXAMPLES, batch_size=32, max_length=512, share_context=False)
    with pytest.raises(ValueError, match="share_context=True"):
        option_scores(model, CharTokenizer(), EXAMPLES, share_context=True, batch_size=32, max_length=512)


# ----------------------------------------------------------------------------- grouped rows


def test_grouped_accuracy_rows_cover_all_groups_and_facets():
    """e1 (g1; condition=ambig) correct, e2 (g1, g2; condition=disambig) wrong, e3 (g2;
    condition=ambig, category=x) correct."""
    from trainables.evaluation.option_scoring import grouped_accuracy_rows

    examples = [
        Example("e1", "xp", "", ("a.", "b."), ("a", "b"), 0, ("g1",), (("condition", "ambig"),)),
        Example("e2", "xq", "", ("a.", "b."), ("a", "b"), 0, ("g1", "g2"), (("condition", "disambig"),)),
        Example("e3", "xqq", "", ("a.", "b."), ("a", "b"), 1, ("g2",), (("condition", "ambig"), ("category", "x"))),
    ]
    scored = evaluate_examples(BigramModel(_table()), CharTokenizer(), examples, batch_size=32, max_length=512)
    assert scored[2].facets == (("condition", "ambig"), ("category", "x"))
    rows = grouped_accuracy_rows(scored, examples)
    got = [(r["metric"], r["grouping"], r["group"], r["n"], r["correct"]) for r in rows]
    assert got == [
        ("accuracy", "all", "all", 3, 2),
        ("accuracy", "group", "g1", 2, 1),
        ("accuracy", "group", "g2", 2, 1),
        ("accuracy", "category", "x", 1, 1),
        ("accuracy", "condition", "ambig", 2, 2),
        ("accuracy", "condition", "disambig", 1, 0),
    ]
    assert all(r["accuracy"] == r["value"] == r["correct"] / r["n"] for r in rows)
    assert grouped_accuracy_rows(scored) == rows  # groups and facets carried by the ScoredExamples
    with pytest.raises(ValueError):
        grouped_accuracy_rows(scored, examples[::-1])
    # The old per-group rows are unchanged: no facets, no metric/grouping keys.
    assert group_accuracy(scored) == [
        {"group": "all", "n": 3, "correct": 2, "accuracy": 2 / 3},
        {"group": "g1", "n": 2, "correct": 1, "accuracy": 0.5},
        {"group": "g2", "n": 2, "correct": 1, "accuracy": 0.5},
    ]


def test_shared_heads_stop_where_options_diverge_and_unscored_tokens_are_fed_not_counted(tiny):
    """A tokenizer that merged the last context token with one option gives sequences that share
    only part of the context: the unit's head is their longest common prefix, and the context
    tokens after it are fed per option but not scored. Scores equal full-sequence scoring."""
    from trainables.evaluation.option_scoring import _full_sequence_scores, _shared_context_scores, _units

    model, tokenizer = tiny
    context = tokenizer("Instructions: answer.\nAnswer: The best answer is")["input_ids"]
    pairs = [
        (0, 0, context + [40, 41], 2),        # the plain case: head = context
        (0, 1, context[:-1] + [42, 43, 44], 2),  # last context token merged away: 42 is unscored
        (0, 2, context + [45], 1),
        (1, 0, context[:3] + [50, 51], 1),    # another example: its options differ before the scored token
        (1, 1, context[:3] + [52, 53], 1),
    ]
    units = _units(pairs)
    assert [len(u.head) for u in units] == [len(context) - 1, 3]  # 50 vs 52: unscored, not shared
    assert units[0].rows[0][2] == [context[-1], 40, 41] and units[0].rows[1][2] == [42, 43, 44]
    shared = [[0.0] * 3, [0.0] * 2]
    full = [[0.0] * 3, [0.0] * 2]
    with torch.inference_mode():
        _shared_context_scores(model, tokenizer, units, shared, batch_size=8)
        _full_sequence_scores(model, tokenizer, pairs, full, batch_size=8)
    for a, b in zip(shared, full):
        assert a == pytest.approx(b, abs=1e-4)
    assert all(s < 0 for row in shared for s in row)
