"""Curvature of the tiny model's SFT loss: the loss is SFT's, the algorithms agree, nothing is modified."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("hessian_eigenthings")
pytest.importorskip("scipy")

from contract.plan import TrainingPlan  # noqa: E402
from tasks import load_examples  # noqa: E402
from tests.plans import curvature_settings, stage_plan  # noqa: E402

TRAINING = TrainingPlan.from_dict({"adam_beta1": 0.9, "adam_beta2": 0.95, "weight_decay": 0.1, "lr_scheduler": "cosine",
                                    "warmup_steps": 0, "max_grad_norm": 1.0, "eval_batch_size": 8})


@pytest.fixture(scope="module")
def tiny(tiny_model_path):
    from trainables.curvature import load_model_for_curvature

    return load_model_for_curvature(str(tiny_model_path))


@pytest.fixture(scope="module")
def mixed_examples(data_dir):
    """Both templates (two-option ToxiGenQA, four-option ARC): different prompt and completion lengths."""
    return (load_examples("toxigen_qa", "train", size=4, data_dir=data_dir)
            + load_examples("arc_easy", "train", size=4, data_dir=data_dir))


def _trl_batch(model, tokenizer, examples, tmp_path):
    from trainables.stages.sft import build_sft_trainer

    stage = {"method": "sft", "learning_rate": 1e-3, "batch_size": len(examples), "steps": 1, "seed": 0}
    trainer = build_sft_trainer(model=model, tokenizer=tokenizer, stage=stage_plan(stage), examples=examples,
                                training=TRAINING, max_length=512, model_dtype="auto", work_dir=str(tmp_path / "work"))
    return next(iter(trainer.get_train_dataloader()))


def test_loss_equals_transformers_and_trl_sft_loss(tiny, mixed_examples, tmp_path):
    from trainables.curvature import lm_loss_fn, sft_batches

    model, tokenizer = tiny
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            (ours,) = sft_batches(tokenizer, mixed_examples, max_length=512, batch_size=len(mixed_examples))
            loss = lm_loss_fn(model, ours)
            # transformers' own masked loss on the same (left-padded) batch.
            hf = model(input_ids=ours["input_ids"], attention_mask=ours["attention_mask"],
                       position_ids=ours["position_ids"], labels=ours["labels"]).loss
            trl_batch = _trl_batch(model, tokenizer, mixed_examples, tmp_path)
            trl = model(**trl_batch).loss
            # Several batches: HessianOperator averages their losses, which must give the same mean.
            split = sft_batches(tokenizer, mixed_examples, max_length=512, batch_size=3)
            split_mean = sum(lm_loss_fn(model, b) for b in split) / len(split)
            ours_on_trl = lm_loss_fn(model, trl_batch)
    finally:
        model.train(was_training)
    assert len(split) == 3
    assert float(loss) == pytest.approx(float(hf), abs=1e-5)
    assert float(loss) == pytest.approx(float(trl), abs=1e-5)
    assert float(ours_on_trl) == pytest.approx(float(trl), abs=1e-5)  # right padding too
    assert float(split_mean) == pytest.approx(float(trl), abs=1e-5)


def test_supervised_tokens_are_those_trl_trains_on(tiny, mixed_examples, tmp_path):
    from trainables.curvature import sft_batches

    model, tokenizer = tiny
    (ours,) = sft_batches(tokenizer, mixed_examples, max_length=512, batch_size=len(mixed_examples))
    trl = _trl_batch(model, tokenizer, mixed_examples, tmp_path)

    def rows(batch):
        out = []
        for ids, mask, labels in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist(),
                                     batch["labels"].tolist()):
            out.append(tuple((t, lab) for t, m, lab in zip(ids, mask, labels) if m))
        return sorted(out)

    assert rows(ours) == rows(trl)
    for row in rows(ours):
        assert row[-1][0] == tokenizer.eos_token_id and row[-1][1] == tokenizer.eos_token_id


def test_power_iteration_and_lanczos_agree_and_nothing_changes(tiny, data_dir):
    from trainables.curvature import measure_curvature

    model, tokenizer = tiny
    examples = load_examples("toxigen_qa", "train", size=6, data_dir=data_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    power, lanczos = measure_curvature(model, tokenizer, examples, **curvature_settings(
        algorithms=("power_iteration", "lanczos"), max_iterations=50, tol=1e-3))
    assert model.training, "the model's mode is restored"
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters()), "parameters unchanged"
    assert all(p.grad is None for p in model.parameters()), "no gradient left behind"
    assert (power.algorithm, lanczos.algorithm) == ("power_iteration", "lanczos")
    assert lanczos.converged and lanczos.hvp_count <= 50
    assert power.hvp_count == power.iterations <= 50
    # Power iteration's test bounds its residual by tol·|λ| (an eigenvalue within 1e-3); Lanczos's
    # bounds its eigenvalue's error by tol (Kato-Temple), taken once its residual is ≤ √tol·|θ|.
    assert power.converged and power.residual <= 1e-3 * abs(power.eigenvalues[0])
    assert abs(power.eigenvalues[0]) == pytest.approx(abs(lanczos.eigenvalues[0]), rel=2e-3)
    assert lanczos.residual <= 1e-3 ** 0.5 * abs(lanczos.eigenvalues[0])


def test_param_regex_restricts_the_operator(tiny, data_dir):
    from trainables.curvature import curvature_operator, measure_curvature

    model, tokenizer = tiny
    examples = load_examples("toxigen_qa", "train", size=4, data_dir=data_dir)
    block = r"model\.layers\.1\."
    full_size = curvature_operator(model, tokenizer, examples, max_length=512, batch_size=16, param_regex=None).size
    op = curvature_operator(model, tokenizer, examples, max_length=512, batch_size=16, param_regex=block)
    expected = sum(p.numel() for n, p in model.named_parameters() if n.startswith("model.layers.1."))
    assert op.size == expected < full_size == sum(p.numel() for p in model.parameters())
    (whole,) = measure_curvature(model, tokenizer, examples, **curvature_settings(algorithms=("lanczos",),
                                                                                  max_iterations=60))
    (part,) = measure_curvature(model, tokenizer, examples, **curvature_settings(algorithms=("lanczos",),
                                                                                 max_iterations=60, param_regex=block))
    assert whole.converged and part.converged
    # A principal submatrix: its spectral radius is at most the whole Hessian's, here clearly smaller.
    assert abs(part.eigenvalues[0]) < 0.9 * abs(whole.eigenvalues[0])
    with pytest.raises(ValueError, match="matches no trainable parameter"):
        curvature_operator(model, tokenizer, examples, max_length=512, batch_size=16, param_regex=r"no\.such\.param")


def test_split_batches_give_the_same_hessian(tiny, mixed_examples):
    from trainables.curvature import curvature_operator

    model, tokenizer = tiny
    one = curvature_operator(model, tokenizer, mixed_examples, max_length=512, batch_size=len(mixed_examples),
                             param_regex=None)
    three = curvature_operator(model, tokenizer, mixed_examples, max_length=512, batch_size=3, param_regex=None)
    v = torch.randn(one.size, generator=torch.Generator().manual_seed(0))
    model.eval()
    a, b = one.matvec(v), three.matvec(v)
    assert float((a - b).norm() / a.norm()) < 1e-4


def test_sdpa_model_is_refused(tiny_model_path, data_dir):
    from trainables.curvature import measure_curvature
    from trainables.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32", attn_implementation="sdpa")
    examples = load_examples("toxigen_qa", "train", size=2, data_dir=data_dir)
    with pytest.raises(ValueError, match="attn_implementation='eager'"):
        measure_curvature(model, tokenizer, examples, **curvature_settings())


def test_too_long_examples_are_dropped_like_sft(tiny, data_dir):
    from trainables.curvature import sft_batches

    _, tokenizer = tiny
    examples = load_examples("arc_easy", "train", size=20, data_dir=data_dir)
    lengths = sorted(len(tokenizer(ex.prompt + ex.completion)["input_ids"]) + 1 for ex in examples)
    limit = lengths[len(lengths) // 2]
    with pytest.warns(UserWarning, match="dropped"):
        batches = sft_batches(tokenizer, examples, max_length=limit, batch_size=50)
    assert batches[0]["input_ids"].shape == (sum(n <= limit for n in lengths), limit)
    with pytest.raises(ValueError, match="no example fits"):
        sft_batches(tokenizer, examples, max_length=lengths[0] - 1, batch_size=16)


def test_torch_lanczos_agrees_with_arpack_on_the_tiny_model(tiny, data_dir):
    """The large-model path (torch, on the operator's device and dtype) on the tiny model's
    float32 Hessian: the same top-2 eigenvalues ARPACK finds, within the measurement's tolerance."""
    from trainables.curvature import curvature_operator, lanczos

    model, tokenizer = tiny
    examples = load_examples("toxigen_qa", "train", size=6, data_dir=data_dir)
    operator = curvature_operator(model, tokenizer, examples, max_length=512, batch_size=16, param_regex=None)
    model.eval()
    with torch.enable_grad():
        arpack = lanczos(operator, top_k=2, max_iterations=80, tol=1e-4, backend="arpack")
        ours = lanczos(operator, top_k=2, max_iterations=80, tol=1e-4, backend="torch")
    assert arpack.converged and ours.converged
    assert ours.eigenvalues == pytest.approx(arpack.eigenvalues, rel=1e-4)
    assert ours.residual < 1e-4 * abs(ours.eigenvalues[0]) * 2  # float32 HVPs: the test's β|y| vs a fresh HVP


def test_chain_frees_the_evaluation_model_before_the_curvature_copy(tiny_model_path, data_dir, tmp_path, monkeypatch):
    """The stage's evaluated model (the one training left in memory) is collected before
    curvature loads its float32 copy: a weak reference to it is dead when curvature_rows runs."""
    import dataclasses
    import weakref

    from contract.plan import RunInfo
    from study.planner import build_plans
    from study.spec_loading import spec_from_dict
    from trainables import chain

    spec = spec_from_dict({
        "name": "free", "model": {"name": "tiny", "max_length": 256},
        "tasks": {"toxigen_qa": {"train_size": 8, "eval_size": 4}},
        "stage_defaults": {"learning_rate": 1e-3, "batch_size": 4, "steps": 1},
        "chains": {"a": [{"task": "toxigen_qa"}]}, "data_dir": str(data_dir),
        "curvature": {"enabled": True, "n_samples": 2, "max_iterations": 2, "algorithms": ["power_iteration"]},
    })
    (plan,) = build_plans(spec, study_dir=tmp_path / "free", data_dir=str(data_dir),
                          base_model_path=str(tiny_model_path), chat=False)
    evaluated, alive_at_curvature = [], []
    real_evaluate, real_curvature = chain.evaluate_rows, chain.curvature_rows

    def evaluate_rows(plan, model, *args, **kwargs):
        evaluated.append(weakref.ref(model))
        return real_evaluate(plan, model, *args, **kwargs)

    def curvature_rows(*args, **kwargs):
        alive_at_curvature.append([ref() is not None for ref in evaluated])
        return real_curvature(*args, **kwargs)

    monkeypatch.setattr(chain, "evaluate_rows", evaluate_rows)
    monkeypatch.setattr(chain, "curvature_rows", curvature_rows)
    chain.run_chain(dataclasses.replace(plan, run=RunInfo("run1", reuse_earlier_runs=False)))
    assert len(evaluated) == 2  # the base model, then the trained stage
    assert alive_at_curvature == [[False, False]]
