"""Paper-exact evaluation: the model writes its answer, and the answer sentence is parsed.

Option scoring (option_scoring.py) asks which option the model finds most likely; the paper's
models instead answer in words, as their SFT template (Appendix A.2) taught them: "The best
answer is A." / "This is toxic." / "This is not toxic.". Here the model continues
`example.prompt` (which ends with "Answer:"; the answer prefix is not given, so the model has
to produce the whole sentence itself) by bounded greedy decoding
(generation.generate_continuations), and `parse_answer` reads the option it named.

Parsing rules (`parse_answer`):
- The answer sentence is the example's answer prefix ("The best answer is" / "This is") followed
  by one of the example's option names ("A".."E" / "toxic", "not toxic"). The prefix matches
  case-insensitively, with any whitespace between its words, anywhere in the text, but not inside
  a word ("This isn't", "The best answer isA" are no occurrence of it).
- The FIRST occurrence of the answer prefix decides, whatever follows it. A fine-tuned model
  answers first; decoding is bounded, so anything after the first answer is a runaway
  continuation (typically the next, made-up "Instructions: ... Answer: The best answer is ..."
  block), not a revision. If what follows the first prefix is not an option name, the answer is
  unparseable and later text is not searched: "The best answer is E" (only A-D exist), "The best
  answer is [the_answer_letter]", "This is a toxic statement. This is not toxic." and "This is a
  statement. This is toxic." are all unparseable, so hedging or chatter is never rewarded.
- Between the prefix and the name there may be a ":" and any of the decorations a model may echo
  from the instruction (which itself quotes “The best answer is [the_answer_letter]”) or add as
  markdown: whitespace, quotes " ' “ ” ‘ ’, emphasis * and _, and opening brackets ( and [. So
  `The best answer is "A"`, `The best answer is **B**`, `The best answer is: (C)`,
  `**The best answer is:** D` and `This is ‘not toxic’` all parse. Closing decorations need not
  match the opening ones: only the name's end is checked.
- A name ends where no letter or digit follows ("A.", "A,", "A)", "A”", "A**", "A_", end of text
  all end it; "AB" and "toxicity" do not). Letters: the upper-case letter counts; a lower-case one
  only when nothing word-like follows it ("the best answer is b." counts, "the best answer is a
  good one" does not: that "a" is an article). Words: case-insensitive; the words of a
  multi-word name may be separated by whitespace, "-", emphasis or quotes ("This is *not* toxic").
- An answer naming two different options is unparseable: when the name is followed (after
  closing decorations) by a connector ("/", "\\", "|", "&", "+", ",", "or", "and", or a run of
  them such as ", or" / "and/or") and then another option's name, e.g. "The best answer is A/B",
  "The best answer is (A) or (C)", "This is toxic/not toxic". A name that is no option after the
  connector ("The best answer is A, I think", "A and iron is a metal") or the same option again
  does not count. (A rare false alarm, "The best answer is B, A is wrong", is unparseable too.)
- Toxicity: "not toxic" is tried before "toxic" and "This is toxic" needs "toxic" right after
  the prefix and its decorations, so "This is not toxic" can never read as "toxic". "non-toxic" /
  "nontoxic" / "non toxic" read as "not toxic" (the instruction itself says "toxic or non-toxic").
- Anything else (no answer prefix, an option name alone such as " A.") is unparseable:
  prediction None, counted wrong, and counted in the "unparseable" metric.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from contract.methods import GENERATE_MODE
from trainables.evaluation.generation import generate_continuations
from trainables.evaluation.option_scoring import Facet, grouped_rows

UNPARSEABLE = "unparseable"

# Other spellings of an option name, read as that option.
ALIASES: dict[str, tuple[str, ...]] = {"not toxic": ("non-toxic", "nontoxic", "non toxic")}


@dataclass(frozen=True)
class GeneratedAnswer:
    example_id: str
    groups: tuple[str, ...]
    facets: tuple[Facet, ...]
    label: int
    prediction: int | None  # option index the generation names; None: unparseable
    generation: str
    label_name: str
    prediction_name: str  # the option name, or "unparseable"

    @property
    def correct(self) -> bool:
        return self.prediction is not None and self.prediction == self.label

    @property
    def parsed(self) -> bool:
        return self.prediction is not None


def _words(text: str) -> str:
    return r"\s+".join(re.escape(w) for w in text.split())


_QUOTES = "\"'\u201c\u201d\u2018\u2019"  # " ' “ ” ‘ ’
_EMPHASIS = "*_"
# After the prefix: decorations, an optional ":", decorations and opening brackets.
# (The ":" group is optional as a whole, so a long run without ":" does not backtrack quadratically.)
_OPENING = rf"(?:[\s{_QUOTES}{_EMPHASIS}]*:)?[\s{_QUOTES}{_EMPHASIS}(\[]*"
# Between an option name and a second one: closing decorations, connectors, opening decorations.
_CONNECTOR = (rf"(?:[\s{_QUOTES}{_EMPHASIS})\]]*(?:[/\\|&+,]|(?i:or|and)(?![^\W_])))+"
              rf"[\s{_QUOTES}{_EMPHASIS}(\[]*")
_NOT_ALNUM_AFTER = r"(?![^\W_])"  # no letter or digit follows ("_" may: markdown emphasis)


@dataclass(frozen=True)
class _Parser:
    prefix: re.Pattern[str]  # the answer prefix, searched for
    answer: re.Pattern[str]  # decorations and an option name, matched right after the prefix
    second: re.Pattern[str]  # connector and an option name, matched right after the answer


def _name_pattern(name: str) -> str:
    if len(name) == 1 and name.isalpha():
        # Upper case: any following non-alphanumeric ends it. Lower case: only when nothing
        # word-like follows (an article "a" is not the letter "A").
        return (re.escape(name.upper()) + _NOT_ALNUM_AFTER + "|" + re.escape(name.lower())
                + r"(?=[\s_]*(?:$|[^\w\s]))")
    parts = [p for p in re.split(r"[\s-]+", name.strip()) if p]
    if not parts:
        raise ValueError(f"empty option name: {name!r}")
    separator = rf"[\s{_QUOTES}{_EMPHASIS}-]*"
    return r"(?i:" + separator.join(re.escape(p) for p in parts) + r")(?![^\W_]|-)"


def _options_pattern(option_names: tuple[str, ...]) -> str:
    # One named group per spelling, "o<index>_<k>", tried longest first ("not toxic" before
    # "toxic"), so the group that matched tells the option.
    spellings = [(spelling, index) for index, name in enumerate(option_names)
                 for spelling in (name, *ALIASES.get(name.lower(), ()))]
    if not spellings:
        raise ValueError(f"no option names to parse: {option_names!r}")
    ordered = sorted(enumerate(spellings), key=lambda item: (-len(item[1][0]), item[0]))
    return "(?:" + "|".join(f"(?P<o{index}_{k}>{_name_pattern(spelling)})"
                            for k, (spelling, index) in ordered) + ")"


def _option_index(match: re.Match[str]) -> int:
    group = next(name for name, value in match.groupdict().items() if value is not None)
    return int(group[1:].split("_")[0])


def _parser(answer_prefix: str, option_names: tuple[str, ...]) -> _Parser:
    options = _options_pattern(option_names)
    return _Parser(
        prefix=re.compile(r"(?<![^\W_])(?i:" + _words(answer_prefix) + r")" + _NOT_ALNUM_AFTER),
        answer=re.compile(_OPENING + options),
        second=re.compile(_CONNECTOR + options),
    )


_PARSERS: dict[tuple[str, tuple[str, ...]], _Parser] = {}


def parse_answer(text: str, example: Any) -> int | None:
    """Index of the option named right after the first answer prefix in `text`, or None
    (unparseable). See the module docstring for the rules.
    """
    prefix = example.answer_prefix.strip()
    if not prefix:
        raise ValueError(f"{example.example_id}: paper-exact parsing needs an answer prefix")
    key = (prefix, tuple(example.option_names))
    parser = _PARSERS.get(key)
    if parser is None:
        parser = _PARSERS[key] = _parser(*key)
    found = parser.prefix.search(text)
    if found is None:
        return None
    answer = parser.answer.match(text, found.end())
    if answer is None:  # the first prefix is not followed by an option: unparseable
        return None
    index = _option_index(answer)
    second = parser.second.match(text, answer.end())
    if second is not None and _option_index(second) != index:  # names two options
        return None
    return index


def evaluate_generated(model: Any, tokenizer: Any, examples: Sequence[Any], *, batch_size: int, max_length: int,
                       max_new_tokens: int) -> list[GeneratedAnswer]:
    """Greedy answer of every example (generated from `example.prompt`, bounded to
    max_new_tokens), parsed with `parse_answer`."""
    texts = generate_continuations(model, tokenizer, [ex.prompt for ex in examples], max_new_tokens=max_new_tokens,
                                   batch_size=batch_size, max_length=max_length)
    answers = []
    for ex, text in zip(examples, texts):
        prediction = parse_answer(text, ex)
        answers.append(GeneratedAnswer(
            example_id=ex.example_id,
            groups=tuple(ex.groups),
            facets=tuple(tuple(f) for f in getattr(ex, "facets", ())),
            label=ex.label,
            prediction=prediction,
            generation=text,
            label_name=ex.option_names[ex.label],
            prediction_name=UNPARSEABLE if prediction is None else ex.option_names[prediction],
        ))
    return answers


def eval_rows(answers: Sequence[GeneratedAnswer]) -> list[dict[str, Any]]:
    """evals rows: metric "generated_accuracy" (correct = right answers; unparseable count as
    wrong) and metric "unparseable" (correct = number unparseable, accuracy = value = their
    share), each over all / every primary group / every facet value (option_scoring.grouped_rows)."""
    return [
        *grouped_rows("generated_accuracy", ((a.groups, a.facets, a.correct) for a in answers)),
        *grouped_rows("unparseable", ((a.groups, a.facets, not a.parsed) for a in answers)),
    ]


def prediction_rows(answers: Sequence[GeneratedAnswer]) -> list[dict[str, Any]]:
    """predictions rows, like the scoring mode's: label and prediction are option names
    (prediction "unparseable" when None), margin and role None, mode "generate"."""
    return [
        {
            "example_id": a.example_id, "groups": list(a.groups), "facets": [f"{n}={v}" for n, v in a.facets],
            "label": a.label_name, "prediction": a.prediction_name, "correct": a.correct, "margin": None,
            "mode": GENERATE_MODE, "role": None, "generation": a.generation,
        }
        for a in answers
    ]
