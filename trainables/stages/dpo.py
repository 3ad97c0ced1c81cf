"""Direct Preference Optimization through TRL's DPOTrainer (standard sigmoid loss).

Paper §3.2: the task is recast as a preference dataset whose preferred response y_w is the
correct answer and whose dispreferred response y_l is an incorrect one. Each example becomes

    prompt   = instruction + question + "Answer:"
    chosen   = answer_prefix + correct option     (= Example.completion, " This is not toxic.")
    rejected = answer_prefix + one wrong option   (" This is toxic.")

The shared answer prefix contributes equally to both log-probabilities, so it cancels in the
DPO log-ratio difference: only the option tokens (and the EOS TRL appends) carry signal.

Reference policy (`stage["dpo"]["reference"]`):
  - "stage_start": a frozen copy of the model as the stage starts (standard DPO). We pass the
    copy explicitly: with ref_model=None, TRL 1.12 re-reads `model.config._name_or_path` from
    disk in float32, which is the stage-start weights only if the in-memory model was never
    touched since loading and ignores the study's weight dtype.
  - "base": the chain's base model, read from `stage["dpo"]["base_model_path"]` with the
    study's dtype; without that path we fall back to the stage-start copy (with a warning).
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from typing import Any, Sequence

from trainables.stages.outcome import StageOutcome
from trainables.stages.sft import TrainLogRecorder, quiet_trainer
from trainables.stages.training_args import common_training_kwargs


def rejected_option(example: Any, seed: int) -> int:
    """Index of the wrong option used as the dispreferred response.

    Two-option tasks (ToxiGenQA) have exactly one wrong option. With several (ARC: 3), one is
    drawn uniformly by a numpy Generator seeded with (stage seed, hash of the example id): the
    draw depends only on the seed and the example itself, not on its position in the training
    list (so the same example keeps its rejected answer when the subsample or replay mix changes).
    """
    import numpy as np

    wrong = [i for i in range(len(example.options)) if i != example.label]
    if not wrong:
        raise ValueError(f"{example.example_id}: a preference pair needs at least one wrong option")
    if len(wrong) == 1:
        return wrong[0]
    id_key = int.from_bytes(hashlib.sha256(example.example_id.encode()).digest()[:8], "big")
    rng = np.random.default_rng([int(seed), id_key])
    return wrong[int(rng.integers(len(wrong)))]


def preference_pairs(examples: Sequence[Any], seed: int) -> list[dict[str, str]]:
    """TRL's standard (non-conversational) preference rows: prompt, chosen, rejected."""
    return [
        {
            "prompt": ex.prompt,
            "chosen": ex.completion,
            "rejected": ex.answer_prefix + ex.options[rejected_option(ex, seed)],
        }
        for ex in examples
    ]


def fitting_pairs(tokenizer: Any, pairs: Sequence[dict[str, str]], max_length: int) -> list[dict[str, str]]:
    """Pairs whose prompt + chosen and prompt + rejected (+ EOS) both fit in max_length tokens.

    TRL 1.12 tokenizes prompt + response as one string (special tokens included), appends EOS
    to the response, and truncates with `keep_start` only, which would cut the answer off; it
    drops only pairs whose prompt alone fills max_length. We drop every pair that would be cut
    here instead, so the stage records how many pairs it really trained on.
    """
    kept = [
        pair for pair in pairs
        if all(len(tokenizer(pair["prompt"] + pair[side], add_special_tokens=True)["input_ids"]) + 1 <= max_length
               for side in ("chosen", "rejected"))
    ]
    if not kept:
        raise ValueError(f"no preference pair fits in max_length={max_length} tokens; raise model.max_length")
    return kept


def dpo_dataset(pairs: Sequence[dict[str, str]]):
    from datasets import Dataset

    return Dataset.from_list(list(pairs))


def reference_model(model: Any, stage: dict, model_dtype: str = "auto") -> Any:
    """The frozen reference policy of a DPO stage (see the module docstring)."""
    settings = stage.get("dpo") or {}
    reference = settings.get("reference", "stage_start")
    if reference not in ("stage_start", "base"):
        raise ValueError(f"unknown DPO reference '{reference}' (expected 'stage_start' or 'base')")
    if reference == "base" and settings.get("base_model_path"):
        from trainables.models import load_model_and_tokenizer

        ref, _ = load_model_and_tokenizer(str(settings["base_model_path"]), dtype=model_dtype,
                                          trust_remote_code=bool(settings.get("trust_remote_code", False)))
    else:
        if reference == "base":
            warnings.warn("DPO reference 'base' without stage['dpo']['base_model_path']: "
                          "using the stage-start model as the reference", RuntimeWarning, stacklevel=2)
        ref = copy.deepcopy(model)
    ref.eval()
    ref.requires_grad_(False)
    return ref


def run_dpo(*, model: Any, tokenizer: Any, stage: dict, examples: Sequence[Any], training: dict, max_length: int,
            work_dir: str, model_dtype: str = "auto") -> StageOutcome:
    pairs = fitting_pairs(tokenizer, preference_pairs(examples, int(stage["seed"])), max_length)
    log = TrainLogRecorder()
    trainer = build_dpo_trainer(model=model, tokenizer=tokenizer, stage=stage, pairs=pairs, training=training,
                                max_length=max_length, work_dir=work_dir, model_dtype=model_dtype,
                                callbacks=[log.callback()])
    trainer.train()
    return StageOutcome(log_rows=log.rows, n_examples=len(pairs))


def build_dpo_trainer(*, model: Any, tokenizer: Any, stage: dict, pairs: Sequence[dict[str, str]], training: dict,
                      max_length: int, work_dir: str, model_dtype: str = "auto", callbacks: list | None = None,
                      ref_model: Any = None):
    """DPOTrainer over already-fitting `pairs`; `ref_model` defaults to `reference_model(model, stage)`."""
    from trl import DPOConfig, DPOTrainer

    settings = stage.get("dpo") or {}
    args = DPOConfig(
        **common_training_kwargs(stage=stage, training=training, work_dir=work_dir, model_dtype=model_dtype),
        beta=float(settings.get("beta", 0.1)),
        loss_type=["sigmoid"],  # the original DPO objective (Rafailov et al. 2023)
        max_length=max_length,
        truncation_mode="keep_start",  # never reached: fitting_pairs dropped what it would cut
        precompute_ref_log_probs=False,
        sync_ref_model=False,
        disable_dropout=True,  # policy and reference log-probs must be comparable (TRL's default)
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model if ref_model is not None else reference_model(model, stage, model_dtype),
        args=args,
        train_dataset=dpo_dataset(pairs),
        processing_class=tokenizer,
        callbacks=callbacks or [],
    )
    quiet_trainer(trainer)
    return trainer
