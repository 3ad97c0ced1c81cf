"""The Hessian of a causal LM's SFT loss on a fixed sample of training examples.

The loss is the one SFT trains (trainables/stages/sft.py through TRL's SFTTrainer with
completion_only_loss): each example is its training sequence from the tokenization seam
(trainables.tokenization: prompt + completion + EOS, or the chat template's conversation), the
tokens before `loss_start` carry no loss, and the loss is the mean cross-entropy over all
completion tokens of the sample (token-weighted, as `model(**batch).loss` on a TRL batch).

Layout, for memory: rows are left-padded with explicit position ids, so every row's completion
sits in the last columns and the model computes logits only for those (`logits_to_keep`), not
batch × sequence × vocabulary; the value is the same as with TRL's right padding (tested).
With several batches (more examples than batch_size) each batch's summed loss is divided by
(all completion tokens / number of batches), so HessianOperator's average over batches is the
Hessian of the same token-weighted mean over the whole sample.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

from trainables.tokenization import IGNORE_INDEX, as_encoder


def sft_batches(tokenizer: Any, examples: Sequence[Any], *, max_length: int, batch_size: int) -> list[dict]:
    """Left-padded batches (input_ids, attention_mask, position_ids, labels, loss_normalizer).

    Examples longer than max_length tokens are dropped, as SFT drops them (fitting_examples).
    `tokenizer`: an AnswerEncoder (or a tokenizer: plain text).
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
    encoder = as_encoder(tokenizer)
    tokenizer = encoder.tokenizer
    encoded = [(list(enc.ids), enc.loss_start) for enc in encoder.training(examples)]
    kept = [(ids, n_prompt) for ids, n_prompt in encoded if len(ids) <= max_length]
    if not kept:
        raise ValueError(f"no example fits in max_length={max_length} tokens")
    if len(kept) < len(encoded):
        warnings.warn(f"curvature: dropped {len(encoded) - len(kept)} of {len(encoded)} examples longer than "
                      f"max_length={max_length} tokens (as SFT does)", stacklevel=2)
    kept.sort(key=lambda item: len(item[0]))  # less padding; the loss does not depend on the order
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    chunks = [kept[i : i + batch_size] for i in range(0, len(kept), batch_size)]
    batches = []
    for chunk in chunks:
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        for row, (ids, n_prompt) in enumerate(chunk):
            offset = width - len(ids)
            input_ids[row, offset:] = torch.tensor(ids)
            attention[row, offset:] = 1
            # A row's first token is never predicted (the shift drops it), as with right padding.
            first_loss = offset + max(n_prompt, 1)
            labels[row, first_loss:] = input_ids[row, first_loss:]
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        batches.append({"input_ids": input_ids, "attention_mask": attention, "position_ids": positions,
                        "labels": labels})
    total_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
    if total_tokens == 0:
        raise ValueError("the examples have no completion tokens to put a loss on")
    for b in batches:
        b["loss_normalizer"] = torch.tensor(total_tokens / len(batches), dtype=torch.float64)
    return batches


def lm_loss_fn(model: Any, batch: dict) -> Any:
    """Masked causal-LM loss of one batch: Σ CE over tokens whose label ≠ -100 / normalizer.

    `batch`: input_ids, attention_mask, labels (−100 on prompt and padding, unshifted as in
    transformers), optional position_ids and loss_normalizer (default: the batch's number of
    loss tokens, i.e. the mean = `model(**batch).loss`). Works on left- or right-padded
    batches (a TRL SFT batch included); logits are computed only from the first column that
    predicts a label on.
    """
    import torch
    import torch.nn.functional as F

    labels = batch["labels"]
    width = labels.shape[1]
    targets = labels[:, 1:]  # targets[:, j] is predicted by the logits of column j
    valid = targets != IGNORE_INDEX
    cols = valid.any(dim=0).nonzero()
    first = int(cols[0]) if len(cols) else width - 1
    keep = width - first
    kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch.get("attention_mask"), "use_cache": False}
    if batch.get("position_ids") is not None:
        kwargs["position_ids"] = batch["position_ids"]
    if keep < width:
        kwargs["logits_to_keep"] = keep
    logits = model(**kwargs).logits[:, -keep:-1].float()  # the last column predicts nothing
    loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[:, first:].reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum")
    normalizer = batch.get("loss_normalizer")
    if normalizer is None:
        normalizer = valid.sum()
    return loss_sum / torch.as_tensor(normalizer, dtype=loss_sum.dtype, device=loss_sum.device)


def check_eager_attention(model: Any) -> None:
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if impl != "eager":
        raise ValueError(
            f"curvature needs a model loaded with attn_implementation='eager' (got {impl!r}): Hessian-vector "
            "products differentiate twice through attention, which SDPA/flash kernels do not support "
            "(on CPU the double backward through SDPA fails). Load it with load_model_for_curvature(path).")


def curvature_operator(model: Any, tokenizer: Any, examples: Sequence[Any], *, max_length: int, batch_size: int,
                       param_regex: str | None):
    """hessian_eigenthings.HessianOperator of the SFT loss over `examples` (exact double-backward HVPs)."""
    from hessian_eigenthings import HessianOperator, match_regex

    check_eager_attention(model)
    batches = sft_batches(tokenizer, examples, max_length=max_length, batch_size=batch_size)
    param_filter = match_regex(param_regex) if param_regex is not None else None
    try:
        return HessianOperator(model, batches, lm_loss_fn, param_filter=param_filter, full_dataset=True)
    except ValueError as err:
        if param_regex is not None and "zero parameters" in str(err):
            raise ValueError(f"param_regex {param_regex!r} matches no trainable parameter") from None
        raise


def measure_curvature(model: Any, tokenizer: Any, examples: Sequence[Any], *, algorithms: Sequence[str], top_k: int,
                      max_iterations: int, tol: float, trace_samples: int, max_length: int, batch_size: int,
                      param_regex: str | None, seed: int) -> list:
    """Top-|λ| eigenvalues (and optionally the trace) of the Hessian of the SFT loss on `examples`.

    The model is put in eval mode (no dropout) for the measurement and its mode restored; its
    parameters are not modified (HVPs use torch.autograd.grad, which leaves .grad alone).
    Returns one CurvatureResult per algorithm, in the order asked, then "hutchinson" when
    trace_samples > 0. Raises ValueError before the first HVP when the algorithms' vectors do
    not fit (`check_fits`).
    """
    import torch

    from trainables.curvature.algorithms import run_algorithms

    operator = curvature_operator(model, tokenizer, examples, max_length=max_length, batch_size=batch_size,
                                  param_regex=param_regex)
    check_fits(model, operator, param_regex, algorithms=algorithms, top_k=top_k, max_iterations=max_iterations,
               trace_samples=trace_samples)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            return run_algorithms(operator, algorithms=algorithms, top_k=top_k, max_iterations=max_iterations,
                                  tol=tol, trace_samples=trace_samples, seed=seed)
    finally:
        model.train(was_training)


def check_fits(model: Any, operator: Any, param_regex: str | None, *, algorithms: Sequence[str], top_k: int,
               max_iterations: int, trace_samples: int) -> None:
    """ValueError naming curvature.parameters when the algorithms' vectors do not fit: on a GPU,
    its free memory beside the model (the study was judged by the memory model before it ran);
    elsewhere the fixed vector budget (`budget.subset_problem`, the check `study run` makes for
    CPU studies before training). Both name a subset that would fit."""
    import torch

    from trainables.curvature.budget import CURVATURE_DTYPE_BYTES, peak_vectors, subset_problem, suggest_subset

    sizes = [(name, p.numel()) for name, p in model.named_parameters() if p.requires_grad]
    device = torch.device(operator.device)
    if device.type != "cuda":
        problem = subset_problem(sizes, param_regex, algorithms=algorithms, top_k=top_k,
                                 max_iterations=max_iterations, trace_samples=trace_samples)
        if problem is not None:
            raise ValueError(f"curvature.parameters: {problem}")
        return
    free, _ = torch.cuda.mem_get_info(device)
    vectors = peak_vectors(algorithms, top_k, max_iterations, trace_samples)
    need = vectors * operator.size * operator.dtype.itemsize
    if need > free:
        suggestion = suggest_subset(sizes, free // (vectors * CURVATURE_DTYPE_BYTES))
        hint = f", e.g. '{suggestion[0]}' ({suggestion[1]:,} parameters)" if suggestion else ""
        raise ValueError(
            f"curvature.parameters: {vectors} vectors of {operator.size:,} parameters need {need / 2**30:.1f} GiB, "
            f"{device} has {free / 2**30:.1f} GiB free beside the model: select fewer parameters{hint}")


def load_model_for_curvature(path: str, *, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """float32 weights and eager attention (double-backward-safe), on the GPU when there is one."""
    from trainables.models import load_model_and_tokenizer

    return load_model_and_tokenizer(str(path), dtype="float32", attn_implementation="eager",
                                    trust_remote_code=trust_remote_code)
