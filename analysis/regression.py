"""Ordinary least squares of one column on another (y = intercept + slope · x), via statsmodels.

statsmodels is imported inside `ols`, not at module level: it takes ~1.5 s to import and
only the curvature analysis needs it, so `import analysis` stays light.
"""

from __future__ import annotations

import math
import warnings

import polars as pl

from analysis.accuracy import Frame

# The keys of an `ols` result, in the order the regression tables show them.
OLS_FIELDS = ("n", "slope", "slope_se", "intercept", "intercept_se", "p_value", "r_squared")

# Below this many points a line has no residual degrees of freedom (n = 2 fits exactly), so
# standard errors and p-values are undefined; no fit is reported at all.
MIN_POINTS = 3


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _no_fit(n: int) -> dict[str, float | int | None]:
    return {"n": n} | {field: None for field in OLS_FIELDS if field != "n"}


def ols(frame: Frame, *, y: str, x: str) -> dict[str, float | int | None]:
    """Fit y = intercept + slope · x by OLS (statsmodels, with a constant) on `frame`'s rows.

    Rows where x or y is null, NaN or infinite are left out; n is the number of rows used.
    Returns {n, slope, slope_se, intercept, intercept_se, p_value, r_squared}, p_value being
    the two-sided t-test of slope = 0 (n − 2 degrees of freedom). Every value but n is None
    when there is no line to fit: fewer than 3 points, or x constant (slope not identified).
    A constant y gives slope 0 with zero standard errors and R², p None (0/0).

    Worked example: x = [1, 2, 3, 4], y = [2, 4, 5, 8].
        x̄ = 2.5, ȳ = 4.75, Sxx = Σ(x − x̄)² = 5, Sxy = Σ(x − x̄)(y − ȳ) = 9.5
        slope = Sxy / Sxx = 1.9, intercept = ȳ − slope · x̄ = 0.0
        residuals 0.1, 0.2, −0.7, 0.4 → SSR = 0.70; SST = Σ(y − ȳ)² = 18.75
        R² = 1 − 0.70 / 18.75 = 361/375 ≈ 0.962667
        σ² = SSR / (n − 2) = 0.35; slope_se = √(σ²/Sxx) = √0.07 ≈ 0.264575
        intercept_se = √(σ² (1/n + x̄²/Sxx)) = √0.525 ≈ 0.724569
        t = 1.9/√0.07; with 2 degrees of freedom the two-sided p = 1 − |t|/√(t² + 2) = 1 − √R²
        = 1 − 19/√375 ≈ 0.018850.
    """
    data = (
        frame.lazy()
        .select(pl.col(x).cast(pl.Float64).alias("x"), pl.col(y).cast(pl.Float64).alias("y"))
        .filter(pl.col("x").is_finite() & pl.col("y").is_finite())
        .collect()
    )
    n = data.height
    if n < MIN_POINTS or data.get_column("x").n_unique() < 2:
        return _no_fit(n)
    if data.get_column("y").n_unique() < 2:
        # A flat line fits exactly; statsmodels would divide 0 by 0 (or by ~1e-17 and report
        # p = 0), so the fit is written out: slope 0, no spread, R² and p undefined.
        return _no_fit(n) | {
            "slope": 0.0, "slope_se": 0.0, "intercept": data.item(0, "y"), "intercept_se": 0.0,
        }

    import numpy as np
    from statsmodels.regression.linear_model import OLS

    xs = data.get_column("x").to_numpy()
    design = np.column_stack([np.ones(n), xs])
    with warnings.catch_warnings():
        # A perfect fit (SSR = 0) divides by zero in the t statistic; that comes back as None.
        warnings.simplefilter("ignore", RuntimeWarning)
        fit = OLS(data.get_column("y").to_numpy(), design).fit()
        intercept, slope = fit.params
        intercept_se, slope_se = fit.bse
        p_value, r_squared = fit.pvalues[1], fit.rsquared
    return {
        "n": n,
        "slope": _finite_or_none(slope),
        "slope_se": _finite_or_none(slope_se),
        "intercept": _finite_or_none(intercept),
        "intercept_se": _finite_or_none(intercept_se),
        "p_value": _finite_or_none(p_value),
        "r_squared": _finite_or_none(r_squared),
    }
