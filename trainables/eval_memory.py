"""How much GPU memory evaluating a model needs: option scoring and greedy generation.

The evaluation counterpart of trainables/memory_model.py (same model shapes read without
weights, same per-token arithmetic: `layer_inference_bytes`, `kv_cache_token_bytes`,
`attention_mask_bytes`), written out per tensor as the evaluators hold them
(trainables/evaluation/option_scoring.py, generation.py): the weights in the study's dtype, one
weight's precision cast at a time, the KV cache of the batch, one layer's transients and the
kept positions' logits. `largest_eval_batch` picks the batch `training.eval_batch_size: auto`
and `generation.batch_size: auto` resolve to (trainables/memory_preflight.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from trainables.memory_model import (CUDA_RUNTIME_BYTES, GB, ModelShape, attention_mask_bytes, format_gb,
                                     kv_cache_token_bytes, layer_inference_bytes)

EVAL_BATCH_CAP = 256
"""The largest evaluation batch `largest_eval_batch` picks. The estimate holds every row at
model.max_length, but evaluation batches are length-sorted and pad only to their own longest row,
so real batches of short QA items (~100-300 tokens) use a fraction of it; 256 rows of ~200 tokens
(~50k tokens per forward) already fill an H100's matmuls, and larger batches would only add
padding at the long end of the sort and delay the first failure of a misjudged budget."""
EVAL_KINDS = ("scoring", "generation")


@dataclass(frozen=True)
class EvalSetup:
    """What an evaluation runs with: the study's model.max_length, model.dtype and resolved
    evaluation.precision (study.spec.eval_precision). Evaluation runs the whole model on each GPU
    that evaluates, whatever the trial's FSDP (every rank loads the checkpoint whole and scores
    its share of the batches: trainables/evaluation/over_ranks.py)."""

    seq_len: int
    """model.max_length: option scoring cuts a row to max_length tokens (+1 scored), generation
    cuts the prompt to max_length - max_new_tokens, so a row never holds more."""
    dtype: str = "auto"
    precision: str = "bfloat16"
    """'bfloat16' = bf16 autocast (trainables/evaluation/precision.py), 'float32' = none."""
    answer_tokens: int = 32
    """Scoring: tokens scored per option row (the answer after the prefix, `logits_to_keep`). The
    built-in tasks' answers (" A.", " not toxic.") are under 6 tokens; 32 leaves room for a task
    file's answer sentences. At 7B the KV cache of a 2,048-token row (1 GB) dwarfs this term."""
    max_new_tokens: int = 32
    """Generation: tokens generated per prompt (generation.max_new_tokens, answer_max_new_tokens)."""
    on_gpu: bool = True

    @property
    def weight_bytes(self) -> int:
        return 2 if self.dtype == "bfloat16" else 4

    @property
    def compute_bytes(self) -> int:
        """Bytes of the matmuls' outputs (q, k, v, the KV cache, MLP, logits): 2 under bf16
        autocast or with bf16 weights, else 4."""
        return 2 if (self.precision == "bfloat16" or self.weight_bytes == 2) else 4


@dataclass(frozen=True)
class EvalBreakdown:
    """Bytes on the evaluating GPU for one batch, by part; `total` = weights + the largest weight
    cast + KV cache + runtime + the larger phase's transients (`phase`)."""

    batch: int
    weights: float
    weight_cast: float
    kv_cache: float
    activations: float
    logits: float
    runtime: float
    total: float
    phase: str

    def fits(self, budget_bytes: float) -> bool:
        return self.total <= budget_bytes

    def render(self) -> str:
        parts = [f"{name.replace('_', ' ')} {format_gb(getattr(self, name))}"
                 for name in ("weights", "weight_cast", "kv_cache", "activations", "logits", "runtime")
                 if getattr(self, name) > 0]
        return f"{format_gb(self.total)} GB at batch {self.batch}, peak at the {self.phase} (of {', '.join(parts)} GB)"








def eval_estimate(shape: ModelShape, setup: EvalSetup, batch: int, kind: str = "scoring") -> EvalBreakdown:
    """GPU bytes of evaluating `batch` rows at setup.seq_len tokens each (an upper bound: batches
    are length-sorted and pad to their own longest row).

    Resident: the weights in model.dtype (no gradients, no optimizer); under bf16 autocast one
    weight's bf16 cast at a time (inference_mode disables autocast's weight-cast cache, so each
    projection casts its weight anew and frees it: the largest is the LM head, V·h·2; with
    bf16 weights or float32 scoring there is none); the CUDA runtime.

    kind 'scoring' (trainables/evaluation/option_scoring.py, the shared-context path every
    Hugging Face causal LM takes): the heads of at most `batch` rows run once with
    use_cache=True and logits_to_keep=1 (prefill phase: one layer's transients for
    batch × seq_len tokens, the padded batch's mask, the last position's logits in c bytes, their
    float32 copy and log-softmax: c + 8 bytes per vocabulary entry); then the cache is copied per
    option row (`reorder_cache`, one layer's old copy alive) and one pass over the answer tokens
    keeps their logits (tail phase: batch × answer_tokens × V × (c + 8)). The cache holds
    batch × (seq_len + answer_tokens) tokens. The full-sequence fallback keeps no cache and the
    same logits, so it needs less.

    kind 'generation' (trainables/evaluation/generation.py, `model.generate`, greedy): the prompt
    is cut so prompt + max_new_tokens ≤ seq_len; prefill as above with generate's last-position
    logits (c bytes and a float32 copy: c + 4); every decoding step adds one token per row to the
    cache, whose `torch.cat` keeps one layer's old and new copy at once (decode phase). The
    cache holds batch × seq_len tokens."""
    if kind not in EVAL_KINDS:
        raise ValueError(f"unknown evaluation kind {kind!r} (expected one of {', '.join(EVAL_KINDS)})")
    c, wb, v, length = setup.compute_bytes, setup.weight_bytes, shape.vocab, setup.seq_len
    weights = shape.params * wb
    cast = 2 * max(v, shape.intermediate) * shape.hidden if (setup.precision == "bfloat16" and wb == 4) else 0
    runtime = CUDA_RUNTIME_BYTES if setup.on_gpu else 0.0
    token_kv = kv_cache_token_bytes(shape, compute_bytes=c)
    layer_kv = token_kv // max(shape.layers, 1)  # one layer's keys and values per token
    per_token = layer_inference_bytes(shape, weight_bytes=wb, compute_bytes=c)
    if kind == "scoring":
        tail = setup.answer_tokens
        cache = batch * (length + tail) * token_kv
        prefill_act = batch * (length * per_token + attention_mask_bytes(length, length, compute_bytes=c))
        prefill_logits = batch * v * (c + 8)
        tail_act = batch * (tail * per_token + attention_mask_bytes(tail, length + tail, compute_bytes=c)
                            + length * layer_kv)
        tail_logits = batch * tail * v * (c + 8)
        phases = {"prefill": (prefill_act, prefill_logits), "answer pass": (tail_act, tail_logits)}
    else:
        prompt = max(1, length - setup.max_new_tokens)
        cache = batch * length * token_kv
        prefill_act = batch * (prompt * per_token + attention_mask_bytes(prompt, prompt, compute_bytes=c))
        decode_act = batch * (per_token + attention_mask_bytes(1, length, compute_bytes=c) + 2 * length * layer_kv)
        logits = batch * v * (c + 4)
        phases = {"prefill": (prefill_act, logits), "decoding": (decode_act, logits)}
    phase = max(phases, key=lambda name: sum(phases[name]))
    activations, logits = phases[phase]
    total = weights + cast + runtime + cache + activations + logits
    return EvalBreakdown(batch=batch, weights=weights, weight_cast=cast, kv_cache=cache, activations=activations,
                         logits=logits, runtime=runtime, total=total, phase=f"{kind} {phase}")


def largest_eval_batch(shape: ModelShape, setup: EvalSetup, budget: float, kind: str = "scoring") -> int | None:
    """The largest power of two up to EVAL_BATCH_CAP whose `eval_estimate` fits `budget` bytes
    (None when not even one row fits). Powers of two: the batch enters the measure keys (and
    the stage keys, through the training settings), so it should not move with every small
    change of a budget; a power of two moves only when the memory halves or doubles."""
    best, batch = None, 1
    while batch <= EVAL_BATCH_CAP and eval_estimate(shape, setup, batch, kind).fits(budget):
        best, batch = batch, batch * 2
    return best
