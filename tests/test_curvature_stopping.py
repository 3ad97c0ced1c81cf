"""Lanczos stops as soon as its top eigenvalue is known to tol: checked by simulation.

Random symmetric matrices with a known spectrum (top eigenvalue ±1, the second at ±ratio, the
rest uniform inside ±0.9·ratio, signs drawn): the engine's Lanczos must return the top
eigenvalue by magnitude within tol of the truth in every draw where |λ2/λ1| ≤ 0.9, and spend
fewer HVPs than power iteration stopped by its own test at the same tol (the two regimes of
bench/curvature.py: a wide gap, as after SFT, and a small one, as on an untrained model).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("hessian_eigenthings")

from hessian_eigenthings import LambdaOperator  # noqa: E402

from trainables.curvature import lanczos, power_iteration  # noqa: E402
from trainables.curvature.torch_lanczos import accepts  # noqa: E402

N = 200
DRAWS = 60


def spectrum_matrix(ratio: float, seed: int) -> tuple[np.ndarray, float]:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((N, N)))
    top, second = rng.choice([-1.0, 1.0]), rng.choice([-1.0, 1.0]) * ratio
    eigenvalues = np.concatenate([[top, second], rng.uniform(-1.0, 1.0, N - 2) * ratio * 0.9])
    return (q * eigenvalues) @ q.T, top


def operator(matrix: np.ndarray):
    m = torch.from_numpy(matrix)
    return LambdaOperator(lambda v: m @ v, size=matrix.shape[0], dtype=torch.float64)


@pytest.mark.parametrize("tol", [1e-3, 1e-4])
@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.86, 0.9])
def test_every_stop_is_within_tol(ratio, tol):
    errors = []
    for seed in range(DRAWS):
        matrix, top = spectrum_matrix(ratio, seed)
        r = lanczos(operator(matrix), max_iterations=500, tol=tol, seed=seed)
        assert r.converged and r.hvp_count == r.iterations
        errors.append(abs(r.eigenvalues[0] - top))
    assert max(errors) <= tol, (ratio, tol, max(errors))


@pytest.mark.parametrize("ratio, most", [(0.12, 1.0), (0.86, 0.3)])
def test_fewer_hvps_than_power_iteration(ratio, most):
    """Mean over draws of Lanczos HVPs / power iteration HVPs (each by its own stopping test at
    tol 1e-3): ≤ 1.0 with a wide gap, ≤ 0.3 with a small one."""
    ratios = []
    for seed in range(20):
        matrix, _ = spectrum_matrix(ratio, seed)
        ours = lanczos(operator(matrix), max_iterations=500, tol=1e-3, seed=seed)
        power = power_iteration(operator(matrix), max_iterations=3000, tol=1e-3, seed=seed)
        assert ours.converged and power.converged
        ratios.append(ours.hvp_count / power.hvp_count)
    assert np.mean(ratios) <= most, (ratio, np.mean(ratios))


def test_acceptance_rule_by_hand():
    """θ = 10 with residual 0.05 (5e-3·|θ|: fails ARPACK's test at tol 1e-3, passes √tol):
    next Ritz value 2 (residual 0.1): gap 10 − 2 − 0.1 = 7.9, r²/gap = 3.2e-4 ≤ 1e-2 → known.
    The same θ with a Ritz value of the other sign at −9.9 (magnitude gap 0.1 − its residual
    0.1 = 0): no gap, not known. Residual above √tol·|θ| (0.4): never by the bound."""
    assert accepts(0, [10.0, 2.0], [0.05, 0.1], 1e-3)
    assert not accepts(0, [10.0, -9.9], [0.05, 0.1], 1e-3)
    assert not accepts(0, [10.0, 2.0], [0.4, 0.1], 1e-3)
    assert accepts(0, [10.0, -9.9], [0.009, 0.1], 1e-3)  # ARPACK's test alone
    assert not accepts(0, [10.0], [0.05], 1e-3)  # one Ritz value: no gap known
