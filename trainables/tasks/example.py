"""The unit every task yields: one rendered prompt with its scored answer options."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One task item, already rendered with its Appendix A.2 template.

    Training uses ``prompt + completion``; evaluation scores each of
    ``answer_prefix + options[i]`` after ``prompt`` and picks the most likely one,
    so the options are the only text that differs between candidates.
    """

    example_id: str  # stable across runs, "<task>/<source id>"
    prompt: str  # "Instructions: ...\nPrompt: ...\nAnswer:"
    answer_prefix: str  # " The best answer is" | " This is"
    options: tuple[str, ...]  # continuations after answer_prefix: (" A.", ...) | (" toxic.", " not toxic.")
    option_names: tuple[str, ...]  # ("A", "B", ...) | ("toxic", "not toxic")
    label: int  # index of the correct option
    groups: tuple[str, ...] = ()  # canonical demographic groups; () when the task has none

    def __post_init__(self) -> None:
        # Fail at construction, not deep inside a training loop, on an inconsistent item.
        if len(self.options) != len(self.option_names):
            raise ValueError(f"{self.example_id}: {len(self.options)} options but {len(self.option_names)} names")
        if not 0 <= self.label < len(self.options):
            raise ValueError(f"{self.example_id}: label {self.label} outside 0..{len(self.options) - 1}")

    @property
    def completion(self) -> str:
        """The training target: the answer sentence for the correct option."""
        return self.answer_prefix + self.options[self.label]
