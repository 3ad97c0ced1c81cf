"""How an optimizer step is computed: micro-batches with gradient accumulation, activation
checkpointing, the AdamW kernel and padding-free SFT batches (`training:` in a study file).

Each is checked through the engine's own trainer builders (trainables.stages.sft / dpo, with the
arguments of training_args.common_training_kwargs) on the built-in tiny Llama: one optimizer step
of a global batch of 16 gives the same loss and the same gradients (captured just before the
optimizer step, clipping switched off) as the engine's default, 16 sequences in one pass. Then
the study file's side: the batch arithmetic, the validation problems with their field paths, and
the stage keys (unchanged by defaults, changed by a non-default setting that changes results).
"""

from __future__ import annotations

import dataclasses
import typing

import pytest
import torch

from contract.plan import DEFAULT_OPTIMIZER, OPTIMIZERS, TrainingPlan, TrialPlan
from contract.workers import BatchSplit, batch_size_problem, batch_split
from study.spec import TrainingSpec
from tests.plans import stage_plan, training_plan

SFT_STAGE = {"method": "sft", "batch_size": 16, "steps": 1, "learning_rate": 1e-3, "seed": 0}
NO_CLIPPING = {"max_grad_norm": 1e9}  # the captured gradients are the accumulated ones, unscaled
_DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "STUDY_FSDP")


@pytest.fixture
def single_process(monkeypatch):
    for name in _DIST_ENV:
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------- batch arithmetic


def test_a_global_batch_splits_over_workers_then_into_micro_batches():
    assert batch_split(16, 1) == BatchSplit(micro_batch=16, accumulation_steps=1)  # today's behaviour
    assert batch_split(16, 1, 4) == BatchSplit(micro_batch=4, accumulation_steps=4)
    assert batch_split(16, 2, 4) == BatchSplit(micro_batch=4, accumulation_steps=2)
    assert batch_split(16, 4, 4) == BatchSplit(micro_batch=4, accumulation_steps=1)
    assert batch_split(16, 2, 1) == BatchSplit(micro_batch=1, accumulation_steps=8)
    assert batch_size_problem(16, 2, 8) is None
    problem = batch_size_problem(16, 2, 3)
    assert problem.startswith("batch_size 16 over 2 worker(s) is 8 examples per device, "
                              "which training.micro_batch_size = 3 must divide")
    assert "must be divisible by execution.workers_per_trial = 2" in batch_size_problem(15, 2, 3)
    assert "must be ≥ 1" in batch_size_problem(16, 1, 0)
    with pytest.raises(ValueError, match="micro_batch_size = 16 must divide"):
        batch_split(16, 2, 16)


def test_training_arguments_take_the_split_and_the_settings(single_process, monkeypatch, tmp_path):
    from transformers import TrainingArguments

    from trainables.stages.training_args import common_training_kwargs

    def kwargs(**fields):
        return common_training_kwargs(schedule=stage_plan(SFT_STAGE), seed=0, training=training_plan(fields),
                                      work_dir=str(tmp_path), model_dtype="float32")

    default = kwargs()
    assert (default["per_device_train_batch_size"], default["gradient_accumulation_steps"]) == (16, 1)
    assert default["optim"] == "adamw_torch" and default["activation_checkpointing"] is False
    assert "activation_checkpointing_kwargs" not in default
    micro = kwargs(micro_batch_size=4, optimizer="adamw_torch_fused", activation_checkpointing=True)
    assert (micro["per_device_train_batch_size"], micro["gradient_accumulation_steps"]) == (4, 4)
    assert micro["optim"] == "adamw_torch_fused"
    assert micro["activation_checkpointing"] is True
    assert micro["activation_checkpointing_kwargs"] == {"use_reentrant": False}
    assert set(micro) <= set(TrainingArguments.__dataclass_fields__)
    monkeypatch.setenv("WORLD_SIZE", "2")
    two = kwargs(micro_batch_size=4)
    assert (two["per_device_train_batch_size"], two["gradient_accumulation_steps"]) == (4, 2)
    with pytest.raises(ValueError, match="micro_batch_size = 3 must divide"):
        kwargs(micro_batch_size=3)


def test_fsdp_checkpoints_activations_its_own_way(single_process, monkeypatch, tmp_path):
    """transformers refuses FSDP's activation checkpointing and the training argument together:
    under FSDP the setting becomes fsdp_config's."""
    from trainables.stages.training_args import common_training_kwargs

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("STUDY_FSDP", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    kwargs = common_training_kwargs(schedule=stage_plan(SFT_STAGE), seed=0,
                                    training=training_plan({"activation_checkpointing": True}),
                                    work_dir=str(tmp_path), model_dtype="float32")
    assert kwargs["fsdp_config"]["activation_checkpointing"] is True
    assert kwargs["activation_checkpointing"] is False
    off = common_training_kwargs(schedule=stage_plan(SFT_STAGE), seed=0, training=training_plan(),
                                 work_dir=str(tmp_path), model_dtype="float32")
    assert off["fsdp_config"]["activation_checkpointing"] is False


# ---------------------------------------------------------------- one optimizer step, through TRL


def _one_step(build, model_path, **fields):
    """One optimizer step of a trainer built by `build(model, tokenizer, training, callbacks)`:
    the gradients just before the optimizer step, the logged loss, the forward passes, the
    weights after the step, the trainer."""
    from transformers import TrainerCallback

    from trainables.models import load_model_and_tokenizer
    from trainables.stages.trainer_plumbing import TrainLogRecorder

    model, tokenizer = load_model_and_tokenizer(str(model_path), dtype="float32")
    captured = {}

    class Gradients(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            captured.update({n: p.grad.detach().clone() for n, p in model.named_parameters()})

    passes = []
    model.model.register_forward_hook(lambda module, args, kwargs, out: passes.append(kwargs["input_ids"].shape),
                                      with_kwargs=True)
    log = TrainLogRecorder()
    trainer = build(model, tokenizer, training_plan({**NO_CLIPPING, **fields}), [Gradients(), log.callback()])
    trainer.train()
    (row,) = log.rows
    return captured, row["loss"], passes, {n: p.detach().clone() for n, p in model.named_parameters()}, trainer


def _assert_close(a: dict, b: dict, rtol: float) -> None:
    """Every tensor within rtol of the largest entry of its reference (float rounding only)."""
    assert a.keys() == b.keys()
    for name in a:
        scale = b[name].abs().max().item()
        assert scale > 0, name
        assert (a[name] - b[name]).abs().max().item() <= rtol * scale, name


def _assert_same_step(weights: dict, reference: dict) -> None:
    """Weights after one AdamW step within 1% of a step (the first step moves each weight by
    about ±lr, more sensitive to rounding where a gradient is near Adam's eps than the gradients)."""
    assert weights.keys() == reference.keys()
    for name in weights:
        assert (weights[name] - reference[name]).abs().max().item() <= 0.01 * SFT_STAGE["learning_rate"], name


@pytest.fixture(scope="module")
def sft_examples(tiny_model_path, data_dir):
    """16 ARC questions of different lengths (so a padded batch of 16 has real padding)."""
    from tasks import load_examples
    from trainables.models import load_tokenizer
    from trainables.stages.sft import fitting_examples

    examples = fitting_examples(load_tokenizer(str(tiny_model_path)),
                                load_examples("arc_easy", "train", size=16, data_dir=data_dir), 512)
    assert len(examples) == 16
    return examples


def _sft(examples, tmp_path):
    from trainables.stages.sft import build_sft_trainer

    def build(model, tokenizer, training, callbacks):
        return build_sft_trainer(model=model, tokenizer=tokenizer, stage=stage_plan(SFT_STAGE), examples=examples,
                                 training=training, max_length=512, model_dtype="float32",
                                 work_dir=str(tmp_path / "work"), callbacks=callbacks)

    return build


@pytest.fixture(scope="module")
def sft_reference(tiny_model_path, sft_examples, tmp_path_factory):
    """The default: one pass over the batch of 16, padded, no checkpointing, plain AdamW."""
    return _one_step(_sft(sft_examples, tmp_path_factory.mktemp("reference")), tiny_model_path)


def test_four_micro_batches_of_four_equal_one_batch_of_sixteen(tiny_model_path, sft_examples, sft_reference,
                                                               tmp_path):
    grads, loss, passes, weights, trainer = _one_step(_sft(sft_examples, tmp_path), tiny_model_path,
                                                      micro_batch_size=4)
    ref_grads, ref_loss, ref_passes, ref_weights, _ = sft_reference
    assert (trainer.args.per_device_train_batch_size, trainer.args.gradient_accumulation_steps) == (4, 4)
    assert [shape[0] for shape in ref_passes] == [16]
    assert [shape[0] for shape in passes] == [4, 4, 4, 4]
    # The loss is the mean over the batch's answer tokens either way (transformers normalises
    # every micro-batch by the step's token count), so equal up to the order of the sums.
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    _assert_close(grads, ref_grads, rtol=1e-5)
    _assert_same_step(weights, ref_weights)


def test_padding_free_sft_gives_the_padded_loss(tiny_model_path, sft_examples, sft_reference, tmp_path):
    grads, loss, passes, _, trainer = _one_step(_sft(sft_examples, tmp_path), tiny_model_path, padding_free=True)
    ref_grads, ref_loss, ref_passes, _, _ = sft_reference
    # One row of the examples' own tokens instead of 16 rows padded to the longest.
    tokens = sum(len(row["input_ids"]) for row in trainer.train_dataset)
    assert passes == [torch.Size([1, tokens])]
    assert tokens < ref_passes[0][0] * ref_passes[0][1]
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch and batch["position_ids"].shape == (1, tokens)
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    _assert_close(grads, ref_grads, rtol=1e-5)


def test_activation_checkpointing_gives_the_same_step(tiny_model_path, sft_examples, sft_reference, tmp_path):
    grads, loss, _, weights, trainer = _one_step(_sft(sft_examples, tmp_path), tiny_model_path,
                                                 activation_checkpointing=True)
    ref_grads, ref_loss, _, ref_weights, _ = sft_reference
    assert trainer.model.is_activation_checkpointing
    # Bit for bit on CPU: the recomputed forward is the same computation (why it is in no key).
    assert loss == ref_loss
    assert all(torch.equal(grads[name], ref_grads[name]) for name in ref_grads)
    _assert_same_step(weights, ref_weights)


def test_fused_adamw_runs_on_cpu_and_takes_the_same_step(tiny_model_path, sft_examples, sft_reference, tmp_path):
    _, _, _, weights, trainer = _one_step(_sft(sft_examples, tmp_path), tiny_model_path, optimizer="adamw_torch_fused")
    assert trainer.optimizer.optimizer.defaults["fused"] is True
    _, _, _, ref_weights, _ = sft_reference
    _assert_same_step(weights, ref_weights)


def test_dpo_micro_batches_equal_one_batch(tiny_model_path, data_dir, tmp_path):
    from tasks import load_examples
    from trainables.models import load_tokenizer
    from trainables.stages.dpo import build_dpo_trainer, fitting_pairs, preference_tokens

    pairs = fitting_pairs(preference_tokens(load_tokenizer(str(tiny_model_path)),
                                            load_examples("arc_easy", "train", size=16, data_dir=data_dir), 0), 512)
    assert len(pairs) == 16

    def build(model, tokenizer, training, callbacks):
        return build_dpo_trainer(model=model, tokenizer=tokenizer, stage=stage_plan({**SFT_STAGE, "method": "dpo"}),
                                 pairs=pairs, training=training, max_length=512, model_dtype="float32",
                                 work_dir=str(tmp_path / "work"), callbacks=callbacks)

    ref_grads, ref_loss, _, _, _ = _one_step(build, tiny_model_path)
    grads, loss, _, _, trainer = _one_step(build, tiny_model_path, micro_batch_size=4)
    assert trainer.args.gradient_accumulation_steps == 4
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    _assert_close(grads, ref_grads, rtol=1e-5)


# ---------------------------------------------------------------- the study file


def _spec_problems(raw: dict) -> list[str]:
    from study.spec_loading import SpecError, spec_from_dict

    with pytest.raises(SpecError) as err:
        spec_from_dict(raw)
    return [f"{p.path}: {p.message}" for p in err.value.problems]


def _study(*stages, training=None, **extra) -> dict:
    return {"name": "m", "model": "tiny", "chains": {"c": list(stages) or [{"task": "toxigen_qa"}]},
            **({"training": training} if training else {}), **extra}


def test_optimizer_values_are_the_plans():
    assert typing.get_args(typing.get_type_hints(TrainingSpec)["optimizer"]) == OPTIMIZERS
    assert TrainingSpec().optimizer == DEFAULT_OPTIMIZER
    late = {f.name: f.default for f in dataclasses.fields(TrainingPlan) if f.name in TrainingPlan.LATE_FIELDS}
    # activation_checkpointing's 'auto' (the spec's default) is planned off unless the memory check turns it on.
    assert TrainingSpec().activation_checkpointing == "auto"
    assert late == {name: getattr(TrainingSpec(), name) if name != "activation_checkpointing" else False
                    for name in TrainingPlan.LATE_FIELDS}


def test_a_micro_batch_that_does_not_divide_the_per_device_batch_is_refused():
    problems = _spec_problems(_study({"task": "toxigen_qa", "batch_size": 16}, {"task": "arc_easy", "batch_size": 12},
                                     training={"micro_batch_size": 8}))
    assert problems == ["chains.c[1].batch_size: batch_size 12 over 1 worker(s) is 12 examples per device, which "
                        "training.micro_batch_size = 8 must divide (each device accumulates per-device batch / "
                        "micro_batch_size gradient passes per optimizer step)"]
    two_workers = {"execution": {"executor": "train", "workers_per_trial": 2}}
    problems = _spec_problems(_study({"task": "toxigen_qa", "batch_size": 16}, training={"micro_batch_size": 16},
                                     **two_workers))
    assert problems == ["chains.c[0].batch_size: batch_size 16 over 2 worker(s) is 8 examples per device, which "
                        "training.micro_batch_size = 16 must divide (each device accumulates per-device batch / "
                        "micro_batch_size gradient passes per optimizer step)"]
    assert _spec_problems(_study(training={"micro_batch_size": 0})) == [
        "training.micro_batch_size: must be ≥ 1 or null (got 0)"]
    grid = _spec_problems(_study(training={"micro_batch_size": 4}, grid={"stage1.batch_size": [8, 6]}))
    assert [p.split(":")[0] for p in grid] == ["grid.stage1.batch_size"] and "is 6 examples per device" in grid[0]
    search = {"num_samples": 2, "objectives": [{"metric": "toxigen_qa/accuracy", "mode": "max"}],
              "space": {"stage1.batch_size": {"int": [4, 16]}}}
    assert _spec_problems(_study(training={"micro_batch_size": 4}, search=search)) == [
        "search.space.stage1.batch_size: with workers_per_trial = 1 and micro_batch_size = 4 use {choice: [...]} "
        "of sizes that split evenly"]
    rl = _spec_problems(_study({"task": "toxigen_qa", "method": "rloo", "batch_size": 16,
                                "rloo": {"reward": {"batch_size": 6}}}, training={"micro_batch_size": 4}))
    assert [p.split(":")[0] for p in rl] == ["chains.c[0].rloo.reward.batch_size"]


def test_padding_free_is_refused_for_methods_trl_has_it_not_for():
    problems = _spec_problems(_study({"task": "toxigen_qa"}, {"task": "toxigen_qa", "method": "dpo"},
                                     training={"padding_free": True}))
    assert problems == ["training.padding_free: padding-free batches are for SFT stages only; chains.c[1] is a dpo "
                        "stage (TRL 1.12 supports them in SFTTrainer alone)"]


def test_activation_checkpointing_is_refused_for_ppo():
    problems = _spec_problems(_study({"task": "toxigen_qa", "method": "ppo"}, training={"activation_checkpointing": True}))
    assert problems == ["training.activation_checkpointing: chains.c[0] is a ppo stage: TRL's PPOTrainer runs its own "
                        "training loop, which never turns activation checkpointing on"]


def test_valid_settings_load_into_the_plan(data_dir):
    from study.planner import build_plans
    from study.spec_loading import spec_from_dict

    training = {"micro_batch_size": 2, "activation_checkpointing": True, "optimizer": "adamw_torch_fused",
                "padding_free": True}
    spec = spec_from_dict(_study({"task": "toxigen_qa", "batch_size": 8}, training=training))
    (plan,) = build_plans(spec, study_dir="/tmp/m", data_dir=str(data_dir), base_model_path="/models/tiny-0", chat=False)
    assert {name: getattr(plan.training, name) for name in training} == training
    assert plan.to_dict()["training"] == {**TrainingPlan(**dataclasses.asdict(TrainingSpec())).to_dict(), **training}
    assert TrialPlan.from_dict(plan.to_dict()) == plan


# ---------------------------------------------------------------- keys


def _keys(data_dir, training: dict | None) -> list[str]:
    from study.planner import build_plans
    from study.spec_loading import spec_from_dict

    spec = spec_from_dict(_study({"task": "toxigen_qa"}, {"task": "arc_easy"}, training=training))
    (plan,) = build_plans(spec, study_dir="/tmp/m", data_dir=str(data_dir), base_model_path="/models/tiny-0", chat=False)
    return [stage.stage_key for stage in plan.stages]


def test_defaults_keep_the_keys_and_settings_that_change_results_enter_them(data_dir):
    default = _keys(data_dir, None)
    spelled = {"micro_batch_size": None, "activation_checkpointing": False, "optimizer": "adamw_torch",
               "padding_free": False}
    assert _keys(data_dir, spelled) == default
    # Checkpointing recomputes the same values (test above): stages are shared either way.
    assert _keys(data_dir, {"activation_checkpointing": True}) == default
    changed = [_keys(data_dir, {"micro_batch_size": 4}), _keys(data_dir, {"optimizer": "adamw_torch_fused"}),
               _keys(data_dir, {"padding_free": True})]
    for keys in changed:
        assert not set(keys) & set(default)
    assert len({tuple(keys) for keys in changed}) == 3


def test_the_plan_dict_writes_late_settings_only_when_set():
    plan = training_plan()
    assert set(plan.to_dict()) == {"adam_beta1", "adam_beta2", "weight_decay", "lr_scheduler", "warmup_steps",
                                   "max_grad_norm", "eval_batch_size"}
    assert TrainingPlan.from_dict(plan.to_dict()) == plan
    checkpointed = training_plan({"activation_checkpointing": True, "micro_batch_size": 4})
    assert checkpointed.to_dict()["activation_checkpointing"] is True
    assert "activation_checkpointing" not in checkpointed.key_payload()
    assert checkpointed.key_payload()["micro_batch_size"] == 4
    with pytest.raises(ValueError, match="expected the keys"):
        TrainingPlan.from_dict({"adam_beta1": 0.9})


@pytest.mark.parametrize("method", ["ppo", "rloo"])
def test_online_rl_accumulates_micro_batches_into_the_stage_batch(method, tiny_model_path, data_dir, monkeypatch,
                                                                   tmp_path):
    """PPO's own loop and RLOO take the micro-batches from the same arguments: one rollout (one
    generation) of the stage's 8 prompts (completions) per optimizer step, in 2 passes of 4."""
    from tasks import load_examples
    from tests.plans import model_plan
    from trainables.models import load_model_and_tokenizer
    from trainables.stages import get_runner

    built = []
    module = __import__(f"trainables.stages.{method}", fromlist=["quiet_trainer"])
    monkeypatch.setattr(module, "quiet_trainer", built.append)
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    settings = {"reward": {"model": str(tiny_model_path)}, "response_length": 4, "num_ppo_epochs": 1,
                **({"num_generations": 4} if method == "rloo" else {})}
    stage = {"method": method, "task": "toxigen_qa", "batch_size": 8, "steps": 1, "seed": 0, method: settings}
    outcome = get_runner(method)(model=model, tokenizer=tokenizer, stage=stage_plan(stage),
                                 examples=load_examples("toxigen_qa", "train", size=8, data_dir=data_dir),
                                 training=training_plan({"micro_batch_size": 4}),
                                 model_plan=model_plan(tiny_model_path, max_length=256), work_dir=str(tmp_path))
    (trainer,) = built
    args = trainer.args
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 2)
    if method == "ppo":
        assert (args.local_batch_size, args.batch_size) == (8, 8)
    else:
        assert (args.generation_batch_size, args.steps_per_generation) == (8, 2)
    assert [row["step"] for row in outcome.log_rows] == [1]
