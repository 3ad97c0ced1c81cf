"""Stages that start from the best of the previous stage's seeds (`start_from: best_seed`).

Paper §2.2: "For sequential tuning, we pick the best model for the first task, and use it as
the baseline model for the second task." With `start_from: best_seed` on stage k, every trial
of a (chain, grid point) starts stage k from the same model: the best, by accuracy on a
stratified sample of `selection_size` examples of stage k−1's task's validation split (its dev
split, or a pool held out of its training data: never trained on, never evaluated on), of the
prefixes 1..k−1 trained with each of the study's seeds. The trial's own rows for stages < k are
the chosen prefix's, so its forgetting is measured against the model its stage k started from.

Identity: which model stage k starts from is decided at run time, but deterministically from
the candidates, so stage k's key hashes the candidates' keys and the selection rule in place of
a single parent, and every later key follows from it. The selection itself happens in the
worker (`trainables.chain`), which trains any candidate prefix not stored yet (under the stage
store's locks, so each is trained once).
"""

from __future__ import annotations

import dataclasses

from contract.content_hash import content_hash
from contract.keys import trial_id
from contract.plan import TOKENIZATION_VERSION, StartFromPlan, TrialPlan
from study.points import resolve_stages
from study.spec import StudySpec
from tasks.definition import SELECTION_SPLIT


def apply_start_points(spec: StudySpec, plans: list[TrialPlan]) -> list[TrialPlan]:
    """Plans with `best_seed` stages resolved: candidates attached, keys and trial ids updated."""
    out = []
    for plan in plans:
        stages = resolve_stages(spec, plan.chain, plan.grid_point)
        starts = [i for i, s in enumerate(stages) if s.start_from == "best_seed"]
        if not starts:
            out.append(plan)
            continue
        index = starts[0]  # the spec allows one per chain
        siblings = sorted((p for p in plans if p.chain == plan.chain and p.grid_point == plan.grid_point),
                          key=lambda p: p.seed)
        candidates, seen = [], set()
        for sibling in siblings:
            prefix = sibling.stages[:index]
            if prefix[-1].stage_key not in seen:  # a prefix with fixed stage seeds is one candidate
                seen.add(prefix[-1].stage_key)
                candidates.append(prefix)
        selection_size = int(stages[index].selection_size)
        new_stages = list(plan.stages)
        # How validation scores the candidates picks the start: a new scoring rule is a new stage.
        parent = content_hash({"best_of": [c[-1].stage_key for c in candidates], "selection_size": selection_size,
                               "split": SELECTION_SPLIT, "rule": "max validation accuracy, lowest seed on ties",
                               "scoring": TOKENIZATION_VERSION})
        for j in range(index, len(new_stages)):
            new_stages[j] = new_stages[j].keyed(parent)
            parent = new_stages[j].stage_key
        new_stages[index] = dataclasses.replace(new_stages[index], start_from=StartFromPlan(
            mode="best_seed", validation_size=selection_size, validation_split=SELECTION_SPLIT,
            candidates=tuple(candidates)))
        out.append(dataclasses.replace(plan, stages=tuple(new_stages),
                                       trial_id=trial_id(plan.chain, plan.seed, (s.stage_key for s in new_stages))))
    return out
