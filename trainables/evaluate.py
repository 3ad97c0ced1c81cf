"""Multiple-choice evaluation by option log-likelihood, per example and per group.

For each example the model scores every option's continuation after the answer prefix
(context = prompt + answer_prefix, e.g. "...Answer: The best answer is" + " A."): the score is
the sum of the continuation tokens' log-probabilities (lm-eval-harness "acc"). The prediction is
the best-scoring option; margin = score(label) − best score among the other options (> 0 iff
correct, ties aside).

Batching: every (example, option) pair is one sequence; sequences are sorted by length and
left-padded, so each batch is one forward pass and the continuation tokens of every row sit
in the last positions: we ask the model for only those logits (`logits_to_keep`), which keeps
memory at batch × longest-continuation × vocab instead of × sequence length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class ScoredExample:
    example_id: str
    groups: tuple[str, ...]
    label: int
    prediction: int
    scores: tuple[float, ...]
    label_name: str
    prediction_name: str

    @property
    def correct(self) -> bool:
        return self.prediction == self.label

    @property
    def margin(self) -> float:
        others = [s for i, s in enumerate(self.scores) if i != self.label]
        return self.scores[self.label] - max(others) if others else 0.0


def encode_pairs(tokenizer: Any, examples: Sequence[Any], max_length: int) -> list[tuple[int, int, list[int], int]]:
    """(example index, option index, token ids, continuation length) for every option.

    Context and continuation are tokenized separately and concatenated, so the continuation's
    tokens are exactly those scored; over-long contexts are cut from the left.
    """
    pairs = []
    for ei, ex in enumerate(examples):
        context = tokenizer(ex.prompt + ex.answer_prefix, add_special_tokens=True)["input_ids"]
        for oi, option in enumerate(ex.options):
            cont = tokenizer(option, add_special_tokens=False)["input_ids"]
            ids = (context + cont)[-max_length:]
            pairs.append((ei, oi, ids, min(len(cont), len(ids) - 1)))
    return pairs


def option_scores(model: Any, tokenizer: Any, examples: Sequence[Any], *, batch_size: int = 32, max_length: int = 512) -> list[list[float]]:
    """Sum log-probability of each option's continuation: scores[example][option]."""
    import torch

    pairs = encode_pairs(tokenizer, examples, max_length)
    scores: list[list[float]] = [[0.0] * len(ex.options) for ex in examples]
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][2]))
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = [pairs[i] for i in order[start : start + batch_size]]
                width = max(len(p[2]) for p in batch)
                keep = max(p[3] for p in batch) + 1
                input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                for row, (_, _, ids, _) in enumerate(batch):
                    input_ids[row, width - len(ids) :] = torch.tensor(ids)
                    attention[row, width - len(ids) :] = 1
                positions = (attention.cumsum(-1) - 1).clamp(min=0)
                out = model(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    position_ids=positions.to(device),
                    logits_to_keep=keep,
                )
                # logits[:, j] predicts the token at position width - keep + j + 1.
                logprobs = torch.log_softmax(out.logits.float(), dim=-1)
                for row, (ei, oi, ids, n_cont) in enumerate(batch):
                    targets = torch.tensor(ids[-n_cont:], device=logprobs.device)
                    preds = logprobs[row, keep - 1 - n_cont : keep - 1]
                    scores[ei][oi] = float(preds.gather(-1, targets[:, None]).sum())
    finally:
        model.train(was_training)
    return scores


def evaluate_examples(model: Any, tokenizer: Any, examples: Sequence[Any], *, batch_size: int = 32, max_length: int = 512) -> list[ScoredExample]:
    all_scores = option_scores(model, tokenizer, examples, batch_size=batch_size, max_length=max_length)
    out = []
    for ex, scores in zip(examples, all_scores):
        # Ties go to the first option (deterministic).
        pred = max(range(len(scores)), key=lambda i: (scores[i], -i))
        out.append(
            ScoredExample(
                example_id=ex.example_id,
                groups=tuple(ex.groups),
                label=ex.label,
                prediction=pred,
                scores=tuple(scores),
                label_name=ex.option_names[ex.label],
                prediction_name=ex.option_names[pred],
            )
        )
    return out


def group_accuracy(scored: Sequence[ScoredExample]) -> list[dict[str, Any]]:
    """Rows (group, n, correct, accuracy): 'all' first, then each group sorted.

    An example labelled with several groups counts toward each of them (DESIGN.md).
    """
    totals: dict[str, list[int]] = {"all": [0, 0]}
    for s in scored:
        for group in ("all", *s.groups):
            n_c = totals.setdefault(group, [0, 0])
            n_c[0] += 1
            n_c[1] += int(s.correct)
    rows = []
    for group in ["all", *sorted(g for g in totals if g != "all")]:
        n, correct = totals[group]
        rows.append({"group": group, "n": n, "correct": correct, "accuracy": correct / n if n else float("nan")})
    return rows
