"""The memory model (trainables/memory_model.py) and the memory preflight of `study validate/run`.

Configs are built on the meta device (no weights): the tiny architecture's estimate is checked
against byte counts written out by hand below, Llama-2-7B's parameter count against its
published size and its SFT stage against the range issue #16 derives.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from trainables.memory_fit import fitting_changes
from trainables.memory_model import (CUDA_RUNTIME_BYTES, GB, HOST_PROCESS_BYTES, StepSetup, estimate,
                                     layer_activation_bytes, model_shape)

def test_tiny_parameter_counts_by_hand(tiny_shape):
    h, i, v = 64, 176, 2048
    layer = 4 * h * h + 3 * h * i + 2 * h  # q, k, v, o; gate, up, down; two RMSNorms
    assert tiny_shape.layer_params == layer == 50304
    assert tiny_shape.params == v * h + 2 * layer + h + v * h == 362816  # embeddings, layers, final norm, untied head
    assert tiny_shape.classifier_params == tiny_shape.params - v * h + h  # the LM head replaced by a scalar score head


def test_tiny_sft_estimate_by_hand(tiny_shape):
    """SFT, 4 sequences of 32 tokens on one GPU, float32 weights under bf16 autocast, foreach AdamW."""
    h, i, kv, v, p = 64, 176, 64, 2048, 362816
    per_layer = (2 * (4 * h + 4 * h)        # two RMSNorms: float32 input and normalised output
                 + 3 * 2 * h + 2 * 2 * h    # bf16 casts of the inputs of q, k, v and of gate, up
                 + 2 * (2 * h + 2 * kv)     # SDPA keeps q, k, v and its output
                 + 2 * h                    # o_proj's contiguous input
                 + 4 * 2 * i)               # gate out, SiLU out, up out, their product
    assert per_layer == layer_activation_bytes(tiny_shape) == 3712
    head_saved = (4 * h + 4 * h) + 2 * h + 4 * v  # final norm, the head's bf16 input, float32 log-softmax
    head_transient = (2 + 4 + 4) * v              # bf16 logits, their float32 copy, its gradient
    activations = 4 * 32 * (2 * per_layer + head_saved + head_transient)
    weights, grads, adam, foreach = 4 * p, 4 * p, 8 * p, 4 * p
    copies = 2 * p  # autocast's bf16 weight casts, kept for the backward
    total = weights + adam + CUDA_RUNTIME_BYTES + max(max(grads, activations + copies), grads + foreach)

    b = estimate(tiny_shape, StepSetup(method="sft", seq_len=32, batch_size=4))
    assert (b.weights, b.grads, b.optimizer, b.temporaries) == (weights, grads, adam, foreach)
    assert (b.activations, b.precision_copies, b.extra_models) == (activations, copies, 0)
    assert b.total == total == 1_009_781_632
    assert b.peak_phase == "forward/backward"
    assert b.host_ram == HOST_PROCESS_BYTES + 4 * p  # every rank reads the float32 model to the host first


def test_llama2_7b_parameters_and_sft_range(llama7b):
    assert llama7b.params == 6_738_415_616  # "7B": 6.74e9 as published
    assert (llama7b.layers, llama7b.hidden, llama7b.vocab) == (32, 4096, 32000)
    b = estimate(llama7b, StepSetup(method="sft", seq_len=256))  # today: batch 16 in one pass, 1 GPU
    assert 130 * GB <= b.total <= 160 * GB
    assert b.weights == pytest.approx(26.95e9, rel=1e-3) and b.optimizer == 2 * b.weights
    assert b.precision_copies == pytest.approx(13.48e9, rel=1e-3)
    # ~8 MB of activations per token (issue #16: ~9)
    assert 7e6 < b.activations / (16 * 256) < 9e6
    assert estimate(llama7b, StepSetup(method="sft", seq_len=2048)).total > 300 * GB


def test_fsdp_divides_the_sharded_parts(llama7b):
    one = estimate(llama7b, StepSetup(method="sft", seq_len=2048, batch_size=16))
    ddp = estimate(llama7b, StepSetup(method="sft", seq_len=2048, batch_size=16, workers=8))
    fsdp = estimate(llama7b, StepSetup(method="sft", seq_len=2048, batch_size=16, workers=8, fsdp=True))
    assert (fsdp.weights, fsdp.grads, fsdp.optimizer, fsdp.temporaries) == \
        (one.weights / 8, one.grads / 8, one.optimizer / 8, one.temporaries / 8)
    # plain DDP keeps everything on every rank and adds its gradient buckets
    assert (ddp.weights, ddp.optimizer) == (one.weights, one.optimizer)
    assert ddp.temporaries == one.temporaries + one.grads
    assert ddp.activations == fsdp.activations == one.activations / 8  # 2 of the 16 sequences per rank
    assert fsdp.total < 80 * GB < ddp.total


def test_micro_batches_checkpointing_and_optimizer(llama7b):
    base = StepSetup(method="sft", seq_len=1024)
    whole = estimate(llama7b, base)
    micro = estimate(llama7b, replace(base, micro_batch_size=1))
    assert micro.activations == pytest.approx(whole.activations / 16)
    # with accumulation the gradients stay allocated while the next micro-batch runs forward
    assert micro.total == pytest.approx(micro.weights + micro.optimizer + CUDA_RUNTIME_BYTES
                                        + max(micro.grads + micro.activations + micro.precision_copies,
                                              micro.grads + micro.temporaries))
    checkpointed = estimate(llama7b, replace(base, activation_checkpointing=True))
    assert checkpointed.activations < whole.activations / 5
    fused = estimate(llama7b, replace(base, optimizer="adamw_torch_fused"))
    assert fused.temporaries == 0 and fused.total <= whole.total


def test_extra_models_per_method(llama7b):
    p, cls = llama7b.params, llama7b.classifier_params
    sft = estimate(llama7b, StepSetup(method="sft", seq_len=256))
    dpo = estimate(llama7b, StepSetup(method="dpo", seq_len=256))
    assert dpo.extra_models == 4 * p and dpo.activations > 1.9 * sft.activations  # reference; chosen + rejected
    ppo = estimate(llama7b, StepSetup(method="ppo", seq_len=256))
    assert ppo.weights == 4 * (p + cls)  # policy and value model trained together
    assert ppo.extra_models == 4 * (p + cls)  # reference + a reward model trained from the base model
    rloo = estimate(llama7b, StepSetup(method="rloo", seq_len=256, workers=8, fsdp=True))
    assert rloo.extra_models == 4 * p / 8 + 4 * cls  # the reference sharded like the policy, the reward model whole
    reward = estimate(llama7b, StepSetup(method="reward", seq_len=256))
    assert reward.weights == 4 * cls and reward.extra_models == 0  # trained before the policy loads
    precomputed = estimate(llama7b, StepSetup(method="dpo", seq_len=256, dpo_precompute=True))
    assert precomputed.extra_models == 0 and dpo.total - precomputed.total == pytest.approx(4 * p)


def test_ppo_never_shards_nor_casts_and_is_built_whole(llama7b):
    """TRL's PPOTrainer builds its own accelerator (no FSDP, no bf16 from the training arguments):
    PPO keeps every model whole in the weights' dtype whatever execution.fsdp says (validation
    refuses FSDP with PPO), and building the trainer holds policy, reference, value and reward
    model at once before any optimizer exists."""
    p, cls = llama7b.params, llama7b.classifier_params
    one = estimate(llama7b, StepSetup(method="ppo", seq_len=256))
    eight = estimate(llama7b, StepSetup(method="ppo", seq_len=256, workers=8, fsdp=True))
    assert eight.weights == one.weights == 4 * (p + cls) and one.precision_copies == 0  # no bf16 casts
    small = estimate(llama7b, StepSetup(method="ppo", seq_len=16, batch_size=8, micro_batch_size=1))
    assert (4 * (2 * p + cls + cls) + CUDA_RUNTIME_BYTES) <= small.total  # construction: 4 whole models
    sft = estimate(llama7b, StepSetup(method="sft", seq_len=16, batch_size=8, workers=8, fsdp=True,
                                      activation_checkpointing=True))
    assert sft.peak_phase == "trainer construction" and sft.total == 4 * p + CUDA_RUNTIME_BYTES  # loaded whole first


def test_a_reference_sharded_by_trl_is_gathered_whole_for_each_forward(llama7b):
    """prepare_fsdp shards DPO's (not precomputed) and RLOO's reference as one unit: its forward
    gathers the whole model in bf16 beside the policy's gathered layers."""
    p = llama7b.params
    setup = StepSetup(method="dpo", seq_len=256, workers=8, fsdp=True)
    loaded = estimate(llama7b, setup)
    precomputed = estimate(llama7b, replace(setup, dpo_precompute=True))
    assert loaded.precision_copies - precomputed.precision_copies == 2 * p


def test_curvature_vectors_where_lanczos_runs_and_what_fits(llama7b, tiny_shape):
    """The vector counts are the ones the measurement is checked against (curvature.budget):
    power iteration 7, torch Lanczos 25 at 7B (its basis on the device, not ARPACK's float64
    basis on the host, which would take over a terabyte); Lanczos runs in torch at every size,
    so no ARPACK basis is ever added to the host."""
    setup = StepSetup(method="curvature", seq_len=256)
    power = estimate(llama7b, setup)
    assert power.temporaries == 7 * llama7b.params * 4
    lanczos = estimate(llama7b, replace(setup, curvature_algorithms=("power_iteration", "lanczos")))
    assert lanczos.temporaries == 25 * llama7b.params * 4
    assert lanczos.host_ram == pytest.approx(HOST_PROCESS_BYTES + llama7b.params * 4)  # the float32 load only
    small = estimate(tiny_shape, StepSetup(method="curvature", seq_len=64, curvature_algorithms=("lanczos",), on_gpu=False))
    # the float32 load only (no ARPACK basis); on CPU the device is the host
    assert small.host_ram == pytest.approx(HOST_PROCESS_BYTES + tiny_shape.params * 4 + small.total)
    changes = fitting_changes(llama7b, StepSetup(method="curvature", seq_len=256), 80 * GB)
    assert any("curvature.parameters" in c for c in changes)


def test_what_to_change_names_settings_that_fit(llama7b):
    setup = StepSetup(method="sft", seq_len=2048)
    changes = fitting_changes(llama7b, setup, 80 * GB)
    assert changes[0].startswith("FSDP over 8 GPU workers")
    assert estimate(llama7b, replace(setup, workers=8, fsdp=True)).fits(80 * GB)
    assert not estimate(llama7b, replace(setup, workers=4, fsdp=True)).fits(80 * GB)


def test_autocast_follows_the_engines_rule(monkeypatch):
    import torch

    from trainables.models import bf16_autocast

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    for dtype in ("auto", "float32", "bfloat16"):
        assert StepSetup(method="sft", seq_len=8, dtype=dtype).autocast == bf16_autocast(dtype)


# ---------------------------------------------------------------- the preflight through the CLI


def _validate(capsys, *sets):
    from study.cli import main

    code = main(["validate", "paper-ordering", *[f"--set={s}" for s in sets]])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_validate_refuses_a_7b_stage_on_one_gpu(capsys, llama7b_folder):
    code, _, err = _validate(capsys, f"model.name={llama7b_folder}", "execution.gpus_per_trial=1")
    assert code == 2
    assert "chains.arc_tqa[0]: sft needs about 358" in err
    assert "FSDP over 8 GPU workers" in err and "execution.gpu_memory_gb" in err


def test_validate_accepts_fsdp_over_eight(capsys, llama7b_folder):
    code, out, _ = _validate(capsys, f"model.name={llama7b_folder}", "execution.gpus_per_trial=8",
                             "execution.workers_per_trial=8", "execution.fsdp=true")
    assert code == 0 and "memory: chains.arc_tqa[0]" in out


def test_the_studys_training_settings_reach_the_estimate(capsys, llama7b_folder):
    """Micro-batches and activation checkpointing set in the study file change what the check
    estimates: FSDP over 4 x 80 GB does not fit at full length, and fits with both."""
    fsdp4 = [f"model.name={llama7b_folder}", "execution.workers_per_trial=4", "execution.gpus_per_trial=4",
             "execution.fsdp=true"]
    code, _, err = _validate(capsys, *fsdp4, "training.activation_checkpointing=false")  # not 'auto': it would fit
    assert code == 2 and "training.activation_checkpointing: true" in err
    code, out, _ = _validate(capsys, *fsdp4, "training.micro_batch_size=1", "training.activation_checkpointing=true")
    assert code == 0 and "memory: chains.arc_tqa[0]" in out


def test_bigger_gpus_and_shared_gpus_change_the_budget(capsys, llama7b_folder):
    fsdp = [f"model.name={llama7b_folder}", "execution.workers_per_trial=8", "execution.fsdp=true",
            "training.activation_checkpointing=false"]  # not 'auto', which fits 40 GB by checkpointing
    assert _validate(capsys, *fsdp, "execution.gpus_per_trial=8", "execution.gpu_memory_gb=40")[0] == 2
    code, _, err = _validate(capsys, "model=tiny", "execution.gpus_per_trial=1", "execution.gpu_memory_gb=0")
    assert code == 2 and "execution.gpu_memory_gb" in err


def test_tiny_and_cpu_studies(capsys):
    code, out, _ = _validate(capsys, "model=tiny", "execution.gpus_per_trial=1")
    assert code == 0 and "memory: chains." in out  # the tiny model fits trivially
    code, out, _ = _validate(capsys, "model.name=nobody/no-such-model")  # CPU study: no config read
    assert code == 0 and "memory" not in out


def test_validate_downloads_no_config(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, _ = _validate(capsys, "execution.gpus_per_trial=1")  # meta-llama/Llama-2-7b-hf, not cached here
    assert code == 0 and "memory: not checked" in out


def test_readme_table_row_for_paper_ordering():
    """bench/memory_table.py, which writes docs/paper-experiments.md's table: paper-ordering needs FSDP over 2
    GPUs of 80 GB with the default checkpointing (68.4 GB per GPU), one of 141 GB (136.3 GB), and
    FSDP over 8 GPUs of 80 GB without checkpointing; paper-batch-size's batch-2 grid point allows
    2 workers at most."""
    import importlib.util
    from pathlib import Path

    from study.presets import preset_paths

    path = Path(__file__).resolve().parents[1] / "bench" / "memory_table.py"
    spec = importlib.util.spec_from_file_location("memory_table", path)
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    assert model_shape(table.published_config("meta-llama/Llama-2-7b-hf")).params == 6_738_415_616
    presets = preset_paths()
    assert table.fewest_workers(presets["paper-ordering"], 80) == 2
    assert table.fewest_workers(presets["paper-ordering"], 141) == 1
    assert table.fewest_workers(presets["paper-ordering"], 80, checkpointing="false") == 8
    assert table.with_execution(presets["paper-batch-size"], workers=4, gpu_gb=80, curvature=False) is None


def test_a_rollout_is_a_phase_of_online_rl_by_hand(tiny_shape):
    """PPO/RLOO: the rollout adds the generation's KV cache and one layer's prefill transients, or
    every position's logits and their float32 log-softmax, whichever is larger, plus PPO's kept
    float32 scores of the generated tokens; it sets the peak when training's phases are small."""
    from trainables.memory_model import kv_cache_token_bytes, layer_inference_bytes

    setup = StepSetup(method="rloo", seq_len=64, batch_size=8, micro_batch_size=1, activation_checkpointing=True,
                      rollout_tokens=16)
    rloo = estimate(tiny_shape, setup)
    kv = 2 * 2 * 64 * 2  # layers × (key, value) × kv width 64 (4 heads of 16) × 2 bytes (bf16 autocast)
    assert kv_cache_token_bytes(tiny_shape, compute_bytes=2) == kv
    generation = 8 * 64 * (kv + layer_inference_bytes(tiny_shape, weight_bytes=4, compute_bytes=2))
    scoring = 8 * 64 * 2048 * (2 + 4)  # bf16 logits + float32 log-softmax over the vocabulary
    assert rloo.rollout == max(generation, scoring) == scoring
    ppo = estimate(tiny_shape, replace(setup, method="ppo", activation_checkpointing=False))
    assert ppo.rollout == 8 * 64 * 2048 * (4 + 4) + 8 * 16 * 2048 * 4  # PPO runs in float32 (no autocast)
    assert rloo.peak_phase == "rollout"
    assert rloo.total == pytest.approx(rloo.weights + rloo.optimizer + rloo.extra_models + rloo.runtime + rloo.rollout)
    sft = estimate(tiny_shape, replace(setup, method="sft"))
    assert sft.rollout == 0 and sft.peak_phase != "rollout"
