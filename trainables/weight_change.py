"""Squared L2 distance between two checkpoints, streamed tensor by tensor from safetensors.

‖θ_a − θ_b‖² is summed in float64 one tensor at a time, so memory stays at two tensors, never
two models (Appendix A.4 of the paper reports ‖θ_A − θ_base‖² and ‖θ_AB − θ_A‖²). The raw sum is
returned with the parameter count; analysis.weight_norms derives the per-parameter normalisations.
"""

from __future__ import annotations

from pathlib import Path


def safetensors_index(model_path: str | Path) -> dict[str, Path]:
    """Tensor name → file, for a local checkpoint folder or a Hub id (its cached snapshot)."""
    folder = Path(model_path)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(str(model_path), allow_patterns=["*.safetensors", "*.json"]))
    from safetensors import safe_open

    index: dict[str, Path] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                index[name] = file
    if not index:
        raise FileNotFoundError(f"no .safetensors weights in {folder}")
    return index


def squared_distance(path_a: str | Path, path_b: str | Path) -> tuple[float, int]:
    """(‖θ_a − θ_b‖², number of parameters compared). Both must hold the same tensor names."""
    import torch
    from safetensors import safe_open

    index_a, index_b = safetensors_index(path_a), safetensors_index(path_b)
    if set(index_a) != set(index_b):
        only_a = sorted(set(index_a) - set(index_b))[:5]
        only_b = sorted(set(index_b) - set(index_a))[:5]
        raise ValueError(f"checkpoints hold different tensors: only in {path_a}: {only_a}; only in {path_b}: {only_b}")
    total, count = 0.0, 0
    handles: dict[Path, object] = {}
    try:
        for name in sorted(index_a):
            for file in (index_a[name], index_b[name]):
                if file not in handles:
                    handles[file] = safe_open(str(file), framework="pt").__enter__()
            a = handles[index_a[name]].get_tensor(name).to(torch.float64)
            b = handles[index_b[name]].get_tensor(name).to(torch.float64)
            if a.shape != b.shape:
                raise ValueError(f"tensor {name} has shape {tuple(a.shape)} in {path_a} but {tuple(b.shape)} in {path_b}")
            total += float(torch.sum((a - b) ** 2))
            count += a.numel()
    finally:
        for handle in handles.values():
            handle.__exit__(None, None, None)
    return total, count
