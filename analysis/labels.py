"""Human-readable labels and number formats shared by the report's tables and figures: settings,
grid points and axes, fractions as points, and the paper's display names of tasks, methods,
models (chains) and hyperparameter values."""

from __future__ import annotations

import json
import re

from contract.methods import DPO, PPO, RLOO, SFT

# Display names of the registry's tasks as the paper prints them (arc_easy is "ARC" as in Tables
# 1–5), in the paper's column order (analysis.paper_tables sorts by it); a task without one is
# shown by its own name. Labels only: the task names themselves are tasks.TASK_NAMES.
TASK_LABELS = {
    "arc_easy": "ARC",
    "arc_challenge": "ARC-c",
    "mmlu": "MMLU",
    "toxigen_qa": "ToxiGenQA",
    "bbq": "BBQ",
    "toxigen_prompts": "ToxiGen",
    "saferdialogues": "SaFeRDialogues",
}
METHOD_LABELS = {SFT: "SFT", DPO: "DPO", PPO: "PPO", RLOO: "RLOO"}
# Short names of stage settings in a row label ("lr=5e-6").
SETTING_ABBREVIATIONS = {"learning_rate": "lr", "batch_size": "bs", "steps": "steps", "replay_fraction": "replay"}
ARROW = " → "


def grid_label(grid_point: str | None) -> str:
    """'{"stage1.learning_rate": 0.001}' -> 'stage1.learning_rate=0.001'; '{}' -> ''."""
    values = json.loads(grid_point or "{}")
    return ", ".join(f"{key}={values[key]}" for key in sorted(values))


def setting_label(chain: str, grid_point: str | None) -> str:
    """A setting as one short line, e.g. 'tqa_arc (stage1.learning_rate=0.001)'."""
    grid = grid_label(grid_point)
    return f"{chain} ({grid})" if grid else chain


def grid_words(grid_point: str | None) -> str:
    """A grid point in words for a figure: '{"stage1.learning_rate": 0.001}' -> 'lr 1e-3',
    '{"stage2.learning_rate": 1e-05, "stage1.batch_size": 8}' -> 'bs 8, stage-2 lr 1e-5'
    (stage 1's settings unprefixed: the first stage is what the figures vary)."""
    values = json.loads(grid_point or "{}")
    words = []
    for key in sorted(values):
        scope, _, name = key.rpartition(".")
        short, text = hyperparameter_label(key, values[key]).split("=", 1)
        if name == "learning_rate" and isinstance(values[key], (int, float)) and values[key] > 0:
            mantissa, exponent = f"{values[key]:e}".split("e")
            text = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        prefix = "" if scope in ("stage1", "") else (
            f"stage-{scope[5:]} " if scope.startswith("stage") and scope[5:].isdigit() else f"{scope} ")
        words.append(f"{prefix}{short} {text}")
    return ", ".join(words)


def readable_setting(order: str, grid_point: str | None) -> str:
    """A setting as a figure shows it: the chain's order in display names and its grid point in
    words, e.g. 'ToxiGenQA → ARC, lr 1e-3'."""
    grid = grid_words(grid_point)
    return f"{order}, {grid}" if grid else order


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


def task_label(task: str | None) -> str:
    """'toxigen_qa' -> 'ToxiGenQA'; a task without a display name keeps its own name."""
    return TASK_LABELS.get(task, task) if task is not None else "?"


def method_label(method: str | None) -> str:
    """'sft' -> 'SFT'; a null method is SFT (the contract's default)."""
    method = method or SFT
    return METHOD_LABELS.get(method, method.upper())


def model_label(methods: list[str | None], tasks: list[str]) -> str:
    """The model after these stages, e.g. 'SFT ToxiGenQA → SFT ARC' (Tables 6–10 rows)."""
    return ARROW.join(f"{method_label(m)} {task_label(t)}" for m, t in zip(methods, tasks, strict=True))


def order_label(methods: list[str | None], tasks: list[str]) -> str:
    """A chain's order as in Tables 1, 4, 5: 'ToxiGenQA → ARC' when every stage is SFT, else the
    model label (the method then matters)."""
    if all((m or SFT) == SFT for m in methods):
        return ARROW.join(task_label(t) for t in tasks)
    return model_label(methods, tasks)


def hyperparameter_label(axis: str, value: object) -> str:
    """('stage1.learning_rate', 5e-6) -> 'lr=5e-6'; ('stage1.batch_size', 16) -> 'bs=16'."""
    name = axis.split(".", 1)[-1]
    short = SETTING_ABBREVIATIONS.get(name, name)
    if isinstance(value, float) and value.is_integer() and name == "batch_size":
        value = int(value)
    text = f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
    text = re.sub(r"e([+-])0*(\d)", r"e\1\2", text).replace("e+", "e")
    return f"{short}={text}"
