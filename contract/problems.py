"""The one problem type of the YAML files a user writes (study files, task files).

Reading a file never stops at the first problem: every problem is collected with its field path
and, where known, its file and line, and raised once (`FileProblems` and its subclasses), so a
researcher fixes a file in one round trip. The CLI exits 2 on any of them, and on a
TokenizationError (a model whose tokenizer cannot score the study's tasks as trained).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping


@dataclass(frozen=True)
class Problem:
    """One thing wrong: the field path ("chains.tqa_arc[0].learning_rate"; "" for the file as a
    whole), what is wrong, and where (1-based line; the file when it is not the one being read)."""

    path: str
    message: str
    line: int | None = None
    file: str | None = None

    def __str__(self) -> str:
        """'file:line: path: message'; without a file, 'line N: path: message'."""
        where = self.file or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        text = f"{self.path}: {self.message}" if self.path else self.message
        return f"{where}: {text}" if where else text


class FileProblems(ValueError):
    """Every problem of one file, raised once; str() lists them one per line."""

    def __init__(self, problems: Iterable[Problem], *, source: str = "<file>"):
        self.source = source
        self.problems = tuple(problems)
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class TokenizationError(ValueError):
    """Text that cannot be scored as trained: an option with no tokens, a chat template that is
    missing or renders the answer somewhere else, a prompt longer than max_length.

    A problem of the user's setup (the model named, its tokenizer, the tasks' text), found by
    trainables/tokenization.py and reported by the CLI, which exits 2 on it as on a bad file:
    it lives here so the CLI can catch it without importing `trainables`."""


def closest(word: Any, choices: Iterable[str]) -> str | None:
    """The choice `word` most likely misspells, or None."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: Any, choices: Iterable[str]) -> str:
    """"; did you mean 'x'?" for the closest choice, or "" (appended to a problem's message)."""
    match = closest(word, choices)
    return f"; did you mean {match!r}?" if match else ""


def line_for(path: str, lines: Mapping[str, int]) -> int | None:
    """Line of the deepest existing ancestor of `path` (a default-filled field points at its parent)."""
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


def yaml_line_index(text: str, duplicates: list[Problem] | None = None) -> dict[str, int]:
    """Map field paths ('chains.tqa_arc[0].learning_rate') to 1-based YAML lines.

    PyYAML silently keeps the last of two equal keys; a repeated key is appended to
    `duplicates` as a Problem, since the earlier value would be lost without a word.
    """
    import yaml

    root = yaml.compose(text)
    index: dict[str, int] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = f"{path}.{key.value}" if path else str(key.value)
                if child in index and duplicates is not None:
                    duplicates.append(Problem(child, f"duplicate key (also on line {index[child]})", key.start_mark.line + 1))
                index[child] = key.start_mark.line + 1
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                child = f"{path}[{i}]"
                index[child] = item.start_mark.line + 1
                walk(item, child)

    if root is not None:
        walk(root, "")
    return index
