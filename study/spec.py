"""The study spec: what a YAML study file declares, as frozen dataclasses with paper defaults.

This module is the list of a study file's fields (StudySpec and its parts, each field with its
meaning and default), the constants that say which values a study-only field takes (the values
the workers share, methods and eval modes among them, are contract.methods'), and small pure
helpers on a loaded spec. Reading a file is study/spec_loading.py (YAML, shorthands, stage_defaults, the
`tiny:` block, `--set`); the checks across fields are study/spec_checks.py. Both import this
module, never the reverse.

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
study/spec_loading.py). It is not a field of StudySpec: a loaded spec holds the resolved values.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from contract.layout import study_folder
from contract.methods import AUTO, SFT, STAGE_START_REFERENCE, STATEMENT_PROMPTS
from contract.plan import DEFAULT_EVAL_MODES, DEFAULT_OPTIMIZER, plain_data

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
OPTION_COUNTS = range(2, 6)  # what the multiple-choice template can letter (A-E)


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
    eval_modes: tuple[str, ...] = DEFAULT_EVAL_MODES
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
    batch_size: int | Literal["auto"] = 16
    """Prompts per `generate` call (the safety tasks and the 'generate' eval mode). Its own field,
    not derived from training.eval_batch_size: generation keeps a KV cache of prompt +
    max_new_tokens per row where scoring keeps the context plus a few answer tokens, and its
    measure-key history is its own. 'auto': 16 on CPU studies; on GPU studies the largest power of
    two (≤ 256) whose generation estimate fits one GPU (study.orchestrate resolves it with
    trainables.memory_model before planning; `study validate` prints it)."""


@dataclass(frozen=True)
class EvaluationSpec:
    """How every model is scored and generated from (stage 0, trained and reused stages,
    best_seed candidates alike; curvature has its own settings)."""

    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """The arithmetic of the evaluated model's forward passes: 'float32' (no autocast) or
    'bfloat16' (bf16 autocast; the weights stay in model.dtype). 'auto' = bfloat16 when the
    trial has GPUs (execution.gpus_per_trial > 0) and model.dtype is not float32, else float32.
    Resolved once per study (`eval_precision`); the resolved value enters the measurement keys
    when it is not float32, so stored evaluations are never mixed across precisions."""


@dataclass(frozen=True)
class DataSpec:
    """How the study treats its task data (docs/reliability.md: "Bad data rows")."""

    bad_rows: Literal["error", "skip"] = "error"  # = tasks.bad_rows.POLICIES
    """A row of the data the study reads that cannot be parsed or made into an item: 'error'
    refuses the study before anything runs (`FILE:LINE: what is wrong`, exit 2); 'skip' leaves
    such rows out, lists them in the run record and `study status`, and keys the study's stages
    by them (never shared with a study that read the rows whole)."""


@dataclass(frozen=True)
class DPOSpec:
    """Settings of a `method: dpo` stage (TRL DPOTrainer, sigmoid loss)."""

    beta: float = 0.1
    """Strength of the implicit KL constraint to the reference model (> 0)."""
    reference: Literal["stage_start", "base"] = STAGE_START_REFERENCE  # = contract.methods.DPO_REFERENCES (tests/test_methods.py)
    """Frozen reference policy: the model the stage starts from (standard DPO) or the base model."""
    precompute_reference: bool | Literal["auto"] = AUTO  # "auto" = contract.methods.AUTO
    """Compute the reference's log-probabilities of every training pair once before the first
    step and free the reference (true), or keep it loaded and run it beside every batch (false).
    auto: true on GPU workers (the reference's weights are memory the training needs), false on CPU."""


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
    prompts: Literal["statements", "templated"] = STATEMENT_PROMPTS  # = contract.methods.PROMPT_MODES (tests/test_methods.py)
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
    method: str = SFT
    """One of contract.methods.METHODS (checked with a "did you mean", so not a Literal)."""
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
    """Optimizer and schedule shared by all stages (paper §2.2: AdamW 0.9/0.95, wd 0.1, cosine, no warmup),
    and how each optimizer step is computed.

    micro_batch_size, activation_checkpointing, optimizer and padding_free live here, shared by
    every stage, rather than on a stage: they say how a step is computed on the hardware (memory
    and speed), not what the experiment is (the stage's batch_size stays the global batch, and a
    grid never sweeps them). The defaults are the engine's behaviour before they existed; a
    non-default micro_batch_size, optimizer or padding_free enters every stage key of the study
    (they change results at most by float rounding, contract.plan.TrainingPlan.key_payload),
    activation_checkpointing never does (it changes nothing)."""

    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    weight_decay: float = 0.1
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    eval_batch_size: int | Literal["auto"] = 32
    """Option rows per scoring batch. 'auto': 32 on CPU studies (their workers' memory is not
    known to the driver); on GPU studies the largest power of two (≤ 256) whose scoring estimate
    fits one GPU's execution.gpu_memory_gb at model.max_length in the evaluation precision
    (trainables.eval_memory.largest_eval_batch), resolved by `study run` before planning and
    printed by `study validate`. The number planned enters the measure keys and (as every
    eval_batch_size always has) the stage keys. Not the default: plan parts built from this
    dataclass's defaults (tests, bench scripts) need a number, and a number keeps its keys when
    execution.gpu_memory_gb changes. A GPU study's number that does not fit one GPU is refused."""
    micro_batch_size: int | None = None
    """Examples per forward/backward pass on one device. Each device's share of a stage's batch
    (batch_size / execution.workers_per_trial) is run as share / micro_batch_size passes whose
    gradients are accumulated into one optimizer step, so the global batch stays batch_size (the
    paper's 16) and only the activations held at once shrink; the share must be divisible by it.
    null = the whole share in one pass."""
    activation_checkpointing: bool | Literal["auto"] = "auto"
    """Keep only each decoder layer's input in the forward pass and recompute the rest in the
    backward pass: far less activation memory for ~30% more compute, the same gradients. With
    execution.fsdp it is FSDP's own activation checkpointing. Not with PPO stages (TRL's
    PPOTrainer runs its own loop, which never turns it on). 'auto' (the default): off for CPU
    studies; on for a GPU study when, after execution.fsdp: auto, some step still does not fit
    its GPU by the memory model (never with a PPO stage): resolved by `study run` / `study
    validate` before planning (study.orchestrate.check_memory, `checkpointing_on`)."""
    optimizer: Literal["adamw_torch", "adamw_torch_fused"] = DEFAULT_OPTIMIZER  # = contract.plan.OPTIMIZERS (tests/test_micro_batches.py)
    """torch's AdamW: 'adamw_torch' (multi-tensor foreach step on a GPU, which holds a model-sized
    temporary) or 'adamw_torch_fused' (one fused kernel per step, no temporary; CPU and GPU)."""
    padding_free: bool = False
    """SFT only: lay each batch's examples end to end instead of padding them to the longest (TRL
    SFTConfig.padding_free), so 16 short QA examples cost their own tokens; the loss is the same.
    Refused with other methods: TRL 1.12 turns it off in DPO and has none for the reward model,
    PPO or RLOO. Best with FlashAttention; transformers' sdpa and eager attention separate the
    examples too (in training, without a KV cache, they read restarting position ids as a
    block-diagonal mask)."""


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
    algorithms: tuple[Literal["power_iteration", "lanczos"], ...] = ("lanczos",)
    """Eigenvalue methods, run one after the other, each a row. Lanczos alone by default: it stops
    as soon as the top eigenvalue is known to `tol` and needs at most the HVPs power iteration
    (the paper's method, which the paper presets name) needs to the same tol, far fewer where
    the top two eigenvalues are close. Name both to compare them."""
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
    """0 (CPU trials; they are never shown a GPU) or one whole GPU per worker (= workers_per_trial).
    A fraction below 1 only with share_gpus."""
    workers_per_trial: int = 1
    """Data-parallel workers per trial (Ray Train, DDP): each stage's batch_size is the global
    batch, batch_size / workers per worker; cpus_per_trial and gpus_per_trial are split over them."""
    share_gpus: bool = False
    """Let one-worker trials share a GPU (gpus_per_trial a fraction in (0, 1), e.g. 0.25 for four
    trials per GPU). Off by default: Ray splits GPUs by count, not memory, so two 7B trials would
    land on one GPU that holds neither; turn it on for models several of which fit one GPU."""
    fsdp: bool | Literal["auto"] = "auto"
    """With GPU workers: shard the model, gradients and optimizer state over them (FSDP2); it
    enters the stage keys when on. 'auto' (the default): off for CPU studies and one-worker trials;
    on for a GPU study with several workers when some step does not fit its GPU without it by the
    memory model (trainables/memory_model.py): resolved by `study run` / `study validate` before
    planning (study.orchestrate.check_memory, `fsdp_on`). An explicit false that does not fit is
    refused with what would."""
    gpu_memory_gb: float = 80.0
    """Memory of one of the cluster's GPUs, in GB (1e9 bytes): a study whose steps need more per
    worker (trainables/memory_model.py) is refused before it runs. An "80 GB" A100/H100 holds
    ~85e9 bytes; the difference is headroom for the allocator."""
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
    """YAML files declaring extra multiple-choice tasks (docs/tasks.md: "Your own tasks"); relative
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
    keep_checkpoints: Literal["needed", "final", "all"] = "needed"
    """Which stage checkpoints the stage store keeps. 'needed': a checkpoint is removed as soon
    as nothing the study plans still needs it (every planned stage that starts from it is
    stored, and its own evaluation, curvature and best-seed validation are stored); 'final':
    as 'needed', but the last stage of every chain keeps its checkpoint; 'all': none is
    removed. Rows, records and measurements always stay, so reports, `--resume` and stage
    sharing work the same; a later extension that needs a removed checkpoint retrains that
    stage. Storage only: never part of a stage key."""
    training: TrainingSpec = field(default_factory=TrainingSpec)
    curvature: CurvatureSpec = field(default_factory=CurvatureSpec)
    execution: ExecutionSpec = field(default_factory=ExecutionSpec)
    generation: GenerationSpec = field(default_factory=GenerationSpec)
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    data: DataSpec = field(default_factory=DataSpec)

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
        return plain_data(dataclasses.asdict(self))


def stage_seed(stage: StageSpec, trial_seed: int) -> int:
    """A stage's seed in the trial with seed `trial_seed`: the stage's own `seed` when it has one."""
    return int(stage.seed if stage.seed is not None else trial_seed)


def eval_precision(spec: StudySpec) -> str:
    """evaluation.precision resolved for the study's trials: 'float32' or 'bfloat16' (see
    EvaluationSpec.precision). Every trial of a study has the same resources, so one value; the
    worker checks that its device can run it (trainables.evaluation.precision)."""
    if spec.evaluation.precision != "auto":
        return spec.evaluation.precision
    gpu = spec.execution.gpus_per_trial > 0
    return "bfloat16" if gpu and spec.model.dtype != "float32" else "float32"


def eval_batch_size(spec: StudySpec) -> int:
    """training.eval_batch_size as the plan takes it: 'auto' is the field's default (32) here. A
    GPU study's auto is replaced by its memory-model value before `study run` plans
    (study.orchestrate.check_memory); a plan built without that step (tests, bench
    scripts calling build_plans) gets the CPU value."""
    value = spec.training.eval_batch_size
    return int(_default(TrainingSpec, "eval_batch_size") if value == "auto" else value)


def generation_batch_size(spec: StudySpec) -> int:
    """generation.batch_size as the plan takes it ('auto' = the field's default, 16, as in `eval_batch_size`)."""
    value = spec.generation.batch_size
    return int(_default(GenerationSpec, "batch_size") if value == "auto" else value)


def _default(cls: type, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def fsdp_on(spec: StudySpec) -> bool:
    """execution.fsdp as the study's trials run it: true only when set to true, or resolved to
    true from 'auto' by study.orchestrate.check_memory (which `study run` applies before
    planning). An unresolved 'auto' (a CPU study, or a spec planned without the memory check, as
    tests do) plans as off, so the planner, the stage keys and the workers' STUDY_FSDP agree."""
    return spec.execution.fsdp is True


def checkpointing_on(spec: StudySpec) -> bool:
    """training.activation_checkpointing as the study's trials run it (see `fsdp_on`)."""
    return spec.training.activation_checkpointing is True


def round_sample(value: float) -> float:
    """A continuous sample as the trial runs it: SAMPLE_DIGITS significant digits (idempotent)."""
    return float(f"{float(value):.{SAMPLE_DIGITS}g}")


def study_dir(spec: StudySpec) -> Path:
    """The study folder `<storage>/<name>`, resolved (symlinks included); ValueError if it does
    not lie inside storage, so no study file can make a run write outside its results root."""
    return study_folder(spec.storage, spec.name)

