"""Run a validated study on Ray Tune: the one entry point from `study` into `trainables`.

    spec ─► data dir, base model (built once, here in the driver) ─► trial plans
         ─► Tune param_space {point: grid_search([{chain, seed, stage<k>.<field>…}, …])} ─► one trial per plan
         ─► results/<study>/{trials,evals,predictions,train_log}/*.parquet ─► report

Before anything is written, every file the study reads is checked (study.data_check): a bad
row stops the run with its FILE:LINE (exit 2), or, under data.bad_rows: skip, is left out,
recorded in the run record and keyed into every stage.

Everything under `<storage>/<study name>/`: the resolved study file (study.yaml), the plans
(plans.json), Parquet tables, the stage store (stages/<stage_key>/: checkpoints and stored
rows, shared by every trial whose chain starts with that stage), the trial ledger (_ledger/),
one record per `study run` (runs/<run id>.json), Tune's state (_tune/) and the report.

Resume and extend use our own ledger, not Tune's restore (which cannot change the search
space): with `resume=True`, trials whose ledger marker says they finished with the same eval
and curvature settings are not submitted again, and stages stored by earlier runs are reused;
the remaining points go to a fresh Tuner. Without it every trial runs and every stage is
trained again (once per run: trials of this run still share stages).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.atomic import WriteError, write_json_atomic, write_text_atomic
from contract.keys import same_measurements
from contract.layout import StudyLayout
from contract.plan import RunInfo, TrialPlan
from contract.problems import Problem, TokenizationError
from contract.records import FINISHED, RunCounts, RunRecord, SkippedRow, TrialMarker, read_record, write_record
from contract.secrets import redact
from study.planner import SampledPlans, build_plans, collect_plans
from study.spec import StudySpec, fsdp_on
from study.spec import study_dir as resolve_study_dir


# CPU share of a Tune trial that only hosts a TorchTrainer (its Train controller takes 0 CPUs;
# Ray refuses a 0-CPU trial bundle).
TRAIN_TRIAL_CPU = 0.01


@dataclass(frozen=True)
class RunOutcome:
    study_dir: Path
    trials: int
    failed: list[str]
    report: Path | None
    counts: dict[str, int] = field(default_factory=dict)
    """The run record's counts (contract.records.RunCounts, as a dict)."""


class RunPlans:
    """`config -> plan` for the trials of one `study run`: the plan, stamped with the run (its
    id, and whether stages stored by earlier runs may be reused). Grid trials get their point as
    `config["point"]` (a dict of chain, seed and grid values)."""

    def __init__(self, lookup, run: RunInfo):
        self.lookup = lookup
        self.run = run

    def __call__(self, config: dict[str, Any]) -> TrialPlan:
        return dataclasses.replace(self.lookup(config.get("point", config)), run=self.run)


def chat_format(spec: StudySpec, base_model_path: str | None) -> bool:
    """Whether the study's model is prompted through its chat template (`model.chat_template`
    resolved; the tokenizer is loaded only when the answer depends on it). The planner takes
    the answer (study.planner never imports trainables)."""
    from trainables.models import load_tokenizer
    from trainables.tokenization import resolve_chat_template

    def load():
        return load_tokenizer(str(base_model_path or spec.model.name), trust_remote_code=spec.model.trust_remote_code)

    return resolve_chat_template(spec.model.chat_template, spec.model.name, load=load)


def plan_point(plan: TrialPlan) -> dict[str, Any]:
    return {"chain": plan.chain, "seed": plan.seed, **plan.grid_point}


def finished_trials(study_dir: Path, plans: list[TrialPlan]) -> set[str]:
    """Trials an earlier run finished (or saw fail deterministically, e.g. diverge) with the
    same measurement settings: their rows are complete and need no new run. A trial that failed
    because something could not be written (its marker is `resumable`) runs again."""
    return {plan.trial_id for plan in plans
            if (marker := _marker(study_dir, plan.trial_id)) is not None
            and not marker.resumable and same_measurements(marker.measure_keys, plan)}


def run_counts(study_dir: Path, plans: list[TrialPlan], run_id: str, skipped: int) -> RunCounts:
    """Stage trainings this run executed against the naive count (every trial training every
    stage of its chain), and stages it reused from earlier runs."""
    from trainables.stage_store import stage_records

    keys = {s.stage_key for p in plans for s in p.stages}
    records = stage_records(study_dir, keys)
    executed = sum(1 for r in records if r.run_id == run_id)
    return RunCounts(
        trials=len(plans),
        trials_skipped=skipped,
        stage_trainings_naive=sum(len(p.stages) for p in plans),
        distinct_stages=len(keys),
        stage_trainings_executed=executed,
        stages_reused_from_earlier_runs=len(records) - executed,
    )


def run_study(spec: StudySpec, *, resume: bool = False, report: bool = True, verify_checkpoints: bool = False,
              force: bool = False, log=print) -> RunOutcome:
    """Run the study (see the module docstring). `verify_checkpoints`: hash every stored
    checkpoint of an earlier run before reusing it (trainables.stage_store; sizes are always
    checked). `force`: start a study the hardware preflight refuses (study.needs.refusal)."""
    from study.needs import refusal, render_needs
    from study.spec_loading import SpecError
    from tasks.source import data_source_line
    from trainables.quiet_logs import quiet_libraries

    quiet_libraries()  # the driver's preflight loads tokenizers and configs: the same noise as a trial's
    study_dir = resolve_study_dir(spec)  # <storage>/<name>, checked to resolve inside storage
    log(data_source_line(spec.data_dir))
    check_hub_data(spec)  # no mirror: every dataset the study reads fetched, those the Hub cannot give named
    check_example_counts(spec)  # before anything is written
    data = check_study_data(spec)  # every file the study reads; bad rows refused (or skipped) before anything is written
    for line in skipped_lines(data.bad):
        log(f"[study] {line}")
    # every 'auto' of the GPU budget resolved before anything is planned; what the study needs, printed
    spec, lines, needs, memory_error = study_needs(spec, fresh=not resume)
    for line in render_needs(needs):
        log(f"[study] {line}")
    refused = refusal(needs, list(memory_error.problems) if memory_error else [])
    if refused and not force:
        raise SpecError(refused, source=f"study {spec.name!r} (hardware)")
    for problem in refused if force else []:
        if problem.path:  # (not the line saying what to change)
            log(f"[study] --force: started anyway: {problem}")
    study_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive_run(study_dir):
        return _run_study(spec, study_dir, data=data, resume=resume, report=report,
                          verify_checkpoints=verify_checkpoints, log=log)


def check_study_data(spec: StudySpec) -> Any:
    """The data check (study.data_check.check_data) of every split the study reads, the tiny
    model's tokenizer corpus included: BadRowsError under data.bad_rows: error when a row is bad
    (`study run` and `study validate --data` exit 2); under skip, the DataCheck with the rows
    the trials will leave out."""
    from study.data_check import check_data

    return check_data(spec, _extra_reads(spec))


def check_hub_data(spec: StudySpec) -> None:
    """With no mirror configured, every dataset the study reads (the tiny model's corpus
    included) fetched from the Hub: DataUnavailableError (exit 2) naming those it cannot give."""
    from study.data_check import check_hub, needed_reads
    from tasks import resolve_data_dir

    if resolve_data_dir(spec.data_dir) is None:
        check_hub(needed_reads(spec, _extra_reads(spec)))


def _extra_reads(spec: StudySpec) -> tuple[tuple[str, str], ...]:
    """What a study reads beyond its stages and eval sets: the tiny model's tokenizer corpus."""
    if spec.model.name != "tiny":
        return ()
    from trainables.tiny_model import CORPUS_TASKS

    return tuple((task, "train") for task in CORPUS_TASKS)


def skipped_lines(bad: tuple[Problem, ...], limit: int = 20) -> list[str]:
    """What a run prints about the rows data.bad_rows: skip leaves out: how many, the first `limit`."""
    if not bad:
        return []
    lines = [f"data.bad_rows: skip: {len(bad)} bad row{'s' if len(bad) != 1 else ''} left out:"]
    lines += [f"  {p}" for p in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more (runs/<run id>.json lists them all)")
    return lines


class StudyBusyError(RuntimeError):
    """Another `study run` is working in the same study folder."""


@contextlib.contextmanager
def _exclusive_run(study_dir: Path):
    """One `study run` per study folder at a time: a second run without --resume would retrain
    (and replace) stages the first is still using. Held for the whole run (flock: released if
    the driver dies)."""
    import fcntl

    with open(StudyLayout(study_dir).run_lock, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StudyBusyError(f"another `study run` is using {study_dir}; wait for it to end "
                                 "(`study status` shows its progress)") from None
        yield


def _run_study(spec: StudySpec, study_dir: Path, *, data: Any, resume: bool, report: bool, verify_checkpoints: bool,
               log) -> RunOutcome:
    import yaml

    from trainables.models import resolve_base_model
    from tasks import resolve_data_dir

    data_dir = resolve_data_dir(spec.data_dir)
    data_dir = str(Path(data_dir).resolve()) if data_dir else None
    # Built inside the study folder: on a multi-node cluster every trial finds it in storage.
    skip = spec.data.bad_rows == "skip"
    bad_rows = data.plan() if skip else None
    base_model = resolve_base_model(spec.model.name, data_dir, cache_dir=StudyLayout(study_dir).models,
                                    bad_rows=spec.data.bad_rows)
    log(f"[study] base model: {base_model}")
    check_tokenization(spec, base_model, data_dir, log)
    check_curvature(spec, base_model)
    write_text_atomic(StudyLayout(study_dir).study_file, yaml.safe_dump(spec.to_dict(), sort_keys=False))
    chat = chat_format(spec, base_model)
    # An Optuna search samples its trials as it goes: no trial knows which stages later ones
    # start from, so none of its checkpoints is removed (contract.checkpoint_needs needs the plans).
    keep = spec.keep_checkpoints if spec.search is None else "all"
    if keep != spec.keep_checkpoints:
        log(f"[study] keep_checkpoints: {spec.keep_checkpoints} applies to grid studies; "
            "a search keeps every stage checkpoint")
    run = RunInfo(run_id=uuid.uuid4().hex[:12], reuse_earlier_runs=bool(resume),
                  verify_checkpoints=bool(verify_checkpoints), keep_checkpoints=keep)
    started = time.time()
    if spec.search is None:
        plans = build_plans(spec, study_dir=study_dir, data_dir=data_dir, base_model_path=base_model, chat=chat,
                            bad_rows=bad_rows)
        write_plans(study_dir, plans)
        done = finished_trials(study_dir, plans) if resume else set()
        pending = [p for p in plans if p.trial_id not in done]
        if done:
            log(f"[study] resume: {len(done)} of {len(plans)} trial{'s' if len(plans) != 1 else ''} already finished; "
                f"running {len(pending)}")
        failed = _run_trials(spec, plans, pending, run, log) if pending else []
    else:
        # Points are sampled while the study runs: plans are built per trial, and plans.json
        # lists the trials that ran. With --resume, stages stored by earlier runs are reused
        # (the seeded sampler proposes the same first points again, with the same stage keys).
        done = set()
        lookup = SampledPlans(spec, study_dir, data_dir, base_model, chat=chat, bad_rows=bad_rows)
        plans, failed = _run_search(spec, lookup, run, log)
        write_plans(study_dir, plans)
        pending = plans
    # Failed (diverged) trials: those of this run, and those a resume skipped (still failed).
    failed += [f"{p.trial_id}: {m.failure}" for p in plans
               if (m := _marker(study_dir, p.trial_id)) and m.status != FINISHED]
    counts = run_counts(study_dir, plans, run.run_id, skipped=len(done))
    write_record(StudyLayout(study_dir).run(run.run_id), RunRecord(
        run_id=run.run_id, resume=bool(resume), started=started, finished=time.time(), counts=counts,
        failed=tuple(redact(f) for f in failed),  # Tune's error texts: no secret from the environment
        skipped_rows=tuple(SkippedRow(*row) for row in data.rows()) if skip else ()))
    log(f"[study] stage trainings: {counts.stage_trainings_executed} executed, "
        f"{counts.stages_reused_from_earlier_runs} reused from earlier runs, "
        f"naive count {counts.stage_trainings_naive} ({counts.distinct_stages} distinct stages)")
    report_path = None
    if report:
        from analysis.report import write_report

        try:
            report_path = write_report(study_dir)
        except (FileNotFoundError, WriteError) as exc:  # e.g. every trial failed before its first evaluation
            log(f"[study] no report written: {exc}")
    return RunOutcome(study_dir=study_dir, trials=len(plans), failed=failed, report=report_path,
                      counts=counts.to_dict())


def write_plans(study_dir: Path, plans: list[TrialPlan]) -> None:
    """plans.json: the trials of the latest run, in their dict form (contract.plan), keys in
    the order to_dict writes them."""
    write_json_atomic(StudyLayout(study_dir).plans, [p.to_dict() for p in plans], sort_keys=False)


def check_example_counts(spec: StudySpec) -> None:
    """The study file's checks that need the data (study.spec_checks_tasks.example_count_problems)
    on Hub data: validating a study checks a local mirror only and downloads nothing, so on the
    Hub they run here, before anything is written (SpecError: `study run` exits 2)."""
    from study.spec_checks_tasks import example_count_problems
    from study.spec_loading import SpecError
    from tasks import resolve_data_dir

    if resolve_data_dir(spec.data_dir) is not None:
        return  # checked when the spec was validated
    problems = example_count_problems(spec, None)
    if problems:
        raise SpecError(problems, source=f"study {spec.name!r} (Hub data)")


def check_memory(spec: StudySpec, *, local_files_only: bool = False, force: bool = False) -> tuple[StudySpec, list[str]]:
    """The memory preflight (trainables.memory_preflight): a study whose steps do not fit its
    workers' GPUs raises SpecError (`study run` and `study validate` exit 2), each problem at its
    stage's field path with what would fit, and the evaluation batch sizes are checked against
    one GPU (trainables.memory_preflight.eval_batch_sizes). Returns the spec with execution.fsdp,
    training.activation_checkpointing and (GPU studies) the evaluation batch sizes resolved
    ('auto' replaced by what the memory model chose for a GPU study, by false for a CPU study:
    the values planning, the stage keys and the workers read) and the lines `study validate` prints: what 'auto' resolved to and why, the estimate
    of each distinct step and of the evaluation batches (nothing for a CPU study). With
    `local_files_only` (`study validate`) a model config that is not on this machine is not
    downloaded: the check is skipped with a line saying so, and a GPU study's 'auto' is left to
    `study run`. With `force` (`study run --force`) nothing is refused (the caller reports the problems:
    `study_needs`)."""
    from study.spec_loading import SpecError
    from trainables.memory_preflight import memory_preflight

    try:
        report = memory_preflight(spec, local_files_only=local_files_only)
        evals = eval_batch_report(spec, local_files_only=local_files_only)
    except OSError as exc:
        if not local_files_only:
            raise
        return spec, [f"memory: not checked: a model config is not on this machine ({exc.__class__.__name__}); "
                      "`study run` reads it and checks before anything runs (and resolves 'auto')"]
    over = report.problems + evals.problems
    if over and not force:
        raise SpecError(over, source=f"study {spec.name!r} (memory per worker)")
    if over:  # `study run --force`: started anyway; an evaluation batch that fits nowhere runs one row at a time
        evals = dataclasses.replace(evals, eval_batch_size=evals.eval_batch_size or 1,
                                    generation_batch_size=evals.generation_batch_size or 1)
    resolved = dataclasses.replace(
        spec, execution=dataclasses.replace(spec.execution, fsdp=report.fsdp),
        training=dataclasses.replace(spec.training, activation_checkpointing=report.activation_checkpointing))
    if spec.execution.gpus_per_trial > 0:
        resolved = _with_eval_batches(resolved, evals)
    return resolved, report.lines + evals.lines


def study_needs(spec: StudySpec, *, local_files_only: bool = False,
                fresh: bool = True) -> tuple[StudySpec, list[str], Any, Any]:
    """What the study needs (study.needs.Needs: parameters, the largest step's memory, Hub
    access, the cost plan's counts), with `check_memory`'s resolved spec and lines, and its
    SpecError when a step does not fit (None when every step fits): raised by the caller, after
    the needs are printed. `local_files_only` (`study validate`): no config downloaded, and
    nothing counted when the data would come from the Hub. `fresh`: counted as a run without
    --resume."""
    from study.needs import Needs, gated_on_hub, trial_count
    from study.spec_loading import SpecError
    from study.throughput import DEFAULT_TABLE, load_table
    from tasks import resolve_data_dir
    from trainables.memory_preflight import trial_memory

    error = None
    try:
        resolved, lines = check_memory(spec, local_files_only=local_files_only)
    except SpecError as exc:
        error = exc
        resolved, lines = check_memory(spec, local_files_only=local_files_only, force=True)
    ex, table = resolved.execution, load_table(DEFAULT_TABLE)
    found: dict[str, Any] = dict(model=spec.model.name, on_gpu=ex.gpus_per_trial > 0, gpus_per_trial=ex.gpus_per_trial,
                                 gpu_memory_gb=ex.gpu_memory_gb, fsdp=ex.fsdp is True, workers=ex.workers_per_trial,
                                 gated=gated_on_hub(spec.model.name), trials=trial_count(spec))
    try:
        memory = trial_memory(resolved, local_files_only=local_files_only)
        found.update(params=memory.params, memory=memory)
    except (OSError, ValueError) as exc:
        found["config_note"] = ("its config is not on this machine (`study run` reads it)" if local_files_only
                                else f"its config could not be fetched ({exc.__class__.__name__})")
        found["params"] = table.model_params.get(spec.model.name)  # published counts (study/throughput.yaml)
    if spec.search is not None:
        found["counts_note"] = "an Optuna search plans its stages as it samples them"
    elif local_files_only and resolve_data_dir(spec.data_dir) is None:
        found["counts_note"] = "stages and examples counted by `study plan` (it reads the data from the Hub)"
    else:
        try:
            found["cost"], _ = plan_costs(resolved, fresh=fresh, chars_per_token=table.chars_per_token,
                                          model_params=table.model_params, force=True)
        except (OSError, ValueError) as exc:  # data or tokenizer problems: the checks that own them report them
            found["counts_note"] = f"stages and examples not counted: {str(exc).splitlines()[0][:200]}"
    return resolved, lines, Needs(**found), error


def eval_batch_report(spec: StudySpec, *, local_files_only: bool = False) -> Any:
    """The evaluation batch sizes of a GPU study from the memory model
    (trainables.memory_preflight.EvalBatchReport; empty for a CPU study)."""
    from study.planner import uses_generation
    from study.spec import eval_precision
    from trainables.memory_preflight import eval_batch_sizes

    return eval_batch_sizes(spec, precision=eval_precision(spec), generates=uses_generation(spec),
                            local_files_only=local_files_only)


def with_eval_batch_sizes(spec: StudySpec) -> StudySpec:
    """`spec` with a GPU study's `auto` evaluation batch sizes replaced by the memory model's
    numbers, so the planner (which never imports trainables) plans, keys and ships integers. A
    CPU study is returned as it is: the planner gives its auto the CPU value
    (study.spec.eval_batch_size). SpecError when a batch does not fit (`check_memory` says so first)."""
    from study.spec_loading import SpecError

    if not spec.execution.gpus_per_trial > 0:
        return spec
    report = eval_batch_report(spec)
    if report.problems:
        raise SpecError(report.problems, source=f"study {spec.name!r} (memory per worker)")
    return _with_eval_batches(spec, report)


def _with_eval_batches(spec: StudySpec, report: Any) -> StudySpec:
    """`spec` with its `auto` evaluation batch sizes replaced by `report`'s (an EvalBatchReport)."""
    training, generation = spec.training, spec.generation
    if training.eval_batch_size == "auto":
        training = dataclasses.replace(training, eval_batch_size=report.eval_batch_size)
    if generation.batch_size == "auto" and report.generation_batch_size is not None:
        generation = dataclasses.replace(generation, batch_size=report.generation_batch_size)
    return dataclasses.replace(spec, training=training, generation=generation)


def check_tokenization(spec: StudySpec, base_model: str, data_dir: str | None, log) -> None:
    """The tokenization preflight (trainables.token_preflight) before anything trains: its
    warnings are logged; its errors raise TokenizationError (`study run` exits 2)."""
    from trainables.token_preflight import preflight

    report = preflight(spec, base_model, data_dir)
    for warning in report.warnings:
        log(f"[study] warning: {warning}")
    if report.errors:
        raise TokenizationError(report.error_message())


def check_curvature(spec: StudySpec, base_model: str) -> None:
    """Refuse a CPU study's curvature over more parameters than its vectors may hold (SpecError on
    curvature.parameters, with a suggested regex: trainables.curvature.budget), from the base
    model's config built on the meta device, before anything trains.

    One judgement per study: a GPU study's curvature is judged by the memory preflight
    (`check_memory`: the memory model's curvature step against the worker's whole GPU, whose
    advice names the same kind of regex), so it is not judged here again. A CPU study has no
    memory budget the driver knows (its workers run wherever Ray places them, and the memory
    preflight checks no CPU study), so it keeps the fixed vector budget
    (budget.CURVATURE_VECTOR_BUDGET_BYTES): the bound the measurement itself checks on a CPU
    worker before its first Hessian-vector product (trainables.curvature.lm.check_fits), so what
    this accepts runs."""
    c = spec.curvature
    if not c.enabled or spec.execution.gpus_per_trial > 0:
        return
    from study.spec_loading import SpecError
    from trainables.curvature.budget import model_parameter_sizes, subset_problem

    sizes = model_parameter_sizes(base_model, trust_remote_code=spec.model.trust_remote_code)
    problem = subset_problem(sizes, c.parameters, algorithms=c.algorithms, top_k=c.top_k,
                             max_iterations=c.max_iterations, trace_samples=c.trace_samples)
    if problem is not None:
        raise SpecError([Problem("curvature.parameters", problem)], source=f"study {spec.name!r} ({base_model})")


def tokenization_preview(spec: StudySpec) -> tuple[str, str | None]:
    """`study validate --show-tokens`: what the model will see (one example of each task
    rendered, each option's scored tokens, tokenization warnings) and the preflight's error
    message, None when it found no error. Nothing is written to storage: the tiny model is built
    in the default cache, not in a study folder."""
    from tasks import resolve_data_dir
    from trainables.models import resolve_base_model
    from trainables.token_preflight import preflight

    data_dir = resolve_data_dir(spec.data_dir)
    report = preflight(spec, resolve_base_model(spec.model.name, str(data_dir) if data_dir else None,
                                                bad_rows=spec.data.bad_rows),
                       str(data_dir) if data_dir else None)
    return report.render(show_tokens=True, errors=False), report.error_message() if report.errors else None


def _run_trials(spec: StudySpec, plans: list[TrialPlan], pending: list[TrialPlan], run: RunInfo, log) -> list[str]:
    """Run the pending trials of a grid on Ray Tune; the errors of trials that failed (Tune level)."""
    from ray import tune

    from trainables.tune_trial import PlanLookup

    # Only the points still to run (Tune's grid cannot express "the product minus what is
    # done"); each point carries its chain, seed and grid values for Tune's tables.
    space = {"point": tune.grid_search([plan_point(p) for p in pending])}
    results = _tune(spec, PlanLookup(plans), space, {}, run, log, len(pending), Path(plans[0].study_dir))
    plan_for = RunPlans(PlanLookup(plans), run)
    return [plan_for(r.config).trial_id + f": {r.error}" for r in results if r.error]


def _run_search(spec: StudySpec, lookup: SampledPlans, run: RunInfo, log) -> tuple[list[TrialPlan], list[str]]:
    """Run an Optuna search on Ray Tune: the plans of the trials that ran, and Tune-level errors."""
    from study.search import search_setup

    setup = search_setup(spec)
    results = _tune(spec, lookup, setup.param_space, setup.tune_config_kwargs(), run, log,
                    setup.num_samples, Path(lookup.study_dir))
    for chain in spec.chains:
        for config, values in setup.search_alg.best(chain):
            log(f"[study] best of {chain}: {config} -> {dict(zip([m for m, _ in setup.objectives], values))}")
    plans = collect_plans([r.config for r in results], lookup)
    return plans, [lookup(r.config).trial_id + f": {r.error}" for r in results if r.error]


def _tune(spec: StudySpec, lookup, param_space: dict, search_kwargs: dict, run: RunInfo, log, trials: int,
          study_dir: Path) -> list:
    """One Tuner over `param_space` (+ search_alg/num_samples/metric/mode); its results."""
    from study.cluster import cluster_cpus, cluster_gpus, connect
    from trainables.stage_claims import coordinating
    from trainables.tune_trial import chain_trial, choose_executor

    log(f"[study] {connect()}")
    from ray import tune

    ex = spec.execution
    executor = choose_executor(ex.executor, workers=ex.workers_per_trial, gpus=ex.gpus_per_trial)
    # A function trial holds its worker's resources itself; a TorchTrainer trial only hosts the
    # Train controller (a small CPU fraction: Ray refuses 0-CPU trial bundles) and its worker
    # asks for the rest.
    if executor == "function":
        trial_resources = {"cpu": ex.cpus_per_trial, "gpu": ex.gpus_per_trial}
        worker_cpus, worker_gpus = ex.cpus_per_trial, ex.gpus_per_trial
    else:
        # Trial + its workers together take cpus_per_trial (and gpus_per_trial), split evenly over
        # the workers, so N trials fit where N trials' workers do.
        trial_resources = {"cpu": TRAIN_TRIAL_CPU}
        worker_cpus = max(TRAIN_TRIAL_CPU, (ex.cpus_per_trial - TRAIN_TRIAL_CPU) / ex.workers_per_trial)
        worker_gpus = ex.gpus_per_trial / ex.workers_per_trial
    limit = ex.max_concurrent_trials or max(1, int(cluster_cpus() // ex.cpus_per_trial))
    if ex.gpus_per_trial:
        limit = min(limit, max(1, int(cluster_gpus() // ex.gpus_per_trial)))
    log(f"[study] {'up to ' if spec.search else ''}{trials} trial{'s' if trials != 1 else ''} to run, "
        f"executor={executor}, up to {limit} at a time")

    plan_for = RunPlans(lookup, run)
    trainable = tune.with_resources(
        tune.with_parameters(chain_trial, plan_for=plan_for, executor=executor, cpus_per_worker=worker_cpus,
                             gpus_per_worker=worker_gpus, max_failures=ex.max_failures,
                             workers=ex.workers_per_trial, fsdp=fsdp_on(spec)),
        trial_resources,
    )

    def trial_name(trial) -> str:
        return plan_for(trial.config).trial_id

    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(**search_kwargs, max_concurrent_trials=limit, trial_name_creator=trial_name,
                                    trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(name=spec.name, storage_path=str(StudyLayout(study_dir).tune),
                                  failure_config=tune.FailureConfig(max_failures=ex.max_failures), verbose=1),
    )
    # Trials claim their stages through this run's coordinator, on every node (trainables.stage_claims).
    with coordinating(study_dir):
        return list(tuner.fit())


def _marker(study_dir: Path, trial_id: str) -> TrialMarker | None:
    return read_record(TrialMarker, StudyLayout(study_dir).trial_marker(trial_id))


def plan_costs(spec: StudySpec, *, fresh: bool = False, chars_per_token: float, model_params: dict[str, int],
               force: bool = False) -> Any:
    """`study plan`: the study's plans counted (study.cost_plan.CostPlan) without training or
    loading weights and without writing to storage: the tiny model is built in this machine's
    cache (its plans name the folder `study run` builds it in, so the keys match); a Hub model's
    tokenizer and config are read only when they are on this machine (else tokens are estimated
    from `chars_per_token` and parameters come from `model_params`, by model name). `force`: a
    study whose steps do not fit its GPUs is counted anyway (`study run --force`)."""
    from study.cost_plan import count_plan
    from tasks import resolve_data_dir
    from trainables.models import resolve_base_model
    from trainables.token_counts import checkpoint_parameters, load_counter

    spec, _ = check_memory(spec, local_files_only=True, force=force)
    study_dir = resolve_study_dir(spec)
    data_dir = resolve_data_dir(spec.data_dir)
    data_dir = str(Path(data_dir).resolve()) if data_dir else None
    built = resolve_base_model(spec.model.name, data_dir, bad_rows=spec.data.bad_rows)
    base_model = str(StudyLayout(study_dir).models / Path(built).name) if spec.model.name == "tiny" else built
    try:
        chat = chat_format(spec, built)
    except OSError:  # a chat model's tokenizer not on this machine: planned as plain text
        chat = False
    bad_rows = check_study_data(spec).plan() if spec.data.bad_rows == "skip" else None
    plans = build_plans(spec, study_dir=study_dir, data_dir=data_dir, base_model_path=base_model, chat=chat,
                        bad_rows=bad_rows)
    params = checkpoint_parameters(built, trust_remote_code=spec.model.trust_remote_code)
    if params is None:
        params = model_params.get(spec.model.name)
    weight_bytes = 2 if spec.model.dtype == "bfloat16" else 4  # trainables.models.weights_dtype
    files = CHECKPOINT_FILES_BYTES
    if Path(built).is_dir() and params:  # a local model (the tiny one): its files as they are
        sizes = [(f.suffix, f.stat().st_size) for f in Path(built).iterdir() if f.is_file()]
        files = sum(n for suffix, n in sizes if suffix != ".safetensors")
        header = sum(n for suffix, n in sizes if suffix == ".safetensors") - params * weight_bytes
        files += header if 0 <= header < 10**7 else 0  # safetensors' header, when saved in the same dtype
    counter = load_counter(built, chat=chat, trust_remote_code=spec.model.trust_remote_code,
                           chars_per_token=chars_per_token)
    cost = count_plan(plans, counter, checkpoint_bytes=(params or 0) * weight_bytes + files,
                      policy=spec.keep_checkpoints, study=spec.name, fresh=fresh)
    if params is None:
        cost.notes.append(f"checkpoint size unknown: no config of {spec.model.name} on this machine "
                          "and no parameter count in the throughput table")
    return cost, params


CHECKPOINT_FILES_BYTES = 3_000_000
"""A Hub model's tokenizer and config files in a checkpoint when they are not on this machine
(Llama-2's tokenizer.json, tokenizer.model and configs: about 2.4 MB), an estimate."""
