"""Eigenvalue and trace algorithms over any matrix-free curvature operator.

Everything here works on a `hessian_eigenthings.CurvatureOperator` (`.size`, `.dtype`,
`.device`, `.matvec(v)`), so the same code runs on the Hessian of a language model and on a
closed-form test matrix. Every result counts the Hessian-vector products (HVPs) it really
spent: the operator is wrapped in a `CountingOperator` for the duration of each algorithm.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

from hessian_eigenthings import CurvatureOperator

from trainables.curvature.budget import lanczos_steps_budget
from trainables.curvature.torch_lanczos import thick_restart_lanczos

ALGORITHMS = ("power_iteration", "lanczos", "hutchinson")


@dataclass(frozen=True)
class CurvatureResult:
    """One algorithm's answer for one operator.

    algorithm:   "power_iteration" | "lanczos" | "hutchinson"
    eigenvalues: top-k by magnitude, descending |λ| (empty for hutchinson; for lanczos only
                 the Ritz values that passed the test when it ran out of budget)
    trace:       Hutchinson estimate of tr(H), else None
    iterations:  power steps (summed over deflations) | Lanczos steps (= its HVPs) |
                 Hutchinson probes
    hvp_count:   HVPs actually evaluated (lanczos: its steps; + 1 for the residual check on
                 the ARPACK reference backend)
    residual:    ||Hv − λv|| of the top pair, v unit-norm (None for hutchinson or when no
                 pair was found)
    converged:   the algorithm's own convergence test passed (hutchinson: always True; it has
                 no stopping test, see trace_stderr)
    tol:         the relative tolerance asked for
    seconds:     wall-clock time of the algorithm, HVPs included
    trace_stderr: standard error of the Hutchinson estimate (None otherwise)
    """

    algorithm: str
    eigenvalues: tuple[float, ...]
    trace: float | None
    iterations: int
    hvp_count: int
    residual: float | None
    converged: bool
    tol: float
    seconds: float
    trace_stderr: float | None = None

    @property
    def spectral_radius(self) -> float | None:
        """max |λ| found (the paper's curvature measure), None for hutchinson / no result."""
        return abs(self.eigenvalues[0]) if self.eigenvalues else None


class CountingOperator(CurvatureOperator):
    """Wraps an operator and counts (optionally records) its matvec calls."""

    def __init__(self, inner: Any, *, record: bool = False) -> None:
        self.inner = inner
        self.calls = 0
        self.record = record
        self.inputs: list[Any] = []
        self.outputs: list[Any] = []

    @property
    def size(self) -> int:
        return self.inner.size

    @property
    def device(self):
        return self.inner.device

    @property
    def dtype(self):
        return self.inner.dtype

    def matvec(self, v):
        out = self.inner.matvec(v)
        self.calls += 1
        if self.record:
            self.inputs.append(v.detach().clone())
            self.outputs.append(out.detach().clone())
        return out


def power_iteration(operator: Any, *, top_k: int = 1, max_iterations: int = 100, tol: float = 1e-3,
                    seed: int = 0) -> CurvatureResult:
    """The paper's method (Appendix A.4): power iteration on H, deflated for top_k > 1.

    Converges to the eigenvalue of largest magnitude. `max_iterations` bounds the steps (= HVPs)
    per eigenpair; converged means hessian_eigenthings' test passed for every pair: relative
    change of the Rayleigh quotient and relative residual ||Hv − λv|| / |λ| both below tol.
    """
    from hessian_eigenthings import deflated_power_iteration, power_iteration_one

    _check_k(operator, top_k)
    counter = CountingOperator(operator)
    start = time.perf_counter()
    if top_k == 1:
        lam, _, residual, iterations, converged = power_iteration_one(
            counter, max_iter=max_iterations, tol=tol, seed=seed)
        values, residuals, conv = [float(lam)], [float(residual)], bool(converged)
    else:
        res = deflated_power_iteration(counter, k=top_k, max_iter=max_iterations, tol=tol, seed=seed)
        values = [float(x) for x in res.eigenvalues.tolist()]
        residuals = [float(x) for x in res.residuals.tolist()]
        iterations, conv = int(res.iterations), bool(res.converged.all())
    seconds = time.perf_counter() - start
    order = sorted(range(len(values)), key=lambda i: -abs(values[i]))
    return CurvatureResult(
        algorithm="power_iteration", eigenvalues=tuple(values[i] for i in order), trace=None,
        iterations=int(iterations), hvp_count=counter.calls, residual=residuals[order[0]],
        converged=conv, tol=tol, seconds=seconds)


def lanczos(operator: Any, *, top_k: int = 1, max_iterations: int = 100, tol: float = 1e-3, seed: int = 0,
            ncv: int | None = None, maxiter: int | None = None, backend: str = "torch") -> CurvatureResult:
    """Restarted Lanczos for the top-k eigenvalues by magnitude, within `max_iterations` HVPs.

    - "torch" (what the engine runs): `torch_lanczos.thick_restart_lanczos`, on the operator's
      device and dtype with ncv + 1 vectors, stopping after the first HVP at which every wanted
      eigenvalue is known to `tol` (ARPACK's residual test, or the eigenvalue's own error bound
      r²/gap: see that module). hvp_count = its steps; the residual is the Lanczos relation's.
    - "arpack": scipy's eigsh (implicitly restarted, float64 on the host), a reference for
      tests and benchmarks: it tests convergence only at the end of each ncv-step
      factorization (22 HVPs at least with the default ncv 20, however wide the gap), and
      spends one more HVP measuring the top pair's residual. `maxiter` (ARPACK restarts) and
      `ncv` drive ARPACK directly.
    Unconverged runs of either return only the values that passed (converged=False).
    """

    n = int(operator.size)
    _check_k(operator, top_k)
    if top_k >= n:
        raise ValueError(f"Lanczos needs top_k < operator size ({top_k} >= {n})")
    if backend == "torch":
        if maxiter is not None:
            raise ValueError("maxiter counts ARPACK restarts; the torch backend takes max_iterations (HVPs)")
        return _torch_lanczos(operator, top_k=top_k, max_iterations=max_iterations, tol=tol, seed=seed, ncv=ncv)
    if backend != "arpack":
        raise ValueError(f"unknown Lanczos backend {backend!r} (arpack, torch)")
    return _arpack_lanczos(operator, top_k=top_k, max_iterations=max_iterations, tol=tol, seed=seed, ncv=ncv,
                           maxiter=maxiter)


def _torch_lanczos(operator: Any, *, top_k: int, max_iterations: int, tol: float, seed: int,
                   ncv: int | None) -> CurvatureResult:

    counter = CountingOperator(operator)
    start = time.perf_counter()
    run = thick_restart_lanczos(counter, top_k=top_k, max_iterations=max_iterations, tol=tol, seed=seed, ncv=ncv)
    return CurvatureResult(
        algorithm="lanczos", eigenvalues=run.eigenvalues, trace=None, iterations=run.steps,
        hvp_count=counter.calls, residual=run.residual, converged=run.converged, tol=tol,
        seconds=time.perf_counter() - start)


def _arpack_lanczos(operator: Any, *, top_k: int, max_iterations: int, tol: float, seed: int, ncv: int | None,
                    maxiter: int | None) -> CurvatureResult:
    import numpy as np
    import torch
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    n = int(operator.size)
    ncv_used, restarts = lanczos_steps_budget(max_iterations, top_k, n, ncv)
    if maxiter is not None:
        restarts = maxiter
    counter = CountingOperator(operator)

    def to_torch(x):
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(-1)).to(
            device=operator.device, dtype=operator.dtype)

    def to_numpy(t):
        return t.detach().to(device="cpu", dtype=torch.float64).numpy()

    def matvec(x):
        return to_numpy(counter.matvec(to_torch(x)))

    linear = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n)
    start = time.perf_counter()
    with single_threaded_openblas():
        try:
            values, vectors = eigsh(linear, k=top_k, which="LM", tol=tol, maxiter=restarts, ncv=ncv_used, v0=v0)
            converged = True
        except ArpackNoConvergence as err:
            values, vectors = err.eigenvalues, err.eigenvectors
            converged = False
        steps = counter.calls
        values = np.asarray(values, dtype=np.float64)
        order = np.argsort(-np.abs(values), kind="stable")
        residual = None
        if len(order):
            top_val, top_vec = float(values[order[0]]), np.asarray(vectors)[:, order[0]]
            top_vec = top_vec / np.linalg.norm(top_vec)
            residual = float(np.linalg.norm(matvec(top_vec) - top_val * top_vec))
    seconds = time.perf_counter() - start
    return CurvatureResult(
        algorithm="lanczos", eigenvalues=tuple(float(values[i]) for i in order), trace=None,
        iterations=steps, hvp_count=counter.calls, residual=residual, converged=converged, tol=tol,
        seconds=seconds)


def hutchinson_trace(operator: Any, *, samples: int, tol: float = 0.0, seed: int = 0) -> CurvatureResult:
    """Hutchinson's estimate of tr(H) from `samples` Rademacher probes (hessian_eigenthings.hutchinson)."""
    from hessian_eigenthings import hutchinson

    if samples < 1:
        raise ValueError(f"trace_samples must be >= 1 for hutchinson (got {samples})")
    counter = CountingOperator(operator)
    start = time.perf_counter()
    res = hutchinson(counter, num_samples=samples, distribution="rademacher", seed=seed)
    seconds = time.perf_counter() - start
    stderr = float(res.stderr) if not math.isnan(res.stderr) else None
    return CurvatureResult(
        algorithm="hutchinson", eigenvalues=(), trace=float(res.estimate), iterations=samples,
        hvp_count=counter.calls, residual=None, converged=True, tol=tol, seconds=seconds, trace_stderr=stderr)


def run_algorithms(operator: Any, *, algorithms: Sequence[str] = ("power_iteration", "lanczos"), top_k: int = 1,
                   max_iterations: int = 100, tol: float = 1e-3, trace_samples: int = 0,
                   seed: int = 0) -> list[CurvatureResult]:
    """Run the requested eigen-algorithms (in order), then Hutchinson when trace_samples > 0.

    "hutchinson" may also be named in `algorithms` (it then needs trace_samples > 0).
    """
    unknown = [a for a in algorithms if a not in ALGORITHMS]
    if unknown:
        raise ValueError(f"unknown curvature algorithm(s) {unknown} (known: {', '.join(ALGORITHMS)})")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1 (got {top_k})")
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1 (got {max_iterations})")
    if trace_samples < 0:
        raise ValueError(f"trace_samples must be >= 0 (got {trace_samples})")
    if "hutchinson" in algorithms and trace_samples == 0:
        raise ValueError("algorithm 'hutchinson' needs trace_samples > 0")
    results = []
    for name in algorithms:
        if name == "power_iteration":
            results.append(power_iteration(operator, top_k=top_k, max_iterations=max_iterations, tol=tol, seed=seed))
        elif name == "lanczos":
            results.append(lanczos(operator, top_k=top_k, max_iterations=max_iterations, tol=tol, seed=seed))
    if trace_samples > 0:
        results.append(hutchinson_trace(operator, samples=trace_samples, tol=tol, seed=seed))
    return results


@contextlib.contextmanager
def single_threaded_openblas():
    """Run numpy/scipy's OpenBLAS on one thread inside the block (best effort, Linux).

    ARPACK's own vector work is O(n·ncv) per step and needs no threads, but idle OpenBLAS
    worker threads busy-wait after each call and steal the cores the HVPs (torch) run on:
    on a 2-core machine every HVP inside eigsh was 2-3x slower without this.
    """
    restore = []
    try:
        for _path, get, set_ in _openblas_thread_controls():
            restore.append((set_, int(get())))
            set_(1)
    except Exception:  # pragma: no cover - a missing symbol only costs speed
        pass
    try:
        yield
    finally:
        for set_, n in restore:
            try:
                set_(n)
            except Exception:  # pragma: no cover
                pass


def _openblas_thread_controls():
    import ctypes

    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line}
    except OSError:
        return []
    controls = []
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", "_64", ""):
                try:
                    get = getattr(lib, f"{prefix}_get_num_threads{suffix}")
                    set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}")
                except AttributeError:
                    continue
                get.restype, set_.argtypes = ctypes.c_int, [ctypes.c_int]
                controls.append((path, get, set_))
                break
            else:
                continue
            break
    return controls


def _check_k(operator: Any, top_k: int) -> None:
    if top_k < 1 or top_k > operator.size:
        raise ValueError(f"top_k must be in 1..{operator.size} (got {top_k})")
