"""The results tables as data: names, columns and column types, in one place, and the values
some columns take that the writer and the readers must agree on (groups, groupings, headline
metrics).

`trainables` writes every row through these schemas (as Arrow); `analysis` reads and casts with
the same ones (as Polars), so a column is declared once. Types are written as short names, so
this module needs neither pyarrow nor polars to be read; `arrow_schema` and `polars_schema`
import their library only when called. The contract grows by adding columns (older parts read
with the new ones as null, see analysis.results), never by renaming or retyping one.
"""

from __future__ import annotations

from typing import Any

STRING, INT, FLOAT, BOOL = "string", "int64", "float64", "bool"
STRINGS, FLOATS = "list<string>", "list<float64>"

TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "trials": (
        ("trial_id", STRING), ("chain", STRING), ("seed", INT), ("stage", INT),
        ("method", STRING), ("method_settings", STRING), ("task", STRING),
        ("learning_rate", FLOAT),
        ("batch_size", INT), ("steps", INT), ("stage_seed", INT),
        ("train_size", INT), ("n_train_examples", INT), ("data_seed", INT),
        ("replay_from_stage", INT), ("replay_fraction", FLOAT),
        ("stage_key", STRING), ("model", STRING), ("grid_point", STRING),
        ("executor", STRING), ("train_seconds", FLOAT), ("status", STRING),
        # Stage sharing and failures: which trial trained the stage (stage store), whether this
        # trial reused it rather than training it, and why a failed stage failed.
        ("trained_by", STRING), ("reused", BOOL), ("failure", STRING),
        # How the stage's start point was chosen when not simply the previous stage (JSON:
        # mode, chosen_seed, validation accuracy of every candidate); null otherwise.
        ("start_from", STRING),
        # The seed that drew the stage's training subsample: data_seed under seed_scope 'order',
        # one derived from data_seed and stage_seed under 'order_and_data'.
        ("train_data_seed", INT),
        # The node whose trial trained the stage (the stage record's trained_on: a Ray node id,
        # or the host name outside Ray); null in rows written before it existed.
        ("trained_on", STRING),
    ),
    "evals": (
        ("trial_id", STRING), ("stage", INT), ("eval_task", STRING), ("metric", STRING),
        ("group", STRING), ("n", INT), ("correct", INT), ("accuracy", FLOAT),
        # Which grouping `group` belongs to: ALL (group ALL), PRIMARY_GROUPING (the task's
        # primary groups: the ones forgetting is computed over), or a secondary grouping's name
        # ("condition" for BBQ, "category" for MMLU, "prompt_type" for ToxiGen prompts).
        ("grouping", STRING),
        # The metric's value: equals accuracy for accuracy-like metrics (accuracy, safe,
        # generated_accuracy, unparseable); the score itself for others (BBQ bias scores),
        # whose accuracy is null.
        ("value", FLOAT),
        # The accuracy of a uniform guess on the eval set: the mean over its examples of
        # 1 / (number of options), the chance line of the report's accuracy plots. Null for
        # generation tasks (no options) and in rows written before the column existed.
        ("chance", FLOAT),
    ),
    "predictions": (
        ("trial_id", STRING), ("stage", INT), ("eval_task", STRING), ("example_id", STRING),
        ("groups", STRINGS), ("label", STRING), ("prediction", STRING),
        ("correct", BOOL), ("margin", FLOAT),
        ("facets", STRINGS),  # secondary groupings as "name=value" (e.g. "condition=ambig")
        # contract.methods.EVAL_MODES: "score" (option log-likelihood) | "generate" (generated
        # and parsed / classified)
        ("mode", STRING),
        ("role", STRING),  # the predicted answer's role where the task defines one (BBQ: unknown, biased, counter_biased)
        ("generation", STRING),  # generate mode: the model's text
    ),
    "curvature": (
        ("trial_id", STRING), ("stage", INT), ("task", STRING), ("group", STRING),
        ("algorithm", STRING), ("n_samples", INT), ("sample_seed", INT),
        ("param_subset", STRING), ("eigenvalues", FLOATS), ("eigenvalue", FLOAT),
        ("trace", FLOAT), ("iterations", INT), ("hvp_count", INT), ("residual", FLOAT),
        ("converged", BOOL), ("tol", FLOAT), ("seconds", FLOAT),
        ("example_ids", STRINGS),
    ),
    "weights": (
        ("trial_id", STRING), ("stage", INT), ("l2_sq_from_previous", FLOAT),
        ("l2_sq_from_base", FLOAT), ("n_params", INT),
    ),
    "replay": (  # which earlier examples each replaying stage mixed in
        ("trial_id", STRING), ("stage", INT), ("from_stage", INT), ("example_id", STRING),
    ),
    "train_log": (
        ("trial_id", STRING), ("stage", INT), ("step", INT), ("loss", FLOAT),
        ("learning_rate", FLOAT), ("grad_norm", FLOAT), ("seconds", FLOAT),
    ),
    # Where a trial's wall time went: one row per (stage, phase, task) it spent time in, written
    # by the trial (its writer rank) as one part, `<trial id>.parquet`, when it ends. The
    # phases and what each row's columns count are defined below the table (TIMING_PHASES).
    "timings": (
        ("trial_id", STRING), ("run_id", STRING),
        # 0: the base model's evaluation; n: stage n (and, under start_from best_seed, the
        # candidate prefixes of stage n + 1 this trial trained, scored or waited for); null: time
        # outside any stage (the trial's start and end, and the OUTSIDE row).
        ("stage", INT),
        ("phase", STRING),
        # evaluate rows: the eval task; train, data and reward_model rows: the stage's task;
        # null otherwise (and for evaluate's own time outside any task).
        ("task", STRING),
        ("seconds", FLOAT),  # wall seconds (time.perf_counter), ≥ 0
        ("examples", INT),   # see TIMING_PHASES: null where the phase processes no examples
        ("tokens", INT),     # see TIMING_PHASES: null where not counted
        # What the trial held while it ran (for GPU- and CPU-hours: seconds × devices):
        # "gpu" with devices = its workers (one GPU each), or "cpu" with devices = workers ×
        # torch threads per worker (its CPUs per worker).
        ("device_kind", STRING), ("devices", INT),
    ),
}

TABLE_NAMES: tuple[str, ...] = tuple(TABLES)

# Columns a writer may leave out of a row (written as null): columns added after rows were
# stored for reuse (the stage store's measures), so a stored measure written before them
# still publishes. Every other column must be in every row.
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {"evals": ("chance",)}

# The phases of the timings table. A trial's phases do not overlap: time inside a phase nested
# in another (a model load inside an evaluation, a Parquet write inside a stage) counts for the
# inner one only, so a trial's rows sum to its wall time (OUTSIDE closes the sum).
MODEL_LOAD = "model_load"
"""Loading weights and tokenizer from a checkpoint or the base model (trainables.models
.load_model_and_tokenizer: for evaluation, for training the next stage, for best-seed validation,
curvature's float32 copy)."""
DATA = "data"
"""Reading and sub-sampling examples (the stage's training set, the eval sets, replay sources)."""
TRAIN = "train"
"""The policy's trainer (trainer construction and tokenization included), only in the trial
that trained the stage (a reused stage has no train row: its stage record keeps train_seconds).
examples = the rows of every micro-batch the trainer's training step received, summed over the
workers (SFT examples, DPO preference pairs, a reward model's pairs; a padding-free batch counts
its sequences): steps × batch size, less the remainder an epoch's last batch lacks. Online RL
(PPO, RLOO): the optimizer steps × the global batch (episodes, completions).
tokens = the non-padding tokens of every micro-batch the trainer's training step received,
summed over the workers: per micro-batch the sum of each `*attention_mask*` tensor (SFT: the
example's input ids, prompt + completion + EOS as the seam encodes them; DPO: prompt + chosen +
rejected ids; a reward model: chosen + rejected), or the input ids' count in a padding-free
batch (it has no padding). Null for online RL (PPO, RLOO): their batches are prompts whose
completions are generated inside the step, and nothing is counted."""
REWARD_MODEL = "reward_model"
"""Training the reward model an online-RL stage learns from its task (examples and tokens as
TRAIN's, for the reward trainer: preference pairs; chosen + rejected tokens)."""
CHECKPOINT_SAVE = "checkpoint_save"
"""Saving the trained stage's checkpoint (safetensors, tokenizer), flushing it to storage,
renaming it into the stage store and hashing its files for the stage record."""
EVALUATE = "evaluate"
"""One eval task on one stage's model (task = the eval task), in the trial that measured it (a
stage whose evals were stored by another trial has none). examples = the task's eval examples
scored. tokens = the scored tokens of option scoring: the length of every (example, option)
sequence scored, context + option as the seam encodes it, cut from the left to max_length + 1
tokens (trainables.evaluation.option_scoring.encode_pairs), summed over the options of every
example; generated text (generate mode, generation tasks) is not counted (null for a task
with no option scoring)."""
CURVATURE = "curvature"
"""Measuring the Hessian's spectrum on the stage's checkpoint (its float32 load included)."""
VALIDATION = "validation"
"""start_from best_seed: scoring a candidate on its task's validation sample (examples and
tokens as EVALUATE's)."""
WRITE = "write"
"""Writing Parquet: the trial's parts, a stage's rows and measurements in the stage store
(everything trainables.results_writer writes; the small JSON records are OTHER's)."""
LOCK_WAIT = "lock_wait"
"""Waiting for a stage's claim in the stage store (another trial training or measuring it)."""
OTHER = "other"
"""Time inside a stage not in any phase above: freeing memory between models (garbage
collection), the weight-change row, reading stored rows back, JSON records, bookkeeping."""
OUTSIDE = "outside"
"""Time outside any stage: from the moment the Tune trial function started (for a
multi-worker trial, the function that starts its Ray Train worker group, so the group's
start-up is here) to the moment the trial writes its timings, minus every other row's seconds:
importing the engine, starting workers, registering task files, clearing the trial's earlier
parts, reporting metrics to Tune between stages.
Ray's own scheduling before the trial function runs (placement, starting its process) is not
in any row: it shows as the study's wall time beyond its trials'."""
TIMING_PHASES = (MODEL_LOAD, DATA, TRAIN, REWARD_MODEL, CHECKPOINT_SAVE, EVALUATE, CURVATURE,
                 VALIDATION, WRITE, LOCK_WAIT, OTHER, OUTSIDE)
STAGE_TABLES = ("train_log", "weights", "replay")
"""Tables whose rows are fixed by a stage's training (stored with the stage, reused with it);
the others measure a checkpoint (evals, predictions, curvature) or describe the trial (trials)."""


ALL = "all"
"""The group, and the grouping, of a whole eval set (evals), and the group of a curvature sample
drawn from every training example (curvature): no task may name a group or a grouping so."""
PRIMARY_GROUPING = "group"
"""The grouping of a task's primary groups (its demographic groups: what worst-group and biased
forgetting are over)."""
PRIMARY_GROUPINGS = (ALL, PRIMARY_GROUPING)
"""The evals rows forgetting reads: the whole set and each primary group."""
ACCURACY_METRIC, SAFE_METRIC = "accuracy", "safe"
HEADLINE_METRICS = (ACCURACY_METRIC, SAFE_METRIC)
"""Each eval task's headline metric is the first of these it has: accuracy for multiple-choice
tasks, safe (the share of safe continuations) for generation tasks. Both are "higher is better"
fractions, so forgetting (stage 1 minus stage s) reads the same for either."""


def columns(table: str) -> tuple[str, ...]:
    return tuple(name for name, _ in TABLES[table])


def arrow_schema(table: str) -> Any:
    """`table`'s schema as a pyarrow.Schema (what the writer enforces)."""
    import pyarrow as pa

    simple = {STRING: pa.string(), INT: pa.int64(), FLOAT: pa.float64(), BOOL: pa.bool_(),
              STRINGS: pa.list_(pa.string()), FLOATS: pa.list_(pa.float64())}
    return pa.schema([(name, simple[kind]) for name, kind in TABLES[table]])


def polars_schema(table: str) -> dict[str, Any]:
    """`table`'s columns as Polars dtypes (what readers cast to and build empty frames with)."""
    import polars as pl

    simple = {STRING: pl.String, INT: pl.Int64, FLOAT: pl.Float64, BOOL: pl.Boolean,
              STRINGS: pl.List(pl.String), FLOATS: pl.List(pl.Float64)}
    return {name: simple[kind] for name, kind in TABLES[table]}


# Metrics every Tune report of a trial carries (NaN until defined), so a search algorithm or
# Tune's strict metric check finds them in each result: `stage`, `<eval task>/<headline
# metric>`, and these per evaluated task some stage of the chain trains, named `<metric>/<task>`
# (at the final stage, against the model right after the stage that trained the task).
FORGETTING_METRICS = ("forgetting", "wg_forgetting", "biased_forgetting")
