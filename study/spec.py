"""The study spec: a YAML study file loaded into frozen, validated dataclasses.

Everything a study needs is declared here, with paper defaults. Loading never stops at the
first problem: every problem is collected with its field path (and YAML line when known) and
raised once as `SpecError`, so a researcher fixes a file in one round trip.

Layout of a study file (see study/presets/demo.yaml):

    name: demo
    model: tiny                     # or {name: meta-llama/Llama-2-7b-hf, max_length: 2048}
    tasks: {toxigen_qa: {train_size: 2241, eval_size: null}}
    stage_defaults: {method: sft, learning_rate: 1.0e-5, batch_size: 16, steps: 100}
    chains:
      tqa_arc: [{task: toxigen_qa}, {task: arc_easy}]
    grid: {stage1.learning_rate: [1.0e-5, 5.0e-6]}
    seeds: [0, 1, 2]

or, instead of `grid`, an Optuna search over the same axes (see SearchSpec):

    search:
      num_samples: 8
      space: {stage2.learning_rate: {loguniform: [1.0e-5, 1.0e-3]}}
      objectives: [{metric: arc_easy/accuracy, mode: max}, {metric: wg_forgetting/toxigen_qa, mode: min}]

A study file may also carry a `tiny:` block, its variant for the built-in tiny model (see
study/presets/paper-*.yaml): dotted field paths, the same syntax as `--set` keys, with YAML
values:

    model: {name: meta-llama/Llama-2-7b-hf, max_length: 2048}
    stage_defaults: {learning_rate: 1.0e-5, steps: 100}
    tiny:
      model.max_length: 384
      stage_defaults.learning_rate: 2.0e-3
      grid.stage1.learning_rate: [1.0e-3, 2.0e-3]
      tasks.arc_easy.train_size: 800

`load_spec_file` applies it only when the model name, after the user's `--set` values, is
'tiny' (e.g. `--set model=tiny`), and then re-applies the user's `--set` values on top, so the
precedence is file < tiny block < --set. In that re-application `--set model=<name>` (the
shorthand that triggered the variant) sets model.name only, so the block's `model.*` values
survive it; `--set model={...}` (a mapping) still replaces the whole model. The block is
checked whether or not it applies: every key must be a field path of the study file (problems
are reported as `tiny.<key>` with its line), its values must have the field's type, and it may
not name the model itself. It is not a field of StudySpec: a loaded spec holds the resolved
values and nothing of the block, so stage keys, `to_dict()` and stored studies do not see it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from contract.layout import study_folder
from contract.schema import FORGETTING_METRICS
from study.spec_builder import Problem, SpecError, build_dataclass, yaml_line_index

# Fields of a stage that a grid axis may sweep (issue #2: learning rate and batch size; steps
# is cheap to allow and useful for quick scans).
GRID_FIELDS = ("learning_rate", "batch_size", "steps", "replay_fraction")
GRID_KEY = re.compile(r"^stage(\d+)\.(\w+)$")
FLOAT_AXIS_FIELDS = ("learning_rate", "replay_fraction")  # the others are integers
# `search:` (Optuna) axes use the grid's keys; each axis is one of these distributions.
SEARCH_DISTRIBUTIONS = ("loguniform", "uniform", "choice", "int")
SAMPLE_DIGITS = 6
"""Significant digits kept of a continuous (loguniform/uniform) sample: what the trial runs and
what enters its stage keys, so a sampled point has one stable trial id."""
# Stage methods this build can run. Others named in the paper (dpo, ppo) are listed so the
# error can say they are planned rather than misspelled.
AVAILABLE_METHODS = ("sft", "dpo", "ppo", "rloo")
PLANNED_METHODS: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    name: str = "tiny"
    """'tiny' (built-in, no download), a Hugging Face causal LM id, or a local path."""
    max_length: int = 512
    """Longest tokenized example used in training and evaluation (paper: 2048)."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """'auto' = bfloat16 on a GPU with bf16 support, float32 on CPU."""
    trust_remote_code: bool = False
    """Let transformers run Python code shipped with a Hub/local model (its `auto_map` modeling
    files). Off by default: loading a model must not execute code from the model's repository.
    Enters the stage keys only when true (remote code may build a different model)."""
    chat_template: Literal["auto", True, False] = "auto"
    """Prompt the model through its tokenizer's chat template (user = the task prompt, assistant =
    the answer) in training, scoring and generation. auto = when the tokenizer has a chat template
    and the model name marks a chat/instruct model (a word 'chat', 'instruct' or 'it' between
    separators: Llama-2-7b-chat-hf, Qwen2.5-0.5B-Instruct, gemma-2-2b-it); false = plain text,
    the paper's base-model setting (auto gives it for base models). The resolved value enters
    the stage keys only when it is true."""


@dataclass(frozen=True)
class TaskSpec:
    train_size: int | None = 2241
    """Training examples, stratified by group (paper: ~2,241). null = the whole train split."""
    eval_size: int | None = None
    """Held-out examples evaluated after every stage. null = the whole eval split."""
    limit: int | None = None
    """Quick runs: read only the first `limit` items of each split (source order), before any
    sampling. null = every item."""
    option_counts: tuple[int, ...] | None = None
    """Keep only the multiple-choice items with one of these numbers of options, in every split
    (applied before limit and sampling). null = the task's default: ARC keeps its four-option
    questions (the paper's sizes), other tasks every item. [3, 4, 5] keeps all of ARC."""
    eval_modes: tuple[str, ...] = ("score",)
    """How a multiple-choice task is evaluated: 'score' (option log-likelihood, metric accuracy)
    and/or 'generate' (the paper's generate-and-parse: greedy answer, "The best answer is X" /
    "This is toxic|not toxic" parsed; metrics generated_accuracy and unparseable). Generation
    tasks (toxigen_prompts, saferdialogues) are always generated and classified."""


@dataclass(frozen=True)
class GenerationSpec:
    """Free-text evaluation: the paper-exact answer mode and the safety-of-generations tasks."""

    classifier: str = "local"
    """Toxicity classifier of the safety tasks: 'local' (TF-IDF + logistic regression trained on
    the ToxiGen annotated data of the data dir, no download) or any Hugging Face sequence
    classifier id or path (the paper: 'tomh/toxigen_roberta')."""
    threshold: float = 0.5
    """A continuation is toxic when the classifier's toxic probability is at least this."""
    max_new_tokens: int = 32
    """Greedy continuation length for the safety tasks."""
    answer_max_new_tokens: int = 12
    """Greedy answer length in the 'generate' eval mode ("The best answer is A." is ~6 tokens)."""
    batch_size: int = 16


@dataclass(frozen=True)
class DPOSpec:
    """Settings of a `method: dpo` stage (TRL DPOTrainer, sigmoid loss)."""

    beta: float = 0.1
    """Strength of the implicit KL constraint to the reference model (> 0)."""
    reference: Literal["stage_start", "base"] = "stage_start"
    """Frozen reference policy: the model the stage starts from (standard DPO) or the base model."""


@dataclass(frozen=True)
class RewardSpec:
    """The reward of an online-RL stage: a given reward model, or one trained in the study."""

    model: str | None = None
    """Hugging Face id or path of a sequence-classification reward model (one with its own
    tokenizer reads each rollout as text). None = train one with TRL RewardTrainer, starting from
    the base model, on the text that follows the stage's prompts (trainables/stages/reward_data.py)."""
    steps: int = 50
    learning_rate: float = 1e-5
    batch_size: int = 16


@dataclass(frozen=True)
class OnlineRLSpec:
    """Settings of a `method: ppo` or `method: rloo` stage (TRL PPOTrainer / RLOOTrainer)."""

    reward: RewardSpec = field(default_factory=RewardSpec)
    kl_coef: float = 0.05
    response_length: int = 16
    """Tokens generated per prompt."""
    num_ppo_epochs: int = 4
    """PPO epochs per batch of rollouts (RLOO: iterations per generation)."""
    temperature: float = 0.7
    prompts: Literal["statements", "templated"] = "statements"
    """'statements' = the original ToxiGen statements without the QA template (paper §3.2);
    tasks without statements use their templated prompt."""
    num_generations: int = 4
    """RLOO only: samples per prompt (≥ 2; must divide batch_size)."""


@dataclass(frozen=True)
class RLOOSpec(OnlineRLSpec):
    """RLOO's settings: as PPO's, but one optimisation pass per generation by default."""

    num_ppo_epochs: int = 1


@dataclass(frozen=True)
class ReplaySpec:
    """Mix examples of an earlier stage's training set into this stage's (the paper's mitigation)."""

    from_stage: int
    """1-based number of the earlier stage whose training examples are replayed."""
    fraction: float
    """Replayed count = round(fraction × size of that stage's training set), sampled by the trial
    seed and added to this stage's own examples (paper summary: 5% nearly restores performance)."""
    only: bool = False
    """True = the stage trains on the replayed examples alone: replay as its own short stage after B."""


@dataclass(frozen=True)
class StageSpec:
    task: str
    method: str = "sft"
    learning_rate: float = 1e-5
    batch_size: int = 16
    steps: int = 100
    seed: int | None = None
    """None = the trial's seed."""
    dpo: DPOSpec = field(default_factory=DPOSpec)
    """Used when method is dpo."""
    ppo: OnlineRLSpec = field(default_factory=OnlineRLSpec)
    """Used when method is ppo."""
    rloo: RLOOSpec = field(default_factory=RLOOSpec)
    """Used when method is rloo."""
    replay: ReplaySpec | None = None
    start_from: Literal["previous", "best_seed"] = "previous"
    """'previous' = the previous stage's model of the same trial. 'best_seed' = the best, by
    accuracy on a sample of the previous stage's task's validation split, of the previous stage's
    models over the study's seeds (paper §2.2: "we pick the best model for the first task");
    every seed's trial then starts this stage from that one model (study/start_points.py)."""
    selection_size: int = 200
    """Validation examples for start_from: best_seed: a stratified sample of the previous
    stage's task's validation split (its dev split, or a pool held out of its training data;
    never trained on). Validation refuses a size the split cannot fill."""


@dataclass(frozen=True)
class TrainingSpec:
    """Optimizer and schedule shared by all stages (paper §2.2: AdamW 0.9/0.95, wd 0.1, cosine, no warmup)."""

    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    weight_decay: float = 0.1
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    eval_batch_size: int = 32


@dataclass(frozen=True)
class CurvatureSpec:
    """Hessian curvature of a stage's training loss, measured after the listed stages (paper §3.4)."""

    enabled: bool = False
    stages: tuple[int, ...] = (1,)
    """1-based stages after which to measure, on that stage's task and training loss (paper: after stage 1)."""
    n_samples: int = 50
    """Training examples in the fixed, recorded random sample the loss is taken over (paper: 50)."""
    sample_seed: int = 0
    """Seed of that sample, under both seed scopes: it picks what is measured, not what is trained
    on (under seed_scope 'order_and_data' the examples it picks from are the trial's own)."""
    algorithms: tuple[Literal["power_iteration", "lanczos"], ...] = ("power_iteration", "lanczos")
    top_k: int = 1
    max_iterations: int = 100
    tol: float = 1e-3
    trace_samples: int = 0
    """Hutchinson probes for a trace estimate; 0 = no trace."""
    per_group: bool = False
    """Also measure the top eigenvalue on each group's own sample of n_samples examples."""
    parameters: str | None = None
    """Regex of parameter names to restrict the Hessian to (e.g. 'model\\.layers\\.0\\.'); None = all."""
    batch_size: int = 16
    """Examples per forward inside one HVP. Batches are cut from length-sorted examples, so small
    batches pad less: on the tiny model 16 was 7x faster than one batch of 50 (eager attention is
    quadratic in the padded length), for the same eigenvalue. Speed and memory only, not results."""


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective of a search: a metric every trial reports, maximised or minimised."""

    metric: str
    """`<eval task>/accuracy`, `forgetting/<task>`, `wg_forgetting/<task>`,
    `biased_forgetting/<task>` (a task trained by every chain), or `stage`."""
    mode: Literal["max", "min"]


@dataclass(frozen=True)
class SearchSpec:
    """Sample the stage axes with Optuna instead of a grid (`search:` in a study file)."""

    algorithm: Literal["optuna"] = "optuna"
    num_samples: int = 10
    """Points Optuna samples per chain; each runs once per seed, and Optuna is told the seed
    mean. A point proposed again is not rerun (it gets the earlier result), so a chain runs at
    most num_samples × len(seeds) trials."""
    seed: int = 0
    """Seed of the sampler (Optuna TPESampler), the same for every chain's study."""
    space: Mapping[str, Mapping[str, tuple[Any, ...]]] = field(default_factory=dict)
    """Axes `stage<k>.<field>` (as grid keys) -> one distribution: {loguniform: [low, high]},
    {uniform: [low, high]} (learning_rate, replay_fraction), {int: [low, high]} (batch_size,
    steps; both ends included) or {choice: [values]} (any field). Continuous samples are
    rounded to SAMPLE_DIGITS significant digits."""
    objectives: tuple[ObjectiveSpec, ...] = ()
    """One = single-objective (TPE), several = multi-objective (Pareto front)."""


@dataclass(frozen=True)
class ExecutionSpec:
    executor: Literal["auto", "function", "train"] = "auto"
    """How a trial runs its chain: 'train' = a Ray Train TorchTrainer per trial; 'function' =
    the same worker loop called inside the Tune trial (cheaper for one CPU worker);
    'auto' = 'function' for one CPU worker, 'train' otherwise."""
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    workers_per_trial: int = 1
    """Data-parallel workers per trial (Ray Train, DDP): each stage's batch_size is the global
    batch, batch_size / workers per worker; cpus_per_trial and gpus_per_trial are split over them."""
    fsdp: bool = False
    """With GPU workers: shard the model, gradients and optimizer state over them (FSDP2)."""
    max_concurrent_trials: int | None = None
    """None = as many as the cluster's CPUs (or GPUs) allow."""
    max_failures: int = 1
    """Tune retries of a failed trial."""


@dataclass(frozen=True)
class StudySpec:
    name: str
    chains: Mapping[str, tuple[StageSpec, ...]]
    model: ModelSpec = field(default_factory=ModelSpec)
    tasks: Mapping[str, TaskSpec] = field(default_factory=dict)
    task_files: tuple[str, ...] = ()
    """YAML files declaring extra multiple-choice tasks (README: "Your own tasks"); relative
    paths are relative to the study file."""
    eval_tasks: tuple[str, ...] = ()
    """Tasks evaluated at stage 0 and after every stage; empty = every task used in a chain."""
    grid: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    search: SearchSpec | None = None
    """None = the grid (or the single point without one); else Optuna samples `search.space`."""
    seeds: tuple[int, ...] = (0,)
    data_dir: str | None = None
    """Local mirror of the datasets (laid out like shared/data). None = $STUDY_DATA_DIR, else the Hub."""
    data_seed: int = 0
    """Seed of the training-set subsample (and of the eval-set subsample)."""
    seed_scope: Literal["order", "order_and_data"] = "order"
    """Which randomness a trial's seed varies (the paper's "three random seeds" does not say).
    'order': the batch order, the initialisation of new parameters and the trainers' own draws
    (DPO's rejected options, replay picks, PPO/RLOO sampling); every seed trains on the same
    subsample, drawn by data_seed. 'order_and_data': also each stage's training subsample,
    drawn by a seed derived from data_seed and the stage's seed (`train_data_seed`). Eval sets
    are drawn by data_seed under both, so every trial is measured on the same examples."""
    storage: str = "results"
    """Results root, any path; the study folder is <storage>/<name> and must resolve inside it."""
    training: TrainingSpec = field(default_factory=TrainingSpec)
    curvature: CurvatureSpec = field(default_factory=CurvatureSpec)
    execution: ExecutionSpec = field(default_factory=ExecutionSpec)
    generation: GenerationSpec = field(default_factory=GenerationSpec)

    def task_settings(self, task: str) -> TaskSpec:
        return self.tasks.get(task, TaskSpec())

    def train_data_seed(self, seed: int) -> int:
        """The seed that draws the training subsample of a stage whose own seed is `seed`."""
        if self.seed_scope == "order":
            return self.data_seed
        from tasks.sampling import derived_data_seed

        return derived_data_seed(self.data_seed, seed)

    def train_data_seeds(self, task: str) -> tuple[int, ...]:
        """Every seed some trial of the study draws `task`'s training subsample with."""
        return tuple(sorted({self.train_data_seed(stage_seed(stage, seed)) for stages in self.chains.values()
                             for stage in stages if stage.task == task for seed in self.seeds}))

    def all_eval_tasks(self) -> tuple[str, ...]:
        if self.eval_tasks:
            return self.eval_tasks
        seen: dict[str, None] = {}
        for stages in self.chains.values():
            for stage in stages:
                seen.setdefault(stage.task, None)
        return tuple(seen)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML/JSON-able) that loads back to an equal spec."""
        return _plain(dataclasses.asdict(self))


def stage_seed(stage: StageSpec, trial_seed: int) -> int:
    """A stage's seed in the trial with seed `trial_seed`: the stage's own `seed` when it has one."""
    return int(stage.seed if stage.seed is not None else trial_seed)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------- loading


def load_spec_file(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudySpec:
    """Read, override (`--set key=value`; a `tiny:` block when the model is 'tiny', see the module
    docstring) and validate a study file; raise SpecError listing every problem."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([Problem("", f"cannot read study file: {exc.strerror}")], source=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise SpecError([Problem("", f"not UTF-8 text (byte {exc.start}): {exc.reason}")], source=str(path)) from exc
    duplicates: list[Problem] = []
    try:
        raw = yaml.safe_load(text)
        lines = yaml_line_index(text, duplicates)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise SpecError([Problem("", f"invalid YAML: {getattr(exc, 'problem', exc)}", line)], source=str(path)) from exc
    if raw is None:
        raw = {}
    problems: list[Problem] = list(duplicates)
    variant: Any = _NO_VARIANT
    if isinstance(raw, dict):
        # Expand `model: tiny` first, so `--set model.max_length=...` works on shorthand files.
        raw = _expand_shorthands(dict(raw))
        variant = raw.pop(TINY_VARIANT_KEY, _NO_VARIANT)
    raw = _apply_user_overrides(raw, overrides, problems)
    if variant is not _NO_VARIANT:
        raw = _apply_tiny_variant(raw, variant, overrides, problems)
    if isinstance(raw, dict) and isinstance(raw.get("task_files"), str):  # `--set task_files=my.yaml`
        raw["task_files"] = [raw["task_files"]]
    if isinstance(raw, dict) and isinstance(raw.get("task_files"), list):
        # Relative to the study file, so a study and its task files travel together.
        raw["task_files"] = [str((path.parent / f).resolve()) if isinstance(f, str) else f for f in raw["task_files"]]
    return spec_from_dict(raw, source=str(path), lines=lines, preexisting=problems)


TINY_VARIANT_KEY = "tiny"
"""Top-level key of a study file's variant for the built-in tiny model (module docstring)."""
_NO_VARIANT = object()


def _model_name(raw: Any) -> Any:
    """The model name a raw study (after --set) names; ModelSpec's default when it names none."""
    model = raw.get("model") if isinstance(raw, Mapping) else None
    if isinstance(model, Mapping):
        return model.get("name", ModelSpec.name)
    return ModelSpec.name if model is None else model


def _apply_tiny_variant(raw: Any, block: Any, overrides: list[str] | tuple[str, ...] | Any,
                        problems: list[Problem]) -> Any:
    """Check the `tiny:` block; when the model (after --set) is 'tiny', apply it and re-apply the
    user's --set values over it (file < tiny block < --set)."""
    import copy

    import yaml

    from study.overrides import _set_path

    items = _tiny_variant_items(block, problems)
    if not isinstance(raw, dict):
        return raw
    raw = _expand_shorthands(raw)  # `--set model=tiny` left a string; the block may set model.max_length
    active = _model_name(raw) == "tiny"
    target = raw if active else copy.deepcopy(raw)  # inactive: a dry run, to check paths exist
    chains = raw.get("chains")
    for key, value in items:
        parts = key.split(".")
        if parts[0] == "chains" and len(parts) > 1 and not (isinstance(chains, Mapping) and parts[1] in chains):
            known = ", ".join(chains) if isinstance(chains, Mapping) else "none"
            problems.append(Problem(f"{TINY_VARIANT_KEY}.{key}", f"no chain '{parts[1]}' in this file (chains: {known})"))
            continue
        error = _set_path(target, parts, copy.deepcopy(value))
        if error:
            problems.append(Problem(f"{TINY_VARIANT_KEY}.{key}", error))
    if not active or not overrides:
        return raw
    again = []
    for item in overrides:
        key, sep, text = str(item).partition("=")
        if sep and key.strip() == "model":
            try:
                value = yaml.safe_load(text) if text.strip() else None
            except yaml.YAMLError:
                value = None
            if isinstance(value, str):
                item = f"model.name={text}"  # the shorthand names the model; keep the block's model.*
        again.append(item)
    return _apply_user_overrides(raw, again, [])  # their problems were reported on the first application


def _apply_user_overrides(raw: Any, overrides: Any, problems: list[Problem]) -> Any:
    """`--set` values in order, shorthands expanded after each, so `--set model=tiny --set
    model.max_length=128` works as it reads."""
    from study.overrides import apply_overrides

    for item in overrides:
        raw = apply_overrides(raw, [item], problems)
        if isinstance(raw, dict):
            raw = _expand_shorthands(raw)
    return raw


def _tiny_variant_items(block: Any, problems: list[Problem]) -> list[tuple[str, Any]]:
    """The valid (dotted key, value) pairs of a `tiny:` block; a Problem for each invalid one."""
    where = TINY_VARIANT_KEY
    if block is None:
        return []
    if not isinstance(block, Mapping):
        problems.append(Problem(where, "must be a mapping of dotted field paths to values, as --set takes them "
                                       "(e.g. {stage_defaults.steps: 150, model.max_length: 384})"))
        return []
    items = []
    for key, value in block.items():
        path = f"{where}.{key}"
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            problems.append(Problem(path, f"keys are dotted field paths such as stage_defaults.steps (got {key!r})"))
            continue
        if key in ("model", "model.name") or key.split(".")[0] == TINY_VARIANT_KEY:
            problems.append(Problem(path, "the tiny block applies when the model is 'tiny' and cannot change the "
                                          "model itself or nest another tiny block (set model.max_length, model.dtype, ...)"))
            continue
        before = len(problems)
        _variant_value_problems(key, value, path, problems)
        if len(problems) == before:
            items.append((key, value))
    return items


def _variant_value_problems(key: str, value: Any, path: str, problems: list[Problem]) -> None:
    """Whether `key` is a field path of a study file and `value` fits its type (as `--set` would
    write it into the raw file): unknown fields, malformed grid axes, non-index list steps."""
    import types
    import typing

    from study.spec_builder import coerce, did_you_mean

    parts = key.split(".")
    if parts[0] == "stage_defaults":
        tp: Any = StageSpec if len(parts) > 1 else None
        parts, done = parts[1:], ["stage_defaults"]
        if tp is None:  # a whole stage_defaults mapping: its keys are checked when it applies
            return
    elif parts[0] == "grid" and len(parts) > 1:
        axis = ".".join(parts[1:])
        match = GRID_KEY.match(axis)
        if not match or match.group(2) not in GRID_FIELDS:
            problems.append(Problem(path, f"grid keys look like 'stage<k>.<field>' with field one of {', '.join(GRID_FIELDS)}"))
        elif not isinstance(value, list) or not value:
            problems.append(Problem(path, f"a grid axis is a non-empty list of values (got {value!r})"))
        else:
            problems.extend(Problem(f"{path}[{i}]", f"must be {_AXIS_VALUE_KIND.get(match.group(2), 'an integer ≥ 1')} (got {v!r})")
                            for i, v in enumerate(value) if not _axis_value_ok(match.group(2), _float_or_same(v)))
        return
    else:
        tp, done = StudySpec, []
    for part in parts:
        args = typing.get_args(tp)
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            inner = [a for a in args if a is not type(None)]
            tp, args = inner[0], typing.get_args(inner[0])
        origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp):
            names = [f.name for f in dataclasses.fields(tp)]
            if part not in names:
                problems.append(Problem(path, f"unknown field '{part}'{did_you_mean(part, names)}"
                                              + (f" (in {'.'.join(done)})" if done else "")))
                return
            tp = typing.get_type_hints(tp)[part]
        elif origin is tuple:
            if not part.lstrip("-").isdigit():
                problems.append(Problem(path, f"'{'.'.join(done)}' is a list: expected an item number, got '{part}'"))
                return
            tp = args[0] if args else Any
        elif origin is not None and getattr(origin, "__name__", "") == "Mapping":
            tp = args[1] if args else Any
        elif tp is Any:
            return
        else:
            problems.append(Problem(path, f"'{'.'.join(done)}' is a value, not a mapping or list"))
            return
        done.append(part)
    if done and done[0] == "search":
        return  # search.space's distributions are checked when the block applies
    coerce(_float_or_same(value) if tp is float else value, tp, path, problems)


def spec_from_dict(
    raw: Any,
    *,
    source: str = "<dict>",
    lines: Mapping[str, int] | None = None,
    preexisting: list[Problem] | None = None,
) -> StudySpec:
    problems: list[Problem] = list(preexisting or [])
    if not isinstance(raw, Mapping):
        raise SpecError(problems + [Problem("", "a study file must be a mapping of fields")], source=source)
    raw = dict(raw)
    raw = _expand_shorthands(raw)
    defaults = raw.pop("stage_defaults", None) or {}
    if not isinstance(defaults, Mapping):
        problems.append(Problem("stage_defaults", "must be a mapping of stage fields"))
        defaults = {}
    if "chains" in raw:
        raw["chains"] = _apply_stage_defaults(raw["chains"], defaults, problems)
    raw["grid"] = _flatten_grid(raw.get("grid"), problems)
    if "search" in raw:
        raw["search"] = _flatten_search(raw["search"], problems)

    spec = build_dataclass(StudySpec, raw, "", problems)
    if spec is not None:
        problems.extend(semantic_problems(spec))
    if problems:
        raise SpecError(problems, source=source, lines=lines)
    return spec


def _expand_shorthands(raw: dict[str, Any]) -> dict[str, Any]:
    if isinstance(raw.get("model"), str):
        raw["model"] = {"name": raw["model"]}
    if isinstance(raw.get("seeds"), int):
        raw["seeds"] = [raw["seeds"]]
    if isinstance(raw.get("eval_tasks"), str):
        raw["eval_tasks"] = [raw["eval_tasks"]]
    if isinstance(raw.get("task_files"), str):
        raw["task_files"] = [raw["task_files"]]
    return raw


def _apply_stage_defaults(chains: Any, defaults: Mapping[str, Any], problems: list[Problem]) -> Any:
    """Each stage inherits `stage_defaults` and overrides what it names (nanochat-style)."""
    unknown = set(defaults) - {f.name for f in dataclasses.fields(StageSpec)}
    for key in sorted(unknown):
        problems.append(Problem(f"stage_defaults.{key}", _unknown_key_message(key, StageSpec)))
    defaults = {k: v for k, v in defaults.items() if k not in unknown}
    if not isinstance(chains, Mapping):
        return chains
    merged: dict[str, Any] = {}
    for name, stages in chains.items():
        if isinstance(stages, list):
            merged[name] = [{**defaults, **s} if isinstance(s, Mapping) else s for s in stages]
        else:
            merged[name] = stages
    return merged


def _flatten_grid(grid: Any, problems: list[Problem]) -> Any:
    """Accept both `stage1.learning_rate: [...]` and `stage1: {learning_rate: [...]}`."""
    if grid is None:
        return {}
    if not isinstance(grid, Mapping):
        return grid
    flat: dict[str, Any] = {}
    for key, value in grid.items():
        if isinstance(value, Mapping):
            for sub, values in value.items():
                flat[f"{key}.{sub}"] = values
        else:
            flat[str(key)] = value
    for key, values in flat.items():
        if key.endswith((".learning_rate", ".replay_fraction")) and isinstance(values, list):
            flat[key] = [_float_or_same(v) for v in values]
    return flat


def _flatten_search(search: Any, problems: list[Problem]) -> Any:
    """Accept `stage2.learning_rate: {...}` and `stage2: {learning_rate: {...}}` (as the grid) in
    search.space, and YAML 1.1's string `1e-5` as a number in bounds and float choices."""
    if not isinstance(search, Mapping) or not isinstance(search.get("space"), Mapping):
        return search
    flat: dict[str, Any] = {}
    for key, value in search["space"].items():
        key = str(key)
        if "." not in key and isinstance(value, Mapping) and not set(map(str, value)) & set(SEARCH_DISTRIBUTIONS):
            for sub, dist in value.items():
                flat[f"{key}.{sub}"] = dist
        else:
            flat[key] = value
    for key in list(flat):
        dist = flat[key]
        if isinstance(dist, list):
            problems.append(Problem(f"search.space.{key}", f"must be one distribution such as {{choice: {dist}}} "
                                                           "(a plain list is a grid axis)"))
            dist = flat[key] = {"choice": dist}  # checked as that choice, so no follow-up problems
        if isinstance(dist, Mapping):
            floats = key.endswith(tuple(f".{f}" for f in FLOAT_AXIS_FIELDS))
            flat[key] = {kind: [_float_or_same(v) for v in values]
                         if isinstance(values, list) and (kind in ("loguniform", "uniform") or kind == "choice" and floats)
                         else values for kind, values in dist.items()}
    return {**search, "space": flat}


def _float_or_same(value: Any) -> Any:
    """YAML 1.1 reads `1e-5` as a string: accept it as the number every researcher means."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _unknown_key_message(key: str, cls: type) -> str:
    from study.spec_builder import did_you_mean

    return f"unknown field '{key}'{did_you_mean(key, [f.name for f in dataclasses.fields(cls)])}"


def semantic_problems(spec: StudySpec) -> list[Problem]:
    """Checks across fields, after types are right."""
    from tasks import task_names  # pure data registry; no torch

    from study.spec_builder import did_you_mean

    out: list[Problem] = task_file_problems(spec)
    known = task_names()

    def check_task(name: str, path: str) -> bool:
        if name not in known:
            out.append(Problem(path, f"unknown task '{name}'{did_you_mean(name, known)} (known: {', '.join(known)})"))
            return False
        return True

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", spec.name):
        # One safe path component: no '/', no '..', no hidden or option-like first character.
        out.append(Problem("name", "must be letters, digits, '_', '-' or '.', starting with a letter or digit "
                                   f"(it names the results folder <storage>/<name>; got {spec.name!r})"))
    else:
        out.extend(_storage_problems(spec))
    if not spec.chains:
        out.append(Problem("chains", "at least one chain is required"))
    for chain, stages in spec.chains.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", chain):
            out.append(Problem(f"chains.{chain}", "chain names must be letters, digits, '_' or '-'"))
        if not stages:
            out.append(Problem(f"chains.{chain}", "a chain needs at least one stage"))
        for i, stage in enumerate(stages):
            out.extend(stage_problems(stage, f"chains.{chain}[{i}]"))
            if check_task(stage.task, f"chains.{chain}[{i}].task"):
                out.extend(_stage_task_problems(spec, stages, i, f"chains.{chain}[{i}]"))
            if stage.replay is not None and not 1 <= stage.replay.from_stage <= i:
                out.append(Problem(f"chains.{chain}[{i}].replay.from_stage",
                                   f"must name an earlier stage, 1..{i} (got {stage.replay.from_stage})" if i
                                   else "the first stage has no earlier stage to replay"))
            if stage.start_from == "best_seed":
                where = f"chains.{chain}[{i}].start_from"
                if i == 0:
                    out.append(Problem(where, "the first stage has no previous stage to pick the best seed of"))
                elif any(s.start_from == "best_seed" for s in stages[:i]):
                    out.append(Problem(where, "only one stage of a chain may start from the best seed"))
                if spec.search is not None:
                    out.append(Problem(where, "needs a grid study: a search samples points one at a time"))
                if stage.selection_size < 1:
                    out.append(Problem(f"chains.{chain}[{i}].selection_size", "must be ≥ 1"))
    for name, settings in spec.tasks.items():
        check_task(name, f"tasks.{name}")
        for attr in ("train_size", "eval_size", "limit"):
            value = getattr(settings, attr)
            if value is not None and value < 1:
                out.append(Problem(f"tasks.{name}.{attr}", "must be ≥ 1 or null (all)"))
        out.extend(_eval_mode_problems(name, settings, known))
        out.extend(_option_count_problems(name, settings, known))
    for i, name in enumerate(spec.eval_tasks):
        check_task(name, f"eval_tasks[{i}]")
    out.extend(data_problems(spec))
    if not spec.seeds:
        out.append(Problem("seeds", "at least one seed is required"))
    if len(set(spec.seeds)) != len(spec.seeds):
        out.append(Problem("seeds", "seeds must be distinct"))
    out.extend(grid_problems(spec))
    out.extend(search_problems(spec))
    out.extend(_model_problems(spec.model))
    out.extend(_training_problems(spec.training))
    out.extend(_curvature_problems(spec))
    out.extend(_execution_problems(spec.execution))
    out.extend(_worker_problems(spec))
    out.extend(_generation_problems(spec.generation))
    return out


def task_file_problems(spec: StudySpec) -> list[Problem]:
    """Register the study's YAML task files in this process (so the names below resolve);
    a file that does not load is reported with its own file:line problems."""
    if not spec.task_files:
        return []
    from tasks.task_file_registration import register_task_file

    out = []
    for i, path in enumerate(spec.task_files):
        try:
            register_task_file(path)
        except (OSError, ValueError) as exc:
            out.append(Problem(f"task_files[{i}]", str(exc)))
    return out


def _stage_task_problems(spec: StudySpec, stages: tuple[StageSpec, ...], i: int, path: str) -> list[Problem]:
    """A stage can only train on a task with a train split, of a kind its method can use; what
    needs answers from an earlier stage's task (replay into SFT/DPO, best-seed selection by
    accuracy, curvature of the training loss) cannot use a prompt-only task."""
    from tasks import get_task, task_names

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
        if stage.method in ("sft", "dpo"):
            return [Problem(f"{path}.task", f"task '{task.name}' has prompts but no answers: method "
                                            f"'{stage.method}' needs an answer task (ppo or rloo can use it)")]
        rl = getattr(stage, stage.method, None)
        if rl is not None and rl.reward.model is None:
            return [Problem(f"{path}.{stage.method}.reward.model",
                            f"task '{task.name}' has no preference pairs to train a reward model on: "
                            "name a reward model")]
    return []


EVAL_MODES = ("score", "generate")
OPTION_COUNTS = range(2, 6)  # what the multiple-choice template can letter (A-E)


def _option_count_problems(name: str, settings: TaskSpec, known: tuple[str, ...]) -> list[Problem]:
    from tasks import get_task

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


def _eval_mode_problems(name: str, settings: TaskSpec, known: tuple[str, ...]) -> list[Problem]:
    from tasks import get_task

    path = f"tasks.{name}.eval_modes"
    if not settings.eval_modes:
        return [Problem(path, "at least one mode is required (score, generate)")]
    out = [Problem(path, f"unknown mode '{m}' (expected one of {', '.join(EVAL_MODES)})")
           for m in settings.eval_modes if m not in EVAL_MODES]
    if len(set(settings.eval_modes)) != len(settings.eval_modes):
        out.append(Problem(path, "modes must be distinct"))
    if name in known and get_task(name).kind == "generation" and tuple(settings.eval_modes) != ("score",):
        out.append(Problem(path, f"task '{name}' is a generation task: it is always generated and classified"))
    return out


def _generation_problems(g: GenerationSpec) -> list[Problem]:
    out = []
    if not 0.0 < g.threshold < 1.0:
        out.append(Problem("generation.threshold", f"must be in (0, 1) (got {g.threshold})"))
    for attr in ("max_new_tokens", "answer_max_new_tokens", "batch_size"):
        if getattr(g, attr) < 1:
            out.append(Problem(f"generation.{attr}", f"must be ≥ 1 (got {getattr(g, attr)})"))
    if not g.classifier.strip():
        out.append(Problem("generation.classifier", "must be 'local' or a Hugging Face classifier id or path"))
    return out


def _worker_problems(spec: StudySpec) -> list[Problem]:
    """Multi-worker trials: every batch a stage can take must split evenly over the workers."""
    from trainables.distributed import batch_size_problem

    e, out = spec.execution, []
    n = e.workers_per_trial
    if n < 1:
        return [Problem("execution.workers_per_trial", f"must be ≥ 1 (got {n})")]
    if e.fsdp and not e.gpus_per_trial:
        out.append(Problem("execution.fsdp", "FSDP needs GPU workers (gpus_per_trial > 0)"))
    if n == 1:
        return out
    if e.executor == "function":
        out.append(Problem("execution.executor",
                           f"'function' runs one worker per trial; workers_per_trial = {n} needs 'train' or 'auto'"))
    if e.gpus_per_trial and e.gpus_per_trial % n:
        out.append(Problem("execution.gpus_per_trial",
                           f"must be a multiple of workers_per_trial = {n}: whole GPUs per worker (NCCL cannot put "
                           f"two ranks on one GPU) (got {e.gpus_per_trial})"))
    for chain, stages in spec.chains.items():
        for i, stage in enumerate(stages):
            problem = batch_size_problem(stage.batch_size, n)
            if problem:
                out.append(Problem(f"chains.{chain}[{i}].batch_size", problem))
    for key, values in spec.grid.items():
        if key.endswith(".batch_size"):
            for value in values:
                problem = isinstance(value, int) and batch_size_problem(value, n)
                if problem:
                    out.append(Problem(f"grid.{key}", problem))
    if spec.search is not None:
        for key, dist in spec.search.space.items():
            if key.endswith(".batch_size"):
                values = dist.get("choice")
                if values is None:  # an {int: [low, high]} range would sample sizes N does not divide
                    out.append(Problem(f"search.space.{key}",
                                       f"with workers_per_trial = {n} use {{choice: [...]}} of sizes {n} divides"))
                for value in values or ():
                    problem = isinstance(value, int) and batch_size_problem(value, n)
                    if problem:
                        out.append(Problem(f"search.space.{key}", problem))
    return out


def data_problems(spec: StudySpec) -> list[Problem]:
    """The local mirror, when one is named (data_dir or $STUDY_DATA_DIR), must hold every file
    the study reads, and the data in it what the study needs (example_count_problems): checked
    here so a bad path or setting fails validation, not a trial."""
    from tasks import get_task, resolve_data_dir, task_names

    try:
        root = resolve_data_dir(spec.data_dir)
    except (FileNotFoundError, NotADirectoryError) as exc:
        return [Problem("data_dir", str(exc))]
    if root is None:
        return []  # the Hugging Face Hub
    out = []
    judged = [t for t in spec.all_eval_tasks() if t in task_names() and get_task(t).kind == "generation"]
    if judged and spec.generation.classifier == "local":
        from trainables.safety.local_classifier import ANNOTATED_MIRROR_FILE

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
    from tasks import get_task, task_names

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
    from tasks import SPLITS, load_examples
    from tasks.loading import option_count_histogram

    needed, out, emptied = needed_splits(spec), [], set()

    def count(task: str, split: str, path: str) -> int | None:
        settings = spec.task_settings(task)
        try:
            return len(load_examples(task, split, data_dir=data_dir, limit=settings.limit,
                                     option_counts=settings.option_counts))
        except (OSError, ValueError) as exc:  # e.g. a YAML task's rows that do not parse
            out.append(Problem(path, f"cannot read task '{task}' ({split} split): {exc}"))
            return None

    for name, settings in spec.tasks.items():
        counts = settings.option_counts
        if counts is None or name not in needed or _option_count_problems(name, settings, (name,)):
            continue  # not set, not read, or already reported as malformed
        path = f"tasks.{name}.option_counts"
        for split in [s for s in SPLITS if s in needed[name]]:
            if count(name, split, path) == 0:
                have = "; ".join(f"{k} with {n} options" for n, k in option_count_histogram(name, split, data_dir).items())
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


def stage_problems(stage: StageSpec, path: str) -> list[Problem]:
    out = []
    if stage.method not in AVAILABLE_METHODS:
        if stage.method in PLANNED_METHODS:
            out.append(Problem(f"{path}.method", f"method '{stage.method}' is not available in this build yet (available: {', '.join(AVAILABLE_METHODS)})"))
        else:
            from study.spec_builder import did_you_mean

            out.append(Problem(f"{path}.method", f"unknown method '{stage.method}'{did_you_mean(stage.method, AVAILABLE_METHODS + PLANNED_METHODS)}"))
    if not stage.learning_rate > 0:
        out.append(Problem(f"{path}.learning_rate", f"must be > 0 (got {stage.learning_rate})"))
    if stage.batch_size < 1:
        out.append(Problem(f"{path}.batch_size", f"must be ≥ 1 (got {stage.batch_size})"))
    if stage.steps < 1:
        out.append(Problem(f"{path}.steps", f"must be ≥ 1 (got {stage.steps})"))
    if stage.method == "dpo":
        if not stage.dpo.beta > 0:
            out.append(Problem(f"{path}.dpo.beta", f"must be > 0 (got {stage.dpo.beta})"))
        if not _trl_has("DPOTrainer"):
            out.append(Problem(f"{path}.method", "method 'dpo' needs trl.DPOTrainer, which the installed TRL lacks"))
    if stage.method in ("ppo", "rloo"):
        out.extend(_online_rl_problems(stage, path))
    if stage.replay is not None and not 0 <= stage.replay.fraction < 1:
        out.append(Problem(f"{path}.replay.fraction", f"must be in [0, 1) (got {stage.replay.fraction})"))
    elif stage.replay is not None and stage.replay.only and stage.replay.fraction == 0:
        out.append(Problem(f"{path}.replay.fraction", "must be > 0 with only: true (the stage would train on nothing)"))
    return out


def _online_rl_problems(stage: StageSpec, path: str) -> list[Problem]:
    rl: OnlineRLSpec = getattr(stage, stage.method)
    where = f"{path}.{stage.method}"
    out = []
    for name, value, ok, rule in [
        ("kl_coef", rl.kl_coef, rl.kl_coef >= 0, "≥ 0"),
        ("response_length", rl.response_length, rl.response_length >= 1, "≥ 1"),
        ("num_ppo_epochs", rl.num_ppo_epochs, rl.num_ppo_epochs >= 1, "≥ 1"),
        ("temperature", rl.temperature, rl.temperature > 0, "> 0"),
        ("reward.steps", rl.reward.steps, rl.reward.steps >= 1, "≥ 1"),
        ("reward.learning_rate", rl.reward.learning_rate, rl.reward.learning_rate > 0, "> 0"),
        ("reward.batch_size", rl.reward.batch_size, rl.reward.batch_size >= 1, "≥ 1"),
    ]:
        if not ok:
            out.append(Problem(f"{where}.{name}", f"must be {rule} (got {value})"))
    if stage.method == "rloo":
        if rl.num_generations < 2:
            out.append(Problem(f"{where}.num_generations", f"must be ≥ 2 (got {rl.num_generations})"))
        elif stage.batch_size % rl.num_generations:
            out.append(Problem(f"{where}.num_generations",
                               f"must divide the stage's batch_size {stage.batch_size} (got {rl.num_generations})"))
        if not _trl_has("RLOOTrainer"):
            out.append(Problem(f"{path}.method", "method 'rloo' needs trl.RLOOTrainer, which the installed TRL lacks"))
    elif not _trl_has_module("experimental/ppo"):
        out.append(Problem(f"{path}.method", "method 'ppo' needs trl.experimental.ppo (TRL 1.10-1.12; removed in 1.13)"))
    return out


@functools.lru_cache(maxsize=1)
def _trl_init_file() -> Path | None:
    """trl/__init__.py of the installed TRL, found without importing TRL (and torch)."""
    import importlib.util

    spec = importlib.util.find_spec("trl")
    return Path(spec.origin) if spec is not None and spec.origin else None


def _trl_has_module(relative: str) -> bool:
    init = _trl_init_file()
    return init is not None and (init.parent / relative).exists()


@functools.lru_cache(maxsize=None)
def _trl_has(name: str) -> bool:
    """Whether the installed TRL exports `name` (read once per name, not per stage)."""
    init = _trl_init_file()
    return init is not None and name in init.read_text()


def grid_problems(spec: StudySpec) -> list[Problem]:
    out: list[Problem] = []
    for key, values in spec.grid.items():
        path = f"grid.{key}"
        fld = _axis_field(spec, key, path, "grid keys", out)
        if fld is None:
            continue
        if not values:
            out.append(Problem(path, "a grid axis needs at least one value"))
        out.extend(_axis_value_problems(fld, values, path, "grid values"))
    return out


def _axis_field(spec: StudySpec, key: str, path: str, what: str, out: list[Problem]) -> str | None:
    """The field of a grid/search axis `stage<k>.<field>`, or None when the key is malformed;
    appends a problem when stage k is missing from a chain or has nothing to sweep."""
    match = GRID_KEY.match(key)
    if not match or match.group(2) not in GRID_FIELDS:
        out.append(Problem(path, f"{what} look like 'stage<k>.<field>' with field one of {', '.join(GRID_FIELDS)}"))
        return None
    k, fld = int(match.group(1)), match.group(2)
    shortest = min((len(s) for s in spec.chains.values()), default=0)
    if not 1 <= k <= shortest:
        out.append(Problem(path, f"stage {k} does not exist in every chain (stages are numbered 1..{shortest})"))
    elif fld == "replay_fraction":
        lacking = [c for c, stages in spec.chains.items() if stages[k - 1].replay is None]
        if lacking:
            out.append(Problem(path, f"stage {k} has no replay to sweep in chain(s) {', '.join(lacking)}"))
    return fld


_AXIS_VALUE_KIND = {"learning_rate": "a number > 0", "replay_fraction": "a number in [0, 1)"}


def _axis_value_ok(fld: str, value: Any) -> bool:
    if fld == "learning_rate":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if fld == "replay_fraction":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _axis_value_problems(fld: str, values: tuple[Any, ...], path: str, what: str) -> list[Problem]:
    out = []
    for i, value in enumerate(values):
        if not _axis_value_ok(fld, value):
            out.append(Problem(f"{path}[{i}]", f"must be {_AXIS_VALUE_KIND.get(fld, 'an integer ≥ 1')} (got {value!r})"))
    if len({_grid_value_key(v) for v in values}) != len(values):
        out.append(Problem(path, f"{what} must be distinct"))
    return out


def round_sample(value: float) -> float:
    """A continuous sample as the trial runs it: SAMPLE_DIGITS significant digits (idempotent)."""
    return float(f"{float(value):.{SAMPLE_DIGITS}g}")


def search_problems(spec: StudySpec) -> list[Problem]:
    """The `search:` section: axes and distributions, budget, seed, objectives, no grid beside it."""
    search = spec.search
    if search is None:
        return []
    out: list[Problem] = []
    if search.num_samples < 1:
        out.append(Problem("search.num_samples", f"must be ≥ 1 (got {search.num_samples})"))
    if not 0 <= search.seed < 2**32:
        out.append(Problem("search.seed", f"must be in [0, 2**32) (got {search.seed})"))
    if not search.space:
        out.append(Problem("search.space", "at least one axis is required (without axes, drop `search`)"))
    for key, dist in search.space.items():
        path = f"search.space.{key}"
        fld = _axis_field(spec, key, path, "search space keys", out)
        if fld is not None:
            out.extend(_distribution_problems(fld, dist, path))
    extra_grid = False
    for key in spec.grid:
        if key in search.space:
            out.append(Problem(f"search.space.{key}", f"is also a grid axis (grid.{key}); a study has a grid or a "
                                                      "search, not both: sweep it here, e.g. with {choice: [...]}"))
        else:
            extra_grid = True
    if extra_grid:
        out.append(Problem("grid", "a study with `search` cannot also have a grid: move the axes into "
                                   "search.space (e.g. {choice: [...]}) or fix them in the stages"))
    if not search.objectives:
        out.append(Problem("search.objectives", "at least one objective is required, e.g. "
                                                "[{metric: arc_easy/accuracy, mode: max}]"))
    seen: set[str] = set()
    for i, objective in enumerate(search.objectives):
        path = f"search.objectives[{i}].metric"
        if objective.metric in seen:
            out.append(Problem(path, f"metric '{objective.metric}' is already an objective"))
        seen.add(objective.metric)
        message = _metric_problem(spec, objective.metric)
        if message:
            out.append(Problem(path, message))
    return out


def _distribution_problems(fld: str, dist: Mapping[str, tuple[Any, ...]], path: str) -> list[Problem]:
    from study.spec_builder import did_you_mean

    forms = "{loguniform: [low, high]}, {uniform: [low, high]}, {int: [low, high]} or {choice: [values]}"
    unknown = [k for k in dist if k not in SEARCH_DISTRIBUTIONS]
    if unknown:
        return [Problem(f"{path}.{unknown[0]}", f"unknown distribution '{unknown[0]}'"
                                                f"{did_you_mean(unknown[0], SEARCH_DISTRIBUTIONS)} (one of {forms})")]
    if len(dist) != 1:
        return [Problem(path, f"must be exactly one distribution: {forms} (got {', '.join(dist) or 'none'})")]
    [(kind, values)] = dist.items()
    where = f"{path}.{kind}"
    if kind == "choice":
        if not values:
            return [Problem(where, "a choice needs at least one value")]
        return _axis_value_problems(fld, values, where, "choice values")
    is_float = fld in FLOAT_AXIS_FIELDS
    if kind == "int" and is_float:
        return [Problem(where, f"{fld} is a number: use loguniform, uniform or choice")]
    if kind != "int" and not is_float:
        return [Problem(where, f"{fld} is an integer: use {{int: [low, high]}} (both included) or {{choice: [...]}}")]
    number = (lambda v: isinstance(v, int) and not isinstance(v, bool)) if kind == "int" else \
        (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
    if len(values) != 2 or not all(number(v) for v in values):
        kind_word = "integers" if kind == "int" else "numbers"
        return [Problem(where, f"must be [low, high], two {kind_word} (got {list(values)!r})")]
    low, high = values
    if not low < high:
        return [Problem(where, f"low must be < high (got [{low}, {high}])")]
    if kind == "loguniform" and not low > 0:
        return [Problem(where, f"loguniform needs 0 < low (got low {low})")]
    if fld == "learning_rate" and not low > 0:
        return [Problem(where, f"learning rates must be > 0 (got low {low})")]
    if fld == "replay_fraction" and not (low >= 0 and round_sample(high) < 1):
        return [Problem(where, f"replay fractions must be in [0, 1) (got [{low}, {high}])")]
    if kind == "int" and low < 1:
        return [Problem(where, f"{fld} must be ≥ 1 (got low {low})")]
    return []


def objective_metrics(spec: StudySpec) -> tuple[str, ...]:
    """Metrics every trial of the study reports, so a search may optimise them: `stage`,
    `<eval task>/accuracy`, and the forgetting metrics of each eval task trained by every chain."""
    from tasks import get_task, task_names
    from tasks.definition import PRIMARY_METRIC

    def primary(task: str) -> str:  # an unknown task is reported elsewhere; name its accuracy here
        return PRIMARY_METRIC[get_task(task).kind] if task in task_names() else "accuracy"

    trained = [t for t in _trained_by_every_chain(spec) if t in spec.all_eval_tasks()]
    return ("stage", *(f"{t}/{primary(t)}" for t in spec.all_eval_tasks()),
            *(f"{m}/{t}" for t in trained for m in FORGETTING_METRICS))


def _trained_by_every_chain(spec: StudySpec) -> tuple[str, ...]:
    order = dict.fromkeys(s.task for stages in spec.chains.values() for s in stages)
    return tuple(t for t in order if all(any(s.task == t for s in stages) for stages in spec.chains.values()))


def _metric_problem(spec: StudySpec, metric: str) -> str | None:
    from study.spec_builder import did_you_mean

    known = objective_metrics(spec)
    if metric in known:
        return None
    head, _, tail = metric.partition("/")
    if tail == "accuracy" and head in {s.task for stages in spec.chains.values() for s in stages} | set(spec.tasks):
        return f"{head} is not an eval task of this study (eval tasks: {', '.join(spec.all_eval_tasks())})"
    if head in FORGETTING_METRICS and tail not in spec.all_eval_tasks() and tail in _trained_by_every_chain(spec):
        return (f"{tail} is not an eval task of this study, so its forgetting is not measured "
                f"(eval tasks: {', '.join(spec.all_eval_tasks())})")
    if head in FORGETTING_METRICS:
        lacking = [c for c, stages in spec.chains.items() if all(s.task != tail for s in stages)]
        if lacking and len(lacking) < len(spec.chains):
            return (f"chain(s) {', '.join(lacking)} never train {tail}, so they do not report {metric} "
                    "(every chain is searched on its own)")
        if lacking:
            return f"no chain trains '{tail}'{did_you_mean(tail, _trained_by_every_chain(spec))}"
    return f"unknown metric '{metric}'{did_you_mean(metric, known)} (metrics: {', '.join(known)})"


def study_dir(spec: StudySpec) -> Path:
    """The study folder `<storage>/<name>`, resolved (symlinks included); ValueError if it does
    not lie inside storage, so no study file can make a run write outside its results root."""
    return study_folder(spec.storage, spec.name)


def _storage_problems(spec: StudySpec) -> list[Problem]:
    try:
        study_dir(spec)
    except ValueError as exc:
        return [Problem("name", str(exc))]
    except RuntimeError as exc:  # '~user' for an unknown user
        return [Problem("storage", f"cannot resolve storage {spec.storage!r}: {exc}")]
    return []


def _path_exists(text: str) -> bool:
    try:
        return Path(text).expanduser().exists()
    except RuntimeError:  # '~user' for an unknown user
        return False


def _grid_value_key(value: Any) -> str:
    """Equal numbers are equal grid values (1 and 1.0 give the same stage); repr copes with
    unhashable bad input."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(float(value))
    return repr(value)


def _model_problems(model: ModelSpec) -> list[Problem]:
    out = []
    if not model.name.strip():
        out.append(Problem("model.name", "must name 'tiny', a Hugging Face id or a local path"))
    elif model.name.startswith(("/", "./", "../", "~")) and not _path_exists(model.name):
        # Caught here rather than in a trial, where transformers would try it as a Hub id.
        out.append(Problem("model.name", f"local model path {model.name} does not exist"))
    if model.max_length < 16:
        out.append(Problem("model.max_length", f"must be ≥ 16 (got {model.max_length})"))
    if model.name == "tiny" and model.chat_template is True:
        # Other models' templates are checked with their tokenizer (`--show-tokens`, `study run`).
        out.append(Problem("model.chat_template", "the built-in tiny model has no chat template (use auto or false)"))
    return out


def _training_problems(t: TrainingSpec) -> list[Problem]:
    out = []
    for name in ("adam_beta1", "adam_beta2"):
        if not 0 <= getattr(t, name) < 1:
            out.append(Problem(f"training.{name}", f"must be in [0, 1) (got {getattr(t, name)})"))
    if t.weight_decay < 0:
        out.append(Problem("training.weight_decay", "must be ≥ 0"))
    if t.warmup_steps < 0:
        out.append(Problem("training.warmup_steps", "must be ≥ 0"))
    if t.max_grad_norm <= 0:
        out.append(Problem("training.max_grad_norm", "must be > 0"))
    if t.eval_batch_size < 1:
        out.append(Problem("training.eval_batch_size", "must be ≥ 1"))
    return out


def _curvature_problems(spec: StudySpec) -> list[Problem]:
    c = spec.curvature
    out = []
    longest = max((len(s) for s in spec.chains.values()), default=0)
    for i, stage in enumerate(c.stages):
        if not 1 <= stage <= longest:
            out.append(Problem(f"curvature.stages[{i}]", f"no chain has a stage {stage} (stages are numbered 1..{longest})"))
    if not c.stages and c.enabled:
        out.append(Problem("curvature.stages", "at least one stage is required when curvature is enabled"))
    if not c.algorithms:
        out.append(Problem("curvature.algorithms", "at least one of power_iteration, lanczos"))
    if len(set(c.algorithms)) != len(c.algorithms):
        out.append(Problem("curvature.algorithms", "algorithms must be distinct"))
    for name, low in (("n_samples", 1), ("top_k", 1), ("max_iterations", 1), ("batch_size", 1), ("trace_samples", 0)):
        if getattr(c, name) < low:
            out.append(Problem(f"curvature.{name}", f"must be ≥ {low} (got {getattr(c, name)})"))
    if not c.tol > 0:
        out.append(Problem("curvature.tol", f"must be > 0 (got {c.tol})"))
    if c.parameters is not None:
        try:
            re.compile(c.parameters)
        except re.error as exc:
            out.append(Problem("curvature.parameters", f"not a valid regular expression: {exc}"))
    return out


def _execution_problems(e: ExecutionSpec) -> list[Problem]:
    out = []
    if not e.cpus_per_trial > 0:
        # Ray refuses a trial bundle of 0 CPUs ("empty head"); fractions work.
        out.append(Problem("execution.cpus_per_trial", "must be > 0 (fractions such as 0.5 are fine)"))
    if e.gpus_per_trial < 0:
        out.append(Problem("execution.gpus_per_trial", "must be ≥ 0"))
    if e.max_concurrent_trials is not None and e.max_concurrent_trials < 1:
        out.append(Problem("execution.max_concurrent_trials", "must be ≥ 1 or null"))
    if e.max_failures < 0:
        out.append(Problem("execution.max_failures", "must be ≥ 0"))
    return out
