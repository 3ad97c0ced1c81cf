"""The study file's checks of its swept axes: `grid:` and `search:`.

Both name axes `stage<k>.<field>` (GRID_FIELDS); a grid lists each axis's values, a search gives
each one distribution (SEARCH_DISTRIBUTIONS) and names its objectives, which must be metrics
every trial reports (`objective_metrics`). The value rules (`axis_value_ok`, `axis_value_kind`)
are shared with the `tiny:` block's grid keys (study/spec_loading.py). Called from
study/spec_checks.py.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from contract.problems import Problem, did_you_mean
from contract.schema import FORGETTING_METRICS
from study.spec import (
    FLOAT_AXIS_FIELDS,
    GRID_FIELDS,
    GRID_KEY,
    SEARCH_DISTRIBUTIONS,
    StudySpec,
    round_sample,
)
from tasks import get_task, task_names
from tasks.definition import PRIMARY_METRIC


def grid_problems(spec: StudySpec) -> list[Problem]:
    """The `grid:` section: each axis names a stage every chain has, and lists distinct valid values."""
    out: list[Problem] = []
    for key, values in spec.grid.items():
        path = f"grid.{key}"
        fld = _axis_field(spec, key, path, "grid keys", out)
        if fld is None:
            continue
        if not values:
            out.append(Problem(path, "a grid axis needs at least one value"))
        out.extend(_axis_value_problems(fld, values, path, "grid values"))
    return out


def _axis_field(spec: StudySpec, key: str, path: str, what: str, out: list[Problem]) -> str | None:
    """The field of a grid/search axis `stage<k>.<field>`, or None when the key is malformed;
    appends a problem when stage k is missing from a chain or has nothing to sweep."""
    match = GRID_KEY.match(key)
    if not match or match.group(2) not in GRID_FIELDS:
        out.append(Problem(path, f"{what} look like 'stage<k>.<field>' with field one of {', '.join(GRID_FIELDS)}"))
        return None
    k, fld = int(match.group(1)), match.group(2)
    shortest = min((len(s) for s in spec.chains.values()), default=0)
    if not 1 <= k <= shortest:
        out.append(Problem(path, f"stage {k} does not exist in every chain (stages are numbered 1..{shortest})"))
    elif fld == "replay_fraction":
        lacking = [c for c, stages in spec.chains.items() if stages[k - 1].replay is None]
        if lacking:
            out.append(Problem(path, f"stage {k} has no replay to sweep in chain(s) {', '.join(lacking)}"))
    return fld


_AXIS_VALUE_KIND = {"learning_rate": "a number > 0", "replay_fraction": "a number in [0, 1)"}


def axis_value_kind(fld: str) -> str:
    """What a value of axis field `fld` must be, in a problem's words."""
    return _AXIS_VALUE_KIND.get(fld, "an integer ≥ 1")


def axis_value_ok(fld: str, value: Any) -> bool:
    """Whether `value` is a value axis field `fld` can take (in a grid, a choice or a `tiny:` block)."""
    if fld == "learning_rate":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if fld == "replay_fraction":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _axis_value_problems(fld: str, values: tuple[Any, ...], path: str, what: str) -> list[Problem]:
    out = []
    for i, value in enumerate(values):
        if not axis_value_ok(fld, value):
            out.append(Problem(f"{path}[{i}]", f"must be {axis_value_kind(fld)} (got {value!r})"))
    if len({_grid_value_key(v) for v in values}) != len(values):
        out.append(Problem(path, f"{what} must be distinct"))
    return out


def _grid_value_key(value: Any) -> str:
    """Equal numbers are equal grid values (1 and 1.0 give the same stage); repr copes with
    unhashable bad input."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(float(value))
    return repr(value)


def search_problems(spec: StudySpec) -> list[Problem]:
    """The `search:` section: axes and distributions, budget, seed, objectives, no grid beside it."""
    search = spec.search
    if search is None:
        return []
    out: list[Problem] = []
    if search.num_samples < 1:
        out.append(Problem("search.num_samples", f"must be ≥ 1 (got {search.num_samples})"))
    if not 0 <= search.seed < 2**32:
        out.append(Problem("search.seed", f"must be in [0, 2**32) (got {search.seed})"))
    if not search.space:
        out.append(Problem("search.space", "at least one axis is required (without axes, drop `search`)"))
    for key, dist in search.space.items():
        path = f"search.space.{key}"
        fld = _axis_field(spec, key, path, "search space keys", out)
        if fld is not None:
            out.extend(_distribution_problems(fld, dist, path))
    extra_grid = False
    for key in spec.grid:
        if key in search.space:
            out.append(Problem(f"search.space.{key}", f"is also a grid axis (grid.{key}); a study has a grid or a "
                                                      "search, not both: sweep it here, e.g. with {choice: [...]}"))
        else:
            extra_grid = True
    if extra_grid:
        out.append(Problem("grid", "a study with `search` cannot also have a grid: move the axes into "
                                   "search.space (e.g. {choice: [...]}) or fix them in the stages"))
    if not search.objectives:
        out.append(Problem("search.objectives", "at least one objective is required, e.g. "
                                                "[{metric: arc_easy/accuracy, mode: max}]"))
    seen: set[str] = set()
    for i, objective in enumerate(search.objectives):
        path = f"search.objectives[{i}].metric"
        if objective.metric in seen:
            out.append(Problem(path, f"metric '{objective.metric}' is already an objective"))
        seen.add(objective.metric)
        message = _metric_problem(spec, objective.metric)
        if message:
            out.append(Problem(path, message))
    return out


def _distribution_problems(fld: str, dist: Mapping[str, tuple[Any, ...]], path: str) -> list[Problem]:
    forms = "{loguniform: [low, high]}, {uniform: [low, high]}, {int: [low, high]} or {choice: [values]}"
    unknown = [k for k in dist if k not in SEARCH_DISTRIBUTIONS]
    if unknown:
        return [Problem(f"{path}.{unknown[0]}", f"unknown distribution '{unknown[0]}'"
                                                f"{did_you_mean(unknown[0], SEARCH_DISTRIBUTIONS)} (one of {forms})")]
    if len(dist) != 1:
        return [Problem(path, f"must be exactly one distribution: {forms} (got {', '.join(dist) or 'none'})")]
    [(kind, values)] = dist.items()
    where = f"{path}.{kind}"
    if kind == "choice":
        if not values:
            return [Problem(where, "a choice needs at least one value")]
        return _axis_value_problems(fld, values, where, "choice values")
    is_float = fld in FLOAT_AXIS_FIELDS
    if kind == "int" and is_float:
        return [Problem(where, f"{fld} is a number: use loguniform, uniform or choice")]
    if kind != "int" and not is_float:
        return [Problem(where, f"{fld} is an integer: use {{int: [low, high]}} (both included) or {{choice: [...]}}")]
    number = (lambda v: isinstance(v, int) and not isinstance(v, bool)) if kind == "int" else \
        (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
    if len(values) != 2 or not all(number(v) for v in values):
        kind_word = "integers" if kind == "int" else "numbers"
        return [Problem(where, f"must be [low, high], two {kind_word} (got {list(values)!r})")]
    low, high = values
    if not low < high:
        return [Problem(where, f"low must be < high (got [{low}, {high}])")]
    if kind == "loguniform" and not low > 0:
        return [Problem(where, f"loguniform needs 0 < low (got low {low})")]
    if fld == "learning_rate" and not low > 0:
        return [Problem(where, f"learning rates must be > 0 (got low {low})")]
    if fld == "replay_fraction" and not (low >= 0 and round_sample(high) < 1):
        return [Problem(where, f"replay fractions must be in [0, 1) (got [{low}, {high}])")]
    if kind == "int" and low < 1:
        return [Problem(where, f"{fld} must be ≥ 1 (got low {low})")]
    return []


def objective_metrics(spec: StudySpec) -> tuple[str, ...]:
    """Metrics every trial of the study reports, so a search may optimise them: `stage`,
    `<eval task>/accuracy`, and the forgetting metrics of each eval task trained by every chain."""
    def primary(task: str) -> str:  # an unknown task is reported elsewhere; name its accuracy here
        return PRIMARY_METRIC[get_task(task).kind] if task in task_names() else "accuracy"

    trained = [t for t in _trained_by_every_chain(spec) if t in spec.all_eval_tasks()]
    return ("stage", *(f"{t}/{primary(t)}" for t in spec.all_eval_tasks()),
            *(f"{m}/{t}" for t in trained for m in FORGETTING_METRICS))


def _trained_by_every_chain(spec: StudySpec) -> tuple[str, ...]:
    order = dict.fromkeys(s.task for stages in spec.chains.values() for s in stages)
    return tuple(t for t in order if all(any(s.task == t for s in stages) for stages in spec.chains.values()))


def _metric_problem(spec: StudySpec, metric: str) -> str | None:
    known = objective_metrics(spec)
    if metric in known:
        return None
    head, _, tail = metric.partition("/")
    if tail == "accuracy" and head in {s.task for stages in spec.chains.values() for s in stages} | set(spec.tasks):
        return f"{head} is not an eval task of this study (eval tasks: {', '.join(spec.all_eval_tasks())})"
    if head in FORGETTING_METRICS and tail not in spec.all_eval_tasks() and tail in _trained_by_every_chain(spec):
        return (f"{tail} is not an eval task of this study, so its forgetting is not measured "
                f"(eval tasks: {', '.join(spec.all_eval_tasks())})")
    if head in FORGETTING_METRICS:
        lacking = [c for c, stages in spec.chains.items() if all(s.task != tail for s in stages)]
        if lacking and len(lacking) < len(spec.chains):
            return (f"chain(s) {', '.join(lacking)} never train {tail}, so they do not report {metric} "
                    "(every chain is searched on its own)")
        if lacking:
            return f"no chain trains '{tail}'{did_you_mean(tail, _trained_by_every_chain(spec))}"
    return f"unknown metric '{metric}'{did_you_mean(metric, known)} (metrics: {', '.join(known)})"
