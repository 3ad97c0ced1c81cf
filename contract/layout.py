"""The study folder's layout: every path of `<storage>/<study name>/`, named once.

    <study>/
        study.yaml                 the resolved study (spec.to_dict()), written by `study run`
        plans.json                 the trial plans of the latest run
        .run.lock                  flock: one `study run` per study folder
        runs/<run id>.json         one per `study run`: counts, failures, timings
        _ledger/<trial id>.json    written last by a trial: its status (the resume ledger)
        _models/                   the built-in tiny model, built inside the study folder
        _tune/                     Ray Tune's own experiment state (its storage_path)
        _ray_train/                Ray Train's state of multi-worker trials (their storage_path)
        _work/<trial id>/          trainers' scratch folders, removed when the trial ends
        <table>/<part>.parquet     the results tables (contract.schema): `<trial id>.parquet` in
                                   trials, `<trial id>.stage<n>.parquet` in the others
        stages/<stage key>/        the stage store (StageLayout)
        report/                    `study report`'s default output folder

Writers (study.orchestrate, trainables) and readers (analysis, `study status`) all take their
paths from here, so the layout can only change in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PLANS_FILE = "plans.json"
STUDY_FILE = "study.yaml"
RUN_LOCK = ".run.lock"
RUNS_DIR = "runs"
LEDGER_DIR = "_ledger"
MODELS_DIR = "_models"
TUNE_DIR = "_tune"
RAY_TRAIN_DIR = "_ray_train"
WORK_DIR = "_work"
ENGINE_DIRS = (TUNE_DIR, RAY_TRAIN_DIR, MODELS_DIR, WORK_DIR, LEDGER_DIR)
"""Folders of the engine's own state inside a study folder: never part of a job's upload."""
STAGES_DIR = "stages"
REPORT_DIR = "report"


def trial_part(trial_id: str) -> str:
    """The part name of a trial's rows in the trials table (one part per trial)."""
    return trial_id


def stage_part(trial_id: str, stage: int) -> str:
    """The part name of a trial's rows of one stage in every other table."""
    return f"{trial_id}.stage{stage}"


def study_folder(storage: str | Path, name: str) -> Path:
    """`<storage>/<name>`, resolved (symlinks included); ValueError if it does not lie inside
    storage, so no study file can make a run write outside its results root."""
    root = Path(storage).expanduser().resolve()
    folder = (root / name).resolve()
    if folder == root or not folder.is_relative_to(root):
        raise ValueError(f"the study folder {root / name} resolves to {folder}, outside storage {root}")
    return folder


@dataclass(frozen=True)
class StageLayout:
    """One stage key's folder in the stage store (trainables.stage_store says how it is used)."""

    folder: Path

    RECORD = "record.json"
    HOLDER = "holder.json"
    VERIFIED = "verified.json"
    LOCK = ".lock"
    CHECKPOINT = "checkpoint"
    ROWS = "rows"
    MEASURES = "measures"
    CHECKPOINT_STAGING_PREFIX = ".checkpoint."

    @property
    def key(self) -> str:
        return self.folder.name

    @property
    def record(self) -> Path:
        """Written last: the stage record (contract.records.StageRecord: who trained the stage,
        in which run, how it ended)."""
        return self.folder / self.RECORD

    @property
    def holder(self) -> Path:
        return self.folder / self.HOLDER

    @property
    def lock(self) -> Path:
        return self.folder / self.LOCK

    @property
    def verified(self) -> Path:
        """The run that last checked the checkpoint's hashes against the record (so a run checks
        a stored checkpoint once, not once per trial that reuses it)."""
        return self.folder / self.VERIFIED

    @property
    def checkpoint(self) -> Path:
        return self.folder / self.CHECKPOINT

    def checkpoint_staging(self, pid: int) -> Path:
        return self.folder / f"{self.CHECKPOINT_STAGING_PREFIX}{pid}"

    def rows(self, table: str) -> Path:
        """The stage's own rows of a table fixed by its training (train_log, weights, replay)."""
        return self.folder / self.ROWS / f"{table}.parquet"

    def measure(self, table: str, key: str, suffix: str = ".parquet") -> Path:
        """A measurement of the checkpoint, keyed by what it depends on besides the weights."""
        return self.folder / self.MEASURES / f"{table}-{key}{suffix}"


@dataclass(frozen=True)
class StudyLayout:
    """The paths of one study folder."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def plans(self) -> Path:
        return self.root / PLANS_FILE

    @property
    def study_file(self) -> Path:
        return self.root / STUDY_FILE

    @property
    def run_lock(self) -> Path:
        return self.root / RUN_LOCK

    @property
    def runs(self) -> Path:
        return self.root / RUNS_DIR

    def run(self, run_id: str) -> Path:
        return self.runs / f"{run_id}.json"

    @property
    def ledger(self) -> Path:
        return self.root / LEDGER_DIR

    def trial_marker(self, trial_id: str) -> Path:
        """A trial's end marker in the ledger, written when it ends (finished or failed)."""
        return self.ledger / f"{trial_id}.json"

    @property
    def models(self) -> Path:
        return self.root / MODELS_DIR

    @property
    def tune(self) -> Path:
        return self.root / TUNE_DIR

    @property
    def ray_train(self) -> Path:
        return self.root / RAY_TRAIN_DIR

    def work(self, trial_id: str) -> Path:
        """A trial's scratch folder (trainer outputs before they become checkpoints)."""
        return self.root / WORK_DIR / trial_id

    def stage_work(self, trial_id: str, stage: int, rank: int = 0) -> Path:
        """One rank's trainer scratch for one stage (the ranks of a trial may share a node)."""
        return self.work(trial_id) / (f"stage{stage}-rank{rank}" if rank else f"stage{stage}")

    def table(self, table: str) -> Path:
        return self.root / table

    def part(self, table: str, part: str) -> Path:
        return self.table(table) / f"{part}.parquet"

    def trial_parts(self, table: str, trial_id: str) -> list[Path]:
        """Every part of one trial in a table (its trial part and its stage parts)."""
        folder = self.table(table)
        return sorted(folder.glob(f"{trial_id}.*parquet")) if folder.is_dir() else []

    @property
    def stages(self) -> Path:
        return self.root / STAGES_DIR

    def stage(self, key: str) -> StageLayout:
        return StageLayout(self.stages / key)

    @property
    def report(self) -> Path:
        return self.root / REPORT_DIR
