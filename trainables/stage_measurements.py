"""Measurements taken after a stage besides evaluation: weight change and loss curvature.

- weights: ‖θ_k − θ_{k−1}‖² and ‖θ_k − θ_0‖², streamed from the safetensors checkpoints.
- curvature (when enabled for this stage): the Hessian of the stage's training loss on a fixed,
  recorded random sample of its training examples (paper §3.4: 50 samples, power iteration),
  overall and optionally per group, from the stage's checkpoint reloaded with eager attention
  (double-backward through SDPA fails on CPU). The chain drops its evaluation model and calls
  `trainables.models.release_memory` first, so the float32 curvature copy is the only model in memory; the copy
  is released the same way when the rows are made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from contract.plan import StagePlan, TrialPlan
from contract.schema import ALL
from tasks.sampling import seeded_subset
from trainables.models import release_memory
from trainables.weight_change import squared_distance


def weight_row(trial_id: str, stage: int, checkpoint: Path, previous: str | Path, base: str | Path) -> dict[str, Any]:
    from_previous, n_params = squared_distance(checkpoint, previous)
    from_base = from_previous if stage == 1 else squared_distance(checkpoint, base)[0]
    return {"trial_id": trial_id, "stage": stage, "l2_sq_from_previous": from_previous,
            "l2_sq_from_base": from_base, "n_params": n_params}


def curvature_sample(examples: Sequence[Any], n: int, seed: int) -> list[Any]:
    """A seeded random subset of n examples (all of them when fewer), in a stable order."""
    return seeded_subset(examples, n, seed)


def curvature_rows(plan: TrialPlan, stage: StagePlan, checkpoint: Path, train_examples: Sequence[Any]) -> list[dict[str, Any]]:
    from trainables.curvature import load_model_for_curvature, measure_curvature
    from trainables.tokenization import encoder_for

    cfg = plan.curvature
    model, tokenizer = load_model_for_curvature(str(checkpoint), trust_remote_code=plan.model.trust_remote_code)
    encoder = encoder_for(plan.model, tokenizer)  # the loss SFT trains: the same seam
    samples = {ALL: curvature_sample(train_examples, cfg.n_samples, cfg.sample_seed)}
    if cfg.per_group:
        for group in sorted({g for ex in train_examples for g in ex.groups}):
            members = [ex for ex in train_examples if group in ex.groups]
            samples[group] = curvature_sample(members, cfg.n_samples, cfg.sample_seed)
    rows = []
    for group, sample in samples.items():
        # Per-group: the top eigenvalue only (the question is which groups sit in sharper minima).
        algorithms = cfg.algorithms if group == ALL else cfg.algorithms[:1]
        results = measure_curvature(
            model, encoder, sample,
            algorithms=algorithms,
            top_k=cfg.top_k if group == ALL else 1,
            max_iterations=cfg.max_iterations,
            tol=cfg.tol,
            trace_samples=cfg.trace_samples if group == ALL else 0,
            max_length=plan.model.max_length,
            batch_size=cfg.batch_size,
            param_regex=cfg.parameters,
            seed=cfg.sample_seed,
        )
        for result in results:
            rows.append({
                "trial_id": plan.trial_id, "stage": stage.stage, "task": stage.task, "group": group,
                "algorithm": result.algorithm, "n_samples": len(sample), "sample_seed": cfg.sample_seed,
                "param_subset": cfg.parameters or "all", "eigenvalues": list(result.eigenvalues),
                "eigenvalue": result.eigenvalues[0] if result.eigenvalues else None, "trace": result.trace,
                "iterations": result.iterations, "hvp_count": result.hvp_count, "residual": result.residual,
                "converged": result.converged, "tol": result.tol, "seconds": result.seconds,
                "example_ids": [ex.example_id for ex in sample],
            })
    del model, tokenizer, encoder
    release_memory()
    return rows
