"""`study status RESULTS_DIR`: where a study stands, from its files alone (no Ray needed).

Reads what the engine leaves in a study folder (the records: contract.records):
- plans.json                   the trials of the latest `study run` and their stage keys
- _ledger/<trial_id>.json      a trial's end marker: finished, or failed with the reason
- trials/<trial_id>.parquet    per-stage status rows (pending while the trial runs)
- stages/<stage_key>/record.json  whether each stage is trained (its record exists), whether
                               it was trained again because its stored checkpoint was missing
                               or damaged (`replaced`), and whether its checkpoint can be checked
                               (records written before checkpoint sizes were recorded cannot);
                               the checkpoint's bytes and whether the keep_checkpoints policy
                               removed it (bytes kept and freed)
- runs/<run id>.json           per-run counts (stage trainings executed vs the naive count)
                               and the data rows a run left out under data.bad_rows: skip
- timings/<trial_id>.parquet   where each trial's time went: summed per phase (analysis.timings)

A trial with no end marker is "running" when its trials part exists (it has started and
writes its rows as it goes) and "pending" otherwise; after a driver crash "running" means
"interrupted": `study run --resume` continues it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from analysis.timings import phase_summary, read_timings, render_phase_summary
from contract.layout import PLANS_FILE, StudyLayout
from contract.records import FINISHED, RunRecord, TrialMarker, read_record, read_trial_summaries


SKIPPED_ROWS_SHOWN = 50
"""Skipped data rows `study status` lists; the run record holds them all."""


@dataclass(frozen=True)
class StudyStatus:
    results_dir: Path
    trials: int
    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # trial_id -> reason
    running: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    stage_trainings_naive: int = 0
    distinct_stages: int = 0
    stages_trained: int = 0
    stage_uses_reused: int = 0
    last_run: RunRecord | None = None
    checkpoint_warnings: dict[str, str] = field(default_factory=dict)
    """stage key -> why its stored checkpoint was discarded and the stage trained again."""
    unverifiable_checkpoints: int = 0
    """Finished stages whose record predates checkpoint sizes: only their folder's existence is checked."""
    checkpoints_kept: int = 0
    checkpoint_bytes_kept: int = 0
    """Stage checkpoints stored now, and their bytes (as their records say)."""
    checkpoints_freed: int = 0
    checkpoint_bytes_freed: int = 0
    """Stage checkpoints the keep_checkpoints policy removed, and the bytes that freed."""
    phases: pl.DataFrame | None = None
    """analysis.timings.phase_summary over the timings of the trials of plans.json; None without any."""


def study_status(results_dir: str | Path) -> StudyStatus:
    root = Path(results_dir)
    layout = StudyLayout(root)
    plans_path = layout.plans
    if not plans_path.is_file():
        raise FileNotFoundError(f"not a study results folder (no {PLANS_FILE}): {root}")
    plans = read_trial_summaries(plans_path)
    finished, running, pending, failed = [], [], [], {}
    for plan in plans:
        trial_id = plan.trial_id
        marker = read_record(TrialMarker, layout.trial_marker(trial_id))
        if marker is not None:
            if marker.status == FINISHED:
                finished.append(trial_id)
            else:
                failed[trial_id] = str(marker.failure)
        elif layout.part("trials", trial_id).is_file():
            running.append(trial_id)
        else:
            pending.append(trial_id)

    keys = {key for p in plans for key in p.stage_keys}
    paths = [layout.stage(key).record for key in sorted(keys)]
    # Read as plain JSON: status needs only a few fields and must not fail on a partial record.
    records = {path.parent.name: json.loads(path.read_text()) for path in paths if path.is_file()}
    trained = len(records)
    warnings = {key: f"trained again in run {r.get('run_id')}: {r['replaced']}"
                for key, r in records.items() if r.get("replaced")}
    unverifiable = sum(1 for r in records.values() if r.get("status") == FINISHED and "checkpoint_files" not in r)
    stored = [r for r in records.values() if r.get("status") == FINISHED]
    freed = [r for r in stored if r.get("checkpoint_removed_at") is not None]
    kept = [r for r in stored if r.get("checkpoint_removed_at") is None]
    reused = 0
    trial_files = [layout.part("trials", p.trial_id) for p in plans]
    trial_files = [f for f in trial_files if f.is_file()]
    if trial_files:
        frame = pl.concat([pl.read_parquet(f) for f in trial_files], how="diagonal_relaxed")
        if "reused" in frame.columns:
            reused = int(frame.filter(pl.col("reused").fill_null(False)).height)
    runs = sorted((read_record(RunRecord, p) for p in layout.runs.glob("*.json")), key=lambda r: r.started)
    return StudyStatus(
        results_dir=root, trials=len(plans), finished=finished, failed=failed, running=running, pending=pending,
        stage_trainings_naive=sum(len(p.stage_keys) for p in plans), distinct_stages=len(keys),
        stages_trained=trained, stage_uses_reused=reused,
        last_run=runs[-1] if runs else None, checkpoint_warnings=warnings, unverifiable_checkpoints=unverifiable,
        checkpoints_kept=len(kept), checkpoint_bytes_kept=sum(map(_checkpoint_bytes, kept)),
        checkpoints_freed=len(freed), checkpoint_bytes_freed=sum(map(_checkpoint_bytes, freed)),
        phases=_phases(root, {p.trial_id for p in plans}),
    )


def _phases(root: Path, trial_ids: set[str]) -> pl.DataFrame | None:
    timings = read_timings(root, trial_ids)
    return None if timings is None or timings.is_empty() else phase_summary(timings)


def _checkpoint_bytes(record: dict) -> int:
    """A stage record's checkpoint size (from its files in records older than checkpoint_bytes; 0 unknown)."""
    if record.get("checkpoint_bytes") is not None:
        return int(record["checkpoint_bytes"])
    return sum(int(d.get("size", 0)) for d in (record.get("checkpoint_files") or {}).values())


def byte_size(count: int) -> str:
    """Bytes in binary units, e.g. '1.5 GiB'."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def render_status(status: StudyStatus) -> str:
    lines = [
        f"study: {status.results_dir}",
        f"trials: {status.trials} total, {len(status.finished)} done, {len(status.running)} running or interrupted, "
        f"{len(status.pending)} pending, {len(status.failed)} failed",
        f"stages: {status.stages_trained} of {status.distinct_stages} distinct stages trained "
        f"(naive count {status.stage_trainings_naive}: every trial training its whole chain); "
        f"{status.stage_uses_reused} stage uses reused a stored stage",
    ]
    lines.append(f"checkpoints: {status.checkpoints_kept} kept ({byte_size(status.checkpoint_bytes_kept)}), "
                 f"{status.checkpoints_freed} removed by keep_checkpoints "
                 f"({byte_size(status.checkpoint_bytes_freed)} freed)")
    if status.last_run:
        run, counts = status.last_run, status.last_run.counts
        lines.append(f"last run {run.run_id}{' (resume)' if run.resume else ''}: "
                     f"{counts.stage_trainings_executed} stage trainings executed, "
                     f"{counts.stages_reused_from_earlier_runs} reused from earlier runs, "
                     f"{counts.trials_skipped} trial{'s' if counts.trials_skipped != 1 else ''} skipped as finished")
    if status.checkpoint_warnings:
        lines.append("checkpoint warnings (a stored checkpoint was missing or damaged, never loaded):")
        lines.extend(f"  {key}: {why}" for key, why in sorted(status.checkpoint_warnings.items()))
    if status.unverifiable_checkpoints:
        lines.append(f"{status.unverifiable_checkpoints} stored stages have records written before checkpoint sizes "
                     "were recorded: only their checkpoint folder's existence is checked before reuse")
    if status.last_run and status.last_run.skipped_rows:
        skipped = status.last_run.skipped_rows
        lines.append(f"skipped data rows (data.bad_rows: skip): {len(skipped)}")
        lines.extend(f"  {row}" for row in skipped[:SKIPPED_ROWS_SHOWN])
        if len(skipped) > SKIPPED_ROWS_SHOWN:
            lines.append(f"  ... and {len(skipped) - SKIPPED_ROWS_SHOWN} more "
                         f"(runs/{status.last_run.run_id}.json lists them all)")
    if status.phases is not None:
        lines.append("time per phase (every trial's timings; share of their total):")
        lines.extend(render_phase_summary(status.phases))
    if status.failed:
        lines.append("failures:")
        lines.extend(f"  {trial_id}: {reason}" for trial_id, reason in sorted(status.failed.items()))
    if status.running:
        lines.append("running or interrupted (`study run --resume` continues them):")
        lines.extend(f"  {trial_id}" for trial_id in status.running)
    return "\n".join(lines)
