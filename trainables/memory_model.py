"""How much GPU memory (per rank) and host RAM one step of a chain needs, before anything loads.

A step is a stage's training (sft, dpo, ppo, rloo), the reward model an online-RL stage trains
first (`reward`), or the curvature measured after a stage (`curvature`). The model is read
without weights: its config instantiated on the meta device (`model_shape`) gives the exact
parameter counts; the rest is arithmetic on the settings the engine uses today, written out per
tensor so a reader can check each term against the code it models:

- weights: `trainables/models.py` keeps float32 weights for `dtype: auto` (`weights_dtype`) and
  trains under bf16 autocast on a GPU (`bf16_autocast`); `dtype: bfloat16` = 2-byte weights.
- grads and AdamW: one gradient and two states per trainable parameter, in the weights' dtype;
  `adamw_torch` (training_args.py) steps with foreach kernels that allocate one more
  parameter-sized temporary (`torch._foreach_sqrt` of the second moment); a fused AdamW does not.
- precision copies: autocast caches a bf16 cast of every trainable weight for the forward and
  autograd keeps it for the backward (2 bytes per parameter), unless FSDP's mixed-precision
  policy gathers the layers in bf16 (accelerate sets `param_dtype=bf16`), one or two at a time.
- activations: what autograd saves per token in one Llama-style decoder layer (RMSNorm inputs in
  float32, the q/k/v and MLP inputs cast per projection, SDPA's q, k, v and output, the SwiGLU
  intermediates; `layer_activation_bytes`), times layers and the tokens of one micro-batch
  (micro-batch × max_length: batches pad to their longest example, at most max_length), plus
  the logits (float32 log-softmax of the whole vocabulary). With activation checkpointing only
  each layer's input is kept, and one layer is recomputed at a time.
- data parallelism: plain DDP keeps everything on every rank and adds its gradient buckets
  (one more gradient-sized buffer); FSDP (`execution.fsdp`) divides weights, grads, optimizer
  states and the optimizer temporary by the workers.
- extra models, as each stage builds them (trainables/stages/*.py): DPO's frozen reference
  (sharded over the ranks under FSDP, as one unit that each forward gathers whole), none when its
  log-probabilities are precomputed (`dpo.precompute_reference`: the reference is freed before
  the first step); RLOO's reference (sharded like DPO's, `sharded_like_policy`) and reward model
  (whole on every GPU); PPO's reference, reward model and value model (trained with the policy),
  all whole: TRL's PPOTrainer builds its own accelerator, which neither shards nor casts to bf16
  (study validation refuses FSDP with PPO stages). A reward model trained in the study is its
  own step, before the policy loads (chain.trained_reward_model): nothing else is resident while
  it trains.
- trainer construction: before FSDP shards anything, every model of the stage is whole on the
  rank's GPU (`_construction`), a peak of its own for PPO and RLOO.
- curvature (trainables/curvature): the evaluation model stays loaded beside a float32 copy with
  eager attention; `create_graph` Hessian-vector products keep the first-order gradients with
  their graph plus each algorithm's parameter-sized vectors of the measured parameters (the
  counts are trainables.curvature.budget's `peak_vectors`, the ones the measurement itself is
  checked against); forward activations are kept twice (the double backward) with eager
  attention's probabilities; Lanczos runs in torch on the device (its basis is among those vectors).

The peak of a training step is the largest of its phases: forward/backward (activations and
precision copies; gradients appear as activations are freed, so the larger of the two, both
with gradient accumulation), the optimizer step (gradients plus its temporaries) and, for PPO
and RLOO, the rollout (generation's KV cache, then every model's logits over the rollouts;
`_rollout`), on top of what stays resident (weights, optimizer states, extra models, DDP
buckets, the CUDA runtime).

Evaluation (`eval_estimate`, `largest_eval_batch`) is its own arithmetic: one GPU holds the
whole model's weights (no gradients, no optimizer) and, per batch row, the KV cache option
scoring and generation keep (trainables/evaluation/option_scoring.py, generation.py), one
layer's transients at a time (torch.inference_mode saves nothing) and the logits of the scored
or last positions only (`logits_to_keep`); `study run` sizes `training.eval_batch_size` and
`generation.batch_size: auto` of GPU studies with it (trainables/memory_preflight.py).

Micro-batches and activation checkpointing are inputs with today's values as defaults (the
whole per-device batch in one pass, no checkpointing); `study/orchestrate.py` passes the study's
settings and refuses a study whose steps do not fit its GPUs, naming what would
(trainables/memory_fit.py).
Sizes are decimal GB (1e9 bytes), as the study's `execution.gpu_memory_gb`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, fields
from typing import Any

from trainables.curvature.budget import named_parameter_sizes, peak_vectors

GB = 1e9
CUDA_RUNTIME_BYTES = 1.0 * GB
"""CUDA context, cuBLAS/NCCL workspaces: allocated on every GPU outside PyTorch's tensors."""
HOST_PROCESS_BYTES = 3.0 * GB
"""A worker process before any model: Python, torch, transformers, datasets, the examples."""
FOREACH_OPTIMIZERS = ("adamw_torch",)
"""AdamW implementations that step with foreach kernels (one parameter-sized temporary)."""
FUSED_OPTIMIZERS = ("adamw_torch_fused",)
METHODS = ("sft", "dpo", "ppo", "rloo", "reward", "curvature")


# ---------------------------------------------------------------- the model, without weights


@dataclass(frozen=True)
class ModelShape:
    """A model's sizes, counted on the meta device (no weights read)."""

    params: int
    """Parameters of the causal LM (tied embeddings counted once)."""
    classifier_params: int
    """Parameters of its sequence-classification counterpart (num_labels=1): a reward or value model."""
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    layer_params: int
    """Parameters of one decoder layer (what FSDP gathers at a time)."""

    @property
    def kv_width(self) -> int:
        return self.kv_heads * (self.hidden // self.heads)


def _count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def model_shape(config: Any) -> ModelShape:
    """Sizes of the causal LM `config` describes (and of its classifier), built on the meta device
    (once per distinct config: a 7B model takes ~2 s to build even without weights)."""
    return _model_shape(config.to_json_string(use_diff=False), type(config))


@functools.lru_cache(maxsize=16)
def _model_shape(config_json: str, config_class: type) -> ModelShape:
    import copy
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    config = config_class.from_dict(json.loads(config_json))
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(config)
        cls_config = copy.deepcopy(config)
        cls_config.num_labels = 1
        try:
            classifier = _count(AutoModelForSequenceClassification.from_config(cls_config))
        except ValueError:  # no classification counterpart: the backbone plus a scalar head
            classifier = _count(lm) - config.vocab_size * config.hidden_size + config.hidden_size
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = int(text.num_hidden_layers)
    stacks = [m for m in lm.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == layers]
    layer_params = _count(stacks[0][0]) if stacks else (_count(lm) // max(layers, 1))
    heads = int(text.num_attention_heads)
    return ModelShape(params=_count(lm), classifier_params=int(classifier), layers=layers,
                      hidden=int(text.hidden_size), heads=heads,
                      kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
                      intermediate=int(getattr(text, "intermediate_size", 4 * text.hidden_size)),
                      vocab=int(text.vocab_size), layer_params=int(layer_params))


def classifier_shape(config: Any) -> ModelShape:
    """Sizes of a sequence-classification model (a named reward model such as a DeBERTa):
    `params` and `classifier_params` are both its own count."""
    import copy

    import torch
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(config)
    config.num_labels = 1
    with torch.device("meta"):
        count = _count(AutoModelForSequenceClassification.from_config(config))
    heads = int(config.num_attention_heads)
    return ModelShape(params=count, classifier_params=count, layers=int(config.num_hidden_layers),
                      hidden=int(config.hidden_size), heads=heads,
                      kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
                      intermediate=int(getattr(config, "intermediate_size", 4 * config.hidden_size)),
                      vocab=int(config.vocab_size), layer_params=0)


def parameter_count(config: Any, regex: str | None) -> int:
    """Parameters of the causal LM whose names match `regex` (curvature.parameters; None = all)."""
    pattern = re.compile(regex) if regex is not None else None
    return sum(n for name, n in named_parameter_sizes(config) if pattern is None or pattern.search(name))


def load_config(name_or_path: str, *, trust_remote_code: bool = False, local_files_only: bool = False) -> Any:
    """A model's config (config.json only, never weights). 'tiny' is the built-in architecture.
    OSError when it cannot be read (e.g. `local_files_only` and not in the Hugging Face cache)."""
    from transformers import AutoConfig, LlamaConfig

    if name_or_path == "tiny":
        from trainables.tiny_model import TINY_ARCH, TINY_VOCAB_SIZE

        return LlamaConfig(vocab_size=TINY_VOCAB_SIZE, **TINY_ARCH)
    return AutoConfig.from_pretrained(name_or_path, trust_remote_code=bool(trust_remote_code),
                                      local_files_only=local_files_only)


# ---------------------------------------------------------------- a step's settings


@dataclass(frozen=True)
class StepSetup:
    """What one step runs with. Defaults are the engine's settings today."""

    method: str
    seq_len: int
    """Padded sequence length (model.max_length: a batch pads to its longest example)."""
    batch_size: int = 16
    """The global batch (a stage's, or a trained reward model's)."""
    workers: int = 1
    micro_batch_size: int | None = None
    """Sequences per device per forward pass; None = the whole per-device batch (batch_size / workers)."""
    fsdp: bool = False
    activation_checkpointing: bool = False
    optimizer: str = "adamw_torch"
    dtype: str = "auto"
    """model.dtype: 'auto' and 'float32' keep float32 weights, 'bfloat16' two-byte weights."""
    on_gpu: bool = True
    reward: ModelShape | None = None
    """ppo/rloo: the reward model's shape (None = one trained in the study from the base model)."""
    rollout_tokens: int = 16
    """ppo/rloo: tokens generated per rollout (the stage's response_length)."""
    dpo_precompute: bool = False
    """dpo: the reference's log-probabilities precomputed, the reference freed before training."""
    curvature_params: int | None = None
    """curvature: parameters measured (curvature.parameters); None = all."""
    curvature_batch_size: int = 16
    curvature_algorithms: tuple[str, ...] = ("power_iteration",)
    curvature_top_k: int = 1
    curvature_max_iterations: int = 100
    curvature_trace_samples: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown step {self.method!r} (expected one of {', '.join(METHODS)})")

    @property
    def per_device_batch(self) -> int:
        return max(1, self.batch_size // self.workers)

    @property
    def micro(self) -> int:
        return min(self.micro_batch_size or self.per_device_batch, self.per_device_batch)

    @property
    def accumulation(self) -> int:
        return -(-self.per_device_batch // self.micro)

    @property
    def weight_bytes(self) -> int:
        return 2 if self.dtype == "bfloat16" else 4

    @property
    def autocast(self) -> bool:
        """bf16 autocast: trainables.models.bf16_autocast on a bf16 GPU (the workers' GPUs are
        assumed to support bf16: A100, H100 and later). Not PPO: TRL's PPOTrainer builds its own
        accelerator, which takes its mixed precision from the environment only (`accelerate
        launch`), not from the training arguments, so PPO trains in the weights' dtype."""
        return self.on_gpu and self.dtype != "float32" and self.method != "ppo"

    @property
    def shards(self) -> int:
        """Ranks the trained model is sharded over: the workers under FSDP; never for PPO (its own
        accelerator does not shard; study validation refuses FSDP with PPO stages)."""
        return self.workers if self.fsdp and self.workers > 1 and self.method != "ppo" else 1


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes per rank, by part: each part is its own size, and `total` is the peak, what stays
    resident (weights, optimizer, extra models, DDP buckets, runtime) plus the larger phase
    (activations with precision copies and gradients, or gradients with the optimizer's
    temporary); `host_ram`: the rank's process at its peak."""

    weights: float
    grads: float
    optimizer: float
    activations: float
    precision_copies: float
    extra_models: float
    temporaries: float
    runtime: float
    total: float
    host_ram: float
    peak_phase: str
    """'forward/backward', 'optimizer step', 'rollout' or 'trainer construction': which phase
    sets `total`."""
    rollout: float = 0.0
    """ppo/rloo: what a rollout adds to the resident parts (`_rollout`)."""

    def fits(self, budget_bytes: float) -> bool:
        return self.total <= budget_bytes

    def render(self) -> str:
        parts = [f"{f.name.replace('_', ' ')} {format_gb(getattr(self, f.name))}" for f in fields(self)
                 if f.name not in ("total", "host_ram", "peak_phase") and getattr(self, f.name) > 0]
        return (f"{format_gb(self.total)} GB per GPU, peak at the {self.peak_phase} (of {', '.join(parts)} GB); "
                f"host RAM {format_gb(self.host_ram)} GB per worker")


def format_gb(size: float) -> str:
    return f"{size / GB:.1f}" if size >= 0.1 * GB else f"{size / GB:.2g}"


# ---------------------------------------------------------------- per-token activations


def layer_activation_bytes(shape: ModelShape, *, weight_bytes: int = 4, autocast: bool = True,
                           eager_attention_len: int = 0) -> int:
    """Bytes autograd saves per token in one decoder layer (Llama-style: RMSNorm, q/k/v/o
    projections with rotary embeddings, SDPA, SwiGLU MLP).

    c = bytes of the matmuls' inputs and outputs (2 under bf16 autocast or bf16 weights, else 4);
    r = bytes of the residual stream (the weights' dtype). Each RMSNorm keeps its float32 input
    and its normalised output (4h + r·h). Under autocast every projection casts its input anew
    (q, k, v: 3·c·h; gate, up: 2·c·h), without it one input is shared (c·h each). SDPA keeps q, k,
    v and its output (c·(2h + 2kv)); o_proj its contiguous input (c·h); SwiGLU the gate output,
    its SiLU, the up output and their product (4·c·i). Eager attention adds the float32 softmax
    and its cast per head and key position ((4 + c)·heads·len).
    """
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_width
    c = 2 if (autocast or weight_bytes == 2) else 4
    r = weight_bytes
    norms = 2 * (4 * h + r * h)
    projection_inputs = (3 * c * h + 2 * c * h) if autocast else 2 * c * h
    attention = c * (2 * h + 2 * kv) + c * h
    mlp = 4 * c * i
    eager = (4 + c) * shape.heads * eager_attention_len
    return norms + projection_inputs + attention + mlp + eager


def head_activation_bytes(shape: ModelShape, *, weight_bytes: int = 4, autocast: bool = True) -> tuple[int, int]:
    """(saved, transient) bytes per token of the LM head and its loss: the final norm's tensors
    and the head's input are saved with the float32 log-softmax (4V); while the loss is formed the
    logits (c·V), their float32 copy (4V) and its gradient (4V) are alive too."""
    h, v = shape.hidden, shape.vocab
    c = 2 if (autocast or weight_bytes == 2) else 4
    saved = (4 * h + weight_bytes * h) + c * h + 4 * v
    return saved, (c + 8) * v


def layer_inference_bytes(shape: ModelShape, *, weight_bytes: int = 4, compute_bytes: int = 2) -> int:
    """Bytes per token alive while one decoder layer runs without autograd (torch.inference_mode:
    nothing is saved, each layer's tensors are freed before the next layer runs), the largest of
    its three phases (Llama-style layer, transformers' LlamaDecoderLayer):

    - RMSNorm: the residual stream (r·h), its float32 copy and normalised float32 product (8h)
      and the normalised output (r·h);
    - attention: the residual and the normalised input (2·r·h), autocast's cast of that input
      for a projection (c·h), q, k, v (c·(h + 2kv)), rotary's new q and k (c·(h + kv)) and SDPA's
      output (c·h); k and v themselves stay in the KV cache (`kv_cache_token_bytes`);
    - MLP: the residual and the normalised input (2·r·h), the input's cast (c·h), and while
      `down_proj(act(gate_proj(x)) * up_proj(x))` forms its product: act(gate), up and the
      product (3·c·i).

    r = the weights' bytes (the residual stream stays in the weights' dtype under autocast), c =
    compute bytes (EvalSetup.compute_bytes)."""
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_width
    r, c = weight_bytes, compute_bytes
    norm = r * h + 8 * h + r * h
    attention = 2 * r * h + c * h + c * (h + 2 * kv) + c * (h + kv) + c * h
    mlp = 2 * r * h + c * h + 3 * c * i
    return max(norm, attention, mlp)

def kv_cache_token_bytes(shape: ModelShape, *, compute_bytes: int = 2) -> int:
    """Bytes of one token in transformers' DynamicCache: a key and a value of kv_width per layer,
    in the projections' output dtype."""
    return shape.layers * 2 * shape.kv_width * compute_bytes

def attention_mask_bytes(queries: int, keys: int, *, compute_bytes: int = 2) -> int:
    """Bytes per row of the 4-D mask of a padded batch: transformers builds a bool
    [batch, 1, queries, keys] mask for SDPA, and SDPA turns it into an additive mask in the
    compute dtype (alive while one layer's attention runs)."""
    return (1 + compute_bytes) * queries * keys


# ---------------------------------------------------------------- the estimate


def _trainable_params(shape: ModelShape, setup: StepSetup) -> int:
    if setup.method == "reward":
        return shape.classifier_params
    if setup.method == "ppo":  # policy + value model, trained together
        return shape.params + _value_params(shape, setup)
    return shape.params


def _value_params(shape: ModelShape, setup: StepSetup) -> int:
    """PPO's critic: a copy of a reward model trained in the study (the policy's classifier
    shape), or the policy's backbone under a new head (a named reward model): the same count."""
    return shape.classifier_params


def _reward_params(shape: ModelShape, setup: StepSetup) -> int:
    return setup.reward.params if setup.reward is not None else shape.classifier_params


def _extra_models(shape: ModelShape, setup: StepSetup) -> float:
    """Frozen models resident beside the trained one (bytes per rank)."""
    wb, n = setup.weight_bytes, setup.shards
    if setup.method == "dpo":  # the reference, sharded like the policy (TRL prepare_fsdp), or freed
        return 0.0 if setup.dpo_precompute else shape.params * wb / n
    if setup.method in ("ppo", "rloo"):  # the reference sharded like the policy, the reward model whole
        return shape.params * wb / n + _reward_params(shape, setup) * wb
    return 0.0  # sft; a reward model trains before the policy loads (chain.trained_reward_model)


def _activations(shape: ModelShape, setup: StepSetup) -> float:
    """Activation bytes of one micro-batch on one rank (saved plus the loss's transient)."""
    wb, ac = setup.weight_bytes, setup.autocast
    per_layer = layer_activation_bytes(shape, weight_bytes=wb, autocast=ac)
    saved_head, transient_head = head_activation_bytes(shape, weight_bytes=wb, autocast=ac)
    sequences = setup.micro * (2 if setup.method in ("dpo", "reward") else 1)  # chosen + rejected
    tokens = sequences * setup.seq_len
    if setup.activation_checkpointing:  # each layer's input, one layer recomputed at a time
        stack = shape.layers * wb * shape.hidden + per_layer
    else:
        stack = shape.layers * per_layer
    if setup.method == "reward":  # a scalar head: no vocabulary-sized logits
        return tokens * stack
    models = 2 if setup.method == "ppo" else 1  # PPO runs the value model on the same tokens
    return tokens * (models * stack + saved_head + transient_head)


def _precision_copies(shape: ModelShape, setup: StepSetup, trainable: int) -> float:
    """bf16 casts of the trained weights (autocast), or FSDP's gathered layers and their
    unsharded gradients (in bf16 under autocast: accelerate's MixedPrecisionPolicy)."""
    gathered_bytes = 2 if setup.autocast else setup.weight_bytes
    if setup.shards > 1:
        # Decoder layers are the FSDP units; the root's parameters (embeddings, final norm, head)
        # stay gathered all step.
        root = trainable - shape.layers * shape.layer_params
        policy = (2 * shape.layer_params + root) * gathered_bytes + shape.layer_params * gathered_bytes
        # A reference sharded by TRL's prepare_fsdp is one FSDP unit (its root only): each of its
        # forwards gathers it whole, in the compute dtype (DPO without precompute, RLOO).
        whole_reference = setup.method == "rloo" or (setup.method == "dpo" and not setup.dpo_precompute)
        return policy + (shape.params * gathered_bytes if whole_reference else 0.0)
    return 2 * trainable if setup.autocast and setup.weight_bytes == 4 else 0.0


def _construction(shape: ModelShape, setup: StepSetup) -> float:
    """Bytes on a rank while a stage's trainer is built, before FSDP shards anything and before an
    optimizer exists: every model the stage holds, whole, in the weights' dtype. The policy is
    loaded whole onto the rank's GPU (trainables.models); DPO's reference is loaded or copied
    beside it (counted even when precomputed: a 'base' reference is loaded for the precompute);
    RLOO's reference copy and reward model; PPO's reference copy, value model and reward model."""
    models = {
        "sft": shape.params,
        "reward": shape.classifier_params,
        "dpo": 2 * shape.params,
        "rloo": 2 * shape.params + _reward_params(shape, setup),
        "ppo": 2 * shape.params + _value_params(shape, setup) + _reward_params(shape, setup),
    }[setup.method]
    return models * setup.weight_bytes


def _host_ram(shape: ModelShape, setup: StepSetup, device_total: float) -> float:
    """A worker's host RAM at its peak: every rank reads the whole model to the host before
    moving it to its GPU (no cpu_ram_efficient_loading); FSDP's consolidation gathers the full
    state dict on rank 0's host. On CPU the device memory is host memory too."""
    load = shape.params * setup.weight_bytes
    if setup.method == "curvature":
        load = shape.params * 4
    peaks = [load]
    if setup.shards > 1:
        peaks.append(shape.params * setup.weight_bytes)
    return HOST_PROCESS_BYTES + max(peaks) + (0.0 if setup.on_gpu else device_total)


def _curvature(shape: ModelShape, setup: StepSetup) -> MemoryBreakdown:
    """Curvature after a stage: the evaluation model (the study's dtype) stays loaded; the
    measured copy is float32 with eager attention; HVPs keep the algorithms' peak count of vectors
    of the measured parameters (curvature.budget.peak_vectors) and the forward's activations
    twice (graph of the first backward)."""
    measured = setup.curvature_params or shape.params
    weights = shape.params * 4.0
    extra = shape.params * setup.weight_bytes
    vectors = peak_vectors(setup.curvature_algorithms, setup.curvature_top_k, setup.curvature_max_iterations,
                           setup.curvature_trace_samples) * measured * 4.0
    per_layer = layer_activation_bytes(shape, weight_bytes=4, autocast=False, eager_attention_len=setup.seq_len)
    activations = 2.0 * setup.curvature_batch_size * setup.seq_len * shape.layers * per_layer
    runtime = CUDA_RUNTIME_BYTES if setup.on_gpu else 0.0
    total = weights + extra + vectors + activations + runtime
    return MemoryBreakdown(weights=weights, grads=0.0, optimizer=0.0, activations=activations, precision_copies=0.0,
                           extra_models=extra, temporaries=vectors, runtime=runtime, total=total,
                           host_ram=_host_ram(shape, setup, total), peak_phase="Hessian-vector products")


def _rollout(shape: ModelShape, setup: StepSetup) -> float:
    """ppo/rloo: bytes of one rollout on one rank, outside autograd. The policy generates the
    per-device batch's responses (TRL: PPO's `local_rollout_forward_batch_size`, RLOO's
    generation batch): its KV cache over prompt + response (at most seq_len tokens) and one layer's
    prefill transients (`layer_inference_bytes`); then each model scores the whole sequences in
    one no-grad forward: the logits of every position in the compute dtype and their float32
    log-softmax. PPO keeps the generated tokens' float32 scores (`logitss`, response × vocab)
    through that pass. Gradients are freed by then (zero_grad sets them to None)."""
    c = 2 if (setup.autocast or setup.weight_bytes == 2) else 4
    batch, tokens = setup.per_device_batch, setup.seq_len
    generation = batch * tokens * (kv_cache_token_bytes(shape, compute_bytes=c)
                                   + layer_inference_bytes(shape, weight_bytes=setup.weight_bytes, compute_bytes=c))
    scoring = batch * tokens * shape.vocab * (c + 4)
    kept_scores = batch * setup.rollout_tokens * shape.vocab * 4 if setup.method == "ppo" else 0
    return kept_scores + max(generation, scoring)


def estimate(shape: ModelShape, setup: StepSetup) -> MemoryBreakdown:
    """Per-rank memory of one step (see the module docstring for every term)."""
    if setup.method == "curvature":
        return _curvature(shape, setup)
    n, wb = setup.shards, setup.weight_bytes
    trainable = _trainable_params(shape, setup)
    weights = trainable * wb / n
    grads = trainable * wb / n
    optimizer = 2 * trainable * wb / n
    step_temporary = trainable * wb / n if setup.optimizer in FOREACH_OPTIMIZERS else 0.0
    ddp_buckets = trainable * wb if setup.workers > 1 and n == 1 else 0.0
    activations = _activations(shape, setup)
    copies = _precision_copies(shape, setup, trainable)
    extra = _extra_models(shape, setup)
    runtime = CUDA_RUNTIME_BYTES if setup.on_gpu else 0.0
    moving = activations + copies
    backward = grads + moving if setup.accumulation > 1 else max(grads, moving)
    optimizer_step = grads + step_temporary
    rollout = _rollout(shape, setup) if setup.method in ("ppo", "rloo") else 0.0
    resident = weights + optimizer + extra + ddp_buckets + runtime
    phases = {"forward/backward": backward, "optimizer step": optimizer_step, "rollout": rollout}
    phase = max(phases, key=phases.__getitem__)  # ties: the first (dicts keep their order)
    total = resident + phases[phase]
    construction = _construction(shape, setup) + runtime
    if construction > total:
        phase, total = "trainer construction", construction
    return MemoryBreakdown(weights=weights, grads=grads, optimizer=optimizer, activations=activations,
                           precision_copies=copies, extra_models=extra, temporaries=step_temporary + ddp_buckets,
                           runtime=runtime, total=total, host_ram=_host_ram(shape, setup, total), peak_phase=phase,
                           rollout=rollout)
