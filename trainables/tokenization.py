"""Scored as trained: the one place that turns task text into token ids.

Every path that tokenizes an answer goes through `AnswerEncoder`: option scoring
(trainables.evaluation.option_scoring, so evaluation after every stage and best-seed validation), the SFT, DPO
and reward-model data (trainables.stages), the curvature loss (trainables.curvature.lm) and the
over-length filters. Prompts that the model continues freely (generation, online RL) go through
`AnswerEncoder.prompt_ids`.

The rule. Option i of an example is written out as the text the model is trained on when i is
the answer, and that text is tokenized once, jointly: the option's *training sequence*.

- plain (base models, the paper's setting): prompt + answer_prefix + option, then EOS;
- chat (`model.chat_template`): the conversation user = prompt, assistant = answer_prefix +
  option (leading whitespace dropped), rendered by the tokenizer's chat template, as TRL's
  conversational prompt/completion data is rendered.

Three positions split it:

    [ prompt ........ | answer prefix ... | option ....... | EOS / end of turn ]
    0            loss_start          answer_start     answer_end          len(ids)

- loss_start: where the trainer's loss starts (TRL's completion mask): the length of the
  prompt's own encoding (chat: the user turn and the generation prompt).
- answer_start: the length of the encoding of the text before the option, trailing whitespace
  moved into the option (lm-evaluation-harness's `_encode_pair`), with the BOS the tokenizer
  adds (chat: the template writes it).
- answer_end: the length of the encoding of the text up to the end of the option.

An option is scored as the log-probability of ids[answer_start:answer_end] after
ids[:answer_start]: the very tokens, after the very tokens, that the trainer's loss covers when
that option is the answer. A tokenizer that encodes an option differently on its own (a
SentencePiece tokenizer turns " A." alone into '▁', '▁A', '.') changes nothing here, because an
option is never encoded on its own.

How a boundary is found in the one joint encoding: with a fast tokenizer, from its character
offsets (the first token that ends after the boundary's character; one tokenization per
option); otherwise from the separate encoding of the text before it (lm-eval's way: its length
when it is a prefix of the joint encoding, else their longest common prefix). Both agree
whenever the tokenizer does not merge across the boundary (tested on every tokenizer family);
where it does, both put the token that straddles it in the later part. Nothing is
re-tokenized or guessed.

A change of this rule bumps contract.plan.TOKENIZATION_VERSION (it enters the measurement keys,
so stored evaluations are measured again instead of reused).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from contract.plan import ModelPlan
from contract.problems import TokenizationError

IGNORE_INDEX = -100
"""Label of a token that carries no training loss (transformers' and TRL's convention)."""
CHAT_TEMPLATE_SETTINGS = ("auto", True, False)
# `chat_template: auto` uses the tokenizer's chat template only for a model whose name says it
# is a chat/instruct model: base models (Qwen2.5-0.5B, Llama-3-8B) often ship a template too.
_CHAT_NAME = re.compile(r"(?:^|[-_./])(chat|instruct|it)(?:$|[-_./0-9])", re.IGNORECASE)


def name_says_chat(model_name: str) -> bool:
    """Whether a model name marks a chat/instruct model: a word 'chat', 'instruct' or 'it'
    between separators (Llama-2-7b-chat-hf, Qwen2.5-0.5B-Instruct, gemma-2-2b-it)."""
    return bool(_CHAT_NAME.search(str(model_name)))


def chat_messages(prompt: str, answer: str | None = None) -> list[dict[str, str]]:
    """The conversation of a task example: user = the prompt, then (when given) assistant = the
    answer without its leading whitespace. The one shape scoring, TRL's conversational SFT data
    and the preflight all render."""
    messages = [{"role": "user", "content": prompt}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer.lstrip()})
    return messages


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def resolve_chat_template(setting: Any, model_name: str, tokenizer: Any = None, *, load=None) -> bool:
    """Whether a study's model is prompted through its chat template.

    setting: the study's `model.chat_template` (auto | true | false). auto = the tokenizer has a
    chat template and `name_says_chat(model_name)`. `tokenizer` (or `load()`, called only when
    the answer depends on it) gives the tokenizer. true without a template is an error.
    """
    if setting not in CHAT_TEMPLATE_SETTINGS or isinstance(setting, int) and not isinstance(setting, bool):
        raise TokenizationError(f"model.chat_template must be auto, true or false (got {setting!r})")
    if setting is False or (setting == "auto" and not name_says_chat(model_name)):
        return False
    if tokenizer is None:
        tokenizer = load() if load is not None else None
    if has_chat_template(tokenizer):
        return True
    if setting is True:
        raise TokenizationError(f"model.chat_template is true, but the tokenizer of {model_name} has no chat template "
                                "(tokenizer_config.json / chat_template.jinja); set model.chat_template: false")
    return False


@dataclass(frozen=True)
class Encoded:
    """One option of one example as the trainer sees it when that option is the answer."""

    ids: tuple[int, ...]  # the training sequence (EOS / end of turn included)
    loss_start: int  # ids[loss_start:] carry the training loss
    answer_start: int  # ids[answer_start:answer_end] are the option's scored tokens
    answer_end: int

    @property
    def context_ids(self) -> tuple[int, ...]:
        return self.ids[: self.answer_start]

    @property
    def answer_ids(self) -> tuple[int, ...]:
        return self.ids[self.answer_start : self.answer_end]

    @property
    def loss_ids(self) -> tuple[int, ...]:
        return self.ids[self.loss_start :]

    @property
    def scored_ids(self) -> tuple[int, ...]:
        """What option scoring feeds the model (its last token only as a target)."""
        return self.ids[: self.answer_end]


@dataclass(frozen=True)
class _Text:
    """An option's training text cut at the three boundaries (see the module docstring)."""

    prompt: str  # no loss
    context: str  # prompt + answer prefix (before the option); starts with `prompt`
    through_answer: str  # context + option
    full: str  # through_answer + what follows the option in the text (chat: end of turn)


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _boundary(separate: Sequence[int], joint: Sequence[int]) -> int:
    """Where the text encoded as `separate` ends inside `joint`: its length when it is a prefix
    (the usual case), else the longest common prefix (the straddling token goes after)."""
    if len(separate) <= len(joint) and tuple(joint[: len(separate)]) == tuple(separate):
        return len(separate)
    return common_prefix_length(separate, joint)


class AnswerEncoder:
    """Token ids of task examples for one tokenizer and prompt format (plain or chat)."""

    def __init__(self, tokenizer: Any, *, chat: bool = False, offsets: bool | None = None):
        """offsets: find boundaries from character offsets (one encoding per option; default for
        fast tokenizers) or from separate encodings of the text before each boundary (False)."""
        if chat and not has_chat_template(tokenizer):
            raise TokenizationError("chat format asked for, but the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.chat = bool(chat)
        self.use_offsets = bool(getattr(tokenizer, "is_fast", False)) if offsets is None else bool(offsets)
        self.head, self.tail = _added_special_tokens(tokenizer)
        self.eos_id = tokenizer.eos_token_id

    # -- text ----------------------------------------------------------------------------------

    def _render(self, messages: list[dict[str, str]], *, generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def prompt_text(self, prompt: str) -> str:
        """The text a model continues from: the prompt, or its user turn + generation prompt."""
        if not self.chat:
            return prompt
        return self._render(chat_messages(prompt), generation_prompt=True)

    def _texts(self, example: Any, option: str, generation_prompt: str | None = None) -> _Text:
        prefix = example.answer_prefix
        if not self.chat:
            prompt = example.prompt.rstrip()  # its trailing whitespace belongs to the completion
            before = example.prompt + prefix
            context = before.rstrip()
            through = before + option
            return _Text(prompt=prompt, context=context, through_answer=through, full=through)
        answer = prefix + option
        lead = len(answer) - len(answer.lstrip())
        content = answer[lead:]
        if not content:
            raise TokenizationError(f"{example.example_id}: option {option!r} leaves an empty assistant turn "
                                    "(answer prefix and option are only whitespace); it has no tokens to score")
        prompt = generation_prompt if generation_prompt is not None else self.prompt_text(example.prompt)
        full = self._render(chat_messages(example.prompt, content), generation_prompt=False)
        start = full.find(content, len(prompt)) if content and full.startswith(prompt) else -1
        if start < 0 or full[len(prompt) : start].strip():
            raise TokenizationError(
                f"{example.example_id}: the chat template does not render the assistant turn as the generation "
                f"prompt followed by the answer (rendered: {full[len(prompt) - 40 if len(prompt) > 40 else 0:][:200]!r}); "
                "it cannot be scored as trained. Set model.chat_template: false")
        option_at = start + max(0, len(prefix) - lead)
        end = start + len(content)
        # Trailing whitespace moves into the option (lm-eval), but never below the prompt: the
        # generation prompt's own newline is no loss token, so it is no scored token either.
        context = full[:option_at].rstrip()
        if len(context) < len(prompt):
            context = prompt
        return _Text(prompt=prompt, context=context, through_answer=full[:end], full=full)

    # -- ids -----------------------------------------------------------------------------------

    def _encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        if self.chat:  # the template writes BOS and the other special tokens as text
            return [list(ids) for ids in encoded]
        return [list(self.head) + list(ids) for ids in encoded]

    def prompt_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Encodings of prompts the model continues freely (generation, online RL)."""
        return self._encode_many([self.prompt_text(p) for p in prompts])

    def encode(self, examples: Sequence[Any], which: str | Sequence[Sequence[int]] = "all") -> list[list[Encoded]]:
        """Encoded options of each example: `which` = "all" (every option), "label" (the correct
        one) or, per example, the option indices wanted. Tokenizes in one batch call per text kind."""
        picks: list[list[int]] = []
        for i, ex in enumerate(examples):
            if which == "all":
                picks.append(list(range(len(ex.options))))
            elif which == "label":
                picks.append([ex.label])
            else:
                picks.append(list(which[i]))
        generation = [self.prompt_text(ex.prompt) if self.chat else None for ex in examples]
        texts = [[self._texts(ex, ex.options[o], generation[i]) for o in picks[i]] for i, ex in enumerate(examples)]
        flat = [t for per in texts for t in per]
        try:
            cut = self._cut_by_offsets(flat) if self.use_offsets else self._cut_by_encodings(texts)
        except _StraddledEnd as exc:
            where = next(f"{ex.example_id}, option {ex.options[o]!r}" for i, ex in enumerate(examples)
                         for o, t in zip(picks[i], texts[i]) if t is exc.text)
            raise TokenizationError(
                f"{where}: the chat template writes text right after the answer that the tokenizer merges with "
                f"its last token ({exc.text.full[len(exc.text.through_answer) - 6:len(exc.text.through_answer) + 6]!r}"
                "): that token's loss is not the option's alone, so it cannot be scored as trained. Use a template "
                "that ends the turn with a special token, or model.chat_template: false") from None
        out: list[list[Encoded]] = []
        k = 0
        for i, ex in enumerate(examples):
            row = []
            for o in picks[i]:
                row.append(self._checked(ex, o, cut[k]))
                k += 1
            out.append(row)
        return out

    def _cut_by_offsets(self, flat: Sequence[_Text]) -> list[Encoded]:
        """One encoding per option's text, with character offsets: the boundary at character c is
        the first token that ends after c (a token straddling c goes after it). Fast tokenizers."""
        batch = self.tokenizer([t.full for t in flat], add_special_tokens=False, return_offsets_mapping=True)
        head = [] if self.chat else list(self.head)
        out = []
        for t, ids, offsets in zip(flat, batch["input_ids"], batch["offset_mapping"]):
            ends = [end for _, end in offsets]

            def after(c: int) -> int:
                # Boundaries sit near the end of the text: scan back from it.
                i = len(ends)
                while i > 0 and ends[i - 1] > c:
                    i -= 1
                return len(head) + i

            full = head + list(ids)
            answer_end = after(len(t.through_answer))
            nxt = answer_end - len(head)  # the first token after the option, if any
            if nxt < len(offsets) and offsets[nxt][0] < len(t.through_answer) < offsets[nxt][1]:
                raise _StraddledEnd(t)
            if not self.chat and self.eos_id is not None:
                full.append(self.eos_id)
            out.append(Encoded(tuple(full), after(len(t.prompt)), min(after(len(t.context)), answer_end), answer_end))
        return out

    def _cut_by_encodings(self, texts: Sequence[Sequence[_Text]]) -> list[Encoded]:
        """Each boundary from a separate encoding of the text before it (lm-eval's `_encode_pair`):
        its length when it is a prefix of the joint encoding, else their common prefix. For
        tokenizers without character offsets (slow, Python ones)."""
        flat = [t for per in texts for t in per]
        # Per example, the prompt and context texts are the same for every option: encode once.
        heads = [per[0] for per in texts if per]
        prompt_ids = self._encode_many([t.prompt for t in heads])
        context_ids = self._encode_many([t.context for t in heads])
        full_ids = self._encode_many([t.full for t in flat])
        through_ids = self._encode_many([t.through_answer for t in flat]) if self.chat else None
        out: list[Encoded] = []
        k = 0
        for h, per in enumerate(p for p in texts if p):
            for _ in per:
                ids = full_ids[k]
                if self.chat:
                    answer_end = _boundary(through_ids[k], ids)
                    if answer_end < len(through_ids[k]):
                        raise _StraddledEnd(flat[k])
                else:
                    answer_end = len(ids)
                    if self.eos_id is not None:
                        ids = ids + [self.eos_id]
                loss_start = _boundary(prompt_ids[h], ids)
                answer_start = min(_boundary(context_ids[h], ids), answer_end)
                out.append(Encoded(tuple(ids), loss_start, answer_start, answer_end))
                k += 1
        return out

    def _checked(self, example: Any, option: int, enc: Encoded) -> Encoded:
        where = f"{example.example_id}, option {example.option_names[option]!r} ({example.options[option]!r})"
        if enc.answer_end <= enc.answer_start:
            raise TokenizationError(f"{where}: the option has no tokens of its own after the context; "
                                    "it cannot be scored (an empty option, or one the tokenizer merges into the context)")
        if enc.loss_start > enc.answer_start:
            raise TokenizationError(f"{where}: the prompt's encoding runs into the answer (loss would start at token "
                                    f"{enc.loss_start}, the option at {enc.answer_start})")
        return enc

    def training(self, examples: Sequence[Any]) -> list[Encoded]:
        """The correct option's training sequence of each example (SFT, curvature)."""
        return [per[0] for per in self.encode(examples, "label")]


class _StraddledEnd(Exception):
    """A token runs across the end of the option (chat text merged with it); see `encode`."""

    def __init__(self, text: _Text):
        super().__init__()
        self.text = text


def _added_special_tokens(tokenizer: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(ids the tokenizer puts before a text, ids it puts after) with add_special_tokens=True.

    The head (a BOS) starts every plain sequence, as in TRL and lm-eval; a tail (an EOS some
    tokenizers append) is never part of a prompt: training appends its own EOS after the answer.
    """
    probe = "Answer"
    with_special = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start : start + len(plain)] == plain:
            return tuple(with_special[:start]), tuple(with_special[start + len(plain) :])
    return (), ()


def as_encoder(tokenizer: Any) -> AnswerEncoder:
    """An AnswerEncoder as is; a bare tokenizer as the plain-text (base model) encoder."""
    return tokenizer if isinstance(tokenizer, AnswerEncoder) else AnswerEncoder(tokenizer)


def encoder_for(model: ModelPlan, tokenizer: Any) -> AnswerEncoder:
    """The encoder of a plan's model (whose `chat` the planner's caller resolved)."""
    return AnswerEncoder(tokenizer, chat=model.chat)
