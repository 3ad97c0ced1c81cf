"""The per-worker loop: run one chain's stages in order, evaluating after each.

Reads top to bottom like the data flow in docs/architecture.md:

    base model ─► evaluate (stage 0)
    for each stage: in the stage store, under the stage's lock:
                        reuse it (trained by another trial or an earlier attempt), or
                        free the last stage's models ─► (online RL: train its reward model)
                        ─► load previous weights ─► train (method's runner) ─► checkpoint
                    ─► evaluate every eval task (stored per stage, reused too), in the study's
                       one evaluation precision whether the model was trained here or loaded,
                       every rank of the trial running a share of the batches
                    ─► this trial's rows ─► Parquet ─► report metrics

A stage whose loss or weights become non-finite is recorded as diverged (trials.status
"failed" with the reason in trials.failure); the trial stops there and ends normally, so the
rest of the study goes on. A write that fails (a Parquet part, a record, a checkpoint:
contract.atomic.WriteError, nothing partial left behind) fails the trial the same way, with the
reason in trials.failure and a `resumable` ledger marker, so `study run --resume` runs it again. The same function runs inside a Ray Train worker (TorchTrainer) or
directly inside a Tune trial; `report` is whatever sends metrics to Ray there. Plans are
`contract.plan.TrialPlan`s built by `study.planner`, every setting filled, so this module never
imports `study` and restates no default.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from contract.atomic import WriteError, write_json_atomic, writing
from contract.checkpoint_needs import ALL as KEEP_ALL
from contract.checkpoint_needs import VALIDATION_SUFFIX, StageNeeds, removable, stage_needs
from contract.keys import base_stage_key, measure_keys, validation_key
from contract.layout import StudyLayout, stage_part, trial_part
from contract.plan import StagePlan, TrialPlan
from contract.records import DIVERGED, FAILED, FINISHED, PENDING, SKIPPED, StageRecord, TrialMarker, write_record
from contract.methods import ONLINE_RL_METHODS
from contract.schema import (ALL, CURVATURE, OTHER, PRIMARY_GROUPINGS, REWARD_MODEL, STAGE_TABLES, TABLE_NAMES,
                             TRAIN, VALIDATION)
from tasks.definition import SELECTION_SPLIT
from trainables import distributed, ranks, timings
from trainables.evaluation.dispatch import evaluate_rows, primary_metric
from trainables.evaluation.option_scoring import evaluate_examples
from trainables.evaluation.precision import scoring, unwrapped
from trainables.models import load_model_and_tokenizer, release_memory, save_checkpoint, weights_dtype
from trainables.replay import replay_rows
from trainables.results_writer import write_part
from trainables.stage_measurements import curvature_rows, weight_row
from trainables.quiet_logs import quiet_libraries
from trainables.stage_store import StageEntry, StageStore
from trainables.stages import get_runner
from trainables.tokenization import encoder_for
from trainables.trial_data import plan_eval_sets, stage_examples, train_examples, validation_examples
from trainables.trial_reports import divergence, forgetting_metrics, trial_row

Reporter = Callable[[dict[str, Any]], None]




def study_checkpoint_needs(plan: TrialPlan) -> dict[str, StageNeeds] | None:
    """What the study plans to do with each stage's checkpoint (contract.checkpoint_needs), from
    the study's plans.json (every trial of the study, written by `study run` before any trial
    starts) and this trial's own plan; None under keep_checkpoints 'all'."""
    if plan.run.keep_checkpoints == KEEP_ALL:
        return None
    path = StudyLayout(Path(plan.study_dir)).plans
    plans = json.loads(path.read_text()) if path.is_file() else []
    if plan.trial_id not in {p.get("trial_id") for p in plans}:
        plans.append(plan.to_dict())
    return stage_needs(plans)


def _start_keys(stages: tuple[StagePlan, ...], index: int) -> list[str]:
    """The stages whose checkpoint stage `index` may start from: the previous one, or every
    candidate of a best_seed stage."""
    start = stages[index].start_from
    if start is not None:
        return [candidate[-1].stage_key for candidate in start.candidates]
    return [stages[index - 1].stage_key] if index else []


def register_plan_tasks(plan: TrialPlan) -> None:
    """Register the study's YAML tasks: a worker process starts knowing only the built-in ones.
    The files must be what the plan was built from (same path on every node, unchanged since
    planning): their hash is part of the task versions in the plan."""
    if not plan.task_files:
        return
    from tasks import get_task, register_task_file

    for path in plan.task_files:
        register_task_file(path)
    planned = {s.task: s.task_version for s in plan.stages}
    planned |= {e.task: e.version for e in plan.eval_tasks}
    for task, version in planned.items():
        now = get_task(task).keyed_version()
        if now != version:
            raise ValueError(f"task {task!r} ({get_task(task).origin}) changed since the study was planned "
                             f"(version {version} then, {now} now); run the study again to re-plan it")


def run_chain(plan: TrialPlan, *, report: Reporter | None = None, executor: str = "function",
              started_at: float | None = None) -> dict[str, Any]:
    """Run every stage of `plan` (reusing stored stages); write its parts; return the last metrics.
    `started_at`: time.time() when the trial began (its Tune function), where its timings start."""
    report = report or (lambda metrics: None)
    quiet_libraries()
    register_plan_tasks(plan)
    if not ranks.is_writer():
        # Ranks > 0 of a multi-worker trial only train, when rank 0 says so (trainables.distributed).
        eval_sets: dict[str, list] = {}
        distributed.follow({"train": lambda *args: follow_training(plan, *args),
                            "evaluate": lambda path: follow_evaluation(plan, path, eval_sets),
                            "report": lambda: report({})})
        return {}
    timings.begin(timings.Recorder(plan.trial_id, plan.run.run_id, started=started_at or time.time()))
    report = distributed.leading_report(report)
    chain = _ChainRun(plan, executor)
    try:
        chain.start()
        with timings.phase(OTHER, stage=0):
            metrics = chain.base_stage()
        chain.resolve_start_points()
        report(metrics)
        for index in range(len(chain.plan.stages)):
            with timings.phase(OTHER, stage=chain.plan.stages[index].stage):
                metrics = chain.stage(index)
            report(metrics)
            if metrics["status"] != FINISHED:
                break
        chain.finish()
    except WriteError as exc:
        metrics = chain.write_failed(exc)  # raises again when even its marker cannot be written
        if ranks.world_size() > 1:
            raise  # the other ranks may sit in a collective: let Ray Train end the worker group
        report(metrics)
    # Only on a normal end: after an exception rank 0 must not wait at the followers' barrier
    # (they may sit in a collective); the error propagates and Ray Train ends the worker group.
    distributed.release_followers()
    return metrics


class _ChainRun:
    """One trial's pass over its chain: each stage is reused from the store or trained under
    its lock, then the trial's own Parquet parts are written from the stage's stored rows."""

    def __init__(self, plan: TrialPlan, executor: str):
        self.plan = plan
        self.executor = executor
        self.trial_id = plan.trial_id
        self.study_dir = Path(plan.study_dir)
        self.store = StageStore(self.study_dir, plan.run)
        self.keys = measure_keys(plan)
        self._eval_sets: dict[str, list] | None = None
        self._loaded: tuple[str, Any, Any] | None = None  # (stage key, model, tokenizer)
        self.accuracy: dict[int, dict[str, dict[str, float]]] = {}  # stage -> task -> group -> acc
        self.trial_rows = [trial_row(plan, s, executor, status=PENDING) for s in plan.stages]
        self.status, self.failure = FINISHED, None
        self.selection: dict[int, str] = {}  # stage -> how its start point was chosen (JSON)
        self.at = 0  # the stage being worked on (0: the base model), named when a write fails
        self.needs = study_checkpoint_needs(plan)  # None: every checkpoint is kept

    def start(self) -> None:
        """Forget this trial's earlier rows and marker; write its pending trials rows."""
        # Marker first: a kill between the two must not leave "finished" beside no rows.
        with writing(StudyLayout(self.study_dir).ledger):
            StudyLayout(self.study_dir).trial_marker(self.trial_id).unlink(missing_ok=True)
            clear_trial_parts(self.study_dir, self.trial_id)
        write_part(self.study_dir, "trials", trial_part(self.trial_id), self.trial_rows)

    # -- models and data, loaded only when something must be computed -------------------------

    def eval_sets(self) -> dict[str, list]:
        if self._eval_sets is None:
            self._eval_sets = plan_eval_sets(self.plan)
        return self._eval_sets

    def model_at(self, key: str, path: str | Path) -> tuple[Any, Any]:
        if self._loaded is None or self._loaded[0] != key:
            self.drop_models()  # free the old model first
            model, tokenizer = load_model_and_tokenizer(str(path), dtype=self.plan.model.dtype,
                                                        trust_remote_code=self.plan.model.trust_remote_code)
            self._loaded = (key, model, tokenizer)
        return self._loaded[1], self._loaded[2]

    def drop_models(self) -> None:
        """Free the model kept for evaluation (and whatever the last stage's trainer, optimizer
        and reference left in reference cycles) before another model is loaded."""
        self._loaded = None
        release_memory()

    # -- stages ---------------------------------------------------------------------------------

    def base_stage(self) -> dict[str, Any]:
        key = base_stage_key(self.plan.model)
        with self.store.claim(key) as entry:
            if entry.usable_record() is None:
                entry.reset()
            self._ensure_evals(entry, key, self.plan.model.path)
            if entry.record() is None:
                entry.finish(trial_id=self.trial_id, status=FINISHED)
        return self._publish_evals(entry, 0)

    def resolve_start_points(self) -> None:
        """For a stage that starts from the best of the previous stage's seeds (paper §2.2:
        "we pick the best model for the first task"), make every candidate prefix exist, score
        each on a sample of its last task's validation split, and make the best the trial's own prefix,
        so its rows and forgetting are measured against the model the next stage started from."""
        stages = self.plan.stages
        for index, stage in enumerate(stages):
            start = stage.start_from
            if start is None:
                continue
            self.at = index  # the candidates' prefixes end at stage `index`
            # This trial's own candidate first: the seeds' trials then train their candidates
            # in parallel instead of queueing on the same lock.
            own = [c for c in start.candidates if c[-1].seed == stages[index - 1].seed]
            for candidate in own + [c for c in start.candidates if c not in own]:
                for i in range(len(candidate)):
                    with timings.phase(OTHER, stage=candidate[i].stage):
                        record = self._ensure_stage(candidate, i)[1]
                    if record.status != FINISHED:
                        break  # diverged: its later stages have no checkpoint to start from
            scores, n_validation = [], None
            for candidate in start.candidates:  # in seed order
                with timings.phase(VALIDATION, stage=candidate[-1].stage):
                    measured = self._validation_accuracy(candidate, start.validation_size)
                if measured is not None:  # None: the candidate diverged
                    score, n_validation = measured
                    scores.append((score, candidate))
            # Highest validation accuracy; max() keeps the first of equals, i.e. the lowest seed.
            # With no usable candidate the trial keeps its own prefix (and fails where it failed).
            best_score, best = max(scores, key=lambda sc: sc[0]) if scores else (None, stages[:index])
            self.selection[stage.stage] = json.dumps({
                "mode": start.mode, "chosen_seed": best[-1].seed, "validation_accuracy": best_score,
                "validation_split": start.validation_split, "n_validation": n_validation,
                "candidates": {str(c[-1].seed): score for score, c in scores}}, sort_keys=True)
            stages = tuple(best) + tuple(stages[index:])
        self.plan = dataclasses.replace(self.plan, stages=stages)

    def _validation_accuracy(self, candidate: tuple[StagePlan, ...], size: int) -> tuple[float | None, int] | None:
        """(accuracy, examples scored) of a candidate prefix's last model on a stratified sample
        of `size` examples of its task's validation split, stored with the stage (scored under
        the stage's claim); None if it diverged."""
        stage = candidate[-1]
        key = validation_key(SELECTION_SPLIT, size, self.keys)
        path = self.store.entry(stage.stage_key).paths.measure("validation", key, VALIDATION_SUFFIX)
        if not path.is_file():
            with self.store.claim(stage.stage_key) as entry:
                if not path.is_file():
                    record = entry.usable_record()
                    if record is None or record.status != FINISHED:
                        return None
                    if record.checkpoint_removed:
                        self._retrain(entry, candidate, len(candidate) - 1,
                                      f"its best_seed validation on {size} {SELECTION_SPLIT} examples is not stored")
                    self._score_validation(entry, stage, size, path)
                    self._release(entry, stage.stage_key)
        stored = json.loads(path.read_text())
        return stored["accuracy"], stored["n"]

    def _score_validation(self, entry: StageEntry, stage: StagePlan, size: int, path: Path) -> None:
        examples = validation_examples(self.plan, stage, size)
        timings.count(examples=len(examples))
        model, tokenizer = self.model_at(stage.stage_key, entry.checkpoint)
        with scoring(model, self.plan.eval_precision) as model:  # as the stage's evals are
            scored = evaluate_examples(model, encoder_for(self.plan.model, tokenizer), examples,
                                       batch_size=self.plan.training.eval_batch_size,
                                       max_length=self.plan.model.max_length)
        accuracy = sum(s.correct for s in scored) / len(scored) if scored else None
        write_json_atomic(path, {"accuracy": accuracy, "n": len(scored), "split": SELECTION_SPLIT})

    def _ensure_stage(self, stages: tuple[StagePlan, ...], index: int) -> tuple[StageEntry, StageRecord]:
        """Stage `index` of `stages`, stored and measured: reused, or trained here under its
        lock (trained again when a measurement is missing and the policy removed its
        checkpoint); then the checkpoints nothing planned needs any more are removed."""
        stage = stages[index]
        with self.store.claim(stage.stage_key) as entry:
            record = entry.usable_record()
            if record is None:
                entry.reset()  # unpublished first: from now on no trial removes the start checkpoint
                record = self._train(entry, stage, self._start_checkpoint(stages, index), stages)
            if record.status == FINISHED:
                missing = self._missing_measurement(entry, stage)
                if missing is not None and record.checkpoint_removed:
                    record = self._retrain(entry, stages, index, missing)
                self._ensure_evals(entry, stage.stage_key, entry.checkpoint)
                self._ensure_curvature(entry, stage)
                record = self._release(entry, stage.stage_key) or record
        for parent in _start_keys(stages, index) if self.needs is not None else ():
            # After this stage's claim is released: claims are only ever nested child to parent.
            with self.store.claim(parent) as parent_entry:
                self._release(parent_entry, parent)
        return entry, record

    # -- the checkpoint budget (contract.checkpoint_needs) --------------------------------------

    def _start_checkpoint(self, stages: tuple[StagePlan, ...], index: int) -> Path | str:
        """Where stage `index` starts from: the base model, or the previous stage's checkpoint,
        trained again (under its claim) if the policy removed it. The caller holds stage
        `index`'s claim and its record is unpublished, so nobody removes that checkpoint until
        the stage is stored again."""
        if index == 0:
            return self.plan.model.path
        parent = stages[index - 1]
        entry = self.store.entry(parent.stage_key)
        record = entry.record()
        if record is not None and record.checkpoint_removed:
            with self.store.claim(parent.stage_key) as entry:
                record = entry.usable_record()
                if record is not None and record.checkpoint_removed:
                    self._retrain(entry, stages, index - 1, f"stage {stages[index].stage_key} starts from it")
        return entry.checkpoint

    def _retrain(self, entry: StageEntry, stages: tuple[StagePlan, ...], index: int, why: str) -> StageRecord:
        """Train stage `index` again because the policy removed its checkpoint and `why` needs
        it (the caller holds its claim): same key, same inputs, so the same weights on a CPU;
        its measurements stay, its rows and record are written anew."""
        stage = stages[index]
        print(f"[chain] trial {self.trial_id}: training stage {stage.stage_key} again "
              f"(its checkpoint was removed by keep_checkpoints): {why}", file=sys.stderr, flush=True)
        entry.reset(keep_measures=True)
        record = self._train(entry, stage, self._start_checkpoint(stages, index), stages, retrained=why)
        if record.status != FINISHED:
            raise RuntimeError(f"stage {stage.stage_key}, trained again because {why}, did not finish this "
                               f"time: {record.reason}")
        return record

    def _missing_measurement(self, entry: StageEntry, stage: StagePlan) -> str | None:
        """What this trial measures on a stored stage that is not stored yet, or None."""
        if not (entry.has_measure("evals", self.keys.evals) and entry.has_measure("predictions", self.keys.evals)):
            return f"its evaluations for this study's eval tasks (key {self.keys.evals}) are not stored"
        if self.plan.curvature.measures(stage.stage) and not entry.has_measure("curvature", self.keys.curvature):
            return f"its curvature (key {self.keys.curvature}) is not stored"
        return None

    def _release(self, entry: StageEntry, key: str) -> StageRecord | None:
        """Under `key`'s claim: remove its checkpoint if the policy allows it now (every planned
        stage starting from it stored, its planned measurements stored); the new record, or None."""
        needs = None if self.needs is None else self.needs.get(key)
        if needs is None:
            return None
        record = entry.record()
        if (record is None or record.status != FINISHED or record.checkpoint_removed or not entry.reusable(record)
                or not entry.checkpoint.is_dir()):
            return None

        def stored(consumer: str) -> bool:
            found = self.store.entry(consumer).record()
            return found is not None and entry.reusable(found)

        def measured(m) -> bool:
            return entry.paths.measure(m.table, m.key, m.suffix).is_file()

        if not removable(needs, self.plan.run.keep_checkpoints, stored, measured):
            return None
        return entry.remove_checkpoint(record)

    def stage(self, index: int) -> dict[str, Any]:
        started = time.perf_counter()
        print(timings.stage_line(self.trial_id, self.plan.stages[index], len(self.plan.stages)), flush=True)
        metrics = self._stage(index)
        print(timings.stage_line(self.trial_id, self.plan.stages[index], len(self.plan.stages), metrics=metrics,
                                 seconds=time.perf_counter() - started), flush=True)
        return metrics

    def _stage(self, index: int) -> dict[str, Any]:
        stage = self.plan.stages[index]
        number = stage.stage
        self.at = number
        entry, record = self._ensure_stage(self.plan.stages, index)
        reused = not (record.trained_by == self.trial_id and record.run_id == self.store.run.run_id)
        for table in STAGE_TABLES:
            rows = entry.rows(table, self.trial_id)
            if rows:
                write_part(self.study_dir, table, stage_part(self.trial_id, number), rows)
        self.trial_rows[index] = trial_row(
            self.plan, stage, self.executor, status=FINISHED if record.status == FINISHED else FAILED,
            seconds=record.train_seconds, n_train=record.n_train_examples,
            trained_by=record.trained_by, trained_on=record.trained_on, reused=reused, failure=record.reason,
            start_from=self.selection.get(number))
        if record.status != FINISHED:
            self.status, self.failure = FAILED, f"stage {number}: {record.reason}"
            for later in range(index + 1, len(self.trial_rows)):
                self.trial_rows[later] = {**self.trial_rows[later], "status": SKIPPED,
                                          "failure": f"stage {number} failed"}
            write_part(self.study_dir, "trials", trial_part(self.trial_id), self.trial_rows)
            return {**self._metrics(number), "status": FAILED, "failure": self.failure}
        write_part(self.study_dir, "trials", trial_part(self.trial_id), self.trial_rows)
        metrics = self._publish_evals(entry, number)
        log_rows = entry.rows("train_log", self.trial_id)
        metrics.update({"train_seconds": record.train_seconds,
                        "train_loss": log_rows[-1]["loss"] if log_rows else float("nan")})
        if self.plan.curvature.measures(number):
            rows = entry.measure("curvature", self.keys.curvature, self.trial_id)
            write_part(self.study_dir, "curvature", stage_part(self.trial_id, number), rows)
            top = next((r for r in rows if r["group"] == ALL and r["eigenvalue"] is not None), None)
            if top is not None:
                metrics["spectral_radius"] = abs(top["eigenvalue"])
        return metrics

    def _train(self, entry: StageEntry, stage: StagePlan, previous_path: Path | str,
               stages: tuple[StagePlan, ...], retrained: str | None = None) -> StageRecord:
        """Train one stage from the previous stage's checkpoint; store checkpoint, rows, record
        (`retrained`: why a stage whose checkpoint the policy removed is trained again)."""
        number = stage.stage
        # Always from the stored checkpoint (not a model still in memory): a trial that trained
        # the previous stage and one that reused it must start from bit-identical states.
        self.drop_models()
        distributed.lead("train", stage, str(previous_path), stages)  # the other ranks train it with us
        work_dir = stage_work_dir(self.plan, number)
        inputs = stage_inputs(self.plan, stage, previous_path, stages)
        model, tokenizer = inputs.model, inputs.tokenizer
        if stage.replay is not None:
            entry.write_rows("replay", replay_rows(self.trial_id, number, stage.replay.from_stage, inputs.replayed))
        start = time.perf_counter()
        with timings.phase(TRAIN, task=stage.task):
            outcome = train_stage(self.plan, stage, inputs, work_dir)
        seconds = time.perf_counter() - start + inputs.reward_seconds
        del inputs  # `model` is the one reference left to the trained (maybe sharded) model
        shutil.rmtree(work_dir, ignore_errors=True)
        # FSDP: the gathered weights as a plain model, in the study's weights dtype (the dtype
        # every rank loads the checkpoint in, to evaluate it or train the next stage); else `model`.
        model = distributed.consolidate(model, dtype=weights_dtype(self.plan.model.dtype))
        # As if loaded from the checkpoint: without the bf16-autocast forward accelerate put on it.
        model = unwrapped(model)
        release_memory()  # the trainer's cycles (a sharded model, its optimizer) before saving and evaluating
        entry.write_rows("train_log", [{"trial_id": self.trial_id, "stage": number, **row} for row in outcome.log_rows])
        facts = {"train_seconds": seconds, "n_train_examples": outcome.n_examples, "retrained": retrained}
        reason = divergence(outcome.log_rows, model)
        if reason:
            return entry.finish(trial_id=self.trial_id, status=DIVERGED, reason=reason, **facts)
        staging = None
        try:
            with writing(entry.checkpoint):
                staging = entry.checkpoint_staging()
                save_checkpoint(model, tokenizer, staging)
            entry.write_rows("weights", [weight_row(self.trial_id, number, staging, previous_path, self.plan.model.path)])
            with writing(entry.checkpoint):
                entry.publish_checkpoint(staging)
        except BaseException:
            if staging is not None:  # a partial checkpoint is not kept, not even under its hidden name
                shutil.rmtree(staging, ignore_errors=True)
            raise
        self._loaded = (entry.key, model, tokenizer)
        return entry.finish(trial_id=self.trial_id, status=FINISHED, **facts)

    # -- measurements ---------------------------------------------------------------------------

    def _ensure_evals(self, entry: StageEntry, key: str, path: Path | str) -> None:
        if entry.has_measure("evals", self.keys.evals) and entry.has_measure("predictions", self.keys.evals):
            return
        model, tokenizer = self.model_at(key, path)
        # The other ranks load the same weights and run their share of every batch list with us.
        distributed.lead("evaluate", str(path))
        eval_rows, prediction_rows = evaluate_rows(self.plan, model, tokenizer, self.eval_sets(), shared=True)
        entry.write_measure("predictions", self.keys.evals, prediction_rows)
        entry.write_measure("evals", self.keys.evals, eval_rows)

    def _ensure_curvature(self, entry: StageEntry, stage: StagePlan) -> None:
        if not self.plan.curvature.measures(stage.stage) or entry.has_measure("curvature", self.keys.curvature):
            return
        self.drop_models()  # curvature loads its own float32 copy of the checkpoint
        with timings.phase(CURVATURE):
            rows = curvature_rows(self.plan, stage, entry.checkpoint, train_examples(self.plan, stage))
        entry.write_measure("curvature", self.keys.curvature, rows)

    def _publish_evals(self, entry: StageEntry, number: int) -> dict[str, Any]:
        """Copy the stage's stored evals/predictions into this trial's parts; its metrics."""
        eval_rows = [{**r, "stage": number} for r in entry.measure("evals", self.keys.evals, self.trial_id)]
        prediction_rows = [{**r, "stage": number}
                           for r in entry.measure("predictions", self.keys.evals, self.trial_id)]
        write_part(self.study_dir, "evals", stage_part(self.trial_id, number), eval_rows)
        write_part(self.study_dir, "predictions", stage_part(self.trial_id, number), prediction_rows)
        self.accuracy[number] = {}
        for row in eval_rows:
            # Forgetting is over each task's primary metric and primary groups only. (Every stored
            # row has a grouping: the column is older than TOKENIZATION_VERSION in measure keys.)
            if row["metric"] == primary_metric(row["eval_task"]) and row["grouping"] in PRIMARY_GROUPINGS:
                self.accuracy[number].setdefault(row["eval_task"], {})[row["group"]] = row["accuracy"]
        return self._metrics(number)

    def _metrics(self, number: int) -> dict[str, Any]:
        metrics: dict[str, Any] = {"stage": number, "trial_id": self.trial_id, "status": FINISHED}
        latest = self.accuracy.get(number, {})
        for e in self.plan.eval_tasks:
            metrics[f"{e.task}/{primary_metric(e.task)}"] = latest.get(e.task, {}).get(ALL, float("nan"))
        # Every report has the same keys (Tune's progress.csv takes its columns from the first).
        metrics.update({"train_seconds": float("nan"), "train_loss": float("nan")})
        if self.plan.curvature.enabled:
            metrics["spectral_radius"] = float("nan")
        trained = [(s.stage, s.task) for s in self.plan.stages]
        evaluated = {e.task for e in self.plan.eval_tasks}
        metrics.update(forgetting_metrics(trained, evaluated, self.accuracy, number))
        return metrics

    def finish(self, *, resumable: bool = False) -> None:
        self._write_timings(best_effort=resumable)
        write_record(StudyLayout(self.study_dir).trial_marker(self.trial_id), TrialMarker(
            trial_id=self.trial_id, run_id=self.store.run.run_id, status=self.status, failure=self.failure,
            stage_keys=tuple(s.stage_key for s in self.plan.stages), measure_keys=self.keys, resumable=resumable))
        shutil.rmtree(StudyLayout(self.study_dir).work(self.trial_id), ignore_errors=True)

    def _write_timings(self, *, best_effort: bool) -> None:
        """This trial's timings part (before its marker: a finished trial has one). After a failed
        write it is written if it can be; the marker must be."""
        try:
            write_part(self.study_dir, "timings", trial_part(self.trial_id), timings.trial_rows())
        except WriteError:
            if not best_effort:
                raise

    def write_failed(self, error: WriteError) -> dict[str, Any]:
        """End the trial as failed because something could not be written: the stage it was at
        is "failed" with the reason in trials.failure (stage 0, the base model's evaluation,
        on the first stage's row), the later ones "skipped", and its ledger marker is
        `resumable`, so `study run --resume` runs it again. The trials part is written if it
        can be; the marker must be (a WriteError from it propagates: the trial errors in Tune)."""
        number = self.at
        reason = f"write failed: {error}" if number else f"stage 0 (base model evaluation): write failed: {error}"
        self.status, self.failure = FAILED, f"stage {number}: write failed: {error}"
        failing = max(number, 1) - 1
        self.trial_rows[failing] = {**self.trial_rows[failing], "status": FAILED, "failure": reason}
        for later in range(failing + 1, len(self.trial_rows)):
            self.trial_rows[later] = {**self.trial_rows[later], "status": SKIPPED, "failure": f"stage {number} failed"}
        print(f"[chain] trial {self.trial_id}: stage {number}: {error}; `study run --resume` runs it again",
              file=sys.stderr, flush=True)
        try:
            write_part(self.study_dir, "trials", trial_part(self.trial_id), self.trial_rows)
        except WriteError:
            pass  # e.g. the trials folder is what cannot be written: the marker still says why
        self.finish(resumable=True)
        return {**self._metrics(number), "status": FAILED, "failure": self.failure}


@dataclasses.dataclass
class StageInputs:
    """What every rank trains a stage on."""

    model: Any
    """The model at the previous stage's checkpoint (the base model for stage 1)."""
    tokenizer: Any
    examples: list
    """The stage's training subsample, with the replayed examples."""
    replayed: list
    reward_model_path: str | None
    """Online RL with a reward model trained in the study: where it was saved."""
    reward_seconds: float
    """How long training that reward model took (part of the stage's training time)."""


def stage_inputs(plan: TrialPlan, stage: StagePlan, previous_path: Path | str,
                 stages: tuple[StagePlan, ...]) -> StageInputs:
    """A stage's inputs, in the order that keeps one model in training at a time: the data, then
    the reward model an online-RL stage trains (trained, saved and freed before the policy
    loads), then the policy."""
    examples, replayed = stage_examples(plan, stage, stages)
    start = time.perf_counter()
    reward_path = trained_reward_model(plan, stage, examples)
    reward_seconds = time.perf_counter() - start if reward_path is not None else 0.0
    model, tokenizer = load_model_and_tokenizer(str(previous_path), dtype=plan.model.dtype,
                                                trust_remote_code=plan.model.trust_remote_code)
    return StageInputs(model=model, tokenizer=tokenizer, examples=examples, replayed=replayed,
                       reward_model_path=reward_path, reward_seconds=reward_seconds)


def trained_reward_model(plan: TrialPlan, stage: StagePlan, examples: list) -> str | None:
    """The reward model an online-RL stage trains from the base model (its `reward.train`),
    trained by every rank of the trial together and saved gathered by rank 0 in rank 0's stage
    scratch (a folder every rank sees: the study folder is shared); None when the stage trains
    none. Its trainer and weights are freed before the policy loads."""
    if stage.method not in ONLINE_RL_METHODS or stage.online_rl.reward.train is None:
        return None
    from trainables.stages.reward_model import REWARD_MODEL_DIRNAME, train_reward_model

    writer_scratch = StudyLayout(Path(plan.study_dir)).stage_work(plan.trial_id, stage.stage, 0)
    with timings.phase(REWARD_MODEL, task=stage.task):
        path = train_reward_model(model_plan=plan.model, examples=examples, seed=stage.seed,
                                  settings=stage.online_rl.reward.train, training=plan.training,
                                  work_dir=str(stage_work_dir(plan, stage.stage)),
                                  out_dir=str(writer_scratch / REWARD_MODEL_DIRNAME))
    release_memory()
    return path


def stage_work_dir(plan: TrialPlan, number: int) -> Path:
    """The trainer's scratch folder, one per rank (the ranks of a trial may share a node)."""
    return StudyLayout(Path(plan.study_dir)).stage_work(plan.trial_id, number, ranks.rank())


def train_stage(plan: TrialPlan, stage: StagePlan, inputs: StageInputs, work_dir: Path):
    extra = {"reward_model_path": inputs.reward_model_path} if stage.method in ONLINE_RL_METHODS else {}
    return get_runner(stage.method)(
        model=inputs.model, tokenizer=encoder_for(plan.model, inputs.tokenizer), stage=stage,
        examples=inputs.examples, training=plan.training, model_plan=plan.model, work_dir=str(work_dir), **extra,
    )


def follow_training(plan: TrialPlan, stage: StagePlan, previous_path: str, stages: tuple[StagePlan, ...]) -> None:
    """A follower's part of a stage rank 0 trains: same inputs, same trainer (DDP/FSDP over the
    ranks), no writes."""
    work_dir = stage_work_dir(plan, stage.stage)
    inputs = stage_inputs(plan, stage, previous_path, stages)
    try:
        train_stage(plan, stage, inputs, work_dir)
        distributed.consolidate(inputs.model)  # FSDP: take part in gathering the weights; nothing otherwise
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        del inputs
        release_memory()  # the next stage this rank trains starts from an empty GPU


def follow_evaluation(plan: TrialPlan, path: str, eval_sets: dict[str, list]) -> None:
    """A follower's part of an evaluation rank 0 leads: the same weights read from `path`, its
    share of every batch (trainables.evaluation.over_ranks), no writes. `eval_sets`: the
    follower's cache of the eval examples, filled on first use."""
    if not eval_sets:
        eval_sets.update(plan_eval_sets(plan))
    model, tokenizer = load_model_and_tokenizer(path, dtype=plan.model.dtype,
                                                trust_remote_code=plan.model.trust_remote_code)
    try:
        evaluate_rows(plan, model, tokenizer, eval_sets, shared=True)
    finally:
        del model
        release_memory()


def clear_trial_parts(study_dir: Path, trial_id: str) -> None:
    """A (re)started trial replaces all of its earlier rows: a rerun with fewer stages or a
    different eval set must not leave stale parts beside the new ones."""
    for table in TABLE_NAMES:
        for part in StudyLayout(study_dir).trial_parts(table, trial_id):
            part.unlink()
