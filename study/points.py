"""A study's points: the grid's points, a Tune config's point, and the stages a point resolves to.

A point is a dict `{"stage<k>.<field>": value}` over the study's axes (its grid, or its
`search.space`); with a chain and a seed it names one trial. study.planner builds a trial's plan
from its point, and study.start_points finds the seeds' trials of a point from it.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Mapping

from study.spec import FLOAT_AXIS_FIELDS, GRID_KEY, StageSpec, StudySpec, round_sample


def grid_points(spec: StudySpec) -> list[dict[str, Any]]:
    """Cartesian product of the grid axes, in a stable order; [{}] without a grid."""
    keys = sorted(spec.grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(spec.grid[k] for k in keys))]


def resolve_stages(spec: StudySpec, chain: str, point: Mapping[str, Any]) -> tuple[StageSpec, ...]:
    """The chain's stages with the point's values in place, as the field's type (a grid may
    write a learning rate as `1`: the stage holds 1.0, as if the study file had set it)."""
    stages = list(spec.chains[chain])
    for key, value in point.items():
        match = GRID_KEY.match(key)
        assert match, key  # validated by the spec
        index, fld = int(match.group(1)) - 1, match.group(2)
        value = float(value) if fld in FLOAT_AXIS_FIELDS else int(value)
        if fld == "replay_fraction":
            replay = dataclasses.replace(stages[index].replay, fraction=value)
            stages[index] = dataclasses.replace(stages[index], replay=replay)
        else:
            stages[index] = dataclasses.replace(stages[index], **{fld: value})
    return tuple(stages)


def config_point(spec: StudySpec, config: Mapping[str, Any]) -> tuple[str, int, dict[str, Any]]:
    """(chain, seed, point) of a Tune config `{chain, seed, stage<k>.<field>: value, ...}`.

    The point must name exactly the study's axes (search.space, else the grid). Sampled values
    are normalised as the searcher hands them out: continuous axes rounded to SAMPLE_DIGITS
    significant digits, integer fields as int, so equal points give equal stage keys and trial
    ids however the value travelled. Grid values are kept as they are (build_plans' form).
    """
    chain, seed = config.get("chain"), config.get("seed")
    if chain not in spec.chains:
        raise KeyError(f"config {dict(config)} names no chain of study {spec.name!r} (chains: {', '.join(spec.chains)})")
    if seed not in spec.seeds:
        raise KeyError(f"config {dict(config)} names no seed of study {spec.name!r} (seeds: {list(spec.seeds)})")
    point = {k: v for k, v in config.items() if k not in ("chain", "seed")}
    axes = spec.search.space if spec.search is not None else spec.grid
    if set(point) != set(axes):
        raise KeyError(f"config {dict(config)} does not name the study's axes {sorted(axes)}")
    if spec.search is not None:
        point = {k: sampled_value(k, spec.search.space[k], v) for k, v in point.items()}
    return chain, int(seed), dict(sorted(point.items()))


def sampled_value(axis: str, dist: Mapping[str, Any], value: Any) -> Any:
    """A value of search axis `axis` (distribution `dist`) as trials run it."""
    [kind] = dist
    if kind in ("loguniform", "uniform"):
        return round_sample(value)
    if axis.endswith((".batch_size", ".steps")):
        return int(value)
    return value  # a choice of learning rates or replay fractions: the listed value itself
