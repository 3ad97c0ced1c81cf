"""DPO stage: preference pairs from the task, TRL's DPOTrainer, the reference policy."""

from __future__ import annotations

import pytest
import torch

from contract.plan import TrainingPlan
from tests.plans import model_plan, stage_plan
from trainables.stages import get_runner
from trainables.stages.dpo import build_dpo_trainer, fitting_pairs, preference_pairs, preference_tokens
from tasks import load_examples

TRAINING = TrainingPlan.from_dict({"adam_beta1": 0.9, "adam_beta2": 0.95, "weight_decay": 0.1, "lr_scheduler": "cosine",
                                    "warmup_steps": 0, "max_grad_norm": 1.0, "eval_batch_size": 8})


def _stage(**overrides) -> dict:
    stage = {"method": "dpo", "task": "toxigen_qa", "learning_rate": 3e-3, "batch_size": 16, "steps": 12, "seed": 0,
             "dpo": {"beta": 0.1, "reference": "stage_start"}}
    stage.update(overrides)
    return stage


# ---------------------------------------------------------------- preference pairs (no model)

def test_toxigen_pairs_prefer_the_correct_label_over_the_other_one(data_dir):
    examples = load_examples("toxigen_qa", "train", size=40, data_dir=data_dir)
    pairs = preference_pairs(examples, seed=0)
    assert len(pairs) == len(examples)
    for ex, pair in zip(examples, pairs):
        assert set(pair) == {"prompt", "chosen", "rejected"}
        assert pair["prompt"] == ex.prompt
        assert pair["chosen"] == ex.completion == ex.answer_prefix + ex.options[ex.label]
        assert pair["rejected"] == ex.answer_prefix + ex.options[1 - ex.label]  # the only wrong option
    assert {p["rejected"] for p in pairs} == {" This is toxic.", " This is not toxic."}


def test_arc_pairs_pick_a_wrong_option_deterministically_by_seed(data_dir):
    examples = load_examples("arc_easy", "train", size=60, data_dir=data_dir)
    pairs = preference_pairs(examples, seed=0)
    picks = []
    for ex, pair in zip(examples, pairs):
        assert pair["chosen"] == ex.completion
        wrong = [ex.answer_prefix + o for i, o in enumerate(ex.options) if i != ex.label]
        assert pair["rejected"] in wrong
        picks.append(pair["rejected"])
    assert len(set(picks)) >= 3, "the wrong option should vary across examples, not always be the same letter"
    assert preference_pairs(examples, seed=0) == pairs  # deterministic
    other = preference_pairs(examples, seed=1)
    assert other != pairs and all(p["chosen"] == q["chosen"] for p, q in zip(pairs, other))
    # An example's pick depends on the seed and the example, not on its position in the list.
    assert preference_pairs(examples[::-1], seed=0) == pairs[::-1]


# ---------------------------------------------------------------- tokenization and length

def test_fitting_pairs_drop_pairs_that_would_be_cut(tiny_model_path, data_dir):
    from trainables.models import load_model_and_tokenizer

    _, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    examples = load_examples("arc_easy", "train", size=40, data_dir=data_dir)
    rows = preference_tokens(tokenizer, examples, seed=0)
    pairs = preference_pairs(examples, seed=0)
    # Byte-level BPE without prefix space: the seam's sequences are TRL's text encodings + EOS.
    longest = [max(len(tokenizer(p["prompt"] + p[s])["input_ids"]) for s in ("chosen", "rejected")) + 1 for p in pairs]
    assert longest == [len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in rows]
    limit = sorted(longest)[len(longest) // 2]
    kept = fitting_pairs(rows, limit)
    assert len(kept) == sum(n <= limit for n in longest) and 0 < len(kept) < len(pairs)
    with pytest.raises(ValueError, match="max_length"):
        fitting_pairs(rows, 4)


@pytest.mark.parametrize("task", ["toxigen_qa", "arc_easy"])
def test_trainer_completions_are_exactly_the_answers(tiny_model_path, data_dir, tmp_path, task):
    """The trainer's rows are the seam's: the prompt tokens decode to the prompt, the completion
    tokens to exactly the chosen / rejected answer plus EOS (no prompt token leaks in, nothing cut)."""
    from trainables.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    examples = load_examples(task, "train", size=8, data_dir=data_dir)
    pairs = preference_pairs(examples, seed=0)
    rows = preference_tokens(tokenizer, examples, seed=0)
    trainer = build_dpo_trainer(model=model, tokenizer=tokenizer, stage=stage_plan(_stage(steps=1, batch_size=8)),
                                pairs=rows, training=TRAINING, max_length=512, model_dtype="auto",
                                work_dir=str(tmp_path / "work"))
    assert len(trainer.train_dataset) == len(pairs)
    for pair, row in zip(pairs, trainer.train_dataset):
        assert tokenizer.decode(row["prompt_ids"], skip_special_tokens=True) == pair["prompt"]
        assert tokenizer.decode(row["chosen_ids"]) == pair["chosen"] + tokenizer.eos_token
        assert tokenizer.decode(row["rejected_ids"]) == pair["rejected"] + tokenizer.eos_token


# ---------------------------------------------------------------- training

def _completion_logps(model, tokenizer, pairs) -> torch.Tensor:
    """log π(chosen | prompt) − log π(rejected | prompt) per pair, tokenized as TRL does
    (prompt + response + EOS as one string; the completion is what follows the prompt's tokens)."""
    diffs = []
    model.eval()
    with torch.inference_mode():
        for pair in pairs:
            n_prompt = len(tokenizer(pair["prompt"])["input_ids"])
            side_logps = []
            for side in ("chosen", "rejected"):
                ids = torch.tensor([tokenizer(pair["prompt"] + pair[side] + tokenizer.eos_token)["input_ids"]])
                logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
                targets = ids[0, n_prompt:]
                side_logps.append(float(logprobs[n_prompt - 1:].gather(-1, targets[:, None]).sum()))
            diffs.append(side_logps[0] - side_logps[1])
    return torch.tensor(diffs)


def _skewed_toxigen(split: str, data_dir, n_not_toxic: int, n_toxic: int) -> list:
    examples = load_examples("toxigen_qa", split, size=200, data_dir=data_dir)
    return ([ex for ex in examples if ex.label == 1][:n_not_toxic]
            + [ex for ex in examples if ex.label == 0][:n_toxic])


def test_dpo_stage_updates_every_parameter_and_raises_the_held_out_reward_margin(tiny_model_path, data_dir, tmp_path):
    """The implicit DPO reward margin, mean over held-out pairs of
    [log π(chosen) − log π(rejected)] − [log π_ref(chosen) − log π_ref(rejected)], rises above 0.

    A randomly initialised 2-layer model cannot learn toxicity from the text in 12 steps; the one
    regularity that training and held-out pairs share and that it can learn is the label prior.
    Both sets therefore have a clear 3:1 prior (not toxic : toxic), so the direction of the
    held-out margin reflects DPO, not noise (margins of about 2.4-3.5 nats over seeds 0-7)."""
    from trainables.models import load_model_and_tokenizer

    train = _skewed_toxigen("train", data_dir, 48, 16)
    held_out = _skewed_toxigen("eval", data_dir, 24, 8)
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    reference, _ = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stage = _stage()
    held_pairs = preference_pairs(held_out, stage["seed"])
    ref_diffs = _completion_logps(reference, tokenizer, held_pairs)
    margin_before = float((_completion_logps(model, tokenizer, held_pairs) - ref_diffs).mean())

    outcome = get_runner("dpo")(model=model, tokenizer=tokenizer, stage=stage_plan(stage), examples=train,
                                training=TRAINING, model_plan=model_plan(tiny_model_path, max_length=256),
                                work_dir=str(tmp_path / "work"))

    assert outcome.n_examples == len(train)
    rows = outcome.log_rows
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert set(rows[0]) == {"step", "loss", "learning_rate", "grad_norm", "seconds"}
    assert abs(rows[0]["loss"] - 0.6931) < 1e-3  # −log σ(0): policy = reference at the first step
    assert rows[0]["learning_rate"] == max(r["learning_rate"] for r in rows)
    assert rows[-1]["learning_rate"] < 0.1 * stage["learning_rate"]
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(changed) == len(before), "every parameter tensor should have been updated"

    margin_after = float((_completion_logps(model, tokenizer, held_pairs) - ref_diffs).mean())
    assert margin_before == pytest.approx(0.0, abs=1e-4)
    assert margin_after > margin_before + 0.5 and margin_after > 0.5, (margin_before, margin_after)


# ---------------------------------------------------------------- reference policy

def _perturbed(model, seed: int = 1):
    """Stand-in for a model that an earlier stage already changed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model


def test_stage_start_reference_is_a_frozen_copy_of_the_model_as_the_stage_starts(tiny_model_path, data_dir, tmp_path):
    from trainables.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    _perturbed(model)  # in memory only: TRL's own default would re-read the checkpoint from disk
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    pairs = preference_tokens(tokenizer, load_examples("toxigen_qa", "train", size=8, data_dir=data_dir), seed=0)
    trainer = build_dpo_trainer(model=model, tokenizer=tokenizer, stage=stage_plan(_stage(steps=2, batch_size=4)),
                                pairs=pairs, training=TRAINING, max_length=256, model_dtype="auto",
                                work_dir=str(tmp_path / "work"))
    ref = trainer.ref_model
    assert ref is not model and not any(p.requires_grad for p in ref.parameters())
    trainer.train()
    for name, p in ref.named_parameters():
        assert torch.equal(p.detach(), start[name]), name
    assert any(not torch.equal(p.detach(), start[n]) for n, p in model.named_parameters())


def test_base_reference_loads_the_base_model_not_the_stage_start(tiny_model_path, data_dir, tmp_path):
    from safetensors.torch import load_file

    from trainables.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    _perturbed(model)
    pairs = preference_tokens(tokenizer, load_examples("toxigen_qa", "train", size=8, data_dir=data_dir), seed=0)
    stage = _stage(steps=1, batch_size=4, dpo={"beta": 0.1, "reference": "base"})
    trainer = build_dpo_trainer(model=model, tokenizer=tokenizer, stage=stage_plan(stage), pairs=pairs,
                                training=TRAINING, max_length=256, model_dtype="auto", base_model_path=str(tiny_model_path),
                                work_dir=str(tmp_path / "work"))
    base = load_file(str(tiny_model_path / "model.safetensors"))
    ref_params = dict(trainer.ref_model.named_parameters())
    assert set(base) <= set(ref_params)
    for name, tensor in base.items():
        assert torch.equal(ref_params[name].detach().cpu(), tensor), name
    policy = dict(model.named_parameters())
    assert not all(torch.equal(policy[n].detach().cpu(), t) for n, t in base.items())


def test_base_reference_without_a_path_falls_back_to_the_stage_start(tiny_model_path, data_dir, tmp_path):
    from trainables.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    _perturbed(model)
    pairs = preference_tokens(tokenizer, load_examples("toxigen_qa", "train", size=8, data_dir=data_dir), seed=0)
    with pytest.warns(RuntimeWarning, match="base_model_path"):
        trainer = build_dpo_trainer(model=model, tokenizer=tokenizer, pairs=pairs, training=TRAINING, max_length=256,
                                    stage=stage_plan(_stage(steps=1, batch_size=4,
                                                            dpo={"beta": 0.1, "reference": "base"})),
                                    model_dtype="auto", work_dir=str(tmp_path / "work"))
    policy = dict(model.named_parameters())
    for name, p in trainer.ref_model.named_parameters():
        assert torch.equal(p.detach(), policy[name].detach()), name


# ---------------------------------------------------------------- precomputed reference


def _precompute_pair(tiny_model_path, data_dir, tmp_path, reference: str, steps: int = 4):
    """The same DPO stage (a perturbed stage-start model) trained with the reference loaded and
    with it precomputed: (losses, weights, trainer) of each."""
    from trainables.models import load_model_and_tokenizer
    from trainables.stages.trainer_plumbing import TrainLogRecorder

    out = {}
    for precompute in (False, True):
        model, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
        _perturbed(model)
        pairs = preference_tokens(tokenizer, load_examples("toxigen_qa", "train", size=16, data_dir=data_dir), seed=0)
        stage = _stage(steps=steps, batch_size=4, dpo={"beta": 0.1, "reference": reference,
                                                       "precompute_reference": precompute})
        recorder = TrainLogRecorder()
        trainer = build_dpo_trainer(model=model, tokenizer=tokenizer, stage=stage_plan(stage), pairs=pairs,
                                    training=TRAINING, max_length=256, model_dtype="auto",
                                    base_model_path=str(tiny_model_path), callbacks=[recorder.callback()],
                                    work_dir=str(tmp_path / f"work-{reference}-{precompute}"))
        held_reference = trainer.ref_model
        trainer.train()
        log = [row["loss"] for row in recorder.rows]
        out[precompute] = (log, {n: p.detach().clone() for n, p in model.named_parameters()}, held_reference, trainer)
    return out


@pytest.mark.parametrize("reference", ["stage_start", "base"])
def test_precomputed_reference_trains_like_a_loaded_one_and_is_freed(tiny_model_path, data_dir, tmp_path, reference,
                                                                      monkeypatch):
    """Same losses and weights (float rounding: the reference's batches differ), and no reference
    model held while training (a loaded 'base' reference is collected: nothing, accelerate's list
    of prepared models included, keeps it). The stage-start reference's first loss is −log σ(0):
    the precompute ran on the model as the stage started."""
    import gc
    import weakref

    import trainables.stages.dpo as dpo

    references = []
    real_reference = dpo.reference_model

    def reference_model(*args, **kwargs):
        ref = real_reference(*args, **kwargs)
        references.append(weakref.ref(ref))
        return ref

    monkeypatch.setattr(dpo, "reference_model", reference_model)
    runs = _precompute_pair(tiny_model_path, data_dir, tmp_path, reference)
    gc.collect()
    # Loaded for the loaded run (stage_start: a copy; base: from disk), and for the precomputed
    # base run only; every precomputed one is gone.
    assert len(references) == (1 if reference == "stage_start" else 2)
    assert references[-1]() is None or reference == "stage_start"
    (loaded_losses, loaded_weights, loaded_ref, _), (pre_losses, pre_weights, pre_ref, trainer) = runs[False], runs[True]
    assert loaded_ref is not None and pre_ref is None
    assert "ref_chosen_logps" in trainer.train_dataset.column_names
    assert pre_losses == pytest.approx(loaded_losses, rel=1e-5, abs=1e-6)
    if reference == "stage_start":
        assert pre_losses[0] == pytest.approx(0.6931, abs=1e-3)
    else:  # the perturbed start is far from the base: the first loss is not log 2
        assert abs(pre_losses[0] - 0.6931) > 1e-3
    assert max((pre_weights[n] - w).abs().max().item() for n, w in loaded_weights.items()) < 1e-5


def test_precomputed_reference_log_probs_are_in_the_training_precision(tiny_model_path, data_dir, tmp_path,
                                                                       monkeypatch):
    """Under bf16 autocast (forced here on CPU) the precomputed log-probabilities are those of the
    reference's forward in the training loop (accelerate's autocast, float32 outputs), not those
    of a plain float32 forward, which differ by far more than rounding."""
    import trainables.models
    from trainables.models import load_model_and_tokenizer

    monkeypatch.setattr(trainables.models, "bf16_autocast", lambda dtype: True)
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    pairs = preference_tokens(tokenizer, load_examples("toxigen_qa", "train", size=8, data_dir=data_dir), seed=0)

    def build(precompute: bool):
        stage = _stage(steps=1, batch_size=4, dpo={"beta": 0.1, "reference": "stage_start",
                                                   "precompute_reference": precompute})
        return build_dpo_trainer(model=model, tokenizer=tokenizer, stage=stage_plan(stage), pairs=pairs,
                                 training=TRAINING, max_length=256, model_dtype="auto",
                                 work_dir=str(tmp_path / f"work-{precompute}"))

    precomputed = build(True)
    assert precomputed.args.bf16 and precomputed.accelerator.native_amp
    stored = torch.tensor(precomputed.train_dataset["ref_chosen_logps"])
    loaded = build(False)  # its reference is prepared by accelerate: the training loop's forward
    in_loop, plain = [], []
    for start in range(0, len(pairs), 4):  # the precompute's batches (the per-device batch)
        batch = loaded.data_collator([loaded.train_dataset[i] for i in range(start, start + 4)])
        in_loop.append(loaded.compute_ref_log_probs(loaded.ref_model, batch)[0].float())
        plain.append(loaded.compute_ref_log_probs(model, batch)[0].float())
    in_loop, plain = torch.cat(in_loop), torch.cat(plain)
    assert torch.allclose(stored, in_loop, atol=1e-5, rtol=0)
    # What a float32 precompute would have stored (2e-3 nats apart on this 2-layer model): in
    # every step's log-ratio, a gap that is no part of DPO.
    assert (stored - plain).abs().max() > 5e-4


def test_dpo_is_registered():
    from trainables.stages import STAGE_RUNNERS
    from trainables.stages.dpo import run_dpo

    assert STAGE_RUNNERS["dpo"] is run_dpo


def _dpo_study_plan(tmp_path, data_dir, tiny_model_path, *, gpus: int = 0, workers: int = 1, fsdp: bool = False,
                    **dpo):
    from study.planner import build_plans
    from study.spec_loading import spec_from_dict

    spec = spec_from_dict({
        "name": "d", "model": {"name": "tiny", "max_length": 256}, "data_dir": str(data_dir),
        "tasks": {"toxigen_qa": {"train_size": 16, "eval_size": 8}},
        "stage_defaults": {"batch_size": 4},
        "execution": {"gpus_per_trial": gpus, "workers_per_trial": workers, "fsdp": fsdp,
                      **({"executor": "train"} if workers > 1 else {})},
        "chains": {"c": [{"task": "toxigen_qa", "method": "dpo", "dpo": dpo}]},
    })
    return build_plans(spec, study_dir=tmp_path / "s", data_dir=str(data_dir), base_model_path=str(tiny_model_path),
                       chat=False)[0].stages[0]


def test_precompute_reference_resolves_per_device_and_enters_the_key_only_when_on(tmp_path, data_dir,
                                                                                   tiny_model_path):
    cpu_auto = _dpo_study_plan(tmp_path, data_dir, tiny_model_path)
    cpu_off = _dpo_study_plan(tmp_path, data_dir, tiny_model_path, precompute_reference=False)
    cpu_on = _dpo_study_plan(tmp_path, data_dir, tiny_model_path, precompute_reference=True)
    gpu_auto = _dpo_study_plan(tmp_path, data_dir, tiny_model_path, gpus=1)
    fsdp_auto = _dpo_study_plan(tmp_path, data_dir, tiny_model_path, gpus=2, workers=2, fsdp=True)
    assert not cpu_auto.dpo.precompute_reference and cpu_on.dpo.precompute_reference
    assert gpu_auto.dpo.precompute_reference
    assert not fsdp_auto.dpo.precompute_reference  # sharded reference, FSDP's precision as the policy's
    assert cpu_auto.stage_key == cpu_off.stage_key  # today's DPO stages keep their keys
    assert cpu_on.stage_key != cpu_off.stage_key
    assert "precompute_reference" not in cpu_off.to_dict()["dpo"]
    assert cpu_on.to_dict()["dpo"]["precompute_reference"] is True


def test_a_bad_precompute_setting_is_refused_at_its_field(tmp_path, data_dir, tiny_model_path):
    from study.spec_loading import SpecError

    with pytest.raises(SpecError, match=r"chains\.c\[0\]\.dpo\.precompute_reference.*true or false or one of 'auto'"):
        _dpo_study_plan(tmp_path, data_dir, tiny_model_path, precompute_reference="sometimes")
