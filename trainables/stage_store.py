"""The study's stage store: every trained stage kept once, by stage_key, and reused.

The paths are contract.layout's (StudyLayout.stage, StageLayout); this is how they are used:

    <study_dir>/stages/<stage_key>/
        checkpoint/               safetensors weights + tokenizer (absent for a diverged stage)
        rows/<table>.parquet      the stage's own rows (train_log, weights, replay), stored with
                                  the trial id of the trial that trained it
        measures/<table>-<key>.parquet
                                  measurements of the checkpoint (evals, predictions, curvature),
                                  keyed by what they depend on (eval tasks and sizes, curvature
                                  settings), so changing the eval set re-measures, never retrains
        record.json               written last: the stage record (contract.records.StageRecord:
                                  who trained it, in which run, finished or diverged and why,
                                  the size and sha256 of every checkpoint file)
        verified.json             the run that last checked the checkpoint's hashes
        .lock                     flock, the claim's fallback without a Ray coordinator
        holder.json               pid, host and node of the process holding the claim, while it does
        .checkpoint.<pid>/        the checkpoint being saved, renamed to checkpoint/ when whole

Why a claim and not a scheduler: Tune runs trials concurrently in whatever order its grid
gives; two trials whose chains start with the same stage may start together, on one node or
two. The first claims the stage and trains it; the second waits for the claim, then finds
`record.json` and reuses the stage. A holder that dies (SIGKILL, node loss) loses its claim
with its process, and the next trial trains the stage itself. In a `study run` the claim goes
through a coordinator actor on the Ray cluster, which works whatever the shared filesystem's
locks do; flock on `.lock` is the fallback outside one (trainables.stage_claims says which,
and why).

How a stage is published, so that a reader on any node sees nothing of it or all of it: the
record is the publication, and nothing is read before it (`usable_record`).
1. The checkpoint is saved into `.checkpoint.<pid>/`, a name no reader looks at, flushed to
   storage (fsync of every file and folder) and renamed to `checkpoint/` (`publish_checkpoint`).
2. Each rows file is written under a temporary name and renamed (contract.atomic).
3. The record is written last, by rename, after the rows are flushed (`finish`). A reader that
   finds it finds the checkpoint and rows whole, even when the writer's node is lost right
   after: shared filesystems (Lustre, NFS with async writes) and local disks may keep written
   data in the writer's cache after close and rename, and the flush makes it storage's first.
Measurements (evals, predictions, curvature) are added to a published stage under its claim,
each file whole by rename and looked up by its name. `reset` unpublishes (record first) before
a stage is trained again.

Which records count: a record made in the current run always does (so a retried trial, or a
second trial sharing the prefix, reuses it). Records of earlier runs count only when the run
reuses them (`study run --resume`): a plain rerun retrains, in case the code changed.

Checkpoint integrity: a finished stage's record lists its checkpoint files with their sizes
and sha256 (contract.file_digest). Before a stored checkpoint is reused its files' sizes are
compared with the record (a stat per file); with `study run --verify-checkpoints` a checkpoint
of an earlier run is also hashed, once per run (verified.json). A checkpoint that is missing or
not as recorded is never loaded: the stage is trained again under the same key, and its new
record says why (`replaced`, listed by `study status`). A record written before sizes were
recorded can only be checked for its checkpoint folder's existence (`study status` says how
many such stages a study has).

Checkpoint budget: under the study's `keep_checkpoints` policy (contract.checkpoint_needs) a
checkpoint nothing planned needs any more is removed under the stage's claim
(`remove_checkpoint`); the record stays, marked `checkpoint_removed_at`, and with it the rows
and measurements, so the stage is reused as before. A trial that needs the checkpoint again
trains the stage again under its claim, keeping its measurements (`reset(keep_measures=True)`).

Stage 0 (the base model) is stored under `base-<hash of the model settings>`
(contract.keys.base_stage_key): its evaluation is shared the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import pyarrow.parquet as pq

from contract.atomic import write_json_atomic
from contract.file_digest import folder_digests, folder_problems
from contract.keys import BASE_KEY_PREFIX
from contract.layout import StageLayout, StudyLayout
from contract.plan import RunInfo
from contract.records import FINISHED, StageRecord, read_record, write_record
from contract.schema import CHECKPOINT_SAVE, LOCK_WAIT
from trainables import stage_claims, timings
from trainables.results_writer import write_rows as write_parquet_rows


def read_rows(path: Path, trial_id: str) -> list[dict[str, Any]]:
    """Stored rows, relabelled with the trial that reuses them."""
    rows = pq.read_table(path).to_pylist()
    for row in rows:
        row["trial_id"] = trial_id
    return rows


class StageEntry:
    """One stage_key's folder. Use `StageStore.claim` to get one under its claim."""

    def __init__(self, paths: StageLayout, run: RunInfo):
        self.paths = paths
        self.run = run
        self.discarded: str | None = None
        """Why `usable_record` refused the stored checkpoint (written into the next record)."""

    @property
    def key(self) -> str:
        return self.paths.key

    @property
    def checkpoint(self) -> Path:
        return self.paths.checkpoint

    def record(self) -> StageRecord | None:
        return read_record(StageRecord, self.paths.record)

    def usable_record(self) -> StageRecord | None:
        """The stage record if this run may reuse it (see the module docstring), else None."""
        record = self.record()
        if record is None:
            return None
        if self.reusable(record):
            if record.status != FINISHED or self.key.startswith(BASE_KEY_PREFIX) or record.checkpoint_removed:
                return record
            problem = self.checkpoint_problem(record)
            if problem is None:
                return record
            self.discarded = f"the checkpoint stored by run {record.run_id} was not used: {problem}"
            print(f"[stage store] warning: stage {self.key}: {self.discarded}; training the stage again",
                  file=sys.stderr, flush=True)
        return None

    def reusable(self, record: StageRecord) -> bool:
        """Whether this run may reuse a record at all: one of this run, or any with `--resume`."""
        return record.run_id == self.run.run_id or self.run.reuse_earlier_runs

    def checkpoint_problem(self, record: StageRecord) -> str | None:
        """What is wrong with the stored checkpoint of a finished stage, or None: its files
        against the record's sizes, and its hashes when this run verifies checkpoints and has
        not hashed this one yet (a checkpoint this run wrote is not hashed again). A record
        without sizes (written before they were recorded) is only checked for the folder. A
        checkpoint the `keep_checkpoints` policy removed is no problem: the record says so, and
        whoever needs it again trains the stage again (trainables.chain)."""
        if record.checkpoint_removed:
            return None
        if record.checkpoint_files is None:
            return None if self.checkpoint.is_dir() else f"{self.checkpoint} is missing"
        hashes = (self.run.verify_checkpoints and record.run_id != self.run.run_id
                  and not self._hashed_in_this_run(record))
        problems = folder_problems(self.checkpoint, record.checkpoint_files, hashes=hashes)
        if problems:
            return "; ".join(problems)
        if hashes:
            write_json_atomic(self.paths.verified, {"run_id": self.run.run_id, "record_finished_at": record.finished_at})
        return None

    def _hashed_in_this_run(self, record: StageRecord) -> bool:
        try:
            verified = json.loads(self.paths.verified.read_text())
        except (OSError, ValueError):
            return False
        return verified == {"run_id": self.run.run_id, "record_finished_at": record.finished_at}

    # -- writing (caller holds the claim) -----------------------------------------------------

    def reset(self, *, keep_measures: bool = False) -> None:
        """Forget an unusable earlier attempt before training again. `keep_measures`: only
        unpublish the record (and the checkpoint, rows and verification) before a stage whose
        checkpoint the policy removed is trained again under the same key: its measurements
        describe the same stage and stay."""
        self.paths.record.unlink(missing_ok=True)
        self.paths.verified.unlink(missing_ok=True)
        subs = (StageLayout.CHECKPOINT, StageLayout.ROWS) + (() if keep_measures else (StageLayout.MEASURES,))
        for sub in subs:
            shutil.rmtree(self.paths.folder / sub, ignore_errors=True)
        for staging in self.paths.folder.glob(f"{StageLayout.CHECKPOINT_STAGING_PREFIX}*"):  # left by a holder that was killed
            shutil.rmtree(staging, ignore_errors=True)

    def checkpoint_staging(self) -> Path:
        """A fresh folder to save the checkpoint into; `publish_checkpoint` renames it in place."""
        staging = self.paths.checkpoint_staging(os.getpid())
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        return staging

    def publish_checkpoint(self, staging: Path) -> None:
        """Flush a saved checkpoint to storage, then rename it into place (publication, step 1).
        A plain rename, not contract.atomic.publish_folder: the caller holds the stage's claim,
        so no other process publishes it meanwhile, and the staging folder is read (weight rows)
        before it is published. A holder killed before this leaves its `.checkpoint.<pid>`
        behind, for `reset` to remove."""
        with timings.phase(CHECKPOINT_SAVE):
            flush_tree(staging)
            shutil.rmtree(self.checkpoint, ignore_errors=True)
            os.replace(staging, self.checkpoint)
            flush_tree(self.paths.folder, recursive=False)

    def write_rows(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        write_parquet_rows(self.paths.rows(table), table, rows)

    def finish(self, *, trial_id: str, status: str, reason: str | None = None, train_seconds: float | None = None,
               n_train_examples: int | None = None, retrained: str | None = None) -> StageRecord:
        """Write the stage's record (publication, step 3: it makes the entry usable), once the rows
        it vouches for are on storage. Training facts only for a trained stage (a base entry is
        evaluated, not trained); the size and sha256 of every checkpoint file when a checkpoint is
        stored (and their total); why an earlier copy was discarded; why a stage whose checkpoint
        the policy had removed was trained again."""
        rows = self.paths.folder / StageLayout.ROWS
        if rows.is_dir():
            flush_tree(rows)
        files = None
        if status == FINISHED and self.checkpoint.is_dir():
            with timings.phase(CHECKPOINT_SAVE):  # hashing the checkpoint's files
                files = folder_digests(self.checkpoint)
        record = StageRecord(stage_key=self.key, run_id=self.run.run_id, trained_by=trial_id, status=status,
                             reason=reason, finished_at=time.time(), train_seconds=train_seconds,
                             n_train_examples=n_train_examples, trained_on=stage_claims.current_node(),
                             checkpoint_files=files, replaced=self.discarded,
                             checkpoint_bytes=None if files is None else sum(d.size for d in files.values()),
                             retrained=retrained)
        write_record(self.paths.record, record)
        flush_tree(self.paths.folder, recursive=False)
        return record

    def remove_checkpoint(self, record: StageRecord) -> StageRecord:
        """Remove the checkpoint under the `keep_checkpoints` policy (the caller holds the claim
        and has checked that nothing planned needs it: trainables.chain). The record says so
        first (`checkpoint_removed_at`), so no reader ever loads a half-removed folder; a
        removal cut short leaves files that a retraining replaces."""
        removed = dataclasses.replace(record, checkpoint_removed_at=time.time())
        write_record(self.paths.record, removed)
        flush_tree(self.paths.folder, recursive=False)
        self.paths.verified.unlink(missing_ok=True)
        shutil.rmtree(self.checkpoint, ignore_errors=True)
        return removed

    # -- reading -------------------------------------------------------------------------------

    def rows(self, table: str, trial_id: str) -> list[dict[str, Any]]:
        path = self.paths.rows(table)
        return read_rows(path, trial_id) if path.is_file() else []

    def measure_path(self, table: str, key: str) -> Path:
        return self.paths.measure(table, key)

    def has_measure(self, table: str, key: str) -> bool:
        return self.measure_path(table, key).is_file()

    def write_measure(self, table: str, key: str, rows: Sequence[dict[str, Any]]) -> None:
        write_parquet_rows(self.measure_path(table, key), table, rows)

    def measure(self, table: str, key: str, trial_id: str) -> list[dict[str, Any]]:
        return read_rows(self.measure_path(table, key), trial_id)


class StageStore:
    def __init__(self, study_dir: str | Path, run: RunInfo):
        self.layout = StudyLayout(Path(study_dir))
        self.run = run

    def entry(self, stage_key: str) -> StageEntry:
        return StageEntry(self.layout.stage(stage_key), self.run)

    @contextlib.contextmanager
    def claim(self, stage_key: str) -> Iterator[StageEntry]:
        """The stage's entry, held by this process alone for as long as the block runs (through
        the study's Ray coordinator, or flock without one: trainables.stage_claims)."""
        entry = self.entry(stage_key)
        entry.paths.folder.mkdir(parents=True, exist_ok=True)
        with timings.entered(LOCK_WAIT, stage_claims.claim(self.layout.root, stage_key, entry.paths.lock)):
            # Who holds the stage now (for `study status` and for fault-injection tests).
            write_json_atomic(entry.paths.holder, stage_claims.holder_facts())
            try:
                yield entry
            finally:
                entry.paths.holder.unlink(missing_ok=True)


def flush_tree(folder: Path, *, recursive: bool = True) -> None:
    """fsync every file and folder under `folder`, then `folder` itself (with recursive=False
    only `folder`: its entries, e.g. a rename just made in it), so that a rename or record that
    follows publishes data already on storage."""
    folders = [folder]
    if recursive:
        for path in sorted(folder.rglob("*")):
            if path.is_dir():
                folders.append(path)
            elif path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
    for path in reversed(folders):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        except OSError as error:  # some network filesystems cannot sync a folder; their renames are synchronous
            if error.errno != errno.EINVAL:
                raise
        finally:
            os.close(descriptor)


def stage_records(study_dir: str | Path, keys: Iterable[str]) -> list[StageRecord]:
    """The stage records of these stage keys that exist (a stage not trained yet has none).
    Only the named stages are read: a foreign or damaged record elsewhere in the store is not
    this run's business."""
    layout = StudyLayout(Path(study_dir))
    paths = (layout.stage(key).record for key in sorted(set(keys)))
    return [read_record(StageRecord, path) for path in paths if path.is_file()]
