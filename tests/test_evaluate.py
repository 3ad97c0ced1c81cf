"""Option scoring on a model whose preferences are known, and per-group accuracy by hand."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.evaluate import evaluate_examples, group_accuracy, option_scores
from trainables.tasks import Example

VOCAB = 128


class CharTokenizer:
    """One token per character (its code point); pad id 0."""

    pad_token_id = 0

    def __call__(self, text, add_special_tokens=True):
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
    scores = option_scores(BigramModel(_table()), CharTokenizer(), EXAMPLES, batch_size=8)
    z = math.log(math.exp(2) + 127)
    assert scores[0][0] == pytest.approx(2 - z - math.log(128), abs=1e-5)
    assert scores[0][1] == pytest.approx(-z - math.log(128), abs=1e-5)


def test_prediction_margin_and_group_accuracy():
    """Predictions: e1 → a (label a, correct), e2 → b (label a, wrong), e3 → b (label b, correct).
    all: 2/3; g1 = {e1, e2}: 1/2; g2 = {e2, e3}: 1/2. Margin of e2 = score(a) − score(b) = −3."""
    scored = evaluate_examples(BigramModel(_table()), CharTokenizer(), EXAMPLES, batch_size=2)
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
    from trainables.tasks import load_examples

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    examples = load_examples("arc_easy", "eval", size=6, data_dir=data_dir) + load_examples(
        "toxigen_qa", "eval", size=6, data_dir=data_dir)
    one = option_scores(model, tokenizer, examples, batch_size=1)
    many = option_scores(model, tokenizer, examples, batch_size=16)
    for a, b in zip(one, many):
        assert a == pytest.approx(b, abs=1e-4)
