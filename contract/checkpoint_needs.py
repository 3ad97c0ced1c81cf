"""Who needs which stage checkpoint: the study file's `keep_checkpoints` policy, as data.

A stage's checkpoint (stages/<key>/checkpoint/) is read for three things only: to train a
stage that starts from it (its next stage in a chain, or a `best_seed` stage that has it among
its candidates), to measure it (evaluation, curvature), and to score it on a validation sample
when it is a best_seed candidate. Once every such use the study plans is stored, the checkpoint
is dead weight (27 GB for a 7B model in float32): its rows, record and measurements are what
reports, `--resume` and stage sharing read.

This module works out those uses from the trials' plans in their dict form (plans.json:
`contract.plan.TrialPlan.to_dict()` of every trial of the study), so the engine
(trainables.chain removes a checkpoint under the stage's claim once `removable` says so) and a
cost plan made before any run (how many checkpoints are written and kept) share one answer:

    needs = stage_needs(plan_dicts)         stage key -> StageNeeds (consumers, measurements, last)
    kept_at_end(plan_dicts, policy)         the stage keys still holding a checkpoint after a
                                            fully successful run
    removable(needs[key], policy, stored, measured)
                                            whether a stored checkpoint may go now

The policies (POLICIES): 'needed' removes a checkpoint as soon as every planned stage that
starts from it has a stored record (finished or diverged) and its own planned measurements are
stored; 'final' does the same but keeps the last stage of every chain; 'all' removes nothing.
A stage of a trial that failed keeps what its failed successor still needs, so `--resume`
continues from it. Base-model entries (contract.keys.BASE_KEY_PREFIX) have no checkpoint and
are not listed. Only the standard library and contract are imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from contract.keys import measure_keys, validation_key
from contract.plan import TrialPlan

NEEDED, FINAL, ALL = "needed", "final", "all"
POLICIES = (NEEDED, FINAL, ALL)
"""The values of the study file's `keep_checkpoints` (study.spec.StudySpec)."""
VALIDATION_SUFFIX = ".json"
"""A best_seed candidate's validation accuracy is stored as measures/validation-<key>.json."""


@dataclass(frozen=True)
class Measurement:
    """One stored measurement of a stage: stages/<key>/measures/<table>-<key><suffix>
    (contract.layout.StageLayout.measure)."""

    table: str
    key: str
    suffix: str = ".parquet"


@dataclass
class StageNeeds:
    """What the study plans to do with one stage's checkpoint."""

    consumers: set[str] = field(default_factory=set)
    """Stage keys that start from this stage: its next stage in a chain, and every best_seed
    stage that has it as the last stage of a candidate prefix."""
    measurements: set[Measurement] = field(default_factory=set)
    """What is measured on the checkpoint: evals and predictions (every stage), curvature (the
    stages the study's curvature block lists), validation (best_seed candidates)."""
    last: bool = False
    """The last stage of some trial's chain (kept under 'final')."""


def stage_needs(plans: Iterable[Mapping[str, Any]]) -> dict[str, StageNeeds]:
    """Every trained stage of the trials (their own stages and their best_seed candidates'),
    by stage key, with what the study plans to do with its checkpoint."""
    needs: dict[str, StageNeeds] = {}

    def chain(stages: list[Mapping[str, Any]], plan: TrialPlan) -> None:
        keys = measure_keys(plan)
        for index, stage in enumerate(stages):
            key = stage["stage_key"]
            entry = needs.setdefault(key, StageNeeds())
            entry.measurements |= {Measurement("evals", keys.evals), Measurement("predictions", keys.evals)}
            if plan.curvature.measures(stage["stage"]):
                entry.measurements.add(Measurement("curvature", keys.curvature))
            start = stage.get("start_from")
            if start is not None:
                validation = validation_key(start["validation_split"], start["validation_size"], keys)
                for candidate in start["candidates"]:
                    chain(candidate, plan)  # the candidates are trained and measured as the trial's own stages
                    parent = needs[candidate[-1]["stage_key"]]
                    parent.consumers.add(key)
                    parent.measurements.add(Measurement("validation", validation, VALIDATION_SUFFIX))
            elif index:
                needs[stages[index - 1]["stage_key"]].consumers.add(key)

    for data in plans:
        plan = TrialPlan.from_dict(data)
        chain(list(data["stages"]), plan)
        if data["stages"]:
            needs[data["stages"][-1]["stage_key"]].last = True
    return needs


def removable(needs: StageNeeds, policy: str, stored: Callable[[str], bool],
              measured: Callable[[Measurement], bool]) -> bool:
    """Whether a stored stage's checkpoint may be removed under `policy`: `stored(key)` says
    whether a consuming stage has a record (finished or diverged), `measured(m)` whether a
    measurement of this stage is stored."""
    if policy == ALL or (policy == FINAL and needs.last):
        return False
    return all(stored(key) for key in needs.consumers) and all(measured(m) for m in needs.measurements)


def kept_at_end(plans: Iterable[Mapping[str, Any]], policy: str) -> set[str]:
    """The stage keys whose checkpoint is still stored after every trial of `plans` finished
    (none diverged): 'needed' none, 'final' the last stage of every chain, 'all' every
    distinct trained stage (best_seed candidates included)."""
    if policy not in POLICIES:
        raise ValueError(f"keep_checkpoints: {policy!r} is none of {POLICIES}")
    needs = stage_needs(plans)
    if policy == ALL:
        return set(needs)
    if policy == FINAL:
        return {key for key, n in needs.items() if n.last}
    return set()
