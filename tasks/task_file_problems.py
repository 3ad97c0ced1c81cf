"""Where a task file's problems are, and how they are gathered: the YAML read with the line of
every key, the Checker that records each problem at its line, and TaskFileError, which raises
them all at once.

Problems are contract.problems.Problem, rendered ``<file>:<line>: <field path>: <message>``,
so a task file reads like a study file when it is wrong. task_file.py checks each section of
the schema with the Checker; task_file_rows.py raises a TaskFileError for data rows that do not
fit the file's field mapping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from contract.problems import (FileProblems, KeyPath, Problem, closest, did_you_mean, format_path, line_of,
                               read_yaml)


class TaskFileError(FileProblems):
    """A task file that cannot be used; ``problems`` lists every reason, one per line of str()."""


# --- reading YAML with line numbers ---------------------------------------------------------


def read_task_yaml(text: str, file: str) -> tuple[Any, dict[KeyPath, int], list[Problem]]:
    """The document as plain data, the line of every key and list item, and duplicate keys
    (contract.problems.read_yaml). Text that is not YAML at all is a TaskFileError at once:
    there is nothing to check."""
    try:
        document = read_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = None if mark is None else mark.line + 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise TaskFileError([Problem(path="", message=f"not valid YAML: {problem}", line=line, file=file)],
                            source=file) from exc
    duplicates = [Problem(path=format_path(path), message="duplicate key", line=line, file=file)
                  for path, line, _ in document.duplicates]
    return document.data, document.lines, duplicates


# --- checking values, collecting problems ---------------------------------------------------


def describe(value: Any) -> str:
    """A value as a problem quotes it: "a string 'x'", "a list", "nothing"."""
    if value is None:
        return "nothing"
    kind = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(type(value))
    return f"{kind or type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else kind


class Checker:
    """Collects problems with their lines while the file's sections are read."""

    def __init__(self, file: str, lines: dict[KeyPath, int]):
        self.file = file
        self.lines = lines
        self.problems: list[Problem] = []

    def line(self, path: KeyPath) -> int | None:
        # A missing key has no line of its own: point at the nearest enclosing one.
        return line_of(path, self.lines)

    def add(self, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(path=format_path(path), message=message, line=self.line(path), file=self.file))

    def mapping(self, value: Any, path: KeyPath, keys: Mapping[str, bool]) -> dict[str, Any] | None:
        """``value`` as a mapping with only known keys and every required one; None if not a mapping.

        keys: the allowed keys, True for a required one."""
        if not isinstance(value, dict):
            self.add(path, f"must be a mapping with keys {', '.join(keys)} (got {describe(value)})")
            return None
        for key in value:
            if not isinstance(key, str):
                self.add(path, f"key {key!r} must be a string (YAML reads yes/no/on/off and numbers otherwise: quote it)")
            elif key not in keys:
                close = closest(key, keys)
                hint = f"did you mean {close!r}? " if close else ""  # leads the list of allowed keys
                self.add(path + (key,), f"unknown key ({hint}allowed here: {', '.join(keys)})")
        for key, required in keys.items():
            if required and key not in value:
                self.add(path, f"missing required key {key!r}")
        return value

    def text(self, value: Any, path: KeyPath, *, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            self.add(path, f"must be a non-empty string (got {describe(value)})")
            return None
        return value

    def choice(self, value: Any, path: KeyPath, allowed: Sequence[str]) -> str | None:
        if value not in allowed:
            hint = did_you_mean(value, allowed) if isinstance(value, str) else ""
            self.add(path, f"must be one of {', '.join(allowed)} (got {value!r}){hint}")
            return None
        return value

    def field_path(self, value: Any, path: KeyPath) -> str | None:
        """A row field: a key, or a dotted path into nested rows ("question.stem", "choices.text")."""
        text = self.text(value, path)
        if text is not None and any(not part for part in text.split(".")):
            self.add(path, f"field path {text!r} has an empty part")
            return None
        return text

    def field_paths(self, value: Any, path: KeyPath) -> tuple[str, ...] | None:
        """One field path, or a non-empty list of them."""
        if isinstance(value, list):
            if not value:
                self.add(path, "must name at least one field")
                return None
            parts = [self.field_path(item, path + (i,)) for i, item in enumerate(value)]
            return None if None in parts else tuple(parts)
        single = self.field_path(value, path)
        return None if single is None else (single,)
