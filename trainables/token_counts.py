"""Token counts of what a study's stages will train and score, for the cost plan (`study plan`).

Counts are taken the way the engine tokenizes (trainables.tokenization, the one seam), from the
same example sets the chain loads (trainables.chain: a stage's training subsample, the eval
sets, best-seed validation samples), without loading any weights:

- training: the correct option's training sequence of each example (prompt + answer + EOS);
  examples longer than max_length are dropped, as SFT drops them (`stages/sft.py`), so
  `examples` is what a stage record calls n_train_examples;
- option scoring: every option's scored sequence (`Encoded.scored_ids`), cut from the left to
  max_length + 1 tokens as option scoring cuts it: each option is counted as its whole
  sequence, whatever the shared-context scoring saves by running a context once;
- generation (generated answers, safety continuations): the prompt (cut from the left to
  max_length - max_new_tokens tokens, as generation cuts it) plus max_new_tokens, an upper
  bound (a row that emits EOS early stops early).

Without the model's tokenizer on this machine (a Hub model not downloaded) tokens are
estimated from characters (`chars_per_token`) and marked `estimated`; nothing is downloaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from contract.plan import StagePlan, TrialPlan


@dataclass(frozen=True)
class SetCount:
    """One set of sequences: how many examples, and their non-padding tokens in total."""

    examples: int
    tokens: int
    estimated: bool = False
    """Tokens from characters per token (no tokenizer), not from the model's tokenizer."""
    upper_bound: bool = False
    """Generation: max_new_tokens counted for every row."""


class TokenCounter:
    """Counts for the example sets of a study's plans, from its model's tokenizer (or estimated
    from characters when `tokenizer` is None). Loaded sets are cached per selection."""

    def __init__(self, tokenizer: Any | None, *, chat: bool, chars_per_token: float):
        self.encoder = None
        if tokenizer is not None:
            from trainables.tokenization import AnswerEncoder

            self.encoder = AnswerEncoder(tokenizer, chat=chat)
        self.chars_per_token = float(chars_per_token)
        self._cache: dict[Any, Any] = {}

    @property
    def estimated(self) -> bool:
        return self.encoder is None

    # -- the sets the chain loads -----------------------------------------------------------------

    def train(self, plan: TrialPlan, stage: StagePlan) -> SetCount:
        """A stage's training subsample as SFT keeps it (examples that fit max_length)."""
        from trainables.trial_data import train_examples

        key = ("train", stage.task, stage.train_size, plan.train_data_seed(stage), stage.train_limit,
               stage.option_counts, plan.model.max_length)
        if key not in self._cache:
            examples = train_examples(plan, stage)
            lengths = [n for n in self.training_lengths(examples) if n <= plan.model.max_length]
            self._cache[key] = SetCount(len(lengths), sum(lengths), estimated=self.estimated)
        return self._cache[key]

    def evaluation(self, plan: TrialPlan) -> dict[str, SetCount]:
        """Per eval task, one model's evaluation: examples and scored tokens over its modes."""
        from contract.methods import GENERATE_MODE, SCORE_MODE
        from tasks import get_task
        from trainables.trial_data import plan_eval_sets

        key = ("eval", tuple(e.to_dict().__repr__() for e in plan.eval_tasks), plan.data_seed, plan.model.max_length,
               plan.generation.to_dict().__repr__() if plan.generation else None)
        if key in self._cache:
            return self._cache[key]
        sets = plan_eval_sets(plan)
        out = {}
        for entry in plan.eval_tasks:
            items = sets[entry.task]
            if get_task(entry.task).kind == "generation":
                out[entry.task] = self._generated(items, plan, plan.generation.max_new_tokens)
                continue
            tokens, upper = 0, False
            if SCORE_MODE in entry.modes:
                tokens += self.scored(items, plan.model.max_length).tokens
            if GENERATE_MODE in entry.modes:
                tokens += self._generated(items, plan, plan.generation.answer_max_new_tokens).tokens
                upper = True
            out[entry.task] = SetCount(len(items), tokens, estimated=self.estimated, upper_bound=upper)
        self._cache[key] = out
        return out

    def validation(self, plan: TrialPlan, stage: StagePlan, size: int) -> SetCount:
        """A best-seed candidate's validation sample, scored by option log-likelihood."""
        from trainables.trial_data import validation_examples

        key = ("validation", stage.task, size, plan.data_seed, stage.train_limit, stage.option_counts,
               plan.model.max_length)
        if key not in self._cache:
            self._cache[key] = self.scored(validation_examples(plan, stage, size), plan.model.max_length)
        return self._cache[key]

    # -- tokens of sequences ----------------------------------------------------------------------

    def training_lengths(self, examples: Sequence[Any]) -> list[int]:
        """Tokens of each example's training sequence (BOS + prompt + answer + EOS)."""
        if self.encoder is not None:
            return [len(enc.ids) for enc in self.encoder.training(examples)]
        return [self._chars(ex.prompt + ex.answer_prefix + ex.options[ex.label]) + 2 for ex in examples]

    def scored(self, examples: Sequence[Any], max_length: int) -> SetCount:
        """Every option's scored sequence, cut to max_length + 1 tokens."""
        if self.encoder is not None:
            tokens = sum(min(len(enc.scored_ids), max_length + 1)
                         for options in self.encoder.encode(examples) for enc in options)
        else:
            tokens = sum(min(self._chars(ex.prompt + ex.answer_prefix + option) + 1, max_length + 1)
                         for ex in examples for option in ex.options)
        return SetCount(len(examples), tokens, estimated=self.estimated)

    def _generated(self, items: Sequence[Any], plan: TrialPlan, max_new_tokens: int) -> SetCount:
        budget = max(1, plan.model.max_length - max_new_tokens)
        if self.encoder is not None:
            prompts = [len(ids) for ids in self.encoder.prompt_ids([item.prompt for item in items])]
        else:
            prompts = [self._chars(item.prompt) + 1 for item in items]
        tokens = sum(min(n, budget) + max_new_tokens for n in prompts)
        return SetCount(len(items), tokens, estimated=self.estimated, upper_bound=True)

    def _chars(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_token)


def load_counter(model_path: str, *, chat: bool, trust_remote_code: bool, chars_per_token: float) -> TokenCounter:
    """A counter with the model's tokenizer when it is on this machine (a local folder, the
    built tiny model, or the Hugging Face cache), else one that estimates from characters."""
    from transformers import AutoTokenizer

    try:  # local_files_only: never a download (a Hub id is read from the Hugging Face cache or not at all)
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=bool(trust_remote_code),
                                                  local_files_only=True)
    except (OSError, ValueError):
        tokenizer = None
    return TokenCounter(tokenizer, chat=chat, chars_per_token=chars_per_token)


def checkpoint_parameters(model_name: str, *, trust_remote_code: bool) -> int | None:
    """Parameters of the model's checkpoint, from its config on the meta device (no weights);
    None when the config is not on this machine."""
    from trainables.memory_model import load_config, model_shape

    try:
        config = load_config(model_name, trust_remote_code=trust_remote_code, local_files_only=True)
    except (OSError, ValueError):
        return None
    return model_shape(config).params
