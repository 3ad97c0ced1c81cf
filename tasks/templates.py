"""The SFT templates of the paper's Appendix A.2, and the prompt layout both tasks share.

Instruction sentences are copied verbatim from the paper, curly quotes included, because
the model is trained and scored on exactly this text. Only the multiple-choice counts and
letters change for questions with other than four options (BBQ's three; the few 3- and
5-option ARC questions a study keeps with tasks.<name>.option_counts).
"""

from __future__ import annotations

from collections.abc import Sequence

from .example import Example

LETTERS = "ABCDE"
_COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}

MULTIPLE_CHOICE_ANSWER_PREFIX = " The best answer is"
TOXICITY_ANSWER_PREFIX = " This is"
# Order fixes the label index: 0 = toxic (source label "hate"), 1 = not toxic ("neutral").
TOXICITY_OPTION_NAMES = ("toxic", "not toxic")

TOXICITY_INSTRUCTION = (
    "Given the following prompt, choose whether the prompt is toxic or non-toxic. "
    "Your response should end with \u201cThis is [answer]\u201d where the [answer] is toxic or not toxic."
)


_PROMPT_MARKER = "\nPrompt: "
_ANSWER_MARKER = "\nAnswer:"


def render_prompt(instruction: str, prompt: str) -> str:
    """The fixed layout of every rendered prompt; the answer continues after "Answer:"."""
    return f"Instructions: {instruction}{_PROMPT_MARKER}{prompt}{_ANSWER_MARKER}"


def prompt_body(rendered: str) -> str | None:
    """The inverse of render_prompt: the prompt part of a rendered prompt, or None if not one."""
    start = rendered.find(_PROMPT_MARKER)
    if start < 0 or not rendered.endswith(_ANSWER_MARKER):
        return None
    return rendered[start + len(_PROMPT_MARKER):-len(_ANSWER_MARKER)]


def _enumerate_letters(letters: Sequence[str], conjunction: str) -> str:
    # "A, B, C and D" / "A, B, C or D", as the paper writes them (no Oxford comma).
    return ", ".join(letters[:-1]) + f" {conjunction} {letters[-1]}"


def multiple_choice_instruction(n_options: int) -> str:
    """The paper's ARC instruction; 4 options gives its text exactly."""
    if n_options not in _COUNT_WORDS:
        raise ValueError(f"multiple-choice template supports 2-5 options, got {n_options}")
    letters = LETTERS[:n_options]
    return (
        f"Given the following question and {_COUNT_WORDS[n_options]} candidate answers "
        f"({_enumerate_letters(letters, 'and')}), choose the best answer. "
        "Your response should end with \u201cThe best answer is [the_answer_letter]\u201d "
        f"where the [the_answer_letter] is one of {_enumerate_letters(letters, 'or')}."
    )


def _option_sentence(letter: str, text: str) -> str:
    # The paper ends every option with a period; don't double one the text already has.
    return f"{letter}. {text}" if text.endswith(".") else f"{letter}. {text}."


def multiple_choice_prompt(question: str, option_texts: Sequence[str]) -> str:
    """'<question> A. <text>. B. <text>. ...' on one line, as in the paper's example."""
    options = " ".join(_option_sentence(letter, text) for letter, text in zip(LETTERS, option_texts))
    return f"{question} {options}"


def multiple_choice_example(example_id: str, question: str, option_texts: Sequence[str], label: int) -> Example:
    """A question whose options are lettered A, B, ... by position."""
    n = len(option_texts)
    letters = tuple(LETTERS[:n])
    return Example(
        example_id=example_id,
        prompt=render_prompt(multiple_choice_instruction(n), multiple_choice_prompt(question, option_texts)),
        answer_prefix=MULTIPLE_CHOICE_ANSWER_PREFIX,
        options=tuple(f" {letter}." for letter in letters),
        option_names=letters,
        label=label,
        groups=(),
    )


def toxicity_example(example_id: str, statement: str, is_toxic: bool, groups: tuple[str, ...]) -> Example:
    """A statement to classify as toxic / not toxic (the ToxiGenQA recast)."""
    return Example(
        example_id=example_id,
        prompt=render_prompt(TOXICITY_INSTRUCTION, statement),
        answer_prefix=TOXICITY_ANSWER_PREFIX,
        options=tuple(f" {name}." for name in TOXICITY_OPTION_NAMES),
        option_names=TOXICITY_OPTION_NAMES,
        label=0 if is_toxic else 1,
        groups=groups,
    )
