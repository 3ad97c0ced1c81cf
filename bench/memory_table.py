"""The GPU table of docs/paper-experiments.md: what each paper-* preset needs per GPU, from the memory model.

    python bench/memory_table.py            # prints the Markdown table (a few seconds, CPU only)

For each `paper-*` preset at its own settings (Llama-2-7B, the preset's max_length, batch sizes
including its grid), every step its trials run is estimated by trainables/memory_preflight.py
(the check `study run` and `study validate` make) with the published configs built on the meta
device instead of downloaded ones: Llama-2-7B (meta-llama/Llama-2-7b-hf: hidden 4096, 32 layers,
32 heads, intermediate 11008, vocabulary 32000) and the paper's reward model
OpenAssistant/reward-model-deberta-v3-large-v2 (DeBERTa-v3-large). Columns: the largest
training step on one GPU, and the fewest FSDP workers (one GPU each) at which every training
step fits 80 GB and 141 GB GPUs with the engine's defaults (`execution.fsdp` and
`training.activation_checkpointing` left at `auto`: FSDP, then activation checkpointing, when a
step does not fit; never checkpointing for PPO), and on 80 GB GPUs without checkpointing;
curvature (paper-curvature) is reported on its own line.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LLAMA2_7B = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                 intermediate_size=11008, vocab_size=32000, max_position_embeddings=4096, tie_word_embeddings=False)
DEBERTA_V3_LARGE = dict(vocab_size=128100, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                        intermediate_size=4096, max_position_embeddings=512, type_vocab_size=0,
                        relative_attention=True, position_buckets=256, norm_rel_ebd="layer_norm",
                        share_att_key=True, pos_att_type=["p2c", "c2p"], position_biased_input=False)
WORKERS = (1, 2, 4, 8, 16)
GPU_SIZES = (80, 141)


def published_config(name: str):
    from transformers import DebertaV2Config, LlamaConfig

    if name == "meta-llama/Llama-2-7b-hf":
        return LlamaConfig(**LLAMA2_7B)
    if name == "OpenAssistant/reward-model-deberta-v3-large-v2":
        return DebertaV2Config(**DEBERTA_V3_LARGE)
    raise KeyError(f"no published config for {name!r} here")


def with_execution(path, *, workers: int, gpu_gb: float, curvature: bool, checkpointing: str = "false"):
    """The preset as `study validate` loads it with these --set values (its checks included:
    e.g. every batch size of a grid must split over the workers); None when they refuse it.
    FSDP is on for several workers ('auto' would turn it on exactly when a step needs it, which
    does not change which worker counts fit); `checkpointing`: 'auto' (the default) or 'false'."""
    from study.spec_loading import SpecError, load_spec_file

    sets = [f"execution.workers_per_trial={workers}", f"execution.gpus_per_trial={workers}",
            f"execution.fsdp={'true' if workers > 1 else 'false'}", f"execution.gpu_memory_gb={gpu_gb}",
            f"curvature.enabled={'true' if curvature else 'false'}",
            f"training.activation_checkpointing={checkpointing}"]
    try:
        return load_spec_file(path, sets)
    except SpecError:
        return None


def fewest_workers(path, gpu_gb: float, *, curvature: bool = False, checkpointing: str = "auto") -> int | None:
    from trainables.memory_preflight import memory_preflight

    for workers in WORKERS:
        candidate = with_execution(path, workers=workers, gpu_gb=gpu_gb, curvature=curvature,
                                   checkpointing=checkpointing)
        if candidate is not None and not memory_preflight(candidate, read_config=published_config).problems:
            return workers
    return None


def largest_step(path):
    from trainables.memory_model import estimate
    from trainables.memory_preflight import study_steps

    one = with_execution(path, workers=1, gpu_gb=80, curvature=False)
    steps = study_steps(one, read_config=published_config)
    return max(((path, setup, estimate(shape, setup)) for path, shape, setup in steps), key=lambda s: s[2].total)


def rows() -> list[str]:
    from study.presets import preset_paths
    from study.spec_loading import load_spec_file
    from trainables.memory_model import GB

    def fit(n):
        return "1 GPU" if n == 1 else (f"FSDP × {n}" if n else "none ≤ 16")

    out = ["| preset | max_length | largest step (1 GPU) | per GPU | fits 80 GB | fits 141 GB | "
           "80 GB without checkpointing |",
           "|---|---|---|---|---|---|---|"]
    for name, path in preset_paths().items():
        if not name.startswith("paper-"):
            continue
        spec = load_spec_file(path)
        step_path, setup, breakdown = largest_step(path)
        fits = [fit(fewest_workers(path, gb)) for gb in GPU_SIZES]
        fits.append(fit(fewest_workers(path, 80, checkpointing="false")))
        out.append(f"| `{name}` | {spec.model.max_length} | {setup.method} ({step_path}, batch {setup.batch_size}) | "
                   f"{breakdown.total / GB:.0f} GB | {' | '.join(fits)} |")
        if spec.curvature.enabled:
            fits = [fit(fewest_workers(path, gb, curvature=True)) for gb in GPU_SIZES]
            fits.append(fit(fewest_workers(path, 80, curvature=True, checkpointing="false")))
            out.append(f"| `{name}` with curvature | {spec.model.max_length} | curvature (after stage "
                       f"{', '.join(map(str, spec.curvature.stages))}) | {_curvature_gb(path):.0f} GB | "
                       f"{' | '.join(fits)} |")
    return out


def _curvature_gb(path) -> float:
    from trainables.memory_model import GB, estimate
    from trainables.memory_preflight import study_steps

    one = with_execution(path, workers=1, gpu_gb=80, curvature=True)
    return next(estimate(shape, setup).total for path, shape, setup in study_steps(one, read_config=published_config)
                if path == "curvature") / GB


if __name__ == "__main__":
    print("\n".join(rows()))
