"""Curvature algorithms against closed forms: least squares has H = (2/N) XᵀX exactly."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("hessian_eigenthings")
pytest.importorskip("scipy")

from hessian_eigenthings import HessianOperator, LambdaOperator  # noqa: E402

from trainables.curvature import CurvatureResult, lanczos, power_iteration, run_algorithms  # noqa: E402

N, D = 40, 8
# Singular values chosen so that H's eigenvalues are well separated (power iteration converges fast).
SINGULAR = np.array([6.0, 4.5, 3.5, 2.5, 2.0, 1.2, 0.8, 0.3])


def least_squares_problem(seed: int = 0):
    """Model, single-batch dataloader, loss (1/N)||Xw − y||², and the exact Hessian (2/N) XᵀX."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((N, D)))
    v, _ = np.linalg.qr(rng.standard_normal((D, D)))
    x = u @ np.diag(SINGULAR) @ v.T
    y = rng.standard_normal(N)
    model = torch.nn.Linear(D, 1, bias=False).to(torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(rng.standard_normal((1, D))))
    batch = (torch.from_numpy(x), torch.from_numpy(y))

    def loss_fn(m, b):
        inputs, targets = b
        return ((m(inputs).squeeze(-1) - targets) ** 2).mean()

    hessian = 2.0 / N * x.T @ x
    return model, [batch], loss_fn, hessian


@pytest.fixture(scope="module")
def problem():
    model, loader, loss_fn, hessian = least_squares_problem()
    return HessianOperator(model, loader, loss_fn), hessian


def test_hvp_equals_closed_form_hessian(problem):
    operator, hessian = problem
    assert operator.size == D and operator.dtype == torch.float64
    rng = np.random.default_rng(1)
    for _ in range(3):
        v = rng.standard_normal(D)
        hv = operator.matvec(torch.from_numpy(v)).numpy()
        np.testing.assert_allclose(hv, hessian @ v, rtol=0, atol=1e-10)


def test_power_iteration_and_lanczos_find_the_top_eigenvalue(problem):
    operator, hessian = problem
    top = np.linalg.eigvalsh(hessian).max()
    results = run_algorithms(operator, algorithms=("power_iteration", "lanczos"), max_iterations=500, tol=1e-10)
    assert [r.algorithm for r in results] == ["power_iteration", "lanczos"]
    for r in results:
        assert isinstance(r, CurvatureResult) and r.converged, r
        assert r.eigenvalues[0] == pytest.approx(top, rel=1e-6), r.algorithm
        assert r.spectral_radius == pytest.approx(top, rel=1e-6)
        assert r.residual is not None and r.residual < 1e-6 * top
        assert r.trace is None and r.hvp_count >= r.iterations >= 1 and r.seconds >= 0 and r.tol == 1e-10


def test_top_k_matches_the_three_largest(problem):
    operator, hessian = problem
    top3 = np.sort(np.linalg.eigvalsh(hessian))[::-1][:3]
    for r in run_algorithms(operator, top_k=3, max_iterations=500, tol=1e-10):
        assert r.converged, r
        np.testing.assert_allclose(r.eigenvalues, top3, rtol=1e-6, err_msg=r.algorithm)


def test_hutchinson_trace_within_its_standard_error(problem):
    operator, hessian = problem
    samples = 2000
    (result,) = run_algorithms(operator, algorithms=(), trace_samples=samples, seed=3)
    assert result.algorithm == "hutchinson" and result.eigenvalues == () and result.residual is None
    assert result.hvp_count == samples == result.iterations
    # Rademacher probes: Var(vᵀHv) = 2 Σ_{i≠j} H_ij², so the estimator's standard error is known exactly.
    off = hessian - np.diag(np.diag(hessian))
    stderr = np.sqrt(2 * (off**2).sum() / samples)
    assert result.trace_stderr == pytest.approx(stderr, rel=0.15)
    assert abs(result.trace - np.trace(hessian)) < 4 * stderr
    assert abs(result.trace - np.trace(hessian)) / np.trace(hessian) < 0.02


def test_measure_runs_hutchinson_after_the_eigen_algorithms(problem):
    operator, hessian = problem
    results = run_algorithms(operator, algorithms=("lanczos",), trace_samples=10, tol=1e-8)
    assert [r.algorithm for r in results] == ["lanczos", "hutchinson"]
    with pytest.raises(ValueError, match="unknown curvature algorithm"):
        run_algorithms(operator, algorithms=("arnoldi",))
    with pytest.raises(ValueError, match="trace_samples"):
        run_algorithms(operator, algorithms=("hutchinson",))


def counted_operator(matrix: np.ndarray):
    """A LambdaOperator over a dense symmetric matrix that counts its own matvec calls."""
    mat = torch.from_numpy(matrix)
    calls = [0]

    def matvec(v):
        calls[0] += 1
        return mat @ v

    return LambdaOperator(matvec, size=matrix.shape[0], dtype=torch.float64), calls


def close_top_eigenvalues(n: int = 200, seed: int = 0) -> np.ndarray:
    """Symmetric matrix whose top eigenvalues are 1.0, 0.99, 0.98, ... (slow for power iteration)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eig = np.concatenate([1.0 - 0.01 * np.arange(10), rng.uniform(0.0, 0.8, n - 10)])
    return (q * eig) @ q.T


def test_too_small_budget_is_reported_as_not_converged():
    operator, calls = counted_operator(close_top_eigenvalues())
    r = power_iteration(operator, max_iterations=2, tol=1e-3)
    assert not r.converged and r.iterations == 2 and r.hvp_count == calls[0] == 2

    calls[0] = 0
    r = lanczos(operator, max_iterations=100, tol=1e-8, maxiter=1, ncv=4, backend="arpack")
    assert not r.converged
    assert r.hvp_count == calls[0] > 0
    # Nothing accepted by ARPACK: no eigenvalue, no residual (no extra HVP spent on it).
    if r.eigenvalues:
        assert r.hvp_count == r.iterations + 1
    else:
        assert r.residual is None and r.hvp_count == r.iterations


def test_hvp_count_is_the_number_of_matvec_calls():
    matrix = close_top_eigenvalues()
    top = np.linalg.eigvalsh(matrix).max()
    operator, calls = counted_operator(matrix)
    r = lanczos(operator, max_iterations=1000, tol=1e-6)
    assert r.converged and r.eigenvalues[0] == pytest.approx(top, rel=1e-5)
    assert r.hvp_count == calls[0] == r.iterations  # no HVP spent on checking
    calls[0] = 0
    r = lanczos(operator, max_iterations=1000, tol=1e-6, backend="arpack")
    assert r.converged and r.eigenvalues[0] == pytest.approx(top, rel=1e-5)
    assert r.hvp_count == calls[0] == r.iterations + 1  # ARPACK's matvecs + one for the residual
    calls[0] = 0
    r = power_iteration(operator, max_iterations=3000, tol=1e-4)
    assert r.hvp_count == calls[0] == r.iterations
    calls[0] = 0
    r = power_iteration(operator, top_k=2, max_iterations=50, tol=1e-4)
    assert r.hvp_count == calls[0] and len(r.eigenvalues) == 2 and not r.converged


def test_lanczos_budget_is_in_hvps():
    """max_iterations bounds ARPACK's work in HVPs (ARPACK's own maxiter counts restarts)."""
    operator, calls = counted_operator(close_top_eigenvalues())
    for budget in (5, 12, 30, 60):
        calls[0] = 0
        r = lanczos(operator, max_iterations=budget, tol=1e-12, backend="arpack")
        assert not r.converged and budget // 2 <= r.iterations <= budget and r.hvp_count == calls[0], (budget, r)


def test_largest_magnitude_wins_even_when_negative():
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    eig = np.concatenate([[-5.0, 3.0], rng.uniform(-1, 1, 28)])
    operator, _ = counted_operator((q * eig) @ q.T)
    for r in run_algorithms(operator, top_k=2, max_iterations=500, tol=1e-8):
        np.testing.assert_allclose(r.eigenvalues, [-5.0, 3.0], rtol=1e-5, err_msg=r.algorithm)
        assert r.spectral_radius == pytest.approx(5.0, rel=1e-5)


# ---------------------------------------------------------------- Lanczos in torch (large operators)

def test_torch_lanczos_equals_the_closed_form_hessian(problem):
    """On the operator's device and dtype (float64 here), full reorthogonalisation: the top-1 and
    top-3 eigenvalues of (2/N) XᵀX to rounding; the reported residual r of the top pair bounds
    its eigenvalue's error as Kato-Temple says, |θ − λ| ≤ r²/gap (an underestimated r would not)."""
    operator, hessian = problem
    exact = np.sort(np.linalg.eigvalsh(hessian))[::-1]
    for k in (1, 3):
        r = lanczos(operator, top_k=k, max_iterations=500, tol=1e-10, backend="torch")
        assert r.converged and r.algorithm == "lanczos", r
        np.testing.assert_allclose(r.eigenvalues, exact[:k], rtol=1e-10)
        assert r.hvp_count == r.iterations <= D
        assert 0 <= r.residual < 1e-4 * exact[0]
        assert abs(r.eigenvalues[0] - exact[0]) <= r.residual**2 / (exact[0] - exact[1]) + 1e-14


def test_torch_lanczos_restarts_within_its_basis_and_matches_arpack():
    """Close top eigenvalues need more HVPs than the basis holds: the thick restart keeps the
    basis at ncv vectors and still finds the top 1 and top 3 that ARPACK finds."""
    matrix = close_top_eigenvalues()
    exact = np.sort(np.linalg.eigvalsh(matrix))[::-1]
    operator, calls = counted_operator(matrix)
    for k, ncv in ((1, 6), (3, 8), (1, None)):
        calls[0] = 0
        ours = lanczos(operator, top_k=k, max_iterations=2000, tol=1e-8, ncv=ncv, backend="torch")
        assert ours.converged and ours.hvp_count == calls[0] == ours.iterations, ours
        if ncv is not None:
            assert ours.iterations > 2 * ncv  # it restarted
        arpack = lanczos(operator, top_k=k, max_iterations=2000, tol=1e-8, ncv=ncv, backend="arpack")
        np.testing.assert_allclose(ours.eigenvalues, exact[:k], rtol=1e-7)
        np.testing.assert_allclose(ours.eigenvalues, arpack.eigenvalues, rtol=1e-7)


def test_torch_lanczos_budget_and_partial_result():
    """max_iterations bounds the HVPs; a stopped run returns only the values that passed the
    test (none here: tol 1e-12 with 1.0, 0.99, ... on top), as ARPACK does."""
    operator, calls = counted_operator(close_top_eigenvalues())
    for budget in (1, 5, 12, 30):
        calls[0] = 0
        r = lanczos(operator, max_iterations=budget, tol=1e-12, backend="torch")
        assert not r.converged and r.iterations == budget == calls[0] == r.hvp_count, r
        assert r.eigenvalues == () and r.residual is None
    with pytest.raises(ValueError, match="maxiter counts ARPACK restarts"):
        lanczos(operator, maxiter=1, backend="torch")


def test_torch_lanczos_largest_magnitude_negative_and_float32():
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    eig = np.concatenate([[-5.0, 3.0], rng.uniform(-1, 1, 28)])
    matrix = (q * eig) @ q.T
    operator, _ = counted_operator(matrix)
    r = lanczos(operator, top_k=2, max_iterations=500, tol=1e-8, backend="torch")
    np.testing.assert_allclose(r.eigenvalues, [-5.0, 3.0], rtol=1e-8)
    # float32 operator: the basis stays float32, the answer to float32's precision.
    single = torch.from_numpy(matrix).float()
    r = lanczos(LambdaOperator(lambda v: single @ v, size=30, dtype=torch.float32), max_iterations=500, tol=1e-5,
                backend="torch")
    assert r.converged and r.eigenvalues[0] == pytest.approx(-5.0, rel=1e-5)


def test_the_engine_runs_lanczos_in_torch_at_every_size():
    """The default backend is the torch one (it can stop after any HVP), whatever the size;
    ARPACK only when asked for; anything else is refused."""
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((200, 200)))
    operator, calls = counted_operator((q * np.concatenate([[1.0, 0.5], rng.uniform(0.0, 0.4, 198)])) @ q.T)
    ours = lanczos(operator, max_iterations=500, tol=1e-3)
    assert ours.hvp_count == calls[0] == ours.iterations < 10 and ours.eigenvalues[0] == pytest.approx(1.0, rel=1e-3)
    calls[0] = 0
    arpack = lanczos(operator, max_iterations=500, tol=1e-3, backend="arpack")
    assert arpack.hvp_count == calls[0] >= 22
    with pytest.raises(ValueError, match="unknown Lanczos backend"):
        lanczos(operator, backend="cuda")
