"""From a task file to a task: the TaskDefinition a YAML file declares, and its registration.

    from tasks.task_file_registration import register_task_file
    register_task_file("tasks/sciq_demo.yaml")   # then load_examples("sciq_demo", "eval", ...)

task_file.py checks the file (the schema is in its docstring); task_file_rows.py reads its data.
Here the validated TaskFile becomes a TaskDefinition like a built-in task's, with a RowParser as
its examples_from_rows, and is added to the registry (the study spec's ``task_files`` does that
in every process that needs it).
"""

from __future__ import annotations

from pathlib import Path

from contract.problems import Problem

from . import registry
from .definition import ACCURACY, TaskDefinition
from .task_file import HOLDOUT_VALIDATION, TaskFile, read_task_file
from .task_file_problems import TaskFileError
from .task_file_rows import DeclaredMirror, RowCheck, RowParser, RowReader


def load_task_file(path: str | Path) -> TaskDefinition:
    """The task a YAML file declares; TaskFileError (with every problem found) if it is not valid.

    Only the file is read here: mirror files are read, and rows checked, when the task's
    examples are first loaded (a row whose answer cannot be located is a TaskFileError then).
    """
    return _task_definition(read_task_file(path))


def register_task_file(path: str | Path) -> TaskDefinition:
    """Load a task file and add its task to the registry (registry.TASKS).

    Registering the same file again is fine (every process of a study does it, some more than
    once); if the file changed meanwhile, the new declaration replaces the old and the cached
    examples are dropped. A name taken by another task (built-in or another file) is a
    TaskFileError at the file's ``name`` line.
    """
    task_file = read_task_file(path)
    definition = _task_definition(task_file)
    existing = registry.TASKS.get(definition.name)
    same_file = existing is not None and existing.origin == definition.origin
    try:
        # registry.register drops the cached examples when the declaration changed.
        return registry.register(definition, replace=same_file)
    except ValueError as exc:
        problem = Problem(path="name", message=str(exc), line=task_file.name_line, file=task_file.file)
        raise TaskFileError([problem], source=task_file.file) from exc


def _task_definition(task_file: TaskFile) -> TaskDefinition:
    """The TaskDefinition of a validated task file: a multiple-choice task scored by accuracy."""
    mirror = task_file.mirror
    if task_file.holdout:
        validation = HOLDOUT_VALIDATION
    else:
        validation = "the file's validation split" if "validation" in task_file.splits else ""
    return TaskDefinition(
        name=task_file.name,
        description=task_file.description or f"multiple-choice task declared in {task_file.file}",
        version=task_file.version,
        hub=task_file.hub,
        mirror=DeclaredMirror(files=mirror.files, reader=RowReader(mirror.format, mirror.columns),
                              task_file=task_file.file, file_lines=mirror.lines),
        template="multiple_choice",
        group_field=", ".join(task_file.fields.groups) or None,
        examples_from_rows=RowParser(task_file),
        check_row=RowCheck(task_file),
        kind="choice",
        splits=task_file.splits,
        validation=validation,
        groupings=tuple(facet for facet, _ in task_file.fields.facets),
        metrics=(ACCURACY,),
        origin=task_file.origin,
    )
