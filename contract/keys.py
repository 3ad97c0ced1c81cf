"""Key recipes: how the engine's content-addressed names are derived from a plan.

Every name below is `contract.content_hash` of what determines the thing it names, so equal
content gives the same name in every process, run and machine, and a stored stage or
measurement is found again by recomputing its key. The recipes are the storage format: a
change to one (what goes in, its order, its length) makes every stored stage or measurement
unreachable, so they are written once, here, and tests/test_keys.py pins their values.

- trial id:         `<chain>-<seed>-<hash of the chain's stage keys>` (study.planner, study.start_points)
- base stage key:   `base-<hash of the model as loaded>`: stage 0's entry in the stage store
- measure keys:     what a stage's stored measurements depend on besides its weights (the
                    evaluation precision among them, when not float32, and the skipped rows
                    under data.bad_rows: skip)
- validation key:   a best_seed candidate's stored validation accuracy

The stage key itself is `StagePlan.keyed` (contract.plan: the hash of a stage's own settings and
its parent's key); the first parent is the study's base key (study.planner.base_identity) or, for
a best_seed stage, the hash of its candidates (study.start_points).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

from contract.content_hash import content_hash
from contract.plan import DEFAULT_EVAL_PRECISION, TOKENIZATION_VERSION, ModelPlan, TrialPlan

TRIAL_ID_DIGITS = 8
"""Hex digits of the hash in a trial id (stage keys have content_hash's default 16)."""
MEASURE_KEY_DIGITS = 12
"""Hex digits of measurement, validation and base-stage keys."""
BASE_KEY_PREFIX = "base-"
"""Stage 0's keys: its stage-store entry holds measurements only, never a checkpoint."""


def trial_id(chain: str, seed: int, stage_keys: Iterable[str]) -> str:
    """A trial's id, from its chain's stage keys (never a timestamp: a rerun of the same trial
    writes to the same place and overwrites instead of duplicating)."""
    return f"{chain}-{seed}-{content_hash(list(stage_keys), TRIAL_ID_DIGITS)}"


def base_stage_key(model: ModelPlan) -> str:
    """Key of stage 0: the base model as loaded (name, path, dtype, max_length)."""
    identity = {"name": model.name, "path": model.path, "dtype": model.dtype, "max_length": model.max_length}
    return BASE_KEY_PREFIX + content_hash(identity, MEASURE_KEY_DIGITS)


@dataclass(frozen=True)
class MeasureKeys:
    """What a stage's stored measurements depend on besides its weights: `evals` keys the evals
    and predictions of every eval task, `curvature` the curvature rows. A trial's end marker
    records them (contract.records.TrialMarker), so `--resume` sees whether a finished trial
    was measured as the plan now asks."""

    evals: str | None
    curvature: str | None
    """None only in a marker that lacks the key (a partial or hand-written one)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_keys(plan: TrialPlan) -> MeasureKeys:
    """The measure keys of a trial's stages (over the plan's dict forms, so the keys of stored
    measurements stay as they were)."""
    parts = [[e.to_dict() for e in plan.eval_tasks], plan.data_seed, plan.data_dir is None,
             plan.model.max_length, plan.training.eval_batch_size]
    if plan.generation is not None:  # only when some evaluation generates text
        parts.append(plan.generation.to_dict())
    if plan.eval_precision != DEFAULT_EVAL_PRECISION:  # float32 evaluations keep their keys
        parts.append({"precision": plan.eval_precision})
    if plan.bad_rows is not None:  # eval sets with rows left out (data.bad_rows: skip)
        parts.append({"bad_rows": plan.bad_rows.to_dict()})
    # How answers are tokenized (trainables.tokenization): a new rule re-measures stored stages.
    tokens = {"tokenization": TOKENIZATION_VERSION, "chat": plan.model.chat}
    curvature = [plan.curvature.to_dict(), plan.model.max_length, tokens]
    if plan.bad_rows is not None:  # its sample is drawn from training data with rows left out
        curvature.append({"bad_rows": plan.bad_rows.to_dict()})
    return MeasureKeys(
        evals=content_hash(parts + [tokens], MEASURE_KEY_DIGITS),
        curvature=content_hash(curvature, MEASURE_KEY_DIGITS),
    )


def same_measurements(stored: MeasureKeys, plan: TrialPlan) -> bool:
    """Whether a trial's stored rows were measured as `plan` measures them: the evals key, and
    the curvature key only where the plan measures curvature (a study without curvature keeps
    its trials when a curvature default changes, as when curvature's default `algorithms`
    became Lanczos alone)."""
    planned = measure_keys(plan)
    return stored.evals == planned.evals and (not plan.curvature.enabled or stored.curvature == planned.curvature)


def validation_key(split: str, size: int, keys: MeasureKeys) -> str:
    """Key of a best_seed candidate's stored validation accuracy: the split and sample size it
    is scored on, and how its evaluations are measured (the evals key)."""
    return content_hash([split, size, keys.evals], MEASURE_KEY_DIGITS)
