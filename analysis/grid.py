"""Turn the `grid_point` JSON column of the results into one column per grid key."""

from __future__ import annotations

import json

import polars as pl


def _grid_value(value: object) -> object:
    # Scalars become typed columns; anything nested (a list of lrs, a dict) is kept as its
    # JSON text so every table stays flat enough for CSV.
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True)


def _grid_column(values: list[object]) -> pl.Series:
    # Numbers of mixed int/float become Float64; a key whose values mix numbers and text
    # (unusual, but the study file allows it) falls back to text rather than failing.
    try:
        return pl.Series(values, strict=False)
    except (TypeError, pl.exceptions.PolarsError):
        return pl.Series([None if v is None else str(v) for v in values], dtype=pl.String)


def parse_grid_points(grid_points: list[str | None]) -> pl.DataFrame:
    """One row per distinct grid_point string, one column per grid key (union of all keys).

    '{}' and null give a row of nulls; a key absent from one grid point is null there.
    """
    # Keep each original string (null read as "") as the join key; parse "" like "{}".
    distinct = sorted({gp or "" for gp in grid_points})
    parsed = [json.loads(gp or "{}") for gp in distinct]
    keys = sorted({key for point in parsed for key in point})
    columns = {"grid_point": pl.Series(distinct, dtype=pl.String)}
    for key in keys:
        series = _grid_column([_grid_value(point.get(key)) for point in parsed])
        # A key whose every value is JSON null would be Null-typed, which CSV and joins dislike.
        columns[key] = series.cast(pl.String) if series.dtype == pl.Null else series
    return pl.DataFrame(columns)


def expand_grid_point(frame: pl.DataFrame, *, column: str = "grid_point") -> pl.DataFrame:
    """Add one column per grid key (e.g. "stage1.learning_rate") right after `column`.

    A key that collides with an existing column name is prefixed with "grid." so nothing is
    overwritten. The original JSON column is kept: it is the setting's identity.
    """
    if frame.is_empty() or column not in frame.columns:
        return frame
    parsed = parse_grid_points(frame.get_column(column).to_list())
    renames = {
        key: (f"grid.{key}" if key in frame.columns else key) for key in parsed.columns[1:]
    }
    parsed = parsed.rename({"grid_point": column, **renames})
    joined = (
        frame.with_columns(pl.col(column).fill_null("").alias("__grid_key"))
        .join(parsed.rename({column: "__grid_key"}), on="__grid_key", how="left", maintain_order="left")
        .drop("__grid_key")
    )
    position = frame.columns.index(column) + 1
    order = frame.columns[:position] + list(renames.values()) + frame.columns[position:]
    return joined.select(order)
