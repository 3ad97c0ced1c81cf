"""The units tasks yield: a rendered prompt with scored answer options (Example), or a prompt
whose free-text continuation is judged (GenerationPrompt, for the safety-of-generations tasks)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# A secondary grouping of an example: (grouping name, value), e.g. ("condition", "ambig") for
# BBQ or ("category", "STEM") for MMLU. Evaluated like groups, but never part of worst-group
# forgetting, which is over the task's primary groups only.
Facet = tuple[str, str]


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
    facets: tuple[Facet, ...] = ()  # secondary groupings, e.g. (("condition", "ambig"),)
    # Task-specific facts a metric needs beyond the label (BBQ: which option is "unknown" and
    # which is the stereotyped answer). Not compared or hashed: the id already names the item.
    info: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

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


@dataclass(frozen=True)
class GenerationPrompt:
    """A prompt the model continues freely; a classifier then judges the continuation
    (ToxiGen prompts, SaFeRDialogues safety-failure contexts). Nothing to train on."""

    example_id: str
    prompt: str
    groups: tuple[str, ...] = ()
    facets: tuple[Facet, ...] = ()
    label: int = 0  # no answer; kept so sampling can stratify every kind of item alike
