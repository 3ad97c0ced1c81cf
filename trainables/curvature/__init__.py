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
- Lanczos, two backends with one convergence test (||Hv − θv|| ≤ tol·|θ| for every wanted
  pair), one HVP budget and one partial result (the values that passed, converged=False):
  * small operators: `scipy.sparse.linalg.eigsh` (ARPACK's implicitly restarted Lanczos,
    which='LM', so the largest-magnitude eigenvalue = the spectral radius) over a scipy
    `LinearOperator` whose matvec calls the HVP operator (float64 numpy ↔ operator dtype at
    the boundary), while its float64 host vectors fit in 1 GiB (~5M parameters): the tiny
    model's results are what they were;
  * above that, `torch_lanczos.thick_restart_lanczos`: thick-restart Lanczos in torch on the
    operator's device and dtype, ARPACK's basis size (ncv + 1 vectors, ncv = 20 by default),
    full reorthogonalisation (hessian_eigenthings' own Lanczos does not restart: one vector
    per HVP). Its results equal ARPACK's within the tolerance (tests/test_curvature_lm.py).
  HVPs are counted by counting matvec calls.
- Trace: `hessian_eigenthings.hutchinson` (Rademacher probes).

`max_iterations` is an HVP budget for both eigen-algorithms (power steps per eigenpair; for
ARPACK it is turned into restarts, see `lanczos_steps_budget`; the torch Lanczos counts HVPs).

The loss is SFT's (trainables/stages/sft.py via TRL): prompt + completion + EOS tokenized as TRL
does, loss on the completion tokens only, token-weighted mean over the sample (see lm.py).

Memory (`budget.py`): each algorithm's peak in model-sized vectors (n = the parameters the
Hessian is over, float32), the HVP's own 4 included, is `curvature_vectors(algorithm, top_k,
max_iterations)`:

    power_iteration   max(top_k + 6, 2·top_k)       7 at top_k 1
    lanczos (torch)   ncv + 5, ncv = min(max(2·top_k + 1, 20), max(max_iterations, top_k + 1))
                                                     25 at the defaults
    hutchinson        7
    (ARPACK keeps 5 on the device and ncv + 7 float64 vectors on the host)

A measurement runs its algorithms one after another, so its peak is the largest of them
(`peak_vectors`). On a GPU the memory model judges the whole step (weights, activations and
these vectors against the GPU, trainables/memory_model.py) when the study is validated, and
`measure_curvature` refuses vectors beyond the GPU's free memory before its first HVP; on a CPU,
n × 4 bytes times the count must fit in `CURVATURE_VECTOR_BUDGET_BYTES` (32 GiB: 343M parameters
at the defaults), checked by `study run` before training and by `measure_curvature`. Each
refusal names `curvature.parameters` with a suggested regex (at 7B, Llama-2's last layers).

Dependencies: hessian-eigenthings (1.0.0a5) and scipy (ARPACK), imported when this package is.

The chain drops its evaluation model (and collects it) before the curvature copy is loaded
(trainables/chain.py, `models.release_memory`).

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
from trainables.curvature.budget import curvature_vectors, peak_vectors, subset_problem
from trainables.curvature.lm import (
    check_eager_attention,
    check_fits,
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
    "check_fits",
    "curvature_operator",
    "curvature_vectors",
    "hutchinson_trace",
    "lanczos",
    "lm_loss_fn",
    "load_model_for_curvature",
    "measure_curvature",
    "peak_vectors",
    "power_iteration",
    "run_algorithms",
    "sft_batches",
    "subset_problem",
]
