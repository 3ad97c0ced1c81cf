"""Direct Preference Optimization through TRL's DPOTrainer (standard sigmoid loss).

Paper §3.2: the task is recast as a preference dataset whose preferred response y_w is the
correct answer and whose dispreferred response y_l is an incorrect one. Each example becomes

    prompt   = instruction + question + "Answer:"
    chosen   = answer_prefix + correct option     (= Example.completion, " This is not toxic.")
    rejected = answer_prefix + one wrong option   (" This is toxic.")

The shared answer prefix contributes equally to both log-probabilities, so it cancels in the
DPO log-ratio difference: only the option tokens (and the EOS) carry signal.

Token ids come from the one tokenization seam (trainables.tokenization), so the chosen answer's
tokens are the ones option scoring reads: each response is the tail of its option's training
sequence (plain text + EOS, or the chat template's assistant turn), and the prompt is the head
both sequences share (up to where the loss starts). TRL 1.12's DPOTrainer would instead encode
the prompt alone and splice it before the tail of prompt + response; it is given the seam's
rows as they are.

Reference policy (`stage.dpo.reference`):
  - "stage_start": a frozen copy of the model as the stage starts (standard DPO). We pass the
    copy explicitly: with ref_model=None, TRL 1.12 re-reads `model.config._name_or_path` from
    disk in float32, which is the stage-start weights only if the in-memory model was never
    touched since loading and ignores the study's weight dtype.
  - "base": the chain's base model, read from its path (the plan's model path) with the
    study's dtype; a direct caller that gives no path gets the stage-start copy (with a warning).

Precomputed reference (`stage.dpo.precompute_reference`, resolved by the planner: on by default
on GPU workers). The reference's log-probabilities of every pair are computed once, before the
first step, and the reference is freed: a 7B reference is 13-27 GB per GPU that the policy's
training then has. With the stage-start reference no copy is made at all (TRL precomputes with
the model itself, before it trains). Two things differ from TRL 1.12's own precompute, which
the trainer below replaces: the log-probabilities are computed in the training's precision
(accelerate's bf16 autocast and float32 outputs, as the reference's forward in the training
loop is; TRL's runs before accelerate wraps anything, in float32, which would put a precision
gap into every step's log-ratio), and they are kept in memory, not in a datasets cache file
(TRL names that file from a random fingerprint in a per-process temporary folder, so a second
rank never finds the file rank 0 wrote).
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

from contract.methods import DPO_REFERENCES, STAGE_START_REFERENCE
from contract.plan import DpoPlan, ModelPlan, StagePlan, TrainingPlan
from trainables.stages.outcome import StageOutcome
from trainables.stages.trainer_plumbing import TrainLogRecorder, frozen_copy, quiet_trainer
from trainables.timings import count_fed
from trainables.stages.training_args import common_training_kwargs
from trainables.tokenization import as_encoder, common_prefix_length


def rejected_option(example: Any, seed: int) -> int:
    """Index of the wrong option used as the dispreferred response.

    Two-option tasks (ToxiGenQA) have exactly one wrong option. With several (ARC: 3), one is
    drawn uniformly by a numpy Generator seeded with (stage seed, hash of the example id): the
    draw depends only on the seed and the example itself, not on its position in the training
    list (so the same example keeps its rejected answer when the subsample or replay mix changes).
    """
    from tasks.sampling import keyed_index

    wrong = [i for i in range(len(example.options)) if i != example.label]
    if not wrong:
        raise ValueError(f"{example.example_id}: a preference pair needs at least one wrong option")
    if len(wrong) == 1:
        return wrong[0]
    return wrong[keyed_index(seed, example.example_id, len(wrong))]


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


def preference_tokens(tokenizer: Any, examples: Sequence[Any], seed: int) -> list[dict[str, list[int]]]:
    """DPO rows (prompt_ids, chosen_ids, rejected_ids) of each example, from the seam.

    `tokenizer`: an AnswerEncoder (or a tokenizer: plain text). The rejected option is
    `rejected_option(example, seed)`, as in `preference_pairs`.
    """
    encoder = as_encoder(tokenizer)
    picks = [[ex.label, rejected_option(ex, seed)] for ex in examples]
    rows = []
    for chosen, rejected in encoder.encode(examples, picks):
        start = min(chosen.loss_start, rejected.loss_start, common_prefix_length(chosen.ids, rejected.ids))
        rows.append({"prompt_ids": list(chosen.ids[:start]), "chosen_ids": list(chosen.ids[start:]),
                     "rejected_ids": list(rejected.ids[start:])})
    return rows


def fitting_pairs(rows: Sequence[dict[str, list[int]]], max_length: int) -> list[dict[str, list[int]]]:
    """Rows whose prompt + chosen and prompt + rejected both fit in max_length tokens.

    TRL truncates with `keep_start` only, which would cut the answer off; we drop every pair that
    would be cut here instead, so the stage records how many pairs it really trained on.
    """
    kept = [row for row in rows
            if len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"])) <= max_length]
    if not kept:
        raise ValueError(f"no preference pair fits in max_length={max_length} tokens; raise model.max_length")
    return kept


def dpo_dataset(pairs: Sequence[dict[str, str]]):
    from datasets import Dataset

    return Dataset.from_list(list(pairs))


def reference_model(model: Any, settings: DpoPlan, *, model_dtype: str, base_model_path: str | None,
                    trust_remote_code: bool) -> Any:
    """The frozen reference policy of a DPO stage (see the module docstring)."""
    if settings.reference not in DPO_REFERENCES:
        raise ValueError(f"unknown DPO reference '{settings.reference}' (expected one of {', '.join(DPO_REFERENCES)})")
    if settings.reference == STAGE_START_REFERENCE:
        return frozen_copy(model)
    if base_model_path is None:
        warnings.warn("DPO reference 'base' without a base_model_path: using the stage-start model as the reference",
                      RuntimeWarning, stacklevel=2)
        return frozen_copy(model)
    from trainables.models import load_model_and_tokenizer

    ref, _ = load_model_and_tokenizer(base_model_path, dtype=model_dtype, trust_remote_code=trust_remote_code)
    ref.eval()
    ref.requires_grad_(False)
    return ref


def run_dpo(*, model: Any, tokenizer: Any, stage: StagePlan, examples: Sequence[Any], training: TrainingPlan,
            model_plan: ModelPlan, work_dir: str) -> StageOutcome:
    pairs = fitting_pairs(preference_tokens(tokenizer, examples, stage.seed), model_plan.max_length)
    log = TrainLogRecorder()
    trainer = build_dpo_trainer(model=model, tokenizer=tokenizer, stage=stage, pairs=pairs, training=training,
                                max_length=model_plan.max_length, work_dir=work_dir, model_dtype=model_plan.dtype,
                                base_model_path=model_plan.path, trust_remote_code=model_plan.trust_remote_code,
                                callbacks=[log.callback()])
    trainer.train()
    return StageOutcome(log_rows=log.rows, n_examples=len(pairs))


def build_dpo_trainer(*, model: Any, tokenizer: Any, stage: StagePlan, pairs: Sequence[dict[str, list[int]]],
                      training: TrainingPlan, max_length: int, work_dir: str, model_dtype: str,
                      base_model_path: str | None = None, trust_remote_code: bool = False,
                      callbacks: list | None = None, ref_model: Any = None):
    """DPOTrainer over already-fitting `pairs` (`preference_tokens` rows). `ref_model` defaults
    to `reference_model(...)`, which loads the base model from `base_model_path` (with
    `trust_remote_code`) for the 'base' reference; a direct caller may leave them out."""
    from trl import DPOConfig

    settings = stage.dpo
    if settings is None:
        raise ValueError(f"stage {stage.stage} ({stage.method}) has no DPO settings")
    precompute = settings.precompute_reference
    # Precomputing against the stage start needs no copy: TRL computes with `model` itself.
    if ref_model is None and not (precompute and settings.reference == STAGE_START_REFERENCE):
        ref_model = reference_model(model, settings, model_dtype=model_dtype, base_model_path=base_model_path,
                                    trust_remote_code=trust_remote_code)
    args = DPOConfig(
        **common_training_kwargs(schedule=stage, seed=stage.seed, training=training, work_dir=work_dir,
                                 model_dtype=model_dtype),
        beta=settings.beta,
        loss_type=["sigmoid"],  # the original DPO objective (Rafailov et al. 2023)
        max_length=max_length,
        truncation_mode="keep_start",  # never reached: fitting_pairs dropped what it would cut
        precompute_ref_log_probs=precompute,
        sync_ref_model=False,
        disable_dropout=True,  # policy and reference log-probs must be comparable (TRL's default)
    )
    # A precomputed reference is never handed to TRL, which would prepare it and so keep it in
    # its accelerator's list of models for the whole training: only the precompute sees it.
    trainer = _seam_dpo_trainer()(
        model=model,
        ref_model=None if precompute else ref_model,
        precompute_with=ref_model if precompute else None,
        args=args,
        train_dataset=dpo_dataset(pairs),
        processing_class=as_encoder(tokenizer).tokenizer,
        callbacks=callbacks or [],
    )
    quiet_trainer(trainer)
    count_fed(trainer)  # examples and tokens into the timings phase it trains in
    if precompute:
        # Every pair's reference log-probabilities are in the dataset now: free the reference.
        del ref_model
        from trainables.models import release_memory

        release_memory()
    return trainer


def _seam_dpo_trainer():
    """DPOTrainer that takes its rows as the seam encoded them (TRL 1.12 has no pre-tokenized
    input for DPO: its `_prepare_dataset` always re-tokenizes the text, see the module docstring)."""
    from trl import DPOTrainer

    class SeamTokenizedDPOTrainer(DPOTrainer):
        def __init__(self, *args, precompute_with: Any = None, **kwargs):
            # The reference a precompute runs (None: the model itself, as the stage starts); set
            # before DPOTrainer.__init__, which runs the precompute, and dropped right after.
            self._precompute_with = precompute_with
            try:
                super().__init__(*args, **kwargs)
            finally:
                self._precompute_with = None

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            missing = {"prompt_ids", "chosen_ids", "rejected_ids"} - set(dataset.column_names)
            if missing:
                raise ValueError(f"DPO rows need {sorted(missing)} (build them with preference_tokens)")
            return dataset

        def _precompute_ref_logps(self, dataset, name, batch_size):
            """The reference's log-probabilities of every row, as two new columns (see the module
            docstring): computed over the ranks' shares of the rows, gathered in row order."""
            import torch
            from torch.utils.data import DataLoader

            loader = self.accelerator.prepare(DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                                         collate_fn=self.data_collator))
            reference = self._precompute_with if self._precompute_with is not None else self.model
            forward = training_precision_forward(reference, self.accelerator)
            chosen, rejected = [], []
            for batch in loader:
                logps = self.accelerator.gather_for_metrics(self.compute_ref_log_probs(forward, batch))
                chosen.append(logps[0].float().cpu())
                rejected.append(logps[1].float().cpu())
            dataset = dataset.add_column("ref_chosen_logps", torch.cat(chosen).tolist())
            return dataset.add_column("ref_rejected_logps", torch.cat(rejected).tolist())

    return SeamTokenizedDPOTrainer


def training_precision_forward(model: Any, accelerator: Any):
    """`model`'s forward as accelerate runs a prepared model's: under the mixed-precision autocast
    (bf16 on a GPU, nothing on CPU) with float32 outputs. Not prepared itself: the trainer prepares
    the policy later, and the reference is freed after the precompute."""
    from accelerate.utils import convert_outputs_to_fp32
    from accelerate.utils.modeling import get_mixed_precision_context_manager

    if not accelerator.native_amp:
        return model
    return convert_outputs_to_fp32(get_mixed_precision_context_manager(True, accelerator.autocast_handler)(model))
