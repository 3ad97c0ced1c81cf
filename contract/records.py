"""The JSON records of a study folder: their fields, their exact on-disk form, their statuses.

Besides its Parquet tables (contract.schema), a study folder holds small JSON records that one
package writes and another reads (paths: contract.layout):

- `_ledger/<trial id>.json`, a TrialMarker: written by trainables.chain when a trial ends; read
  by study.orchestrate (`--resume`: which trials are done) and analysis.status.
- `stages/<key>/record.json`, a StageRecord: written by trainables.stage_store when a stage is
  trained; read by the stage store (may this run reuse it?) and study.orchestrate (run counts).
- `runs/<run id>.json`, a RunRecord: written by study.orchestrate when a run ends; read by
  analysis.status (`study status`).
- `plans.json`: contract.plan.TrialPlan.to_dict of every trial, written by study.orchestrate;
  analysis reads a TrialSummary of each (the latest run's trials and their stage keys).

`to_dict` writes exactly the keys (and, through `write_record`, the bytes: indent, key order)
these files have always had, and `from_dict` reads every record written so far: studies on disk
stay readable and `study run --resume` continues them. A field is only ever added, as optional.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Protocol, TypeVar

from contract.atomic import write_json_atomic
from contract.file_digest import FileDigest
from contract.keys import MeasureKeys

# ---------------------------------------------------------------- statuses

FINISHED = "finished"
"""A stage trained (or a trial ran every stage) normally; also the status of a finished trial's
rows in the trials table and of its Tune reports."""
DIVERGED = "diverged"
"""A stage whose loss, gradient norm or weights became non-finite (StageRecord only): stored
without a checkpoint, so every trial that reaches it fails there without training it again."""
FAILED = "failed"
"""A trial that stopped at a diverged stage (TrialMarker, Tune reports), and that stage's row
in the trials table."""
PENDING = "pending"
"""A stage row in the trials table while its trial has not reached it yet."""
SKIPPED = "skipped"
"""A stage row in the trials table after an earlier stage of its trial failed."""

STAGE_STATUSES = (FINISHED, DIVERGED)
TRIAL_STATUSES = (FINISHED, FAILED)
TRIAL_ROW_STATUSES = (PENDING, FINISHED, FAILED, SKIPPED)
"""The `status` column of the trials table (contract.schema), one row per stage of a trial."""


def _check_status(record: Any, allowed: tuple[str, ...]) -> None:
    """A record with a status its readers do not know is refused, not misread."""
    if record.status not in allowed:
        raise ValueError(f"{type(record).__name__}: status {record.status!r} is none of {allowed}")


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class TrialMarker:
    """A trial's end marker (`_ledger/<trial id>.json`), written last, when it finished or failed:
    its status, why it failed, its stage keys and the measure keys its rows were measured with.
    A trial with no marker has not ended (it is running, or was interrupted)."""

    SORTED_KEYS: ClassVar[bool] = True

    trial_id: str | None
    run_id: str | None
    status: str
    failure: str | None
    stage_keys: tuple[str, ...]
    measure_keys: MeasureKeys
    """Written as top-level `evals` and `curvature` keys."""
    resumable: bool = False
    """The trial failed for a reason outside the study (a result, record or checkpoint could not
    be written: contract.atomic.WriteError), so `study run --resume` runs it again; a trial that
    failed for the study's own reason (a diverged stage) is not. Written only when true."""

    def __post_init__(self) -> None:
        _check_status(self, TRIAL_STATUSES)

    def to_dict(self) -> dict[str, Any]:
        entry = {"trial_id": self.trial_id, "run_id": self.run_id, "status": self.status, "failure": self.failure,
                 "stage_keys": list(self.stage_keys), **self.measure_keys.to_dict()}
        if self.resumable:
            entry["resumable"] = True
        return entry

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrialMarker":
        """Only `status` is required (all `study status` needs); the other fields read as None
        (or empty) when absent, and `--resume` then runs the trial again, as its measure keys
        do not match the plan's."""
        return cls(trial_id=data.get("trial_id"), run_id=data.get("run_id"), status=data["status"],
                   failure=data.get("failure"), stage_keys=tuple(data.get("stage_keys", ())),
                   measure_keys=MeasureKeys(evals=data.get("evals"), curvature=data.get("curvature")),
                   resumable=bool(data.get("resumable", False)))


@dataclass(frozen=True)
class StageRecord:
    """A stage-store entry's record (`stages/<key>/record.json`), written last: who trained the
    stage, in which run, how it ended (STAGE_STATUSES) and why it diverged. Base-model entries
    (contract.keys.BASE_KEY_PREFIX) are evaluated, not trained: they have no training facts."""

    SORTED_KEYS: ClassVar[bool] = True

    stage_key: str
    run_id: str
    trained_by: str
    """The trial id of the trial that trained (or, for a base entry, evaluated) it."""
    status: str
    reason: str | None
    """Why it diverged; None when it finished."""
    finished_at: float
    """time.time() when the record was written."""
    train_seconds: float | None = None
    n_train_examples: int | None = None
    """Training facts: written only for a trained stage (finished or diverged)."""
    trained_on: str | None = None
    """The node of the process that wrote the record (its Ray node id, or the host name outside
    Ray); absent from records written before it existed."""
    checkpoint_files: Mapping[str, FileDigest] | None = None
    """Size and sha256 of every file of the stored checkpoint (contract.file_digest), by path
    inside `checkpoint/`; checked before the checkpoint is reused. None in records written
    before these were recorded (their checkpoint can only be checked for existence) and for
    stages without a checkpoint (diverged, base entries)."""
    replaced: str | None = None
    """Why the stored copy this stage had before was discarded and the stage trained again (a
    checkpoint that was missing or not as recorded); None when there was none to discard."""
    checkpoint_bytes: int | None = None
    """The stored checkpoint's size in bytes (the sum of `checkpoint_files`); None where no
    checkpoint is stored and in records written before it was recorded."""
    checkpoint_removed_at: float | None = None
    """time.time() when the `keep_checkpoints` policy removed the checkpoint (nothing the study
    planned needed it any more); its rows and measurements stay, and the stage is reused as
    before. None while the checkpoint is kept."""
    retrained: str | None = None
    """Why the stage was trained again after the policy had removed its checkpoint (what needed
    the checkpoint); None when it was not."""

    def __post_init__(self) -> None:
        _check_status(self, STAGE_STATUSES)

    def to_dict(self) -> dict[str, Any]:
        entry = {"stage_key": self.stage_key, "run_id": self.run_id, "trained_by": self.trained_by,
                 "status": self.status, "reason": self.reason, "finished_at": self.finished_at}
        if self.train_seconds is not None:
            entry["train_seconds"] = self.train_seconds
        if self.n_train_examples is not None:
            entry["n_train_examples"] = self.n_train_examples
        if self.trained_on is not None:
            entry["trained_on"] = self.trained_on
        if self.checkpoint_files is not None:
            entry["checkpoint_files"] = {name: d.to_dict() for name, d in self.checkpoint_files.items()}
        if self.replaced is not None:
            entry["replaced"] = self.replaced
        for name in ("checkpoint_bytes", "checkpoint_removed_at", "retrained"):
            if getattr(self, name) is not None:
                entry[name] = getattr(self, name)
        return entry

    @property
    def checkpoint_removed(self) -> bool:
        """The stage finished and its checkpoint was removed by the `keep_checkpoints` policy."""
        return self.checkpoint_removed_at is not None

    def stored_bytes(self) -> int | None:
        """The checkpoint's size in bytes (from `checkpoint_files` in records older than
        `checkpoint_bytes`); None when the record does not say."""
        if self.checkpoint_bytes is not None:
            return self.checkpoint_bytes
        if self.checkpoint_files is not None:
            return sum(d.size for d in self.checkpoint_files.values())
        return None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StageRecord":
        files = data.get("checkpoint_files")
        return cls(stage_key=data["stage_key"], run_id=data["run_id"], trained_by=data["trained_by"],
                   status=data["status"], reason=data["reason"], finished_at=data["finished_at"],
                   train_seconds=data.get("train_seconds"), n_train_examples=data.get("n_train_examples"),
                   checkpoint_files=None if files is None else {n: FileDigest.from_dict(d) for n, d in files.items()},
                   replaced=data.get("replaced"), trained_on=data.get("trained_on"),
                   checkpoint_bytes=data.get("checkpoint_bytes"),
                   checkpoint_removed_at=data.get("checkpoint_removed_at"), retrained=data.get("retrained"))


@dataclass(frozen=True)
class RunCounts:
    """Stage trainings of one `study run` (study.orchestrate.run_counts), in the run record's order."""

    trials: int
    trials_skipped: int
    """Trials `--resume` found finished with the same measure keys, so not run again."""
    stage_trainings_naive: int
    """Every trial training every stage of its chain."""
    distinct_stages: int
    stage_trainings_executed: int
    """Stages this run trained (their record names this run)."""
    stages_reused_from_earlier_runs: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class SkippedRow:
    """A row of task data a run left out under `data.bad_rows: skip`: its file (relative to the
    data dir; for the Hub, hub:<dataset>/<split>), its 1-based line (a Hub row's position) and why."""

    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}" if self.line is not None else f"{self.file}: {self.reason}"


@dataclass(frozen=True)
class RunRecord:
    """One `study run` (`runs/<run id>.json`), written when it ends: when, whether it resumed,
    its counts and the trials that failed (`<trial id>: <why>`); under `data.bad_rows: skip`, the
    rows it left out (`rows_skipped` and `skipped_rows`, written only when there are some)."""

    SORTED_KEYS: ClassVar[bool] = False  # written in field order, counts flattened in

    run_id: str
    resume: bool
    started: float
    finished: float
    counts: RunCounts
    failed: tuple[str, ...]
    skipped_rows: tuple[SkippedRow, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        entry = {"run_id": self.run_id, "resume": self.resume, "started": self.started, "finished": self.finished,
                 **self.counts.to_dict(), "failed": list(self.failed)}
        if self.skipped_rows:
            entry["rows_skipped"] = len(self.skipped_rows)
            entry["skipped_rows"] = [asdict(row) for row in self.skipped_rows]
        return entry

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunRecord":
        counts = RunCounts(**{name: data[name] for name in RunCounts.__dataclass_fields__})
        return cls(run_id=data["run_id"], resume=data["resume"], started=data["started"], finished=data["finished"],
                   counts=counts, failed=tuple(data["failed"]),
                   skipped_rows=tuple(SkippedRow(**row) for row in data.get("skipped_rows", ())))


@dataclass(frozen=True)
class TrialSummary:
    """What readers that need no settings take from a plans.json entry (contract.plan.TrialPlan's
    dict form): the trial's id and its stages' keys. Read without building the whole plan, so
    `study status` and the report's trial filter need only these facts, and a plans.json put
    together by hand for a report (trial ids alone: no stages) still selects its trials."""

    trial_id: str
    stage_keys: tuple[str, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrialSummary":
        return cls(trial_id=data["trial_id"],
                   stage_keys=tuple(stage["stage_key"] for stage in data.get("stages", ())))


# ---------------------------------------------------------------- reading and writing


class _Record(Protocol):
    SORTED_KEYS: ClassVar[bool]

    def to_dict(self) -> dict[str, Any]: ...


R = TypeVar("R")


def write_record(path: str | Path, record: _Record) -> Path:
    """Write a record atomically, as these files have always been written (indent 1; markers
    and stage records with sorted keys, run records in field order)."""
    return write_json_atomic(path, record.to_dict(), sort_keys=record.SORTED_KEYS)


def read_record(kind: type[R], path: str | Path) -> R | None:
    """The record of type `kind` at `path`, or None when there is none."""
    path = Path(path)
    return kind.from_dict(json.loads(path.read_text())) if path.is_file() else None  # type: ignore[attr-defined]


def read_trial_summaries(path: str | Path) -> list[TrialSummary]:
    """Every trial of a plans.json, in its order."""
    return [TrialSummary.from_dict(plan) for plan in json.loads(Path(path).read_text())]
