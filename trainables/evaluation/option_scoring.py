"""Multiple-choice evaluation by option log-likelihood, per example and per group.

For each example the model scores every option's continuation after the answer prefix
(context = prompt + answer_prefix, e.g. "...Answer: The best answer is" + " A."): the score is
the sum of the option tokens' log-probabilities (lm-eval-harness "acc"). The prediction is
the best-scoring option; margin = score(label) − best score among the other options (> 0 iff
correct, ties aside).

What is scored, exactly, comes from trainables.tokenization (the one tokenization seam): an
option's tokens are the tail of the joint encoding of context + option, exactly the tokens the
trainer's loss covers when that option is the answer (plain text, or the chat template's
assistant turn). A sequence longer than max_length + 1 tokens is cut from the left (as
lm-eval does), so the model sees at most max_length tokens: ids = scored_ids[-(max_length + 1):],
and the score sums the last n of them (n = the option's length, at most len(ids) - 1), each
given everything before it.

Two ways to compute it, with equal results (to float rounding):

- shared context (the default for Hugging Face causal LMs): the options of an example form one
  *unit* whose head is the longest common prefix of their sequences (capped so no scored token
  is in it): the context, unless the tokenizer merged a context token with an option (then the
  head stops before that token and the rest is fed per option, unscored). The head runs through
  the model once, with its KV cache kept and only its last position's logits computed: they
  give every option's first remaining token. The cache is then copied once per option row, and
  one short forward pass over the remaining tokens (right-padded, positions continuing after
  the head) gives the others. A four-option ARC question costs one pass over its ~140-token
  context plus four one-token steps, instead of four full passes.
- full sequence (fallback: a model that is not a Hugging Face causal LM with a KV cache, or
  `share_context=False`): every (example, option) pair is one sequence; sequences are sorted
  by length and left-padded, so each batch is one forward pass and the scored tokens of every
  row sit in the last positions: we ask the model for only those logits (`logits_to_keep`).

Memory is bounded by batch_size in both: a shared-context batch holds at most batch_size
option rows (its units' options together; a unit with more options than that is a batch of
its own), so the copied caches take what batch_size full sequences would, and logits are kept
only for the positions scored (batch × 1 × vocab for the heads, rows × longest tail × vocab).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Sequence

from contract.schema import ACCURACY_METRIC, ALL, PRIMARY_GROUPING, PRIMARY_GROUPINGS
from trainables import timings
from trainables.evaluation.over_ranks import merged, my_batches
from trainables.tokenization import as_encoder, common_prefix_length

Facet = tuple[str, str]


@dataclass(frozen=True)
class ScoredExample:
    example_id: str
    groups: tuple[str, ...]
    label: int
    prediction: int
    scores: tuple[float, ...]
    label_name: str
    prediction_name: str
    facets: tuple[Facet, ...] = ()

    @property
    def correct(self) -> bool:
        return self.prediction == self.label

    @property
    def margin(self) -> float:
        others = [s for i, s in enumerate(self.scores) if i != self.label]
        return self.scores[self.label] - max(others) if others else 0.0


# ----------------------------------------------------------------------------- encoding


def encode_pairs(tokenizer: Any, examples: Sequence[Any], max_length: int) -> list[tuple[int, int, list[int], int]]:
    """(example index, option index, token ids, number of scored tokens) for every option.

    `tokenizer`: an AnswerEncoder (or a tokenizer, scored as plain text). The ids are the
    option's scored sequence (trainables.tokenization), cut from the left to max_length + 1
    tokens; the scored tokens are its last n.
    """
    pairs = []
    for ei, options in enumerate(as_encoder(tokenizer).encode(examples)):
        for oi, enc in enumerate(options):
            ids = list(enc.scored_ids[-(max_length + 1):])
            pairs.append((ei, oi, ids, max(0, min(len(enc.answer_ids), len(ids) - 1))))
    return pairs


@dataclass
class _Unit:
    """Options of one example that share their head (the tokens before every option's own)."""

    head: list[int]
    rows: list[tuple[int, int, list[int], int]]  # (example index, option index, rest tokens, scored at its end)


def _units(pairs: Iterable[tuple[int, int, list[int], int]]) -> list[_Unit]:
    """One unit per example: head = the longest common prefix of its options' sequences, capped
    before the first scored token of any of them. Without a common head (left truncation cut
    options of different lengths differently) each option is a unit of its own."""
    by_example: dict[int, list[tuple[int, int, list[int], int]]] = {}
    for pair in pairs:
        by_example.setdefault(pair[0], []).append(pair)
    units = []
    for rows in by_example.values():
        cap = min(len(ids) - n for _, _, ids, n in rows)
        shared = rows[0][2][:cap]
        for _, _, ids, _ in rows[1:]:
            shared = shared[: common_prefix_length(shared, ids)]
        if shared:
            units.append(_Unit(head=shared, rows=[(ei, oi, ids[len(shared):], n) for ei, oi, ids, n in rows]))
        else:
            units.extend(_Unit(head=ids[: len(ids) - n], rows=[(ei, oi, ids[len(ids) - n:], n)])
                         for ei, oi, ids, n in rows)
    return units


# ----------------------------------------------------------------------------- scoring


class _NoCache(Exception):
    """The model returned no usable KV cache: score full sequences instead."""


def _device(model: Any) -> Any:
    return next(model.parameters()).device


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def can_share_context(model: Any) -> bool:
    """Whether shared-context scoring applies: a Hugging Face decoder-only LM (which keeps a KV
    cache when asked). Anything else (a plain nn.Module, an encoder-decoder) is scored by full
    sequences."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    from transformers import PreTrainedModel

    return isinstance(model, PreTrainedModel)


def _full_sequence_scores(model: Any, tokenizer: Any, pairs: list, scores: list[list[float]], batch_size: int) -> None:
    import torch

    pairs = [p for p in pairs if p[3] > 0]  # nothing to score: the score stays 0
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][2]))
    device = _device(model)
    pad_id = _pad_id(tokenizer)
    # A Hugging Face model would otherwise build a KV cache of the whole batch for nothing.
    extra = {"use_cache": False} if can_share_context(model) else {}
    mine: dict[tuple[int, int], float] = {}
    for start in my_batches(range(0, len(order), batch_size)):  # this rank's share (evaluation.over_ranks)
        batch = [pairs[i] for i in order[start : start + batch_size]]
        keep = max(p[3] for p in batch)
        # The model reads ids[:-1]; its last `keep` positions predict the last `keep` tokens.
        input_ids, attention, positions = left_padded([ids[:-1] for _, _, ids, _ in batch], pad_id)
        targets = torch.tensor([ids[-keep:] if len(ids) > keep else [pad_id] * (keep - len(ids) + 1) + ids[1:]
                                for _, _, ids, _ in batch], dtype=torch.long)
        out = model(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            position_ids=positions.to(device),
            logits_to_keep=keep,
            **extra,
        )
        logprobs = torch.log_softmax(out.logits[:, -keep:].float(), dim=-1)
        token_lp = logprobs.gather(-1, targets.to(logprobs.device)[..., None])[..., 0]
        n_scored = torch.tensor([p[3] for p in batch], device=logprobs.device)
        scored = torch.arange(keep, device=logprobs.device)[None, :] >= (keep - n_scored)[:, None]
        sums = torch.where(scored, token_lp, 0.0).sum(-1).tolist()
        for (ei, oi, _, _), value in zip(batch, sums):
            mine[ei, oi] = float(value)
    for (ei, oi), value in merged(mine).items():
        scores[ei][oi] = value


def left_padded(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any, Any]:
    """(input_ids, attention_mask, position_ids) of left-padded token sequences: every row ends
    at the last column, and positions count real tokens only, so padding changes no logit."""
    import torch

    width = max(len(ids) for ids in sequences)
    input_ids = torch.tensor([[pad_id] * (width - len(ids)) + list(ids) for ids in sequences], dtype=torch.long)
    attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in sequences], dtype=torch.long)
    return input_ids, attention, (attention.cumsum(-1) - 1).clamp(min=0)


def _unit_batches(units: list[_Unit], batch_size: int) -> Iterable[list[_Unit]]:
    """Units sorted by head length, grouped so a batch has at most batch_size option rows."""
    batch: list[_Unit] = []
    rows = 0
    for unit in sorted(units, key=lambda u: len(u.head)):
        if batch and rows + len(unit.rows) > batch_size:
            yield batch
            batch, rows = [], 0
        batch.append(unit)
        rows += len(unit.rows)
    if batch:
        yield batch


def _shared_context_scores(model: Any, tokenizer: Any, units: list[_Unit], scores: list[list[float]], batch_size: int) -> None:
    import torch

    device = _device(model)
    pad_id = _pad_id(tokenizer)
    # Rows with nothing to score (max_length of 1) keep their score of 0.
    units = [_Unit(u.head, [r for r in u.rows if r[3] > 0]) for u in units if u.head]
    mine: dict[tuple[int, int], float] = {}
    for batch in my_batches(_unit_batches([u for u in units if u.rows], batch_size)):  # (evaluation.over_ranks)
        # 1. Every head once, left-padded; keep its cache and its last position's logits.
        head_ids, head_mask, positions = left_padded([u.head for u in batch], pad_id)
        out = model(
            input_ids=head_ids.to(device),
            attention_mask=head_mask.to(device),
            position_ids=positions.to(device),
            use_cache=True,
            logits_to_keep=1,
        )
        cache = getattr(out, "past_key_values", None)
        if cache is None or not hasattr(cache, "reorder_cache"):
            raise _NoCache()
        first_lp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [units, vocab]

        # 2. First remaining token of every option row, from its head's last logits (counted
        # only if it is scored: after a cross-boundary merge it may be an unscored context token).
        rows = [(b, ei, oi, rest, n) for b, unit in enumerate(batch) for ei, oi, rest, n in unit.rows]
        unit_of_row = torch.tensor([r[0] for r in rows], device=first_lp.device)
        first_tokens = torch.tensor([r[3][0] for r in rows], device=first_lp.device)
        first_scored = torch.tensor([len(r[3]) == r[4] for r in rows], device=first_lp.device)
        totals = torch.where(first_scored, first_lp[unit_of_row, first_tokens], 0.0)

        # 3. The rest of every row in one pass over rest[:-1], from a copy of the head's cache per row.
        long_rows = [i for i, r in enumerate(rows) if len(r[3]) > 1]
        if long_rows:
            span = max(len(rows[i][3]) for i in long_rows) - 1
            tail_in = torch.tensor([rows[i][3][:-1] + [pad_id] * (span - len(rows[i][3]) + 1) for i in long_rows],
                                   dtype=torch.long)
            targets = torch.tensor([rows[i][3][1:] + [0] * (span - len(rows[i][3]) + 1) for i in long_rows],
                                   dtype=torch.long)
            tail_mask = torch.tensor([[1] * (len(rows[i][3]) - 1) + [0] * (span - len(rows[i][3]) + 1)
                                      for i in long_rows], dtype=torch.long)
            # Target j (rest[j + 1]) is scored when it lies among the row's last n tokens.
            scored = torch.tensor([[len(rows[i][3]) - rows[i][4] <= j + 1 < len(rows[i][3]) for j in range(span)]
                                   for i in long_rows])
            which = torch.tensor([rows[i][0] for i in long_rows], dtype=torch.long)
            cache.reorder_cache(which.to(device))
            head_len = head_mask.sum(-1)[which]
            tail_pos = head_len[:, None] + torch.arange(span)[None, :]
            out = model(
                input_ids=tail_in.to(device),
                attention_mask=torch.cat([head_mask[which], tail_mask], dim=1).to(device),
                position_ids=tail_pos.to(device),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=span,
            )
            tail_lp = torch.log_softmax(out.logits.float(), dim=-1)
            token_lp = tail_lp.gather(-1, targets.to(tail_lp.device)[..., None])[..., 0]
            rest = torch.where(scored.to(tail_lp.device), token_lp, 0.0).sum(-1)
            totals = totals.index_add(0, torch.tensor(long_rows, device=totals.device), rest.to(totals.device))
        del cache, out
        for (_, ei, oi, _, _), value in zip(rows, totals.tolist()):
            mine[ei, oi] = float(value)
    for (ei, oi), value in merged(mine).items():
        scores[ei][oi] = value


def option_scores(model: Any, tokenizer: Any, examples: Sequence[Any], *, batch_size: int, max_length: int,
                  share_context: bool | None = None) -> list[list[float]]:
    """Sum log-probability of each option's continuation: scores[example][option].

    tokenizer: an AnswerEncoder (trainables.tokenization: plain or chat format), or a tokenizer
    (plain text).

    share_context: None (default) shares each example's context across its options when the
    model allows it (`can_share_context`), True requires it, False always scores full sequences.
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    encoder = as_encoder(tokenizer)
    tokenizer = encoder.tokenizer
    pairs = encode_pairs(encoder, examples, max_length)
    timings.count(tokens=sum(len(ids) for _, _, ids, _ in pairs))  # scored tokens (contract.schema.EVALUATE)
    scores: list[list[float]] = [[0.0] * len(ex.options) for ex in examples]
    if share_context and not can_share_context(model):
        raise ValueError("share_context=True needs a Hugging Face decoder-only model (see can_share_context)")
    shared = can_share_context(model) if share_context is None else bool(share_context)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if shared:
                try:
                    _shared_context_scores(model, tokenizer, _units(pairs), scores, batch_size)
                    return scores
                except _NoCache:
                    if share_context:
                        raise ValueError("share_context=True, but the model returned no KV cache") from None
            _full_sequence_scores(model, tokenizer, pairs, scores, batch_size)
    finally:
        model.train(was_training)
    return scores


def evaluate_examples(model: Any, tokenizer: Any, examples: Sequence[Any], *, batch_size: int, max_length: int,
                      share_context: bool | None = None) -> list[ScoredExample]:
    all_scores = option_scores(model, tokenizer, examples, batch_size=batch_size, max_length=max_length,
                               share_context=share_context)
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
                facets=tuple(tuple(f) for f in getattr(ex, "facets", ())),
            )
        )
    return out


# ----------------------------------------------------------------------------- grouped rows


def grouped_rows(metric: str, items: Iterable[tuple[Sequence[str], Sequence[Facet], bool]]) -> list[dict[str, Any]]:
    """Rows (metric, grouping, group, n, correct, accuracy, value) of a per-item yes/no outcome.

    items: (groups, facets, hit) per item. Rows: grouping ALL (group ALL) first, then grouping
    PRIMARY_GROUPING for each primary group (sorted), then one grouping per facet name (sorted)
    with a row per value (sorted); the values of contract.schema's evals table. An item with
    several groups counts toward each of them. correct = number of hits; accuracy = value = correct / n.
    """
    totals: dict[tuple[str, str], list[int]] = {(ALL, ALL): [0, 0]}
    for groups, facets, hit in items:
        keys = [(ALL, ALL), *((PRIMARY_GROUPING, g) for g in dict.fromkeys(groups)),
                *dict.fromkeys((str(name), str(value)) for name, value in facets)]
        for key in keys:
            n_c = totals.setdefault(key, [0, 0])
            n_c[0] += 1
            n_c[1] += int(bool(hit))

    def order(key: tuple[str, str]) -> tuple:
        grouping, group = key
        return (0 if grouping == ALL else 1 if grouping == PRIMARY_GROUPING else 2, grouping, group)

    rows = []
    for grouping, group in sorted(totals, key=order):
        n, correct = totals[(grouping, group)]
        share = correct / n if n else float("nan")
        rows.append({"metric": metric, "grouping": grouping, "group": group, "n": n, "correct": correct,
                     "accuracy": share, "value": share})
    return rows


def grouped_accuracy_rows(scored: Sequence[ScoredExample], examples: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    """Accuracy rows (metric "accuracy") over all examples, each primary group and each facet
    value (see `grouped_rows`). Groups and facets come from `examples` when given (same order
    as `scored`), else from the ScoredExamples themselves."""
    if examples is not None:
        if len(examples) != len(scored):
            raise ValueError(f"{len(scored)} scored examples but {len(examples)} examples")
        for s, ex in zip(scored, examples):
            if s.example_id != ex.example_id:
                raise ValueError(f"scored example {s.example_id!r} does not match example {ex.example_id!r}")
        sources: Sequence[Any] = examples
    else:
        sources = scored
    return grouped_rows(ACCURACY_METRIC, ((src.groups, getattr(src, "facets", ()), s.correct)
                                          for src, s in zip(sources, scored)))


def group_accuracy(scored: Sequence[ScoredExample]) -> list[dict[str, Any]]:
    """Rows (group, n, correct, accuracy): ALL first, then each group sorted (no facets).

    An example labelled with several groups counts toward each of them.
    """
    return [{"group": r["group"], "n": r["n"], "correct": r["correct"], "accuracy": r["accuracy"]}
            for r in grouped_rows(ACCURACY_METRIC, ((s.groups, (), s.correct) for s in scored))
            if r["grouping"] in PRIMARY_GROUPINGS]
