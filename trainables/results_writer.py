"""Write result rows as Parquet parts: `<study_dir>/<table>/<part>.parquet`, atomically.

One folder per table (a Parquet dataset: Polars `scan_parquet("evals/*.parquet")`, DuckDB
`read_parquet('evals/*.parquet')` and pandas/pyarrow read it as one table). Part names come
from the trial id and stage, so re-running a trial overwrites its parts instead of adding
rows. A part is written to a hidden temporary file in the same folder and renamed into place:
readers never see half a file (rename is atomic on POSIX filesystems).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMAS: dict[str, pa.Schema] = {
    "trials": pa.schema([
        ("trial_id", pa.string()), ("chain", pa.string()), ("seed", pa.int64()), ("stage", pa.int64()),
        ("method", pa.string()), ("method_settings", pa.string()), ("task", pa.string()),
        ("learning_rate", pa.float64()),
        ("batch_size", pa.int64()), ("steps", pa.int64()), ("stage_seed", pa.int64()),
        ("train_size", pa.int64()), ("n_train_examples", pa.int64()), ("data_seed", pa.int64()),
        ("replay_from_stage", pa.int64()), ("replay_fraction", pa.float64()),
        ("stage_key", pa.string()), ("model", pa.string()), ("grid_point", pa.string()),
        ("executor", pa.string()), ("train_seconds", pa.float64()), ("status", pa.string()),
        # Stage sharing and failures: which trial trained the stage (stage store), whether this
        # trial reused it rather than training it, and why a failed stage failed.
        ("trained_by", pa.string()), ("reused", pa.bool_()), ("failure", pa.string()),
        # How the stage's start point was chosen when not simply the previous stage (JSON:
        # mode, chosen_seed, validation accuracy of every candidate); null otherwise.
        ("start_from", pa.string()),
        # The seed that drew the stage's training subsample: data_seed under seed_scope 'order',
        # one derived from data_seed and stage_seed under 'order_and_data'.
        ("train_data_seed", pa.int64()),
    ]),
    "evals": pa.schema([
        ("trial_id", pa.string()), ("stage", pa.int64()), ("eval_task", pa.string()), ("metric", pa.string()),
        ("group", pa.string()), ("n", pa.int64()), ("correct", pa.int64()), ("accuracy", pa.float64()),
        # Which grouping `group` belongs to: "all" (group "all"), "group" (the task's primary
        # groups: the ones forgetting is computed over), or a secondary grouping's name
        # ("condition" for BBQ, "category" for MMLU, "prompt_type" for ToxiGen prompts).
        ("grouping", pa.string()),
        # The metric's value: equals accuracy for accuracy-like metrics (accuracy, safe,
        # generated_accuracy, unparseable); the score itself for others (BBQ bias scores),
        # whose accuracy is null.
        ("value", pa.float64()),
    ]),
    "predictions": pa.schema([
        ("trial_id", pa.string()), ("stage", pa.int64()), ("eval_task", pa.string()), ("example_id", pa.string()),
        ("groups", pa.list_(pa.string())), ("label", pa.string()), ("prediction", pa.string()),
        ("correct", pa.bool_()), ("margin", pa.float64()),
        ("facets", pa.list_(pa.string())),  # secondary groupings as "name=value" (e.g. "condition=ambig")
        ("mode", pa.string()),  # "score" (option log-likelihood) | "generate" (generated and parsed / classified)
        ("role", pa.string()),  # the predicted answer's role where the task defines one (BBQ: unknown, biased, counter_biased)
        ("generation", pa.string()),  # generate mode: the model's text
    ]),
    "curvature": pa.schema([
        ("trial_id", pa.string()), ("stage", pa.int64()), ("task", pa.string()), ("group", pa.string()),
        ("algorithm", pa.string()), ("n_samples", pa.int64()), ("sample_seed", pa.int64()),
        ("param_subset", pa.string()), ("eigenvalues", pa.list_(pa.float64())), ("eigenvalue", pa.float64()),
        ("trace", pa.float64()), ("iterations", pa.int64()), ("hvp_count", pa.int64()), ("residual", pa.float64()),
        ("converged", pa.bool_()), ("tol", pa.float64()), ("seconds", pa.float64()),
        ("example_ids", pa.list_(pa.string())),
    ]),
    "weights": pa.schema([
        ("trial_id", pa.string()), ("stage", pa.int64()), ("l2_sq_from_previous", pa.float64()),
        ("l2_sq_from_base", pa.float64()), ("n_params", pa.int64()),
    ]),
    "replay": pa.schema([
        ("trial_id", pa.string()), ("stage", pa.int64()), ("from_stage", pa.int64()), ("example_id", pa.string()),
    ]),
    "train_log": pa.schema([
        ("trial_id", pa.string()), ("stage", pa.int64()), ("step", pa.int64()), ("loss", pa.float64()),
        ("learning_rate", pa.float64()), ("grad_norm", pa.float64()), ("seconds", pa.float64()),
    ]),
}


def write_part(study_dir: str | Path, table: str, part: str, rows: Sequence[dict[str, Any]]) -> Path:
    """Write `rows` (dicts with exactly the table's columns) as one part, replacing any previous one."""
    return write_rows(Path(study_dir) / table / f"{part}.parquet", table, rows)


def write_rows(path: str | Path, table: str, rows: Sequence[dict[str, Any]]) -> Path:
    """Write `rows` with `table`'s schema to `path`, atomically (also used by the stage store)."""
    schema = SCHEMAS[table]
    missing = [c for c in schema.names if any(c not in r for r in rows)]
    extra = sorted({k for r in rows for k in r} - set(schema.names))
    if missing or extra:
        raise ValueError(f"rows for table '{table}' do not match its schema: missing {missing}, unexpected {extra}")
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        pq.write_table(pa.Table.from_pylist(list(rows), schema=schema), tmp)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final
