"""The one problem type of the YAML files a user writes (study files, task files).

Reading a file never stops at the first problem: every problem is collected with its field path
and, where known, its file and line, and raised once (`FileProblems` and its subclasses), so a
researcher fixes a file in one round trip. `read_yaml` is the one reader that keeps the line
of every field (and catches keys written twice), so a problem can point at the line the user
wrote. The CLI exits 2 on any of these problems, and on a TokenizationError (a model whose
tokenizer cannot score the study's tasks as trained).
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
    """The choice `word` most likely misspells (difflib), else the one it abbreviates (`lr` for
    learning_rate: the initials of its '_'-separated words), or None."""
    choices = list(choices)
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    if close:
        return close[0]
    word = str(word).lower()
    initials = [c for c in choices if len(word) > 1 and "".join(p[:1] for p in str(c).lower().split("_") if p) == word]
    return initials[0] if len(initials) == 1 else None


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


KeyPath = tuple[Any, ...]
"""A field path as keys and list indexes: ("chains", "tqa_arc", 0, "learning_rate")."""


def format_path(path: KeyPath) -> str:
    """("chains", "tqa_arc", 0, "learning_rate") -> "chains.tqa_arc[0].learning_rate", as a
    problem names a field."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def line_of(path: KeyPath, lines: Mapping[KeyPath, int]) -> int | None:
    """Line of the deepest existing ancestor of `path`, the document's first line at the last."""
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


@dataclass(frozen=True)
class YamlDocument:
    """A YAML file's data with the line of every key and list item (`lines`; () is the
    document), and every key written twice in one mapping (`duplicates`: path, its line, the
    line of the first one), which plain loading would silently resolve to the last value."""

    data: Any
    lines: dict[KeyPath, int]
    duplicates: tuple[tuple[KeyPath, int, int], ...]

    def field_lines(self) -> dict[str, int]:
        """`lines` keyed by formatted field path, the document itself left out."""
        return {format_path(path): line for path, line in self.lines.items() if path}


def read_yaml(text: str) -> YamlDocument:
    """Parse `text` once: the node tree (which keeps positions that plain loading throws away)
    and the plain data constructed from it by the safe loader. Raises yaml.YAMLError."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()
    lines: dict[KeyPath, int] = {}
    duplicates: list[tuple[KeyPath, int, int]] = []

    def walk(node: Any, path: KeyPath) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value
                if not isinstance(key, str) or key == "<<":
                    continue  # complex or merge keys: checked on the constructed data
                child, line = path + (key,), key_node.start_mark.line + 1
                if child in lines:
                    duplicates.append((child, line, lines[child]))
                lines[child] = line  # a key's line, so a bad value points at its key
                walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[path + (index,)] = item.start_mark.line + 1
                walk(item, path + (index,))

    if node is not None:
        walk(node, ())
    return YamlDocument(data, lines, tuple(duplicates))
