"""execution.fsdp and training.activation_checkpointing 'auto' (the defaults): resolved by the
memory check of `study run` / `study validate` (study.orchestrate.check_memory) before planning.

Llama-2-7B's config is given as a folder with its config.json only (no download, no weights).
Hand arithmetic of the SFT stage used below (one stage, batch 16, max_length 2048, 8 GPU workers:
2 sequences = 4,096 tokens per rank; p = 6,738,415,616 parameters, a decoder layer
L = 4·4096² + 3·4096·11008 + 2·4096 = 202,383,360, the rest R = p − 32·L = 262,148,096):

  per rank under FSDP over 8: weights 4p/8 = 3.37 GB, grads 3.37, AdamW 8p/8 = 6.74, foreach
  temporary 3.37, CUDA runtime 1; bf16 gathered layers (2L + R)·2 + L·2 = 1.74 GB;
  activations per token: 32 layers × 235,520 B (norms 65,536, projection inputs 40,960, SDPA
  40,960, SwiGLU 88,064) + head 168,960 + loss 320,000 = 8,025,600 B, × 4,096 tokens = 32.87 GB.
  Peak = resident (3.37 + 6.74 + 1) + forward/backward (32.87 + 1.74) = 45.7 GB: fits 80 GB, not 40.
  With checkpointing: per token 32 × 4·4096 (each layer's input) + 235,520 (one layer
  recomputed) + 488,960 = 1,248,768 B, × 4,096 = 5.11 GB: peak 11.11 + 5.11 + 1.74 = 18.0 GB.
  Without FSDP (DDP, everything whole on each rank): weights 26.95 + AdamW 53.91 + DDP buckets
  26.95 + runtime 1, plus the optimizer step's grads 26.95 and foreach temporary 26.95 = 163 GB.
"""

from __future__ import annotations

import pytest

from study.orchestrate import check_memory
from study.planner import build_plans, study_base_key
from study.spec_loading import SpecError, spec_from_dict

def _spec(model: str, *, stage: dict | None = None, execution: dict | None = None, training: dict | None = None,
          max_length: int = 2048):
    return spec_from_dict({
        "name": "auto", "model": {"name": model, "max_length": max_length},
        "tasks": {"toxigen_qa": {"train_size": 16, "eval_size": 4}},
        "chains": {"c": [{"task": "toxigen_qa", "batch_size": 16, **(stage or {})}]},
        **({"training": training} if training else {}),
        **({"execution": execution} if execution is not None else {})})


GPU8 = {"gpus_per_trial": 8, "workers_per_trial": 8}


def test_the_defaults_are_auto():
    spec = _spec("tiny")
    assert spec.execution.fsdp == "auto" and spec.training.activation_checkpointing == "auto"


def test_7b_over_eight_gpus_resolves_to_fsdp_alone(llama7b_folder, data_dir):
    from trainables.memory_model import GB, estimate
    from trainables.memory_preflight import study_steps

    spec = _spec(llama7b_folder, execution=GPU8)
    resolved, lines = check_memory(spec)
    assert resolved.execution.fsdp is True and resolved.training.activation_checkpointing is False
    assert lines[0] == ("memory: auto resolved: execution.fsdp true (without it chains.c[0] needs 163 GB per GPU, "
                        "over 80 GB); training.activation_checkpointing false (every step fits without it)")
    ((_, shape, setup),) = study_steps(resolved)
    assert estimate(shape, setup).total == pytest.approx(45.72 * GB, rel=1e-3)  # by hand (module docstring)
    # FSDP enters the base key when on, as an explicit `fsdp: true` does.
    explicit = _spec(llama7b_folder, execution={**GPU8, "fsdp": True})
    assert study_base_key(resolved, None, None, False) == study_base_key(explicit, None, None, False)
    assert study_base_key(resolved, None, None, False) != study_base_key(spec, None, None, False)


def test_7b_over_eight_40gb_gpus_adds_checkpointing(llama7b_folder):
    from trainables.memory_model import GB, estimate
    from trainables.memory_preflight import study_steps

    # 8 evaluation rows: what one 40 GB GPU scores at max_length 2048 (tests/test_eval_batch.py).
    spec = _spec(llama7b_folder, execution={**GPU8, "gpu_memory_gb": 40}, training={"eval_batch_size": 8})
    resolved, lines = check_memory(spec)
    assert resolved.execution.fsdp is True and resolved.training.activation_checkpointing is True
    assert "training.activation_checkpointing true (with FSDP alone chains.c[0] needs 46 GB per GPU)" in lines[0]
    ((_, shape, setup),) = study_steps(resolved)
    # Training needs 17.97 GB by hand (module docstring); loading the whole float32 model onto
    # each GPU before FSDP shards it needs more: 6,738,415,616 × 4 B + the 1 GB runtime.
    breakdown = estimate(shape, setup)
    assert breakdown.peak_phase == "trainer construction"
    assert breakdown.total == pytest.approx(27.95 * GB, rel=1e-3)
    # Checkpointing never enters the keys: the same stages as FSDP alone.
    fsdp_only = _spec(llama7b_folder, execution={**GPU8, "gpu_memory_gb": 40, "fsdp": True},
                      training={"activation_checkpointing": False, "eval_batch_size": 8})
    assert study_base_key(resolved, None, None, False) == study_base_key(fsdp_only, None, None, False)
    (plan,) = build_plans(resolved, study_dir="/tmp/a", data_dir=None, base_model_path=None, chat=False)
    assert plan.training.activation_checkpointing is True


def test_a_small_model_resolves_to_both_off():
    spec = _spec("tiny", execution={"gpus_per_trial": 2, "workers_per_trial": 2}, max_length=128)
    resolved, lines = check_memory(spec)
    assert resolved.execution.fsdp is False and resolved.training.activation_checkpointing is False
    assert lines[0] == ("memory: auto resolved: execution.fsdp false (every step fits without it); "
                        "training.activation_checkpointing false (every step fits without it)")


def test_an_explicit_false_is_kept_and_refused(llama7b_folder):
    spec = _spec(llama7b_folder, execution={**GPU8, "fsdp": False})
    with pytest.raises(SpecError) as err:
        check_memory(spec)
    (problem,) = err.value.problems
    assert problem.path == "chains.c[0]"
    assert "it would fit with execution.fsdp: true (shard over the 8 workers)" in problem.message


def test_one_worker_cannot_shard_and_the_refusal_names_what_fits(llama7b_folder):
    spec = _spec(llama7b_folder, execution={"gpus_per_trial": 1})
    with pytest.raises(SpecError) as err:
        check_memory(spec)
    (problem,) = err.value.problems
    assert "FSDP over 8 GPU workers" in problem.message
    assert ("auto resolved: execution.fsdp false (one worker per trial: nothing to shard over); "
            "training.activation_checkpointing false (it fits no more steps); no setting of them fits every step"
            ) in problem.message


def test_auto_never_checkpoints_a_study_with_a_ppo_stage():
    spec = _spec("tiny", stage={"method": "ppo"}, max_length=128,
                 execution={"gpus_per_trial": 2, "workers_per_trial": 2, "gpu_memory_gb": 0.001})
    with pytest.raises(SpecError) as err:
        check_memory(spec)
    steps = [p for p in err.value.problems if p.path.startswith("chains")]  # (evaluation does not fit either)
    assert steps and all("training.activation_checkpointing false (a PPO stage: TRL's PPOTrainer never turns it on)"
                         in p.message for p in steps)


def test_ppo_stages_never_get_fsdp(llama7b_folder):
    """TRL's PPOTrainer builds its own accelerator, which does not shard: an explicit fsdp: true
    is refused at its field, and auto keeps it off (saying why) even where it would help."""
    spec = _spec(llama7b_folder, stage={"method": "ppo"}, execution={**GPU8, "gpu_memory_gb": 1000})
    resolved, lines = check_memory(spec)
    assert resolved.execution.fsdp is False
    assert "execution.fsdp false (a PPO stage: TRL's PPOTrainer does not shard)" in lines[0]
    with pytest.raises(SpecError) as err:
        _spec(llama7b_folder, stage={"method": "ppo"}, execution={**GPU8, "fsdp": True})
    assert any(p.path == "execution.fsdp" and "ppo stage" in p.message for p in err.value.problems)


def test_a_cpu_study_resolves_to_off_and_keeps_its_plans(data_dir):
    spec = _spec("tiny", max_length=128)
    resolved, lines = check_memory(spec)
    assert lines == []
    assert resolved.execution.fsdp is False and resolved.training.activation_checkpointing is False
    kwargs = dict(study_dir="/tmp/a", data_dir=str(data_dir), base_model_path="/m/tiny-0123456789ab", chat=False)
    before = spec_from_dict({**spec.to_dict(), "execution": {**spec.to_dict()["execution"], "fsdp": False},
                             "training": {**spec.to_dict()["training"], "activation_checkpointing": False}})
    assert [p.to_dict() for p in build_plans(resolved, **kwargs)] == [p.to_dict() for p in build_plans(before, **kwargs)]
    assert [p.to_dict() for p in build_plans(spec, **kwargs)] == [p.to_dict() for p in build_plans(before, **kwargs)]


@pytest.mark.parametrize("field,value", [("execution.fsdp", "maybe"), ("execution.fsdp", 1),
                                         ("training.activation_checkpointing", "on")])
def test_bad_values_are_problems_at_their_field(field, value):
    section, name = field.split(".")
    with pytest.raises(SpecError) as err:
        spec_from_dict({"name": "bad", "model": "tiny", "chains": {"c": [{"task": "toxigen_qa"}]},
                        section: {name: value}})
    assert [(p.path, p.message) for p in err.value.problems] == [
        (field, f"must be true or false or one of 'auto' (got {value!r})")]


def test_workers_never_read_auto(monkeypatch):
    from trainables.tune_trial import chain_trial, train_worker_loop

    with pytest.raises(TypeError, match="got 'auto'"):
        train_worker_loop({"plan": None, "cpus": 1, "gpus": 0, "fsdp": "auto"})
    with pytest.raises(TypeError, match="got 'auto'"):
        chain_trial({}, plan_for=lambda config: None, executor="train", cpus_per_worker=1, gpus_per_worker=1,
                    max_failures=0, workers=2, fsdp="auto")
