"""What a task is: a declarative entry (TaskDefinition) and the metrics it reports.

Kept apart from registry.py so task modules can build their own definitions without a
circular import.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.schema import ACCURACY_METRIC, SAFE_METRIC

from .example import Example
from .source import HubSource, MirrorSource, Row


@dataclass(frozen=True)
class Metric:
    """A metric a task reports, with the direction that counts as better."""

    name: str
    direction: str  # "higher" | "lower" | "zero" (closer to 0 is better: bias scores)
    description: str = ""

    def __post_init__(self) -> None:
        if self.direction not in ("higher", "lower", "zero"):
            raise ValueError(f"metric {self.name!r}: direction must be higher, lower or zero, got {self.direction!r}")


ACCURACY = Metric(ACCURACY_METRIC, "higher", "share of examples whose best-scoring option is the label")
GENERATED_ACCURACY = Metric(
    "generated_accuracy", "higher",
    "paper-exact mode: share of greedy generations whose parsed answer is the label (unparseable = wrong)")
UNPARSEABLE = Metric("unparseable", "lower", "paper-exact mode: share of generations with no parseable answer")
SAFE = Metric(SAFE_METRIC, "higher", "share of generated continuations the toxicity classifier scores as not toxic")

# Which kinds of item a task yields, and so how it is evaluated:
#   choice:     Examples with scored options (accuracy; paper-exact generate-and-parse too)
#   generation: GenerationPrompts whose continuations a toxicity classifier judges (safe)
KINDS = ("choice", "generation")
# The splits a task may have. "validation" is for choosing between trained models (the best
# first-stage seed); it is never trained on and never overlaps eval.
SPLITS = ("train", "validation", "eval")
# The split `start_from: best_seed` scores the candidate models on.
SELECTION_SPLIT = "validation"
# The metric forgetting and the per-trial reports use for each kind of task (the headline
# metrics of contract.schema, which analysis finds by the same names).
PRIMARY_METRIC = {"choice": ACCURACY.name, "generation": SAFE.name}

# BBQ-style extra metrics: (examples, their ScoredExamples) -> evals rows with keys
# metric, grouping, group, n, correct, accuracy, value.
ExtraMetrics = Callable[[Sequence[Example], Sequence[Any]], list[dict[str, Any]]]


@dataclass(frozen=True)
class TaskDefinition:
    name: str
    description: str
    # Bump when the examples the task yields change (parsing, template, split rule):
    # it feeds the stage_key, so stages trained on the old examples are not reused.
    version: str
    hub: HubSource  # the normal source
    mirror: MirrorSource  # release files under a data dir, for offline machines
    template: str  # which Appendix A.2 template renders the prompts ("multiple_choice" | "toxicity" | "none")
    group_field: str | None  # source field naming the demographic groups; None: no groups
    # rows of one source split -> items of our split ("train" | "eval")
    examples_from_rows: Callable[[tuple[Row, ...], str], list[Any]] = field(repr=False, compare=False)
    kind: str = "choice"
    splits: tuple[str, ...] = ("train", "eval")  # ("eval",): evaluation only, never trained on
    # Where the validation split comes from, in words (`study tasks`, docs); "" without one.
    validation: str = ""
    # Option counts of the items kept when a study does not set tasks.<name>.option_counts;
    # None keeps every item (ARC: (4,), the paper's four-option questions).
    option_counts: tuple[int, ...] | None = None
    groupings: tuple[str, ...] = ()  # secondary groupings the examples carry as facets
    metrics: tuple[Metric, ...] = (ACCURACY,)
    extra_metrics: ExtraMetrics | None = field(default=None, repr=False, compare=False)
    # (example, predicted option index) -> the role of that answer (BBQ: "unknown",
    # "biased", "counter_biased"), stored per prediction so extra metrics can be recomputed.
    prediction_role: Callable[[Example, int], str | None] | None = field(default=None, repr=False, compare=False)
    # (pool, size, data_seed) -> the training set; None: stratified_sample (sampling.py).
    train_selection: Callable[[Sequence[Any], int, int], list[Any]] | None = field(default=None, repr=False, compare=False)
    origin: str = "built-in"  # or the YAML file that defined it
    # One source row -> raises (tasks.bad_rows.RowError, KeyError, ...) when the task cannot make
    # an item of it, before examples_from_rows sees the rows: a bad row is then reported with its
    # file and line, and `data.bad_rows: skip` can leave it out. None: every row that parses is used.
    check_row: Callable[[Row], Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        unknown = [s for s in self.splits if s not in SPLITS]
        if unknown or "eval" not in self.splits:
            raise ValueError(f"task {self.name!r}: splits must include 'eval' and only {'/'.join(SPLITS)}, "
                             f"got {self.splits}")
        if ("validation" in self.splits) != bool(self.validation):
            raise ValueError(f"task {self.name!r}: a validation split and its description go together")

    @property
    def has_groups(self) -> bool:
        return self.group_field is not None

    @property
    def trainable(self) -> bool:
        return "train" in self.splits

    @property
    def has_validation(self) -> bool:
        return "validation" in self.splits

    @property
    def remote_source(self) -> str:
        """Where the data comes from when no data dir is given."""
        return self.hub.describe()

    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    def keyed_version(self) -> str:
        """The version as stage and measurement keys see it. A YAML task's also carries a hash
        of its file, so editing the file without bumping `version` cannot reuse stages trained
        on the old examples (and a worker can tell that the file changed since planning). The
        hash also covers the rule that derives the validation split the file may not name (its
        description), since that rule decides which rows stay in the training pool."""
        if self.origin == "built-in":
            return self.version
        digest = hashlib.sha256(self.validation.encode("utf-8") + b"\0" + Path(self.origin).read_bytes())
        return f"{self.version}+{digest.hexdigest()[:12]}"
