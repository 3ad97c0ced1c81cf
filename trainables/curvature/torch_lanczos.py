"""Thick-restart Lanczos in torch, on the operator's device and in its dtype, with a bounded basis.

Why not ARPACK here: scipy's eigsh runs on the host in float64 and copies every vector across
(~20 float64 vectors of n entries: ~1.1 TB of host RAM for the 6.7e9 parameters of Llama-2-7B).
Why not `hessian_eigenthings.lanczos`: it does not restart, so its basis grows by one vector
per HVP (100 vectors at the default budget), it always spends its whole step count (no
convergence test while it runs), and its reorthogonalisation allocates two temporaries per
basis vector.

The algorithm (Wu & Simon's thick restart, equivalent to ARPACK's implicit restart with exact
shifts): a Lanczos basis V of at most `ncv` orthonormal vectors is grown one HVP at a time,
each new vector orthogonalised against the whole kept basis, twice (classical Gram-Schmidt with
one refinement pass: full reorthogonalisation, so no ghost eigenvalues). After every step the
projected matrix T = VᵀHV (≤ ncv × ncv, float64 on the host) is diagonalised; a Ritz pair
(θ, Vy) has residual r = ||HVy − θVy|| = β·|y_last| exactly, and the run stops as soon as each
of the top_k Ritz values by |θ| is known to tol (`accepts`):

- ARPACK's test r ≤ tol·|θ| (some eigenvalue lies within r of θ), or
- the eigenvalue's own error bound: a Ritz value's error is second order in its vector's
  residual, |θ − λ| ≤ r²/δ (Kato-Temple; δ the distance from θ to the rest of the spectrum,
  estimated from the other Ritz values: see `accepts`), so r²/δ ≤ tol·|θ| bounds the
  relative error by tol long before r itself is that small. It is taken only once
  r ≤ √tol·|θ|, so the first steps, whose other Ritz values say little about δ yet, cannot
  stop the run.

δ is estimated, so the second test can stop early on a wrong value when the top two
eigenvalues are within a few percent in magnitude (the other one not yet resolved by the
Krylov space). Simulated on random spectra (tests/test_curvature_stopping.py): no error above
tol in 60 draws each at |λ2/λ1| ≤ 0.9 and tol 1e-3 or 1e-4; at 0.95–0.99 some draws stop on
the second eigenvalue, as power iteration does there too (while spending 10–30x the HVPs).

The second test is what makes Lanczos cheap where power iteration is cheap: with a wide gap
(after SFT, |λ2/λ1| ≈ 0.1 on the tiny model) the eigenvalue is within 1e-3 after 3 HVPs, where
ARPACK's test needs 5 and its fixed first factorization 21. No HVP is spent on checking: the
residual reported is β·|y_last| (full reorthogonalisation keeps the Lanczos relation exact to
rounding; tests check the Kato-Temple inequality with it on closed forms). When the basis is full, the
`keep` Ritz vectors of largest |θ| are kept (computed in place, in column chunks) with the
last residual direction, and the basis grows again from there.

Memory vs accuracy: the basis is ncv + 1 vectors (the +1 is the residual direction) plus the
HVP's output, whatever the HVP budget; ncv is ARPACK's default (max(2k + 1, 20), at most n),
so the Krylov space per cycle is ARPACK's
(`budget.lanczos_basis`; a budget below 20 HVPs needs no more than it can fill). A
larger ncv needs fewer HVPs when the top eigenvalues are close, at one vector each; an
unrestarted Lanczos would keep one vector per HVP. Vectors stay in the operator's dtype (the
curvature copy is float32); only the small coefficient matrices are float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainables.curvature.budget import lanczos_basis

CHUNK = 1 << 22
"""Entries per column chunk when the kept Ritz vectors are formed in place at a restart:
the only temporary, keep × CHUNK entries (64 MiB at keep 4, float32)."""


@dataclass(frozen=True)
class LanczosRun:
    """What one run found: every value it accepted, in descending |λ|."""

    eigenvalues: tuple[float, ...]
    """The wanted Ritz values that passed the test (all top_k when converged)."""
    converged: bool
    steps: int
    """HVPs spent, all of them growing the basis (none is spent on checking)."""
    residual: float | None
    """||Hx − θx|| of the top Ritz pair, β·|y_last| (None: nothing accepted)."""


def kept_at_restart(top_k: int, ncv: int) -> int:
    """Ritz vectors kept at a restart: half the basis, at least the wanted ones, room to grow."""
    return min(max(top_k, ncv // 2), ncv - 1)


def thick_restart_lanczos(operator: Any, *, top_k: int, max_iterations: int, tol: float, seed: int,
                          ncv: int | None = None) -> LanczosRun:
    """Top-k eigenvalues by magnitude of a symmetric operator, within `max_iterations` HVPs.

    `operator`: `.size`, `.dtype`, `.device`, `.matvec(v)` (a hessian_eigenthings operator).
    The start vector is standard normal from a torch generator on the operator's device seeded
    with `seed`. Unconverged runs return only the values that passed the test, as ARPACK does.
    """
    import torch

    n = int(operator.size)
    if not 1 <= top_k < n:
        raise ValueError(f"Lanczos needs 1 <= top_k < operator size ({top_k}, {n})")
    m = lanczos_basis(top_k, max_iterations, n) if ncv is None else max(top_k + 1, min(int(ncv), n))
    device, dtype = operator.device, operator.dtype
    basis = torch.empty((m + 1, n), device=device, dtype=dtype)  # row m: the residual direction
    generator = torch.Generator(device=device).manual_seed(seed)
    torch.randn(n, generator=generator, device=device, dtype=dtype, out=basis[0])
    basis[0].div_(torch.linalg.vector_norm(basis[0]))
    projected = torch.zeros((m, m), dtype=torch.float64)  # T = VᵀHV: arrow part + tridiagonal
    kept, steps = 0, 0
    theta = y = order = None
    beta = 0.0
    while True:
        j = kept
        while j < m and steps < max_iterations:
            w = operator.matvec(basis[j])
            steps += 1
            active = basis[: j + 1]
            coeffs = torch.zeros(j + 1, dtype=torch.float64)
            for _ in range(2):  # full reorthogonalisation, with one refinement pass
                c = active @ w
                w.addmv_(active.t(), c, alpha=-1)
                coeffs += c.to(device="cpu", dtype=torch.float64)
            projected[j, j] = coeffs[j]
            beta = float(torch.linalg.vector_norm(w))
            j += 1
            theta, y = torch.linalg.eigh(projected[:j, :j])
            order = torch.argsort(theta.abs(), descending=True)
            wanted = order[: min(top_k, j)]
            scale = theta[wanted].abs().max().item() if len(wanted) else 0.0
            if beta <= 1e-12 * max(scale, 1e-300):  # the basis spans an invariant subspace
                beta = 0.0
            if beta > 0.0:
                basis[j].copy_(w).div_(beta)
            del w
            if j < m:
                projected[j - 1, j] = projected[j, j - 1] = beta
            if len(wanted) == top_k and _accepted(theta, y, order, top_k, beta, tol) == top_k:
                return _finish(theta, y, order, top_k, steps, beta, True)
            if beta == 0.0:
                break  # exact, but fewer than top_k values exist in this subspace: restart won't help
        if steps >= max_iterations or beta == 0.0:
            accepted = _accepted(theta, y, order, top_k, beta, tol) if theta is not None else 0
            return _finish(theta, y, order, accepted, steps, beta, False)
        # Restart: V[:keep] ← V[:m] Y[:, kept Ritz], V[keep] ← the residual direction.
        keep = kept_at_restart(top_k, m)
        chosen = order[:keep]
        _combine_rows(basis, y[:, chosen], m)
        basis[keep].copy_(basis[m])
        projected.zero_()
        projected.diagonal()[:keep] = theta[chosen]
        couplings = beta * y[m - 1, chosen]
        projected[keep, :keep] = couplings
        projected[:keep, keep] = couplings
        kept = keep


def _accepted(theta, y, order, top_k: int, beta: float, tol: float) -> int:
    """How many of the top_k Ritz values (by |θ|) are known to tol, counted from the top
    (ARPACK reports the converged wanted values; here the leading run of them)."""
    last = y.shape[0] - 1
    values = theta.tolist()
    residuals = [beta * abs(float(y[last, k])) for k in range(len(values))]
    count = 0
    for i in order[:top_k].tolist():
        if accepts(i, values, residuals, tol):
            count += 1
        else:
            break
    return count


def accepts(i: int, values: list[float], residuals: list[float], tol: float) -> bool:
    """Whether Ritz value values[i] (residual residuals[i]) is known to relative accuracy tol:
    - ARPACK's test r ≤ tol·|θ|, or
    - r ≤ √tol·|θ| and r²/gap ≤ tol·|θ| (the Kato-Temple bound on the eigenvalue's error),
      where gap is its distance in magnitude to the nearest other Ritz value, less that value's
      own residual: the order by magnitude is what is asked for (a value of the other sign
      and nearly the same magnitude is as close as a neighbour), and a Ritz value still far
      from converged (large residual) may yet move towards it. No gap, no acceptance."""
    theta, r = values[i], residuals[i]
    scale = abs(theta)
    if r <= tol * scale:
        return True
    if r > tol ** 0.5 * scale:
        return False
    gaps = [abs(scale - abs(v)) - residuals[k] for k, v in enumerate(values) if k != i]
    if not gaps or min(gaps) <= 0.0:
        return False
    return r * r / min(gaps) <= tol * scale


def _combine_rows(basis, coefficients, m: int) -> None:
    """basis[:k] ← coefficientsᵀ · basis[:m] in place (k = coefficients' columns ≤ m), by chunks."""
    coefficients = coefficients.to(device=basis.device, dtype=basis.dtype)
    k = coefficients.shape[1]
    for start in range(0, basis.shape[1], CHUNK):
        block = basis[:m, start : start + CHUNK]
        basis[:k, start : start + CHUNK] = coefficients.t() @ block


def _finish(theta, y, order, count: int, steps: int, beta: float, converged: bool) -> LanczosRun:
    """The accepted values, and the top Ritz pair's residual β·|y_last| (no HVP spent on it)."""
    if count == 0 or theta is None:
        return LanczosRun(eigenvalues=(), converged=converged, steps=steps, residual=None)
    chosen = order[:count]
    values = tuple(float(theta[i]) for i in chosen.tolist())
    residual = beta * abs(float(y[y.shape[0] - 1, int(chosen[0])]))
    return LanczosRun(eigenvalues=values, converged=converged, steps=steps, residual=residual)
