"""The table of tasks: one declarative entry per dataset.

Built-in tasks are TaskDefinitions exported by their modules (``DEFINITIONS``); a
researcher's own multiple-choice task is a YAML file (see declarative.py) registered with
``register_task_file`` (the study spec's ``task_files`` does that in every process that needs
it). Everything else (spec validation, loading, evaluation, the report) looks tasks up here.
"""

from __future__ import annotations

import dataclasses
import difflib

from . import arc, bbq, mmlu, safety_prompts, toxigen
from .definition import TaskDefinition


class UnknownTaskError(ValueError):
    """A task name not in the registry (a ValueError, so spec validation can report it)."""


def _builtin_definitions() -> tuple[TaskDefinition, ...]:
    return (*arc.DEFINITIONS, *toxigen.DEFINITIONS, *bbq.DEFINITIONS, *mmlu.DEFINITIONS, *safety_prompts.DEFINITIONS)


TASKS: dict[str, TaskDefinition] = {}


def register(definition: TaskDefinition, *, replace: bool = False) -> TaskDefinition:
    """Add a task to this process's registry. A name already taken is an error unless the
    definition is identical (re-registering the same YAML file) or replace=True.

    Replacing a task with a different definition drops the cached examples and parsed files
    (loading.py caches them by task name), so the next load reads the new declaration.
    """
    existing = TASKS.get(definition.name)
    if existing is not None and not replace and existing != definition:
        raise ValueError(
            f"task {definition.name!r} from {definition.origin} clashes with the one from {existing.origin}; "
            "choose another name"
        )
    if existing is not None and not _same_definition(existing, definition):
        from . import loading  # imported late: loading imports this module

        loading.clear_caches()
    TASKS[definition.name] = definition
    return definition


# The parts of a definition that shape its examples but that TaskDefinition equality skips
# (callables and the mirror's file reader are compare=False so definitions stay comparable).
_UNCOMPARED_FIELDS = tuple(f.name for f in dataclasses.fields(TaskDefinition) if not f.compare)


def _same_definition(a: TaskDefinition, b: TaskDefinition) -> bool:
    if a is b:
        return True
    return (
        a == b
        and all(getattr(a, name) == getattr(b, name) for name in _UNCOMPARED_FIELDS)
        and a.mirror.reader == b.mirror.reader
    )


for _definition in _builtin_definitions():
    register(_definition)

BUILTIN_TASK_NAMES: tuple[str, ...] = tuple(TASKS)
# Kept for callers that only need the built-in names; task_names() includes registered files.
TASK_NAMES = BUILTIN_TASK_NAMES


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)


def get_task(name: str) -> TaskDefinition:
    try:
        return TASKS[name]
    except KeyError:
        pass
    names = task_names()
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UnknownTaskError(f"unknown task {name!r}{hint} (known tasks: {', '.join(names)})")
