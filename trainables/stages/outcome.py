"""What a stage runner returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageOutcome:
    log_rows: list[dict]
    """Rows of the train_log table (step, loss, learning_rate, grad_norm, seconds)."""
    n_examples: int
    """Training examples actually used (after dropping those longer than max_length)."""
