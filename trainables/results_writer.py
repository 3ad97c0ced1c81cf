"""Write result rows as Parquet parts, one folder per table, one part per trial or stage.

Where a part goes is contract.layout's (StudyLayout.part: `<study_dir>/<table>/<part>.parquet`),
its columns and types contract.schema's, and it is written with contract.atomic, so readers
never see half a file. A table's folder is a Parquet dataset: Polars
`scan_parquet("evals/*.parquet")`, DuckDB `read_parquet('evals/*.parquet')` and pandas/pyarrow
read it as one table. Part names come from the trial id and stage, so re-running a trial
overwrites its parts instead of adding rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from contract.atomic import write_file_atomic
from contract.layout import StudyLayout
from contract.schema import OPTIONAL_COLUMNS, TABLE_NAMES, WRITE, arrow_schema
from trainables import timings

# The tables' columns and types live in contract.schema (the readers use the same ones).
_SCHEMAS: dict[str, pa.Schema] = {table: arrow_schema(table) for table in TABLE_NAMES}


def write_part(study_dir: str | Path, table: str, part: str, rows: Sequence[dict[str, Any]]) -> Path:
    """Write `rows` (dicts with exactly the table's columns) as one part, replacing any previous one."""
    return write_rows(StudyLayout(Path(study_dir)).part(table, part), table, rows)


def write_rows(path: str | Path, table: str, rows: Sequence[dict[str, Any]]) -> Path:
    """Write `rows` with `table`'s schema to `path`, atomically (also used by the stage store).
    A column of contract.schema.OPTIONAL_COLUMNS that a row leaves out is written as null."""
    schema = _SCHEMAS[table]
    optional = OPTIONAL_COLUMNS.get(table, ())
    if optional:
        rows = [{**dict.fromkeys(optional), **r} for r in rows]
    missing = [c for c in schema.names if any(c not in r for r in rows)]
    extra = sorted({k for r in rows for k in r} - set(schema.names))
    if missing or extra:
        raise ValueError(f"rows for table '{table}' do not match its schema: missing {missing}, unexpected {extra}")
    with timings.phase(WRITE):
        table_rows = pa.Table.from_pylist(list(rows), schema=schema)
        return write_file_atomic(path, lambda tmp: pq.write_table(table_rows, tmp))
