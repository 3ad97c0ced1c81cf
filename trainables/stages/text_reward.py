"""Rewards from a reward model that reads text: the rollout is handed over as (prompt, response).

The online-RL stages generate with the policy's tokenizer. A reward model trained elsewhere
reads another vocabulary (the paper's OpenAssistant/reward-model-deberta-v3-large-v2 is a
DeBERTa), so it is given each rollout as text and encodes that text itself:

  prompt    the stage's own prompt text (not a decoding of the policy's prompt ids: for a chat
            policy those ids hold the policy's chat template, which is no part of the question);
  response  the generated ids decoded by the policy's tokenizer, pads and special tokens (the
            EOS that ended the response, chat end-of-turn tokens) dropped, as TRL decodes
            completions for its reward models.

`score_texts` is the one place a reward model scores text. RLOO calls it for every completion
(`reward_function`); PPO calls it through `RetokenizingRewardModel` whenever the reward model
does not read the policy's token ids, so both stages give a reward model the same input.

How the pair becomes the reward model's input (`reward_encoding`):
  - a tokenizer with a separator token (BERT-style cross-encoders trained on question/answer
    pairs, e.g. OpenAssistant's DeBERTa): the pair, encoded as that model card does,
    `tokenizer(question, answer)` = [CLS] prompt [SEP] response [SEP];
  - otherwise, for a chat policy (conversational prompts) whose reward tokenizer has a chat
    template: the conversation user = prompt, assistant = response in the reward tokenizer's
    template (TRL's rule for conversational data);
  - otherwise: prompt + response as one text with the reward tokenizer's own special tokens (a
    Llama-style reward model gets its BOS, as the reward models trained here had in training).
Inputs longer than the reward model takes are cut from the prompt's start (pairs: the longer
part first), so the response being judged is kept.

A change of this input bumps contract.plan.REWARD_INPUT_VERSION (it enters the stage keys of
stages whose reward model reads text, so they are trained again instead of reused).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

from trainables.tokenization import chat_messages, has_chat_template

# Above this a tokenizer's model_max_length is transformers' "no limit" placeholder.
_NO_LIMIT = 1_000_000


def check_reward_model(model: Any, tokenizer: Any, name: str = "reward model") -> None:
    """Refuse a model that cannot give one scalar reward per text of a batch."""
    labels = getattr(model.config, "num_labels", None)
    if labels != 1:
        raise ValueError(f"{name}: a reward model gives one score per text (num_labels=1); this one has "
                         f"num_labels={labels}")
    if tokenizer.pad_token_id is None:
        raise ValueError(f"{name}: its tokenizer has no pad token (nor an EOS to pad with), so texts cannot be "
                         "scored in batches")


def reward_max_length(model: Any, tokenizer: Any) -> int | None:
    """The longest input the reward model takes: its tokenizer's or position table's limit."""
    limits = [n for n in (getattr(tokenizer, "model_max_length", None),
                          getattr(model.config, "max_position_embeddings", None))
              if isinstance(n, int) and 0 < n < _NO_LIMIT]
    return min(limits) if limits else None


def reward_encoding(tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], *, chat: bool,
                    max_length: int | None = None) -> Any:
    """The reward model's batch for (prompt, response) pairs, right-padded (module docstring)."""
    common = {"return_tensors": "pt", "padding": True, "padding_side": "right",
              "truncation": max_length is not None, "max_length": max_length}
    if tokenizer.sep_token is not None:
        return tokenizer(list(prompts), list(responses), **common)
    if chat and has_chat_template(tokenizer):
        texts = [tokenizer.apply_chat_template(chat_messages(p, r), tokenize=False) for p, r in zip(prompts, responses)]
        special = False  # the template writes them
    else:
        texts, special = [p + r for p, r in zip(prompts, responses)], True
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"  # the response is at the end
    try:
        return tokenizer(texts, add_special_tokens=special, **common)
    finally:
        tokenizer.truncation_side = side


def score_texts(model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], *, chat: bool,
                batch_size: int) -> list[float]:
    """The reward model's scalar score of each (prompt, response), in order."""
    import torch

    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    device = next(model.parameters()).device
    max_length = reward_max_length(model, tokenizer)
    scores: list[float] = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            batch = reward_encoding(tokenizer, prompts[i:i + batch_size], responses[i:i + batch_size], chat=chat,
                                    max_length=max_length)
            out = model(**{k: v.to(device) for k, v in batch.items()})
            scores.extend(out.logits[:, 0].float().cpu().tolist())
    return scores


# ------------------------------------------------------------------------------ RLOO


def _content(item: str | list[dict[str, str]]) -> str:
    """A plain prompt / completion, or the text of a conversational one's (last) message."""
    return item if isinstance(item, str) else item[-1]["content"]


def reward_function(model: Any, tokenizer: Any, *, batch_size: int):
    """An RLOOTrainer reward function that scores each completion with `score_texts`."""
    def reward_model(prompts: list, completions: list, **_: Any) -> list[float]:
        chat = bool(prompts) and not isinstance(prompts[0], str)
        return score_texts(model, tokenizer, [_content(p) for p in prompts], [_content(c) for c in completions],
                           chat=chat, batch_size=batch_size)

    return reward_model


# ------------------------------------------------------------------------------ PPO


@dataclass(frozen=True)
class Rollout:
    """One PPO rollout as the reward model sees it, and where PPOTrainer reads its score."""

    prompt: str
    response: str
    position: int  # the last non-pad token of the response (of the prompt when the response is empty)


def _marked(ids: Sequence[int], pad_id: int | None) -> tuple[int | None, ...]:
    """Ids with pads as None and leading pads dropped: a prompt as it sits in a left-padded row."""
    marked = [None if t == pad_id else t for t in ids]
    start = next((i for i, t in enumerate(marked) if t is not None), len(marked))
    return tuple(marked[start:])


def retokenizing_reward_model(reward_model: Any, reward_tokenizer: Any, policy_tokenizer: Any,
                              prompts: Sequence[str], prompt_ids: Sequence[Sequence[int]], *, chat: bool,
                              batch_size: int) -> Any:
    """A `RetokenizingRewardModel` for these prompts (the texts and the policy ids of the
    stage's dataset, in the same order); see that class."""
    return _retokenizing_class()(reward_model, reward_tokenizer, policy_tokenizer, prompts, prompt_ids,
                                 chat=chat, batch_size=batch_size)


@functools.cache
def _retokenizing_class():
    """The module classes, built on first use (torch is imported only by the stages that train)."""
    import torch
    from transformers.modeling_outputs import BaseModelOutput

    class RolloutScorer(torch.nn.Module):
        """The "backbone": one hidden unit per position, holding each row's reward at the
        position PPOTrainer reads and 0 elsewhere."""

        def __init__(self, reward_model, reward_tokenizer, policy_tokenizer, prompts, prompt_ids, chat, batch_size):
            super().__init__()
            self.reward_model = reward_model
            self.reward_tokenizer = reward_tokenizer
            self.policy_tokenizer = policy_tokenizer
            self.chat = bool(chat)
            self.batch_size = int(batch_size)
            pad = policy_tokenizer.pad_token_id
            self.prompts: dict[tuple[int | None, ...], str] = {}
            for text, ids in zip(prompts, prompt_ids, strict=True):
                self.prompts.setdefault(_marked(ids, pad), text)
            # Longest first: a prompt whose ids begin another prompt's must not cut that one short.
            self.lengths = sorted({len(k) for k in self.prompts}, reverse=True)

        def rollouts(self, input_ids, attention_mask) -> list[Rollout]:
            out = []
            for ids, keep in zip(input_ids.tolist(), attention_mask.bool().tolist()):
                row = [t if k else None for t, k in zip(ids, keep)]
                start = next((i for i, t in enumerate(row) if t is not None), len(row))
                n, prompt = next(((n, self.prompts[key]) for n in self.lengths
                                  if (key := tuple(row[start:start + n])) in self.prompts), (0, None))
                if prompt is None:
                    raise ValueError("PPO reward: a rollout that begins with none of the stage's prompts "
                                     f"({self.policy_tokenizer.decode([t for t in row if t is not None])[:120]!r})")
                end = start + n
                # PPOTrainer reads the score before the response's first pad (after truncating at EOS).
                stop = next((i for i in range(end, len(row)) if row[i] is None), len(row))
                response = self.policy_tokenizer.decode(row[end:stop], skip_special_tokens=True)
                out.append(Rollout(prompt=prompt, response=response, position=stop - 1))
            return out

        def forward(self, input_ids, attention_mask=None, **_):
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
            rollouts = self.rollouts(input_ids, attention_mask)
            scores = score_texts(self.reward_model, self.reward_tokenizer, [r.prompt for r in rollouts],
                                 [r.response for r in rollouts], chat=self.chat, batch_size=self.batch_size)
            hidden = torch.zeros(*input_ids.shape, 1, dtype=torch.float32, device=input_ids.device)
            rows = torch.arange(len(rollouts), device=input_ids.device)
            positions = torch.tensor([r.position for r in rollouts], device=input_ids.device)
            hidden[rows, positions, 0] = torch.tensor(scores, dtype=torch.float32, device=input_ids.device)
            return BaseModelOutput(last_hidden_state=hidden, hidden_states=(hidden,))

    class RetokenizingRewardModel(torch.nn.Module):
        """A text reward model in the shape TRL 1.12's PPOTrainer scores with.

        PPOTrainer's `get_reward(model, query_responses, pad_token_id, context_length)` calls
        `getattr(model, model.base_model_prefix)(input_ids=..., attention_mask=..., ...)` with
        pads zeroed and masked, applies `model.score` to `hidden_states[-1]`, and reads each row
        at its last token before the response's first pad. Here the backbone finds each row's
        prompt among the stage's prompts (its ids after the left padding), decodes the response
        up to that first pad, scores the pair with `score_texts`, and puts the score at exactly
        that position; `score` is the identity.
        """

        base_model_prefix = "backbone"

        def __init__(self, reward_model, reward_tokenizer, policy_tokenizer, prompts, prompt_ids, *, chat,
                     batch_size):
            super().__init__()
            check_reward_model(reward_model, reward_tokenizer)
            self.backbone = RolloutScorer(reward_model, reward_tokenizer, policy_tokenizer, prompts, prompt_ids,
                                          chat, batch_size)
            self.score = torch.nn.Identity()

        def rollouts(self, input_ids, attention_mask) -> list[Rollout]:
            """What the reward model is given for each row, and where its score goes."""
            return self.backbone.rollouts(input_ids, attention_mask)

        def forward(self, input_ids, attention_mask=None, **kwargs):
            return self.score(self.backbone(input_ids=input_ids, attention_mask=attention_mask).hidden_states[-1])

    return RetokenizingRewardModel
