"""The table of tasks: one declarative entry per dataset.

Adding a task (BBQ, MMLU, ...) means writing a module with its HUB / MIRROR sources and an
``examples_from_rows`` function, then adding one TaskDefinition below; nothing else changes.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field

from . import arc, toxigen
from .example import Example
from .source import HubSource, MirrorSource, Row


class UnknownTaskError(ValueError):
    """A task name not in the registry (a ValueError, so spec validation can report it)."""


@dataclass(frozen=True)
class TaskDefinition:
    name: str
    description: str
    # Bump when the examples the task yields change (parsing, template, split rule):
    # it feeds the stage_key, so stages trained on the old examples are not reused.
    version: str
    hub: HubSource  # the normal source
    mirror: MirrorSource  # release files under a data dir, for offline machines
    template: str  # which Appendix A.2 template renders the prompts
    group_field: str | None  # source field naming the demographic groups; None: no groups
    # rows of one source split -> Examples of our split ("train" | "eval")
    examples_from_rows: Callable[[tuple[Row, ...], str], list[Example]] = field(repr=False, compare=False)

    @property
    def has_groups(self) -> bool:
        return self.group_field is not None

    @property
    def remote_source(self) -> str:
        """Where the data comes from when no data dir is given."""
        return self.hub.describe()


_DEFINITIONS = (
    TaskDefinition(
        name=arc.TASK_NAME,
        description="ARC-Easy science questions, multiple choice (capability task); Hub train/test splits",
        version="1",
        hub=arc.HUB,
        mirror=arc.MIRROR,
        template="multiple_choice",
        group_field=None,
        examples_from_rows=arc.examples_from_rows,
    ),
    TaskDefinition(
        name=toxigen.TASK_NAME,
        description=(
            "Revised ToxiGen statements (Hosseini et al. 2023) as toxic / not toxic QA (safety task), "
            f"13 target groups; fixed hash split, {toxigen.TRAIN_POOL_FRACTION:.0%} train pool / rest eval"
        ),
        version="1",
        hub=toxigen.HUB,
        mirror=toxigen.MIRROR,
        template="toxicity",
        group_field="target_groups",
        examples_from_rows=toxigen.examples_from_rows,
    ),
)

TASKS: dict[str, TaskDefinition] = {definition.name: definition for definition in _DEFINITIONS}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def get_task(name: str) -> TaskDefinition:
    try:
        return TASKS[name]
    except KeyError:
        pass
    known = ", ".join(TASK_NAMES)
    close = difflib.get_close_matches(str(name), TASK_NAMES, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UnknownTaskError(f"unknown task {name!r}{hint} (known tasks: {known})")
