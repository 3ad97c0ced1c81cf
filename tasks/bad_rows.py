"""Bad rows of task data: what is wrong with one row, where it is, and what a study does about it.

Every reader of task data (the mirror's jsonl, json and csv files, the text files of the
generation tasks, a task file's data files, the Hub through `datasets`) reports a row it cannot
use as a `contract.problems.Problem` carrying the file and the 1-based line the row starts at, so
the user reads ``FILE:LINE: what is wrong (field 'x')``. A Hub row has no file: its "file" names
the dataset and split (``hub:allenai/ai2_arc/ARC-Easy/train``) and its line is the row's 1-based
position in that split.

A row is bad when its file cannot be parsed there (a broken JSON line, a csv record with the
wrong number of cells) or when its task cannot turn it into an item (a missing field, an answer
that names no option): each task's `TaskDefinition.check_row` says which. What happens then is
the study's `data.bad_rows`: `error` (the default) refuses the data with every bad row listed at
once (BadRowsError, exit 2 from the CLI); `skip` leaves those rows out, and the study records
them (the run record, `study status`) and keys its stages by them (study.data_check).

A file that cannot be read at all (a JSON list with a syntax error, a csv with no header) is no
row to skip: it is a BadRowsError under either policy.
"""

from __future__ import annotations

from collections.abc import Iterable

from contract.problems import FileProblems, Problem

ERROR = "error"
SKIP = "skip"
POLICIES = (ERROR, SKIP)
"""`data.bad_rows` of a study file: refuse the data (the default) or leave the bad rows out."""


class RowError(ValueError):
    """A row its task cannot use: what is wrong, and the field (a dotted path) when one is to blame.
    Raised by the tasks' row checks; a ValueError, as before it existed."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class BadRowsError(FileProblems):
    """Every bad row found, each ``FILE:LINE: what is wrong (field ...)``, raised once."""

    def __init__(self, problems: Iterable[Problem], *, source: str = "task data"):
        super().__init__(problems, source=source)

    def render(self) -> str:
        n = len(self.problems)
        head = f"{n} bad data row{'s' if n != 1 else ''} (data.bad_rows: skip leaves bad rows out):"
        return "\n".join([head, *(f"  {p}" for p in self.problems)])


def bad_row(file: str, line: int | None, message: str, field: str | None = None) -> Problem:
    """The problem of one row: `message`, with the field to blame when known."""
    return Problem(path="", message=f"{message} (field {field!r})" if field else message, line=line, file=file)


def row_problem(exc: Exception, file: str, line: int | None) -> Problem:
    """The problem a row check raised: a RowError as it says, a KeyError as the missing field,
    anything else (a TypeError on a field of the wrong type, ...) by its message."""
    if isinstance(exc, RowError):
        return bad_row(file, line, exc.message, exc.field)
    if isinstance(exc, KeyError) and exc.args:
        return bad_row(file, line, "missing field", str(exc.args[0]))
    return bad_row(file, line, f"{type(exc).__name__}: {exc}")


def unique(problems: Iterable[Problem]) -> tuple[Problem, ...]:
    """`problems` in order, each once (splits read from one file find its bad rows again)."""
    return tuple(dict.fromkeys(problems))
