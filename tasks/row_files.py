"""Data files read into rows with the line each row starts at, bad lines collected, not raised.

The readers of every mirror format (jsonl, a JSON list, csv with or without a header row, one
row per text line) return a FileRows: the rows, the 1-based line each starts at, and the
problems of lines that hold no usable row (tasks.bad_rows: `FILE:LINE: what is wrong`). A file
that cannot be read at all raises BadRowsError. FileRows iterates over its rows, so a caller
that wants plain rows takes `tuple(file_rows)`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.problems import Problem

from .bad_rows import BadRowsError, bad_row

Row = Mapping[str, Any]


@dataclass(frozen=True)
class FileRows:
    rows: tuple[Row, ...]
    lines: tuple[int | None, ...]
    """The 1-based line of the file each row starts at (None: a reader that does not say)."""
    problems: tuple[Problem, ...] = ()
    """Lines that hold no row: bad JSON, a csv record with the wrong number of cells."""

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def mapped(self, change: Callable[[Row], Row]) -> "FileRows":
        """The same rows, each replaced by `change(row)`, at the same lines."""
        return FileRows(tuple(change(row) for row in self.rows), self.lines, self.problems)


def _reason(exc: json.JSONDecodeError) -> str:
    # json's messages end in " at" where they name a position ("Invalid control character at").
    return f"{exc.msg.removesuffix(' at')} at column {exc.colno}"


def read_jsonl(path: Path, parse: Callable[[str], Any] | None = None) -> FileRows:
    """One JSON object per line (blank lines skipped). `parse` reads a line (default: json.loads);
    a line it cannot read, or that is not an object, is a problem at its line."""
    rows, lines, problems = [], [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            text = line.rstrip("\r\n")
            try:
                row = parse(text) if parse is not None else json.loads(text)
            except json.JSONDecodeError as exc:
                problems.append(bad_row(str(path), number, f"not valid JSON: {_reason(exc)}"))
                continue
            if not isinstance(row, Mapping):
                problems.append(bad_row(str(path), number, f"not a JSON object (a {type(row).__name__})"))
                continue
            rows.append(row)
            lines.append(number)
    return FileRows(tuple(rows), tuple(lines), tuple(problems))


def read_json_list(path: Path) -> FileRows:
    """A JSON list of objects, each row at the line its object starts on. A syntax error leaves
    no way to find the next row: the file is refused (BadRowsError at the error's line)."""
    text = Path(path).read_text(encoding="utf-8")
    decoder = json.JSONDecoder()

    def refused(line: int | None, message: str) -> BadRowsError:
        return BadRowsError([bad_row(str(path), line, message)], source=str(path))

    def skip_space(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    i = skip_space(0)
    if i >= len(text) or text[i] != "[":
        raise refused(1, "must hold a JSON list of objects, one per row")
    rows, lines, problems = [], [], []
    line, counted = 1, 0  # line of position `counted`, counted incrementally
    i = skip_space(i + 1)
    if i < len(text) and text[i] == "]":
        return FileRows((), ())
    while True:
        line += text.count("\n", counted, i)
        counted = i
        try:
            row, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise refused(exc.lineno, f"not valid JSON: {_reason(exc)}") from None
        if isinstance(row, Mapping):
            rows.append(row)
            lines.append(line)
        else:
            problems.append(bad_row(str(path), line, f"not a JSON object (a {type(row).__name__})"))
        i = skip_space(end)
        if i < len(text) and text[i] == ",":
            i = skip_space(i + 1)
            continue
        if i < len(text) and text[i] == "]":
            break
        at = text.count("\n", 0, i) + 1
        raise refused(at, "not valid JSON: expected ',' or ']' after a row")
    return FileRows(tuple(rows), tuple(lines), tuple(problems))


def read_csv(path: Path, columns: Sequence[str] | None = None, *, what: str = "cells") -> FileRows:
    """A csv file: the header row names the columns, or `columns` does (a file without one).
    Blank lines are skipped; a record with another number of cells is a problem at the line it
    starts on (quoted cells may span lines)."""
    rows, lines, problems = [], [], []
    # newline="" lets the csv module keep line breaks inside quoted cells; utf-8-sig drops a BOM.
    with open(path, encoding="utf-8-sig", newline="") as handle:
        records = csv.reader(handle)
        names = tuple(columns) if columns is not None else None
        if names is None:
            header = next(records, None)
            if header is None:
                raise BadRowsError([bad_row(str(path), 1, "empty csv file (no header row)")], source=str(path))
            names = tuple(header)
        start = records.line_num + 1
        for number, record in enumerate(records, start=1):
            if record and len(record) != len(names):
                problems.append(bad_row(str(path), start, f"record {number} has {len(record)} {what}, "
                                                          f"expected {len(names)} ({', '.join(names)})"))
            elif record:
                rows.append(dict(zip(names, record)))
                lines.append(start)
            start = records.line_num + 1
    return FileRows(tuple(rows), tuple(lines), tuple(problems))


def read_text_lines(path: Path, row: Callable[[str], Row]) -> FileRows:
    """One row per line of a text file, every line kept (`row` makes the row of a line)."""
    with open(path, encoding="utf-8") as handle:
        rows = tuple(row(line) for line in handle)
    return FileRows(rows, tuple(range(1, len(rows) + 1)))
