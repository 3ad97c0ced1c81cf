"""Human-readable labels and number formats shared by the report's tables and figures."""

from __future__ import annotations

import json


def grid_label(grid_point: str | None) -> str:
    """'{"stage1.learning_rate": 0.001}' -> 'stage1.learning_rate=0.001'; '{}' -> ''."""
    values = json.loads(grid_point or "{}")
    return ", ".join(f"{key}={values[key]}" for key in sorted(values))


def setting_label(chain: str, grid_point: str | None) -> str:
    """A setting as one short line, e.g. 'tqa_arc (stage1.learning_rate=0.001)'."""
    grid = grid_label(grid_point)
    return f"{chain} ({grid})" if grid else chain


def points(fraction: float | None, digits: int = 2) -> str:
    """A fraction in [0, 1] (or a difference of two) as percentage points, e.g. 0.0481 -> '4.81'."""
    if fraction is None:
        return "–"
    text = f"{100 * fraction:.{digits}f}"
    # 0.85 − 0.85 can come out as −1e-17 in floating point; never print "-0.00".
    return text[1:] if float(text) == 0 and text.startswith("-") else text


def axis_label(axis: str) -> str:
    """A grid key as words for an axis: 'stage2.learning_rate' -> 'learning rate of stage 2',
    'stage_defaults.batch_size' -> 'batch size (every stage)'; anything else unchanged."""
    scope, _, key = axis.rpartition(".")
    words = key.replace("_", " ")
    if scope.startswith("stage") and scope[5:].isdigit():
        return f"{words} of stage {scope[5:]}"
    if scope == "stage_defaults":
        return f"{words} (every stage)"
    return axis
