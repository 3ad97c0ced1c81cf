"""The results tables' columns as analysis reads them: typed as contract.schema declares them.

Parquet files written at different times may store a column narrower (int32 for int64) or
untyped (all-null), and hand-built frames in tests or notebooks carry whatever Python gave
them; every reader therefore casts the columns it uses to the declared type before joining or
comparing. The types come from contract.schema (the same declaration the writer enforces), so
a column's type is written in one place. Columns the analysis derives (counts, means, labels)
are typed where they are made, not here.
"""

from __future__ import annotations

from functools import cache

import polars as pl

from contract.schema import polars_schema

# The contract's "no grid": a trial of an ungridded study has grid_point '{}'.
NO_GRID = "{}"


@cache
def _schema(table: str) -> dict[str, pl.DataType]:
    return polars_schema(table)


def declared(table: str, *names: str) -> dict[str, pl.DataType]:
    """{name: its declared Polars type} for these columns of `table`, in the order given."""
    schema = _schema(table)
    return {name: schema[name] for name in names}


def typed_column(table: str, name: str) -> pl.Expr:
    """pl.col(name) cast to its declared type in `table`."""
    return pl.col(name).cast(_schema(table)[name])


def typed(table: str, *names: str) -> list[pl.Expr]:
    """typed_column of each name, for select / with_columns."""
    return [typed_column(table, name) for name in names]


def null_column(table: str, name: str, value: object = None) -> pl.Expr:
    """A literal column `name` of its declared type (null by default): what a file written
    before the column existed is read as."""
    return pl.lit(value, dtype=_schema(table)[name]).alias(name)


def setting_grid_point() -> pl.Expr:
    """trials.grid_point typed, a missing or empty value read as NO_GRID, so every trial of an
    ungridded study falls in one setting."""
    return typed_column("trials", "grid_point").fill_null(NO_GRID).replace("", NO_GRID)
