"""Weight change in three normalisations, from the `weights` table's sums and counts.

The engine stores, per stage, the raw sums of squares ‖θ_k − θ_{k−1}‖² and ‖θ_k − θ_0‖² over every
parameter (l2_sq_from_previous, l2_sq_from_base) and the number of parameters compared
(n_params). The paper's Tables 11–12 report ‖θ_A − θ_base‖² and ‖θ_AB − θ_A‖² for Llama-2-7B at
~6e-5 without stating a normalisation, and a raw sum grows with the model's size, so the analysis
carries, for each distance d in DISTANCES:

- l2_sq_<d>:   ‖Δθ‖², the raw sum (as stored);
- mean_sq_<d>: ‖Δθ‖² / N, the mean squared change per parameter;
- rms_<d>:     sqrt(‖Δθ‖² / N), the root-mean-square change per parameter.

They are derived when the table is read rather than stored, so results written before they
existed get them too. A row without a parameter count (n_params null, 0 or absent) keeps its raw
sum and has null mean_sq/rms: the sum alone cannot be normalised.
"""

from __future__ import annotations

import polars as pl

from analysis.accuracy import Frame
from analysis.table_columns import null_column

DISTANCES = ("from_previous", "from_base")
# Column prefix -> what it holds; the raw sum is the stored column.
NORMALISATIONS = {"l2_sq": "‖Δθ‖²", "mean_sq": "‖Δθ‖²/N", "rms": "sqrt(‖Δθ‖²/N)"}


def mean_sq(total: pl.Expr, count: pl.Expr) -> pl.Expr:
    """‖Δθ‖²/N; null where N is null or 0."""
    return pl.when(count > 0).then(total.cast(pl.Float64) / count.cast(pl.Float64))


def rms(total: pl.Expr, count: pl.Expr) -> pl.Expr:
    """sqrt(‖Δθ‖²/N); null where N is null or 0."""
    return mean_sq(total, count).sqrt()


def with_weight_norms(weights: Frame) -> pl.LazyFrame:
    """The weights table with mean_sq_<d> and rms_<d> beside each stored l2_sq_<d> (module docstring)."""
    lazy = weights.lazy()
    if "n_params" not in lazy.collect_schema().names():
        lazy = lazy.with_columns(null_column("weights", "n_params"))
    count = pl.col("n_params")
    return lazy.with_columns(
        **{f"mean_sq_{d}": mean_sq(pl.col(f"l2_sq_{d}"), count) for d in DISTANCES},
        **{f"rms_{d}": rms(pl.col(f"l2_sq_{d}"), count) for d in DISTANCES},
    )
