"""The typed plan of a trial: what `study` builds and `trainables` runs, every field filled.

`study.planner` expands a study into trial plans and fills every setting there, once (the study
file's defaults included); workers read attributes and never restate a default. A plan travels
as these frozen dataclasses through Ray Tune (they pickle) and is written to plans.json as
`TrialPlan.to_dict()`, read back with `TrialPlan.from_dict()`.

The dict form is the plans.json format and the payload of stage keys, trial ids and measurement
keys, so it never changes shape: a setting that entered no key before it existed is written only
when it is set (`train_limit`, a stage's `data_seed`, `option_counts`, an eval task's `limit` and
`modes`, a reward's `data` and `input`, the training settings micro_batch_size,
activation_checkpointing, optimizer and padding_free, a trial's `eval_precision` and `bad_rows`), and a method's settings (`dpo`, `ppo`, `rloo`) only on
a stage of that method. `to_dict` writes each class's keys in the order plans.json has them.

Also here: the versions that enter stage and measurement keys and that `study` needs without
importing `trainables` (PLAN_VERSION, TOKENIZATION_VERSION, REWARD_INPUT_VERSION), and the names
of the data a reward model trained in a stage learns from. One topic, read top to bottom (the
parts of a plan first, the trial plan last); its length is one short class per part.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping, Self

from contract.content_hash import content_hash
from contract.methods import DPO, PPO, RLOO, SCORE_MODE

PLAN_VERSION = 1
"""Bump when the meaning of a plan field changes (it enters every stage_key)."""
TOKENIZATION_VERSION = 2
"""Bump when the tokens an option is scored or trained on change for some tokenizer: it enters
the measurement keys, so stored evaluations and curvature are measured again, not reused.
(1: options encoded alone and appended to the context; 2: the joint encoding described in
trainables.tokenization.)"""
REWARD_INPUT_VERSION = 2
"""Bump when the input a reward model reads for a rollout changes (it enters the stage keys of
stages that score text; 1: RLOO through TRL, prompt + completion without the reward
tokenizer's special tokens; 2: trainables.stages.text_reward's `reward_encoding`)."""

STATEMENTS = "toxigen_statements"
"""Reward data: a neutral vs a hate ToxiGen statement continuing a raw statement prompt."""
QA_PAIRS = "qa_pairs"
"""Reward data: the task's preference pairs (correct vs a wrong answer); reward models trained
on these keep their stage keys (the data is not written into the plan)."""
EVAL_PRECISIONS = ("float32", "bfloat16")
"""What a study's evaluation.precision resolves to (study.spec.eval_precision): the arithmetic of
every evaluated model's forward passes, no autocast or bf16 autocast."""
DEFAULT_EVAL_PRECISION = "float32"
"""The resolved evaluation precision that plans.json and the measurement keys leave out: every
evaluation measured before the setting existed was float32."""
DEFAULT_EVAL_MODES = (SCORE_MODE,)
"""The eval modes an eval task's dict leaves out (generation tasks always have these), and the
default of a study file's `eval_modes` (study.spec.TaskSpec): one constant, so what the keys
omit is always what a study gets by default."""


def plain_data(value: Any) -> Any:
    """Mappings as dicts and tuples as lists, recursively: the JSON/YAML form of a plan or a
    spec (plans.json and study.yaml round-trip equal)."""
    if isinstance(value, Mapping):
        return {k: plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    return value


def _flat(cls, data: Mapping[str, Any]):
    """A flat plan part from its dict; sequences become tuples (the typed form is immutable)."""
    names = {f.name for f in fields(cls)}
    if set(data) != names:
        raise ValueError(f"{cls.__name__}: expected the keys {sorted(names)}, got {sorted(data)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


class _FlatPart:
    """Base of the plan parts (dataclasses) whose dict form is simply their fields, in order,
    every one written; the others (a setting left out when unset, a nested part) write their own."""

    def to_dict(self) -> dict[str, Any]:
        return plain_data(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return _flat(cls, data)


def _optional_tuple(value: Any) -> tuple | None:
    return None if value is None else tuple(value)


# ---------------------------------------------------------------- the study's shared settings


@dataclass(frozen=True)
class ModelPlan(_FlatPart):
    """The study's model as every stage loads it: the spec's `model` block, where stage 0 loads
    it from (`path`: the built tiny model's folder, else the name) and whether it is prompted
    through its chat template (`chat`: model.chat_template resolved by the planner's caller)."""

    name: str
    max_length: int
    dtype: str
    trust_remote_code: bool
    chat_template: str | bool
    path: str
    chat: bool


DEFAULT_OPTIMIZER = "adamw_torch"
"""The AdamW implementation every stage used before `training.optimizer` existed (torch's AdamW,
which takes its multi-tensor `foreach` path on a GPU)."""
OPTIMIZERS = (DEFAULT_OPTIMIZER, "adamw_torch_fused")
"""The values of `training.optimizer`: transformers' names for torch's AdamW, plain or fused.
A foreach-free AdamW is not among them: transformers 5.25 has no optimizer name for it, and
TRL's DPO, RLOO and PPO trainers take no optimizer class; the fused kernel (one pass per
parameter tensor, no model-sized temporary) is what removes the foreach step's extra memory."""


@dataclass(frozen=True)
class TrainingPlan:
    """Optimizer and schedule shared by every stage (paper §2.2), the evaluation batch, and how
    each optimizer step is computed (micro-batches, activation checkpointing, the AdamW kernel,
    padding-free batches): memory and speed settings of the study, not of an experiment's stage.

    The last four came later; the dict form (plans.json) writes each only when it differs from
    its default here, so plans of studies that leave them alone keep their shape.
    `key_payload` is what enters the stage keys (study.planner.base_identity)."""

    adam_beta1: float
    adam_beta2: float
    weight_decay: float
    lr_scheduler: str
    warmup_steps: int
    max_grad_norm: float
    eval_batch_size: int
    micro_batch_size: int | None = None
    """Examples per forward/backward pass on one device; the per-device batch is accumulated over
    per-device batch / micro_batch_size passes (contract.workers.batch_split). None: one pass."""
    activation_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass instead of keeping them."""
    optimizer: str = DEFAULT_OPTIMIZER
    """One of OPTIMIZERS (TrainingArguments.optim)."""
    padding_free: bool = False
    """SFT stages: a batch is its examples laid end to end (no padding), TRL's `padding_free`."""

    LATE_FIELDS = ("micro_batch_size", "activation_checkpointing", "optimizer", "padding_free")
    """Fields written to the dict form only when they differ from their defaults."""
    UNKEYED_FIELDS = ("activation_checkpointing",)
    """Fields that never enter a stage key: activation checkpointing recomputes the same forward
    pass with the same kernels (torch.utils.checkpoint restores the RNG state for dropout), so
    the gradients are the same (tests/test_micro_batches.py: one step with and without it gives
    equal weights); a stage trained either way may be reused by the other."""

    def to_dict(self) -> dict[str, Any]:
        entry = plain_data(asdict(self))
        defaults = {f.name: f.default for f in fields(self)}
        for name in self.LATE_FIELDS:
            if entry[name] == defaults[name]:
                del entry[name]
        return entry

    def key_payload(self) -> dict[str, Any]:
        """What enters every stage key of the study (via its base identity): the dict form
        without UNKEYED_FIELDS. A non-default micro_batch_size (gradient accumulation sums the
        same gradients in another order: float rounding), optimizer (another kernel, the same
        AdamW up to rounding) or padding_free (the same loss, other attention kernels and
        shapes) enters it: the conservative choice for settings that change results only in
        the last bits, since a reused stage must be the stage that would have been trained."""
        entry = self.to_dict()
        for name in self.UNKEYED_FIELDS:
            entry.pop(name, None)
        return entry

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainingPlan":
        names = {f.name for f in fields(cls)}
        required = names - set(cls.LATE_FIELDS)
        if not required <= set(data) or not set(data) <= names:
            raise ValueError(f"TrainingPlan: expected the keys {sorted(required)} (and optionally "
                             f"{list(cls.LATE_FIELDS)}), got {sorted(data)}")
        return cls(**data)


@dataclass(frozen=True)
class GenerationPlan(_FlatPart):
    """Free-text evaluation settings (a plan has them only when some evaluation generates)."""

    classifier: str
    threshold: float
    max_new_tokens: int
    answer_max_new_tokens: int
    batch_size: int


@dataclass(frozen=True)
class CurvaturePlan(_FlatPart):
    """Hessian curvature measured after the listed stages (measurement only: in no stage key)."""

    enabled: bool
    stages: tuple[int, ...]
    n_samples: int
    sample_seed: int
    algorithms: tuple[str, ...]
    top_k: int
    max_iterations: int
    tol: float
    trace_samples: int
    per_group: bool
    parameters: str | None
    batch_size: int

    def measures(self, stage: int) -> bool:
        """Whether curvature is measured after stage number `stage`."""
        return self.enabled and stage in self.stages


@dataclass(frozen=True)
class EvalTaskPlan:
    """One task evaluated after every stage: what its measurement depends on."""

    task: str
    size: int | None
    version: str
    limit: int | None
    option_counts: tuple[int, ...] | None
    """None: the task's default option counts."""
    modes: tuple[str, ...]
    """How a multiple-choice task is evaluated ('score', 'generate'); generation tasks are always
    generated and classified, and keep DEFAULT_EVAL_MODES here."""

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"task": self.task, "size": self.size, "version": self.version}
        if self.limit is not None:
            entry["limit"] = self.limit
        if self.option_counts is not None:
            entry["option_counts"] = list(self.option_counts)
        if self.modes != DEFAULT_EVAL_MODES:
            entry["modes"] = list(self.modes)
        return entry

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EvalTaskPlan":
        return cls(task=data["task"], size=data["size"], version=data["version"], limit=data.get("limit"),
                   option_counts=_optional_tuple(data.get("option_counts")),
                   modes=tuple(data.get("modes", DEFAULT_EVAL_MODES)))


# ---------------------------------------------------------------- a stage's method settings


@dataclass(frozen=True)
class ReplayPlan(_FlatPart):
    """Mix a sample of an earlier stage's training examples into this stage's."""

    from_stage: int
    fraction: float
    only: bool


@dataclass(frozen=True)
class DpoPlan(_FlatPart):
    """A DPO stage's settings: beta, the reference policy ('stage_start' or 'base') and whether
    its log-probabilities are precomputed (contract.methods.dpo_precomputes_reference, resolved).

    `precompute_reference` came later: the dict form writes it only when True, so plans and keys
    of stages that keep the reference loaded are unchanged. It enters the key when True: the
    reference's log-probabilities are then computed in other batches (other padding, other
    matmul shapes) than beside each training batch, equal up to float rounding."""

    beta: float
    reference: str
    precompute_reference: bool = False

    def to_dict(self) -> dict[str, Any]:
        entry = super().to_dict()
        if not self.precompute_reference:
            del entry["precompute_reference"]
        return entry

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DpoPlan":
        return _flat(cls, {"precompute_reference": False, **data})


@dataclass(frozen=True)
class RewardTrainingPlan:
    """A reward model trained in the stage: its own optimizer steps, and what it learns from
    (STATEMENTS or QA_PAIRS, see tasks.reward_sources). Its seed is the stage's."""

    steps: int
    learning_rate: float
    batch_size: int
    data: str

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"steps": self.steps, "learning_rate": self.learning_rate,
                                 "batch_size": self.batch_size}
        if self.data != QA_PAIRS:  # reward models trained on QA pairs keep their keys
            entry["data"] = self.data
        return entry

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RewardTrainingPlan":
        return cls(steps=data["steps"], learning_rate=data["learning_rate"], batch_size=data["batch_size"],
                   data=data.get("data", QA_PAIRS))


@dataclass(frozen=True)
class RewardPlan:
    """An online-RL stage's reward, as its stage key records it: a named reward model, or one
    trained in the stage; `input`: REWARD_INPUT_VERSION wherever the reward model may read text."""

    model: str | None
    train: RewardTrainingPlan | None
    input: int | None

    def __post_init__(self) -> None:
        if (self.model is None) == (self.train is None):
            raise ValueError(f"a reward is a named model or a trained one, not both nor neither: {self}")

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"model": self.model} if self.model is not None else {"train": self.train.to_dict()}
        if self.input is not None:
            entry["input"] = self.input
        return entry

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RewardPlan":
        """From the key form `{"model": id}` or `{"train": {...}}` (plus `input`); ValueError otherwise."""
        keys = set(data) if isinstance(data, Mapping) else set()
        if ("model" in keys) == ("train" in keys) or keys - {"model", "train", "input"}:
            raise ValueError(f"a reward must be {{'model': <id>}} or {{'train': {{...}}}}, got {data!r}")
        train = RewardTrainingPlan.from_dict(data["train"]) if "train" in data else None
        return cls(model=data.get("model"), train=train, input=data.get("input"))


@dataclass(frozen=True)
class OnlineRLPlan:
    """A PPO or RLOO stage's settings (num_generations: RLOO's samples per prompt)."""

    reward: RewardPlan
    kl_coef: float
    response_length: int
    num_ppo_epochs: int
    temperature: float
    prompts: str
    num_generations: int

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reward": self.reward.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "OnlineRLPlan":
        return _flat(cls, {**data, "reward": RewardPlan.from_dict(data["reward"])})


# ---------------------------------------------------------------- stages


@dataclass(frozen=True)
class StagePlan:
    """One stage of a chain: what determines its weights (all of it enters `stage_key`, with the
    parent stage's key), and, for a `best_seed` stage, how its start point is chosen."""

    stage: int
    """1-based position in the chain."""
    method: str
    task: str
    learning_rate: float
    batch_size: int
    """The global batch (split over the data-parallel workers)."""
    steps: int
    seed: int
    train_size: int | None
    """None: the whole train split."""
    task_version: str
    replay: ReplayPlan | None
    train_limit: int | None
    """Only the first `train_limit` items of each split are read; None: every item."""
    data_seed: int | None
    """The seed that draws the training subsample under seed_scope 'order_and_data'; None under
    'order', where it is the trial's data_seed (`TrialPlan.train_data_seed`)."""
    option_counts: tuple[int, ...] | None
    """None: the task's default option counts."""
    dpo: DpoPlan | None
    ppo: OnlineRLPlan | None
    rloo: OnlineRLPlan | None
    """A method's settings, only on a stage of that method."""
    stage_key: str
    start_from: StartFromPlan | None

    @property
    def online_rl(self) -> OnlineRLPlan:
        """A PPO or RLOO stage's settings."""
        settings = {PPO: self.ppo, RLOO: self.rloo}.get(self.method)
        if settings is None:
            raise ValueError(f"stage {self.stage} ({self.method}) has no online-RL settings")
        return settings

    def method_settings(self) -> dict[str, Any]:
        """The method's own settings as the plan records them ({} for SFT)."""
        settings = {DPO: self.dpo, PPO: self.ppo, RLOO: self.rloo}.get(self.method)
        return settings.to_dict() if settings is not None else {}

    def key_payload(self) -> dict[str, Any]:
        """What enters the stage key besides the parent: the dict form without the key itself
        and the start point (a best_seed stage's key hashes its candidates instead)."""
        entry: dict[str, Any] = {
            "stage": self.stage, "method": self.method, "task": self.task, "learning_rate": self.learning_rate,
            "batch_size": self.batch_size, "steps": self.steps, "seed": self.seed, "train_size": self.train_size,
            "task_version": self.task_version, "replay": self.replay.to_dict() if self.replay else None,
        }
        if self.train_limit is not None:
            entry["train_limit"] = self.train_limit
        if self.data_seed is not None:
            entry["data_seed"] = self.data_seed
        if self.option_counts is not None:
            entry["option_counts"] = list(self.option_counts)
        for method, settings in (("dpo", self.dpo), ("ppo", self.ppo), ("rloo", self.rloo)):
            if settings is not None:
                entry[method] = settings.to_dict()
        return entry

    def keyed(self, parent: str) -> "StagePlan":
        """This stage with its key: the content hash of its parent (the previous stage's key,
        the study's base key, or a best_seed stage's candidates) and its key payload."""
        return replace(self, stage_key=content_hash({"parent": parent, **self.key_payload()}))

    def to_dict(self) -> dict[str, Any]:
        entry = {**self.key_payload(), "stage_key": self.stage_key}
        if self.start_from is not None:
            entry["start_from"] = self.start_from.to_dict()
        return entry

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StagePlan":
        def settings(kind, key):
            return kind.from_dict(data[key]) if data.get(key) is not None else None

        return cls(
            stage=data["stage"], method=data["method"], task=data["task"], learning_rate=data["learning_rate"],
            batch_size=data["batch_size"], steps=data["steps"], seed=data["seed"], train_size=data["train_size"],
            task_version=data["task_version"], replay=settings(ReplayPlan, "replay"),
            train_limit=data.get("train_limit"), data_seed=data.get("data_seed"),
            option_counts=_optional_tuple(data.get("option_counts")),
            dpo=settings(DpoPlan, "dpo"), ppo=settings(OnlineRLPlan, "ppo"), rloo=settings(OnlineRLPlan, "rloo"),
            stage_key=data["stage_key"], start_from=settings(StartFromPlan, "start_from"),
        )


@dataclass(frozen=True)
class StartFromPlan:
    """A stage that starts from the best of the previous stage's seeds (`start_from: best_seed`):
    the candidate prefixes (one per distinct seed prefix, in seed order) and the validation
    sample that picks among them (study.start_points)."""

    mode: str
    validation_size: int
    validation_split: str
    candidates: tuple[tuple[StagePlan, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "validation_size": self.validation_size, "validation_split": self.validation_split,
                "candidates": [[stage.to_dict() for stage in prefix] for prefix in self.candidates]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StartFromPlan":
        return cls(mode=data["mode"], validation_size=data["validation_size"],
                   validation_split=data["validation_split"],
                   candidates=tuple(tuple(StagePlan.from_dict(s) for s in prefix) for prefix in data["candidates"]))


# ---------------------------------------------------------------- the trial


@dataclass(frozen=True)
class BadRowsPlan:
    """A study with `data.bad_rows: skip` (None in a plan otherwise): every load of its trials
    leaves bad rows out, and `digest` (of the skipped rows' files, lines and reasons, from the
    driver's data check: study.data_check) enters the study's base key and the measure keys, so
    its stages and measurements are never shared with a study that read other rows."""

    skipped: int
    digest: str

    def to_dict(self) -> dict[str, Any]:
        return {"policy": "skip", "skipped": self.skipped, "digest": self.digest}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BadRowsPlan":
        return cls(skipped=data["skipped"], digest=data["digest"])


@dataclass(frozen=True)
class RunInfo:
    """The `study run` invocation a trial belongs to (stamped by study.orchestrate; never in
    plans.json): stages stored by earlier runs are reused only when `reuse_earlier_runs`."""

    run_id: str
    reuse_earlier_runs: bool = False  # `study run --resume` only
    verify_checkpoints: bool = False
    """`study run --verify-checkpoints`: a stored checkpoint of an earlier run is checked against
    its recorded sha256 hashes (once per run) before it is reused, not only its file sizes."""
    keep_checkpoints: str = "all"
    """The study file's `keep_checkpoints` (contract.checkpoint_needs.POLICIES): which stage
    checkpoints the trial removes once nothing the study plans needs them. A plan run outside
    `study run` (AD_HOC_RUN: tests, benchmarks) keeps every checkpoint."""


AD_HOC_RUN = RunInfo(run_id="adhoc")
"""The run of a plan handed to trainables outside `study run` (tests, benchmarks)."""


@dataclass(frozen=True)
class TrialPlan:
    """One trial: a chain at a grid point with a seed, its stages, what is measured after each."""

    trial_id: str
    study: str
    chain: str
    seed: int
    grid_point: dict[str, Any]
    """The grid (or sampled) values of the trial, `stage<k>.<field>: value`."""
    model: ModelPlan
    stages: tuple[StagePlan, ...]
    eval_tasks: tuple[EvalTaskPlan, ...]
    task_files: tuple[str, ...]
    generation: GenerationPlan | None
    data_dir: str | None
    """The local mirror; None: the Hugging Face Hub."""
    data_seed: int
    training: TrainingPlan
    curvature: CurvaturePlan
    study_dir: str
    eval_precision: str = DEFAULT_EVAL_PRECISION
    """One of EVAL_PRECISIONS: how every model of the trial is scored and generated from."""
    bad_rows: BadRowsPlan | None = None
    """data.bad_rows: skip, with what the data check skipped; None: bad rows are an error."""
    run: RunInfo = AD_HOC_RUN

    def train_data_seed(self, stage: StagePlan) -> int:
        """The seed that draws a stage's training subsample: the stage's own under seed_scope
        'order_and_data', else the study's data_seed."""
        return self.data_seed if stage.data_seed is None else stage.data_seed

    @property
    def bad_rows_policy(self) -> str:
        """What the trial's loads do with a bad row (tasks.bad_rows): "skip" or "error"."""
        return "error" if self.bad_rows is None else "skip"

    def to_dict(self) -> dict[str, Any]:
        """The plans.json form (without `run`; `eval_precision` and `bad_rows` only when set)."""
        entry = {
            "trial_id": self.trial_id, "study": self.study, "chain": self.chain, "seed": self.seed,
            "grid_point": dict(self.grid_point), "model": self.model.to_dict(),
            "stages": [stage.to_dict() for stage in self.stages],
            "eval_tasks": [entry.to_dict() for entry in self.eval_tasks], "task_files": list(self.task_files),
            "generation": self.generation.to_dict() if self.generation is not None else None,
            "data_dir": self.data_dir, "data_seed": self.data_seed, "training": self.training.to_dict(),
            "curvature": self.curvature.to_dict(), "study_dir": self.study_dir,
        }
        if self.eval_precision != DEFAULT_EVAL_PRECISION:
            entry["eval_precision"] = self.eval_precision
        if self.bad_rows is not None:
            entry["bad_rows"] = self.bad_rows.to_dict()
        return entry

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrialPlan":
        """A plan read from plans.json (its run: AD_HOC_RUN until stamped)."""
        return cls(
            trial_id=data["trial_id"], study=data["study"], chain=data["chain"], seed=data["seed"],
            grid_point=dict(data["grid_point"]), model=ModelPlan.from_dict(data["model"]),
            stages=tuple(StagePlan.from_dict(s) for s in data["stages"]),
            eval_tasks=tuple(EvalTaskPlan.from_dict(e) for e in data["eval_tasks"]),
            task_files=tuple(data["task_files"]),
            generation=GenerationPlan.from_dict(data["generation"]) if data["generation"] is not None else None,
            data_dir=data["data_dir"], data_seed=data["data_seed"], training=TrainingPlan.from_dict(data["training"]),
            curvature=CurvaturePlan.from_dict(data["curvature"]), study_dir=data["study_dir"],
            eval_precision=data.get("eval_precision", DEFAULT_EVAL_PRECISION),
            bad_rows=BadRowsPlan.from_dict(data["bad_rows"]) if data.get("bad_rows") is not None else None,
        )
