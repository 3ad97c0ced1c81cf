"""Evaluation batch sizes from the memory model (issue #16 item 7): the scoring and generation
estimate against hand-computed bytes, the batch chosen for Llama-2-7B (meta device) at 80 and
40 GB, `training.eval_batch_size` / `generation.batch_size: auto` through validation, planning
and `study run`'s resolution."""

from __future__ import annotations

import pytest

from trainables.eval_memory import EVAL_BATCH_CAP, EvalSetup, eval_estimate, largest_eval_batch
from trainables.memory_model import CUDA_RUNTIME_BYTES, GB, layer_inference_bytes

# ---------------------------------------------------------------- the estimate, by hand


def test_tiny_scoring_estimate_by_hand(tiny_shape):
    """2 option rows of 16 tokens, 4 answer tokens, float32 weights under bf16 autocast."""
    h, i, kv, v, p, layers = 64, 176, 64, 2048, 362816, 2
    c, r = 2, 4
    per_token = max(r * h + 8 * h + r * h,                                          # RMSNorm: 1024
                    2 * r * h + c * h + c * (h + 2 * kv) + c * (h + kv) + c * h,    # attention: 1408
                    2 * r * h + c * h + 3 * c * i)                                  # MLP: 1696
    assert per_token == layer_inference_bytes(tiny_shape, weight_bytes=4, compute_bytes=2) == 1696
    token_kv = layers * 2 * kv * c  # 512: a key and a value per layer, bf16
    weights, cast = 4 * p, 2 * v * h  # the LM head's bf16 cast is the largest weight cast
    cache = 2 * (16 + 4) * token_kv
    prefill = 2 * (16 * per_token + 3 * 16 * 16) + 2 * v * (2 + 8)  # layer, bool + bf16 mask; last logits
    tail = 2 * (4 * per_token + 3 * 4 * 20 + 16 * token_kv // layers) + 2 * 4 * v * (2 + 8)
    assert (prefill, tail) == (96768, 186080)
    got = eval_estimate(tiny_shape, EvalSetup(seq_len=16, answer_tokens=4), 2, "scoring")
    assert got.phase == "scoring answer pass"
    assert got.total == weights + cast + CUDA_RUNTIME_BYTES + cache + tail
    assert (got.weights, got.weight_cast, got.kv_cache) == (weights, cast, cache)


def test_tiny_generation_estimate_by_hand(tiny_shape):
    """2 prompts, 4 new tokens within 16, float32 scoring (no autocast): 4-byte activations."""
    h, i, kv, v, p, layers = 64, 176, 64, 2048, 362816, 2
    c, r = 4, 4
    per_token = max(r * h + 8 * h + r * h, 2 * r * h + c * h + c * (h + 2 * kv) + c * (h + kv) + c * h,
                    2 * r * h + c * h + 3 * c * i)
    assert per_token == 2880
    token_kv = layers * 2 * kv * c
    cache = 2 * 16 * token_kv  # prompt (cut to 16 - 4 = 12) + 4 new tokens per row
    prefill = 2 * (12 * per_token + 5 * 12 * 12) + 2 * v * (4 + 4)  # logits of the last position + float32 copy
    decode = 2 * (per_token + 5 * 16 + 2 * 16 * token_kv // layers) + 2 * v * (4 + 4)
    assert prefill > decode
    got = eval_estimate(tiny_shape, EvalSetup(seq_len=16, precision="float32", max_new_tokens=4), 2, "generation")
    assert got.phase == "generation prefill" and got.weight_cast == 0
    assert got.total == 4 * p + CUDA_RUNTIME_BYTES + cache + prefill


def test_bf16_weights_halve_weights_and_cast_nothing(tiny_shape):
    fp32 = eval_estimate(tiny_shape, EvalSetup(seq_len=16), 2)
    bf16 = eval_estimate(tiny_shape, EvalSetup(seq_len=16, dtype="bfloat16"), 2)
    assert bf16.weights == fp32.weights / 2 and bf16.weight_cast == 0 and bf16.kv_cache == fp32.kv_cache


def test_inference_mode_casts_weights_anew_each_call():
    """The estimate keeps one weight cast at a time, not autocast's cache of every weight's bf16
    copy (2 bytes per parameter): under torch.inference_mode autocast does not cache (on CPU as
    on CUDA, the same caching rule); with grad or no_grad it would, 2 of 5 casts."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    linear, x = torch.nn.Linear(8, 8), torch.randn(2, 8)
    counts = {}
    for name, mode in (("no_grad", torch.no_grad), ("inference", torch.inference_mode)):
        with mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(3):
                    linear(x)
        counts[name] = sum(e.name == "aten::_to_copy" for e in prof.events())
    assert counts == {"no_grad": 3 + 2, "inference": 3 * 3}  # input each call; weight and bias once / each call


# ---------------------------------------------------------------- Llama-2-7B


@pytest.mark.parametrize("budget_gb, length, kind, expected", [
    # Fixed: weights 6,738,415,616 × 4 = 26.95 GB + the head's bf16 cast 2·32000·4096 = 0.26 GB
    # + runtime 1 GB = 28.22 GB. Per 2,048-token row (scoring): KV cache (2048 + 32) tokens ×
    # 32 layers × 2 × 4096 × 2 B = 1.091 GB, one layer's transients 2048 × 107,008 B (the MLP
    # phase: 2·4·4096 + 2·4096 + 3·2·11008) = 0.219 GB, mask 3 × 2048² = 0.013 GB: 1.323 GB.
    (80, 2048, "scoring", 32),      # (80 - 28.22) / 1.323 = 39.1 rows -> 32
    (40, 2048, "scoring", 8),       # (40 - 28.22) / 1.323 = 8.9 rows -> 8
    # Per 256-token row: KV 288 × 524,288 = 0.151 GB + 256 × 107,008 = 0.027 GB (+ mask, logits): 0.179 GB.
    (80, 256, "scoring", 256),      # 289 rows -> capped at EVAL_BATCH_CAP
    (40, 256, "scoring", 64),       # 65.9 rows -> 64
    # Generation: KV of 2048 tokens (1.074 GB) + prefill transients of 2016 (0.216 GB) + mask 0.012 GB.
    (80, 2048, "generation", 32),   # (80 - 28.22) / 1.302 = 39.8 -> 32
    (40, 2048, "generation", 8),    # 9.05 -> 8
    # 256 tokens: KV 0.134 GB + 224 × 107,008 = 0.024 GB (+ mask 0.00015): 0.158 GB per row.
    (40, 256, "generation", 64),    # 74.5 -> 64
])
def test_llama7b_batches_by_hand(llama7b, budget_gb, length, kind, expected):
    setup = EvalSetup(seq_len=length)
    assert largest_eval_batch(llama7b, setup, budget_gb * GB, kind) == expected
    if expected < EVAL_BATCH_CAP:  # the next power of two does not fit
        assert not eval_estimate(llama7b, setup, 2 * expected, kind).fits(budget_gb * GB)


def test_llama7b_that_does_not_fit_gives_none(llama7b):
    # 26.95 GB of float32 weights + runtime: nothing fits 28 GB; bf16 weights leave room.
    assert largest_eval_batch(llama7b, EvalSetup(seq_len=2048), 28 * GB) is None
    assert largest_eval_batch(llama7b, EvalSetup(seq_len=2048, dtype="bfloat16"), 28 * GB) == 8


# ---------------------------------------------------------------- the study file, plans and keys


def _raw(**extra):
    return {"name": "p", "model": "tiny", "chains": {"c": [{"task": "toxigen_qa"}]}, **extra}


def _plans(spec, data_dir):
    from study.planner import build_plans

    return build_plans(spec, study_dir="/tmp/p", data_dir=str(data_dir), base_model_path="/m/tiny-0123456789ab",
                       chat=False)


GENERATES = {"toxigen_qa": {"eval_modes": ["score", "generate"]}}
AUTO = {"training": {"eval_batch_size": "auto"}, "generation": {"batch_size": "auto"}}


def test_auto_is_the_old_numbers_on_cpu(data_dir):
    """A CPU study's auto plans, keys and measure keys equal those of the numbers it had before."""
    from contract.keys import measure_keys
    from study.spec_loading import spec_from_dict

    auto = spec_from_dict(_raw(data_dir=str(data_dir), tasks=GENERATES, **AUTO))
    assert (auto.training.eval_batch_size, auto.generation.batch_size) == ("auto", "auto")
    pinned = spec_from_dict(_raw(data_dir=str(data_dir), tasks=GENERATES))  # the defaults: 32 and 16
    a, p = _plans(auto, data_dir)[0], _plans(pinned, data_dir)[0]
    assert (a.training.eval_batch_size, a.generation.batch_size) == (32, 16)
    assert a.to_dict() == p.to_dict() and measure_keys(a) == measure_keys(p)


def test_a_gpu_study_plans_the_memory_models_batches(data_dir, llama7b_folder):
    """Llama-2-7B at max_length 256 on 40 GB GPUs: auto = 64 for scoring (test above) and for
    generation (prompt cut to 256 - 12: (40 - 28.22) GB / 0.160 GB a row = 73 -> 64)."""
    from contract.keys import measure_keys
    from study.orchestrate import check_memory, with_eval_batch_sizes
    from study.spec_loading import spec_from_dict

    raw = _raw(data_dir=str(data_dir), tasks=GENERATES, model={"name": llama7b_folder, "max_length": 256},
               execution={"gpus_per_trial": 1, "gpu_memory_gb": 40}, **AUTO)
    spec = with_eval_batch_sizes(spec_from_dict(raw))
    assert (spec.training.eval_batch_size, spec.generation.batch_size) == (64, 64)
    plan = _plans(spec, data_dir)[0]
    assert (plan.training.eval_batch_size, plan.generation.batch_size) == (64, 64)
    unresolved = _plans(spec_from_dict(raw), data_dir)[0]  # planned without `study run`: the CPU numbers
    assert measure_keys(plan) != measure_keys(unresolved)
    assert with_eval_batch_sizes(spec) == spec  # numbers stay as they are
    cpu = spec_from_dict({**raw, "execution": {"gpus_per_trial": 0}})
    assert with_eval_batch_sizes(cpu) is cpu
    from study.spec_loading import SpecError

    with pytest.raises(SpecError) as err:  # SFT of a 7B model does not fit 40 GB; the evaluation lines say why not
        check_memory(spec_from_dict(raw))
    assert "training.eval_batch_size" not in err.value.render()


@pytest.mark.parametrize(("field", "value", "message"), [
    ("training", {"eval_batch_size": 0}, "training.eval_batch_size: must be ≥ 1 or auto (got 0)"),
    ("training", {"eval_batch_size": "big"}, "training.eval_batch_size: must be an integer or one of 'auto' (got 'big')"),
    ("training", {"eval_batch_size": True}, "training.eval_batch_size: must be an integer or one of 'auto'"),
    ("generation", {"batch_size": 0}, "generation.batch_size: must be ≥ 1 (got 0)"),
    ("generation", {"batch_size": "auto!"}, "generation.batch_size: must be an integer or one of 'auto'"),
])
def test_bad_batch_sizes_are_refused_at_their_field(field, value, message):
    from study.spec_loading import SpecError, spec_from_dict

    with pytest.raises(SpecError) as err:
        spec_from_dict(_raw(**{field: value}))
    assert message in err.value.render()


# ---------------------------------------------------------------- `study validate`


def _validate(capsys, *sets):
    from study.cli import main

    code = main(["validate", "paper-ordering", *[f"--set={s}" for s in sets]])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_validate_prints_the_resolved_batches(capsys, llama7b_folder):
    fsdp8 = [f"model.name={llama7b_folder}", "execution.gpus_per_trial=8", "execution.workers_per_trial=8",
             "execution.fsdp=true"]
    code, out, _ = _validate(capsys, *fsdp8)  # the default numbers, checked: 32 and 16 rows fit
    assert code == 0 and "memory: evaluation: training.eval_batch_size: 32: scoring needs about 70.5 GB" in out
    code, out, _ = _validate(capsys, *fsdp8, "training.eval_batch_size=auto", "generation.batch_size=auto")
    assert code == 0
    # Evaluation runs the whole model on one 80 GB GPU at max_length 2048: 32 rows (test above).
    assert "memory: evaluation: training.eval_batch_size: auto = 32 (the largest power of two up to 256" in out
    assert "memory: evaluation: generation.batch_size: auto = 32" in out  # paper-ordering generates
    code, _, err = _validate(capsys, *fsdp8, "training.eval_batch_size=64")  # 64 rows need ~113 GB
    assert code == 2 and "training.eval_batch_size: scoring needs about" in err and "at most 32 fits" in err
    code, out, _ = _validate(capsys, *fsdp8, "training.eval_batch_size=16")
    assert code == 0 and "memory: evaluation: training.eval_batch_size: 16: scoring needs about" in out


def test_validate_refuses_an_evaluation_that_fits_at_no_batch(capsys, llama7b_folder):
    """float32 weights (27 GB) + runtime leave nothing on a 28 GB GPU; bf16 weights would fit."""
    code, _, err = _validate(capsys, f"model.name={llama7b_folder}", "execution.gpus_per_trial=8",
                             "execution.workers_per_trial=8", "execution.fsdp=true", "execution.gpu_memory_gb=28")
    assert code == 2
    assert "training.eval_batch_size: scoring of one row needs about 29.5 GB" in err
    assert "it may fit with model.dtype: bfloat16" in err
    assert "generation.batch_size: generation of one row needs about" in err


def test_cpu_studies_print_no_evaluation_lines(capsys):
    code, out, _ = _validate(capsys, "model=tiny")
    assert code == 0 and "memory" not in out


def test_study_run_plans_with_the_resolved_batches(data_dir, tmp_path, monkeypatch):
    """`study run` resolves auto before anything is planned: what reaches the planning step of a
    tiny GPU study is an integer (the tiny model fits 256 rows of 128 tokens many times over)."""
    import study.orchestrate as orchestrate
    from study.spec_loading import spec_from_dict

    seen = {}

    def planned(spec, study_dir, **_):
        seen["spec"] = spec
        return orchestrate.RunOutcome(study_dir=study_dir, trials=0, failed=[], report=None)

    monkeypatch.setattr(orchestrate, "_run_study", planned)
    spec = spec_from_dict(_raw(data_dir=str(data_dir), storage=str(tmp_path), model={"name": "tiny", "max_length": 128},
                               execution={"gpus_per_trial": 1}, **AUTO))
    orchestrate.run_study(spec)
    assert seen["spec"].training.eval_batch_size == EVAL_BATCH_CAP
    assert seen["spec"].generation.batch_size == "auto"  # the study generates nothing: left to the planner
