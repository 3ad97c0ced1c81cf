"""The study file's checks that ask the task registry and the data.

Which tasks a stage may train on with its method (a train split, answers for SFT/DPO, a reward
for online RL on prompt-only tasks), what needs answers from an earlier stage's task (replay,
best-seed selection, curvature), each task's eval_modes and option_counts, the task files, and,
when a local mirror is named, that it holds every file the study reads and enough examples
(`example_count_problems`, which `study run` repeats on Hub data before anything starts).
Called from study/spec_checks.py.
"""

from __future__ import annotations

from contract.methods import DPO, EVAL_MODES, SFT
from contract.plan import DEFAULT_EVAL_MODES
from contract.problems import Problem
from study.spec import OPTION_COUNTS, StageSpec, StudySpec, TaskSpec
from tasks import SPLITS, get_task, load_examples, resolve_data_dir, task_names
from tasks.task_file_registration import register_task_file
from tasks.loading import option_count_histogram
from tasks.toxigen import ANNOTATED_MIRROR_FILE


def task_file_problems(spec: StudySpec) -> list[Problem]:
    """Register the study's YAML task files in this process (so the names below resolve);
    a file that does not load is reported with its own file:line problems."""
    if not spec.task_files:
        return []
    out = []
    for i, path in enumerate(spec.task_files):
        try:
            register_task_file(path)
        except (OSError, ValueError) as exc:
            out.append(Problem(f"task_files[{i}]", str(exc)))
    return out


def stage_task_problems(spec: StudySpec, stages: tuple[StageSpec, ...], i: int, path: str) -> list[Problem]:
    """A stage can only train on a task with a train split, of a kind its method can use; what
    needs answers from an earlier stage's task (replay into SFT/DPO, best-seed selection by
    accuracy, curvature of the training loss) cannot use a prompt-only task."""
    stage = stages[i]
    task = get_task(stage.task)

    def prompt_only(k: int) -> bool:  # stage k (0-based) trains on a generation task
        return stages[k].task in task_names() and get_task(stages[k].task).kind == "generation"

    if stage.replay is not None and 1 <= stage.replay.from_stage <= i and prompt_only(stage.replay.from_stage - 1):
        return [Problem(f"{path}.replay.from_stage", f"stage {stage.replay.from_stage} trains on prompt-only task "
                                                     f"'{stages[stage.replay.from_stage - 1].task}': nothing to replay")]
    if stage.start_from == "best_seed" and i > 0 and prompt_only(i - 1):
        return [Problem(f"{path}.start_from", f"best_seed picks by accuracy on stage {i}'s task, and "
                                              f"'{stages[i - 1].task}' has no answers to score")]
    if (stage.start_from == "best_seed" and i > 0 and stages[i - 1].task in task_names()
            and not get_task(stages[i - 1].task).has_validation):
        return [Problem(f"{path}.start_from", f"best_seed picks on stage {i}'s task's validation split, and "
                                              f"'{stages[i - 1].task}' has none")]
    if task.kind == "generation" and spec.curvature.enabled and i + 1 in spec.curvature.stages:
        return [Problem("curvature.stages", f"stage {i + 1} trains on prompt-only task '{task.name}': "
                                            "its training loss has no curvature to measure")]
    if not task.trainable:
        return [Problem(f"{path}.task", f"task '{task.name}' is evaluation-only (no train split); "
                                        "list it under eval_tasks instead")]
    if task.kind == "generation":
        if stage.method in (SFT, DPO):
            return [Problem(f"{path}.task", f"task '{task.name}' has prompts but no answers: method "
                                            f"'{stage.method}' needs an answer task (ppo or rloo can use it)")]
        rl = getattr(stage, stage.method, None)
        if rl is not None and rl.reward.model is None:
            return [Problem(f"{path}.{stage.method}.reward.model",
                            f"task '{task.name}' has no preference pairs to train a reward model on: "
                            "name a reward model")]
    return []


def option_count_problems(name: str, settings: TaskSpec, known: tuple[str, ...]) -> list[Problem]:
    counts, path = settings.option_counts, f"tasks.{name}.option_counts"
    if counts is None:
        return []
    if not counts:
        return [Problem(path, "at least one option count is required, e.g. [4]; null keeps the task's default")]
    out = [Problem(f"{path}[{i}]", f"must be one of {OPTION_COUNTS[0]}..{OPTION_COUNTS[-1]} (got {n})")
           for i, n in enumerate(counts) if n not in OPTION_COUNTS]
    if len(set(counts)) != len(counts):
        out.append(Problem(path, "counts must be distinct"))
    if name in known and get_task(name).kind != "choice":
        out.append(Problem(path, f"task '{name}' is a {get_task(name).kind} task: its items have no options"))
    return out


def eval_mode_problems(name: str, settings: TaskSpec, known: tuple[str, ...]) -> list[Problem]:
    path = f"tasks.{name}.eval_modes"
    if not settings.eval_modes:
        return [Problem(path, f"at least one mode is required ({', '.join(EVAL_MODES)})")]
    out = [Problem(path, f"unknown mode '{m}' (expected one of {', '.join(EVAL_MODES)})")
           for m in settings.eval_modes if m not in EVAL_MODES]
    if len(set(settings.eval_modes)) != len(settings.eval_modes):
        out.append(Problem(path, "modes must be distinct"))
    if name in known and get_task(name).kind == "generation" and tuple(settings.eval_modes) != DEFAULT_EVAL_MODES:
        out.append(Problem(path, f"task '{name}' is a generation task: it is always generated and classified"))
    return out


def data_problems(spec: StudySpec) -> list[Problem]:
    """The local mirror, when one is named (data_dir or $STUDY_DATA_DIR), must hold every file
    the study reads, and the data in it what the study needs (example_count_problems): checked
    here so a bad path or setting fails validation, not a trial."""
    try:
        root = resolve_data_dir(spec.data_dir)
    except (FileNotFoundError, NotADirectoryError) as exc:
        return [Problem("data_dir", str(exc))]
    if root is None:
        return []  # the Hugging Face Hub
    out = []
    judged = [t for t in spec.all_eval_tasks() if t in task_names() and get_task(t).kind == "generation"]
    if judged and spec.generation.classifier == "local":
        if not (root / ANNOTATED_MIRROR_FILE).is_file():
            out.append(Problem("generation.classifier", f"the local classifier trains on {root / ANNOTATED_MIRROR_FILE}, "
                                                        f"which is missing (needed to judge {', '.join(judged)})"))
    missing = []
    for task, splits in needed_splits(spec).items():
        for split in sorted(splits):
            try:
                get_task(task).mirror.paths(root, split)
            except FileNotFoundError:
                relative = get_task(task).mirror.files[split]
                missing.append(Problem("data_dir", f"{root} has no {relative} (task {task}, {split} split)"))
    return out + (missing or example_count_problems(spec, str(root)))


def needed_splits(spec: StudySpec) -> dict[str, set[str]]:
    """task -> the splits a study reads: train for stage tasks, eval for evaluated ones, and
    validation for the task a best_seed stage picks on. Unknown tasks and splits a task lacks
    are left out (reported elsewhere)."""
    needed: dict[str, set[str]] = {}
    for stages in spec.chains.values():
        for i, stage in enumerate(stages):
            needed.setdefault(stage.task, set()).add("train")
            if stage.start_from == "best_seed" and i > 0:
                needed.setdefault(stages[i - 1].task, set()).add("validation")
    for task in spec.all_eval_tasks():
        needed.setdefault(task, set()).add("eval")
    return {task: splits & set(get_task(task).splits) for task, splits in needed.items() if task in task_names()}


def example_count_problems(spec: StudySpec, data_dir: str | None) -> list[Problem]:
    """Checks that need the data itself (the mirror while validating; `study run` repeats them
    on Hub data before anything starts): an option_counts that leaves a split the study reads
    without items, and a best_seed stage whose previous task has fewer validation examples
    (after option_counts and limit) than its selection_size."""
    needed, out, emptied = needed_splits(spec), [], set()

    def count(task: str, split: str, path: str) -> int | None:
        settings = spec.task_settings(task)
        try:
            return len(load_examples(task, split, data_dir=data_dir, limit=settings.limit,
                                     option_counts=settings.option_counts, bad_rows=spec.data.bad_rows))
        except (OSError, ValueError) as exc:  # e.g. a YAML task's rows that do not parse
            out.append(Problem(path, f"cannot read task '{task}' ({split} split): {exc}"))
            return None

    for name, settings in spec.tasks.items():
        counts = settings.option_counts
        if counts is None or name not in needed or option_count_problems(name, settings, (name,)):
            continue  # not set, not read, or already reported as malformed
        path = f"tasks.{name}.option_counts"
        for split in [s for s in SPLITS if s in needed[name]]:
            if count(name, split, path) == 0:
                have = "; ".join(f"{k} with {n} options" for n, k in option_count_histogram(name, split, data_dir, spec.data.bad_rows).items())
                out.append(Problem(path, f"{list(counts)} keeps no item of task '{name}': its {split} split has "
                                         f"{have or 'no items'}"))
                emptied.add(name)
                break
    for chain, stages in spec.chains.items():
        for i, stage in enumerate(stages):
            task = stages[i - 1].task if i > 0 else None
            if (stage.start_from != "best_seed" or stage.selection_size < 1 or task in emptied
                    or "validation" not in needed.get(task, ())):
                continue
            path = f"chains.{chain}[{i}].selection_size"
            n = count(task, "validation", path)
            if n is not None and n < stage.selection_size:
                out.append(Problem(path, f"task '{task}' has {n} validation examples (after option_counts and limit) "
                                         f"for best_seed to pick on, fewer than selection_size {stage.selection_size}; "
                                         f"lower selection_size to at most {n}"))
    return out
