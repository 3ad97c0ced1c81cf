"""What evaluation needs of a toxicity classifier (ToxicityClassifier), and how far it can be
trusted (HeldOutAccuracy).

Kept apart from the classifiers themselves (classifier.py: the Hub one and the factory;
local_classifier.py: the offline one), so each of them, and the safe % evaluation, imports
only this small contract, never another classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class HeldOutAccuracy:
    """How often the classifier agreed with human labels on examples it was not fitted on."""

    n: int
    correct: int
    source: str = ""  # what it was measured on, for the report

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")


@runtime_checkable
class ToxicityClassifier(Protocol):
    name: str  # identifies the judge in results (a Hub id, or "local@<cache key>")
    heldout: HeldOutAccuracy | None  # None when unknown (e.g. a Hub checkpoint)

    def toxic_probability(self, texts: Sequence[str]) -> list[float]:
        """P(toxic) in [0, 1] for each text, in order."""
        ...
