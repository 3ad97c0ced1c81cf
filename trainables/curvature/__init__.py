"""Curvature of the first task's loss: the Hessian's spectral radius (paper §3.4, Appendix A.4).

The paper measures sharpness as the spectral radius of the Hessian of task A's training loss,
by power iteration with Hessian-vector products (HVPs) on 50 random training samples. Here:

    from trainables.curvature import load_model_for_curvature, measure_curvature
    model, tokenizer = load_model_for_curvature(checkpoint_dir)       # float32, eager attention
    results = measure_curvature(model, tokenizer, examples[:50], algorithms=("power_iteration", "lanczos"),
                                ...)  # every setting named: the plan's CurvaturePlan (stage_measurements.py)
    results[0].eigenvalues[0]                                          # top eigenvalue by |λ|

Library choice (fixed):
- Operator: `hessian_eigenthings.HessianOperator` — exact double-backward HVPs
  (torch.autograd.grad with create_graph=True), parameter subsets (`param_regex` →
  `hessian_eigenthings.match_regex`), several batches averaged, no second copy of the model.
- Power iteration (the paper's method): `hessian_eigenthings.power_iteration_one`
  (`deflated_power_iteration` for top_k > 1).
- Lanczos: `scipy.sparse.linalg.eigsh` (ARPACK's implicitly restarted Lanczos, which='LM',
  so the largest-magnitude eigenvalue = the spectral radius) over a scipy `LinearOperator`
  whose matvec calls the HVP operator (float64 numpy ↔ operator dtype at the boundary). ARPACK
  has a real convergence test (||Hv − θv|| ≤ tol·|θ|); on ArpackNoConvergence we return the
  partial result with converged=False. HVPs are counted by counting matvec calls.
- Trace: `hessian_eigenthings.hutchinson` (Rademacher probes).

`max_iterations` is an HVP budget for both eigen-algorithms (power steps per eigenpair; for
Lanczos it is turned into ARPACK restarts, see `lanczos_steps_budget`).

The loss is SFT's (trainables/stages/sft.py via TRL): prompt + completion + EOS tokenized as TRL
does, loss on the completion tokens only, token-weighted mean over the sample (see lm.py).

Dependencies: hessian-eigenthings (1.0.0a5) and scipy (ARPACK), imported when this package is.

The model must use eager attention: HVPs differentiate twice through attention, which the
SDPA kernels do not support on CPU; `measure_curvature` raises ValueError otherwise.
"""

from trainables.curvature.algorithms import (
    ALGORITHMS,
    CountingOperator,
    CurvatureResult,
    hutchinson_trace,
    lanczos,
    power_iteration,
    run_algorithms,
)
from trainables.curvature.lm import (
    check_eager_attention,
    curvature_operator,
    lm_loss_fn,
    load_model_for_curvature,
    measure_curvature,
    sft_batches,
)

__all__ = [
    "ALGORITHMS",
    "CountingOperator",
    "CurvatureResult",
    "check_eager_attention",
    "curvature_operator",
    "hutchinson_trace",
    "lanczos",
    "lm_loss_fn",
    "load_model_for_curvature",
    "measure_curvature",
    "power_iteration",
    "run_algorithms",
    "sft_batches",
]
