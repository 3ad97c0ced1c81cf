"""How many model-sized vectors curvature keeps and how many parameters it may cover.

A "vector" is one tensor of n entries, n = the parameters the Hessian is taken over (all of the
model's, or those `curvature.parameters` selects), in the operator's dtype: float32, the dtype
the curvature copy is loaded in (`load_model_for_curvature`). Counts are each algorithm's
peak, the Hessian-vector product's own vectors included; they do not include the model's weights
or the activations of the double backward (the memory model adds those).

- the HVP (`hessian_eigenthings.HessianOperator`, create_graph double backward): OPERATOR_VECTORS
  = 4 besides its input: the running total over batches, the gradient built with a graph, the
  HVP per parameter and its flat concatenation.
- power_iteration (hessian_eigenthings): the iterate, the previous iterate, the previous HVP's
  output (still bound while the next HVP runs) and the HVP's 4 = 7; with top_k > 1 (deflation)
  also the k − 1 eigenvectors found so far: max(k + 6, 2k) (the 2k: the eigenvectors as a
  list and as a matrix when it returns).
- lanczos (`torch_lanczos`, what the engine runs): the basis of ncv + 1 vectors and the HVP's 4:
  ncv + 5, with ncv = min(max(2k + 1, 20), max(max_iterations, k + 1)). 25 at the defaults
  (top_k 1, max_iterations ≥ 20). (The ARPACK backend, a reference for tests and benchmarks,
  keeps 5 on the device and its float64 basis on the host.)
- hutchinson (hessian_eigenthings): its shape probe, the probe vector, the previous HVP's
  output and the HVP's 4 = 7.

How large a subset may be (`max_subset_parameters`): the algorithms run one after the other, so
the peak is the largest count among those asked; n × that count × 4 bytes must fit in
CURVATURE_VECTOR_BUDGET_BYTES. This fixed budget judges CPU studies: `study run` checks it before
anything trains (study/orchestrate.py, `check_curvature`, from the model's config built on the
meta device) and `measure_curvature` again on a CPU worker. A GPU study's curvature is judged once,
by the memory model's curvature step against the whole GPU (trainables/memory_model.py, whose
advice uses `suggest_subset` too), and on the GPU by its free memory before the first HVP. Above
either a study is refused with a problem naming `curvature.parameters` and a suggested regex (the
last decoder layers that fit): at 7B the paper's full-model Hessian does not fit one GPU, and
measuring a subset silently would change what the number means.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Iterable, Sequence

OPERATOR_VECTORS = 4
"""Vectors one HVP keeps besides its input (see the module docstring)."""
CURVATURE_DTYPE_BYTES = 4
"""Bytes per entry: the curvature copy is float32."""
CURVATURE_VECTOR_BUDGET_BYTES = 32 << 30
"""What the algorithm's vectors may take on a CPU worker (GPU studies: the memory model). Sized as
on one GPU: an 80 GB GPU less a 7B model's float32
curvature copy (27 GB) and the double-backward activations of a curvature batch (~20 GB).
At the default settings (25 vectors) that is 343M parameters: Llama-2-7B's last decoder layer
(202M) fits, two (405M) do not."""


def lanczos_basis(top_k: int, max_iterations: int, size: int | None = None) -> int:
    """ncv of the torch Lanczos: ARPACK's default max(2k + 1, 20), no more than the HVP budget
    can fill (a run that never restarts needs no more), at most the operator's size."""
    ncv = min(max(2 * top_k + 1, 20), max(max_iterations, top_k + 1))
    return ncv if size is None else max(top_k + 1, min(ncv, int(size)))


def curvature_vectors(algorithm: str, top_k: int, max_iterations: int) -> int:
    """Peak model-sized vectors on the device for one algorithm (an upper bound for either
    Lanczos backend: ARPACK keeps 5 there and its basis on the host)."""
    if algorithm == "power_iteration":
        return max(top_k + 2 + OPERATOR_VECTORS, 2 * top_k)
    if algorithm == "lanczos":
        return lanczos_basis(top_k, max_iterations) + 1 + OPERATOR_VECTORS
    if algorithm == "hutchinson":
        return 3 + OPERATOR_VECTORS
    raise ValueError(f"unknown curvature algorithm {algorithm!r}")


def peak_vectors(algorithms: Sequence[str], top_k: int, max_iterations: int, trace_samples: int = 0) -> int:
    """The largest count among the algorithms a measurement runs (one after the other)."""
    names = list(algorithms) + (["hutchinson"] if trace_samples > 0 else [])
    return max(curvature_vectors(a, top_k, max_iterations) for a in names)


def max_subset_parameters(algorithms: Sequence[str], top_k: int, max_iterations: int, trace_samples: int = 0,
                          budget_bytes: int | None = None) -> int:
    """The most parameters a Hessian may be taken over with these settings (budget_bytes:
    CURVATURE_VECTOR_BUDGET_BYTES unless given)."""
    if budget_bytes is None:
        budget_bytes = CURVATURE_VECTOR_BUDGET_BYTES
    return budget_bytes // (peak_vectors(algorithms, top_k, max_iterations, trace_samples) * CURVATURE_DTYPE_BYTES)


def selected_size(named_sizes: Iterable[tuple[str, int]], parameters: str | None) -> int:
    """Entries of the parameters `parameters` selects (re.search on the name, as
    hessian_eigenthings.match_regex), all when None."""
    pattern = re.compile(parameters) if parameters is not None else None
    return sum(size for name, size in named_sizes if pattern is None or pattern.search(name))


def suggest_subset(named_sizes: Sequence[tuple[str, int]], limit: int) -> tuple[str, int] | None:
    """(regex, parameters) of the most decoder layers, counted from the last, whose parameters
    fit in `limit`; when not even the last layer fits, its largest direct sub-module that does.
    Layers are the numbered children of the prefix with the most of them (model.layers.N.)."""
    layers: dict[str, dict[int, int]] = {}
    for name, size in named_sizes:
        match = re.match(r"^(.*?\.)(\d+)\.", name)
        if match:
            by_index = layers.setdefault(match.group(1), {})
            by_index[int(match.group(2))] = by_index.get(int(match.group(2)), 0) + size
    if not layers:
        return None
    prefix, by_index = max(layers.items(), key=lambda item: len(item[1]))
    indices = sorted(by_index, reverse=True)
    chosen, total = [], 0
    for index in indices:
        if total + by_index[index] > limit:
            break
        chosen.append(index)
        total += by_index[index]
    if chosen:
        alternatives = "|".join(str(i) for i in sorted(chosen))
        group = alternatives if len(chosen) == 1 else f"({alternatives})"
        return f"^{re.escape(prefix)}{group}\\.", total
    last = f"{prefix}{indices[0]}."
    parts: dict[str, int] = {}
    for name, size in named_sizes:
        if name.startswith(last):
            part = last + name[len(last):].split(".")[0] + "."
            parts[part] = parts.get(part, 0) + size
    fitting = [(size, part) for part, size in parts.items() if size <= limit]
    if not fitting:
        return None
    size, part = max(fitting)
    return f"^{re.escape(part)}", size


def subset_problem(named_sizes: Sequence[tuple[str, int]], parameters: str | None, *, algorithms: Sequence[str],
                   top_k: int, max_iterations: int, trace_samples: int = 0,
                   budget_bytes: int | None = None) -> str | None:
    """Why the Hessian over the selected parameters does not fit (None when it does), with a
    suggested `curvature.parameters`."""
    if budget_bytes is None:
        budget_bytes = CURVATURE_VECTOR_BUDGET_BYTES
    n = selected_size(named_sizes, parameters)
    limit = max_subset_parameters(algorithms, top_k, max_iterations, trace_samples, budget_bytes)
    if n <= limit:
        return None
    vectors = peak_vectors(algorithms, top_k, max_iterations, trace_samples)
    what = f"all of the model's {n:,} parameters" if parameters is None else f"the {n:,} parameters '{parameters}' selects"
    message = (f"the Hessian over {what} needs {vectors} vectors of that size "
               f"({vectors * n * CURVATURE_DTYPE_BYTES / 2**30:.1f} GiB in float32) for "
               f"{', '.join(algorithms)} (top_k {top_k}), more than the {budget_bytes / 2**30:g} GiB curvature "
               f"may hold on one GPU: at most {limit:,} parameters. Restrict it with curvature.parameters")
    suggestion = suggest_subset(named_sizes, limit)
    if suggestion is not None:
        regex, size = suggestion
        message += f", e.g. '{regex}' ({size:,} parameters)"
    return message


def model_parameter_sizes(path: str, *, trust_remote_code: bool = False) -> list[tuple[str, int]]:
    """(name, entries) of the causal LM at `path`, from its config alone (`named_parameter_sizes`)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    return list(named_parameter_sizes(config, trust_remote_code=trust_remote_code))


def named_parameter_sizes(config: Any, *, trust_remote_code: bool = False) -> tuple[tuple[str, int], ...]:
    """(name, entries) of the causal LM `config` describes, built on the meta device (no weights
    read), in named_parameters order (tied weights once, as the HVP sees them). Built once per
    distinct config: a 7B model takes seconds to build even without weights, and study run's
    memory and curvature checks both ask."""
    return _named_parameter_sizes(config.to_json_string(use_diff=False), type(config), bool(trust_remote_code))


@functools.lru_cache(maxsize=16)
def _named_parameter_sizes(config_json: str, config_class: type, trust_remote_code: bool) -> tuple[tuple[str, int], ...]:
    import json

    import torch
    from transformers import AutoModelForCausalLM

    config = config_class.from_dict(json.loads(config_json))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return tuple((name, p.numel()) for name, p in model.named_parameters() if p.requires_grad)


def _arpack_kept(ncv: int, top_k: int) -> int:
    """Lanczos vectors ARPACK (dsaup2) keeps at a restart while nothing has converged yet."""
    if top_k == 1:
        return ncv // 2 if ncv >= 6 else (2 if ncv > 2 else 1)
    return top_k


def _arpack_steps(ncv: int, top_k: int, restarts: int) -> int:
    """HVPs ARPACK spends with `restarts` update iterations when it does not converge earlier:
    the start vector, the first ncv-step factorization, then ncv − kept steps per restart."""
    return ncv + 1 + restarts * (ncv - _arpack_kept(ncv, top_k))


def lanczos_steps_budget(max_iterations: int, top_k: int, size: int, ncv: int | None = None) -> tuple[int, int]:
    """(ncv, ARPACK maxiter) so that ARPACK spends at most about `max_iterations` HVPs.

    ARPACK's `maxiter` counts implicit restarts, not HVPs: after the first ncv-step Lanczos
    factorization each restart adds ncv − kept steps. We pick the number of restarts (and,
    for budgets below one restart cycle, a smaller ncv) so that `max_iterations` means HVPs
    for Lanczos as for power iteration. The smallest possible run is k + 3 HVPs.
    """
    if ncv is None:
        ncv = min(size, max(2 * top_k + 1, 20))
        while ncv > top_k + 1 and _arpack_steps(ncv, top_k, 1) > max_iterations:
            ncv -= 1
    ncv = max(top_k + 1, min(ncv, size))
    per_restart = max(1, ncv - _arpack_kept(ncv, top_k))
    restarts = max(1, (max_iterations - ncv - 1) // per_restart)
    return ncv, restarts
