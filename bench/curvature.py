"""HVPs and seconds the curvature measurement costs: power iteration vs Lanczos, HVP vs gradient.

    python bench/curvature.py [--examples 50] [--train-steps 60] [--no-base]

The Hessian of the SFT loss on 50 ToxiGenQA training examples (paper Appendix A.4), on the
tiny model, twice in one run: the untrained model (stage 0, whose top eigenvalues are nearly
degenerate, |λ2/λ1| ≈ 0.94: the hard case for power iteration), then after a short SFT stage
on ToxiGenQA (60 steps, lr 3e-3; the paper's setting, Hessian of the first task's loss after
training on it). For each:

(a) a tightly converged reference top-|λ| (ARPACK, tol 1e-10);
(b) the HVPs each method spends to 1e-3: power iteration (the paper's method) stopped by
    hessian_eigenthings' own test (relative change and residual below tol), and by an oracle
    that knows the answer (the first HVP after which its error stays ≤ 1e-3); Lanczos as the
    engine runs it (torch thick restart, stopped at the first HVP where the top eigenvalue is
    known to tol, its error against the reference printed); ARPACK's eigsh at the same tol for
    comparison (it tests only after each ncv-step factorization: ≥ 22 HVPs);
(c) the wall time of one HVP vs one forward+backward (gradient) of the same batch, median of 10,
    interleaved.

Targets (own stops): HVPs Lanczos / power ≤ 1.2 after SFT (a wide gap), ≤ 0.3 untrained (a
small one). The oracle ratio is printed too: no stopping test can beat the oracle.
How many HVPs power iteration needs depends on |λ2/λ1| (error ~ |λ2/λ1|^(2k)); when the top
eigenvalue is well separated (the trained model here) it needs a handful and no Krylov method
can do much better. An exact HVP by double backward costs about 3 gradients' worth of matmuls
(forward 1 + backward 2 + backward-of-backward 6 vs 1 + 2), plus the double backward of the
elementwise ops (softmax over [batch, heads, seq, seq] dominates the tiny model).
Numbers depend on the machine and its load; compare ratios from one run only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contract.plan import TrainingPlan  # noqa: E402
from tests.plans import model_plan, stage_plan  # noqa: E402

TRAINING = TrainingPlan.from_dict({"adam_beta1": 0.9, "adam_beta2": 0.95, "weight_decay": 0.1, "lr_scheduler": "cosine",
                                    "warmup_steps": 0, "max_grad_norm": 1.0, "eval_batch_size": 32})
REL_ERR = 1e-3


def first_stable_hit(errors: list[float], threshold: float) -> int | None:
    """1-based index from which every error is ≤ threshold (None if the last one is not)."""
    if not errors or errors[-1] > threshold:
        return None
    i = len(errors)
    while i > 0 and errors[i - 1] <= threshold:
        i -= 1
    return i + 1


def measure(operator, model, *, power_max: int, repeats: int) -> dict:
    """(a), (b), (c) for one operator; prints the details and returns the headline numbers."""
    import torch

    from trainables.curvature import CountingOperator, lanczos, lm_loss_fn, power_iteration

    batch = operator.dataloader[0]
    model.eval()
    # (a) reference
    ref = lanczos(operator, top_k=3, max_iterations=1000, tol=1e-10, backend="arpack")
    lam = ref.eigenvalues[0]
    print(f"(a) reference top-3 eigenvalues {', '.join(f'{x:.6g}' for x in ref.eigenvalues)} "
          f"(eigsh tol 1e-10: converged={ref.converged}, {ref.hvp_count} HVPs, top residual {ref.residual:.1e}); "
          f"|λ2/λ1| = {abs(ref.eigenvalues[1] / lam):.3f}")

    def rel(x: float) -> float:
        return abs(x - lam) / abs(lam)

    # (b) power iteration, instrumented
    recorder = CountingOperator(operator, record=True)
    power = power_iteration(recorder, max_iterations=power_max, tol=REL_ERR, seed=0)
    estimates = [float(v @ hv) / float(v @ v) for v, hv in zip(recorder.inputs, recorder.outputs)]
    power_errors = [rel(e) for e in estimates]
    power_hvps = first_stable_hit(power_errors, REL_ERR)
    print(f"(b) power iteration: rel. error <= {REL_ERR:g} from HVP {power_hvps} on; its own stop (tol {REL_ERR:g}): "
          f"converged={power.converged} after {power.hvp_count} HVPs, rel. error {rel(power.eigenvalues[0]):.1e}")
    print("    power estimates: " + ", ".join(f"{i} HVPs {power_errors[i - 1]:.1e}" for i in (1, 2, 5, 10, 20, 50, 100)
                                             if i <= len(power_errors)))
    # Lanczos as the engine runs it (torch, stops after the first HVP at which the top eigenvalue
    # is known to tol), and ARPACK's eigsh at the same tol (its test runs only after each ncv-step
    # factorization: what the engine ran before).
    engine = lanczos(operator, max_iterations=100, tol=REL_ERR, seed=0)
    print(f"    Lanczos as the engine runs it (max_iterations 100, tol {REL_ERR:g}): {engine.hvp_count} HVPs, "
          f"converged={engine.converged}, rel. error {rel(engine.eigenvalues[0]):.1e}")
    arpack = lanczos(operator, max_iterations=100, tol=REL_ERR, seed=0, backend="arpack")
    print(f"    ARPACK eigsh (ncv 20, same tol): {arpack.hvp_count} HVPs, converged={arpack.converged}, "
          f"rel. error {rel(arpack.eigenvalues[0]):.1e}")
    if rel(engine.eigenvalues[0]) > REL_ERR:
        print(f"    WARNING: the engine's Lanczos stopped {rel(engine.eigenvalues[0]):.1e} from the reference")

    # (c) seconds per HVP vs per forward+backward of the same batch
    params = [p for p in model.parameters() if p.requires_grad]  # the operator's parameters (no param_regex)
    v = torch.randn(operator.size, generator=torch.Generator().manual_seed(0))

    def forward_backward():
        torch.autograd.grad(lm_loss_fn(model, batch), params)

    def hvp():
        operator.matvec(v)

    forward_backward(), hvp()  # warm-up
    times: dict[str, list[float]] = {"hvp": [], "fb": []}
    for _ in range(repeats):
        for name, fn in (("fb", forward_backward), ("hvp", hvp)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {"power": power_hvps, "power_stop": power.hvp_count if power.converged else None,
            "lanczos": engine.hvp_count if engine.converged else None, "lanczos_error": rel(engine.eigenvalues[0]),
            "arpack": arpack.hvp_count if arpack.converged else None, "t_hvp": statistics.median(times["hvp"]),
            "t_fb": statistics.median(times["fb"])}


def report(title: str, r: dict, most: float) -> None:
    """The headline: the engine's Lanczos against power iteration, each stopped by its own test
    at the same tol (what each really spends), target `most`; also against power iteration
    stopped by an oracle that knows the answer (the fewest HVPs it could have spent)."""
    def ratio(a, b):
        return a / b if a and b else float("nan")

    own = ratio(r["lanczos"], r["power_stop"])
    oracle = ratio(r["lanczos"], r["power"])
    print(f"--- {title}")
    print(f"HVPs power iteration, its own stop (tol {REL_ERR:g})      {r['power_stop']}")
    print(f"HVPs power iteration, oracle stop (error <= {REL_ERR:g})  {r['power']}")
    print(f"HVPs Lanczos as the engine runs it (tol {REL_ERR:g})      {r['lanczos']}   (rel. error {r['lanczos_error']:.1e}; "
          f"ARPACK eigsh: {r['arpack']})")
    print(f"ratio Lanczos / power (own stops)               {own:.3f}   target <= {most:g}: "
          f"{'met' if own <= most else 'NOT met'}")
    print(f"ratio Lanczos / power (oracle stop)             {oracle:.3f}")
    ratio_time = r["t_hvp"] / r["t_fb"]
    print(f"seconds per HVP                                 {r['t_hvp']:.4f}")
    print(f"seconds per forward+backward                    {r['t_fb']:.4f}")
    print(f"ratio HVP/(forward+backward)                    {ratio_time:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=50, help="training examples in the Hessian's loss")
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--power-max", type=int, default=400, help="power-iteration budget (HVPs)")
    parser.add_argument("--repeats", type=int, default=10, help="timings per median")
    parser.add_argument("--no-base", action="store_true", help="skip the untrained-model scenario")
    args = parser.parse_args()
    data_dir = os.environ.get("STUDY_DATA_DIR") or str(Path(__file__).resolve().parents[2] / "shared" / "data")

    import torch

    from trainables.curvature import curvature_operator, load_model_for_curvature
    from trainables.stages import get_runner
    from tasks import load_examples
    from trainables.tiny_model import ensure_tiny_model

    wall = time.perf_counter()
    torch.set_grad_enabled(True)
    path = ensure_tiny_model(data_dir)
    model, tokenizer = load_model_for_curvature(str(path))
    train = load_examples("toxigen_qa", "train", size=400, data_dir=data_dir, data_seed=0)
    examples = train[: args.examples]
    operator = curvature_operator(model, tokenizer, examples, max_length=512, batch_size=args.examples,
                                  param_regex=None)
    print(f"Hessian of the SFT loss on {len(examples)} ToxiGenQA training examples, batch "
          f"{tuple(operator.dataloader[0]['input_ids'].shape)}, {operator.size:,} parameters, "
          f"torch threads {torch.get_num_threads()}")

    base = None
    if not args.no_base:
        print("\n== untrained tiny model (stage 0): a near-degenerate top of the spectrum")
        base = measure(operator, model, power_max=args.power_max, repeats=args.repeats)

    stage = {"method": "sft", "learning_rate": 3e-3, "batch_size": 16, "steps": args.train_steps, "seed": 0}
    start = time.perf_counter()
    model.train()
    with tempfile.TemporaryDirectory() as work:
        outcome = get_runner("sft")(model=model, tokenizer=tokenizer, stage=stage_plan(stage), examples=train,
                                    training=TRAINING, model_plan=model_plan(path, max_length=512, dtype="float32"),
                                    work_dir=work)
    rows = outcome.log_rows
    print(f"\n== after SFT on ToxiGenQA ({args.train_steps} steps, lr 3e-3, batch 16, 400 examples; loss "
          f"{rows[0]['loss']:.3f} -> {rows[-1]['loss']:.3f}, {time.perf_counter() - start:.1f} s): the paper's setting")
    trained = measure(operator, model, power_max=args.power_max, repeats=args.repeats)

    print()
    report("after SFT (the paper's setting: Hessian of the first task's loss after training on it)", trained, 1.2)
    if base is not None:
        report("untrained model (small spectral gap)", base, 0.3)
    print(f"(total {time.perf_counter() - wall:.0f} s)")


if __name__ == "__main__":
    main()
