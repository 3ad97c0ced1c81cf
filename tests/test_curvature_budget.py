"""How many model-sized vectors curvature keeps, and the parameter subset a 7B model must name.

The counts are checked two ways: against hand-computed numbers, and by counting the
operator-sized tensors alive inside each HVP of a real run (the algorithm's share of the count).
The subset rule is checked on Llama-2-7B's real config built on the meta device (published
size 6.74B; one decoder layer 4·4096² + 3·4096·11008 + 2·4096 = 202,383,360 parameters).
"""

from __future__ import annotations

import gc
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("hessian_eigenthings")

from hessian_eigenthings import LambdaOperator  # noqa: E402

from study.spec_loading import SpecError, spec_from_dict  # noqa: E402
from trainables.curvature import budget  # noqa: E402
from trainables.curvature.algorithms import hutchinson_trace, lanczos, power_iteration  # noqa: E402

DEFAULT = ("power_iteration", "lanczos")


def test_vector_counts_by_hand():
    assert budget.OPERATOR_VECTORS == 4
    assert budget.curvature_vectors("power_iteration", 1, 100) == 3 + 4 == 7
    assert budget.curvature_vectors("power_iteration", 3, 100) == max(3 + 2 + 4, 6) == 9
    assert budget.curvature_vectors("power_iteration", 10, 100) == max(10 + 2 + 4, 20) == 20
    assert budget.curvature_vectors("lanczos", 1, 100) == 20 + 1 + 4 == 25
    assert budget.curvature_vectors("lanczos", 15, 100) == 31 + 1 + 4
    assert budget.curvature_vectors("lanczos", 1, 5) == 5 + 1 + 4  # a 5-HVP budget fills 5 vectors
    assert budget.curvature_vectors("hutchinson", 1, 100) == 3 + 4 == 7
    assert budget.peak_vectors(DEFAULT, 1, 100) == 25
    assert budget.peak_vectors(("power_iteration",), 1, 100, trace_samples=10) == 7
    # 32 GiB / (25 vectors × 4 bytes)
    assert budget.max_subset_parameters(DEFAULT, 1, 100) == (32 << 30) // 100 == 343_597_383
    with pytest.raises(ValueError, match="unknown curvature algorithm"):
        budget.curvature_vectors("arnoldi", 1, 100)


class LiveVectors:
    """A diagonal operator of size N that records, inside each HVP, how many N-entry vectors the
    algorithm holds (distinct tensor storages, a basis matrix counting as its rows)."""

    N = 4000

    def __init__(self, dtype=torch.float64):
        gen = torch.Generator().manual_seed(0)
        # Top eigenvalues 1, 0.99, ..., then the rest below 0.8: Lanczos has to restart.
        rest = torch.rand(self.N - 10, generator=gen, dtype=dtype) * 0.8
        self.diagonal = torch.cat([1.0 - 0.01 * torch.arange(10, dtype=dtype), rest])
        self.peak = 0
        self.operator = LambdaOperator(self._matvec, size=self.N, dtype=dtype)

    def _matvec(self, v):
        seen, vectors = set(), 0
        with warnings.catch_warnings():  # isinstance on torch's deprecated module attributes warns
            warnings.simplefilter("ignore")
            objects = gc.get_objects()
            tensors = [obj for obj in objects if isinstance(obj, torch.Tensor)]
        for obj in tensors:
            if obj is not self.diagonal:
                storage = obj.untyped_storage()
                if storage.data_ptr() in seen or storage.data_ptr() == self.diagonal.untyped_storage().data_ptr():
                    continue
                seen.add(storage.data_ptr())
                vectors += storage.nbytes() // (self.N * obj.element_size())
        self.peak = max(self.peak, vectors)
        return self.diagonal * v


@pytest.mark.parametrize("algorithm, top_k", [("lanczos", 1), ("lanczos", 3), ("power_iteration", 1),
                                              ("power_iteration", 3),
                                              ("hutchinson", 1)])
def test_algorithms_hold_the_vectors_they_declare(algorithm, top_k):
    """Inside an HVP the algorithm holds curvature_vectors − OPERATOR_VECTORS vectors (the rest is
    the HVP's own): torch Lanczos its basis of ncv + 1, power iteration and Hutchinson 3 (the
    previous HVP's output is still bound while the next one runs)."""
    live = LiveVectors()
    gc.collect()
    if algorithm == "lanczos":
        r = lanczos(live.operator, top_k=top_k, max_iterations=60, tol=0.0, backend="torch")
        assert r.iterations == 60  # several restarts (tol 0: no value is ever accepted)
    elif algorithm == "power_iteration":
        power_iteration(live.operator, top_k=top_k, max_iterations=20, tol=1e-12)
    else:
        hutchinson_trace(live.operator, samples=5)
    assert live.peak == budget.curvature_vectors(algorithm, top_k, 60) - budget.OPERATOR_VECTORS


def llama_2_7b_sizes():
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return [(name, p.numel()) for name, p in model.named_parameters()]


def test_llama_2_7b_needs_a_subset_and_gets_its_last_layer_suggested():
    sizes = llama_2_7b_sizes()
    assert sum(n for _, n in sizes) == 6_738_415_616
    problem = budget.subset_problem(sizes, None, algorithms=DEFAULT, top_k=1, max_iterations=100)
    assert "all of the model's 6,738,415,616 parameters needs 25 vectors" in problem
    assert "at most 343,597,383 parameters" in problem and "curvature.parameters" in problem
    assert r"e.g. '^model\.layers\.31\.' (202,383,360 parameters)" in problem
    assert budget.subset_problem(sizes, r"^model\.layers\.31\.", algorithms=DEFAULT, top_k=1,
                                 max_iterations=100) is None
    two = budget.subset_problem(sizes, r"model\.layers\.(30|31)\.", algorithms=DEFAULT, top_k=1, max_iterations=100)
    assert "404,766,720 parameters 'model\\.layers\\.(30|31)\\.' selects" in two
    # top_k 30: 66 vectors → 130,150,524 parameters, less than a layer: its attention block (4·4096²).
    small = budget.subset_problem(sizes, None, algorithms=DEFAULT, top_k=30, max_iterations=100)
    assert r"e.g. '^model\.layers\.31\.self_attn\.' (67,108,864 parameters)" in small


def test_suggestion_counts_layers_from_the_last():
    sizes = [("model.embed_tokens.weight", 50)] + [(f"model.layers.{i}.{part}", 10) for i in range(12)
                                                   for part in ("mlp.w", "attn.w")] + [("lm_head.weight", 50)]
    assert budget.suggest_subset(sizes, 60) == (r"^model\.layers\.(9|10|11)\.", 60)
    assert budget.suggest_subset(sizes, 25) == (r"^model\.layers\.11\.", 20)
    assert budget.suggest_subset(sizes, 15) == (r"^model\.layers\.11\.mlp\.", 10)
    assert budget.suggest_subset(sizes, 5) is None
    assert budget.suggest_subset([("w", 3)], 10) is None


def _study(data_dir, **curvature):
    return spec_from_dict({
        "name": "curv", "model": {"name": "tiny", "max_length": 256},
        "tasks": {"toxigen_qa": {"train_size": 8, "eval_size": 4}},
        "chains": {"a": [{"task": "toxigen_qa"}]}, "data_dir": str(data_dir),
        "curvature": {"enabled": True, **curvature},
    })


def test_study_run_refuses_before_training(tiny_model_path, data_dir, monkeypatch):
    """study run's preflight (orchestrate.check_curvature) builds the model on the meta device and
    refuses a subset over the budget with the problem on curvature.parameters (exit 2)."""
    from study.orchestrate import check_curvature

    full = sum(n for _, n in budget.model_parameter_sizes(str(tiny_model_path)))
    check_curvature(_study(data_dir), str(tiny_model_path))  # fits: nothing raised
    monkeypatch.setattr(budget, "CURVATURE_VECTOR_BUDGET_BYTES", full * 100 // 2)  # half the model fits
    with pytest.raises(SpecError) as err:
        check_curvature(_study(data_dir), str(tiny_model_path))
    (problem,) = err.value.problems
    assert problem.path == "curvature.parameters"
    assert f"all of the model's {full:,} parameters" in problem.message
    assert r"'^model\.layers\.1\.'" in problem.message or r"'^model\.layers\.(0|1)\.'" in problem.message
    check_curvature(_study(data_dir, parameters=r"^model\.layers\.1\."), str(tiny_model_path))
    monkeypatch.setattr(budget, "model_parameter_sizes", lambda *a, **k: pytest.fail("disabled: nothing to build"))
    check_curvature(spec_from_dict({**_study(data_dir).to_dict(), "curvature": {"enabled": False}}),
                    str(tiny_model_path))


def test_measurement_refuses_before_its_first_hvp(tiny_model_path, data_dir, monkeypatch):
    from tasks import load_examples
    from tests.plans import curvature_settings
    from trainables.curvature import load_model_for_curvature, measure_curvature

    model, tokenizer = load_model_for_curvature(str(tiny_model_path))
    examples = load_examples("toxigen_qa", "train", size=2, data_dir=data_dir)
    monkeypatch.setattr(budget, "CURVATURE_VECTOR_BUDGET_BYTES", 1000)
    hvps = []
    monkeypatch.setattr("hessian_eigenthings.HessianOperator.matvec", lambda self, v: hvps.append(v))
    with pytest.raises(ValueError, match="curvature.parameters: the Hessian over all of the model's"):
        measure_curvature(model, tokenizer, examples, **curvature_settings())
    assert hvps == []


def test_a_gpu_studys_curvature_is_judged_once_by_the_memory_model(tmp_path, data_dir, monkeypatch):
    """A GPU study whose curvature does not fit gets one problem, the memory model's (the fixed
    32 GiB vector budget, made tiny here, is not asked again), naming a regex that fits."""
    from transformers import LlamaConfig

    from study.orchestrate import check_curvature, check_memory
    from trainables.memory_fit import curvature_parameter_limit
    from trainables.memory_model import GB, estimate, model_shape
    from trainables.memory_preflight import study_steps

    config = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False)
    config.save_pretrained(tmp_path)
    spec = spec_from_dict({
        "name": "curv", "model": {"name": str(tmp_path), "max_length": 256}, "data_dir": str(data_dir),
        "tasks": {"toxigen_qa": {"train_size": 8, "eval_size": 4}}, "chains": {"a": [{"task": "toxigen_qa"}]},
        "curvature": {"enabled": True},
        "execution": {"gpus_per_trial": 8, "workers_per_trial": 8, "fsdp": True}})
    monkeypatch.setattr(budget, "CURVATURE_VECTOR_BUDGET_BYTES", 1000)
    check_curvature(spec, str(tmp_path))  # a GPU study: not judged by the vector budget
    with pytest.raises(SpecError) as err:
        check_memory(spec)
    (problem,) = err.value.problems
    assert problem.path == "curvature"
    assert "curvature needs about 839" in problem.message  # 25 vectors of 6.7e9 float32: 674 GB alone
    # At batch 1, the most parameters whose vectors fit beside the rest; the last layer's MLP (3·4096·11008).
    assert (r"curvature.parameters: '^model\.layers\.31\.mlp\.' (135,266,304 parameters, the last decoder layers "
            "that fit: at most 181,804,620) with curvature.batch_size: 1") in problem.message
    (_, _, setup), = [s for s in study_steps(spec) if s[0] == "curvature"]
    one = type(setup)(**{**setup.__dict__, "curvature_batch_size": 1})
    shape = model_shape(config)
    limit = curvature_parameter_limit(shape, one, 80 * GB)
    assert limit == 181_804_620
    assert estimate(shape, type(one)(**{**one.__dict__, "curvature_params": limit})).fits(80 * GB)
    assert not estimate(shape, type(one)(**{**one.__dict__, "curvature_params": limit + 1})).fits(80 * GB)


def test_on_a_gpu_the_measurement_asks_the_free_memory_not_the_vector_budget(monkeypatch):
    from types import SimpleNamespace

    from trainables.curvature.lm import check_fits

    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList([torch.nn.Linear(10, 10), torch.nn.Linear(10, 10)])  # 220 parameters
    operator = SimpleNamespace(device="cuda:0", size=220, dtype=torch.float32)
    monkeypatch.setattr(budget, "CURVATURE_VECTOR_BUDGET_BYTES", 1000)  # would refuse on a CPU
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (7 * 220 * 4, 10**9))
    check_fits(model, operator, None, algorithms=("power_iteration",), top_k=1, max_iterations=10, trace_samples=0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (7 * 110 * 4, 10**9))  # half of it
    with pytest.raises(ValueError, match=r"select fewer parameters, e.g. '\^layers\\\.1\\\.' \(110 parameters\)"):
        check_fits(model, operator, None, algorithms=("power_iteration",), top_k=1, max_iterations=10,
                   trace_samples=0)
    cpu = SimpleNamespace(device="cpu", size=220, dtype=torch.float32)
    with pytest.raises(ValueError, match="curvature.parameters: the Hessian over all"):
        check_fits(model, cpu, None, algorithms=("power_iteration",), top_k=1, max_iterations=10, trace_samples=0)
