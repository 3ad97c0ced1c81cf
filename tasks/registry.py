"""The table of tasks: one declarative entry per dataset.

Built-in tasks are TaskDefinitions exported by their modules (``DEFINITIONS``); a
researcher's own multiple-choice task is a YAML file (see task_file.py) registered with
``register_task_file`` (the study spec's ``task_files`` does that in every process that needs
it). Everything else (spec validation, loading, evaluation, the report) looks tasks up here.

The registry knows nothing of what others derive from a definition: whoever caches it
(loading.py: built examples, parsed files) asks, with `on_replaced`, to hear when a name gets a
different definition.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from contract.problems import did_you_mean

from . import arc, bbq, mmlu, safety_prompts, toxigen
from .definition import TaskDefinition


class UnknownTaskError(ValueError):
    """A task name not in the registry (a ValueError, so spec validation can report it)."""


def _builtin_definitions() -> tuple[TaskDefinition, ...]:
    return (*arc.DEFINITIONS, *toxigen.DEFINITIONS, *bbq.DEFINITIONS, *mmlu.DEFINITIONS, *safety_prompts.DEFINITIONS)


TASKS: dict[str, TaskDefinition] = {}
_REPLACED_LISTENERS: list[Callable[[], None]] = []


def on_replaced(listener: Callable[[], None]) -> None:
    """Call `listener()` whenever a task name gets a definition that yields different examples
    (register with replace=True), so caches built from the old one can be dropped."""
    if listener not in _REPLACED_LISTENERS:
        _REPLACED_LISTENERS.append(listener)


def register(definition: TaskDefinition, *, replace: bool = False) -> TaskDefinition:
    """Add a task to this process's registry. A name already taken is an error unless the
    definition is identical (re-registering the same YAML file) or replace=True.

    Replacing a task with a different definition tells the `on_replaced` listeners (loading.py
    then drops the examples and parsed files it caches by task name), so the next load reads
    the new declaration.
    """
    existing = TASKS.get(definition.name)
    if existing is not None and not replace and existing != definition:
        raise ValueError(
            f"task {definition.name!r} from {definition.origin} clashes with the one from {existing.origin}; "
            "choose another name"
        )
    if existing is not None and not _same_definition(existing, definition):
        for listener in _REPLACED_LISTENERS:
            listener()
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
    raise UnknownTaskError(f"unknown task {name!r}{did_you_mean(name, names)} (known tasks: {', '.join(names)})")
